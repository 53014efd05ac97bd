"""The demo's console in a real Chromium: the SMS that landed in the sandbox are visible."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from cloud_bridge.config import BridgeSettings, load_settings
from cloud_bridge.dev.demo.run import prepare_site
from cloud_bridge.dev.mosquitto import LocalMosquitto
from cloud_bridge.service import BridgeService
from cloud_bridge.web.auth import Accounts

from .test_end_to_end import replay, wait_processed

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Debian's chromium is not installed (scripts/setup.sh test installs it)")
    return path


def test_console_shows_sandbox_sms_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    site = prepare_site(tmp_path, broker.port, 0)
    store, bridge_toml, edge_toml = site.db, site.bridge_toml, site.edge_toml
    service = BridgeService(load_settings(BridgeSettings, bridge_toml))
    Accounts(service.store).add_user("ada", "admin", "correct horse battery", time.time())
    service.start()
    try:
        assert service.ingest.connected.wait(10)
        summary = replay(edge_toml)
        wait_processed(store, sum(summary["events"].values()))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(service.web.url + "/")  # the console wants a login first
            page.fill("input[name=username]", "ada")
            page.fill("input[name=password]", "correct horse battery")
            page.click("button[type=submit]")
            page.wait_for_url(service.web.url + "/")
            messages = page.locator("#messages")
            for name in ("Anna", "Boris", "Carmen"):
                assert messages.get_by_text(f"{name}, 15% off").count() == 1
            assert "Dmitri" not in page.content()
            assert page.locator("#count-sent b").inner_text() == "3"
            # phone numbers are masked on the page
            assert "+79161234501" not in page.content()
            assert page.locator("#sensors").get_by_text("door-1").count() == 1
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            browser.close()
    finally:
        service.stop()
        store.close()
        broker.stop()
