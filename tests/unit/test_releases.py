"""GET /releases/passby-edge-latest.tar: the boxes' default update source, the newest signed
agent release the cloud installer put in DATA_DIR/releases/."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from cloud_bridge.config import BridgeSettings
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.app import create_app


def test_latest_release_is_the_highest_version(tmp_path: Path) -> None:
    settings = BridgeSettings(data_dir=tmp_path / "bridge")
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    try:
        client = TestClient(create_app(store, settings))
        url = "/releases/passby-edge-latest.tar"
        r = client.get(url)
        assert r.status_code == 404 and "no agent release" in r.text
        releases = settings.data_dir / "releases"
        releases.mkdir()
        for version in ("0.9.0", "0.10.0", "0.2.1"):  # 0.10 > 0.9 > 0.2.1, not by text
            (releases / f"passby-edge-{version}.tar").write_bytes(version.encode())
        (releases / "passby-edge-99.tar.part").write_bytes(b"half a download")
        (releases / "passby-edge-x.tar").write_bytes(b"not a version")
        r = client.get(url)  # no login: the box verifies the signature itself
        assert r.status_code == 200 and r.content == b"0.10.0"
        assert r.headers["content-type"] == "application/x-tar"
    finally:
        store.close()
