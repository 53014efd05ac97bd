"""House rules that can be checked: lint clean, both packages (the edge agent and the bridge)
type-check strictly, settings documented."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from pydantic import BaseModel

from cloud_bridge.config import BridgeSettings
from edge_agent.config import EdgeSettings

ROOT = Path(__file__).parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def strict_targets() -> list[str]:
    """mypy arguments for what pyproject's ``strict = true`` overrides name: ``-p pkg`` for a
    ``pkg.*`` pattern, ``-m module`` for a module (tests/test_pure_modules.py checks that these
    cover both packages and every pure core)."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    patterns = [
        m for o in config["tool"]["mypy"]["overrides"] if o.get("strict") for m in o["module"]
    ]
    packages = sorted({p.removesuffix(".*") for p in patterns if p.endswith(".*")})
    modules = sorted(
        p
        for p in patterns
        if not p.endswith(".*") and not any(p == k or p.startswith(k + ".") for k in packages)
    )
    return [a for k in packages for a in ("-p", k)] + [a for m in modules for a in ("-m", m)]


def test_ruff_clean() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "edge_agent", "cloud_bridge", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-4000:]


def test_strict_modules_pass_mypy_strict() -> None:
    """The edge agent and the bridge, whole, with the pydantic plugin (pyproject)."""
    targets = strict_targets()
    pairs = list(zip(targets[::2], targets[1::2], strict=True))
    assert pairs.count(("-p", "edge_agent")) == pairs.count(("-p", "cloud_bridge")) == 1, pairs
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:]


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, info in model.model_fields.items():
        yield prefix + name, info
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _fields(ann, prefix + name + ".")


def test_every_setting_is_described() -> None:
    for model in (EdgeSettings, BridgeSettings):
        missing = [name for name, info in _fields(model) if not info.description]
        assert not missing, f"{model.__name__}: undocumented settings {missing}"
