"""Presence events: counts and look-ups the demo and the simulator make."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import TextClause, bindparam, text

from cloud_bridge.storage.store import BridgeStore

__all__ = ["event_count", "known_event_ids", "progress", "event_rows", "dead_letter_rows"]

_COUNT: Final[TextClause] = text("SELECT count(*) AS n FROM events")
_KNOWN: Final[TextClause] = text("SELECT event_id FROM events WHERE event_id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)
_PROGRESS: Final[TextClause] = text(
    "SELECT count(*) AS n, sum(CASE WHEN state = 'new' THEN 1 ELSE 0 END) AS pending, "
    "(SELECT count(*) FROM sends WHERE state IN ('reserved', 'sending')) AS unsent FROM events"
)
_EVENTS: Final[TextClause] = text("SELECT * FROM events ORDER BY received, event_id")
_DEAD_LETTERS: Final[TextClause] = text("SELECT * FROM dead_letters ORDER BY id")


def event_count(store: BridgeStore) -> int:
    return int(store.database.query(_COUNT)[0]["n"])


def known_event_ids(store: BridgeStore, event_ids: Sequence[str]) -> set[str]:
    """Those of ``event_ids`` the store holds."""
    if not event_ids:
        return set()
    return {r["event_id"] for r in store.database.query(_KNOWN, {"ids": list(event_ids)})}


def progress(store: BridgeStore) -> dict[str, Any]:
    """Events stored (n), not yet decided (pending), and sends still under way (unsent)."""
    return store.database.query(_PROGRESS)[0]


def event_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every event, every column, in the order received (then by id)."""
    return store.database.query(_EVENTS)


def dead_letter_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every rejected sensor message, every column, by id."""
    return store.database.query(_DEAD_LETTERS)
