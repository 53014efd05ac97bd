"""Agent commands: ping, roster announcements against a real HTTP server, config changes."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.adapters.commands import CommandWorker, RemoteConfig
from edge_agent.config import EdgeSettings
from edge_agent.core.presence import PresenceConfig
from edge_agent.roster import Roster, build_roster, load_roster, mac_hash

SITE = bytes(range(16))
KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
PUB = (
    KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
)
MAC = bytes.fromhex("daa1193c4e01")


def roster_bytes(version: int, store: str = "s1", key: Ed25519PrivateKey = KEY) -> bytes:
    return build_roster(key, store, version, 1.0, [(mac_hash(SITE, MAC), "00000000000000aa")])


class Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    auth: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.auth.append(self.headers.get("Authorization", ""))
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    Files.files, Files.auth = {}, []
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class Harness:
    def __init__(self, tmp: Path) -> None:
        (tmp / "token").write_text("tok-123\n")
        self.settings = EdgeSettings(
            store_id="s1",
            sensor_id="d1",
            data_dir=tmp,
            site_key=SITE.hex(),
            roster_public_key=PUB,
            api_token_file=tmp / "token",
        )
        self.roster = load_roster(roster_bytes(1), KEY.public_key(), SITE, "s1")
        self.settings.roster_path().write_bytes(roster_bytes(1))
        self.swapped: list[Roster] = []
        self.configs: list[PresenceConfig] = []
        self.remote = RemoteConfig(self.settings)
        self.worker = CommandWorker(
            self.settings,
            self.remote,
            lambda: self.roster,
            self._swap,
            self.configs.append,
            reply=lambda n, b: None,
            status=lambda: {"uptime_s": 1.0},
        )

    def _swap(self, r: Roster) -> None:
        self.swapped.append(r)
        self.roster = r

    def send(self, name: str, **body: object):
        rid = uuid.uuid4().hex
        return self.worker.handle(name, json.dumps({"request_id": rid, **body}).encode()), rid


def announce(
    h: Harness, base: str, data: bytes, version: int, path: str = "/r.bin", sha: str | None = None
):
    Files.files[path] = data
    return h.send(
        "roster", version=version, url=base + path, sha256=sha or hashlib.sha256(data).hexdigest()
    )


def test_ping_echoes_request_id(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    reply, rid = h.send("ping")
    assert reply.ok and reply.request_id == rid and reply.data["uptime_s"] == 1.0


def test_new_roster_downloaded_verified_swapped_and_kept(tmp_path: Path, server: str) -> None:
    h = Harness(tmp_path)
    reply, rid = announce(h, server, roster_bytes(2), 2)
    assert reply.ok, reply.detail
    assert reply.request_id == rid and reply.data["roster_version"] == 2
    assert [r.version for r in h.swapped] == [2]
    assert h.settings.roster_path().read_bytes() == roster_bytes(2)  # last good on disk
    assert Files.auth == ["Bearer tok-123"]
    again, _ = announce(h, server, roster_bytes(2), 2)
    assert again.ok and "already loaded" in again.detail and len(h.swapped) == 1


@pytest.mark.parametrize(
    "case,needle",
    [
        ("older", "older than the loaded version"),
        ("tampered", "corrupt or truncated"),
        ("truncated", "corrupt or truncated"),
        ("other-key", "signed by key"),
        ("bad-signature", "signature does not verify"),
        ("other-store", "is for store 's2'"),
        ("http-404", "HTTP 404"),
        ("wrong-version", "announcement said 3"),
    ],
)
def test_bad_rosters_refused_and_last_good_kept(
    tmp_path: Path, server: str, case: str, needle: str
) -> None:
    h = Harness(tmp_path)
    assert announce(h, server, roster_bytes(2), 2)[0].ok
    good = h.settings.roster_path().read_bytes()
    data, version, sha = roster_bytes(3), 3, None
    if case == "older":
        data, version = roster_bytes(1), 1
    elif case == "tampered":
        sha = hashlib.sha256(data).hexdigest()
        data = data[:-1] + bytes([data[-1] ^ 1])
    elif case == "truncated":
        sha = hashlib.sha256(data).hexdigest()
        data = data[:-20]
    elif case == "other-key":
        data = roster_bytes(3, key=Ed25519PrivateKey.generate())
    elif case == "bad-signature":
        data = data[:-1] + bytes([data[-1] ^ 1])  # announced sha matches the bad file
    elif case == "other-store":
        data = roster_bytes(3, store="s2")
    elif case == "wrong-version":
        data = roster_bytes(4)
    if case == "http-404":
        Files.files.clear()
        reply, _ = h.send("roster", version=3, url=server + "/missing", sha256="0" * 64)
    else:
        reply, _ = announce(h, server, data, version, path="/bad.bin", sha=sha)
    assert not reply.ok
    assert needle in reply.detail
    assert h.worker.roster_refused == 1
    assert h.roster.version == 2 and len(h.swapped) == 1
    assert h.settings.roster_path().read_bytes() == good


def test_config_change_applied_persisted_and_bad_one_refused(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    reply, _ = h.send("config", presence={"enter_dbm": -65, "leave_dbm": -78}, stats_interval_s=30)
    assert reply.ok, reply.detail
    assert h.configs[-1].enter_dbm == -65 and h.configs[-1].leave_dbm == -78
    assert RemoteConfig(h.settings).presence.enter_dbm == -65  # survives a restart
    assert RemoteConfig(h.settings).stats_interval_s == 30
    bad, _ = h.send("config", presence={"enter_dbm": -90})
    assert not bad.ok and "leave_dbm (-78) must be below enter_dbm (-90)" in bad.detail
    assert h.remote.presence.enter_dbm == -65 and len(h.configs) == 1
    odd, _ = h.send("config", presence={"max_subjects": 5})
    assert not odd.ok and "cannot be changed remotely" in odd.detail


def test_malformed_and_unknown_commands_answered(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    rid = uuid.uuid4().hex
    reply = h.worker.handle("roster", json.dumps({"request_id": rid, "version": "x"}).encode())
    assert not reply.ok and reply.request_id == rid and "version" in reply.detail
    assert not h.worker.handle("reboot", b"{}").ok
    assert not h.worker.handle("ping", b"\xff").ok


def test_older_roster_refused_at_restart_with_the_reason(tmp_path: Path, server: str) -> None:
    """v2 arrives by command; someone puts the validly signed v1 back; the next start refuses
    it (a rollback could bring back erased subjects) and names both versions."""
    from edge_agent.agent import load_roster_file
    from edge_agent.roster import RosterError

    h = Harness(tmp_path)
    assert load_roster_file(h.settings).version == 1  # the first start
    reply, _ = announce(h, server, roster_bytes(2), 2)
    assert reply.ok, reply.detail
    assert load_roster_file(h.settings).version == 2  # a restart with the new roster is fine
    h.settings.roster_path().write_bytes(roster_bytes(1))  # restored from an old backup, say
    with pytest.raises(RosterError, match=r"roster v1 is older than v2, which this sensor has"):
        load_roster_file(h.settings)
    h.settings.roster_path().write_bytes(roster_bytes(3))  # a newer one is welcome
    assert load_roster_file(h.settings).version == 3
    h.settings.roster_path().write_bytes(roster_bytes(2))
    with pytest.raises(RosterError, match="older than v3"):
        load_roster_file(h.settings)
