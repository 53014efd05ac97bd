"""A store owner sees only their stores, on every API route that takes or returns store data:
the routes are enumerated from the app, so a new route is checked without being listed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import World, add_sensor_state, make_world

OTHER = "north-mall"  # omar's store; olga owns main-st
PARAMS = {"store_id": OTHER, "sensor_id": "kiosk-1", "crm_id": "C-1001", "campaign_id": "fav-15"}
# Routes that carry store data and must answer the owner (scoped), not refuse them outright.
SCOPED = {
    "/api/overview", "/api/sandbox/messages", "/api/v1/fleet", "/api/v1/stores",
    "/api/v1/reports", "/api/v1/reports.csv", "/api/v1/me",
}  # fmt: skip


@pytest.fixture()
def world(tmp_path: Path, db_location) -> Iterator[World]:
    w = make_world(tmp_path, db_location)
    now = time.time()
    s = w.store
    add_sensor_state(s, "main-st", "door-1", now)
    add_sensor_state(
        s, OTHER, "kiosk-1", now,
        footfall={"hour_start": now // 3600 * 3600, "unique": 7, "visitors": 1},
    )  # fmt: skip
    s.insert_event("f" * 32, OTHER, "kiosk-1", "arrive", "ffffffffffffffff", now, "{}", now)
    s.record_decision("f" * 32, None, None, OTHER, "skip", "unknown_subject", "-", now)
    s.sandbox_record("SB-OTHER", "+37499000000", "NorthMall", "north secret", now)
    yield w
    s.close()


def test_owner_sees_no_other_store_on_any_api_route(world: World) -> None:
    olga = world.client("olga")
    checked, scoped = [], set()
    for route, ops in world.app.openapi()["paths"].items():
        if "get" not in ops or not route.startswith("/api/"):
            continue
        if route.startswith("/api/v1/rosters"):
            continue  # rosters: sensor tokens only (tested in test_roster_delivery)
        path = re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), route)
        r = olga.get(path, params={"q": "C"})
        checked.append(route)
        assert r.status_code != 500, path
        if r.status_code in (401, 403, 404, 422):
            continue
        assert r.status_code == 200, (path, r.status_code)
        scoped.add(route)
        text = r.text
        for leak in (OTHER, "kiosk-1", "north secret", "+37499"):
            assert leak not in text, (path, leak)
    assert scoped >= SCOPED, SCOPED - scoped
    assert len(checked) >= 15
    # and what a store owner may see of their own store is there
    assert "door-1" in olga.get("/api/v1/fleet").text
    assert olga.get("/api/v1/stores/main-st").status_code == 200
    for path in (f"/api/v1/stores/{OTHER}", f"/api/v1/fleet/{OTHER}/kiosk-1"):
        assert olga.get(path).status_code == 403, path


def test_admin_sees_every_store(world: World) -> None:
    ada = world.client("ada")
    assert OTHER in ada.get("/api/v1/fleet").text
    assert OTHER in ada.get("/api/overview").text
    assert "north secret" in ada.get("/api/sandbox/messages").text
