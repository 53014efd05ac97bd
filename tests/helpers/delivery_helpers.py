"""Shared set-up for delivery tests and the delivery benchmark: a store with N reserved offers, a
scripted provider and a deliverer over it."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterable
from pathlib import Path

from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import Outgoing, SendResult, StatusResult
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.storage.store import BridgeStore

STORE_ID = "main-st"
SENDER = "MainStCafe"
BRAND = "Main St. Coffee"
CAMPAIGN = "fav-15"
TEXT = "{name}, 15% off espresso beans today at Main St. Coffee."


def new_store(
    path: Path | str = ":memory:", sender: str = SENDER, data_key: bytes | None = b"\x01" * 32
) -> BridgeStore:
    """A store with the demo store and campaign; ``data_key=None``: the key file next to it."""
    store = BridgeStore(path, data_key=data_key)
    store.upsert_store(
        {
            "id": STORE_ID,
            "name": BRAND,
            "timezone": "Europe/Moscow",
            "country": "RU",
            "sender_name": sender,
            "send_start": "00:00",
            "send_end": "24:00",
            "site_key": "00" * 16,
        }
    )
    store.upsert_campaign(
        {
            "id": CAMPAIGN,
            "name": "15% off",
            "trigger": "arrive",
            "template": TEXT,
            "stores": [STORE_ID],
        }
    )
    return store


def add_customer(
    store: BridgeStore, i: int, now: float, consent: bool = True, phone: str | None = None
) -> int:
    cid = store.upsert_customer(
        f"C-{i}", f"subject-{i:06d}", f"Name{i}", phone or f"+7916{i:07d}", "espresso beans", now
    )
    if consent:
        for kind in ("sms", "recognition"):
            store.record_consent(
                cid, kind, "active", now, text_version="test", proof={"code": "ok"}
            )
    return cid


def reserve(
    store: BridgeStore,
    customer_id: int,
    now: float,
    event_ts: float | None = None,
    body: str | None = None,
    provider: str = "sandbox",
    sender: str = SENDER,
) -> int:
    """One presence event and its reserved send (as the decision worker leaves it)."""
    event_id = uuid.uuid4().hex
    store.insert_event(
        event_id, STORE_ID, "door-1", "arrive", f"s{customer_id}", event_ts or now, "{}", now
    )
    send_id, reason = store.reserve_send(
        event_id,
        customer_id,
        CAMPAIGN,
        STORE_ID,
        1,
        30,
        4,
        30,
        sender,
        body or TEXT.format(name=f"Name{customer_id}"),
        provider,
        now,
    )
    assert send_id is not None, reason
    return send_id


def seed_intents(store: BridgeStore, n: int, now: float, provider: str = "sandbox") -> list[int]:
    return [reserve(store, add_customer(store, i, now), now, provider=provider) for i in range(n)]


def states(store: BridgeStore) -> dict[str, int]:
    return {
        r["state"]: r["n"]
        for r in store.query("SELECT state, count(*) AS n FROM sends GROUP BY state")
    }


class Scripted:
    """Answers sends from a script (then ``accepted``); keeps what it 'really' took."""

    name = "sandbox"
    account = "scripted"
    can_reconcile = True

    def __init__(self, script: Iterable[str] = ()) -> None:
        self.script = collections.deque(script)
        self.calls: list[Outgoing] = []
        self.taken: dict[str, str] = {}  # key -> provider id, what the provider really has
        self.takes: collections.Counter[str] = collections.Counter()  # key -> times taken
        self.status_calls = 0

    def submit(self, msg: Outgoing) -> SendResult:
        self.calls.append(msg)
        step = self.script.popleft() if self.script else "accepted"
        pid = f"P{len(self.calls)}"
        if step in ("accepted", "timeout_taken"):
            self.takes[msg.key] += 1
        if step == "accepted":
            self.taken[msg.key] = pid
            return SendResult("accepted", provider_id=pid)
        if step == "timeout_taken":  # the provider took it, the answer was lost
            self.taken[msg.key] = pid
            return SendResult("unknown", error="no answer: ReadTimeout")
        if step == "timeout_lost":
            return SendResult("unknown", error="no answer: RemoteProtocolError")
        if step == "retry":
            return SendResult("retry", error="HTTP 503", retry_after=0.0)
        if step == "opt_out":
            return SendResult("failed", error="21610", code="21610", action="opt_out")
        if step == "invalid":
            return SendResult("failed", error="21211", code="21211", action="invalid_number")
        if step == "crash":
            raise RuntimeError("adapter bug")
        raise AssertionError(step)

    def status(self, msg: Outgoing) -> StatusResult:
        self.status_calls += 1
        if msg.key in self.taken:
            return StatusResult("accepted", provider_id=self.taken[msg.key])
        return StatusResult("not_found")

    def send(self, to: str, sender: str, body: str) -> SendResult:  # pragma: no cover
        raise NotImplementedError

    def sent_per_key(self) -> collections.Counter[str]:
        return self.takes


def deliverer(store: BridgeStore, provider: Scripted, **opts: object) -> Deliverer:
    options = DeliveryOptions(**{"reconcile_after_s": 0.0, "retry_base_s": 0.0, **opts})  # type: ignore[arg-type]
    return Deliverer(store, provider, options, bucket=TokenBucket(rate=10_000, burst=100))
