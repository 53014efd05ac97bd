"""The boxes' update source: ``GET /releases/passby-edge-latest.tar`` serves the newest signed
agent release in ``DATA_DIR/releases/`` (``passby-edge-X.Y.Z.tar``, put there by
``deploy/cloud/install.sh`` from a release bundle). Boxes installed from a bundle check this URL
nightly (passby-update.timer) unless the release names another. No login: a release holds the
agent's code and no secret, and the box verifies its Ed25519 signature before installing."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from cloud_bridge.config import BridgeSettings

__all__ = ["LATEST", "latest_release", "releases_router"]

LATEST = "passby-edge-latest.tar"
_NAME = re.compile(r"^passby-edge-(\d+(?:\.\d+){0,3})\.tar$")


def latest_release(directory: Path) -> Path | None:
    """The highest-versioned passby-edge-X.Y.Z.tar in ``directory``, or None."""
    found = []
    for p in directory.glob("passby-edge-*.tar"):
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((tuple(int(x) for x in m.group(1).split(".")), p))
    return max(found)[1] if found else None


def releases_router(settings: BridgeSettings) -> APIRouter:
    r = APIRouter()
    directory = Path(settings.data_dir) / "releases"

    @r.get(f"/releases/{LATEST}", tags=["sensors"], response_class=FileResponse)
    def latest() -> FileResponse:
        """The newest signed agent release for the boxes (the box verifies its signature)."""
        path = latest_release(directory)
        if path is None:
            raise HTTPException(404, f"no agent release in {directory.name}/ on this bridge")
        return FileResponse(path, media_type="application/x-tar", filename=path.name)

    return r
