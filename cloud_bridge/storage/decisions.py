"""Offer decisions as checks read them (the engine writes them through BridgeStore)."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import TextClause, text

from cloud_bridge.storage.store import BridgeStore

__all__ = ["decision_rows"]

_DECISIONS: Final[TextClause] = text("SELECT * FROM decisions ORDER BY id")


def decision_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every decision, every column, by id."""
    return store.database.query(_DECISIONS)
