"""Shared set-up for delivery tests and the delivery benchmark: a store with N reserved offers."""

from __future__ import annotations

import uuid
from pathlib import Path

from cloud_bridge.storage.sends import send_state_counts
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
    send_id, reason = store.reserve_offer(
        event_id,
        customer_id,
        CAMPAIGN,
        "A",
        STORE_ID,
        now,
        cap_count=1,
        cap_days=30,
        overall_cap=4,
        overall_days=30,
        sender=sender,
        body=body or TEXT.format(name=f"Name{customer_id}"),
        provider=provider,
    )
    assert send_id is not None, reason
    return send_id


def seed_intents(store: BridgeStore, n: int, now: float, provider: str = "sandbox") -> list[int]:
    return [reserve(store, add_customer(store, i, now), now, provider=provider) for i in range(n)]


def states(store: BridgeStore) -> dict[str, int]:
    return send_state_counts(store)
