"""Stores: the rows of the ``stores`` table as the bridge's modules read them."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import TextClause, text

from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "store_row",
    "stores_by_name",
    "store_ids",
    "store_names",
    "store_countries",
    "store_exists",
    "site_key_rows",
    "store_country_rows",
    "store_info_rows",
    "roster_versions",
]


_ROW: Final[TextClause] = text("SELECT * FROM stores WHERE id = :id")
_BY_NAME: Final[TextClause] = text("SELECT * FROM stores ORDER BY name, id")
_IDS: Final[TextClause] = text("SELECT id FROM stores")
_NAMES: Final[TextClause] = text("SELECT id, name FROM stores ORDER BY id")
_COUNTRIES: Final[TextClause] = text("SELECT country FROM stores")
_EXISTS: Final[TextClause] = text("SELECT 1 FROM stores WHERE id = :id")
_SITE_KEY: Final[TextClause] = text("SELECT site_key FROM stores WHERE id = :id")
_ID_COUNTRY: Final[TextClause] = text("SELECT id, country FROM stores")
_ROSTER_VERSIONS: Final[TextClause] = text("SELECT id, roster_version FROM stores")


def store_row(store: BridgeStore, store_id: str) -> dict[str, Any] | None:
    """Every column of one store, None when there is no such store."""
    rows = store.database.query(_ROW, {"id": store_id})
    return rows[0] if rows else None


def stores_by_name(store: BridgeStore) -> list[dict[str, Any]]:
    """Every store, every column, by name then id."""
    return store.database.query(_BY_NAME)


def store_ids(store: BridgeStore) -> set[str]:
    return {r["id"] for r in store.database.query(_IDS)}


def store_names(store: BridgeStore) -> list[dict[str, Any]]:
    """Every store's id and name, by id."""
    return store.database.query(_NAMES)


def store_countries(store: BridgeStore) -> set[str]:
    """The countries the stores are in."""
    return {r["country"] for r in store.database.query(_COUNTRIES)}


def store_exists(store: BridgeStore, store_id: str) -> bool:
    return bool(store.database.query(_EXISTS, {"id": store_id}))


def site_key_rows(store: BridgeStore, store_id: str) -> list[dict[str, Any]]:
    """The store's site key (hex) as a row; no row when there is no such store."""
    return store.database.query(_SITE_KEY, {"id": store_id})


def store_country_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every store's id and country."""
    return store.database.query(_ID_COUNTRY)


_STORE_INFO = (
    "SELECT id, name, timezone, country, sender_name, send_start, send_end, daily_budget "
    "FROM stores"
)
_INFO_ONE: Final[TextClause] = text(f"{_STORE_INFO} WHERE id = :id")
_INFO_ALL: Final[TextClause] = text(_STORE_INFO)


def store_info_rows(store: BridgeStore, store_id: str) -> list[dict[str, Any]]:
    """The columns of ``StoreInfo`` of one store (no row when there is no such store)."""
    return store.database.query(_INFO_ONE, {"id": store_id})


def every_store_info_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """The columns of ``StoreInfo`` of every store, in one statement (the decision worker's
    cache reads them all at once instead of one statement per store)."""
    return store.database.query(_INFO_ALL)


def roster_versions(store: BridgeStore) -> list[dict[str, Any]]:
    """Every store's id and latest published roster version."""
    return store.database.query(_ROSTER_VERSIONS)
