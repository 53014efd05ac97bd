"""Roster builder: the signed file of keyed device hashes a store's sensors match against."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import site_key_rows
from edge_agent.roster import build_roster, mac_hash

__all__ = [
    "build_store_roster",
    "rotate_site_key",
    "site_key_id",
    "write_roster",
    "RosterBuildError",
]


class RosterBuildError(ValueError):
    """The store is unknown or its data cannot make a roster."""


def build_store_roster(
    store: BridgeStore, keys: BridgeKeys, store_id: str, now: float
) -> tuple[bytes, int]:
    """A new signed roster version for a store: (file bytes, version). Only consented devices."""
    rows = site_key_rows(store, store_id)
    if not rows:
        raise RosterBuildError(f"store {store_id!r} is not configured")
    site_key = bytes.fromhex(rows[0]["site_key"])
    entries = [(mac_hash(site_key, mac), subject) for mac, subject in store.roster_devices(now)]
    version = store.bump_roster_version(store_id)
    return build_roster(keys.signing_key, store_id, version, now, entries), version


def write_roster(path: Path, data: bytes) -> None:
    """Write atomically so a sensor never reads half a roster."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def site_key_id(site_key_hex: str) -> str:
    """A short, non-secret name for a site key (first 12 hex of its SHA-256)."""
    return hashlib.sha256(bytes.fromhex(site_key_hex)).hexdigest()[:12]


def rotate_site_key(
    store: BridgeStore, keys: BridgeKeys, store_id: str, now: float
) -> tuple[bytes, int, str]:
    """Give a store a new site key and build its roster under it: (file, version, new key hex).

    The MACs are decrypted from the store and re-hashed, so every hash in the new roster
    differs from the old one; the roster version goes up so sensors take the new file. Sensors
    need the new key (re-pair them, or write it to their ``site_key_file``) to match again."""
    if store.site_key(store_id) is None:
        raise RosterBuildError(f"store {store_id!r} is not configured")
    new_key = secrets.token_hex(16)
    with store.transaction():  # the key and the roster version change together or not at all
        store.set_site_key(store_id, new_key)
        data, version = build_store_roster(store, keys, store_id, now)
    return data, version, new_key
