"""Provisioning's password hash is what Mosquitto's own mosquitto_passwd writes (provisioning
through a store: tests/db/test_provisioning.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cloud_bridge.sensors.provisioning import mosquitto_hash, mosquitto_verify


def test_mosquitto_hash_is_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "u", "s3cret"], check=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert mosquitto_verify("s3cret", theirs) and not mosquitto_verify("s3cre", theirs)
    ours = mosquitto_hash("s3cret")
    assert ours.startswith("$7$101$") and mosquitto_verify("s3cret", ours)
