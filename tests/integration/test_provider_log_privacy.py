"""No phone number, password, token or message text in any log line, and no credential or
phone in a URL where the provider takes them in a body.

Every provider adapter (Twilio, SMSC.ru, the generic HTTP gateway, the sandbox) goes through
every path against a local server speaking its API: accepted, refused, 429, 5xx, timeout,
reconcile found / not found / unknown, status callback and inbound STOP through the bridge's
webhooks. The bridge's own logging set-up runs first (``cli._logging``), then the root logger
is put at DEBUG and every record of every logger is captured and scanned.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from delivery_helpers import add_customer, new_store, reserve
from fake_providers import (
    TWILIO_SID,
    TWILIO_TOKEN,
    FakeGateway,
    FakeProvider,
    FakeSmsc,
    FakeTwilio,
    FaultPlan,
    smsc_callback,
)
from fastapi.testclient import TestClient

from cloud_bridge.cli import main as cli
from cloud_bridge.config import BridgeSettings
from cloud_bridge.delivery.inbound import gateway_signature
from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import Outgoing, make_provider, twilio_signature
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.storage.sends import send_log_rows, send_row, send_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.app import create_app

PUBLIC = "http://bridge.test"
WEBHOOK_SECRET = "gw-webhook-secret-5f1c"
READ_TIMEOUT = 0.3
SCRIPT = ["ok", "429", "500", "503", "504", "507", "slow_ok", "drop_after", "drop", "504_after"]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)  # includes the traceback, if any
        self.lines.append(line)


@pytest.fixture()
def logs() -> Iterator[Capture]:
    cli._logging(True)  # the bridge's own set-up, as `passby-bridge run -v` does
    root = logging.getLogger()
    level = root.level
    capture = Capture()
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


def _variants(phone: str) -> list[str]:
    digits = phone.lstrip("+")
    return [phone, digits, urllib.parse.quote(phone, safe=""), digits[-7:]]


def _settings(kind: str, fake: FakeProvider | None) -> BridgeSettings:
    common = {"connect_timeout_s": 1.0, "read_timeout_s": READ_TIMEOUT}
    extra: dict[str, Any] = {}
    if kind == "twilio":
        assert fake is not None
        extra = {
            "twilio": {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN, "base_url": fake.url}
        }
    elif kind == "smsc":
        assert fake is not None
        extra = {
            "smsc": {"login": FakeSmsc.LOGIN, "password": FakeSmsc.PASSWORD, "base_url": fake.url}
        }
    elif kind == "http":
        assert fake is not None
        extra = {
            "http": {
                "url": fake.url + "/send",
                "token": FakeGateway.TOKEN,
                "status_url": fake.url + "/status/{key}",
                "webhook_secret": WEBHOOK_SECRET,
            }
        }
    return BridgeSettings(public_url=PUBLIC, provider={"kind": kind, **extra, **common})


def _drive(store: BridgeStore, d: Deliverer, ids: list[int]) -> None:
    """Send each offer, then reconcile what stayed unknown and retry what is due, a few rounds."""
    for sid in ids:
        d.deliver(sid)
    for _ in range(4):
        for sid in ids:
            row = send_row(store, sid)
            now = time.time()
            if row["state"] == "unknown":
                store.move_send("sends", sid, ("unknown",), "unknown", now, "due", next_at=now)
            elif row["state"] == "reserved":
                d.attempt("sends", sid)
        d.sweep(time.time())


def _scan(lines: list[str], secrets: list[str]) -> list[str]:
    return [f"{s!r} in {line!r}" for line in lines for s in secrets if s and s in line]


@pytest.mark.parametrize("kind", ["twilio", "smsc", "http", "sandbox"])
def test_no_secret_or_phone_in_any_log_line_or_url(kind: str, logs: Capture) -> None:
    fake: FakeProvider | None = None
    if kind == "twilio":
        fake = FakeTwilio(FaultPlan(SCRIPT), slow_s=READ_TIMEOUT * 2, retry_after="0")
    elif kind == "smsc":
        fake = FakeSmsc(FaultPlan(SCRIPT), slow_s=READ_TIMEOUT * 2, duplicate_window_s=0.0)
    elif kind == "http":
        fake = FakeGateway(FaultPlan(SCRIPT), slow_s=READ_TIMEOUT * 2, retry_after="0")
    if fake is not None:
        fake.start()
    store = new_store()
    try:
        settings = _settings(kind, fake)
        provider = make_provider(settings.provider, store)
        if kind == "twilio":
            provider.absent_after_s = 0.0  # type: ignore[attr-defined]
        if kind == "smsc":
            provider.duplicate_window_s = 0.0  # type: ignore[attr-defined]
            provider.block_s = 0.2  # type: ignore[attr-defined]
        options = DeliveryOptions.from_settings(settings)
        options = DeliveryOptions(
            **{
                **options.__dict__,
                "reconcile_after_s": 0.0,
                "retry_base_s": 0.01,
                "retry_max_s": 0.01,
                "max_attempts": 20,
            }
        )
        d = Deliverer(store, provider, options, bucket=TokenBucket(1000, 10))
        now = time.time()
        phones = [f"+7916555{i:04d}" for i in range(len(SCRIPT) + 3)]
        if kind == "twilio":
            phones += ["+15005550004", "+15005550001"]  # refused: unsubscribed, invalid
        customers = [add_customer(store, i, now, phone=p) for i, p in enumerate(phones)]
        ids = [reserve(store, c, now, provider=kind) for c in customers]
        bodies = [r["body"] for r in send_rows(store)]
        if kind == "smsc":
            assert fake is not None
            fake.block_for(0.2)  # the first send meets error 4
        _drive(store, d, ids)
        if kind == "smsc":
            assert fake is not None
            fake.status_override[str(ids[-1])] = {"err": 0}  # an answer without a status
            store.move_send("sends", ids[-1], ("accepted",), "unknown", now, "test", next_at=now)
            d.sweep(time.time())
        # A direct one-off send (the enrolment code path) and a lookup of each kind.
        provider.send(phones[0], "Cafe", "Your code is 493817")
        bodies.append("Your code is 493817")
        looked = {
            provider.status(
                Outgoing(key=k, to=phones[0], sender="Cafe", body=b, attempt_at=now)
            ).status
            for k, b in (("k-other", "Another text"), ("k-none", "Never sent"))
        }
        if fake is not None:
            # reconcile found / not found / unknown, each taken
            assert d.counters.retried and d.counters.unknown and d.counters.reconciled
            reasons = " ".join(r["detail"] for r in send_log_rows(store))
            assert "safe to send again" in reasons, reasons[-2000:]  # not found, sent again
            assert "status API: accepted" in reasons or "status API: delivered" in reasons
        if kind == "twilio":
            assert looked == {"error"}  # another message to that number: absence unproven

        app = create_app(store, settings)
        app.state.deliverer = d
        client = TestClient(app)
        webhook_status: list[int] = []
        stop_phone = phones[1]
        if kind == "twilio":
            row = [s for s in send_rows(store) if s["provider_id"] is not None][0]
            path = f"/sms/twilio/status?key={row['idem_key']}"
            params = {
                "MessageSid": row["provider_id"],
                "MessageStatus": "delivered",
                "AccountSid": TWILIO_SID,
                "To": phones[0],
            }
            sig = twilio_signature(PUBLIC + path, params, TWILIO_TOKEN)
            webhook_status.append(
                client.post(path, data=params, headers={"X-Twilio-Signature": sig}).status_code
            )
            stop = {"MessageSid": "SMin1", "AccountSid": TWILIO_SID, "From": stop_phone,
                    "To": "+15550001111", "Body": "STOP"}  # fmt: skip
            sig = twilio_signature(PUBLIC + "/sms/twilio/inbound", stop, TWILIO_TOKEN)
            webhook_status.append(
                client.post(
                    "/sms/twilio/inbound", data=stop, headers={"X-Twilio-Signature": sig}
                ).status_code
            )
        elif kind == "smsc":
            row = [s for s in send_rows(store) if s["provider_id"] is not None][0]
            body, headers = smsc_callback(
                {"id": row["provider_id"], "phone": phones[0].lstrip("+"), "status": "1"},
                FakeSmsc.PASSWORD,
                "utf-8",
            )
            webhook_status.append(
                client.post(
                    "/sms/smsc/callback?charset=utf-8", content=body, headers=headers
                ).status_code
            )
            body, headers = smsc_callback(
                {"sms_id": "901", "phone": stop_phone.lstrip("+"), "mes": "СТОП",
                 "to": "79000000000"},
                FakeSmsc.PASSWORD,
            )  # fmt: skip
            webhook_status.append(
                client.post("/sms/smsc/callback", content=body, headers=headers).status_code
            )
        elif kind == "http":
            row = [s for s in send_rows(store) if s["provider_id"] is not None][0]
            for path, payload in (
                ("/sms/http/status", {"id": row["provider_id"], "reference": row["idem_key"],
                                      "status": "delivered", "to": phones[0]}),
                ("/sms/http/inbound", {"id": "g1", "from": stop_phone, "text": "STOP"}),
            ):  # fmt: skip
                raw = json.dumps(payload).encode()
                sig = gateway_signature(WEBHOOK_SECRET, str(int(time.time())), raw)
                webhook_status.append(
                    client.post(path, content=raw, headers={"X-Passby-Signature": sig}).status_code
                )
        else:
            r = client.post("/sms/sandbox/inbound", json={"id": "s1", "from": stop_phone,
                                                          "text": "STOP"})  # fmt: skip
            webhook_status.append(r.status_code)

        secrets = [
            TWILIO_TOKEN,
            FakeSmsc.PASSWORD,
            FakeGateway.TOKEN,
            WEBHOOK_SECRET,
            *[v for p in phones for v in _variants(p)],
            *bodies,
            "espresso beans",
            "493817",
        ]
        found = _scan(logs.lines, secrets)
        assert not found, "\n".join(found[:10])
        assert len(logs.lines) > 10  # the paths did log (at DEBUG), just nothing private
        assert all(s < 300 for s in webhook_status), webhook_status
        stopped = customers[1]
        assert store.latest_consents(stopped)["sms"] == "revoked"

        if fake is not None:
            states = {r["state"] for r in send_rows(store)}
            assert {"accepted", "unknown"} & states  # the scripted faults happened
            assert fake.duplicates() == 0
            credentials = [TWILIO_TOKEN, FakeSmsc.PASSWORD, FakeGateway.TOKEN]
            for method, path, _, _ in fake.requests_seen():
                assert not _scan([path], credentials), path
                if kind == "twilio" and method == "GET" and "/Messages.json" in path:
                    continue  # Twilio's list filter only exists as a query parameter (README)
                leaked = _scan([path], [v for p in phones for v in _variants(p)[:3]])
                assert not leaked, f"{method} {path}"
    finally:
        if fake is not None:
            fake.stop()
        store.close()
