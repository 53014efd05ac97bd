"""Inbound keywords, signed webhooks (Twilio, SMSC, generic), receipts and one-click opt-out."""

from __future__ import annotations

import json
import time

import pytest
from delivery_helpers import add_customer, new_store, reserve
from fastapi.testclient import TestClient

from cloud_bridge.config import BridgeSettings
from cloud_bridge.delivery.inbound import (
    gateway_signature,
    smsc_signature,
)
from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import Outgoing, SendResult, StatusResult, twilio_signature
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.storage.customers import customer_by_id
from cloud_bridge.storage.sends import inbound_rows, optout_token, send_row
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.app import create_app

PUBLIC = "https://bridge.example"
SID = "AC" + "c" * 32
TOKEN = "twilio-token"
PHONE = "+79160000001"
CALLBACK_UTF8 = "/sms/smsc/callback?charset=utf-8"


class Recorder:
    """A provider that records what was submitted (replies) and accepts it."""

    account = "recorder"
    can_reconcile = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[Outgoing] = []

    def submit(self, msg: Outgoing) -> SendResult:
        self.calls.append(msg)
        return SendResult("accepted", provider_id=f"R{len(self.calls)}")

    def status(self, msg: Outgoing) -> StatusResult:
        return StatusResult("accepted")

    def send(self, to: str, sender: str, body: str) -> SendResult:  # pragma: no cover
        raise NotImplementedError


def settings_for(kind: str) -> BridgeSettings:
    extra: dict = {}
    if kind == "twilio":
        extra = {"twilio": {"account_sid": SID, "auth_token": TOKEN}}
    elif kind == "smsc":
        extra = {"smsc": {"login": "l", "password": "smsc-pw"}}
    elif kind == "http":
        extra = {"http": {"url": "https://gw.test/send", "webhook_secret": "gw-secret"}}
    return BridgeSettings(public_url=PUBLIC, provider={"kind": kind, **extra})


@pytest.fixture()
def make_env(db_location):  # type: ignore[no-untyped-def]
    """make_env(provider kind): a store on this test's engine, its deliverer and a client."""
    stores: list[BridgeStore] = []

    def make(kind: str):  # type: ignore[no-untyped-def]
        assert not stores, "one store per test"
        stores.append(new_store(db_location))
        return _env(stores[0], kind)

    yield make
    for store in stores:
        store.close()


@pytest.fixture(params=["twilio"])
def env(request, make_env):  # type: ignore[no-untyped-def]
    return make_env(request.param)


def _env(store: BridgeStore, kind: str):  # type: ignore[no-untyped-def]
    now = time.time()
    cid = add_customer(store, 1, now)
    provider = Recorder(kind)
    settings = settings_for(kind)
    d = Deliverer(
        store, provider, DeliveryOptions.from_settings(settings), bucket=TokenBucket(1000, 10)
    )
    app = create_app(store, settings)
    app.state.deliverer = d
    return store, cid, provider, d, TestClient(app)


def twilio_post(client: TestClient, path: str, params: dict[str, str], sign: bool = True):  # type: ignore[no-untyped-def]
    url = PUBLIC + path
    headers = {"X-Twilio-Signature": twilio_signature(url, params, TOKEN) if sign else "bad"}
    return client.post(path, data=params, headers=headers)


def inbound(text: str, sid: str, phone: str = PHONE) -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": SID, "From": phone, "To": "+15550001111", "Body": text}


def test_twilio_stop_revokes_at_once_and_confirms_once(env) -> None:  # type: ignore[no-untyped-def]
    store, cid, provider, _, client = env
    t0 = time.monotonic()
    r = twilio_post(client, "/sms/twilio/inbound", inbound("Stop", "SM1"))
    assert r.status_code == 200 and r.text == "<Response/>"
    assert store.latest_consents(cid)["sms"] == "revoked"
    assert time.monotonic() - t0 < 1.0
    assert store.latest_consents(cid)["recognition"] == "active"
    proof = store.consents_of(cid)[-1]["proof"]
    assert proof == {
        "source": "inbound_sms",
        "provider": "twilio",
        "message_id": "SM1",
        "keyword": "stop",
    }
    assert len(provider.calls) == 1
    reply = provider.calls[0]
    assert reply.to == PHONE and reply.sender == "+15550001111"
    assert "unsubscribed" in reply.body and "Opt out" not in reply.body
    # The same webhook again is a replay: refused, nothing more sent.
    assert twilio_post(client, "/sms/twilio/inbound", inbound("Stop", "SM1")).status_code == 409
    # Another STOP the same day: accepted, but no second confirmation.
    assert twilio_post(client, "/sms/twilio/inbound", inbound("STOP", "SM2")).status_code == 200
    assert len(provider.calls) == 1
    rows = inbound_rows(store)
    assert [r["message_id"] for r in rows] == ["SM1", "SM2"]
    assert all(PHONE not in json.dumps(r) for r in rows)  # only a keyed hash of the sender


def test_twilio_bad_signature_changes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    store, cid, provider, _, client = env
    assert (
        twilio_post(client, "/sms/twilio/inbound", inbound("STOP", "SM1"), sign=False).status_code
        == 403
    )
    params = inbound("STOP", "SM1")
    sig = twilio_signature(PUBLIC + "/sms/twilio/inbound", params, TOKEN)
    r = client.post(
        "/sms/twilio/inbound", data={**params, "Body": "START"}, headers={"X-Twilio-Signature": sig}
    )
    assert r.status_code == 403
    assert store.latest_consents(cid)["sms"] == "active" and not provider.calls


def test_stopall_start_and_help(env) -> None:  # type: ignore[no-untyped-def]
    store, cid, provider, _, client = env
    twilio_post(client, "/sms/twilio/inbound", inbound("СТОП ВСЕ", "SM1"))
    assert store.latest_consents(cid) == {"sms": "revoked", "recognition": "revoked"}
    assert "отписаны" in provider.calls[-1].body  # answered in the keyword's language
    twilio_post(client, "/sms/twilio/inbound", inbound("start", "SM2"))
    assert store.latest_consents(cid) == {"sms": "active", "recognition": "active"}
    restored = store.consents_of(cid)[-1]
    assert restored["text_version"] == "test" and restored["proof"]["keyword"] == "start"
    assert "subscribed to offers again" in provider.calls[-1].body
    twilio_post(client, "/sms/twilio/inbound", inbound("HELP", "SM3"))
    assert "Reply STOP" in provider.calls[-1].body and len(provider.calls) == 3


def test_start_never_creates_consent(env) -> None:  # type: ignore[no-untyped-def]
    store, _, provider, _, client = env
    other = add_customer(store, 2, time.time(), consent=False)
    phone = customer_by_id(store, other)["phone"]
    twilio_post(client, "/sms/twilio/inbound", inbound("YES", "SM1", phone))
    assert store.latest_consents(other) == {}
    assert "personal offers" in provider.calls[-1].body  # explained, not "subscribed"


def test_unknown_number_and_plain_text(env) -> None:  # type: ignore[no-untyped-def]
    store, cid, provider, _, client = env
    assert (
        twilio_post(
            client, "/sms/twilio/inbound", inbound("STOP", "SM1", "+15559998888")
        ).status_code
        == 200
    )
    assert (
        twilio_post(client, "/sms/twilio/inbound", inbound("thanks, see you", "SM2")).status_code
        == 200
    )
    assert store.latest_consents(cid)["sms"] == "active" and not provider.calls


def test_twilio_status_callback_moves_the_send(env) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, d, client = env
    sid = reserve(store, cid, time.time(), provider="twilio")
    d.deliver(sid)
    key = send_row(store, sid)["idem_key"]
    path = f"/sms/twilio/status?key={key}"
    params = {"MessageSid": "R1", "MessageStatus": "delivered", "AccountSid": SID}
    assert twilio_post(client, path, params).status_code == 204
    assert send_row(store, sid)["state"] == "delivered"
    assert twilio_post(client, path, params).status_code == 204  # repeated: ignored
    assert (
        twilio_post(client, path, {**params, "MessageStatus": "failed"}, sign=False).status_code
        == 403
    )
    failed = {
        "MessageSid": "R1",
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
        "AccountSid": SID,
    }
    twilio_post(client, path, failed)
    assert send_row(store, sid)["state"] == "delivered"  # never back


def test_twilio_receipt_flags_a_landline(env) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, d, client = env
    sid = reserve(store, cid, time.time(), provider="twilio")
    d.deliver(sid)
    params = {
        "MessageSid": "R1",
        "MessageStatus": "undelivered",
        "ErrorCode": "30006",
        "AccountSid": SID,
    }
    twilio_post(client, "/sms/twilio/status", params)
    row = send_row(store, sid)
    assert row["state"] == "undelivered" and row["error"].startswith("30006")
    assert store.number_flag(cid)["code"] == "30006"


def test_smsc_callbacks(make_env) -> None:  # type: ignore[no-untyped-def]
    store, cid, provider, d, client = make_env("smsc")
    sid = reserve(store, cid, time.time(), provider="smsc")
    d.deliver(sid)
    # The handler URL as smsc_callback_url() gives it: SMSC then posts UTF-8.
    fields = {"id": "R1", "phone": PHONE.lstrip("+"), "status": "1"}
    fields["md5"] = smsc_signature([fields["id"], fields["phone"], fields["status"]], "smsc-pw")
    assert client.post(CALLBACK_UTF8, data=fields).status_code == 200
    assert send_row(store, sid)["state"] == "delivered"
    assert client.post(CALLBACK_UTF8, data={**fields, "md5": "0" * 32}).status_code == 403
    msg = {"sms_id": "777", "phone": PHONE.lstrip("+"), "mes": "СТОП", "to": "79000000000"}
    msg["md5"] = smsc_signature([msg["sms_id"], msg["phone"], msg["mes"], msg["to"]], "smsc-pw")
    assert client.post(CALLBACK_UTF8, data=msg).status_code == 200
    assert store.latest_consents(cid)["sms"] == "revoked"
    assert client.post(CALLBACK_UTF8, data=msg).status_code == 409
    assert "отписаны" in provider.calls[-1].body


def test_generic_gateway_webhooks(make_env) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, _, client = make_env("http")

    def post(path: str, payload: dict, ts: float | None = None, secret: str = "gw-secret"):  # type: ignore[no-untyped-def]
        body = json.dumps(payload).encode()
        sig = gateway_signature(secret, str(int(ts or time.time())), body)
        return client.post(path, content=body, headers={"X-Passby-Signature": sig})

    assert post("/sms/http/inbound", {"id": "g1", "from": PHONE, "text": "stop"}).status_code == 204
    assert store.latest_consents(cid)["sms"] == "revoked"
    assert post("/sms/http/inbound", {"id": "g1", "from": PHONE, "text": "stop"}).status_code == 409
    assert (
        post(
            "/sms/http/inbound", {"id": "g2", "from": PHONE, "text": "start"}, secret="x"
        ).status_code
        == 403
    )
    old = post(
        "/sms/http/inbound", {"id": "g3", "from": PHONE, "text": "start"}, ts=time.time() - 3600
    )
    assert old.status_code == 409
    assert store.latest_consents(cid)["sms"] == "revoked"


def test_routes_of_other_providers_are_closed(env) -> None:  # type: ignore[no-untyped-def]
    _, _, _, _, client = env
    assert client.post("/sms/smsc/callback", data={"id": "1"}).status_code == 404
    assert (
        client.post(
            "/sms/sandbox/inbound", json={"id": "1", "from": PHONE, "text": "STOP"}
        ).status_code
        == 404
    )


def test_sandbox_inbound_for_the_demo(make_env) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, _, client = make_env("sandbox")
    r = client.post("/sms/sandbox/inbound", json={"id": "s1", "from": PHONE, "text": "STOP"})
    assert r.status_code == 200 and r.json() == {"action": "stop", "customers": 1, "changed": 1}
    assert store.latest_consents(cid)["sms"] == "revoked"


def test_one_click_opt_out_link(env) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, d, client = env
    sid = reserve(store, cid, time.time(), provider="twilio")
    d.deliver(sid)
    token = optout_token(store, sid)
    body = send_row(store, sid)["body"]
    assert body.endswith(f"Opt out: {PUBLIC}/o/{token}")
    page = client.get(f"/o/{token}")
    assert page.status_code == 200 and 'method="post"' in page.text and ".submit()" in page.text
    assert (
        store.latest_consents(cid)["sms"] == "active"
    )  # opening (or a link preview) is not enough
    t0 = time.monotonic()
    done = client.post(f"/o/{token}")
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert store.latest_consents(cid)["sms"] == "revoked" and time.monotonic() - t0 < 1.0
    assert store.optout_link_row(token)["used"] is not None
    assert client.post(f"/o/{token}").status_code == 200  # twice: still fine, no new row
    assert [c["status"] for c in store.consents_of(cid) if c["kind"] == "sms"] == [
        "active",
        "revoked",
    ]
    assert client.get("/o/nope1234").status_code == 404
    assert client.post("/o/../../etc").status_code == 404


def test_opt_out_link_of_an_erased_customer_writes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, d, client = env
    sid = reserve(store, cid, time.time(), provider="twilio")
    d.deliver(sid)
    token = optout_token(store, sid)
    store.erase_customer(cid, time.time())
    assert client.post(f"/o/{token}").status_code == 200
    assert store.consents_of(cid) == []


# -- one Twilio status table for the callback and the lookup; SMSC callbacks as SMSC sends them


TWILIO_CALLBACK_EXPECT = {
    "queued": "accepted", "accepted": "accepted", "scheduled": "accepted",
    "sending": "accepted", "sent": "accepted", "delivered": "delivered", "read": "delivered",
    "undelivered": "undelivered", "partially_delivered": "undelivered", "failed": "failed",
    "canceled": "failed",
}  # fmt: skip


@pytest.mark.parametrize("status", sorted(TWILIO_CALLBACK_EXPECT))
def test_twilio_callback_maps_every_status(env, status: str) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, d, client = env
    sid = reserve(store, cid, time.time(), provider="twilio")
    d.deliver(sid)
    params = {"MessageSid": "R1", "MessageStatus": status, "AccountSid": SID}
    assert twilio_post(client, "/sms/twilio/status", params).status_code == 204
    row = send_row(store, sid)
    assert row["state"] == TWILIO_CALLBACK_EXPECT[status]


def test_twilio_callback_and_lookup_share_one_table() -> None:
    from cloud_bridge.delivery import inbound, providers

    lookup = {
        s: providers.TwilioProvider._status_of({"sid": "SM1", "status": s}).status
        for s in TWILIO_CALLBACK_EXPECT
    }
    assert lookup == TWILIO_CALLBACK_EXPECT
    assert inbound.TWILIO_STATUSES is providers.TWILIO_STATUSES


@pytest.mark.parametrize("status", ["receiving", "received", "no-such-status"])
def test_twilio_callback_of_an_unknown_or_inbound_status_changes_nothing(env, status: str) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, d, client = env
    sid = reserve(store, cid, time.time(), provider="twilio")
    d.deliver(sid)
    params = {"MessageSid": "R1", "MessageStatus": status, "AccountSid": SID}
    assert twilio_post(client, "/sms/twilio/status", params).status_code == 204
    assert send_row(store, sid)["state"] == "accepted"


def _smsc_post(client, fields: dict[str, str], charset: str, url_charset: str | None = None):  # type: ignore[no-untyped-def]
    from fake_providers import smsc_callback

    body, headers = smsc_callback(fields, "smsc-pw", charset)
    path = "/sms/smsc/callback" + (f"?charset={url_charset}&md5=1" if url_charset else "?md5=1")
    return client.post(path, content=body, headers=headers)


@pytest.mark.parametrize(
    "charset,url_charset", [("windows-1251", None), ("utf-8", "utf-8"), ("koi8-r", "koi8-r")]
)
def test_smsc_stop_in_the_charset_smsc_used(
    make_env, charset: str, url_charset: str | None
) -> None:  # type: ignore[no-untyped-def]
    """SMSC posts windows-1251 unless the handler URL asks for another charset: "СТОП" must
    opt the customer out either way, and the md5 is over the bytes SMSC sent."""
    store, cid, provider, _, client = make_env("smsc")
    msg = {"sms_id": "777", "phone": PHONE.lstrip("+"), "mes": "СТОП", "to": "79000000000"}
    r = _smsc_post(client, msg, charset, url_charset)
    assert r.status_code == 200, r.text
    assert store.latest_consents(cid)["sms"] == "revoked"
    assert "отписаны" in provider.calls[-1].body
    assert _smsc_post(client, msg, charset, url_charset).status_code == 409


def test_smsc_callback_with_a_charset_that_does_not_fit_is_refused_whole(make_env) -> None:  # type: ignore[no-untyped-def]
    store, cid, provider, _, client = make_env("smsc")
    msg = {"sms_id": "778", "phone": PHONE.lstrip("+"), "mes": "СТОП", "to": "79000000000"}
    r = _smsc_post(client, msg, "windows-1251", "utf-8")  # the URL says utf-8, bytes are 1251
    assert r.status_code == 400 and "utf-8" in r.text
    assert store.latest_consents(cid)["sms"] == "active" and not provider.calls
    assert PHONE.lstrip("+") not in r.text


@pytest.mark.parametrize(
    "code,state",
    [("-1", "accepted"), ("0", "accepted"), ("1", "delivered"), ("2", "delivered"),
     ("4", "delivered"), ("3", "undelivered"), ("20", "undelivered"), ("-2", "failed"),
     ("22", "failed"), ("23", "failed"), ("24", "failed"), ("25", "failed")],
)  # fmt: skip
def test_smsc_status_callbacks_map_every_status(make_env, code: str, state: str) -> None:  # type: ignore[no-untyped-def]
    store, cid, _, d, client = make_env("smsc")
    sid = reserve(store, cid, time.time(), provider="smsc")
    d.deliver(sid)
    r = _smsc_post(client, {"id": "R1", "phone": PHONE.lstrip("+"), "status": code}, "utf-8")
    assert r.status_code == 200
    assert send_row(store, sid)["state"] == state


@pytest.mark.parametrize("code", ["-3", "77", ""])
def test_smsc_status_callback_we_cannot_place_changes_nothing(make_env, code: str) -> None:  # type: ignore[no-untyped-def]
    """-3 ("not found") or a code SMSC does not document is not read as a final state."""
    store, cid, _, d, client = make_env("smsc")
    sid = reserve(store, cid, time.time(), provider="smsc")
    d.deliver(sid)
    r = _smsc_post(client, {"id": "R1", "phone": PHONE.lstrip("+"), "status": code}, "utf-8")
    assert r.status_code == 200
    assert send_row(store, sid)["state"] == "accepted"
