"""Prometheus figures: the counts and ages the metrics collector reads from the store."""

from __future__ import annotations

from typing import Any

from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "events_by_type",
    "decisions_by_outcome",
    "sends_by_state",
    "provider_latency",
    "queue_depths",
    "sensor_outbox_total",
    "dead_letter_count",
    "clock_offsets",
    "sensor_states",
    "optout_guard_trips",
    "campaigns_paused_by_guard",
    "provider_attempts",
    "oldest_waiting",
]


def events_by_type(store: BridgeStore) -> list[dict[str, Any]]:
    return store.query("SELECT type, count(*) AS n FROM events GROUP BY type")


def decisions_by_outcome(store: BridgeStore) -> list[dict[str, Any]]:
    return store.query("SELECT outcome, reason, count(*) AS n FROM decisions GROUP BY 1, 2")


def sends_by_state(store: BridgeStore) -> list[dict[str, Any]]:
    return store.query("SELECT state, count(*) AS n FROM sends GROUP BY state")


def provider_latency(store: BridgeStore, since: float) -> list[dict[str, Any]]:
    """Per provider: average and longest answer time of the sends accepted since ``since``."""
    return store.query(
        "SELECT provider, avg(accepted_at-attempt_at) AS avg, max(accepted_at-attempt_at) "
        "AS max FROM sends WHERE accepted_at>=? AND attempt_at IS NOT NULL GROUP BY provider",
        [since],
    )


def queue_depths(store: BridgeStore) -> dict[str, Any]:
    """Work waiting: new events, sends and replies reserved or sending."""
    return store.query(
        "SELECT (SELECT count(*) FROM events WHERE state='new') AS events, "
        "(SELECT count(*) FROM sends WHERE state IN ('reserved','sending')) AS sends, "
        "(SELECT count(*) FROM replies WHERE state IN ('reserved','sending')) AS replies"
    )[0]


def sensor_outbox_total(store: BridgeStore) -> Any:
    """The sum of the sensors' outbox depths at their last stats."""
    return store.query(
        "SELECT coalesce(sum(json_extract(last_stats, '$.outbox_depth')), 0) AS n FROM sensors"
    )[0]["n"]


def dead_letter_count(store: BridgeStore) -> Any:
    return store.query("SELECT count(*) AS n FROM dead_letters")[0]["n"]


def clock_offsets(store: BridgeStore) -> list[dict[str, Any]]:
    """Each sensor's clock offset at its last stats (sensors that reported one)."""
    return store.query(
        "SELECT store_id, sensor_id, json_extract(last_stats, '$.clock_offset_s') AS offset "
        "FROM sensors WHERE json_extract(last_stats, '$.clock_offset_s') IS NOT NULL "
        "ORDER BY store_id, sensor_id"
    )


def sensor_states(store: BridgeStore) -> list[dict[str, Any]]:
    """State and last contact of every sensor that has been seen."""
    return store.query("SELECT state, last_seen FROM sensors WHERE last_seen IS NOT NULL")


def optout_guard_trips(store: BridgeStore) -> Any:
    return store.query("SELECT count(*) AS n FROM engine_alerts WHERE kind='optout_guard'")[0]["n"]


def campaigns_paused_by_guard(store: BridgeStore) -> Any:
    return store.query(
        "SELECT count(*) AS n FROM campaigns WHERE status='paused' "
        "AND paused_reason LIKE 'optout_guard%'"
    )[0]["n"]


def provider_attempts(store: BridgeStore) -> list[dict[str, Any]]:
    """Provider calls (offers and replies) by provider and answer: accepted or error."""
    return store.query(
        "SELECT provider, CASE WHEN l.state='accepted' THEN 'accepted' ELSE 'error' END "
        "AS result, count(*) AS n FROM send_log l JOIN ("
        "SELECT 'offer' AS kind, id, provider FROM sends UNION ALL "
        "SELECT 'reply' AS kind, id, provider FROM replies) s "
        "ON s.kind=l.kind AND s.id=l.send_id "
        "WHERE l.state <> 'sending' AND (l.detail LIKE 'attempt %' "
        "OR l.detail LIKE 'gave up after %' OR l.detail LIKE 'provider unavailable until %') "
        "GROUP BY 1, 2"
    )


def oldest_waiting(store: BridgeStore, now: float) -> dict[str, Any]:
    """Since when the oldest due send and the oldest undecided event wait (None: none)."""
    return store.query(
        "SELECT (SELECT min(coalesce(next_at, ts)) FROM sends WHERE state IN "
        "('reserved','sending','unknown') AND coalesce(next_at, ts) <= ?) AS sends, "
        "(SELECT min(received) FROM events WHERE state='new') AS events",
        [now],
    )[0]
