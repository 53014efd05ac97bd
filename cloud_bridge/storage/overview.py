"""The overview page: recent decisions, sensors, counts and sandbox messages of the stores in
scope; the health check's ping."""

from __future__ import annotations

from typing import Any

from cloud_bridge.storage.scope import Scope, store_scope_sql
from cloud_bridge.storage.store import BridgeStore

__all__ = ["overview_rows", "ping", "demo_decisions"]


def overview_rows(store: BridgeStore, scope: Scope, limit: int) -> dict[str, Any]:
    """Decisions (newest ``limit``), sensors, counts and sandbox messages (newest ``limit``)
    of the ``scope`` stores (None: all)."""
    s_cond, s_args = store_scope_sql(scope, "store_id")
    e_cond, e_args = store_scope_sql(scope, "e.store_id")
    d_cond, d_args = store_scope_sql(scope, "d.store_id")
    m_cond, m_args = (
        ("1=1", [])
        if scope is None
        else (
            "m.sid IN (SELECT provider_id FROM sends WHERE provider_id IS NOT NULL AND "
            + store_scope_sql(scope, "store_id")[0]
            + ")",
            store_scope_sql(scope, "store_id")[1],
        )
    )
    decisions = store.query(
        "SELECT d.ts, d.event_id, d.outcome, d.reason, d.detail, d.campaign_id, e.type, "
        "e.store_id, c.name AS customer, s.state AS send_state, s.error AS send_error "
        "FROM decisions d JOIN events e ON e.event_id=d.event_id "
        "LEFT JOIN customers c ON c.id=d.customer_id LEFT JOIN sends s ON s.decision_id=d.id "
        f"WHERE {e_cond} AND {d_cond} ORDER BY d.id DESC LIMIT ?",
        [*e_args, *d_args, limit],
    )
    return {
        "sensors": store.query(
            f"SELECT * FROM sensors WHERE {s_cond} ORDER BY store_id, sensor_id", s_args
        ),
        "counts": store.query(
            f"SELECT (SELECT count(*) FROM events WHERE {s_cond}) AS events, "
            f"(SELECT count(*) FROM events WHERE type='arrive' AND {s_cond}) AS arrivals, "
            f"(SELECT count(*) FROM decisions d WHERE {d_cond}) AS decisions, "
            "(SELECT count(*) FROM sends WHERE state IN ('accepted','delivered') "
            f"AND {s_cond}) AS sent, (SELECT count(*) FROM dead_letters) AS dead_letters",
            [*s_args, *s_args, *d_args, *s_args],
        )[0],
        "decisions": decisions,
        "messages": store.query(
            f"SELECT m.sid, m.to_phone, m.sender, m.body, m.ts FROM sandbox_messages m "
            f"WHERE {m_cond} ORDER BY m.id DESC LIMIT ?",
            [*m_args, limit],
        ),
    }


def ping(store: BridgeStore) -> None:
    """The store answers a query (raises when it cannot)."""
    store.query("SELECT 1")


def demo_decisions(store: BridgeStore) -> list[dict[str, Any]]:
    """Every decision with its event type and customer name, in event order (the demo's
    table)."""
    return store.query(
        "SELECT e.type, c.name, d.outcome, d.reason, d.detail FROM decisions d "
        "JOIN events e ON e.event_id=d.event_id LEFT JOIN customers c ON c.id=d.customer_id "
        "ORDER BY e.ts, d.id"
    )
