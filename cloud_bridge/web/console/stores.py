"""Store pages (a store owner's home; admins and marketers see every store): footfall per hour
(passers-by vs visitors), known-customer arrivals, SMS sent, returns, and the install checklist
with the fix for each red item. JSON under ``/api/v1/stores``."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from cloud_bridge.ingest.fleet import SensorHealth
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.store_figures import (
    arrivals_by_hour,
    arrivals_by_store,
    footfall_by_hour,
    footfall_by_store,
    returning_visitors,
    sends_by_hour,
    sends_by_store,
)
from cloud_bridge.storage.stores import store_row
from cloud_bridge.web.auth import Principal, audit
from cloud_bridge.web.console.charts import COLORS, stacked_bars
from cloud_bridge.web.console.common import check_store, page, visible_stores
from cloud_bridge.web.console.fleet import fleet_health
from cloud_bridge.web.dependencies import Anyone, Store

__all__ = ["router", "store_day", "checklist"]

RETURN_DAYS = 30
DELIVERED = ("accepted", "delivered")


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enter_dbm: int = Field(description="enter threshold set on the box, dBm", ge=-100, le=-20)
    leave_dbm: int = Field(description="leave threshold set on the box, dBm", ge=-100, le=-20)


def _store_row(store: BridgeStore, store_id: str) -> dict[str, Any]:
    row = store_row(store, store_id)
    if row is None:
        raise HTTPException(404, f"no store {store_id!r}")
    return row


def _day_bounds(tz: str, day: date | None, now: float) -> tuple[date, float, float]:
    zone = ZoneInfo(tz)
    d = day or datetime.fromtimestamp(now, zone).date()
    start = datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()
    nxt = d + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).timestamp()
    return d, start, end


def store_day(store: BridgeStore, store_id: str, day: date | None, now: float) -> dict[str, Any]:
    """One store's day in its own time zone, hour by hour, and the day's totals."""
    st = _store_row(store, store_id)
    d, start, end = _day_bounds(st["timezone"], day, now)
    hours = [0.0] * 24

    def slot(ts: float) -> int:
        return min(23, max(0, int((ts - start) // 3600)))

    passers, visitors = list(hours), list(hours)
    for r in footfall_by_hour(store, store_id, start, end):
        passers[slot(r["hour"])] += r["p"]
        visitors[slot(r["hour"])] += r["v"]
    arrivals = list(hours)
    for r in arrivals_by_hour(store, store_id, start, end):
        arrivals[min(23, r["h"])] += r["n"]
    sent = list(hours)
    for r in sends_by_hour(store, store_id, start, end, DELIVERED):
        sent[min(23, r["h"])] += r["n"]
    returns = returning_visitors(store, store_id, start, end, RETURN_DAYS * 86400, DELIVERED)
    return {
        "store": {k: st[k] for k in ("id", "name", "timezone", "country", "roster_version")},
        "day": d.isoformat(),
        "hours": [
            {
                "hour": h,
                "passers_by": int(passers[h]),
                "visitors": int(visitors[h]),
                "arrivals": int(arrivals[h]),
                "sms_sent": int(sent[h]),
            }
            for h in range(24)
        ],
        "totals": {
            "passers_by": int(sum(passers)),
            "visitors": int(sum(visitors)),
            "arrivals": int(sum(arrivals)),
            "sms_sent": int(sum(sent)),
            "returns": int(returns),
        },
    }


def checklist(
    store: BridgeStore,
    principal: Principal,
    store_id: str,
    now: float,
    sensors: list[SensorHealth] | None = None,
    st: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The install checklist: box online, frames flowing, roster current, thresholds
    calibrated; each item ok or not, with what to do about it."""
    st = st or _store_row(store, store_id)
    if sensors is None:
        sensors = fleet_health(store, principal, now, store_id)
    online = [s for s in sensors if s.online]
    flowing = [s for s in online if (s.stats.get("frames_per_s") or 0) > 0]
    rv = st["roster_version"] or 0
    current = [s for s in online if rv and (s.roster_version or 0) >= rv]
    calibrated = json.loads(store.meta(f"calibrated:{store_id}") or "null")
    sid = sensors[0].sensor_id if sensors else "SENSOR"
    items = [
        {
            "key": "box_online",
            "label": "Box online",
            "ok": bool(online),
            "detail": f"{len(online)} of {len(sensors)} box(es) online"
            if sensors
            else "no box provisioned for this store",
            "fix": "Plug the box in and connect it to the network; if it is new, pair it: "
            f"`cloud-bridge sensors add --store {store_id}` then `edge-agent enroll CODE` on "
            "the box. Still offline? `journalctl -u passby-agent -n 50` on the box.",
        },
        {
            "key": "frames_flowing",
            "label": "Frames flowing",
            "ok": bool(flowing),
            "detail": ", ".join(
                f"{s.sensor_id}: {s.stats.get('frames_per_s') or 0:g} frames/s on channel "
                f"{s.stats.get('channel') or '?'}"
                for s in online
            )
            or "no box online",
            "fix": "The Wi-Fi adapter must listen in monitor mode on the store access point's "
            "channel: run `edge-agent doctor --iface wlan1 --channel N` on the box and do what "
            "it says.",
        },
        {
            "key": "roster_current",
            "label": "Roster current",
            "ok": bool(online) and len(current) == len(online) and rv > 0,
            "detail": (
                f"store roster v{rv}; boxes: "
                + ", ".join(f"{s.sensor_id} v{s.roster_version or 0}" for s in online)
            )
            if rv
            else "no roster published yet",
            "fix": f"Publish the roster: `cloud-bridge roster publish --store {store_id}` "
            "(the boxes must be online to fetch it).",
        },
        {
            "key": "thresholds_calibrated",
            "label": "Thresholds calibrated",
            "ok": calibrated is not None,
            "detail": (
                f"enter {calibrated['enter_dbm']} dBm / leave {calibrated['leave_dbm']} dBm, "
                f"recorded by {calibrated['by']}"
            )
            if calibrated
            else "not recorded yet (defaults: enter -70 dBm, leave -80 dBm)",
            "fix": "Stand at the door with a phone and run `edge-agent calibrate --iface wlan1` "
            "on the box; set the values it suggests with `cloud-bridge cmd config --store "
            f"{store_id} --sensor {sid} --set presence.enter_dbm=-65 --set "
            "presence.leave_dbm=-75`, then record them below.",
        },
    ]
    return items


router = APIRouter()


def overview_rows(store: BridgeStore, me: Principal, now: float) -> list[dict[str, Any]]:
    """Today's totals of every visible store: a few grouped queries per time zone, not a
    page's worth of queries per store (100s of stores)."""
    stores = visible_stores(store, me)
    health: dict[str, list[SensorHealth]] = {}
    for h in fleet_health(store, me, now):
        health.setdefault(h.store_id, []).append(h)
    zones: dict[str, list[dict[str, Any]]] = {}
    for st in stores:
        zones.setdefault(st["timezone"], []).append(st)
    totals: dict[str, dict[str, int]] = {}
    for tz, group in zones.items():
        _, start, end = _day_bounds(tz, None, now)
        ids = [g["id"] for g in group]
        for g in ids:
            totals[g] = dict.fromkeys(("passers_by", "visitors", "arrivals", "sms_sent"), 0)
        for r in footfall_by_store(store, ids, start, end):
            totals[r["store_id"]].update(passers_by=int(r["p"]), visitors=int(r["v"]))
        for r in arrivals_by_store(store, ids, start, end):
            totals[r["store_id"]]["arrivals"] = r["n"]
        for r in sends_by_store(store, ids, start, end, DELIVERED):
            totals[r["store_id"]]["sms_sent"] = r["n"]
    out = []
    for st in stores:
        items = checklist(store, me, st["id"], now, health.get(st["id"], []), st)
        out.append(
            {
                "id": st["id"],
                "name": st["name"],
                "timezone": st["timezone"],
                "today": totals[st["id"]],
                "checklist_ok": sum(1 for i in items if i["ok"]),
                "checklist_total": len(items),
            }
        )
    return out


@router.get("/stores", response_class=HTMLResponse, include_in_schema=False)
def stores_page(request: Request, me: Anyone, store: Store) -> Response:
    rows = overview_rows(store, me, time.time())
    if me.role == "owner" and len(rows) == 1:
        return RedirectResponse(f"/stores/{rows[0]['id']}", status_code=303)
    return page(request, "stores.html", me, {"stores": rows}, title="Stores")


@router.get("/stores/{store_id}", response_class=HTMLResponse, include_in_schema=False)
def store_page(
    request: Request,
    store_id: str,
    me: Anyone,
    store: Store,
    day: date | None = None,
    saved: str = "",
) -> HTMLResponse:
    check_store(me, store_id)
    now = time.time()
    data = store_day(store, store_id, day, now)
    labels = [f"{h:02d}" for h in range(24)]
    hours = data["hours"]
    charts = {
        "footfall": stacked_bars(
            labels,
            [
                ("visitors", COLORS[0], [h["visitors"] for h in hours]),
                ("passers-by", "#9db8e6", [h["passers_by"] for h in hours]),
            ],
            "Footfall per hour",
            every=3,
        ),
        "results": stacked_bars(
            labels,
            [
                ("known-customer arrivals", COLORS[1], [h["arrivals"] for h in hours]),
                ("SMS sent", COLORS[2], [h["sms_sent"] for h in hours]),
            ],
            "Arrivals and SMS per hour",
            every=3,
        ),
    }
    d = date.fromisoformat(data["day"])
    return page(
        request,
        "store.html",
        me,
        {
            "d": data,
            "charts": charts,
            "checklist": checklist(store, me, store_id, now),
            "prev_day": (d - timedelta(days=1)).isoformat(),
            "next_day": (d + timedelta(days=1)).isoformat(),
            "saved": saved,
        },
        title=data["store"]["name"],
    )


@router.post("/stores/{store_id}/calibration", include_in_schema=False)
async def calibrate_form(request: Request, store_id: str, me: Anyone, store: Store) -> Response:
    check_store(me, store_id)
    form = await request.form()
    try:
        cal = Calibration(
            enter_dbm=int(str(form.get("enter_dbm", ""))),
            leave_dbm=int(str(form.get("leave_dbm", ""))),
        )
    except ValueError:
        return RedirectResponse(f"/stores/{store_id}?saved=bad", status_code=303)
    _record_calibration(store, request, me, store_id, cal)
    return RedirectResponse(f"/stores/{store_id}?saved=calibration", status_code=303)


def _record_calibration(
    store: BridgeStore, request: Request, me: Principal, store_id: str, cal: Calibration
) -> None:
    if cal.leave_dbm >= cal.enter_dbm:
        raise HTTPException(422, "leave_dbm must be below enter_dbm (hysteresis)")
    _store_row(store, store_id)
    value = {**cal.model_dump(), "by": me.username, "ts": time.time()}
    store.set_meta(f"calibrated:{store_id}", json.dumps(value))
    audit(request, me, "store.calibration", store_id, f"{cal.enter_dbm}/{cal.leave_dbm} dBm")


@router.get("/api/v1/stores", tags=["stores"])
def api_stores(me: Anyone, store: Store) -> list[dict[str, Any]]:
    """Your stores with today's totals and how much of the install checklist is green."""
    return overview_rows(store, me, time.time())


@router.get("/api/v1/stores/{store_id}", tags=["stores"])
def api_store(
    store_id: str,
    me: Anyone,
    store: Store,
    day: Annotated[date | None, Query(description="YYYY-MM-DD, store time")] = None,
) -> dict[str, Any]:
    """One store's day hour by hour: footfall (passers-by vs visitors), known-customer
    arrivals, SMS sent; totals with returns; and the install checklist."""
    check_store(me, store_id)
    now = time.time()
    return {
        **store_day(store, store_id, day, now),
        "checklist": checklist(store, me, store_id, now),
    }


@router.post("/api/v1/stores/{store_id}/calibration", status_code=204, tags=["stores"])
def api_calibration(
    request: Request, store_id: str, body: Calibration, me: Anyone, store: Store
) -> Response:
    """Record the presence thresholds set on the store's boxes after calibrating."""
    check_store(me, store_id)
    _record_calibration(store, request, me, store_id, body)
    return Response(status_code=204)
