"""Tests that run on both store engines (the ``db_location`` fixture of conftest.py)."""

from __future__ import annotations

from pathlib import Path

from cloud_bridge.storage.pgdb import is_postgres_url
from cloud_bridge.storage.store import BridgeStore


def is_postgres(db_location: object) -> bool:
    return is_postgres_url(str(db_location))


def bridge_location(db_location: str | Path, data_dir: Path) -> str | Path:
    """The store of a bridge whose data_dir is ``data_dir``: its default SQLite file
    (data_dir/bridge.db, the data key file in data_dir/keys) or the test's PostgreSQL database."""
    return db_location if is_postgres(db_location) else data_dir / "bridge.db"


def database_setting(db_location: str | Path) -> str:
    """The bridge.toml line naming a PostgreSQL database ("" on SQLite: data_dir's default).
    A PostgreSQL bridge reads its data key from PASSBY_DATA_KEY, which the fixture sets."""
    return f'database = "{db_location}"\n' if is_postgres(db_location) else ""


def table_names(store: BridgeStore) -> list[str]:
    """The store's tables (not views), sorted, from the engine's catalogue."""
    if store.postgres:
        sql = (
            "SELECT table_name AS name FROM information_schema.tables "
            "WHERE table_schema=current_schema() AND table_type='BASE TABLE' ORDER BY 1"
        )
    else:
        sql = "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
    return [r["name"] for r in store.query(sql)]
