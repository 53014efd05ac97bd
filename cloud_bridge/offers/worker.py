"""Decision worker: takes stored events, decides, reserves the send atomically, delivers.

Events are taken in batches. One write transaction (``BEGIN IMMEDIATE``) covers a batch: each
event is claimed (``new -> done``, so two workers never decide the same event), the customer,
their history and the budgets are read inside the transaction, the pure ``decide`` runs, and
the decision is stored with its chain of checks; a send is reserved with every cap and budget
re-checked in the same transaction (``BridgeStore.reserve_offer``). Only after the commit are
the reserved sends handed to the Deliverer, so a send intent is on disk before any HTTP call.
A failing event is rolled back to its savepoint and marked ``error``; the batch goes on.

Campaigns are cached as a ``CampaignBook`` until a campaign changes (a cheap stamp query per
batch) and store settings for ``cache_s`` seconds. Every ``guard_every_s`` the opt-out guard
pauses active campaigns whose opt-outs / sends exceed the policy (alert in the log and in
``engine_alerts``; ``counters.auto_paused``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloud_bridge.delivery.outbox import Deliverer
from cloud_bridge.delivery.providers import Provider
from cloud_bridge.offers.campaigns import load_book
from cloud_bridge.offers.decide import (
    CampaignBook,
    Counters,
    Customer,
    Event,
    History,
    Policy,
    Send,
    Skip,
    StoreInfo,
    decide,
    local_day_start,
    optout_guard_trips,
)
from cloud_bridge.storage.store import BridgeStore, decision_row
from cloud_bridge.storage.stores import every_store_info_rows, store_info_rows

__all__ = [
    "DecisionWorker",
    "TRIGGER_TYPES",
    "WorkerCounters",
    "customer_of",
    "event_of",
    "policy_from_settings",
]

log = logging.getLogger(__name__)

TRIGGER_TYPES = ("arrive", "visit")  # 'leave' is recorded for reports but never triggers an offer
HISTORY_DAYS = 400  # caps and segments never look further back


class _EventFailed(Exception):
    """One event of a fast-path batch failed: the batch is redone with savepoints."""


_Reserved = tuple[int, dict[str, Any]]  # a reserved send: its id, the row as decided


@dataclass(frozen=True)
class _Decided:
    event: Event
    store_info: StoreInfo | None
    customer: Customer | None
    outcome: Send | Skip
    day_start: float


@dataclass
class WorkerCounters:
    events: int = 0
    sends: int = 0
    skips: int = 0
    holdouts: int = 0
    errors: int = 0
    auto_paused: int = 0
    orphans: int = 0  # events another worker left undecided, taken over
    deferred: int = 0  # events put back because another worker held their customer's lock


def event_of(row: dict[str, Any]) -> Event:
    """A stored event row (with its JSON payload) as the engine's Event."""
    rssi_max = rssi_median = None
    dwell = 0.0
    try:
        payload = json.loads(row.get("payload") or "{}")
        rssi = payload.get("rssi") or {}
        rssi_max, rssi_median = rssi.get("max"), rssi.get("median")
        dwell = float(payload.get("dwell_s") or 0.0)
    except (ValueError, TypeError, AttributeError):
        pass
    return Event(
        row["event_id"],
        row["type"],
        row["store_id"],
        row["subject"],
        row["ts"],
        rssi_max,
        rssi_median,
        dwell,
        row.get("received"),
    )


def customer_of(r: dict[str, Any] | None) -> Customer | None:
    if r is None:
        return None
    return Customer(
        id=r["id"],
        crm_id=r["crm_id"],
        name=r["name"],
        phone=r["phone"],
        favourite_product=r["favourite_product"],
        consent_sms=r["sms"] == "active",
        consent_recognition=r["recognition"] == "active",
        loyalty_tier=r["loyalty_tier"],
        visits=r["visits"],
        first_purchase=r["first_purchase"],
        visit_times=r.get("visit_times", ()),
        last_purchase=r["last_purchase"],
        erased=r["erased"] is not None,
    )


def policy_from_settings(p: Any) -> Policy:
    """The engine's Policy from ``BridgeSettings.policy``."""
    return Policy(
        overall_cap=p.overall_cap,
        overall_days=p.overall_days,
        offer_ttl_s=p.offer_ttl_s,
        max_clock_skew_s=p.max_clock_skew_s,
        regular_visits=p.regular_visits,
        lapsed_days=p.lapsed_days,
        optout_max_rate=p.optout_max_rate,
        optout_min_sends=p.optout_min_sends,
    )


def checks_json(outcome: Send | Skip) -> str:
    return json.dumps([list(c) for c in outcome.trace], ensure_ascii=False)


class DecisionWorker:
    def __init__(
        self,
        store: BridgeStore,
        provider: Provider,
        policy: Policy = Policy(),
        deliverer: Deliverer | None = None,
        *,
        batch: int = 200,
        cache_s: float = 5.0,
        guard_every_s: float = 10.0,
        guard_window_days: float = 7.0,
        linger_s: float = 0.01,
        own_connection: bool = False,
        orphan_after_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # own_connection: decide on a second connection to the database (service), so reading
        # never waits behind the ingest's commits; writes still serialise in SQLite.
        self.store = store.reopen() if own_connection else store
        self._own = self.store is not store
        self.provider = provider
        self.deliverer = deliverer or Deliverer(store, provider)  # on the shared connection
        self.policy = policy
        self.batch = batch
        self.cache_s = cache_s
        self.guard_every_s = guard_every_s
        self.guard_window_days = guard_window_days
        self.linger_s = linger_s
        self.counters = WorkerCounters()
        self.wake = threading.Event()
        # Several workers on one PostgreSQL store (orphan_after_s set): each decides the events
        # its own ingest stored (the broker's shared subscription already spread them) and
        # sweeps up events nobody decided for orphan_after_s (a worker died mid-batch). With
        # None, every undecided event is ours at once (one bridge).
        self.orphan_after_s = orphan_after_s
        self.clock = clock  # wall time of decisions (a benchmark pins it to one hour of the day)
        self._mine: collections.deque[str] = collections.deque()
        self._deferred: list[str] = []
        self._skips: list[list[Any]] | None = None  # a fast batch's skips, stored at its end
        self._held: set[str] = set()  # keys the batch's transaction holds
        self._handoff: collections.deque[_Reserved] | None = None
        self._handoff_cv = threading.Condition()
        self._handoff_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._book: tuple[Any, CampaignBook] | None = None
        self._stores: dict[str, tuple[float, StoreInfo | None]] = {}
        self._stores_read = -math.inf  # monotonic time of the last read of every store
        self._guard_stats: dict[str, tuple[int, int]] = {}
        self._next_guard = 0.0

    # caches -------------------------------------------------------------------------------
    def book(self) -> CampaignBook:
        """The campaigns, reloaded when one changes (stamp) and at least every 30 s (a tenant
        file re-seeded over a legacy row does not move the stamp)."""
        stamp = (*self.store.campaigns_stamp(), int(time.monotonic() // 30))
        if self._book is None or self._book[0] != stamp:
            self._book = (stamp, load_book(self.store))
        return self._book[1]

    def store_info(self, store_id: str, mono: float) -> StoreInfo | None:
        """The store's facts, read at most ``cache_s`` ago. When they are due, every store is
        read again in one statement (reading them one by one cost each worker a query per
        store every ``cache_s``: 100 a second for 500 stores, twice that with two workers);
        a store the last full read did not know is read on its own."""
        hit = self._stores.get(store_id)
        if hit is not None and mono - hit[0] < self.cache_s:
            return hit[1]
        if mono - self._stores_read < self.cache_s:  # a store added since the full read
            rows = store_info_rows(self.store, store_id)
            info = StoreInfo(**rows[0]) if rows else None
            self._stores[store_id] = (mono, info)
            return info
        self._stores = {r["id"]: (mono, StoreInfo(**r)) for r in every_store_info_rows(self.store)}
        self._stores_read = mono
        if store_id not in self._stores:
            self._stores[store_id] = (mono, None)
        return self._stores[store_id][1]

    # deciding -----------------------------------------------------------------------------
    def process_pending(self, now: float | None = None) -> int:
        """Decide every event still marked new; returns how many were processed."""
        done = 0
        while not self._stop.is_set():
            rows = self._next_rows()
            if not rows:
                break
            done += self.process_batch(rows, self.clock() if now is None else now)
        self.maybe_guard(self.clock() if now is None else now)
        return done

    def notify(self, event_id: str) -> None:
        """The ingest stored this event (called from the MQTT thread)."""
        if self.orphan_after_s is not None:
            self._mine.append(event_id)
        self.wake.set()

    def _next_rows(self) -> list[dict[str, Any]]:
        if self.orphan_after_s is None:
            return self.store.next_new_events(self.batch)
        while self._mine:
            ids: list[str] = []
            while self._mine and len(ids) < self.batch:
                ids.append(self._mine.popleft())
            rows = self.store.new_events_by_id(ids)
            if rows:
                return rows
        # events' ``received`` is the ingest's wall time
        rows = self.store.next_new_events(self.batch, time.time() - self.orphan_after_s)
        if rows:
            self.counters.orphans += len(rows)
        return rows

    def process(self, row: dict[str, Any], now: float) -> None:
        self.process_batch([row], now)

    def process_batch(self, rows: list[dict[str, Any]], now: float) -> int:
        """Decide these events (see ``_process_once``). Events whose customer another worker
        is reserving for at this moment are put back and decided again, from fresh reads, in
        a transaction of their own that waits for that worker's commit (taking its keys in
        order: only these put-back transactions ever wait, and a batch's never does, so no two
        transactions wait for each other). Retrying them without waiting spun: measured, it
        burnt a third more CPU per event with two workers."""
        done = self._process_once(rows, now)
        if self._deferred and not self._stop.is_set():
            again = set(self._deferred)
            self.counters.deferred += len(again)
            self._deferred.clear()
            rows = [r for r in rows if r["event_id"] in again]
            done += self._process_once(rows, now, wait=True)
        return done

    def _process_once(self, rows: list[dict[str, Any]], now: float, wait: bool = False) -> int:
        """Decide these events, store the decisions in one transaction, then hand the reserved
        sends to delivery.

        Phase 1 reads and decides without holding the write lock (ingest keeps writing).
        Phase 2 is one write transaction: each event is claimed; a skip is stored as decided
        (new sends in the batch can only add reasons to skip); a send or holdout is decided
        again inside the transaction, so it sees every earlier reservation of the batch and of
        other workers, and is reserved with caps and budgets re-checked atomically. If any
        event fails, the batch is rolled back and written again event by event, each in a
        savepoint: the failing one is marked ``error`` and the others go on."""
        book = self.book()
        mono = time.monotonic()
        counts: dict[tuple[str, str], int] = {}  # budget counts, read once for the batch
        try:  # the batch's customers, read at once
            memo = self._read_customers(rows, now)
        except Exception as exc:  # read per event instead, each failing on its own
            log.warning("reading the batch's customers failed (%s); reading per event", exc)
            memo = {}
        plans = [self._plan(row, now, mono, book, counts, memo) for row in rows]
        snapshot = dataclasses.replace(self.counters)
        try:
            reserved, done = self._write(plans, now, mono, book, savepoints=False, wait=wait)
        except _EventFailed:
            self.counters = snapshot
            reserved, done = self._write(plans, now, mono, book, savepoints=True, wait=wait)
        if reserved:  # ours to send: the deliverer's sweep must not take them for orphans
            self.deliverer.hold("sends", [send_id for send_id, _ in reserved])
        if self._handoff is not None:  # started: the handoff thread prepares and queues them
            with self._handoff_cv:
                self._handoff.extend(reserved)
                self._handoff_cv.notify()
        else:
            for send in reserved:
                self._hand(send)
        return done

    def _read_customers(
        self, rows: list[dict[str, Any]], now: float
    ) -> dict[str, tuple[Customer | None, History]]:
        """Phase 1's memo: the customers behind these events and their histories, read in
        two statements for the whole batch (``inputs`` cuts the visits per event)."""
        subjects = sorted({r["subject"] for r in rows if r.get("type") in TRIGGER_TYPES})
        since = now - HISTORY_DAYS * 86400
        found = self.store.engine_customers(subjects, now + 1.0, since)
        histories = self.store.engine_histories(sorted(r["id"] for r in found.values()), since)
        memo: dict[str, tuple[Customer | None, History]] = {}
        for subject in subjects:
            row = found.get(subject)
            customer = customer_of(row)
            memo[subject] = (
                customer,
                History(*histories.get(customer.id, ((), ()))) if customer else History(),
            )
        return memo

    def _hand(self, send: _Reserved) -> None:
        send_id, known = send
        try:
            result = self.deliverer.deliver(send_id, known=known)
        except Exception:  # the intent is committed: delivery's sweep adopts it
            log.exception("send %s: handing it to delivery failed", send_id)
            self.deliverer.release("sends", send_id)
            return
        log.debug("send %s -> %s", send_id, result.status)

    def _handoff_run(self) -> None:
        """Hands committed sends to delivery (final text, outbox key, queue) beside the
        decisions, so deciding never waits for that bookkeeping."""
        assert self._handoff is not None
        while True:
            with self._handoff_cv:
                while not self._handoff and not self._stop.is_set():
                    self._handoff_cv.wait(0.5)
                if not self._handoff:
                    return
                send = self._handoff.popleft()
            self._hand(send)

    def _plan(
        self,
        row: dict[str, Any],
        now: float,
        mono: float,
        book: CampaignBook,
        counts: dict[tuple[str, str], int],
        memo: dict[str, tuple[Customer | None, History]],
    ) -> tuple[dict[str, Any], _Decided | BaseException | None]:
        """Phase 1: the event's decision from what the store says now (no write lock)."""
        try:
            event = event_of(row)
            if event.type not in TRIGGER_TYPES:
                return row, None
            return row, self._decide(event, now, mono, book, counts, memo)
        except Exception as exc:  # stored as an error in phase 2
            return row, exc

    def _decide(
        self,
        event: Event,
        now: float,
        mono: float,
        book: CampaignBook,
        shared: dict[tuple[str, str], int],
        memo: dict[str, tuple[Customer | None, History]] | None = None,
    ) -> _Decided:
        store_info = self.store_info(event.store_id, mono)
        customer, history, counters, day_start = self.inputs(
            event, store_info, now, book, shared, memo
        )
        outcome = decide(event, store_info, customer, book, history, now, self.policy, counters)
        return _Decided(event, store_info, customer, outcome, day_start)

    def _write(
        self,
        plans: list[tuple[dict[str, Any], _Decided | BaseException | None]],
        now: float,
        mono: float,
        book: CampaignBook,
        savepoints: bool,
        wait: bool = False,
    ) -> tuple[list[_Reserved], int]:
        """Phase 2: one write transaction for the batch."""
        reserved: list[_Reserved] = []
        shared: dict[tuple[str, str], int] = {}  # budget counts read in this transaction
        touched: set[int] = set()  # customers with a send or holdout reserved in this batch
        done = 0
        self._deferred.clear()
        with self.store.transaction():
            # Reservations count caps and budgets: hold their keys for this transaction. A
            # batch does not wait for keys another worker holds right now: those events stay
            # new and are put back (process_batch decides them in a transaction of their own
            # that waits, taking its keys in order; so no two transactions wait for each other).
            needs = {i: self._lock_keys(plan, book) for i, (_, plan) in enumerate(plans)}
            keys = sorted(set().union(*needs.values()))
            if wait:  # put-back events: wait for their keys (see process_batch)
                self.store.lock_for(keys)
                held = set(keys)
            else:
                held = self.store.try_lock_for(keys)
            ready = []
            for i, (row, _) in enumerate(plans):
                if needs[i] <= held:
                    ready.append(row["event_id"])
                else:
                    self._deferred.append(row["event_id"])
            # new -> done for the whole batch in one statement; those another worker took
            # first are not ours (a failing event is marked error below)
            claimed = self.store.claim_events(ready)
            self._skips = None if savepoints else []
            self._held = held
            for row, plan in plans:
                if row["event_id"] not in claimed:
                    continue  # put back, or another worker has it
                try:
                    with self.store.transaction() if savepoints else contextlib.nullcontext():
                        if isinstance(plan, BaseException):
                            raise plan
                        send = None
                        if plan is not None:
                            send = self._settle(plan, now, mono, book, shared, touched)
                            self.counters.events += 1
                except Exception as exc:
                    if not savepoints:
                        raise _EventFailed from exc  # roll the batch back, go event by event
                    self.counters.errors += 1
                    log.error("event %s: decision failed (%s); marked error", row["event_id"], exc)
                    self.store.mark_event(row["event_id"], "error")
                    continue
                done += 1
                if send is not None:
                    reserved.append(send)
            skips, self._skips = self._skips, None
            if skips:
                try:
                    self.store.record_decisions(skips)
                except Exception as exc:  # find the one that fails, event by event
                    raise _EventFailed from exc
        return reserved, done

    @staticmethod
    def _lock_keys(plan: _Decided | BaseException | None, book: CampaignBook) -> set[str]:
        """What reserving this plan's send (or holdout exposure) counts: its customer, its
        store's daily budget, the budgeted campaigns (see BridgeStore.lock_for). A skip
        reserves nothing and needs none."""
        if not isinstance(plan, _Decided) or plan.customer is None:
            return set()
        out = plan.outcome
        if not isinstance(out, Send) and not out.holdout:
            return set()
        keys = {f"customer:{plan.customer.id}"}
        if plan.store_info is not None and plan.store_info.daily_budget is not None:
            keys.add(f"store:{plan.store_info.id}")
        keys.update(f"campaign:{c.id}" for c in book.campaigns if c.budget is not None)
        return keys

    def _counters(
        self, book: CampaignBook, store: StoreInfo, event: Event, shared: dict[tuple[str, str], int]
    ) -> tuple[Counters, float]:
        day_start = 0.0
        budgeted = [c.id for c in book.split(store.id, event.type)[0] if c.budget]
        missing = [cid for cid in budgeted if ("c", cid) not in shared]
        if missing:
            counts = self.store.campaign_send_counts(missing)
            for cid in missing:
                shared["c", cid] = counts.get(cid, 0)
        store_today = 0
        if store.daily_budget is not None:
            day_start = local_day_start(store, event.ts)
            key = ("s", f"{store.id}@{day_start}")
            if key not in shared:
                shared[key] = self.store.store_sends_since(store.id, day_start)
            store_today = shared[key]
        return (
            Counters(
                campaign_sends={cid: shared["c", cid] for cid in budgeted},
                store_sends_today=store_today,
                optouts=self._guard_stats,
            ),
            day_start,
        )

    def inputs(
        self,
        event: Event,
        store_info: StoreInfo | None,
        now: float,
        book: CampaignBook,
        shared: dict[tuple[str, str], int],
        memo: dict[str, tuple[Customer | None, History]] | None = None,
    ) -> tuple[Customer | None, History, Counters, float]:
        """Everything ``decide`` needs about the customer, their history and the budgets.

        ``memo`` (phase 1 of a batch, when nothing is written) reads a customer once per batch:
        their visits up to ``now``, cut per event to those before it."""
        since = now - HISTORY_DAYS * 86400
        hit = memo.get(event.subject) if memo is not None else None
        if hit is None:
            before = now + 1.0 if memo is not None else event.ts
            customer = customer_of(self.store.engine_customer(event.subject, before, since))
            history = History()
            if customer is not None:
                history = History(*self.store.engine_history(customer.id, since))
            if memo is not None:
                memo[event.subject] = (customer, history)
        else:
            customer, history = hit
        if memo is not None and customer is not None:
            earlier = tuple(t for t in customer.visit_times if t < event.ts)
            if len(earlier) != len(customer.visit_times):
                customer = dataclasses.replace(customer, visit_times=earlier)
        counters, day_start = (
            self._counters(book, store_info, event, shared)
            if store_info is not None
            else (Counters(), 0.0)
        )
        return customer, history, counters, day_start

    def what_if(self, event: Event, now: float) -> Send | Skip:
        """The decision this event would get now, without storing anything (explain)."""
        book = self.book()
        store_info = self.store_info(event.store_id, time.monotonic())
        customer, history, counters, _ = self.inputs(event, store_info, now, book, {})
        return decide(event, store_info, customer, book, history, now, self.policy, counters)

    def _settle(
        self,
        plan: _Decided,
        now: float,
        mono: float,
        book: CampaignBook,
        shared: dict[tuple[str, str], int],
        touched: set[int],
    ) -> _Reserved | None:
        """Store one planned decision inside the batch's transaction. A skip is stored as it
        is. A send or holdout is decided again first if its customer already got one in this
        batch; its reservation re-checks consent, erasure, caps and budgets, and if that
        refuses (another worker, a revoked consent), it is decided again in the transaction."""
        out = plan.outcome
        if isinstance(out, Skip) and not out.holdout:
            return self._store(plan, now, book, shared)[0]
        customer_id = plan.customer.id if plan.customer else -1
        fresh = customer_id in touched
        if fresh:
            plan = self._decide(plan.event, now, mono, book, shared)
        send, stored = self._store(plan, now, book, shared, record_failure=fresh)
        if not stored:
            plan = self._decide(plan.event, now, mono, book, shared)
            send, stored = self._store(plan, now, book, shared)
        if isinstance(plan.outcome, Send) or plan.outcome.holdout:
            touched.add(customer_id)
        return send

    def _store(
        self,
        plan: _Decided,
        now: float,
        book: CampaignBook,
        shared: dict[tuple[str, str], int],
        record_failure: bool = True,
    ) -> tuple[_Reserved | None, bool]:
        """Store a decision; reserve a send or holdout exposure. Returns (send id, phone,
        sender, text) of a reserved send, and whether anything was stored (False only when a
        reservation was refused and ``record_failure`` is off)."""
        event, store_info, customer, outcome, day_start = (
            plan.event,
            plan.store_info,
            plan.customer,
            plan.outcome,
            plan.day_start,
        )
        checks = checks_json(outcome)
        if isinstance(outcome, Skip) and not outcome.holdout:
            row = decision_row(
                event.event_id,
                customer.id if customer else None,
                outcome.campaign_id,
                event.store_id,
                "skip",
                outcome.reason,
                outcome.detail,
                now,
                segment=outcome.segment or None,
                checks=checks,
            )
            if self._skips is not None:  # the batch's skips go in at its end, in one statement
                self._skips.append(row)
            else:
                self.store.record_decisions([row])
            self.counters.skips += 1
            log.debug("event %s: skip (%s)", event.event_id, outcome.reason)
            return None, True
        assert customer is not None and store_info is not None
        holdout = isinstance(outcome, Skip)
        campaign = (
            book.get(outcome.campaign_id or "") if isinstance(outcome, Skip) else outcome.campaign
        )
        assert campaign is not None
        key, reason = self.store.reserve_offer(
            event.event_id,
            customer.id,
            campaign.id,
            "" if isinstance(outcome, Skip) else outcome.variant.id,
            store_info.id,
            now,
            cap_count=campaign.cap_count,
            cap_days=campaign.cap_days,
            overall_cap=self.policy.overall_cap,
            overall_days=self.policy.overall_days,
            budget=campaign.budget,
            store_budget=store_info.daily_budget,
            day_start=day_start,
            holdout=holdout,
            sender="" if isinstance(outcome, Skip) else outcome.sender,
            body="" if isinstance(outcome, Skip) else outcome.text,
            provider=self.provider.name,
            segment=outcome.segment or None,
            checks=checks,
            record_failure=record_failure,
            held=self._held,  # taken for the batch's transaction, which covers this one
            joined=True,
        )
        if key is None:
            if not record_failure:
                return None, False
            self.counters.skips += 1
            log.info("event %s: skip (%s at reservation)", event.event_id, reason)
            return None, True
        if isinstance(outcome, Skip):
            self.counters.holdouts += 1
            return None, True
        self.counters.sends += 1
        if campaign.budget:
            shared["c", campaign.id] = shared.get(("c", campaign.id), 0) + 1
        if store_info.daily_budget is not None:
            k = ("s", f"{store_info.id}@{day_start}")
            shared[k] = shared.get(k, 0) + 1
        known = {  # the reserved row as delivery's preparation reads it (saves the read)
            "id": key,
            "state": "reserved",
            "idem_key": None,
            "customer_id": customer.id,
            "phone": customer.phone,
            "sender": outcome.sender,
            "body": outcome.text,
            "ts": now,
            "event_ts": event.ts,
            "event_received": event.received,
            "store_name": store_info.name,
            "store_country": store_info.country,
        }
        return (key, known), True

    # opt-out guard ------------------------------------------------------------------------
    def maybe_guard(self, now: float) -> list[str]:
        mono = time.monotonic()
        if mono < self._next_guard:
            return []
        self._next_guard = mono + self.guard_every_s
        return self.run_guard(now)

    def run_guard(self, now: float) -> list[str]:
        """Pause every active campaign above the opt-out limit; returns their ids."""
        active = [r["id"] for r in self.store.campaign_rows() if r["status"] == "active"]
        self._guard_stats = self.store.optout_stats(active, self.guard_window_days)
        paused = []
        p = self.policy
        for cid, (sends, optouts) in self._guard_stats.items():
            if optout_guard_trips(sends, optouts, p):
                detail = (
                    f"{optouts} opt-outs / {sends} sends = {optouts / sends:.1%} "
                    f"> {p.optout_max_rate:.0%} (after >= {p.optout_min_sends} sends)"
                )
                if self.store.pause_for_guard(cid, detail, now):
                    self.counters.auto_paused += 1
                    paused.append(cid)
                    log.warning("ALERT opt-out guard paused campaign %s: %s", cid, detail)
        for cid in paused:  # judged again on its new sends if a marketer resumes it
            self._guard_stats.pop(cid, None)
        return paused

    # thread -------------------------------------------------------------------------------
    def start(self) -> None:
        self._handoff = collections.deque()
        self._handoff_thread = threading.Thread(
            target=self._handoff_run, name="send-handoff", daemon=True
        )
        self._handoff_thread.start()
        self._thread = threading.Thread(target=self._run, name="decision-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wake.wait(timeout=1.0)
            # linger: let a burst gather so one transaction (one fsync) decides many events
            self._stop.wait(self.linger_s)
            self.wake.clear()
            try:
                self.process_pending()
            except Exception:  # keep the worker alive; the event stays 'new' and is retried
                log.exception("decision worker failed; retrying")
                time.sleep(1.0)

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread:
            self._thread.join(timeout=5.0)
        if self._handoff_thread is not None:
            with self._handoff_cv:
                self._handoff_cv.notify()
            self._handoff_thread.join(timeout=10.0)  # hands what is left; the rest: recovery
        if self._own:
            self.store.close()
