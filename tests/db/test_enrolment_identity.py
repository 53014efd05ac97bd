"""Public enrolment cannot link identities (issue 14): only a caller holding the enrolment API
token with the ``enrol.link`` scope may name a CRM id (and so attach a phone and a device to an
existing customer); an unauthenticated enrolment changes an existing customer only after the
code sent to that customer's own phone is confirmed, and never moves a device away from another
customer. Over real HTTP (FastAPI TestClient) on both engines."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud_bridge.config import EnrolSettings
from cloud_bridge.customers.enrol import Enrolments
from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.customers import enrolment_rows
from cloud_bridge.storage.sends import sandbox_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from cloud_bridge.web.app import create_app

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
BORIS_PHONE, BORIS_MAC = "+79161234502", "6e:12:7a:90:b3:22"  # demo customer C-1002
ATTACKER_PHONE, ATTACKER_MAC = "+79165556666", "02:66:66:66:66:66"
TOKEN = "link-t0ken-for-the-loyalty-app"
LINK = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def env(tmp_path: Path, db_location):
    store = BridgeStore(db_location)
    keys = BridgeKeys(tmp_path)
    seed(store, keys, load_tenant(TENANT), time.time())
    app = create_app(store)
    app.state.enrolments = Enrolments(
        store,
        EnrolSettings(api_token=TOKEN, api_token_scopes=["customers.erase", "enrol.link"]),
        SandboxProvider(store),
        keys.subject_key,
    )
    with TestClient(app) as client:
        yield store, keys, client, app
    store.close()


def codes_to(store: BridgeStore, phone: str) -> list[str]:
    rows = [m for m in sandbox_rows(store) if m["to_phone"] == phone]
    return [re.search(r"\b(\d{6})\b", r["body"]).group(1) for r in rows]


def start(client: TestClient, headers: dict[str, str] | None = None, **over):
    body = {
        "store_id": "main-st",
        "phone": ATTACKER_PHONE,
        "name": "Mallory",
        "language": "en",
        "consent_sms": True,
        "consent_recognition": True,
        "mac": ATTACKER_MAC,
    }
    body.update(over)
    return client.post("/api/v1/enrolments", json=body, headers=headers or {})


def confirm(client: TestClient, enrolment_id: str, code: str):
    return client.post(f"/api/v1/enrolments/{enrolment_id}/confirm", json={"code": code})


def snapshot(store: BridgeStore, crm_id: str) -> tuple:
    """Everything about a customer that a takeover would change."""
    c = store.customer_row(crm_id)
    devices = sorted(d["mac"] for d in store.devices_of(c["id"]))
    consents = [(r["kind"], r["status"], r["ts"]) for r in store.consents_of(c["id"])]
    return c["name"], c["phone"], devices, consents


def test_unauthenticated_crm_id_cannot_take_over_a_customer(env) -> None:
    """The attack of issue 14 item 3: crm_id C-1002 with the attacker's phone and MAC."""
    store, _, client, _ = env
    before = snapshot(store, "C-1002")
    r = start(client, crm_id="C-1002")
    assert r.status_code == 401, r.text
    assert "enrol.link" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    assert codes_to(store, ATTACKER_PHONE) == []  # refused before any code goes out
    assert snapshot(store, "C-1002") == before
    # a wrong token is no better; a right token without the scope is refused too
    bad = start(client, {"authorization": "Bearer guess"}, crm_id="C-1002")
    assert bad.status_code == 401
    # source "crm" claims a CRM collected the consent: a token's word too
    assert start(client, source="crm").status_code == 401
    assert snapshot(store, "C-1002") == before
    assert store.customers_by_phone(ATTACKER_PHONE) == []


def test_token_without_the_link_scope_cannot_name_a_crm_id(env) -> None:
    store, keys, client, app = env
    app.state.enrolments = Enrolments(
        store, EnrolSettings(api_token=TOKEN), SandboxProvider(store), keys.subject_key
    )  # default scopes: erasure only
    before = snapshot(store, "C-1002")
    r = start(client, LINK, crm_id="C-1002")
    assert r.status_code == 403 and "enrol.link" in r.json()["detail"]
    assert snapshot(store, "C-1002") == before and codes_to(store, ATTACKER_PHONE) == []


def test_unauthenticated_enrolment_with_a_customers_mac_leaves_the_device_with_them(env) -> None:
    """The attacker confirms their own phone but names Boris's MAC: Boris keeps his device (the
    attacker would otherwise get an SMS whenever Boris walks by), the attacker gets consent for
    their own number only."""
    store, _, client, _ = env
    before = snapshot(store, "C-1002")
    r = start(client, mac=BORIS_MAC)
    assert r.status_code == 202
    out = confirm(client, r.json()["enrolment_id"], codes_to(store, ATTACKER_PHONE)[-1])
    assert out.status_code == 200 and out.json()["device_enrolled"] is False
    assert snapshot(store, "C-1002") == before
    (mallory,) = store.customers_by_phone(ATTACKER_PHONE)
    assert store.devices_of(mallory["id"]) == []
    assert store.device_owners(bytes.fromhex(BORIS_MAC.replace(":", ""))) == [
        store.customer_row("C-1002")["id"]
    ]


def test_unauthenticated_enrolment_of_a_known_phone_changes_nothing_until_its_owner_confirms(
    env,
) -> None:
    """Boris's number with another name and the attacker's MAC: the code goes to Boris's phone;
    until it is confirmed nothing of Boris changes; a wrong guess changes nothing either."""
    store, _, client, _ = env
    before = snapshot(store, "C-1002")
    r = start(client, phone=BORIS_PHONE, name="Mallory")
    assert r.status_code == 202
    assert codes_to(store, ATTACKER_PHONE) == [] and len(codes_to(store, BORIS_PHONE)) == 1
    assert snapshot(store, "C-1002") == before
    code = codes_to(store, BORIS_PHONE)[-1]
    assert (
        confirm(client, r.json()["enrolment_id"], f"{(int(code) + 1) % 10**6:06d}").status_code
        == 400
    )
    assert snapshot(store, "C-1002") == before
    # Boris himself confirms (he holds the phone): consents renewed, his name stays
    done = confirm(client, r.json()["enrolment_id"], code)
    assert done.status_code == 200 and done.json()["crm_id"] == "C-1002"
    name, phone, devices, consents = snapshot(store, "C-1002")
    assert (name, phone) == ("Boris", BORIS_PHONE)
    assert ATTACKER_MAC in devices and BORIS_MAC in devices
    assert len(consents) == len(before[3]) + 2


def test_portal_form_ignores_a_crm_id_field(env) -> None:
    """The portal form posts only what it shows: an added crm_id (or source) field is ignored."""
    store, _, client, _ = env
    before = snapshot(store, "C-1002")
    r = client.post(
        "/enrol/main-st",
        data={
            "lang": "en",
            "name": "Mallory",
            "phone": ATTACKER_PHONE,
            "consent_sms": "yes",
            "crm_id": "C-1002",
            "source": "crm",
        },
    )
    assert r.status_code == 200
    eid = re.search(r'name="enrolment_id" value="([^"]+)"', r.text).group(1)
    done = client.post(
        "/enrol/main-st/confirm",
        data={"lang": "en", "enrolment_id": eid, "code": codes_to(store, ATTACKER_PHONE)[-1]},
    )
    assert done.status_code == 200
    assert snapshot(store, "C-1002") == before
    (mallory,) = store.customers_by_phone(ATTACKER_PHONE)
    assert mallory["crm_id"].startswith("web-")


def test_portal_device_token_for_a_customers_mac_does_not_move_it(env) -> None:
    """The captive portal's MAC parameter is the client's word: a sealed token made from
    Boris's MAC (GET /enrol/main-st?id=...) and confirmed with the attacker's phone does not
    move Boris's device (the page refreshes nothing either: that GET only shows 'welcome')."""
    store, _, client, _ = env
    before = snapshot(store, "C-1002")
    page = client.get(f"/enrol/main-st?lang=en&mac={ATTACKER_MAC}")
    device = re.search(r'name="device" value="([^"]*)"', page.text).group(1)
    assert device
    enrolments = client.app.state.enrolments  # type: ignore[attr-defined]
    boris_token = enrolments.seal_device(bytes.fromhex(BORIS_MAC.replace(":", "")))
    r = client.post(
        "/enrol/main-st",
        data={
            "lang": "en",
            "device": boris_token,
            "name": "Mallory",
            "phone": ATTACKER_PHONE,
            "consent_sms": "yes",
            "consent_recognition": "yes",
        },
    )
    eid = re.search(r'name="enrolment_id" value="([^"]+)"', r.text).group(1)
    code = codes_to(store, ATTACKER_PHONE)[-1]
    done = client.post(
        "/enrol/main-st/confirm", data={"lang": "en", "enrolment_id": eid, "code": code}
    )
    assert done.status_code == 200
    assert snapshot(store, "C-1002") == before


def test_portal_re_enrolment_of_a_known_phone_still_works(env) -> None:
    """The legitimate portal flow: Boris, on a new phone (new MAC), enrols again with his own
    number; he confirms the code he got, and the new device joins his."""
    store, _, client, _ = env
    new_mac = "06:bb:bb:bb:bb:02"
    page = client.get(f"/enrol/main-st?lang=en&clientmac={new_mac}")
    device = re.search(r'name="device" value="([^"]*)"', page.text).group(1)
    r = client.post(
        "/enrol/main-st",
        data={
            "lang": "en",
            "device": device,
            "name": "Boris",
            "phone": "8 916 123-45-02",
            "consent_sms": "yes",
            "consent_recognition": "yes",
        },
    )
    eid = re.search(r'name="enrolment_id" value="([^"]+)"', r.text).group(1)
    code = codes_to(store, BORIS_PHONE)[-1]
    done = client.post(
        "/enrol/main-st/confirm", data={"lang": "en", "enrolment_id": eid, "code": code}
    )
    assert done.status_code == 200 and 'id="done"' in done.text
    name, phone, devices, _ = snapshot(store, "C-1002")
    assert (name, phone) == ("Boris", BORIS_PHONE)
    assert sorted(devices) == sorted([BORIS_MAC, new_mac])


def test_crm_linked_loyalty_app_flow_with_the_token_still_works(env) -> None:
    """The loyalty app knows Boris as C-1002 and he has a new number: with the token (scope
    enrol.link) the enrolment names C-1002, the code goes to the new number, and once it is
    confirmed offers go there; a device he enrols moves to him even from another customer."""
    store, _, client, _ = env
    anna_mac = "da:a1:19:3c:4e:01"  # demo C-1001's phone, now Boris's
    r = start(client, LINK, crm_id="C-1002", phone=ATTACKER_PHONE, name="Boris", mac=anna_mac)
    assert r.status_code == 202, r.text
    out = confirm(client, r.json()["enrolment_id"], codes_to(store, ATTACKER_PHONE)[-1])
    assert out.status_code == 200 and out.json()["crm_id"] == "C-1002"
    assert out.json()["device_enrolled"] is True
    name, phone, devices, _ = snapshot(store, "C-1002")
    assert (name, phone) == ("Boris", ATTACKER_PHONE)
    assert anna_mac in devices
    assert store.devices_of(store.customer_row("C-1001")["id"]) == []
    # source "crm" is the CRM's word: allowed with the token
    assert start(client, LINK, source="crm", phone="+79165557777").status_code == 202


def test_erasure_needs_the_erase_scope(env) -> None:
    store, keys, client, app = env
    app.state.enrolments = Enrolments(
        store,
        EnrolSettings(api_token=TOKEN, api_token_scopes=["enrol.link"]),
        SandboxProvider(store),
        keys.subject_key,
    )
    r = client.delete("/api/v1/customers/C-1003", headers=LINK)
    assert r.status_code == 403 and "customers.erase" in r.json()["detail"]
    assert store.customer_row("C-1003") is not None


def test_without_a_configured_token_linking_is_off(env) -> None:
    store, keys, client, app = env
    app.state.enrolments = Enrolments(
        store, EnrolSettings(), SandboxProvider(store), keys.subject_key
    )
    r = start(client, LINK, crm_id="C-1002")
    assert r.status_code == 403 and "set enrol.api_token" in r.json()["detail"]
    assert start(client).status_code == 202  # the public enrolment itself is unaffected


def test_portal_opt_out_cannot_be_scripted_over_the_whole_customer_base(env) -> None:
    """The opt-out page withdraws consent by phone number with no code (withdrawing must stay
    as easy as consenting), so one address may do it only enrol.optouts_per_ip_per_hour (30)
    times an hour: a stranger cannot wipe every customer's consent from one place."""
    store, _, client, app = env
    for i in range(30):
        r = client.post("/enrol/main-st/optout", data={"lang": "en", "phone": f"+7916555{i:04d}"})
        assert r.status_code == 200, i
    before = snapshot(store, "C-1002")
    r = client.post("/enrol/main-st/optout", data={"lang": "en", "phone": BORIS_PHONE})
    assert r.status_code == 429 and 'role="alert"' in r.text
    assert snapshot(store, "C-1002") == before  # Boris's consents stand
    # someone else (another address) still opts out at once
    other = TestClient(app, client=("198.51.100.44", 50000))
    assert other.post("/enrol/main-st/optout", data={"phone": BORIS_PHONE}).status_code == 200
    assert store.latest_consents(store.customer_row("C-1002")["id"]) == {
        "sms": "revoked",
        "recognition": "revoked",
    }


def test_an_ipv6_caller_cannot_rotate_addresses_inside_its_64_past_the_enrolment_limit(
    env,
) -> None:
    """One subscriber gets a whole /64: the per-address enrolment limit counts the /64."""
    store, keys, _, app = env
    app.state.enrolments = Enrolments(
        store, EnrolSettings(enrolments_per_ip_per_hour=3), SandboxProvider(store), keys.subject_key
    )

    def from_(ip: str, phone: str) -> int:
        return start(TestClient(app, client=(ip, 50000)), phone=phone, mac=None).status_code

    got = [from_(f"2001:db8:5:7::{i:x}", f"+7916556{i:04d}") for i in range(1, 6)]
    assert got == [202, 202, 202, 429, 429]
    assert from_("2001:db8:5:8::1", "+79165569998") == 202  # the next /64 is someone else
    assert from_("::ffff:192.0.2.7", "+79165569997") == 202  # IPv4-mapped counts as IPv4
    ips = {r["ip"] for r in enrolment_rows(store)}
    assert "2001:0db8:0005:0007:0000:0000:0000:0001" in ips and "192.0.2.7" in ips
