"""Properties (hypothesis) over random event streams, campaigns and consent changes:
never a send without active marketing AND recognition consent, never above any cap, never
outside sending hours, never to an erased customer.

Two levels: the pure ``decide`` on random inputs, and the whole worker (store, atomic
reservation, sandbox delivery) on random streams, checked against a model of the consent
ledger kept by the test itself (erasure deletes the real one)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_bridge.delivery.outbox import Deliverer
from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.offers.campaigns import save_campaigns, validate_campaigns
from cloud_bridge.offers.decide import (
    Campaign,
    Counters,
    Customer,
    Event,
    History,
    Policy,
    Schedule,
    Send,
    StoreInfo,
    Variant,
    decide,
    within_hours,
)
from cloud_bridge.offers.worker import DecisionWorker
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.sends import send_rows
from cloud_bridge.storage.store import CAPPED_STATES, BridgeStore

DAY = 86400.0
T0 = 1_773_000_000.0  # March 2026: the US switches to DST inside the streams
ZONES = [
    ("Europe/Moscow", "RU"),
    ("Asia/Yerevan", "AM"),
    ("America/New_York", "US"),
]
HOURS = [("09:00", "21:00"), ("00:00", "24:00"), ("07:00", "23:00"), ("12:00", "13:00")]

stores = st.builds(
    lambda zone, hours, budget: StoreInfo(
        "s1", "Shop", zone[0], zone[1], "Shop", hours[0], hours[1], budget
    ),
    st.sampled_from(ZONES),
    st.sampled_from(HOURS),
    st.one_of(st.none(), st.integers(0, 5)),
)
campaign_lists = st.lists(
    st.builds(
        lambda i, trig, status, cap, days, hold, budget, prio, sched: Campaign(
            f"c{i}",
            f"C{i}",
            trig,
            "x",
            status=status,
            cap_count=cap,
            cap_days=days,
            priority=prio,
            variants=(Variant("A", "hi {{ first_name }}"), Variant("B", "yo")),
            holdout_pct=hold,
            budget=budget,
            schedule=sched,
        ),
        st.integers(0, 9),
        st.sampled_from(["arrive", "visit"]),
        st.sampled_from(["active", "active", "paused", "draft"]),
        st.integers(1, 3),
        st.integers(1, 30),
        st.sampled_from([0.0, 0.0, 10.0, 50.0]),
        st.one_of(st.none(), st.integers(0, 10)),
        st.integers(-2, 2),
        st.one_of(
            st.just(Schedule()),
            st.builds(Schedule, hours=st.sampled_from([("10:00", "11:00"), ("18:00", "24:00")])),
        ),
    ),
    max_size=5,
    unique_by=lambda c: c.id,
)
customers = st.builds(
    lambda sms, rec, erased, visits: Customer(
        1, "C-1", "Anna", "+10000000001", "beans", sms, rec, visits=visits, erased=erased
    ),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 9)),
)


@settings(max_examples=400, deadline=None)
@given(
    store=stores,
    customer=customers,
    campaigns=campaign_lists,
    sends=st.lists(
        st.tuples(st.sampled_from([f"c{i}" for i in range(10)]), st.floats(0, 60 * DAY))
    ),
    now=st.floats(T0, T0 + 30 * DAY),
    trigger=st.sampled_from(["arrive", "visit"]),
    store_today=st.integers(0, 6),
    budget_used=st.integers(0, 12),
)
def test_pure_decide_never_breaks_a_rule(
    store: StoreInfo,
    customer: Customer,
    campaigns: list[Campaign],
    sends: list[tuple[str, float]],
    now: float,
    trigger: str,
    store_today: int,
    budget_used: int,
) -> None:
    history = History(sends=tuple((cid, now - age) for cid, age in sends))
    counters = Counters({c.id: budget_used for c in campaigns}, store_today)
    policy = Policy()
    event = Event("e", trigger, "s1", "0123456789abcdef", now - 1)
    out = decide(event, store, customer, campaigns, history, now, policy, counters)
    if not isinstance(out, Send):
        return
    assert customer.consent_sms and customer.consent_recognition and not customer.erased
    assert within_hours(store, now)
    c = out.campaign
    assert c.status == "active" and c.trigger == trigger
    assert sum(1 for cid, ts in history.sends if cid == c.id and ts >= now - c.cap_days * DAY) < (
        c.cap_count
    )
    assert sum(1 for _, ts in history.sends if ts >= now - policy.overall_days * DAY) < (
        policy.overall_cap
    )
    assert c.budget is None or budget_used < c.budget
    assert store.daily_budget is None or store_today < store.daily_budget


# -- the whole worker on random streams -----------------------------------------------------


@dataclass
class Model:
    consents: dict[int, list[tuple[float, str, str]]] = field(default_factory=dict)
    erased: dict[int, float] = field(default_factory=dict)

    def active(self, cid: int, kind: str, at: float) -> bool:
        status = None
        for ts, k, s in self.consents.get(cid, []):
            if k == kind and ts <= at:
                status = s
        return status == "active"


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("event"),
            st.integers(0, 3),
            st.sampled_from(["arrive", "arrive", "visit", "leave"]),
            st.sampled_from([0, 30, 3600, 4 * 3600, 11 * 3600, DAY, 3 * DAY, 12 * DAY]),
        ),
        st.tuples(
            st.just("consent"),
            st.integers(0, 3),
            st.sampled_from(["sms", "recognition"]),
            st.sampled_from(["active", "revoked"]),
        ),
        st.tuples(st.just("erase"), st.integers(0, 3), st.just(""), st.just(0)),
    ),
    min_size=5,
    max_size=40,
)
file_campaigns = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(["a", "b", "c", "d"]),
            "name": st.just("N"),
            "status": st.sampled_from(["active", "active", "paused"]),
            "trigger": st.sampled_from(["arrive", "visit"]),
            "holdout_pct": st.sampled_from([0, 10, 50]),
            "priority": st.integers(-2, 2),
            "caps": st.fixed_dictionaries(
                {"count": st.integers(1, 2), "days": st.sampled_from([1, 7, 30])}
            ),
            "variants": st.just(
                [{"id": "A", "template": "hi {{ first_name }}"}, {"id": "B", "template": "yo"}]
            ),
        }
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda c: c["id"],
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    zone=st.sampled_from(ZONES),
    hours=st.sampled_from(HOURS),
    overall=st.integers(1, 4),
    camps=file_campaigns,
    stream=ops,
)
def test_worker_streams_never_break_a_rule(
    zone: tuple[str, str],
    hours: tuple[str, str],
    overall: int,
    camps: list[dict],
    stream: list[tuple],
) -> None:
    store = BridgeStore(":memory:")
    try:
        _run_stream(store, zone, hours, overall, camps, stream)
    finally:
        store.close()


def _run_stream(
    store: BridgeStore,
    zone: tuple[str, str],
    hours: tuple[str, str],
    overall: int,
    camps: list[dict],
    stream: list[tuple],
) -> None:
    info = StoreInfo("s1", "Shop", zone[0], zone[1], "Shop", hours[0], hours[1])
    store.upsert_store(
        {
            "id": "s1",
            "name": "Shop",
            "timezone": zone[0],
            "country": zone[1],
            "sender_name": "Shop",
            "send_start": hours[0],
            "send_end": hours[1],
            "site_key": "00" * 16,
        }
    )
    save_campaigns(store, validate_campaigns(camps, store), "test", T0)
    model = Model()
    ids, subjects = [], []
    for i in range(4):
        subject = f"{i + 1:016x}"
        cid = store.upsert_customer(f"C-{i}", subject, f"N{i}", f"+1202555{i:04d}", "tea", T0)
        ids.append(cid)
        subjects.append(subject)
        for kind in ("sms", "recognition"):
            store.record_consent(cid, kind, "active", T0)
            model.consents.setdefault(cid, []).append((T0, kind, "active"))
    policy = Policy(overall_cap=overall)
    provider = SandboxProvider(store)
    clock = [T0]  # the deliverer lives in the stream's time too (offers expire)
    bucket = TokenBucket(1e9, 1_000_000)  # no pacing in the simulation
    deliverer = Deliverer(store, provider, bucket=bucket, clock=lambda: clock[0])
    worker = DecisionWorker(store, provider, policy, deliverer)
    now = T0
    for n, (op, who, arg, step) in enumerate(stream):
        cid = ids[who]
        if op == "event":
            now += step
            clock[0] = now + 0.5  # decided half a second later; other changes come at +1
            store.insert_event(f"ev{n}", "s1", "d1", arg, subjects[who], now, "{}", now)
            worker.process_pending(now + 0.5)
        elif op == "consent" and cid not in model.erased:
            now += 1
            store.record_consent(cid, arg, step, now)
            model.consents[cid].append((now, arg, step))
        elif op == "consent":
            pass
        elif cid not in model.erased:
            now += 1
            store.erase_customer(cid, now)
            model.erased[cid] = now
    sends = send_rows(store)
    assert all(x["state"] in ("accepted", "failed") for x in sends), sends
    reached = [x for x in sends if x["state"] in CAPPED_STATES]  # failed ones do not count
    caps = {c["id"]: (c["caps"]["count"], c["caps"]["days"]) for c in camps}
    for s in sends:
        cid, ts = s["customer_id"], s["ts"]
        assert model.active(cid, "sms", ts) and model.active(cid, "recognition", ts), s
        assert cid not in model.erased or ts < model.erased[cid], s
        assert within_hours(info, ts), s
        count, days = caps[s["campaign_id"]]
        same = [
            x
            for x in reached
            if x["customer_id"] == cid
            and x["campaign_id"] == s["campaign_id"]
            and ts - days * DAY <= x["ts"] <= ts
        ]
        assert s["state"] not in CAPPED_STATES or len(same) <= count, (s, same)
        window = [x for x in reached if x["customer_id"] == cid and ts - 30 * DAY <= x["ts"] <= ts]
        assert s["state"] not in CAPPED_STATES or len(window) <= overall, (s, window)
    # holdout would-be sends respect the campaign cap too, and never produce an SMS
    held = [d for d in decision_rows(store) if d["outcome"] == "holdout"]
    for h in held:
        held_ids = {d["id"] for d in held}
        assert not [s for s in send_rows(store) if s["decision_id"] in held_ids]
        count, days = caps[h["campaign_id"]]
        same = [
            x
            for x in held
            if x["customer_id"] == h["customer_id"]
            and x["campaign_id"] == h["campaign_id"]
            and h["ts"] - days * DAY <= x["ts"] <= h["ts"]
        ]
        assert len(same) <= count
    # every trigger event got exactly one decision
    decided = Counter(r["event_id"] for r in decision_rows(store))
    assert all(n == 1 for n in decided.values())


def test_streams_do_send_sometimes() -> None:
    """The properties above are not vacuous: a plain stream sends."""
    store = BridgeStore(":memory:")
    try:
        camps = [
            {
                "id": "a",
                "name": "A",
                "status": "active",
                "holdout_pct": 0,
                "caps": {"count": 1, "days": 30},
                "template": "hi {{ first_name }}",
            }
        ]
        noon = time.mktime((2026, 3, 14, 12, 0, 0, 0, 0, -1))
        stream = [("event", 0, "arrive", noon - T0), ("event", 1, "arrive", 0)]
        _run_stream(store, ZONES[0], ("00:00", "24:00"), 4, camps, stream)
        assert len([s for s in send_rows(store) if s["state"] == "accepted"]) == 2
    finally:
        store.close()
