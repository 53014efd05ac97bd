"""Offer engine: decisions/s of the pure ``decide`` with 1 k campaigns and 1 M customers, and
events/s from Mosquitto through ingest and decision with the SQLite store.

Pure: 1 k campaigns over 200 stores in three time zones (Moscow, Yerevan, New York), with
audiences (segments, rules over loyalty tier, favourite product, visits), schedules, dwell and
RSSI minimums, two variants, holdouts and budgets, indexed once in a ``CampaignBook``. 1 M
customers are kept in compact columns and turned into a ``Customer`` per decision (as the
worker does from its row); each has a history of 0-3 recent sends. ``DECISIONS`` events are
decided at an instant inside every store's sending hours; the mix of outcomes is printed so
the figure is for real work, not for early exits.

Ingest to decision: a private Mosquitto, the bridge's MQTT ingest (``Ingest``: validation,
dedupe, commit before PUBACK) and one ``DecisionWorker`` with the SQLite store, the same 1 k
campaigns and ``INGEST_CUSTOMERS`` consenting customers, events from ``INGEST_STORES`` stores
open all day (Moscow and Yerevan: no legal window narrows them, so the figure does not depend
on the hour it runs). A decision ends when it is stored and, for a send, when the send intent
is committed (``reserved``, caps re-checked atomically) and handed to the delivery queue (a
stand-in here: sending is paced by the provider's rate and benchmarked with delivery). A
publisher sends ``INGEST_EVENTS`` presence events (QoS 1) as fast as the broker takes them;
the clock runs from the first publish until the last event is decided.

The bridge's clock is pinned: the worker decides, and the publisher stamps its events, on the
wall time moved to ``NOW`` (a Saturday in March, 15:00 UTC, inside every store's sending hours
and every campaign's dates and hours), running on at the real pace. So the chain measures the
same path at any hour it runs (unpinned, at 02:51 UTC, a quarter of the events ended
``out_of_schedule`` instead of in a reservation). The run fails loudly when its path did not do
the work it claims: an hour-dependent outcome, a worker error, fewer than ``MIN_SENDS_SHARE``
of the events reserved, or the hand-off, the sends table and the decisions disagreeing on how
many sends were reserved.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud_bridge.offers.decide import (
    Audience,
    Campaign,
    CampaignBook,
    Counters,
    Customer,
    Event,
    History,
    Policy,
    Rule,
    Schedule,
    StoreInfo,
    Variant,
    decide,
)

CAMPAIGNS = int(os.environ.get("PASSBY_BENCH_CAMPAIGNS", 1000))
CUSTOMERS = int(os.environ.get("PASSBY_BENCH_CUSTOMERS", 1_000_000))
DECISIONS = int(os.environ.get("PASSBY_BENCH_DECISIONS", 200_000))
STORES = 200
INGEST_EVENTS = int(os.environ.get("PASSBY_BENCH_INGEST_EVENTS", 20_000))
# 20 arrivals per customer: most are capped (1 SMS per campaign per 30 days, 4 overall), as
# in a store whose regulars pass by every day
INGEST_CUSTOMERS = int(os.environ.get("PASSBY_BENCH_INGEST_CUSTOMERS", 1_000))
INGEST_STORES = 10  # events come from these stores (each has ~5 campaigns + the global ones)
GOALS = {"decisions_per_s": 20_000, "ingest_events_per_s": 1_000}
# Outcomes that depend on the hour (or the date): with the pinned clock, none may occur.
HOUR_OUTCOMES = ("quiet_hours", "out_of_schedule")
# With the pinned clock about a fifth of the events end in a reservation (4 k of 20 k); far
# fewer means the chain took a cheaper path than the one it claims to measure.
MIN_SENDS_SHARE = 0.15
ZONES = [("Europe/Moscow", "RU"), ("Asia/Yerevan", "AM"), ("America/New_York", "US")]
# 15:00 UTC: 18:00 Moscow, 19:00 Yerevan, 11:00 New York -- inside 09:00-21:00 everywhere
NOW = datetime(2026, 3, 14, 15, 0, tzinfo=UTC).timestamp()
TIERS = ["bronze", "silver", "gold", None]
PRODUCTS = ["espresso beans", "green tea", "almond croissants", "cold brew", None]
TEMPLATES = [
    "{{ first_name }}, 15% off {{ favourite_product }} today at {{ store_name }}.",
    "{{ first_name }}: your {{ favourite_product }} -10% today only.",
]


def make_stores() -> list[StoreInfo]:
    out = []
    for i in range(STORES):
        tz, country = ZONES[i % len(ZONES)]
        out.append(StoreInfo(f"s{i}", f"Store {i}", tz, country, "Shop", "09:00", "21:00"))
    return out


def make_campaigns(rng: random.Random) -> list[Campaign]:
    out = []
    for i in range(CAMPAIGNS):
        scope = () if rng.random() < 0.005 else tuple(f"s{rng.randrange(STORES)}" for _ in range(2))
        rules: list[Rule] = []
        if rng.random() < 0.3:
            rules.append(Rule("loyalty_tier", "in", tuple(rng.sample(TIERS[:3], 2))))
        if rng.random() < 0.3:
            rules.append(Rule("favourite_product", "exists"))
        if rng.random() < 0.2:
            rules.append(Rule("visits", "gte", float(rng.randrange(1, 5))))
        segments = rng.choice([(), (), ("newcomer",), ("regular",), ("regular", "lapsed")])
        out.append(
            Campaign(
                f"camp-{i}",
                f"Campaign {i}",
                "arrive" if rng.random() < 0.8 else "visit",
                TEMPLATES[0],
                stores=scope,
                status="active" if rng.random() < 0.9 else "paused",
                cap_count=1,
                cap_days=30,
                priority=rng.randrange(10),
                variants=(Variant("A", TEMPLATES[0]), Variant("B", TEMPLATES[1])),
                holdout_pct=10.0,
                budget=rng.choice([None, None, 10_000]),
                audience=Audience(segments, tuple(rules)),
                schedule=rng.choice(
                    [
                        Schedule(),
                        Schedule("2026-03-01", "2026-03-31"),
                        Schedule(hours=("10:00", "20:00")),
                    ]
                ),
                min_rssi=rng.choice([None, -80.0, -70.0]),
            )
        )
    return out


def pure_engine() -> dict[str, Any]:
    rng = random.Random(6)
    stores = make_stores()
    book = CampaignBook(make_campaigns(rng))
    t = time.perf_counter()
    # 1 M customers in columns (bytes and small ints), not 1 M objects
    tier = bytes(rng.randrange(4) for _ in range(CUSTOMERS))
    fav = bytes(rng.randrange(5) for _ in range(CUSTOMERS))
    visits = bytes(rng.randrange(12) for _ in range(CUSTOMERS))
    flags = bytes(3 if rng.random() < 0.9 else rng.randrange(3) for _ in range(CUSTOMERS))
    setup_s = time.perf_counter() - t
    names = ["Anna", "Boris", "Carmen", "Dmitri", "Eva", "Gor", "Hasmik"]
    histories = [
        History(
            sends=tuple(
                (f"camp-{rng.randrange(CAMPAIGNS)}", NOW - rng.uniform(0, 40) * 86400)
                for _ in range(rng.randrange(4))
            )
        )
        for _ in range(997)
    ]
    visit_pool = [tuple(NOW - rng.uniform(1, 90) * 86400 for _ in range(k)) for k in range(4)]
    events = [
        (
            rng.randrange(CUSTOMERS),
            f"s{rng.randrange(STORES)}",
            "arrive" if rng.random() < 0.8 else "visit",
            float(rng.randrange(-90, -50)),
        )
        for _ in range(DECISIONS)
    ]
    store_by_id = {s.id: s for s in stores}
    counters = Counters(campaign_sends={c.id: 0 for c in book.campaigns if c.budget})
    policy = Policy()
    outcomes: Counter[str] = Counter()
    t = time.perf_counter()
    for n, (cid, sid, kind, rssi) in enumerate(events):
        f = flags[cid]
        v = visits[cid]
        customer = Customer(
            cid,
            f"C-{cid}",
            names[cid % 7],
            "+79160000000",
            PRODUCTS[fav[cid]],
            bool(f & 1),
            bool(f & 2),
            loyalty_tier=TIERS[tier[cid]],
            visits=v,
            visit_times=visit_pool[v % 4],
        )
        event = Event(f"e{n}", kind, sid, "0123456789abcdef", NOW - 1.0, rssi + 5, rssi, 30.0)
        out = decide(
            event, store_by_id[sid], customer, book, histories[cid % 997], NOW, policy, counters
        )
        outcomes[getattr(out, "reason", "sent")] += 1
    elapsed = time.perf_counter() - t
    return {
        "decisions": DECISIONS,
        "decisions_per_s": DECISIONS / elapsed,
        "customers_setup_s": setup_s,
        "outcomes": dict(outcomes.most_common()),
    }


# -- Mosquitto -> ingest -> decision ----------------------------------------------------------


def _campaign_row(c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "trigger": c.trigger,
        "template": c.template,
        "stores": list(c.stores),
        "status": c.status,
        "cap_count": c.cap_count,
        "cap_days": c.cap_days,
        "priority": c.priority,
        "variants": [{"id": v.id, "template": v.template, "weight": v.weight} for v in c.variants],
        "holdout_pct": c.holdout_pct,
        "budget": c.budget,
        "audience": {
            "segments": list(c.audience.segments),
            "rules": [
                {
                    "field": r.field,
                    "op": r.op,
                    "value": list(r.value) if isinstance(r.value, tuple) else r.value,
                    "days": r.days,
                }
                for r in c.audience.rules
            ],
        },
        "schedule": {
            "start_date": c.schedule.start_date,
            "end_date": c.schedule.end_date,
            "weekdays": [],
            "hours": list(c.schedule.hours) if c.schedule.hours else None,
        },
        "min_dwell_s": c.min_dwell_s,
        "min_rssi": c.min_rssi,
        "rssi_stat": c.rssi_stat,
    }


class _Handoff:
    """Stands in for the Deliverer's queue: the decision ends when the send intent is
    committed (``reserved``); sending is paced by the provider and measured by its own bench."""

    def __init__(self) -> None:
        self.sends: list[int] = []

    def deliver(self, send_id: int, *_: Any, **__: Any) -> Any:
        self.sends.append(send_id)
        return _Queued

    def hold(self, table: str, row_ids: list[int]) -> None:
        """The worker keeps its reserved sends from the orphan sweep (nothing sweeps here)."""

    def release(self, table: str, row_id: int) -> None:
        """A send the worker could not hand over (nothing holds it here)."""


class _Queued:
    status = "queued"


def ingest_to_decision() -> dict[str, Any]:
    from scale_helpers import Publisher  # tests/ is on the path (tests/bench/run.py)

    from cloud_bridge.config import MqttSettings
    from cloud_bridge.delivery.providers import SandboxProvider
    from cloud_bridge.dev.mosquitto import LocalMosquitto
    from cloud_bridge.ingest.consumer import Ingest
    from cloud_bridge.offers.worker import DecisionWorker
    from cloud_bridge.storage.store import BridgeStore

    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="passby-bench-engine-"))
    broker = LocalMosquitto(tmp / "mosquitto")
    broker.start()
    store = BridgeStore(tmp / "bridge.db", data_key=os.urandom(32))
    offset = NOW - time.time()  # the pinned clock: NOW when the bench starts, then real pace

    def clock() -> float:
        return time.time() + offset

    now = clock()
    with store.transaction() as db:
        for s in make_stores():
            db["stores"].insert(
                {
                    "id": s.id,
                    "name": s.name,
                    "timezone": s.timezone,
                    "country": s.country,
                    "sender_name": s.sender_name,
                    "send_start": "00:00",
                    "send_end": "24:00",
                    "site_key": "00" * 16,
                }
            )
        for c in make_campaigns(random.Random(6)):
            store.save_campaign(_campaign_row(c), now)
        for i in range(INGEST_CUSTOMERS):
            db.execute(
                "INSERT INTO customers(id, crm_id, subject, name, phone, favourite_product, "
                "created, visits, loyalty_tier) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    i + 1,
                    f"C-{i}",
                    f"{i + 1:016x}",
                    "Anna",
                    f"+7916{i:07d}",
                    PRODUCTS[i % 4],
                    now,
                    i % 6,
                    TIERS[i % 3],
                ],
            )
            for kind in ("sms", "recognition"):
                db.execute(
                    "INSERT INTO consents(customer_id, kind, status, ts) VALUES (?,?,?,?)",
                    [i + 1, kind, "active", now - 86400],
                )
    provider = SandboxProvider(store)
    handoff = _Handoff()
    worker = DecisionWorker(
        store,
        provider,
        Policy(),
        handoff,  # type: ignore[arg-type]
        own_connection=True,
        clock=clock,
    )
    settings = MqttSettings(host="127.0.0.1", port=broker.port)
    ingest = Ingest(settings, store, worker.notify, client_id=f"bench-{uuid.uuid4().hex[:8]}")
    worker.start()
    ingest.start()
    try:
        if not ingest.connected.wait(10):
            raise RuntimeError("bridge ingest could not connect to Mosquitto")
        open_stores = [s.id for s in make_stores() if s.country != "US"][:INGEST_STORES]
        lines = []
        for _ in range(INGEST_EVENTS):
            cust = rng.randrange(INGEST_CUSTOMERS) + 1
            event = {
                "schema": "passby.event/1",
                "event_id": uuid.uuid4().hex,
                "type": "arrive" if rng.random() < 0.8 else "visit",
                "subject": f"{cust:016x}",
                "rssi": {"max": -55, "median": -62},
                "frames": 12,
                "dwell_s": 45.0,
            }
            lines.append(json.dumps([f"passby/v1/{rng.choice(open_stores)}/door-1/events", event]))
        # the sensors' side publishes from its own process, as from other machines
        pub = Publisher(tmp, broker.port, lines, offset=offset)
        t0 = time.perf_counter()
        pub.go()
        deadline = time.monotonic() + 300
        stored_s = None
        while time.monotonic() < deadline:
            row = store.query("SELECT count(*) AS n, total(state='new') AS pending FROM events")[0]
            if stored_s is None and row["n"] >= INGEST_EVENTS:
                stored_s = time.perf_counter() - t0
            if row["n"] >= INGEST_EVENTS and not row["pending"]:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        published_s = pub.result(timeout=60)["publish_s"]
        reasons = Counter(
            {
                r["reason"]: r["n"]
                for r in store.query("SELECT reason, count(*) AS n FROM decisions GROUP BY reason")
            }
        )
        decided = sum(reasons.values())
        sends_stored = store.query("SELECT count(*) AS n FROM sends")[0]["n"]
    finally:
        ingest.stop()
        worker.stop()
        store.close()
        broker.stop()
    return {
        "ingest_events": INGEST_EVENTS,
        "ingest_events_per_s": INGEST_EVENTS / elapsed,
        "publish_s": published_s,
        "stored_s": stored_s,
        "elapsed_s": elapsed,
        "decided": decided,
        "ingest_outcomes": dict(reasons.most_common()),
        "worker_errors": worker.counters.errors,
        "sends_reserved": len(handoff.sends),
        "sends_stored": sends_stored,
    }


def check_live(live: dict[str, Any]) -> None:
    """Fail loudly when the chain did not do the work it claims (see the module docstring)."""
    outcomes = live["ingest_outcomes"]
    problems = []
    hourly = {k: outcomes[k] for k in HOUR_OUTCOMES if outcomes.get(k)}
    if hourly:
        problems.append(f"hour-dependent outcomes {hourly} (the clock is not pinned)")
    if live["worker_errors"]:
        problems.append(f"{live['worker_errors']} worker errors")
    if live["decided"] != live["ingest_events"]:
        problems.append(f"{live['decided']} of {live['ingest_events']} events decided")
    reserved = outcomes.get("reserved", 0)
    if not live["sends_reserved"] == live["sends_stored"] == reserved:
        problems.append(
            f"sends handed over {live['sends_reserved']}, stored {live['sends_stored']}, "
            f"decided reserved {reserved}: they must agree"
        )
    floor = int(MIN_SENDS_SHARE * live["ingest_events"])
    if live["sends_reserved"] < floor:
        problems.append(f"{live['sends_reserved']} sends reserved, expected at least {floor}")
    if problems:
        raise RuntimeError("engine bench measured the wrong path: " + "; ".join(problems))


def run() -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    # the live chain first: it runs threads in this process, and 1 M customers' worth of
    # garbage left by the pure run would only add collector pauses to it
    live = ingest_to_decision()
    check_live(live)
    pure = pure_engine()
    table = Table(title="offer engine")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("per second", justify="right")
    table.add_column("goal", justify="right")
    table.add_row(
        f"pure decide: {CAMPAIGNS:,} campaigns, {CUSTOMERS:,} customers",
        f"{pure['decisions']:,}",
        f"{pure['decisions_per_s']:,.0f}",
        f">= {GOALS['decisions_per_s']:,}",
    )
    table.add_row(
        "Mosquitto -> ingest -> decision (SQLite, 1 worker)",
        f"{live['ingest_events']:,}",
        f"{live['ingest_events_per_s']:,.0f}",
        f">= {GOALS['ingest_events_per_s']:,}",
    )
    console = Console()
    console.print(table)
    console.print("pure outcomes: " + ", ".join(f"{k} {v:,}" for k, v in pure["outcomes"].items()))
    console.print(
        "ingest outcomes: " + ", ".join(f"{k} {v:,}" for k, v in live["ingest_outcomes"].items())
    )
    return {
        "campaigns": CAMPAIGNS,
        "customers": CUSTOMERS,
        "decisions_per_s": round(pure["decisions_per_s"]),
        "ingest_events_per_s": round(live["ingest_events_per_s"]),
        "ingest_events": live["ingest_events"],
        "ingest_decided": live["decided"],
        "ingest_sends_reserved": live["sends_reserved"],
        "ingest_all_stored_s": round(live["stored_s"] or 0.0, 2),
        "ingest_all_decided_s": round(live["elapsed_s"], 2),
        "worker_errors": live["worker_errors"],
        "pure_sent_share": round(pure["outcomes"].get("sent", 0) / pure["decisions"], 3),
    }
