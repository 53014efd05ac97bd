"""Client address and scheme behind a reverse proxy (issue 14): ``X-Forwarded-For`` and
``X-Forwarded-Proto`` count only when the socket peer is listed in ``web.trusted_proxies``
(default none). Through the real app over HTTP: uvicorn on loopback, as the bridge runs it
(``cloud_bridge.service.WebServer``) and as ``cloud-bridge serve`` runs it, with real clients.
The limits checked are the enrolment per-IP limit and the login per-IP limit."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloud_bridge.config import BridgeSettings
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.service import WebServer
from cloud_bridge.storage.accounts import audit_entries, login_attempt_rows
from cloud_bridge.storage.customers import enrolment_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from cloud_bridge.web.app import create_app
from cloud_bridge.web.auth import Accounts

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
PASSWORD = "correct horse battery"
ENROL_PER_IP, LOGIN_PER_IP = 3, 4


def settings_for(tmp_path: Path, trusted: list[str]) -> BridgeSettings:
    return BridgeSettings(
        data_dir=tmp_path / "bridge",
        web={"trusted_proxies": trusted, "login_failures_per_ip": LOGIN_PER_IP},
        enrol={"enrolments_per_ip_per_hour": ENROL_PER_IP},
    )


@pytest.fixture()
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, BridgeStore]]:
    """The console app on 127.0.0.1:<free port> under uvicorn; param: trusted_proxies."""
    settings = settings_for(tmp_path, request.param)
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    seed(store, BridgeKeys(settings.data_dir), load_tenant(TENANT), time.time())
    Accounts(store, settings.web).add_user("ada", "admin", PASSWORD, time.time())
    server = WebServer(create_app(store, settings), "127.0.0.1", 0)
    server.start()
    try:
        yield server.url, store
    finally:
        server.stop()
        store.close()


def enrol(client: httpx.Client, phone: str, headers: dict[str, str]) -> int:
    body = {
        "store_id": "main-st",
        "phone": phone,
        "name": "Olga",
        "language": "en",
        "consent_sms": True,
        "consent_recognition": False,
    }
    return client.post("/api/v1/enrolments", json=body, headers=headers).status_code


def wrong_login(client: httpx.Client, username: str, headers: dict[str, str]) -> httpx.Response:
    page = client.get("/login", headers=headers)
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token, page.text
    return client.post(
        "/login",
        data={"username": username, "password": "wrong password!", "login_token": token.group(1)},
        headers=headers,
    )


def spoof(i: int) -> dict[str, str]:
    return {"x-forwarded-for": f"203.0.113.{i}", "x-forwarded-proto": "https"}


@pytest.mark.parametrize("served", [[]], indirect=True)
def test_direct_caller_cannot_spoof_its_way_past_the_enrolment_limit(served) -> None:
    """Issue 14 item 5: 40 of 40 enrolments started from 127.0.0.1 with a new X-Forwarded-For
    each. With no trusted proxy, the socket address counts: the per-IP limit holds."""
    url, store = served
    with httpx.Client(base_url=url, timeout=10) as c:
        got = [enrol(c, f"+7916555{i:04d}", spoof(i)) for i in range(ENROL_PER_IP + 3)]
    assert got == [202] * ENROL_PER_IP + [429] * 3
    ips = {r["ip"] for r in enrolment_rows(store)}
    assert ips == {"127.0.0.1"}  # the consent proof records who really asked


@pytest.mark.parametrize("served", [[]], indirect=True)
def test_direct_caller_cannot_spoof_its_way_past_the_login_limit(served) -> None:
    """60 wrong logins under 60 user names, each with its own X-Forwarded-For: the per-address
    limit counts them all against 127.0.0.1."""
    url, store = served
    with httpx.Client(base_url=url, timeout=10) as c:
        # (no X-Forwarded-Proto here: a Secure login cookie would not come back over http)
        xff = [{"x-forwarded-for": f"203.0.113.{i}"} for i in range(LOGIN_PER_IP + 2)]
        got = [wrong_login(c, f"user{i}", h).status_code for i, h in enumerate(xff)]
    assert got == [401] * LOGIN_PER_IP + [429] * 2
    assert {r["ip"] for r in login_attempt_rows(store)} == {"127.0.0.1"}


@pytest.mark.parametrize("served", [[]], indirect=True)
def test_direct_caller_cannot_claim_https(served) -> None:
    """X-Forwarded-Proto from an untrusted peer does not make the request https: no Secure
    cookie is set on plain http (the browser would then drop it)."""
    url, _ = served
    with httpx.Client(base_url=url, timeout=10) as c:
        r = c.get("/login", headers={"x-forwarded-proto": "https"})
    assert r.status_code == 200
    assert (
        "passby_login=" in r.headers["set-cookie"]
        and "secure" not in r.headers["set-cookie"].lower()
    )


@pytest.mark.parametrize("served", [["127.0.0.1"]], indirect=True)
def test_behind_a_trusted_proxy_each_client_has_its_own_limit(served) -> None:
    """nginx on 127.0.0.1 (trusted) appends the client's address: each client is judged by it,
    one client's limit does not block another, and a client that sends its own
    X-Forwarded-For through the proxy is still judged by the address nginx saw."""
    url, store = served
    with httpx.Client(base_url=url, timeout=10) as c:
        # a client that writes its own header: nginx's $proxy_add_x_forwarded_for appends
        forged = [
            enrol(c, f"+7916556{i:04d}", {"x-forwarded-for": f"10.9.9.{i}, 198.51.100.7"})
            for i in range(ENROL_PER_IP + 1)
        ]
        other = enrol(c, "+79165569999", {"x-forwarded-for": "198.51.100.8"})
    assert forged == [202] * ENROL_PER_IP + [429]
    assert other == 202
    ips = [r["ip"] for r in enrolment_rows(store)]
    assert set(ips) == {"198.51.100.7", "198.51.100.8"}


@pytest.mark.parametrize("served", [["127.0.0.1"]], indirect=True)
def test_behind_a_trusted_proxy_the_login_limit_is_per_client(served) -> None:
    url, store = served
    client_a = {"x-forwarded-for": "198.51.100.20"}
    client_b = {"x-forwarded-for": "198.51.100.21", "x-forwarded-proto": "https"}
    with httpx.Client(base_url=url, timeout=10) as c:
        got = [wrong_login(c, f"user{i}", client_a).status_code for i in range(LOGIN_PER_IP + 1)]
        assert got == [401] * LOGIN_PER_IP + [429]
        # another client behind the same proxy logs in; over https its cookie is Secure
        page = c.get("/login", headers=client_b)
        assert "secure" in page.headers["set-cookie"].lower()
        token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
        c.cookies.set("passby_login", page.cookies["passby_login"])
        r = c.post(
            "/login",
            data={"username": "ada", "password": PASSWORD, "login_token": token},
            headers=client_b,
        )
    assert r.status_code == 303, r.text
    assert "__Host-passby_session=" in r.headers["set-cookie"]
    ips = {x["ip"] for x in audit_entries(store, 1000) if x["action"] == "login"}
    assert ips == {"198.51.100.21"}


@pytest.mark.parametrize("served", [["10.0.0.0/8"]], indirect=True)
def test_a_peer_outside_the_trusted_networks_is_not_believed(served) -> None:
    url, store = served
    with httpx.Client(base_url=url, timeout=10) as c:
        got = [enrol(c, f"+7916557{i:04d}", spoof(i)) for i in range(ENROL_PER_IP + 1)]
    assert got == [202] * ENROL_PER_IP + [429]
    assert {r["ip"] for r in enrolment_rows(store)} == {"127.0.0.1"}


def test_trusted_proxies_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        BridgeSettings(web={"trusted_proxies": ["nginx.local"]})
    s = BridgeSettings(web={"trusted_proxies": ["127.0.0.1", "::1", "172.16.0.0/12"]})
    assert s.web.trusted_proxies == ["127.0.0.1", "::1", "172.16.0.0/12"]
    assert BridgeSettings().web.trusted_proxies == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cloud_bridge_serve_does_not_trust_forwarded_headers_by_default(tmp_path: Path) -> None:
    """``cloud-bridge serve`` (uvicorn.run) from 127.0.0.1: uvicorn's own default would trust
    X-Forwarded-For from loopback; the bridge turns that off and applies its own setting."""
    settings = settings_for(tmp_path, [])
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    seed(store, BridgeKeys(settings.data_dir), load_tenant(TENANT), time.time())
    store.close()
    port = free_port()
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'data_dir = "{settings.data_dir}"\n[web]\nport = {port}\n'
        f"[enrol]\nenrolments_per_ip_per_hour = {ENROL_PER_IP}\n"
    )
    exe = Path(sys.executable).parent / "cloud-bridge"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSBY_")}
    env["FORWARDED_ALLOW_IPS"] = "*"  # uvicorn's variable must not sneak trust back in
    proc = subprocess.Popen(
        [str(exe), "serve", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"cloud-bridge serve did not start: {proc.stderr.read()!r}")
            time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=10) as c:
            got = [enrol(c, f"+7916558{i:04d}", spoof(i)) for i in range(ENROL_PER_IP + 1)]
    finally:
        proc.terminate()
        proc.wait(10)
    assert got == [202] * ENROL_PER_IP + [429]


def test_shipped_nginx_and_bridge_config_agree() -> None:
    """nginx proxies from loopback and sends the address it saw; the example bridge.toml
    trusts exactly where nginx connects from, and the docs say so."""
    from cloud_bridge.config import load_settings

    cloud = Path(__file__).parents[2] / "deploy" / "cloud"
    nginx = (cloud / "nginx-passby.conf").read_text()
    assert re.search(r"proxy_pass http://127\.0\.0\.1:8080;", nginx)
    assert re.search(r"proxy_set_header X-Forwarded-For \$remote_addr;", nginx)
    assert re.search(r"proxy_set_header X-Forwarded-Proto \$scheme;", nginx)
    s = load_settings(BridgeSettings, cloud / "bridge.toml.example")
    assert s.web.trusted_proxies == ["127.0.0.1", "::1"] and s.web.port == 8080
    for doc in (Path(__file__).parents[2] / "README.md", cloud / "README.md"):
        assert "trusted_proxies" in doc.read_text(), doc


def test_forwarded_headers_from_an_untrusted_peer_are_reported_once(tmp_path: Path, caplog) -> None:
    """A bridge upgraded behind nginx without web.trusted_proxies would judge every client as
    127.0.0.1 (one shared limit): the first ignored X-Forwarded-For says what to set, once,
    without the forwarded address itself."""
    import logging

    from fastapi.testclient import TestClient

    settings = settings_for(tmp_path, [])
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    caplog.set_level(logging.WARNING, logger="cloud_bridge.web.app")
    try:
        app = create_app(store, settings)
        c = TestClient(app, client=("127.0.0.1", 40000))
        for i in range(3):
            c.get("/healthz", headers={"x-forwarded-for": f"203.0.113.{i}"})
        c.get("/healthz")
    finally:
        store.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "cloud_bridge.web.app"]
    assert len(warnings) == 1, warnings
    assert "web.trusted_proxies" in warnings[0] and "127.0.0.1" in warnings[0]
    assert "203.0.113" not in warnings[0]
