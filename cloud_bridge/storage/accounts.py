"""Console accounts: the audit log as the admin pages and API read it; logins and sessions."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import TextClause, text

from cloud_bridge.storage.store import BridgeStore

__all__ = ["audit_entries", "login_attempt_rows", "session_rows"]

_AUDIT: Final[TextClause] = text("SELECT * FROM audit_log ORDER BY id DESC LIMIT :limit")
_AUDIT_BEFORE: Final[TextClause] = text(
    "SELECT * FROM audit_log WHERE id < :before_id ORDER BY id DESC LIMIT :limit"
)
_LOGIN_ATTEMPTS: Final[TextClause] = text("SELECT * FROM login_attempts ORDER BY id")
_SESSIONS: Final[TextClause] = text("SELECT * FROM sessions")


def audit_entries(
    store: BridgeStore, limit: int = 200, before_id: int | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` audit entries (below ``before_id`` when given), newest first."""
    if before_id is None:
        return store.database.query(_AUDIT, {"limit": limit})
    return store.database.query(_AUDIT_BEFORE, {"before_id": before_id, "limit": limit})


def login_attempt_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every login attempt, every column, by id."""
    return store.database.query(_LOGIN_ATTEMPTS)


def session_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every console session, every column."""
    return store.database.query(_SESSIONS)
