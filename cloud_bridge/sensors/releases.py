"""The boxes' update source: ``GET /releases/passby-edge-latest.tar`` (``web.api.releases``) serves the newest signed
agent release in ``DATA_DIR/releases/`` (``passby-edge-X.Y.Z.tar``, put there by
``deploy/cloud/install.sh`` from a release bundle). Boxes installed from a bundle check this URL
nightly (passby-update.timer) unless the release names another. No login: a release holds the
agent's code and no secret, and the box verifies its Ed25519 signature before installing."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["LATEST", "latest_release"]

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
