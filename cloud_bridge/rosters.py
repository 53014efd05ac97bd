"""Roster builder: the signed file of keyed device hashes a store's sensors match against."""

from __future__ import annotations

from pathlib import Path

from cloud_bridge.keys import BridgeKeys
from cloud_bridge.store import BridgeStore
from edge_agent.frames import parse_mac
from edge_agent.roster import build_roster, mac_hash

__all__ = ["build_store_roster", "RosterBuildError"]


class RosterBuildError(ValueError):
    """The store is unknown or its data cannot make a roster."""


def build_store_roster(
    store: BridgeStore, keys: BridgeKeys, store_id: str, now: float
) -> tuple[bytes, int]:
    """A new signed roster version for a store: (file bytes, version). Only consented devices."""
    rows = store.query("SELECT site_key FROM stores WHERE id=?", [store_id])
    if not rows:
        raise RosterBuildError(f"store {store_id!r} is not configured")
    site_key = bytes.fromhex(rows[0]["site_key"])
    entries = [
        (mac_hash(site_key, parse_mac(mac)), subject) for mac, subject in store.roster_entries(now)
    ]
    version = store.bump_roster_version(store_id)
    return build_roster(keys.signing_key, store_id, version, now, entries), version


def write_roster(path: Path, data: bytes) -> None:
    """Write atomically so a sensor never reads half a roster."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
