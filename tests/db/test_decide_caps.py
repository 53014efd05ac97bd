"""Caps and budgets hold under concurrency: 8 threads, each with its own database connection
(as separate workers or processes would have), race over the same events."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.offers.campaigns import save_campaigns, validate_campaigns
from cloud_bridge.offers.worker import DecisionWorker
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.customers import customer_by_crm_id, customer_rows
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.sends import sandbox_rows, send_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import store_ids
from cloud_bridge.tenant import load_tenant, seed
from edge_agent.roster import subject_id

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
TOPIC = "passby/v1/main-st/door-1/events"
CONSENTING = ("C-1001", "C-1002", "C-1003")


@pytest.fixture()
def bridge(tmp_path: Path, db_location):
    store = BridgeStore(db_location)
    keys = BridgeKeys(tmp_path)
    seed(store, keys, load_tenant(TENANT), time.time())
    yield store, keys, db_location
    store.close()


def campaigns(store: BridgeStore, n: int, **extra: object) -> None:
    raw = [
        {
            "id": f"offer-{i}",
            "name": f"Offer {i}",
            "status": "active",
            "holdout_pct": 0,
            "priority": i,
            "template": f"{{{{ first_name }}}}, offer {i}",
            **extra,
        }
        for i in range(n)
    ]
    save_campaigns(store, validate_campaigns(raw, store), "test", time.time())


def fire(store: BridgeStore, keys: BridgeKeys, crm_ids: list[str]) -> list[dict]:
    c = IngestCounters()
    for crm in crm_ids:
        now = time.time()
        payload = {
            "schema": "passby.event/1",
            "event_id": uuid.uuid4().hex,
            "type": "arrive",
            "subject": subject_id(keys.subject_key, crm),
            "ts": now,
            "first_seen": now - 10,
            "last_seen": now,
            "rssi": {"max": -60, "median": -65},
            "frames": 9,
            "dwell_s": 0,
        }
        handle_message(store, TOPIC, json.dumps(payload).encode(), now, c)
    return store.next_new_events(10_000)


def race(db: Path, rows: list[dict], threads: int = 8) -> None:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(i: int, chunk: list[dict]) -> None:
        own = BridgeStore(db)
        w = DecisionWorker(own, SandboxProvider(own), batch=4)
        barrier.wait()
        try:
            if i % 2:  # half decide event by event, half in batches
                for row in chunk:
                    w.process(row, time.time())
            else:
                for k in range(0, len(chunk), 4):
                    w.process_batch(chunk[k : k + 4], time.time())
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.close()

    pool = [threading.Thread(target=work, args=(i, rows[i::threads])) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors


def test_cross_campaign_cap_under_8_threads(bridge) -> None:
    """6 campaigns apply, 40 arrivals of one customer race: 4 SMS (the overall cap), at most
    one per campaign, and every event decided exactly once."""
    store, keys, db = bridge
    campaigns(store, 5)  # + the tenant's fav-15: 6 campaigns
    rows = fire(store, keys, ["C-1002"] * 40)
    # every thread sees every event: workers compete for the same rows
    race(db, rows * 2)
    sends = Counter(r["campaign_id"] for r in send_rows(store))
    assert sum(sends.values()) == 4
    assert all(n == 1 for n in sends.values())
    assert len(sandbox_rows(store)) == 4
    decided = Counter(r["event_id"] for r in decision_rows(store))
    assert len(decided) == 40 and all(n == 1 for n in decided.values())
    reasons = {r["reason"] for r in decision_rows(store)}
    assert reasons == {"sent", "overall_cap"}


def test_campaign_cap_of_two_under_8_threads(bridge) -> None:
    store, keys, db = bridge
    store.set_campaign_status("fav-15", "paused", time.time())
    campaigns(store, 1, caps={"count": 2, "days": 30})
    race(db, fire(store, keys, ["C-1001"] * 24))
    assert len(send_rows(store)) == 2


def test_campaign_budget_under_8_threads(bridge) -> None:
    store, keys, db = bridge
    store.set_campaign_status("fav-15", "paused", time.time())
    campaigns(store, 1, budget=2)
    race(db, fire(store, keys, list(CONSENTING) * 8))
    assert len(send_rows(store)) == 2
    reasons = {r["reason"] for r in decision_rows(store)}
    assert "campaign_budget" in reasons


def test_store_daily_budget_under_8_threads(bridge) -> None:
    store, keys, db = bridge
    campaigns(store, 3)
    assert store.set_store_budget("main-st", 5)
    race(db, fire(store, keys, list(CONSENTING) * 10))
    assert len(send_rows(store)) == 5
    reasons = {r["reason"] for r in decision_rows(store)}
    assert "store_budget" in reasons


def test_reservation_rechecks_consent_erasure_caps_and_holdouts(bridge) -> None:
    """The reservation's own checks (one statement): every refusal it can give, and the
    windows it counts in."""
    store, _, _ = bridge
    now = time.time()
    ids = [r["id"] for r in customer_rows(store)][:3]
    store_id = sorted(store_ids(store))[0]
    n = iter(range(1000))

    def reserve(customer: int, campaign: str, **kw: object) -> tuple[int | None, str]:
        args = {"cap_count": 1, "cap_days": 30, "overall_cap": 2, "overall_days": 7, **kw}
        return store.reserve_offer(
            f"ev{next(n)}", customer, campaign, "A", store_id, now, sender="Shop", body="Hi",
            provider="sandbox", **args,  # type: ignore[arg-type]
        )  # fmt: skip

    a, b, c = ids
    key, why = reserve(a, "spring")
    assert key is not None and why == ""
    assert reserve(a, "spring") == (None, "campaign_cap")  # 1 in 30 days
    assert reserve(a, "spring", cap_count=2)[1] == ""  # 2 allowed
    assert reserve(a, "summer") == (None, "overall_cap")  # 2 of any campaign in 7 days
    assert reserve(a, "summer", overall_cap=3)[1] == ""
    # a send 10 days old counts for a 30-day campaign cap, not for a 7-day overall cap
    store.db.execute("UPDATE sends SET ts=? WHERE customer_id=?", [now - 10 * 86400, a])
    assert reserve(a, "autumn")[1] == ""
    assert reserve(a, "spring", cap_count=2) == (None, "campaign_cap")  # 2 in 30 days
    assert reserve(a, "spring", cap_count=2, cap_days=5)[1] == ""  # none in 5 days
    # holdout exposures count against their campaign's cap only
    hold, why = reserve(b, "winter", holdout=True)
    assert hold is not None and why == ""
    assert reserve(b, "winter") == (None, "campaign_cap")
    assert reserve(b, "other")[1] == ""
    # consent and erasure, as they are at the moment of reserving
    store.record_consent(c, "sms", "revoked", now)
    assert reserve(c, "spring") == (None, "no_sms_consent")
    store.record_consent(c, "sms", "active", now + 1)
    store.record_consent(c, "recognition", "revoked", now + 1)
    assert reserve(c, "spring") == (None, "no_recognition_consent")
    store.db.execute("UPDATE customers SET erased=? WHERE id=?", [now, c])
    assert reserve(c, "spring") == (None, "erased")
    refused = [r for r in decision_rows(store) if r["outcome"] == "skip"]
    assert [r["reason"] for r in refused] == [
        "campaign_cap", "overall_cap", "campaign_cap", "campaign_cap",
    ]  # fmt: skip


def test_a_put_back_event_waits_for_the_other_workers_commit(bridge) -> None:
    """Another worker is reserving for this customer (holds the key in an open transaction):
    the event is put back once and decided in a transaction that waits for that commit; it
    is not retried in a loop meanwhile."""
    store, keys, db = bridge
    campaigns(store, 1)
    rows = fire(store, keys, ["C-1001"])
    cid = customer_by_crm_id(store, "C-1001")["id"]  # type: ignore[index]
    other = BridgeStore(db)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with other.transaction():
            other.lock_for([f"customer:{cid}"])  # on SQLite the write transaction is the lock
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        w = DecisionWorker(store, SandboxProvider(store))
        threading.Timer(0.4, release.set).start()
        t0 = time.monotonic()
        assert w.process_batch(rows, time.time()) == 1
        waited = time.monotonic() - t0
    finally:
        release.set()
        t.join()
        other.close()
    assert waited >= 0.3  # it waited for the commit ...
    assert w.counters.sends == 1  # ... then reserved
    assert w.counters.deferred == (1 if store.postgres else 0)  # put back once, not spun
    assert len(send_rows(store)) == 1
