"""The console in Debian's Chromium: a marketer creates and activates a campaign (steps and
time reported), a store owner sees only their store and gets 403 on another (on a 390 px phone
screen), an admin sees a sensor go offline within a minute of its agent being killed.
Screenshots of each main page go to var/artifacts/console/ (PASSBY_ARTIFACTS to change)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_bridge.config import BridgeSettings, load_settings
from cloud_bridge.dev.demo.run import CAPTURE, prepare_site
from cloud_bridge.dev.mosquitto import LocalMosquitto
from cloud_bridge.service import BridgeService, WebServer
from cloud_bridge.storage.sends import sandbox_rows
from cloud_bridge.web.app import create_app
from cloud_bridge.web.auth import Accounts

from .test_console_browser import CHROMIUM_ARGS, chromium_path
from .test_end_to_end import replay, wait_processed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PASSBY_ARTIFACTS", REPO / "var" / "artifacts" / "console"))
PASSWORD = "correct horse battery"
PHONE = {"width": 390, "height": 844}


def shot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def fits(page) -> bool:  # type: ignore[no-untyped-def]
    """No sideways scrolling of the page itself (wide tables scroll inside their box)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def login(page, url: str, user: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_load_state()


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[tuple[str, object, object]]:
    """The demo site with its events replayed, console users, a second store; the console."""
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    s = prepare_site(tmp_path, broker.port, 0)
    with open(s.edge_toml, "a") as fh:
        fh.write("keepalive_s = 5\n")  # the last will comes ~7 s after a kill -9
    settings = load_settings(BridgeSettings, s.bridge_toml)
    service = BridgeService(settings)
    store = service.store
    store.upsert_store(
        {"id": "north-mall", "name": "North Mall Kiosk", "timezone": "Asia/Yerevan",
         "country": "AM", "sender_name": "NorthMall", "site_key": "00" * 32}
    )  # fmt: skip
    accounts = Accounts(store, settings.web)
    now = time.time()
    accounts.add_user("ada", "admin", PASSWORD, now)
    accounts.add_user("mia", "marketer", PASSWORD, now, phone="+79160000099")
    accounts.add_user("olga", "owner", PASSWORD, now, ["main-st"])
    service.start()
    try:
        assert service.ingest.connected.wait(10)
        summary = replay(s.edge_toml)
        wait_processed(store, sum(summary["events"].values()))
        yield service.web.url, service, s
    finally:
        service.stop()
        s.db.close()
        broker.stop()


@pytest.fixture()
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_marketer_creates_and_activates_a_campaign_in_two_minutes(tmp_path, browser) -> None:  # type: ignore[no-untyped-def]
    from cloud_bridge.sensors.keys import BridgeKeys
    from cloud_bridge.storage.store import BridgeStore
    from cloud_bridge.tenant import load_tenant, seed

    settings = BridgeSettings(data_dir=tmp_path / "bridge")
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    seed(
        store,
        BridgeKeys(settings.data_dir),
        load_tenant(REPO / "cloud_bridge/dev/demo/tenant.toml"),
        time.time(),
    )
    Accounts(store).add_user("mia", "marketer", PASSWORD, time.time(), phone="+79160000099")
    web = WebServer(create_app(store, settings), "127.0.0.1", 0)
    web.start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
        steps: list[str] = []
        started = time.monotonic()

        def step(what: str, action, *args) -> None:  # type: ignore[no-untyped-def]
            action(*args)
            steps.append(what)

        text = "{{ first_name }}, 15% off {{ favourite_product }} today at {{ store_name }}."
        step("open the console", page.goto, web.url + "/campaigns")
        step("type user name", page.fill, "input[name=username]", "mia")
        step("type password", page.fill, "input[name=password]", PASSWORD)
        step("log in", page.click, "#login button[type=submit]")
        step("click New campaign", page.click, "#new-campaign")
        step("type a name", page.fill, "input[name=name]", "Coffee lovers")
        step("type the text", page.fill, "textarea[name='variants.A']", text)
        # the live preview renders the text for a sample customer with parts and cost
        page.wait_for_selector("#preview .sms:has-text('Anna, 15% off espresso beans')")
        assert "GSM-7" in page.inner_text("#preview") and "1 SMS part" in page.inner_text(
            "#preview"
        )
        step("test send to own phone", page.click, "button.test-send[value=A]")
        page.wait_for_selector("#test-result:has-text('accepted')")
        shot(page, "campaign-form")
        step("save and activate", page.click, "#save-activate")
        page.wait_for_selector("#notice:has-text('activated')")
        elapsed = time.monotonic() - started
        assert store.campaign_rows("coffee-lovers")[0]["status"] == "active"
        assert (
            len(
                [
                    m
                    for m in sandbox_rows(store)
                    if m["to_phone"] == "+79160000099" and m["body"].startswith("[TEST] ")
                ]
            )
            == 1
        )
        # a validation error shows at its field, not as a page of JSON
        page.goto(web.url + "/campaigns/new")
        page.fill("input[name=name]", "Broken")
        page.fill("textarea[name='variants.A']", "Hi {{ frist_name }}")
        page.click("#save")
        assert "frist_name" in page.inner_text("#err-variants\\.A")
        shot(page, "campaign-error")
        page.goto(web.url + "/campaigns")
        shot(page, "campaigns")
        report = {"steps": len(steps), "seconds": round(elapsed, 2), "what": steps}
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "campaign-timing.json").write_text(json.dumps(report, indent=2))
        print(f"\ncampaign from empty form to active: {len(steps)} steps, {elapsed:.1f} s")
        assert len(steps) <= 12 and elapsed < 120
    finally:
        web.stop()
        store.close()


def test_owner_sees_only_their_store_on_a_phone(site, browser) -> None:  # type: ignore[no-untyped-def]
    url, service, _ = site
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)  # type: ignore[attr-defined]
    page = ctx.new_page()
    login(page, url, "olga")
    page.goto(url + "/stores")
    assert page.url.endswith("/stores/main-st")
    assert page.locator("#checklist li").count() == 4
    assert page.locator("#total-arrivals b").inner_text() != "0"
    assert fits(page)
    shot(page, "store-owner-390px")
    r = page.goto(url + "/stores/north-mall")
    assert r is not None and r.status == 403
    assert "not one of yours" in page.inner_text("#error")
    assert page.request.get(url + "/api/v1/stores/north-mall").status == 403
    assert page.request.get(url + "/api/v1/fleet?store_id=north-mall").status == 403
    assert [s["id"] for s in page.request.get(url + "/api/v1/stores").json()] == ["main-st"]
    for path, name in (("/", "overview-owner-390px"), ("/reports", "reports-owner-390px")):
        page.goto(url + path)
        assert "north-mall" not in page.content()
        assert fits(page), path
        shot(page, name)
    assert page.goto(url + "/campaigns").status == 403  # type: ignore[union-attr]
    ctx.close()


def test_admin_sees_a_sensor_go_offline_within_a_minute(site, browser) -> None:  # type: ignore[no-untyped-def]
    url, service, s = site
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(s.edge_toml),
         "--capture", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert agent.stdin is not None
        agent.stdin.write(CAPTURE.read_bytes())  # then keep the pipe open: the agent stays up
        agent.stdin.flush()
        page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
        login(page, url, "ada")
        row = "#sensor-main-st-door-1"
        deadline = time.monotonic() + 30
        page.goto(url + "/fleet")
        while page.get_attribute(row, "data-state") != "online":
            assert time.monotonic() < deadline, "the sensor never showed online"
            time.sleep(0.5)
            page.goto(url + "/fleet")
        shot(page, "fleet-online")
        os.kill(agent.pid, signal.SIGKILL)
        killed = time.monotonic()
        while page.get_attribute(row, "data-state") != "offline":
            assert time.monotonic() - killed < 60, "not offline a minute after kill -9"
            time.sleep(1)
            page.goto(url + "/fleet")
        took = time.monotonic() - killed
        print(f"\nsensor shown offline {took:.1f} s after kill -9")
        shot(page, "fleet-offline")
        page.goto(url + "/fleet/main-st/door-1")
        assert page.locator("svg").count() == 6
        shot(page, "sensor-page")
        for path, name in (("/admin", "admin"), ("/customers?q=C-1001", "customers"),
                           ("/customers/C-1001", "customer"), ("/reports", "reports"),
                           ("/", "overview")):  # fmt: skip
            page.goto(url + path)
            shot(page, name)
        phone = browser.new_page(viewport=PHONE)  # type: ignore[attr-defined]
        login(phone, url, "ada")
        phone.goto(url + "/fleet")
        assert fits(phone)
        shot(phone, "fleet-390px")
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.wait()
