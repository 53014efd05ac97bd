"""Console and API (FastAPI, server-rendered Jinja2 pages, no JS build step)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from cloud_bridge import __version__
from cloud_bridge.config import BridgeSettings
from cloud_bridge.decide import REASONS
from cloud_bridge.enrol import router as enrol_router
from cloud_bridge.inbound import inbound_router
from cloud_bridge.provisioning import pairing_router as _pairing_router
from cloud_bridge.store import BridgeStore

__all__ = ["create_app"]

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def mask_phone(phone: str) -> str:
    """+79161234501 -> +7916*****01: enough to recognise, not enough to dial."""
    return phone[:5] + "*" * max(0, len(phone) - 7) + phone[-2:] if len(phone) > 7 else "***"


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["mask_phone"] = mask_phone


def overview(store: BridgeStore, limit: int = 50) -> dict[str, Any]:
    """Everything the overview page and its API show."""
    decisions = store.query(
        "SELECT d.ts, d.event_id, d.outcome, d.reason, d.detail, d.campaign_id, e.type, "
        "e.store_id, c.name AS customer FROM decisions d JOIN events e ON e.event_id=d.event_id "
        "LEFT JOIN customers c ON c.id=d.customer_id ORDER BY d.id DESC LIMIT ?",
        [limit],
    )
    for d in decisions:
        d["explanation"] = REASONS.get(d["reason"], d["reason"])
    return {
        "sensors": store.query("SELECT * FROM sensors ORDER BY store_id, sensor_id"),
        "counts": store.query(
            "SELECT (SELECT count(*) FROM events) AS events, "
            "(SELECT count(*) FROM events WHERE type='arrive') AS arrivals, "
            "(SELECT count(*) FROM decisions) AS decisions, "
            "(SELECT count(*) FROM sends WHERE state IN ('accepted','delivered')) AS sent, "
            "(SELECT count(*) FROM dead_letters) AS dead_letters"
        )[0],
        "decisions": decisions,
        "messages": store.query(
            "SELECT sid, to_phone, sender, body, ts FROM sandbox_messages ORDER BY id DESC LIMIT ?",
            [limit],
        ),
    }


def create_app(store: BridgeStore, settings: BridgeSettings | None = None) -> FastAPI:
    app = FastAPI(title="passby console", version=__version__)
    app.include_router(enrol_router(store, settings))
    app.include_router(inbound_router(store, settings))
    from cloud_bridge.campaigns import campaigns_router

    app.include_router(campaigns_router(store, settings))
    if settings is not None:
        from cloud_bridge.roster_api import roster_router

        app.include_router(roster_router(store, settings))
        app.include_router(_pairing_router(store, settings))

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(
            request, "overview.html", {"o": overview(store), "now": time.time()}
        )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        store.query("SELECT 1")
        return {"status": "ok"}

    @app.get("/api/overview")
    def api_overview() -> dict[str, Any]:
        data = overview(store)
        for m in data["messages"]:
            m["to_phone"] = mask_phone(m["to_phone"])
        return data

    @app.get("/api/sandbox/messages")
    def api_sandbox() -> list[dict[str, Any]]:
        rows = store.query(
            "SELECT sid, to_phone, sender, body, ts FROM sandbox_messages ORDER BY id"
        )
        for m in rows:
            m["to_phone"] = mask_phone(m["to_phone"])
        return rows

    return app
