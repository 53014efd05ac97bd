"""Customers, their devices, consents and decisions as the console, enrolment, inbound SMS,
tenant seeding and the simulator read them."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "live_customer_count",
    "search_rows",
    "device_rows",
    "recent_decisions",
    "erased_rows",
    "consent_history",
    "mac_held_by_others",
    "consented_count",
    "consented_sample",
    "triggered_pairs",
    "subjects",
    "customer_rows",
    "customer_by_crm_id",
    "customer_by_id",
    "all_devices",
    "consent_rows",
    "suppression_rows",
    "enrolment_rows",
    "purchase_rows",
]

# A customer with active SMS and recognition consent (latest of each kind), not erased.
_LIVE_CONSENTED = (
    "c.erased IS NULL AND (SELECT k.status FROM consents k WHERE k.customer_id=c.id AND "
    "k.kind='sms' ORDER BY k.ts DESC, k.id DESC LIMIT 1)='active' AND (SELECT k.status FROM "
    "consents k WHERE k.customer_id=c.id AND k.kind='recognition' ORDER BY k.ts DESC, "
    "k.id DESC LIMIT 1)='active'"
)


def live_customer_count(store: BridgeStore) -> Any:
    """How many customers are not erased."""
    return store.query("SELECT count(*) AS n FROM customers WHERE erased IS NULL")[0]["n"]


def search_rows(
    store: BridgeStore, q: str, phones: Collection[str], limit: int
) -> list[dict[str, Any]]:
    """Live customers whose CRM id is or starts with ``q`` or whose phone is one of ``phones``."""
    return store.query(
        "SELECT id, crm_id, name, phone, loyalty_tier, visits, created FROM customers "
        f"WHERE erased IS NULL AND (crm_id=? OR crm_id LIKE ? ESCAPE '\\' OR phone IN "
        f"({','.join('?' * len(phones))})) ORDER BY crm_id LIMIT ?",
        [q, q.replace("%", r"\%").replace("_", r"\_") + "%", *phones, limit],
    )


def device_rows(store: BridgeStore, customer_id: int) -> list[dict[str, Any]]:
    """The customer's devices (no MAC): when seen, until when, where from."""
    return store.query(
        "SELECT first_seen, last_seen, expires, source, store_id FROM devices "
        "WHERE customer_id=? ORDER BY id",
        [customer_id],
    )


def recent_decisions(store: BridgeStore, customer_id: int) -> list[dict[str, Any]]:
    """The customer's 20 latest decisions with their event and send, newest first."""
    return store.query(
        "SELECT d.ts, d.outcome, d.reason, d.detail, d.campaign_id, e.store_id, e.type, "
        "s.state AS send_state, s.error AS send_error FROM decisions d "
        "LEFT JOIN events e ON e.event_id=d.event_id LEFT JOIN sends s ON s.decision_id=d.id "
        "WHERE d.customer_id=? ORDER BY d.id DESC LIMIT 20",
        [customer_id],
    )


def erased_rows(store: BridgeStore, customer_id: int) -> list[dict[str, Any]]:
    """The customer's erasure time as a row (None: not erased; no row: no such customer)."""
    return store.query("SELECT erased FROM customers WHERE id=?", [customer_id])


def consent_history(store: BridgeStore, customer_id: int) -> list[dict[str, Any]]:
    """Kind and status of every consent record of the customer, oldest first."""
    return store.query(
        "SELECT kind, status FROM consents WHERE customer_id=? ORDER BY ts, id", [customer_id]
    )


def mac_held_by_others(store: BridgeStore, mac_hmac: str, customer_id: int, now: float) -> bool:
    """Another live customer has this MAC (by its lookup HMAC) enrolled and unexpired."""
    rows = store.query(
        "SELECT 1 FROM devices d JOIN customers c ON c.id=d.customer_id WHERE d.mac_hmac=? "
        "AND c.erased IS NULL AND d.customer_id<>? AND (d.expires IS NULL OR d.expires>?) "
        "LIMIT 1",
        [mac_hmac, customer_id, now],
    )
    return bool(rows)


def consented_count(store: BridgeStore) -> Any:
    """How many live customers have active SMS and recognition consent (scans every one)."""
    return store.query(f"SELECT count(*) AS n FROM customers c WHERE {_LIVE_CONSENTED}")[0]["n"]


def consented_sample(store: BridgeStore, size: int) -> list[dict[str, Any]]:
    """The first ``size`` live customers with active SMS and recognition consent."""
    return store.query(
        "SELECT c.id, c.crm_id, c.name, c.favourite_product, c.loyalty_tier, c.visits, "
        f"c.first_purchase FROM customers c WHERE {_LIVE_CONSENTED} ORDER BY c.id LIMIT ?",
        [size],
    )


def triggered_pairs(store: BridgeStore, trigger: str, store_ids: list[str], since: float) -> Any:
    """Distinct (subject, UTC day) pairs with a ``trigger`` event at these stores since
    ``since``."""
    return store.query(
        "SELECT count(*) AS n FROM (SELECT subject, CAST(ts / 86400 AS INTEGER) AS day "
        f"FROM events WHERE type=? AND ts>=? AND store_id IN ({','.join('?' * len(store_ids))}) "
        "GROUP BY subject, day) x",
        [trigger, since, *store_ids],
    )[0]["n"]


def subjects(store: BridgeStore, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` customers' subject ids, by id."""
    return store.query("SELECT subject FROM customers ORDER BY id LIMIT ?", [limit])


# -- whole tables, for checks (tests, tools) ------------------------------------------------


def customer_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every customer (erased ones too), every column, by id."""
    return store.query("SELECT * FROM customers ORDER BY id")


def customer_by_crm_id(store: BridgeStore, crm_id: str) -> dict[str, Any] | None:
    """The customer with this CRM id (erased or not), every column; None: no such customer."""
    rows = store.query("SELECT * FROM customers WHERE crm_id=?", [crm_id])
    return rows[0] if rows else None


def customer_by_id(store: BridgeStore, customer_id: int) -> dict[str, Any] | None:
    """One customer (erased or not), every column; None: no such customer."""
    rows = store.query("SELECT * FROM customers WHERE id=?", [customer_id])
    return rows[0] if rows else None


def all_devices(store: BridgeStore) -> list[dict[str, Any]]:
    """Every enrolled device, every column, by id."""
    return store.query("SELECT * FROM devices ORDER BY id")


def consent_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every consent record, every column, by id."""
    return store.query("SELECT * FROM consents ORDER BY id")


def suppression_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every suppression (customers erased on request), every column, by id."""
    return store.query("SELECT * FROM suppressions ORDER BY id")


def enrolment_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every enrolment, every column, oldest first."""
    return store.query("SELECT * FROM enrolments ORDER BY created, id")


def purchase_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every imported purchase, every column, by id."""
    return store.query("SELECT * FROM purchases ORDER BY id")
