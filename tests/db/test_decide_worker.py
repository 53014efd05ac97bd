"""The decision worker's batches: one transaction per batch, a failing event isolated."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.delivery.providers import SandboxProvider, SendResult
from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.offers import worker as worker_mod
from cloud_bridge.offers.worker import DecisionWorker, event_of
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.events import event_rows
from cloud_bridge.storage.sends import sandbox_rows, send_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import stores_by_name
from cloud_bridge.tenant import load_tenant, seed
from edge_agent.roster import subject_id

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
TOPIC = "passby/v1/main-st/door-1/events"


@pytest.fixture()
def bridge(tmp_path: Path, db_location):
    store = BridgeStore(db_location)
    keys = BridgeKeys(tmp_path)
    seed(store, keys, load_tenant(TENANT), time.time())
    yield store, keys
    store.close()


def fire(store: BridgeStore, keys: BridgeKeys, crm_ids: list[str], type_: str = "arrive") -> None:
    c = IngestCounters()
    for crm in crm_ids:
        now = time.time()
        payload = {
            "schema": "passby.event/1",
            "event_id": uuid.uuid4().hex,
            "type": type_,
            "subject": subject_id(keys.subject_key, crm),
            "ts": now,
            "first_seen": now - 10,
            "last_seen": now,
            "rssi": {"max": -58, "median": -64},
            "frames": 9,
            "dwell_s": 12.5,
        }
        handle_message(store, TOPIC, json.dumps(payload).encode(), now, c)


def test_a_failing_event_is_isolated(bridge, monkeypatch) -> None:
    store, keys = bridge
    fire(store, keys, ["C-1001", "C-1002", "C-1003"])
    bad = store.next_new_events(10)[1]["event_id"]
    real = worker_mod.decide

    def flaky(event, *args, **kw):  # type: ignore[no-untyped-def]
        if event.event_id == bad:
            raise RuntimeError("boom")
        return real(event, *args, **kw)

    monkeypatch.setattr(worker_mod, "decide", flaky)
    w = DecisionWorker(store, SandboxProvider(store))
    assert w.process_pending() == 2
    states = {r["event_id"]: r["state"] for r in event_rows(store)}
    assert states[bad] == "error" and list(states.values()).count("done") == 2
    assert w.counters.errors == 1 and w.counters.sends == 2 and w.counters.events == 2
    assert len(sandbox_rows(store)) == 2
    assert not [d for d in decision_rows(store) if d["event_id"] == bad]


def test_leave_events_are_done_without_a_decision(bridge) -> None:
    store, keys = bridge
    fire(store, keys, ["C-1001"], "leave")
    DecisionWorker(store, SandboxProvider(store)).process_pending()
    assert event_rows(store)[0]["state"] == "done"
    assert not decision_rows(store)


def test_event_of_reads_signal_and_dwell(bridge) -> None:
    store, keys = bridge
    fire(store, keys, ["C-1001"])
    ev = event_of(store.next_new_events(1)[0])
    assert (ev.rssi_max, ev.rssi_median, ev.dwell_s) == (-58, -64, 12.5)
    broken = event_of({**store.next_new_events(1)[0], "payload": "{not json"})
    assert broken.rssi_median is None and broken.dwell_s == 0.0


def test_engine_customer_sees_sensed_visits_before_the_event(bridge) -> None:
    store, keys = bridge
    subject = subject_id(keys.subject_key, "C-1001")
    for i, ts in enumerate((1000.0, 2000.0, 3000.0)):
        store.insert_event(f"v{i}", "main-st", "door-1", "visit", subject, ts, "{}", ts)
    row = store.engine_customer(subject, before=3000.0, since=1500.0)
    assert row is not None and row["visit_times"] == (2000.0,)
    assert row["sms"] == "active" and row["recognition"] == "active"
    assert store.engine_customer("ffffffffffffffff", 1.0, 0.0) is None


def test_worker_on_its_own_connection(bridge) -> None:
    store, keys = bridge
    fire(store, keys, ["C-1001", "C-1002"])
    w = DecisionWorker(store, SandboxProvider(store), own_connection=True)
    assert w.store is not store and w.store.path == store.path
    w.start()
    w.wake.set()
    deadline = time.monotonic() + 10
    while [e for e in event_rows(store) if e["state"] == "new"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    w.stop()
    assert len(sandbox_rows(store)) == 2
    assert BridgeStore(":memory:").reopen() is not None


def test_what_the_worker_hands_delivery_is_the_stored_row(bridge, monkeypatch) -> None:
    """The decision hands delivery the reserved row as it knows it, so delivery need not read
    it back: every column it hands must equal what reading the row gives."""
    store, keys = bridge
    fire(store, keys, ["C-1001", "C-1002"])
    w = DecisionWorker(store, SandboxProvider(store))
    handed: list[tuple[int, dict]] = []
    real = w.deliverer.deliver

    def keep(send_id: int, known: dict | None = None) -> SendResult:
        handed.append((send_id, dict(known or {})))
        return SendResult("queued")

    monkeypatch.setattr(w.deliverer, "deliver", keep)
    w.process_pending()
    assert len(handed) == 2
    for send_id, known in handed:
        row = store.delivery_job("sends", send_id)
        assert row is not None and row["state"] == "reserved" and row["idem_key"] is None
        assert {k: row[k] for k in known} == pytest.approx(known)
    # prepared from what was handed, the final text is the one preparing from the row gives
    for send_id, known in handed:
        assert real(send_id, known=known).status == "accepted"
    names = {st["id"]: st["name"] for st in stores_by_name(store)}
    sent = [
        {**s, "name": names[s["store_id"]]}
        for s in send_rows(store)
        if s["state"] == "accepted" and s["store_id"] in names
    ]
    assert len(sent) == 2 and all(r["name"] in r["body"] and r["language"] for r in sent)


def test_a_batch_stores_its_skips_at_once_and_isolates_one_that_fails(bridge, monkeypatch) -> None:
    store, keys = bridge
    fire(store, keys, ["C-1001", "C-1002", "C-1003"])
    # unknown subjects: three skips in one batch
    fire(store, keys, ["C-9991", "C-9992", "C-9993"])
    events = store.next_new_events(10)
    bad = events[4]["event_id"]
    calls: list[int] = []
    real = store.record_decisions

    def picky(rows):  # type: ignore[no-untyped-def]
        calls.append(len(rows))
        if any(r[0] == bad for r in rows):
            raise ValueError("this row cannot be stored")
        return real(rows)

    monkeypatch.setattr(store, "record_decisions", picky)
    w = DecisionWorker(store, SandboxProvider(store))
    assert w.process_pending() == 5
    # first the batch's 3 skips at once (failed, batch rolled back), then one by one
    assert calls[0] == 3 and calls[1:] == [1, 1, 1]
    states = {r["event_id"]: r["state"] for r in event_rows(store)}
    assert states[bad] == "error" and list(states.values()).count("done") == 5
    reasons = [r["reason"] for r in decision_rows(store) if r["outcome"] == "skip"]
    assert len(reasons) == 2 and set(reasons) == {"unknown_subject"}
    assert w.counters.errors == 1 and w.counters.sends == 3 and w.counters.skips == 2
    assert len(sandbox_rows(store)) == 3


def _store_row(i: int, name: str = "") -> dict[str, str]:
    return {
        "id": f"s{i}", "name": name or f"Store {i}", "timezone": "UTC", "country": "RU",
        "sender_name": "Shop", "send_start": "09:00", "send_end": "21:00", "site_key": "00" * 16,
    }  # fmt: skip


def test_store_facts_are_read_for_every_store_at_once(tmp_path: Path, monkeypatch) -> None:
    """One statement per ``cache_s`` for all the stores, not one per store: with 500 stores
    that was 100 queries a second per worker (issue 15: a second worker's extra CPU)."""
    store = BridgeStore(tmp_path / "bridge.db")
    for i in range(5):
        store.upsert_store(_store_row(i))
    reads: list[str] = []
    real = store.database.query

    def counting(statement: Any, params: Any = None) -> list[dict[str, Any]]:
        if "FROM stores" in str(statement):
            reads.append(str(statement))
        return real(statement, params)

    monkeypatch.setattr(store.database, "query", counting)
    w = DecisionWorker(store, SandboxProvider(store), cache_s=5.0)
    infos = [w.store_info(f"s{i}", 100.0 + i * 0.1) for i in range(5)]
    assert [i.id if i else None for i in infos] == [f"s{i}" for i in range(5)]
    assert len(reads) == 1
    assert w.store_info("unknown", 101.0) is None and len(reads) == 2  # read on its own
    assert w.store_info("unknown", 102.0) is None and len(reads) == 2  # and kept
    store.upsert_store(_store_row(5))  # added after the full read: read on its own
    assert (info := w.store_info("s5", 102.5)) is not None and info.id == "s5"
    assert len(reads) == 3
    store.upsert_store(_store_row(0, "Renamed"))
    cached, due = w.store_info("s0", 104.0), w.store_info("s0", 105.5)  # due: all read again
    assert cached is not None and cached.name == "Store 0"
    assert due is not None and due.name == "Renamed"
    assert len(reads) == 4
    store.close()
