"""Bridge store + ingest + worker without a broker: dedupe, dead letters, atomic caps."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.offers.worker import DecisionWorker
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.customers import consent_rows, customer_rows
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.events import dead_letter_rows, event_rows
from cloud_bridge.storage.fleet import sensor_rows
from cloud_bridge.storage.sends import sandbox_rows, send_rows
from cloud_bridge.storage.store import BridgeStore
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


def event(keys: BridgeKeys, crm_id: str, type_: str = "arrive", ts: float | None = None) -> bytes:
    ts = ts or time.time()
    return json.dumps(
        {
            "schema": "passby.event/1",
            "event_id": uuid.uuid4().hex,
            "type": type_,
            "subject": subject_id(keys.subject_key, crm_id),
            "ts": ts,
            "first_seen": ts - 10,
            "last_seen": ts,
            "rssi": {"max": -60, "median": -65},
            "frames": 9,
            "dwell_s": 0,
        }
    ).encode()


def test_seed_is_idempotent(bridge, tmp_path: Path) -> None:
    store, keys = bridge
    before = len(consent_rows(store))
    seed(store, keys, load_tenant(TENANT), time.time())
    assert len(consent_rows(store)) == before
    assert len(customer_rows(store)) == 4


def test_duplicate_event_dropped(bridge) -> None:
    store, keys = bridge
    c = IngestCounters()
    payload = event(keys, "C-1001")
    assert handle_message(store, TOPIC, payload, time.time(), c) == "event"
    assert handle_message(store, TOPIC, payload, time.time(), c) == "duplicate"
    assert (c.events, c.duplicates) == (1, 1)


@pytest.mark.parametrize(
    "topic,payload,needle",
    [
        (TOPIC, b"{not json", "invalid events message"),
        (TOPIC, b"\xff\xfe", "not UTF-8"),
        (TOPIC, json.dumps({"schema": "passby.event/1"}).encode(), "event_id"),
        ("passby/v1/main-st/door-1/bogus", b"{}", "unexpected topic leaf"),
        ("elsewhere/x", b"{}", "not under passby/v1"),
    ],
)
def test_bad_messages_dead_lettered_with_reason(
    bridge, topic: str, payload: bytes, needle: str
) -> None:
    store, _ = bridge
    c = IngestCounters()
    assert handle_message(store, topic, payload, time.time(), c) == "dead"
    row = dead_letter_rows(store)[0]
    assert needle in row["reason"]
    assert row["payload_bytes"] == len(payload)
    assert "payload" not in row  # only a hash of the bad payload is kept


def test_consenting_customer_gets_one_sms_per_campaign_window(bridge) -> None:
    store, keys = bridge
    worker = DecisionWorker(store, SandboxProvider(store))
    c = IngestCounters()
    for _ in range(3):
        handle_message(store, TOPIC, event(keys, "C-1001"), time.time(), c)
    handle_message(store, TOPIC, event(keys, "C-1004"), time.time(), c)  # Dmitri: no consent
    assert worker.process_pending() == 4
    msgs = sandbox_rows(store)
    assert len(msgs) == 1
    assert msgs[0]["to_phone"] == "+79161234501"
    assert msgs[0]["body"].startswith("Anna, 15% off espresso beans")
    reasons = [r["reason"] for r in decision_rows(store)]
    assert reasons.count("sent") == 1
    assert reasons.count("campaign_cap") == 2
    assert "no_sms_consent" in reasons


def test_concurrent_events_never_exceed_cap(bridge, tmp_path: Path) -> None:
    """8 threads with their own connections race for one customer: exactly one send."""
    store, keys = bridge
    c = IngestCounters()
    for _ in range(16):
        handle_message(store, TOPIC, event(keys, "C-1002"), time.time(), c)
    rows = store.next_new_events(100)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(chunk: list[dict]) -> None:
        own = BridgeStore(store.location)
        w = DecisionWorker(own, SandboxProvider(own))
        barrier.wait()
        try:
            for row in chunk:
                w.process(row, time.time())
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(rows[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(sandbox_rows(store)) == 1
    assert len(send_rows(store)) == 1


def test_roster_only_has_consenting_devices(bridge) -> None:
    store, _ = bridge
    macs = {m for m, _ in store.roster_entries(time.time())}
    assert "3a:e0:91:6d:2f:55" not in macs  # Dmitri
    assert {"da:a1:19:3c:4e:01", "f2:5c:d8:01:77:a3", "ae:44:02:9b:10:c4"} <= macs


def test_incompatible_protocol_marks_sensor(bridge) -> None:
    store, _ = bridge
    c = IngestCounters()
    status = json.dumps(
        {"state": "online", "agent_version": "9.0", "protocol": 2, "ts": time.time()}
    )
    assert (
        handle_message(store, "passby/v1/main-st/door-9/status", status.encode(), time.time(), c)
        == "status"
    )
    row = [s for s in sensor_rows(store) if s["sensor_id"] == "door-9"][0]
    assert row["state"] == "incompatible"
    _, keys = bridge
    ev = event(keys, "C-1001")
    assert handle_message(store, "passby/v1/main-st/door-9/events", ev, time.time(), c) == "dead"
    assert "speaks protocol v2" in dead_letter_rows(store)[0]["reason"]
    status = json.dumps(
        {"state": "online", "agent_version": "0.1.0", "protocol": 1, "ts": time.time()}
    )
    handle_message(store, "passby/v1/main-st/door-9/status", status.encode(), time.time(), c)
    assert handle_message(store, "passby/v1/main-st/door-9/events", ev, time.time(), c) == "event"


def test_last_seen_written_together_once_a_second(bridge) -> None:
    """Events mark their sensor seen; the marks are written in one statement at most once a
    second (and by the flush that follows the last event), each sensor's latest time kept."""
    from cloud_bridge.ingest.consumer import flush_seen

    store, keys = bridge
    c = IngestCounters()
    t0 = 1_700_000_000.0
    sensors = ["door-a", "door-b", "door-c"]
    for i, s in enumerate(sensors):
        topic = f"passby/v1/main-st/{s}/events"
        ev = event(keys, "C-1001", ts=t0 + i * 0.1)
        assert handle_message(store, topic, ev, t0 + i * 0.1, c) == "event"
    ev = event(keys, "C-1002", ts=t0 + 0.5)
    assert handle_message(store, "passby/v1/main-st/door-b/events", ev, t0 + 0.5, c) == "event"

    def seen() -> dict[str, float | None]:
        rows = [s for s in sensor_rows(store) if s["sensor_id"] in ("door-a", "door-b", "door-c")]
        return {r["sensor_id"]: r["last_seen"] for r in rows}

    assert seen() == {"door-a": t0}  # the first event flushed at once, the rest wait
    flush_seen(store, c, t0 + 1.0)
    assert seen() == {"door-a": t0, "door-b": t0 + 0.5, "door-c": t0 + 0.2}
    # A second later the next event flushes by itself.
    assert (
        handle_message(
            store,
            "passby/v1/main-st/door-c/events",
            event(keys, "C-1001", ts=t0 + 2.5),
            t0 + 2.5,
            c,
        )
        == "event"
    )
    assert seen()["door-c"] == t0 + 2.5


def test_sensors_seen_from_two_workers_only_moves_forward(bridge) -> None:
    """Two workers flush the same sensors, in any order and with repeats: each sensor keeps
    its latest time (a late flush of older marks does not put them back)."""
    store, _ = bridge
    other = store.reopen()
    try:
        store.sensors_seen([("main-st", "door-z", 200.0), ("main-st", "door-y", 50.0)])
        other.sensors_seen(
            [("main-st", "door-y", 40.0), ("main-st", "door-z", 100.0), ("main-st", "door-y", 60.0)]
        )
    finally:
        other.close()
    rows = [
        s
        for s in sensor_rows(store)
        if len(s["sensor_id"]) == 6 and s["sensor_id"].startswith("door-")
    ]
    assert {r["sensor_id"]: r["last_seen"] for r in rows} == {"door-z": 200.0, "door-y": 60.0}


def test_a_batch_stores_its_events_together_and_keeps_order(bridge) -> None:
    """Messages stored as one batch: a copy in the same batch or an earlier one is a
    duplicate, a bad message is a dead letter, the good ones are stored, results in order."""
    from cloud_bridge.ingest.consumer import handle_batch

    store, keys = bridge
    c = IngestCounters()
    first, second = event(keys, "C-1001"), event(keys, "C-1002")
    handle_message(store, TOPIC, first, time.time(), c)
    batch = [
        (TOPIC, second),
        (TOPIC, b"{not json"),
        (TOPIC, second),  # the same event twice in one batch
        (TOPIC, first),  # seen in an earlier batch
        ("passby/v1/main-st/door-1/bogus", second),  # no such topic leaf
    ]
    kinds = [k for k, _ in handle_batch(store, batch, time.time(), c)]
    assert kinds == ["event", "dead", "duplicate", "duplicate", "dead"]
    assert (c.events, c.duplicates, c.dead_letters) == (2, 2, 2)
    ids = {r["event_id"] for r in event_rows(store)}
    assert ids == {json.loads(first)["event_id"], json.loads(second)["event_id"]}
