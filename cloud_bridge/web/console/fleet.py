"""Fleet pages (admin; a store owner sees their own boxes): every sensor's state, versions,
load and alerts; a sensor page with 24 h charts. JSON under ``/api/v1/fleet``."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from cloud_bridge.clock import DEFAULT_MAX_SKEW_S
from cloud_bridge.ingest.fleet import OUTBOX_WINDOW_S, SensorHealth, sensor_health
from cloud_bridge.storage.fleet import live_sensor_rows, stats_history, stats_since
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.auth import Principal
from cloud_bridge.web.console.charts import COLORS, Series, line_chart
from cloud_bridge.web.console.common import check_store, page
from cloud_bridge.web.dependencies import MaybeSettings, Store, Viewer

__all__ = ["router", "fleet_health", "sensor_history"]

DAY = 86400.0
BUCKET_S = 300.0


def fleet_health(
    store: BridgeStore,
    principal: Principal,
    now: float,
    store_id: str | None = None,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
) -> list[SensorHealth]:
    """Health of every live (not revoked) sensor the principal may see, alerts first;
    ``max_skew_s``: the clock offset beyond which a sensor gets the clock_skew alert."""
    rows = live_sensor_rows(store, principal.scope, store_id)
    history: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for h in stats_since(store, principal.scope, now - OUTBOX_WINDOW_S):
        history[(h["store_id"], h["sensor_id"])].append(h)
    out = [
        sensor_health(
            r, history[(r["store_id"], r["sensor_id"])], r["store_roster_version"], now, max_skew_s
        )
        for r in rows
    ]
    return sorted(out, key=lambda h: (not h.alerts, h.store_id, h.sensor_id))


def sensor_history(
    store: BridgeStore, store_id: str, sensor_id: str, since: float, bucket_s: float = BUCKET_S
) -> list[dict[str, Any]]:
    """Stats history in ``bucket_s`` buckets: max of load figures, min of free disk."""
    return stats_history(store, store_id, sensor_id, since, bucket_s)


def _charts(points: list[dict[str, Any]], now: float) -> list[tuple[str, Any]]:
    start = now - DAY
    out = []
    for key, title, unit, color in (
        ("frames_per_s", "Frames per second", "frames/s", COLORS[0]),
        ("outbox_depth", "Outbox depth (events waiting for the broker)", "events", COLORS[1]),
        ("dropped", "Events dropped since start", "events", COLORS[3]),
        ("cpu_temp_c", "CPU temperature", "°C", COLORS[4]),
        ("disk_free_mb", "Free disk", "MB", COLORS[2]),
        ("clock_offset_s", "Clock offset (sensor minus bridge)", "s", COLORS[5]),
    ):
        series = Series(title, [(p["t"] + BUCKET_S / 2, p[key]) for p in points], color)
        out.append((f"{title} ({unit})", line_chart([series], start, now, f"{title}, 24 h")))
    return out


router = APIRouter()


async def max_skew(settings: MaybeSettings) -> float:
    """The clock offset beyond which a sensor gets the clock_skew alert (policy setting)."""
    return settings.policy.max_clock_skew_s if settings is not None else DEFAULT_MAX_SKEW_S


Skew = Annotated[float, Depends(max_skew)]


@router.get("/fleet", response_class=HTMLResponse, include_in_schema=False)
def fleet_page(
    request: Request,
    me: Viewer,
    store: Store,
    skew: Skew,
    store_id: str | None = None,
    alerts: bool = False,
) -> HTMLResponse:
    if store_id:
        check_store(me, store_id)
    now = time.time()
    sensors = fleet_health(store, me, now, store_id or None, skew)
    shown = [s for s in sensors if s.alerts] if alerts else sensors
    counts = {
        "sensors": len(sensors),
        "online": sum(1 for s in sensors if s.online),
        "alerting": sum(1 for s in sensors if s.alerts),
    }
    return page(
        request,
        "fleet.html",
        me,
        {"sensors": shown, "counts": counts, "now": now, "only_alerts": alerts},
        title="Fleet",
    )


@router.get("/fleet/{store_id}/{sensor_id}", response_class=HTMLResponse, include_in_schema=False)
def sensor_page(
    request: Request, store_id: str, sensor_id: str, me: Viewer, store: Store, skew: Skew
) -> HTMLResponse:
    check_store(me, store_id)
    now = time.time()
    found = [s for s in fleet_health(store, me, now, store_id, skew) if s.sensor_id == sensor_id]
    if not found:
        raise HTTPException(404, f"no sensor {store_id}/{sensor_id}")
    points = sensor_history(store, store_id, sensor_id, now - DAY)
    return page(
        request,
        "sensor.html",
        me,
        {"s": found[0], "charts": _charts(points, now), "now": now},
        title=f"Sensor {store_id}/{sensor_id}",
    )


@router.get("/api/v1/fleet", tags=["fleet"])
def api_fleet(me: Viewer, store: Store, skew: Skew, store_id: str | None = None) -> dict[str, Any]:
    """Every sensor you may see: state (retained status + last will), last seen, versions,
    frames/s, outbox depth, drops, CPU temperature, disk, clock offset (sensor minus
    bridge, seconds), and alerts with their fix."""
    if store_id:
        check_store(me, store_id)
    sensors = fleet_health(store, me, time.time(), store_id or None, skew)
    return {
        "sensors": [s.to_json() for s in sensors],
        "online": sum(1 for s in sensors if s.online),
        "alerting": sum(1 for s in sensors if s.alerts),
    }


@router.get("/api/v1/fleet/{store_id}/{sensor_id}", tags=["fleet"])
def api_sensor(
    store_id: str,
    sensor_id: str,
    me: Viewer,
    store: Store,
    skew: Skew,
    hours: Annotated[float, Query(gt=0, le=192)] = 24,
) -> dict[str, Any]:
    """One sensor's health and its stats history (5-minute buckets)."""
    check_store(me, store_id)
    now = time.time()
    found = [s for s in fleet_health(store, me, now, store_id, skew) if s.sensor_id == sensor_id]
    if not found:
        raise HTTPException(404, f"no sensor {store_id}/{sensor_id}")
    return {
        **found[0].to_json(),
        "history": sensor_history(store, store_id, sensor_id, now - hours * 3600),
    }
