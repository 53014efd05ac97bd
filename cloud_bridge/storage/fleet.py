"""The sensor fleet: sensors, their credentials and their stats history as the bridge reads them."""

from __future__ import annotations

from typing import Any

from cloud_bridge.storage.scope import Scope, store_scope_sql
from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "sensors_of_store",
    "credential_by_username",
    "broker_login",
    "password_hash_rows",
    "live_sensor_rows",
    "stats_since",
    "stats_history",
    "sensor_gauges",
    "sensor_rows",
    "sensor_row",
    "sensor_stat_rows",
    "footfall_rows",
    "pairing_code_rows",
]


def sensors_of_store(store: BridgeStore, store_id: str) -> list[dict[str, Any]]:
    """The store's sensors (store_id, sensor_id) that have reported."""
    return store.query("SELECT store_id, sensor_id FROM sensors WHERE store_id=?", [store_id])


def credential_by_username(store: BridgeStore, username: str) -> list[dict[str, Any]]:
    """The sensor (store_id, sensor_id) whose broker user is ``username`` (no row: none)."""
    return store.query(
        "SELECT store_id, sensor_id FROM sensor_credentials WHERE mqtt_username=?", [username]
    )


def broker_login(store: BridgeStore, store_id: str, sensor_id: str) -> dict[str, Any]:
    """The sensor's broker user and command channel (the sensor has credentials)."""
    return store.query(
        "SELECT mqtt_username, channel FROM sensor_credentials WHERE store_id=? AND sensor_id=?",
        [store_id, sensor_id],
    )[0]


def password_hash_rows(store: BridgeStore, username: str) -> list[dict[str, Any]]:
    """The broker password hash of ``username`` as a row (no row: no such user)."""
    return store.query(
        "SELECT mqtt_password_hash FROM sensor_credentials WHERE mqtt_username=?",
        [username],
    )


def live_sensor_rows(
    store: BridgeStore, scope: Scope, store_id: str | None = None
) -> list[dict[str, Any]]:
    """Every live (not revoked) sensor of the ``scope`` stores (and ``store_id``), with its
    store's latest roster version, by store and sensor."""
    cond, args = store_scope_sql(scope, "s.store_id")
    if store_id is not None:
        cond, args = f"{cond} AND s.store_id=?", [*args, store_id]
    return store.query(
        "SELECT s.*, st.roster_version AS store_roster_version FROM sensors s "
        "LEFT JOIN stores st ON st.id=s.store_id LEFT JOIN sensor_credentials c "
        "ON c.store_id=s.store_id AND c.sensor_id=s.sensor_id "
        f"WHERE c.revoked IS NULL AND {cond} ORDER BY s.store_id, s.sensor_id",
        args,
    )


def stats_since(store: BridgeStore, scope: Scope, since: float) -> list[dict[str, Any]]:
    """The ``scope`` stores' sensor stats received since ``since``, oldest first."""
    hcond, hargs = store_scope_sql(scope, "store_id")
    return store.query(
        "SELECT store_id, sensor_id, received, outbox_depth, frames_per_s, dropped "
        f"FROM sensor_stats WHERE received>=? AND {hcond} ORDER BY received",
        [since, *hargs],
    )


def stats_history(
    store: BridgeStore, store_id: str, sensor_id: str, since: float, bucket_s: float
) -> list[dict[str, Any]]:
    """Stats history in ``bucket_s`` buckets: max of load figures, min of free disk."""
    return store.query(
        "SELECT CAST(received / ? AS INTEGER) * ? AS t, max(frames_per_s) AS frames_per_s, "
        "max(outbox_depth) AS outbox_depth, max(dropped) AS dropped, "
        "max(cpu_temp_c) AS cpu_temp_c, min(disk_free_mb) AS disk_free_mb, "
        "max(matched) AS matched, avg(ts - received) AS clock_offset_s, count(*) AS samples "
        "FROM sensor_stats "
        "WHERE store_id=? AND sensor_id=? AND received>=? GROUP BY 1 ORDER BY 1",
        [bucket_s, bucket_s, store_id, sensor_id, since],
    )


def sensor_gauges(store: BridgeStore) -> list[dict[str, Any]]:
    """Every sensor's state, last contact, roster version and last stats (JSON)."""
    return store.query(
        "SELECT store_id, sensor_id, state, last_seen, roster_version, last_stats FROM sensors"
    )


def sensor_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every sensor that has reported, every column, by store and sensor."""
    return store.query("SELECT * FROM sensors ORDER BY store_id, sensor_id")


def sensor_row(store: BridgeStore, store_id: str, sensor_id: str) -> dict[str, Any] | None:
    """One sensor, every column (None: it has not reported)."""
    rows = store.query(
        "SELECT * FROM sensors WHERE store_id=? AND sensor_id=?", [store_id, sensor_id]
    )
    return rows[0] if rows else None


def sensor_stat_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every stats report of every sensor, every column, in the order received."""
    return store.query("SELECT * FROM sensor_stats ORDER BY received, id")


def footfall_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every footfall hour of every sensor, every column."""
    return store.query("SELECT * FROM footfall_hours ORDER BY store_id, sensor_id, hour")


def pairing_code_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every pairing code (sealed), every column."""
    return store.query("SELECT * FROM pairing_codes")
