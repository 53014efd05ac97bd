"""Presence events: counts and look-ups the demo and the simulator make."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloud_bridge.storage.store import BridgeStore

__all__ = ["event_count", "known_event_ids", "progress", "event_rows", "dead_letter_rows"]


def event_count(store: BridgeStore) -> int:
    return int(store.query("SELECT count(*) AS n FROM events")[0]["n"])


def known_event_ids(store: BridgeStore, event_ids: Sequence[str]) -> set[str]:
    """Those of ``event_ids`` the store holds."""
    marks = ",".join("?" * len(event_ids))
    return {
        r["event_id"]
        for r in store.query(
            f"SELECT event_id FROM events WHERE event_id IN ({marks})", list(event_ids)
        )
    }


def progress(store: BridgeStore) -> dict[str, Any]:
    """Events stored (n), not yet decided (pending), and sends still under way (unsent)."""
    return store.query(
        "SELECT count(*) AS n, sum(state='new') AS pending, (SELECT count(*) FROM sends "
        "WHERE state IN ('reserved','sending')) AS unsent FROM events"
    )[0]


def event_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every event, every column, in the order received (then by id)."""
    return store.query("SELECT * FROM events ORDER BY received, event_id")


def dead_letter_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every rejected sensor message, every column, by id."""
    return store.query("SELECT * FROM dead_letters ORDER BY id")
