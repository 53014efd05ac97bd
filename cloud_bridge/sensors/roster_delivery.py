"""Roster delivery: publish a new signed roster file and announce it to the store's sensors.

The file is kept under ``data_dir/rosters/{store}.bin`` and served by the console's API with an
ETag (its SHA-256); sensors are told on ``cmd/roster`` and fetch it with their API token.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from cloud_bridge.config import BridgeSettings
from cloud_bridge.ingest.commands import Outcome, send_commands
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.sensors.rosters import build_store_roster, write_roster
from cloud_bridge.storage.fleet import sensors_of_store
from cloud_bridge.storage.store import BridgeStore

__all__ = ["Published", "roster_path", "publish_roster"]


@dataclass(frozen=True)
class Published:
    store_id: str
    version: int
    sha256: str
    size: int
    url: str
    outcomes: list[Outcome]


def roster_path(settings: BridgeSettings, store_id: str) -> Path:
    return settings.data_dir / "rosters" / f"{store_id}.bin"


def roster_url(settings: BridgeSettings, store_id: str) -> str:
    return f"{settings.public_url.rstrip('/')}/api/v1/rosters/{store_id}"


def publish_roster(
    settings: BridgeSettings,
    store: BridgeStore,
    keys: BridgeKeys,
    store_id: str,
    announce: bool = True,
    timeout: float = 15.0,
) -> Published:
    """Build the next roster version, store it for download and tell every known sensor."""
    data, version = build_store_roster(store, keys, store_id, time.time())
    write_roster(roster_path(settings, store_id), data)
    sha = hashlib.sha256(data).hexdigest()
    url = roster_url(settings, store_id)
    outcomes: list[Outcome] = []
    if announce:
        sensors = [(r["store_id"], r["sensor_id"]) for r in sensors_of_store(store, store_id)]
        if sensors:
            outcomes = send_commands(
                settings.commands_mqtt(),
                "roster",
                sensors,
                {"version": version, "url": url, "sha256": sha},
                timeout,
            )
    return Published(store_id, version, sha, len(data), url, outcomes)
