"""Key files created by processes starting at the same moment (bridge workers under systemd):
every process ends up with the same complete keys, none crashes or reads a half-written file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, sys, time
from pathlib import Path
from cloud_bridge.storage.datakey import load_data_key
from cloud_bridge.sensors.keys import BridgeKeys
d = Path(sys.argv[1]); start = float(sys.argv[2])
while time.time() < start:
    pass
keys = BridgeKeys(d)
data = load_data_key(d / "keys", env={})
print(json.dumps([keys.subject_key.hex(), keys.public_key_hex(), data.hex()]))
"""


def test_processes_racing_to_create_keys_agree(tmp_path: Path) -> None:
    import time

    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(tuple(json.loads(out)))
    assert len(set(results)) == 1
    subject, public, data = results[0]
    assert len(bytes.fromhex(subject)) == 32 and len(bytes.fromhex(data)) == 32
    keys = tmp_path / "keys"
    assert sorted(p.name for p in keys.iterdir()) == [
        "data.key",
        "roster-signing.key",
        "subject.key",
    ]
    for f in keys.iterdir():
        assert f.stat().st_mode & 0o077 == 0
