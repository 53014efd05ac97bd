"""The enrolment page in a real Chromium on a phone-sized screen, served by uvicorn on loopback:
language switch, two separate consents, SMS code, confirmation, and the welcome-back visit."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from cloud_bridge.customers.consent_texts import consent_text
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.service import WebServer
from cloud_bridge.storage.sends import sandbox_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from cloud_bridge.web.app import create_app

pytestmark = pytest.mark.integration

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}


def test_enrolment_on_a_phone_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = BridgeStore(tmp_path / "bridge.db")
    seed(store, BridgeKeys(tmp_path), load_tenant(TENANT), time.time())
    web = WebServer(create_app(store), "127.0.0.1", 0)
    web.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(
                viewport=PHONE, device_scale_factor=3, is_mobile=True, has_touch=True
            )
            page = context.new_page()
            # as a UniFi guest portal redirects a client
            page.goto(f"{web.url}/enrol/main-st?id=02:11:22:33:44:55&ssid=MainSt-Guest&lang=ru")
            assert page.locator("h1").inner_text() == "Предложения от Main St. Coffee"
            consent = page.locator("#consent-text")
            assert "Рекламные SMS" in consent.inner_text()
            assert consent.get_attribute("data-sha256") == consent_text("v1", "ru").sha256
            # mobile-first: nothing wider than the phone
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            assert "02:11:22" not in page.content()  # the MAC travels only as a sealed token

            page.get_by_role("link", name="Հայերեն").click()
            assert "Գովազդային SMS" in page.locator("#consent-text").inner_text()
            assert page.locator("html").get_attribute("lang") == "hy"

            page.fill("#name", "Անի")
            page.fill("#phone", "8 916 555-44-33")
            checkboxes = page.locator("input[type=checkbox]")
            assert checkboxes.count() == 2  # two separate consents, none ticked for them
            assert not checkboxes.nth(0).is_checked() and not checkboxes.nth(1).is_checked()
            page.check("#consent_sms")
            page.check("#consent_recognition")
            page.click("#send-code")
            page.wait_for_selector("#code-form")

            body = sandbox_rows(store)[-1]
            code = re.search(r"\d{6}", body["body"]).group(0)
            wrong = f"{(int(code) + 1) % 1_000_000:06d}"
            page.fill("#code", wrong)
            page.click("#confirm")
            assert "4" in page.locator("#code-error").inner_text()  # attempts left
            page.fill("#code", code)
            page.click("#confirm")
            page.wait_for_selector("#done")
            page.screenshot(path=str(tmp_path / "enrolled.png"), full_page=True)

            (customer,) = store.customers_by_phone("+79165554433")
            assert customer["name"] == "Անի"
            assert store.latest_consents(customer["id"]) == {
                "sms": "active",
                "recognition": "active",
            }
            proof = store.consents_of(customer["id"])[0]["proof"]
            assert proof["language"] == "hy" and proof["source"] == "portal"
            assert "Chrome" in proof["user_agent"] and proof["ip"] == "127.0.0.1"
            assert [d["mac"] for d in store.devices_of(customer["id"])] == ["02:11:22:33:44:55"]

            # next portal login from the same phone: recognised, no new code
            sms = len(sandbox_rows(store))
            page.goto(f"{web.url}/enrol/main-st?clientmac=02:11:22:33:44:55")
            page.wait_for_selector("#welcome")
            assert len(sandbox_rows(store)) == sms
            browser.close()
    finally:
        web.stop()
        store.close()
