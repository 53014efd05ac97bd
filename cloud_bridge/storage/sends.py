"""SMS sends and what goes with them (sandbox messages, opt-out links) as their modules read
them."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import TextClause, text

from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "sandbox_has",
    "sandbox_messages",
    "expired_reserved",
    "link_context",
    "send_rows",
    "send_row",
    "sandbox_rows",
    "optout_token",
    "inbound_rows",
    "send_log_rows",
    "send_state_counts",
]

_SANDBOX_HAS: Final[TextClause] = text("SELECT 1 FROM sandbox_messages WHERE sid = :sid")
_SANDBOX_MESSAGES: Final[TextClause] = text(
    "SELECT to_phone, sender, body FROM sandbox_messages ORDER BY id"
)
# The two outboxes share their columns; one statement each (a table name is not a parameter).
_EXPIRED_RESERVED: Final[dict[str, TextClause]] = {
    table: text(f"SELECT id FROM {table} WHERE state = 'reserved' AND expires_at <= :now")
    for table in ("sends", "replies")
}
_LINK_CONTEXT: Final[TextClause] = text(
    "SELECT s.language, st.name FROM optout_links o LEFT JOIN sends s ON s.id = o.send_id "
    "LEFT JOIN stores st ON st.id = s.store_id WHERE o.token = :token"
)
_SENDS: Final[TextClause] = text("SELECT * FROM sends ORDER BY id")
_SEND: Final[TextClause] = text("SELECT * FROM sends WHERE id = :id")
_SANDBOX: Final[TextClause] = text("SELECT * FROM sandbox_messages ORDER BY id")
_OPTOUT_TOKEN: Final[TextClause] = text("SELECT token FROM optout_links WHERE send_id = :send_id")
_INBOUND: Final[TextClause] = text("SELECT * FROM inbound_messages ORDER BY id")
_SEND_LOG: Final[TextClause] = text("SELECT * FROM send_log ORDER BY id")
_STATE_COUNTS: Final[TextClause] = text("SELECT state, count(*) AS n FROM sends GROUP BY state")


def sandbox_has(store: BridgeStore, sid: str) -> bool:
    """The sandbox provider recorded a message under ``sid``."""
    return bool(store.database.query(_SANDBOX_HAS, {"sid": sid}))


def sandbox_messages(store: BridgeStore) -> list[dict[str, Any]]:
    """Every message the sandbox provider recorded (to, from, text), oldest first."""
    return store.database.query(_SANDBOX_MESSAGES)


def expired_reserved(store: BridgeStore, table: str, now: float) -> list[dict[str, Any]]:
    """Ids of the outbox ``table``'s (sends or replies) reserved rows whose offer has expired
    by ``now``."""
    return store.database.query(_EXPIRED_RESERVED[table], {"now": now})


def link_context(store: BridgeStore, token: str) -> list[dict[str, Any]]:
    """The language of an opt-out link's send and its store's name (no row: no such link)."""
    return store.database.query(_LINK_CONTEXT, {"token": token})


# -- whole tables, for checks (tests, tools) ------------------------------------------------


def send_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every send, every column, by id."""
    return store.database.query(_SENDS)


def send_row(store: BridgeStore, send_id: int) -> dict[str, Any] | None:
    """One send, every column (None: no such send)."""
    rows = store.database.query(_SEND, {"id": send_id})
    return rows[0] if rows else None


def sandbox_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every message the sandbox provider recorded, every column, by id."""
    return store.database.query(_SANDBOX)


def optout_token(store: BridgeStore, send_id: int) -> str | None:
    """The opt-out link token of a send (None: the send has no link)."""
    rows = store.database.query(_OPTOUT_TOKEN, {"send_id": send_id})
    return rows[0]["token"] if rows else None


def inbound_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every inbound SMS, every column, by id."""
    return store.database.query(_INBOUND)


def send_log_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every entry of the send log (offers and replies), every column, by id."""
    return store.database.query(_SEND_LOG)


def send_state_counts(store: BridgeStore) -> dict[str, int]:
    """How many sends are in each state."""
    return {r["state"]: r["n"] for r in store.database.query(_STATE_COUNTS)}
