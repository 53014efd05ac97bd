"""SMS sends and what goes with them (sandbox messages, opt-out links) as their modules read
them."""

from __future__ import annotations

from typing import Any

from cloud_bridge.storage.store import BridgeStore

__all__ = ["sandbox_has", "sandbox_messages", "expired_reserved", "link_context"]


def sandbox_has(store: BridgeStore, sid: str) -> bool:
    """The sandbox provider recorded a message under ``sid``."""
    return bool(store.query("SELECT 1 FROM sandbox_messages WHERE sid=?", [sid]))


def sandbox_messages(store: BridgeStore) -> list[dict[str, Any]]:
    """Every message the sandbox provider recorded (to, from, text), oldest first."""
    return store.query("SELECT to_phone, sender, body FROM sandbox_messages ORDER BY id")


def expired_reserved(store: BridgeStore, table: str, now: float) -> list[dict[str, Any]]:
    """Ids of the outbox ``table``'s reserved rows whose offer has expired by ``now``."""
    return store.query(f"SELECT id FROM {table} WHERE state='reserved' AND expires_at<=?", [now])


def link_context(store: BridgeStore, token: str) -> list[dict[str, Any]]:
    """The language of an opt-out link's send and its store's name (no row: no such link)."""
    return store.query(
        "SELECT s.language, st.name FROM optout_links o LEFT JOIN sends s ON s.id=o.send_id "
        "LEFT JOIN stores st ON st.id=s.store_id WHERE o.token=?",
        [token],
    )
