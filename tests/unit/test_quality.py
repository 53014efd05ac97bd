"""House rules that can be checked: lint clean, pure cores type-check strictly, settings documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from cloud_bridge.config import BridgeSettings
from edge_agent.config import EdgeSettings

ROOT = Path(__file__).parents[2]
PURE = [
    "edge_agent/core/frames.py",
    "edge_agent/core/presence.py",
    "edge_agent/roster.py",
    "edge_agent/core/footfall.py",
    "edge_agent/protocol.py",
    "edge_agent/calibrate.py",
    "cloud_bridge/offers/decide.py",
    "cloud_bridge/delivery/sms_encoding.py",
    "cloud_bridge/clock.py",
    "cloud_bridge/ingest/fleet.py",
]


def test_ruff_clean() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "edge_agent", "cloud_bridge", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-4000:]


def test_pure_cores_mypy_strict() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *PURE],
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
