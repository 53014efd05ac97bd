"""ARCHITECTURE.md kept true: its packages are the packages, and imports go the way it says.

Every import counts, also those inside functions; the scan reads the source without importing it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
DOC = ROOT / "ARCHITECTURE.md"
BRIDGE = "cloud_bridge"

# Where a bridge module sits: its package, or its own name for a top-level module.
BELOW_WEB = {
    "storage", "offers", "delivery", "customers", "sensors", "ingest", "reports",
    "config", "errors", "clock", "csv_input", "addresses",
}  # fmt: skip
APP_LEVEL = {"web", "cli", "service", "tenant", "dev"}
DOMAINS = {"offers", "delivery", "customers", "sensors", "ingest", "reports"}
# What storage may take from the domains: the policy's pure types and defaults.
STORAGE_MAY = {"cloud_bridge.offers.decide", "cloud_bridge.offers.policy"}


def packages(top: str) -> set[str]:
    return {
        p.parent.relative_to(ROOT / top).as_posix()
        for p in (ROOT / top).rglob("__init__.py")
        if p.parent != ROOT / top and "__pycache__" not in p.parts
    }


def modules(top: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / top).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        yield ".".join(parts), path


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # "from cloud_bridge.offers import policy" imports cloud_bridge.offers.policy
                yield node.lineno, f"{node.module}.{alias.name}"


def place(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target`` (both bridge modules), or None."""
    src, dst = place(module), place(target)
    if src == dst or not dst:
        return None
    if src in BELOW_WEB and dst in APP_LEVEL:
        return f"{src} is below web/: it may not import {dst}"
    if src == "web" and dst in APP_LEVEL - {"web"}:
        return f"web/ may not import {dst}"
    if (
        src == "storage"
        and dst in DOMAINS
        and not any(target == m or target.startswith(m + ".") for m in STORAGE_MAY)
    ):
        return f"storage/ may take only the policy's pure types from the domains, not {target}"
    return None


def import_violations() -> list[str]:
    found = []
    for module, path in modules(BRIDGE):
        for line, target in imports(path):
            if not target.startswith(BRIDGE + "."):
                continue
            why = violations(module, target)
            if why:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {target}: {why}")
    return found


def documented_packages() -> set[str]:
    text = DOC.read_text()
    names = set()
    for top in (BRIDGE, "edge_agent"):
        section = text.split(f"## {top} packages", 1)[1].split("\n## ", 1)[0]
        names |= {f"{top}/{n}" for n in re.findall(r"^\| `([a-z_/]+)/`", section, re.M)}
    return names


def test_every_package_is_documented_and_every_documented_package_exists() -> None:
    real = {f"{top}/{p}" for top in (BRIDGE, "edge_agent") for p in packages(top) if "/" not in p}
    assert documented_packages() == real


def test_storage_repositories_named_in_the_doc_exist() -> None:
    row = next(r for r in DOC.read_text().splitlines() if r.startswith("| `storage/`"))
    named = set(re.findall(r"`([a-z_]+)`", row.split("repository module per concern", 1)[1]))
    missing = sorted(n for n in named if not (ROOT / BRIDGE / "storage" / f"{n}.py").is_file())
    assert not missing, f"ARCHITECTURE.md names storage modules that do not exist: {missing}"


def test_imports_go_the_way_the_doc_says() -> None:
    found = import_violations()
    assert not found, "imports against ARCHITECTURE.md:\n" + "\n".join(found)


def test_the_direction_check_catches_each_kind_of_wrong_import() -> None:
    assert violations("cloud_bridge.offers.worker", "cloud_bridge.web.auth")
    assert violations("cloud_bridge.storage.store", "cloud_bridge.delivery.outbox")
    assert violations("cloud_bridge.config", "cloud_bridge.tenant")
    assert violations("cloud_bridge.web.app", "cloud_bridge.dev.mosquitto")
    assert violations("cloud_bridge.customers.enrol", "cloud_bridge.cli.main")
    assert violations("cloud_bridge.storage.store", "cloud_bridge.offers.policy") is None
    assert violations("cloud_bridge.web.app", "cloud_bridge.offers.campaigns") is None
    assert violations("cloud_bridge.cli.main", "cloud_bridge.dev.demo.run") is None
    assert violations("cloud_bridge.offers.worker", "cloud_bridge.delivery.outbox") is None
