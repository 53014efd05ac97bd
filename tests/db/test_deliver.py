"""The send outbox's state machine with a scripted provider: at most one SMS per intent."""

from __future__ import annotations

import time

import pytest
from delivery_helpers import BRAND, add_customer, new_store, reserve, states
from scripted_provider import Scripted, deliverer

from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import StatusResult
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.storage.sends import optout_token, send_row
from cloud_bridge.storage.store import BridgeStore


@pytest.fixture()
def store(db_location) -> BridgeStore:
    s = new_store(db_location)
    yield s
    s.close()


def row(store: BridgeStore, send_id: int) -> dict:
    return send_row(store, send_id)


def test_accepted_send_is_final_text_with_key_cost_and_opt_out_link(store: BridgeStore) -> None:
    now = time.time()
    cid = add_customer(store, 1, now)
    sid = reserve(store, cid, now)
    p = Scripted()
    result = deliverer(store, p, prices={"RU": 0.04}, currency="USD").deliver(sid, "x", "y", "z")
    assert result.status == "accepted"
    r = row(store, sid)
    assert r["state"] == "accepted" and r["provider_id"] == "P1" and r["attempts"] == 1
    assert r["idem_key"].startswith(f"pb{sid}-")
    assert r["encoding"] == "GSM-7" and r["parts"] == 1 and r["cost"] == pytest.approx(0.04)
    assert r["expires_at"] == pytest.approx(now + 600)
    link = optout_token(store, sid)
    assert (
        r["body"]
        == f"Name{cid}, 15% off espresso beans today at {BRAND}. Opt out: http://127.0.0.1:8080/o/{link}"
    )
    msg = p.calls[0]
    assert (msg.key, msg.to, msg.sender, msg.body) == (
        r["idem_key"],
        "+79160000001",
        "MainStCafe",
        r["body"],
    )
    assert 590 <= (msg.validity_s or 0) <= 600
    log = [e["state"] for e in store.send_log("sends", sid)]
    assert log == ["reserved", "sending", "accepted"]


def test_retry_when_surely_not_accepted_then_accepted(store: BridgeStore) -> None:
    now = time.time()
    sid = reserve(store, add_customer(store, 1, now), now)
    p = Scripted(["retry", "retry"])
    d = deliverer(store, p)
    assert d.deliver(sid).status == "retry"
    assert row(store, sid)["state"] == "reserved" and row(store, sid)["next_at"] is not None
    d.pump(time.time() + 1)
    d.pump(time.time() + 2)
    assert row(store, sid)["state"] == "accepted" and row(store, sid)["attempts"] == 3
    assert p.sent_per_key() == {row(store, sid)["idem_key"]: 1}


def test_read_timeout_is_reconciled_never_resent(store: BridgeStore) -> None:
    now = time.time()
    sid = reserve(store, add_customer(store, 1, now), now)
    p = Scripted(["timeout_taken"])
    d = deliverer(store, p)
    assert d.deliver(sid).status == "unknown"
    assert row(store, sid)["state"] == "unknown"
    d.sweep(time.time() + 1)
    r = row(store, sid)
    assert r["state"] == "accepted" and r["provider_id"] == "P1"
    assert len(p.calls) == 1 and p.status_calls == 1  # asked, not resent


def test_lost_request_is_sent_again_once_the_provider_says_it_has_none(store: BridgeStore) -> None:
    now = time.time()
    sid = reserve(store, add_customer(store, 1, now), now)
    p = Scripted(["timeout_lost"])
    d = deliverer(store, p)
    d.deliver(sid)
    d.sweep(time.time() + 1)  # not found -> reserved -> sent (sync mode)
    r = row(store, sid)
    assert r["state"] == "accepted" and r["attempts"] == 2
    assert p.sent_per_key() == {r["idem_key"]: 1}
    details = [e["detail"] for e in store.send_log("sends", sid)]
    assert any("no such message" in d for d in details)


def test_expired_intent_is_never_sent(store: BridgeStore) -> None:
    now = time.time()
    sid = reserve(store, add_customer(store, 1, now), now, event_ts=now - 601)
    p = Scripted()
    result = deliverer(store, p).deliver(sid)
    assert result.status == "failed" and not p.calls
    r = row(store, sid)
    assert r["state"] == "expired" and "expired" in r["error"]


def test_retries_stop_at_expiry_with_the_reason(store: BridgeStore) -> None:
    now = time.time()
    sid = reserve(store, add_customer(store, 1, now), now, event_ts=now - 599)
    p = Scripted(["retry"])
    d = deliverer(store, p, retry_base_s=5.0)
    d.deliver(sid)
    r = row(store, sid)
    # Retry-After 0 but the backoff floor is the retry: the offer has ~1 s left.
    assert r["state"] in ("expired", "reserved")
    d.pump(now + 10)
    r = row(store, sid)
    assert r["state"] == "expired" and len(p.calls) == 1


def test_consent_revoked_while_queued_stops_the_send(store: BridgeStore) -> None:
    now = time.time()
    cid = add_customer(store, 1, now)
    sid = reserve(store, cid, now)
    p = Scripted(["retry"])
    d = deliverer(store, p)
    d.deliver(sid)  # first attempt refused (503), a retry is scheduled
    store.record_consent(cid, "sms", "revoked", time.time(), proof={"source": "test"})
    d.pump(time.time() + 1)
    r = row(store, sid)
    assert r["state"] == "failed" and "consent revoked" in r["error"]
    assert len(p.calls) == 1


def test_provider_refusals_revoke_consent_or_flag_the_number(store: BridgeStore) -> None:
    now = time.time()
    a, b = add_customer(store, 1, now), add_customer(store, 2, now)
    p = Scripted(["opt_out", "invalid"])
    d = deliverer(store, p)
    d.deliver(reserve(store, a, now))
    assert store.latest_consents(a)["sms"] == "revoked"
    d.deliver(reserve(store, b, now))
    assert store.number_flag(b)["code"] == "21211"
    # A later offer to the flagged number is not attempted.
    store.db.execute("UPDATE sends SET state='failed'")  # free the cap for the test
    sid = reserve(store, b, now + 1)
    d.deliver(sid)
    assert row(store, sid)["state"] == "failed" and "flagged" in row(store, sid)["error"]
    assert len(p.calls) == 2


def test_adapter_crash_leaves_no_row_sending(store: BridgeStore) -> None:
    now = time.time()
    sid = reserve(store, add_customer(store, 1, now), now)
    d = deliverer(store, Scripted(["crash"]))
    assert d.deliver(sid).status == "unknown"
    assert row(store, sid)["state"] == "unknown"
    d.sweep(time.time() + 1)
    assert row(store, sid)["state"] == "accepted"


def test_text_over_max_parts_is_refused(store: BridgeStore) -> None:
    now = time.time()
    cid = add_customer(store, 1, now)
    sid = reserve(store, cid, now, body="Анна, " + "очень длинное предложение " * 6)
    p = Scripted()
    result = deliverer(store, p).deliver(sid)
    assert result.status == "failed" and "SMS parts" in (result.error or "")
    assert not p.calls and row(store, sid)["parts"] >= 3


def test_recovery_after_a_crash_mid_send(store: BridgeStore) -> None:
    """kill -9 between 'sending' and the answer: the lease runs out, the row becomes unknown
    and is reconciled; reserved rows are prepared and sent. Nothing twice, nothing left."""
    now = time.time()
    p = Scripted()
    ids = [reserve(store, add_customer(store, i, now), now) for i in range(4)]
    d1 = deliverer(store, p, lease_s=5.0)
    d1.prepare(ids[0], now)
    d1.prepare(ids[1], now)
    # ids[0]: the crash came after the provider took it; ids[1]: before the request left.
    for sid in ids[:2]:
        assert store.claim_send("sends", sid, now, now + 5.0) == 1
    p.taken[row(store, ids[0])["idem_key"]] = "P0"
    p.takes[row(store, ids[0])["idem_key"]] += 1
    # ids[2]: reserved and prepared; ids[3]: reserved, never prepared.
    d1.prepare(ids[2], now)
    d2 = deliverer(store, p, lease_s=5.0)
    counts = d2.recover(now + 1)  # leases still valid: not touched yet
    assert counts["unknown"] == 0 and counts["requeued"] == 2
    assert row(store, ids[0])["state"] == "sending"
    counts = d2.recover(now + 6)
    assert counts["unknown"] == 2
    d2.sweep(now + 7)
    assert states(store) == {"accepted": 4}
    assert sum(p.sent_per_key().values()) == 4 and max(p.sent_per_key().values()) == 1
    assert row(store, ids[0])["provider_id"] == "P0"


def test_receipts_move_forward_and_correct_a_scheduled_retry(store: BridgeStore) -> None:
    now = time.time()
    sid = reserve(store, add_customer(store, 1, now), now)
    p = Scripted(["retry"])
    d = deliverer(store, p, retry_base_s=60.0)
    d.deliver(sid)
    key = row(store, sid)["idem_key"]
    # The provider did take it after all (it says so in a receipt): no retry may follow.
    assert d.on_receipt(StatusResult("accepted", provider_id="P9"), now, key=key)
    assert row(store, sid)["state"] == "accepted"
    d.pump(now + 120)
    assert len(p.calls) == 1
    assert d.on_receipt(StatusResult("delivered", provider_id="P9"), now + 1, provider_id="P9")
    assert row(store, sid)["state"] == "delivered"
    assert not d.on_receipt(StatusResult("accepted", provider_id="P9"), now + 2, provider_id="P9")
    assert row(store, sid)["state"] == "delivered"  # never back
    assert not d.on_receipt(StatusResult("delivered"), now, key="unknown-key")


def test_shed_when_the_offer_would_expire_before_its_turn(store: BridgeStore) -> None:
    now = time.time()
    p = Scripted()
    d = Deliverer(
        store,
        p,
        DeliveryOptions(queue_size=10, senders=1),
        bucket=TokenBucket(rate=0.1, burst=1),  # one message every 10 s
    )
    d._running = True  # queue without sender threads: nothing leaves the queue
    results = []
    for i in range(6):
        sid = reserve(store, add_customer(store, i, now), now, event_ts=now - 575)  # 25 s left
        results.append((sid, d.deliver(sid)))
    queued = [sid for sid, r in results if r.status == "queued"]
    shed = [(sid, r) for sid, r in results if r.status != "queued"]
    assert len(queued) == 3  # waits 0, 10 and 20 s: all before the offers expire
    for sid, r in shed:
        assert r.error and r.error.startswith("shed: would wait")
        assert row(store, sid)["state"] == "shed"
    d._running = False
    assert not p.calls


def test_an_offer_ending_before_the_next_free_slot_expires_not_shed(store: BridgeStore) -> None:
    """With nobody ahead, an offer whose life ends before the provider's next free slot ran out
    of time (a retry near its end): that is `expired`, not capacity shedding."""
    now = time.time()
    p = Scripted()
    bucket = TokenBucket(rate=0.1, burst=1)  # one message every 10 s
    assert bucket.reserve(bucket.clock()) is not None  # the slot is used: the next is 10 s away
    d = Deliverer(store, p, DeliveryOptions(queue_size=10, senders=1), bucket=bucket)
    d._running = True
    sid = reserve(store, add_customer(store, 1, now), now, event_ts=now - 595)  # 5 s left
    r = d.deliver(sid)
    assert r.status == "failed" and r.error and r.error.startswith("expired:")
    assert row(store, sid)["state"] == "expired"
    assert d.counters.expired == 1 and d.counters.shed == 0
    d._running = False
    assert not p.calls


def test_queue_full_is_shed_with_a_reason(store: BridgeStore) -> None:
    now = time.time()
    d = Deliverer(store, Scripted(), DeliveryOptions(queue_size=2), bucket=TokenBucket(1000, 1))
    d._running = True
    out = [d.deliver(reserve(store, add_customer(store, i, now), now)) for i in range(3)]
    assert [r.status for r in out] == ["queued", "queued", "failed"]
    assert out[2].error == "shed: queue full (2 waiting)"
    assert states(store) == {"reserved": 2, "shed": 1}
    d._running = False


def test_running_deliverer_sends_everything_once(store: BridgeStore) -> None:
    now = time.time()
    p = Scripted(["retry", "timeout_taken", "timeout_lost", "accepted"] * 5)
    d = Deliverer(
        store, p, DeliveryOptions(senders=4, reconcile_after_s=0.2, retry_base_s=0.05),
        bucket=TokenBucket(rate=200, burst=5),
    )  # fmt: skip
    d.start()
    try:
        ids = [reserve(store, add_customer(store, i, now), now) for i in range(40)]
        for sid in ids:
            assert d.deliver(sid).status == "queued"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and states(store).get("accepted", 0) < 40:
            time.sleep(0.05)
    finally:
        d.stop()
    assert states(store) == {"accepted": 40}
    assert max(p.sent_per_key().values()) == 1 and len(p.sent_per_key()) == 40


def test_due_rows_come_unscheduled_first_then_by_next_at(store: BridgeStore) -> None:
    """The sweep's order is the engine's: NULL next_at (due now) first, as SQLite sorts NULLs
    (PostgreSQL would put them last without the explicit order)."""
    now = time.time()
    ids = [reserve(store, add_customer(store, i, now), now) for i in range(4)]
    for sid, next_at in zip(ids, (now - 10, None, now - 20, None), strict=True):
        store.db.execute("UPDATE sends SET state='unknown', next_at=? WHERE id=?", [next_at, sid])
    due = store.sends_in_state("sends", "unknown", due_by=now)
    assert [r["id"] for r in due] == [ids[1], ids[3], ids[2], ids[0]]
    assert [r["id"] for r in store.sends_in_state("sends", "unknown", due_by=now, limit=1)] == [
        ids[1]
    ]


def test_orphaned_reserved_rows_are_adopted(store: BridgeStore) -> None:
    """A row reserved by a process that died for good (not our queue, not our timers) is
    picked up by the running deliverer's sweep once it is overdue."""
    now = time.time()
    p = Scripted()
    d = Deliverer(store, p, DeliveryOptions(senders=1), bucket=TokenBucket(1000, 10))
    d.start()
    try:
        sid = reserve(store, add_customer(store, 1, now), now)
        Deliverer(store, p).prepare(sid, now)  # the other process got this far, then died
        d.sweep(now + 5)
        assert row(store, sid)["state"] == "reserved"  # not overdue yet: maybe someone has it
        d.sweep(now + 31)
        deadline = time.monotonic() + 5
        while row(store, sid)["state"] != "accepted" and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        d.stop()
    assert row(store, sid)["state"] == "accepted" and len(p.calls) == 1


def _adoptions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "adopted" in r.getMessage()]


def test_a_send_waiting_for_its_token_is_not_adopted(
    store: BridgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Under load a send waits in the queue longer than the orphan time, then in a sender's
    hands for its token: it is handled, so the sweep must leave it alone (adopting it queued
    it a second time, and the copy spent a token of the provider's rate for nothing)."""
    caplog.set_level("INFO", logger="cloud_bridge.delivery.outbox")
    now = time.time()
    p = Scripted()
    d = Deliverer(
        store, p, DeliveryOptions(senders=1, orphan_after_s=30.0),
        bucket=TokenBucket(rate=1.0, burst=1),  # one message a second
    )  # fmt: skip
    d.start()
    try:
        ids = [reserve(store, add_customer(store, i, now), now) for i in range(3)]
        for sid in ids:
            assert d.deliver(sid).status == "queued"
        deadline = time.monotonic() + 5
        while d.queue_depth() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the last one has left the queue: its sender waits for its token
        assert d.queue_depth() == 0
        d.sweep(time.time() + 31)  # each has waited "31 s" by now
        assert d.queue_depth() == 0, "a send in a sender's hands was queued again"
        deadline = time.monotonic() + 10
        while states(store).get("accepted", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        d.stop()
    assert states(store) == {"accepted": 3}
    assert d.counters.adopted == 0 and not _adoptions(caplog)
    assert sorted(p.sent_per_key().values()) == [1, 1, 1]


def test_a_send_held_by_another_live_process_is_not_adopted(db_location) -> None:
    """Two bridge processes on one database: a send waiting in one's queue is held (its lease
    renewed) and the other's sweep leaves it alone; once its holder stops renewing (the
    process died), the other adopts it and sends it once."""
    one, two = new_store(db_location), BridgeStore(db_location, data_key=b"\x01" * 32)
    try:
        now = time.time()
        p1, p2 = Scripted(), Scripted()
        opts = DeliveryOptions(senders=1, orphan_after_s=30.0)
        holder = Deliverer(one, p1, opts, bucket=TokenBucket(1000, 10))
        holder._running = True  # queued without sender threads: it waits its turn
        sid = reserve(one, add_customer(one, 1, now), now)
        assert holder.deliver(sid).status == "queued"
        holder.pump(now + 20)  # the holder is alive: its lease is renewed
        other = Deliverer(two, p2, opts, bucket=TokenBucket(1000, 10))
        other._running = True
        other.sweep(now + 31)
        assert other.queue_depth() == 0 and other.counters.adopted == 0
        other.sweep(now + 20 + 31)  # no renewal since: the holder is gone
        assert other.queue_depth() == 1 and other.counters.adopted == 1
        other._running = holder._running = False
        other._take_turn("sends", sid, None)
    finally:
        one.close()
        two.close()
    assert len(p2.calls) == 1 and not p1.calls
