"""``GET /releases/passby-edge-latest.tar``: the newest signed agent release for the boxes
(``cloud_bridge.sensors.releases`` picks it). No login: a release holds no secret and the box
verifies its Ed25519 signature before installing."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from cloud_bridge.sensors.releases import LATEST, latest_release
from cloud_bridge.web.dependencies import Settings

__all__ = ["router"]

router = APIRouter()


@router.get(f"/releases/{LATEST}", tags=["sensors"], response_class=FileResponse)
def latest(settings: Settings) -> FileResponse:
    """The newest signed agent release for the boxes (the box verifies its signature)."""
    directory = Path(settings.data_dir) / "releases"
    path = latest_release(directory)
    if path is None:
        raise HTTPException(404, f"no agent release in {directory.name}/ on this bridge")
    return FileResponse(path, media_type="application/x-tar", filename=path.name)
