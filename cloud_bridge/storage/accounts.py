"""Console accounts: the audit log as the admin pages and API read it; logins and sessions."""

from __future__ import annotations

from typing import Any

from cloud_bridge.storage.store import BridgeStore

__all__ = ["audit_entries", "login_attempt_rows", "session_rows"]


def audit_entries(
    store: BridgeStore, limit: int = 200, before_id: int | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` audit entries (below ``before_id`` when given), newest first."""
    if before_id is None:
        return store.query("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", [limit])
    return store.query(
        "SELECT * FROM audit_log WHERE id<? ORDER BY id DESC LIMIT ?", [before_id, limit]
    )


def login_attempt_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every login attempt, every column, by id."""
    return store.query("SELECT * FROM login_attempts ORDER BY id")


def session_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every console session, every column."""
    return store.query("SELECT * FROM sessions")
