"""Under load the running worker and deliverer send every offer themselves: the orphan sweep
(a safety net for a dead process) adopts nothing, and no token of the provider's rate is spent
twice on one send; a send that cannot be sent is shed at once, and its decision says so."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
from delivery_helpers import STORE_ID, add_customer, new_store

from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.offers.worker import DecisionWorker
from cloud_bridge.storage.sends import sandbox_rows, send_rows
from cloud_bridge.storage.store import BridgeStore

ORPHAN_S = 2.0  # the sweep's patience, shortened so that a queue wait exceeds it in seconds


@pytest.fixture()
def store(db_location) -> BridgeStore:
    s = new_store(db_location)
    yield s
    s.close()


def _flood(store: BridgeStore, n: int, now: float) -> list[str]:
    """``n`` consenting customers arrive at once (events stored as the ingest stores them)."""
    ids = []
    for i in range(n):
        cid = add_customer(store, i, now)
        subject = f"{i + 1:016x}"
        store.db.execute("UPDATE customers SET subject=? WHERE id=?", [subject, cid])
        event_id = uuid.uuid4().hex
        store.insert_event(event_id, STORE_ID, "door-1", "arrive", subject, now, "{}", now)
        ids.append(event_id)
    return ids


def _running(store: BridgeStore, rate: float, queue_size: int) -> tuple[Deliverer, DecisionWorker]:
    provider = SandboxProvider(store)
    bucket = TokenBucket(rate, burst=1)
    d = Deliverer(
        store, provider,
        DeliveryOptions(senders=4, queue_size=queue_size, orphan_after_s=ORPHAN_S),
        bucket=bucket,
    )  # fmt: skip
    return d, DecisionWorker(store, provider, deliverer=d)


def _wait_final(store: BridgeStore, n: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = dict(Counter(r["state"] for r in send_rows(store)))
        if sum(counts.get(s, 0) for s in ("accepted", "failed", "expired", "shed")) >= n:
            return counts
        if time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_a_queue_longer_than_the_sweeps_patience_adopts_nothing(store: BridgeStore) -> None:
    """120 arrivals at once through a 40/s bucket: the last waits 3 s for its turn, longer
    than the sweep's patience; each is still sent by the sender that has it, once, with one
    token, in order."""
    n, rate = 120, 40.0
    now = time.time()
    _flood(store, n, now)
    d, worker = _running(store, rate, queue_size=1000)
    d.start()
    worker.start()
    worker.notify("")
    try:
        counts = _wait_final(store, n, timeout=n / rate + 20)
    finally:
        worker.stop()
        d.stop()
    assert counts == {"accepted": n}, counts
    assert d.counters.adopted == 0
    assert d.bucket.stats.taken == n  # one token per send: none spent on a copy
    sent = Counter(r["to_phone"] for r in sandbox_rows(store))
    assert len(sent) == n and set(sent.values()) == {1}
    waits = [
        r["accepted_at"] - r["ts"]
        for r in send_rows(store)
        if r["accepted_at"] is not None and r["accepted_at"] > 0
    ]
    assert max(waits) < n / rate + 2.0  # the queue's length, not the sweep's period


def test_sends_waiting_to_be_handed_over_are_not_adopted(
    store: BridgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed sends that the decision worker has not handed to delivery yet (its hand-off
    behind for longer than the sweep's patience) are the worker's: not orphans."""
    n = 20
    now = time.time()
    _flood(store, n, now)
    d, worker = _running(store, 1000.0, queue_size=1000)
    gate = threading.Event()
    real = worker._hand

    def slow_hand(send):  # type: ignore[no-untyped-def]
        gate.wait(10)
        real(send)

    monkeypatch.setattr(worker, "_hand", slow_hand)
    d.start()
    worker.start()
    worker.notify("")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            s["ts"] < time.time() - ORPHAN_S - 1.5 for s in send_rows(store)
        ):
            time.sleep(0.1)  # reserved, and overdue for the sweep
        time.sleep(1.2)  # at least one more sweep
        adopted_while_held = d.counters.adopted
        gate.set()
        counts = _wait_final(store, n, timeout=20)
    finally:
        gate.set()
        worker.stop()
        d.stop()
    assert adopted_while_held == 0 and d.counters.adopted == 0
    assert counts == {"accepted": n}, counts
    sent = Counter(r["to_phone"] for r in sandbox_rows(store))
    assert len(sent) == n and set(sent.values()) == {1}
