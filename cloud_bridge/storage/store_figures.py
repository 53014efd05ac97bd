"""A store's day in figures: footfall, arrivals, SMS sent and returns, by hour or per store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "footfall_by_hour",
    "arrivals_by_hour",
    "sends_by_hour",
    "returning_visitors",
    "footfall_by_store",
    "arrivals_by_store",
    "sends_by_store",
]


def footfall_by_hour(
    store: BridgeStore, store_id: str, start: float, end: float
) -> list[dict[str, Any]]:
    """Passers-by (p) and visitors (v) of each footfall hour from ``start`` to ``end``."""
    return store.query(
        "SELECT hour, sum(passers_by) AS p, sum(visitors) AS v FROM footfall_hours "
        "WHERE store_id=? AND hour>=? AND hour<? GROUP BY hour",
        [store_id, start, end],
    )


def arrivals_by_hour(
    store: BridgeStore, store_id: str, start: float, end: float
) -> list[dict[str, Any]]:
    """Arrive events (n) by hour (h) after ``start``, up to ``end``."""
    return store.query(
        "SELECT CAST((ts-?)/3600 AS INTEGER) AS h, count(*) AS n FROM events "
        "WHERE store_id=? AND type='arrive' AND ts>=? AND ts<? GROUP BY h",
        [start, store_id, start, end],
    )


def sends_by_hour(
    store: BridgeStore, store_id: str, start: float, end: float, states: Sequence[str]
) -> list[dict[str, Any]]:
    """Sends in ``states`` (n) by hour (h) after ``start``, up to ``end``."""
    return store.query(
        "SELECT CAST((ts-?)/3600 AS INTEGER) AS h, count(*) AS n FROM sends "
        f"WHERE store_id=? AND ts>=? AND ts<? AND state IN ({','.join('?' * len(states))}) "
        "GROUP BY h",
        [start, store_id, start, end, *states],
    )


def returning_visitors(
    store: BridgeStore,
    store_id: str,
    start: float,
    end: float,
    window_s: float,
    states: Sequence[str],
) -> Any:
    """Distinct subjects who visited from ``start`` to ``end`` within ``window_s`` after a send
    of the store in ``states``."""
    # Each visit's sends are found by customer ("|| ''" keeps SQLite off the store's sends).
    return store.query(
        "SELECT count(DISTINCT e.subject) AS n FROM events e JOIN customers c "
        "ON c.subject=e.subject JOIN sends s ON s.customer_id=c.id "
        "AND s.store_id || ''=e.store_id "
        "WHERE e.store_id=? AND e.type='visit' AND e.ts>=? AND e.ts<? AND s.ts<e.ts "
        f"AND s.ts>=e.ts-? AND s.state IN ({','.join('?' * len(states))})",
        [store_id, start, end, window_s, *states],
    )[0]["n"]


def footfall_by_store(
    store: BridgeStore, ids: Sequence[str], start: float, end: float
) -> list[dict[str, Any]]:
    """Passers-by (p) and visitors (v) of these stores from ``start`` to ``end``."""
    marks = ",".join("?" * len(ids))
    return store.query(
        "SELECT store_id, sum(passers_by) AS p, sum(visitors) AS v FROM footfall_hours "
        f"WHERE store_id IN ({marks}) AND hour>=? AND hour<? GROUP BY store_id",
        [*ids, start, end],
    )


def arrivals_by_store(
    store: BridgeStore, ids: Sequence[str], start: float, end: float
) -> list[dict[str, Any]]:
    """Arrive events (n) of these stores from ``start`` to ``end``."""
    marks = ",".join("?" * len(ids))
    return store.query(
        "SELECT store_id, count(*) AS n FROM events WHERE store_id IN "
        f"({marks}) AND type='arrive' AND ts>=? AND ts<? GROUP BY store_id",
        [*ids, start, end],
    )


def sends_by_store(
    store: BridgeStore, ids: Sequence[str], start: float, end: float, states: Sequence[str]
) -> list[dict[str, Any]]:
    """Sends in ``states`` (n) of these stores from ``start`` to ``end``."""
    marks = ",".join("?" * len(ids))
    return store.query(
        f"SELECT store_id, count(*) AS n FROM sends WHERE store_id IN ({marks}) "
        f"AND ts>=? AND ts<? AND state IN ({','.join('?' * len(states))}) "
        "GROUP BY store_id",
        [*ids, start, end, *states],
    )
