"""The shipped ACL example is what provisioning writes (provisioning through a store:
tests/db/test_provisioning.py; Mosquitto's own hash: tests/integration/test_provisioning.py)."""

from __future__ import annotations

from pathlib import Path

from cloud_bridge.sensors.provisioning import render_acl

ROOT = Path(__file__).parents[2]


def test_shipped_acl_example_is_what_provisioning_writes() -> None:
    shipped = (ROOT / "deploy" / "mosquitto" / "passby.acl.example").read_text()
    assert shipped == render_acl("bridge", [("main-st", "door-1"), ("main-st", "door-2")])
