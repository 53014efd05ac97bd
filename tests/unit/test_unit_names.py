"""Every systemd unit a hint or a doc tells someone to look at is one we ship (or a system one).

A console hint that says `journalctl -u edge-agent` while the box runs `passby-agent` sends a
store owner to an empty log; this keeps code, console hints and docs in step with deploy/.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_UNITS = {
    "mosquitto",
    "postgresql",
    "nginx",
    "NetworkManager",
    "systemd-journald",
    "prometheus",
    "systemd-timesyncd",
}
VERBS = "status|restart|start|stop|enable|disable|reload|is-active|kill|show|cat"
UNIT_RE = re.compile(
    rf"(?:systemctl(?: --[a-z-]+)* (?:{VERBS})(?: --[a-z-]+)*|journalctl(?: -[a-zA-Z]+(?: [0-9]+)?)* -u) +"
    r"([A-Za-z][A-Za-z0-9@._-]*)"
)


def shipped_units() -> set[str]:
    names: set[str] = set()
    for path in REPO.glob("deploy/*/systemd/*"):
        stem = path.name.rsplit(".", 1)[0]
        names.add(stem)
    return names


def mentions() -> list[tuple[str, str]]:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in files:
        path = REPO / name
        if path.suffix not in {".py", ".md", ".html", ".sh", ".txt", ".service", ".example"}:
            continue
        if name == "tests/unit/test_unit_names.py":
            continue
        for m in UNIT_RE.finditer(path.read_text(errors="replace")):
            found.append((name, m.group(1)))
    return found


def known(unit: str, shipped: set[str]) -> bool:
    base = unit.removesuffix(".service").removesuffix(".timer").removesuffix(".path")
    if "@" in base:
        base = base.split("@", 1)[0] + "@"
    return base in shipped or base in SYSTEM_UNITS


def test_the_pattern_finds_the_hints_it_is_meant_to_check() -> None:
    found = {unit for _, unit in mentions()}
    assert {"passby-agent", "passby-bridge", "mosquitto"} <= found


def test_every_unit_named_in_code_and_docs_is_shipped_or_a_system_unit() -> None:
    shipped = shipped_units()
    assert "passby-agent" in shipped and "passby-bridge-worker@" in shipped
    unknown = sorted({f"{name}: {unit}" for name, unit in mentions() if not known(unit, shipped)})
    assert not unknown, f"these name a systemd unit that deploy/ does not ship: {unknown}"
