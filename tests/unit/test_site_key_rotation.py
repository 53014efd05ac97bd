"""Site key rotation: a new key, a higher roster version, every hash re-made from the encrypted
MACs; old-key hashes are gone from the new roster and new-key hashes are in it."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from array import array
from pathlib import Path

import pytest

from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.sensors.rosters import RosterBuildError, build_store_roster, rotate_site_key
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from edge_agent.roster import MAGIC, SIG_LEN, load_roster, mac_hash, parse_mac

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
CONSENTING_MACS = [
    "da:a1:19:3c:4e:01",
    "6e:12:7a:90:b3:22",
    "f2:5c:d8:01:77:a3",
    "ae:44:02:9b:10:c4",
]


def body_hashes(data: bytes) -> set[int]:
    """The mac-hash column of a roster file, read straight from its bytes."""
    signed = data[:-SIG_LEN]
    body = signed[signed.index(b"\n", len(MAGIC)) + 1 :]
    pairs = array("Q")
    pairs.frombytes(body)
    if sys.byteorder == "little":
        pairs.byteswap()
    return set(pairs[0::2])


@pytest.fixture()
def bridge(tmp_path: Path):
    store = BridgeStore(tmp_path / "bridge" / "bridge.db")
    keys = BridgeKeys(tmp_path / "bridge")
    seed(store, keys, load_tenant(TENANT), time.time())
    yield store, keys, tmp_path
    store.close()


def test_rotation_rehashes_every_device(bridge) -> None:
    store, keys, _ = bridge
    old_key = bytes.fromhex(store.site_key("main-st"))
    old_data, old_version = build_store_roster(store, keys, "main-st", time.time())
    data, version, new_hex = rotate_site_key(store, keys, "main-st", time.time())
    new_key = bytes.fromhex(new_hex)
    assert new_key != old_key and store.site_key("main-st") == new_hex
    assert version == old_version + 1

    old_hashes = {mac_hash(old_key, parse_mac(m)) for m in CONSENTING_MACS}
    new_hashes = {mac_hash(new_key, parse_mac(m)) for m in CONSENTING_MACS}
    assert body_hashes(old_data) == old_hashes
    assert body_hashes(data) == new_hashes  # all new-key hashes are in
    assert not body_hashes(data) & old_hashes  # no old-key hash remains

    public = keys.signing_key.public_key()
    new_roster = load_roster(data, public, new_key, "main-st", min_version=old_version)
    old_subjects = load_roster(old_data, public, old_key, "main-st")
    for mac in CONSENTING_MACS:
        assert new_roster.lookup(parse_mac(mac)) == old_subjects.lookup(parse_mac(mac))
    # a sensor still holding the old key recognises nobody (never the wrong person)
    stale = load_roster(data, public, old_key, "main-st")
    assert all(stale.lookup(parse_mac(m)) is None for m in CONSENTING_MACS)
    assert stale.lookup(parse_mac("3a:e0:91:6d:2f:55")) is None  # Dmitri never was in


def test_unknown_store_changes_nothing(bridge) -> None:
    store, keys, _ = bridge
    with pytest.raises(RosterBuildError, match="not configured"):
        rotate_site_key(store, keys, "nowhere", time.time())


def test_cli_rotate_site_key(bridge) -> None:
    store, keys, tmp = bridge
    old_hex = store.site_key("main-st")
    store.close()
    cfg = tmp / "bridge.toml"
    cfg.write_text(f'data_dir = "{tmp / "bridge"}"\n')
    key_file = tmp / "secure" / "main-st.site.key"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud_bridge.cli.main",
            "stores",
            "rotate-site-key",
            "main-st",
            "--key-out",
            str(key_file),
            "-c",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    new_hex = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert new_hex != old_hex and new_hex not in out.stdout  # the key itself is never printed
    served = tmp / "bridge" / "rosters" / "main-st.bin"
    assert str(served) in out.stdout
    roster = load_roster(
        served.read_bytes(), keys.signing_key.public_key(), bytes.fromhex(new_hex), "main-st"
    )
    assert roster.version == 1 and len(roster) == len(CONSENTING_MACS)
    assert roster.lookup(parse_mac(CONSENTING_MACS[0])) is not None
    again = BridgeStore(tmp / "bridge" / "bridge.db")
    try:
        assert again.site_key("main-st") == new_hex
    finally:
        again.close()
