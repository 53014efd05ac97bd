"""Campaign CRUD under ``/api/v1/campaigns`` (the console uses the same validation, in
``cloud_bridge.offers.campaigns``), for a console login or API token with the admin or marketer
role (``campaigns_guard``). Errors: 422 ``{"errors": [{"field", "message"}]}``."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from cloud_bridge.offers.campaigns import (
    CampaignError,
    row_to_dict,
    save_campaigns,
    validate_campaigns,
)
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.dependencies import Clock, MaybeSettings, Store, require_role

__all__ = ["router", "campaigns_guard"]

# The router's guard: the admin or marketer role (session or API token). A test may swap it
# with ``app.dependency_overrides[campaigns_guard]``.
campaigns_guard = require_role("admin", "marketer")
router = APIRouter(prefix="/api/v1", dependencies=[Depends(campaigns_guard)])


def _bearer_check(settings: Any) -> Callable[[Request], None]:
    """A guard of ``Authorization: Bearer <enrol.api_token>`` (as the erasure API), for an app
    without console accounts."""

    def check(request: Request) -> None:
        token = getattr(getattr(settings, "enrol", None), "api_token", None)
        if token is None:
            raise HTTPException(403, "the campaign API is off: set enrol.api_token")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
            raise HTTPException(401, "a valid bearer token is required")

    return check


def invalid(exc: CampaignError) -> HTTPException:
    return HTTPException(
        422, {"errors": [{"field": p.field, "message": p.message} for p in exc.problems]}
    )


def one(store: BridgeStore, campaign_id: str) -> dict[str, Any]:
    rows = store.campaign_rows(campaign_id)
    if not rows:
        raise HTTPException(404, f"no campaign {campaign_id!r}")
    return _public(rows[0])


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = row_to_dict(row)
    out["paused_reason"] = row.get("paused_reason")
    out["created"], out["updated"] = row.get("created"), row.get("updated")
    return out


@router.get("/campaigns")
def list_campaigns(store: Store) -> list[dict[str, Any]]:
    return [_public(r) for r in store.campaign_rows()]


@router.get("/campaigns/{campaign_id}")
def get_campaign(campaign_id: str, store: Store) -> dict[str, Any]:
    return one(store, campaign_id)


@router.post("/campaigns/validate")
def validate_only(body: dict[str, Any], store: Store, settings: MaybeSettings) -> dict[str, Any]:
    try:
        validate_campaigns([body], store, settings)
    except CampaignError as exc:
        raise invalid(exc) from None
    return {"valid": True}


@router.post("/campaigns", status_code=201)
def create(
    body: dict[str, Any], store: Store, settings: MaybeSettings, now: Clock
) -> dict[str, Any]:
    try:
        [defn] = validate_campaigns([body], store, settings)
    except CampaignError as exc:
        raise invalid(exc) from None
    if store.campaign_rows(defn.id):
        raise HTTPException(409, f"campaign {defn.id!r} exists: PUT to change it")
    save_campaigns(store, [defn], "api", now())
    return one(store, defn.id)


@router.put("/campaigns/{campaign_id}")
def replace(
    campaign_id: str, body: dict[str, Any], store: Store, settings: MaybeSettings, now: Clock
) -> dict[str, Any]:
    body = {**body, "id": body.get("id", campaign_id)}
    if body["id"] != campaign_id:
        raise HTTPException(422, {"errors": [{"field": "id", "message": "differs from the URL"}]})
    try:
        [defn] = validate_campaigns([body], store, settings)
    except CampaignError as exc:
        raise invalid(exc) from None
    save_campaigns(store, [defn], "api", now())
    return one(store, defn.id)


@router.post("/campaigns/{campaign_id}/status")
def set_status(campaign_id: str, body: dict[str, Any], store: Store, now: Clock) -> dict[str, Any]:
    status = body.get("status")
    if status not in ("draft", "active", "paused", "ended"):
        raise HTTPException(
            422,
            {"errors": [{"field": "status", "message": "one of draft, active, paused, ended"}]},
        )
    one(store, campaign_id)
    store.set_campaign_status(campaign_id, status, now(), body.get("reason"))
    return one(store, campaign_id)


@router.delete("/campaigns/{campaign_id}", status_code=204)
def delete(campaign_id: str, store: Store) -> Response:
    outcome = store.delete_campaign(campaign_id)
    if outcome == "missing":
        raise HTTPException(404, f"no campaign {campaign_id!r}")
    if outcome == "used":
        raise HTTPException(
            409, "the campaign has decisions (kept for reports): set its status to ended"
        )
    return Response(status_code=204)


@router.post("/stores/{store_id}/budget")
def set_store_budget(store_id: str, body: dict[str, Any], store: Store) -> dict[str, Any]:
    budget = body.get("daily_budget")
    if budget is not None and (not isinstance(budget, int) or budget < 0):
        raise HTTPException(
            422,
            {"errors": [{"field": "daily_budget", "message": "a whole number >= 0, or null"}]},
        )
    if not store.set_store_budget(store_id, budget):
        raise HTTPException(404, f"no store {store_id!r}")
    return {"store_id": store_id, "daily_budget": budget}


@router.get("/engine/stats")
def engine_stats(store: Store) -> dict[str, Any]:
    return {**store.engine_stats(), "alerts": store.engine_alerts(20)}
