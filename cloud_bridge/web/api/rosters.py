"""Roster download API for sensors: ``GET /api/v1/rosters/{store_id}`` with the sensor's token.

Served with an ETag (the file's SHA-256) so a sensor that already has the file gets 304.
A sensor may only fetch its own store's roster.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Header, HTTPException, Response

from cloud_bridge.sensors.roster_delivery import roster_path
from cloud_bridge.web.dependencies import Settings, Store

__all__ = ["router"]

router = APIRouter()


@router.get("/api/v1/rosters/{store_id}", response_class=Response)
def get_roster(
    store_id: str,
    store: Store,
    settings: Settings,
    authorization: str = Header("", description="Bearer <sensor API token>"),
    if_none_match: str = Header("", description="ETag the sensor already has"),
) -> Response:
    scheme, _, token = authorization.partition(" ")
    who = store.sensor_by_token(token) if scheme.lower() == "bearer" and token else None
    if who is None:
        raise HTTPException(401, "a valid sensor API token is required")
    if who[0] != store_id:
        raise HTTPException(403, "a sensor may only fetch its own store's roster")
    path = roster_path(settings, store_id)
    if not path.is_file():
        raise HTTPException(404, f"no roster published for store {store_id!r} yet")
    data = path.read_bytes()
    etag = '"' + hashlib.sha256(data).hexdigest() + '"'
    if if_none_match and hmac.compare_digest(if_none_match.strip(), etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"ETag": etag, "Cache-Control": "no-cache"},
    )
