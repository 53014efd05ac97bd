"""A send's outcome is the truth everywhere: its decision reads ``reserved`` until the provider
accepts the SMS, then what became of it (sent, delivered, undelivered, failed, expired, shed),
and ``explain``, the console, the metrics and the reports say the same."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from delivery_helpers import STORE_ID, add_customer, new_store

from cloud_bridge.cli.engine import _explain_event
from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import SandboxProvider, StatusResult
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.offers.worker import DecisionWorker
from cloud_bridge.reports.figures import Report, refresh_figures, reset_figures
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.report_figures import decision_day_rows
from cloud_bridge.storage.sends import send_row, send_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.app import overview
from cloud_bridge.web.auth import Principal
from cloud_bridge.web.console import reports as console
from cloud_bridge.web.console.metrics import StoreCollector

ADMIN = Principal(1, "ada", "admin", (), "session")


@pytest.fixture()
def store(db_location) -> BridgeStore:
    s = new_store(db_location)
    yield s
    s.close()


def _arrivals(store: BridgeStore, n: int, now: float) -> list[str]:
    ids = []
    for i in range(n):
        cid = add_customer(store, i, now)
        subject = f"{i + 1:016x}"
        store.db.execute("UPDATE customers SET subject=? WHERE id=?", [subject, cid])
        eid = uuid.uuid4().hex
        store.insert_event(eid, STORE_ID, "door-1", "arrive", subject, now, "{}", now)
        ids.append(eid)
    return ids


def _queueing(store: BridgeStore, queue_size: int = 1000) -> tuple[Deliverer, DecisionWorker]:
    """A running deliverer whose senders never take a turn: sends stay queued (reserved)."""
    provider = SandboxProvider(store)
    d = Deliverer(
        store, provider, DeliveryOptions(queue_size=queue_size), bucket=TokenBucket(1000, 10)
    )
    d._running = True
    return d, DecisionWorker(store, provider, deliverer=d)


def _reasons(store: BridgeStore) -> dict[str, str]:
    """event id -> what its decision reads."""
    return {r["event_id"]: r["reason"] for r in decision_rows(store) if r["outcome"] == "send"}


def test_a_decision_reads_reserved_until_the_provider_accepts(store: BridgeStore) -> None:
    now = time.time()
    (eid,) = _arrivals(store, 1, now)
    d, worker = _queueing(store)
    worker.process_pending(now=now)
    assert _reasons(store) == {eid: "reserved"}  # queued: the provider has not got it
    send = send_rows(store)[0]["id"]
    d._running = False
    d._take_turn("sends", send, None)
    assert _reasons(store) == {eid: "sent"}  # accepted by the provider
    d.on_receipt(
        StatusResult("delivered"), now + 5, key=store.delivery_job("sends", send)["idem_key"]
    )
    assert _reasons(store) == {eid: "delivered"}


def test_an_undelivered_or_failed_send_reads_so(store: BridgeStore) -> None:
    now = time.time()
    first, second = _arrivals(store, 2, now)
    d, worker = _queueing(store)
    worker.process_pending(now=now)
    event_of = {x["id"]: x["event_id"] for x in decision_rows(store)}
    ids = {
        event_of[s["decision_id"]]: s["id"]
        for s in send_rows(store)
        if s["decision_id"] in event_of
    }
    d._running = False
    d._take_turn("sends", ids[first], None)
    key = store.delivery_job("sends", ids[first])["idem_key"]
    d.on_receipt(StatusResult("undelivered", error="30003"), now + 5, key=key)
    store.record_consent(send_row(store, ids[second])["customer_id"], "sms", "revoked", now)  # type: ignore[index]
    d._take_turn("sends", ids[second], None)  # consent revoked while queued: not sent
    assert _reasons(store) == {first: "undelivered", second: "failed"}


def test_a_shed_send_reads_shed_everywhere(
    store: BridgeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """More sends than the queue holds: those shed read 'shed' in their decision, in explain,
    on the console, in the metrics and in the reports; none reads 'sent'."""
    now = time.time()
    events = _arrivals(store, 5, now)
    _, worker = _queueing(store, queue_size=2)
    worker.process_pending(now=now)
    reasons = _reasons(store)
    shed = [e for e in events if reasons[e] == "shed"]
    assert sorted(reasons.values()) == ["reserved", "reserved", "shed", "shed", "shed"], reasons
    shed_ids = {x["id"] for x in decision_rows(store) if x["reason"] == "shed"}
    assert {s["state"] for s in send_rows(store) if s["decision_id"] in shed_ids} == {"shed"}

    assert _explain_event(store, shed[0]) == 0
    out = capsys.readouterr().out
    assert "NOT SENT fav-15" in out and "(SMS shed)" in out and "shed: queue full" in out
    assert "SENT fav-15" not in out.replace("NOT SENT", "")

    shown = {d["event_id"]: d for d in overview(store)["decisions"]}
    assert shown[shed[0]]["reason"] == "shed"
    assert shown[shed[0]]["detail"].startswith("shed: queue full")
    assert "dropped the SMS unsent" in shown[shed[0]]["explanation"]
    assert overview(store)["counts"]["sent"] == 0

    samples = {
        s.labels["reason"]: s.value
        for m in StoreCollector(store).collect()
        if m.name == "passby_decisions"
        for s in m.samples
    }
    assert samples == {"shed": 3, "reserved": 2}

    refresh_figures(store, console.RETURN_DAYS)
    today = datetime.fromtimestamp(now, UTC).date()
    f = console.Filters(today, today)
    assert {r["outcome"]: r["n"] for r in console.send_outcomes(store, f, ADMIN)} == {
        "shed": 3, "reserved": 2,
    }  # fmt: skip
    assert console.funnel(store, f, ADMIN, Report(console.RETURN_DAYS))["sent"] == 0
    figures = decision_day_rows(store)
    reset_figures(store)
    refresh_figures(store, console.RETURN_DAYS)
    assert decision_day_rows(store) == figures  # consistent
