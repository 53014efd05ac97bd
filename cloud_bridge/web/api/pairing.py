"""``POST /api/v1/pair {"code": ...}``: a new sensor's PairingConfig, exactly once
(``cloud_bridge.sensors.provisioning.redeem`` checks the code and unseals the credentials)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from cloud_bridge.sensors.provisioning import PairingError, PairRequest, redeem
from cloud_bridge.web.dependencies import Settings, Store
from edge_agent.pairing import PAIR_PATH

__all__ = ["router"]

router = APIRouter()


@router.post(PAIR_PATH, response_class=Response)
def pair(body: PairRequest, request: Request, store: Store, settings: Settings) -> Response:
    client = request.client.host if request.client else None
    try:
        cfg = redeem(store, settings, body.code, used_by=client)
    except PairingError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return Response(
        cfg.model_dump_json(by_alias=True),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
