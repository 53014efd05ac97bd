"""Fleet: sensor state from the retained status and last will, alerts with their fix, the 24 h
sensor page with SVG charts, stats history kept by ingest with bounded retention."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from console_helpers import World, add_sensor_state, make_world

from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.ingest.fleet import sensor_health
from cloud_bridge.storage.fleet import footfall_rows, sensor_stat_rows
from cloud_bridge.storage.store import BridgeStore


@pytest.fixture()
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def row(state: str, last_seen: float | None, **stats: object) -> dict:
    return {
        "store_id": "s",
        "sensor_id": "x",
        "state": state,
        "last_seen": last_seen,
        "agent_version": "1",
        "roster_version": stats.pop("rv", 3),
        "last_stats": json.dumps(stats),
    }


@pytest.mark.parametrize(
    ("sensor", "history", "store_rv", "state", "alerts"),
    [
        (row("online", 990.0, frames_per_s=5), [], 3, "online", []),
        (row("offline", 990.0), [], 3, "offline", []),  # just went: shown, not yet an alert
        (row("offline", 600.0), [], 3, "offline", ["offline"]),
        (row("online", 600.0), [], 3, "silent", ["offline"]),
        (row("online", 990.0, rv=2), [], 3, "online", ["stale_roster"]),
        (
            row("online", 990.0),
            [{"received": 500.0 + 100 * i, "outbox_depth": 10 * i} for i in range(5)],
            3,
            "online",
            ["outbox_growing"],
        ),
        (
            row("online", 990.0, frames_per_s=0),
            [{"received": 700.0 + 60 * i, "frames_per_s": 0.0} for i in range(5)],
            3,
            "online",
            ["no_frames"],
        ),
        (row("online", 990.0, iface_state="down"), [], 3, "online", ["no_frames"]),
        (
            row("online", 990.0, cpu_temp_c=85.0, disk_free_mb=50.0),
            [],
            3,
            "online",
            ["hot", "disk_low"],
        ),
        (
            row("online", 990.0, update_failed="1.2.0: did not start; rolled back to 1.1.0"),
            [],
            3,
            "online",
            ["update_failed"],
        ),  # fmt: skip
        (row("", None), [], 3, "never", []),
    ],
)
def test_sensor_health_table(sensor, history, store_rv, state, alerts) -> None:
    h = sensor_health(sensor, history, store_rv, now=1000.0)
    assert h.state == state
    assert [a.kind for a in h.alerts] == alerts
    assert all(a.fix for a in h.alerts)


def test_ingest_keeps_stats_history_with_bounded_retention(tmp_path: Path) -> None:
    store = BridgeStore(":memory:")
    counters = IngestCounters()
    base = {
        "ts": 1.0, "uptime_s": 1.0, "agent_version": "0.1", "frames": 1, "frames_per_s": 2.0,
        "client_frames": 1, "matched": 0, "malformed": 0, "outbox_depth": 4, "dropped": 0,
        "roster_version": 1,
        "footfall": {"hour_start": 3600, "unique": 9, "visitors": 2, "passers_by": 7},
    }  # fmt: skip
    topic = "passby/v1/main-st/door-1/stats"
    day = 86400.0
    for now in (10 * day, 15 * day, 20 * day):
        assert handle_message(store, topic, json.dumps(base).encode(), now, counters) == "stats"
    rows = sensor_stat_rows(store)
    assert [r["received"] for r in rows] == [15 * day, 20 * day]  # 8 days kept
    foot = footfall_rows(store)
    assert foot == [
        {
            "store_id": "main-st", "sensor_id": "door-1", "hour": 3600.0,
            "unique_devices": 9, "visitors": 2, "passers_by": 7,
        }
    ]  # fmt: skip


def test_fleet_page_lists_sensors_with_alerts_and_the_sensor_page_has_charts(
    world: World,
) -> None:
    now = time.time()
    for i in range(10):
        add_sensor_state(world.store, "main-st", "door-1", now - 600 + 60 * i, outbox_depth=i * 5)
    add_sensor_state(world.store, "north-mall", "kiosk-1", now - 30)
    world.store.sensor_seen("north-mall", "kiosk-1", now - 30, state="offline")
    admin = world.client("ada")
    page = admin.get("/fleet").text
    assert 'id="sensor-main-st-door-1" data-state="online"' in page
    assert 'id="sensor-north-mall-kiosk-1" data-state="offline"' in page
    assert "outbox_growing" in page
    data = admin.get("/api/v1/fleet").json()
    assert {s["sensor_id"]: s["state"] for s in data["sensors"]} == {
        "door-1": "online",
        "kiosk-1": "offline",
    }
    door = next(s for s in data["sensors"] if s["sensor_id"] == "door-1")
    assert door["frames_per_s"] == 12.5 and door["cpu_temp_c"] == 51.0
    assert [a["kind"] for a in door["alerts"]] == ["outbox_growing"]
    sensor = admin.get("/fleet/main-st/door-1")
    assert sensor.status_code == 200
    assert sensor.text.count("<svg") == 6 and "<polyline" in sensor.text
    hist = admin.get("/api/v1/fleet/main-st/door-1?hours=1").json()["history"]
    assert sum(h["samples"] for h in hist) == 10
    assert admin.get("/fleet/main-st/nope").status_code == 404


def test_store_owner_sees_only_their_boxes(world: World) -> None:
    now = time.time()
    add_sensor_state(world.store, "main-st", "door-1", now)
    add_sensor_state(world.store, "north-mall", "kiosk-1", now)
    olga = world.client("olga")
    ids = [s["sensor_id"] for s in olga.get("/api/v1/fleet").json()["sensors"]]
    assert ids == ["door-1"]
    assert olga.get("/api/v1/fleet/north-mall/kiosk-1").status_code == 403
    assert olga.get("/fleet/north-mall/kiosk-1").status_code == 403
    assert olga.get("/api/v1/fleet?store_id=north-mall").status_code == 403
    assert "kiosk-1" not in olga.get("/fleet").text
    assert world.client("mia").get("/api/v1/fleet").status_code == 403
