"""Decision worker: takes stored events, decides, reserves the send atomically, delivers."""

from __future__ import annotations

import logging
import threading
import time

from cloud_bridge.decide import Event, Policy, Send, decide
from cloud_bridge.deliver import Deliverer
from cloud_bridge.providers import Provider
from cloud_bridge.store import BridgeStore

__all__ = ["DecisionWorker", "TRIGGER_TYPES"]

log = logging.getLogger(__name__)

TRIGGER_TYPES = ("arrive", "visit")  # 'leave' is recorded for reports but never triggers an offer


class DecisionWorker:
    def __init__(
        self,
        store: BridgeStore,
        provider: Provider,
        policy: Policy = Policy(),
        deliverer: Deliverer | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.deliverer = deliverer or Deliverer(store, provider)
        self.policy = policy
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def process_pending(self, now: float | None = None) -> int:
        """Decide every event still marked new; returns how many were processed."""
        done = 0
        while True:
            rows = self.store.next_new_events(100)
            if not rows:
                return done
            for row in rows:
                self.process(row, time.time() if now is None else now)
                done += 1

    def process(self, row: dict, now: float) -> None:
        event = Event(row["event_id"], row["type"], row["store_id"], row["subject"], row["ts"])
        if event.type not in TRIGGER_TYPES:
            self.store.mark_event(event.event_id, "done")
            return
        store_info = self.store.store_info(event.store_id)
        customer = self.store.customer_by_subject(event.subject)
        history = (
            self.store.send_history(customer.id, now - 400 * 86400) if customer is not None else []
        )
        outcome = decide(
            event, store_info, customer, self.store.campaigns(), history, now, self.policy
        )
        if not isinstance(outcome, Send) or customer is None or store_info is None:
            self.store.record_skip(
                event.event_id,
                customer.id if customer else None,
                getattr(outcome, "campaign_id", None),
                getattr(outcome, "reason", "internal"),
                getattr(outcome, "detail", ""),
                now,
            )
            log.info("event %s: skip (%s)", event.event_id, getattr(outcome, "reason", "internal"))
            self.store.mark_event(event.event_id, "done")
            return
        send_id, reason = self.store.reserve_send(
            event.event_id,
            customer.id,
            outcome.campaign.id,
            store_info.id,
            outcome.campaign.cap_count,
            outcome.campaign.cap_days,
            self.policy.overall_cap,
            self.policy.overall_days,
            outcome.sender,
            outcome.text,
            self.provider.name,
            now,
        )
        self.store.mark_event(event.event_id, "done")
        if send_id is None:
            log.info("event %s: skip (%s at reservation)", event.event_id, reason)
            return
        result = self.deliverer.deliver(send_id, customer.phone, outcome.sender, outcome.text)
        log.info("event %s: send %s -> %s", event.event_id, send_id, result.status)

    # thread -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="decision-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wake.wait(timeout=1.0)
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
