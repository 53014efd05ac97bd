"""Store scope as SQL: the condition that keeps only rows of the stores a principal may see."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Scope", "store_scope_sql"]

# The stores a principal may see: None for all of them (``Principal.scope``).
Scope = Sequence[str] | None


def store_scope_sql(scope: Scope, column: str) -> tuple[str, list[Any]]:
    """An SQL condition (and its arguments) keeping only rows of the ``scope`` stores."""
    if scope is None:
        return "1=1", []
    if not scope:
        return "0=1", []
    return f"{column} IN ({','.join('?' * len(scope))})", list(scope)
