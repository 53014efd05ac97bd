"""Console test world: the demo tenant plus a second store, one user per role, logged-in
TestClients (session cookie + CSRF token) and API tokens."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine_helpers import bridge_location
from fastapi.testclient import TestClient

from cloud_bridge.config import BridgeSettings
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from cloud_bridge.web.app import create_app
from cloud_bridge.web.auth import Accounts

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
PASSWORD = "correct horse battery"
USERS = {
    "ada": ("admin", []),
    "mia": ("marketer", []),
    "olga": ("owner", ["main-st"]),
    "omar": ("owner", ["north-mall"]),
}


@dataclass
class World:
    store: BridgeStore
    settings: BridgeSettings
    app: Any
    accounts: Accounts

    def client(self, username: str | None = None) -> TestClient:
        c = TestClient(self.app, base_url="http://testserver")
        if username:
            login(c, username)
        return c

    def token(self, username: str, name: str = "test") -> str:
        user = self.store.user_by_name(username)
        assert user is not None
        return self.accounts.new_token(user["id"], name, time.time())[1]


def login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    r = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', r.text)
    assert token, r.text
    return client.post(
        "/login",
        data={"username": username, "password": password, "login_token": token.group(1)},
        follow_redirects=False,
    )


def csrf_of(client: TestClient, path: str = "/account") -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert m, "no CSRF token on the page"
    return m.group(1)


def add_sensor_state(
    store: BridgeStore, store_id: str, sensor_id: str, now: float, **stats: Any
) -> None:
    base = {
        "ts": now,
        "uptime_s": 100.0,
        "agent_version": "0.1.0",
        "frames": 1000,
        "frames_per_s": 12.5,
        "client_frames": 500,
        "matched": 3,
        "malformed": 0,
        "outbox_depth": 0,
        "dropped": 0,
        "roster_version": 1,
        "channel": 6,
        "iface_state": "replay",
        "cpu_temp_c": 51.0,
        "disk_free_mb": 900.0,
        "footfall": {},
    }
    base.update(stats)
    store.sensor_seen(
        store_id,
        sensor_id,
        now,
        state="online",
        agent_version="0.1.0",
        roster_version=base["roster_version"],
        last_stats=json.dumps(base),
    )
    store.record_stats(store_id, sensor_id, base, now)


def make_world(tmp_path: Path, db_location: str | Path | None = None) -> World:
    """The console world in tmp_path; ``db_location`` (the conftest fixture) picks the engine:
    a PostgreSQL database, else the bridge's default SQLite file under tmp_path/bridge."""
    data_dir = tmp_path / "bridge"
    database = None
    if db_location is not None:
        database = str(bridge_location(db_location, data_dir))
    settings = BridgeSettings(data_dir=data_dir, database=database)
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    seed(store, BridgeKeys(settings.data_dir), load_tenant(TENANT), time.time())
    store.upsert_store(
        {
            "id": "north-mall",
            "name": "North Mall Kiosk",
            "timezone": "Asia/Yerevan",
            "country": "AM",
            "sender_name": "NorthMall",
            "site_key": "00" * 32,
        }
    )
    app = create_app(store, settings)
    accounts: Accounts = app.state.accounts
    for name, (role, stores) in USERS.items():
        accounts.add_user(name, role, PASSWORD, time.time(), stores)
    return World(store, settings, app, accounts)
