"""A scripted SMS provider (answers sends from a script, keeps what it 'really' took) and a
deliverer over it: the send outbox's tests on both engines and the monitoring test use them."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import Outgoing, SendResult, StatusResult
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.storage.store import BridgeStore


class Scripted:
    """Answers sends from a script (then ``accepted``); keeps what it 'really' took."""

    name = "sandbox"
    account = "scripted"
    can_reconcile = True

    def __init__(self, script: Iterable[str] = ()) -> None:
        self.script = collections.deque(script)
        self.calls: list[Outgoing] = []
        self.taken: dict[str, str] = {}  # key -> provider id, what the provider really has
        self.takes: collections.Counter[str] = collections.Counter()  # key -> times taken
        self.status_calls = 0

    def submit(self, msg: Outgoing) -> SendResult:
        self.calls.append(msg)
        step = self.script.popleft() if self.script else "accepted"
        pid = f"P{len(self.calls)}"
        if step in ("accepted", "timeout_taken"):
            self.takes[msg.key] += 1
        if step == "accepted":
            self.taken[msg.key] = pid
            return SendResult("accepted", provider_id=pid)
        if step == "timeout_taken":  # the provider took it, the answer was lost
            self.taken[msg.key] = pid
            return SendResult("unknown", error="no answer: ReadTimeout")
        if step == "timeout_lost":
            return SendResult("unknown", error="no answer: RemoteProtocolError")
        if step == "retry":
            return SendResult("retry", error="HTTP 503", retry_after=0.0)
        if step == "opt_out":
            return SendResult("failed", error="21610", code="21610", action="opt_out")
        if step == "invalid":
            return SendResult("failed", error="21211", code="21211", action="invalid_number")
        if step == "crash":
            raise RuntimeError("adapter bug")
        raise AssertionError(step)

    def status(self, msg: Outgoing) -> StatusResult:
        self.status_calls += 1
        if msg.key in self.taken:
            return StatusResult("accepted", provider_id=self.taken[msg.key])
        return StatusResult("not_found")

    def send(self, to: str, sender: str, body: str) -> SendResult:  # pragma: no cover
        raise NotImplementedError

    def sent_per_key(self) -> collections.Counter[str]:
        return self.takes


def deliverer(store: BridgeStore, provider: Scripted, **opts: object) -> Deliverer:
    options = DeliveryOptions(**{"reconcile_after_s": 0.0, "retry_base_s": 0.0, **opts})  # type: ignore[arg-type]
    return Deliverer(store, provider, options, bucket=TokenBucket(rate=10_000, burst=100))
