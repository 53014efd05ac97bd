"""Delivery: the send outbox's state machine, rate limit, retries, reconciliation and receipts.

None of the providers offers an idempotency key, so the bridge guarantees "at most one SMS per
decision" itself: the intent is committed under a unique key (``sends.idem_key``) before any
HTTP call, a row is claimed ``reserved -> sending`` by one atomic UPDATE (one claimant across
threads and processes), and a row that may have reached the provider is never sent again
unless the provider itself says it does not have it.

States (offers in ``sends``, keyword confirmations in ``replies``)::

    reserved --claim--> sending --answer--> accepted --receipt--> delivered | undelivered | failed
       ^  |               |  |  '--refused (4xx, bad number, STOP)--> failed
       |  |               |  '--surely not taken (refused connection, 429, 5xx)--> reserved (later)
       |  |               '--no answer (read timeout, dropped, 504)--> unknown
       |  |                        unknown --status API / receipt--> accepted | delivered | ...
       |  |                        unknown --provider never had it--> reserved | expired
       |  |--offer expired, consent revoked, erased, flagged--> expired | failed
       |  '--shed: queue full, or its turn would come after the offer expired--> shed
       '--(kill -9 during an attempt: its lease runs out)-- sending --> unknown

Every transition is a guarded UPDATE (``FROM`` below) and is logged in ``send_log`` with its
reason. Offers expire ``offer_ttl_s`` after the customer was seen (``seen_at``: by the bridge's
clock, which a sensor's clock ahead of it can never push later); an expired intent is never
sent. A token bucket per provider account (shared by every sender of the process) paces the
requests; the queue is bounded and an offer that would expire before its turn is shed with
the reason (``shed``). ``recover()`` runs at start: an attempt cut short by a crash becomes
``unknown`` and is reconciled, intents never attempted are queued again, none is left behind.

A reserved row this process holds (handed over by the decision worker, queued, waiting for a
token, waiting for a retry) carries a lease in the store that the timer renews; the sweep
adopts a reserved row only when no process holds it (its lease ran out: the process died), so
however long a send waits its turn under load, the sender that has it sends it, and the sweep
stays a safety net (``counters.adopted``).

The decision behind a send reads what became of it (``store.decision_of_send``): ``reserved``
until the provider accepts it, then ``sent``, ``delivered``, ``undelivered``, ``failed``,
``expired``, ``shed`` or ``unknown``, in the same transaction as the send's move.
"""

from __future__ import annotations

import collections
import heapq
import logging
import math
import random
import secrets
import string
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cloud_bridge.customers import consent as ledger
from cloud_bridge.delivery.providers import Outgoing, Provider, SendResult, StatusResult
from cloud_bridge.delivery.ratelimit import SharedBucket, TokenBucket, bucket_for
from cloud_bridge.delivery.sms_encoding import cost_of
from cloud_bridge.delivery.sms_text import (
    Language,
    compose,
    language_of_text,
    optout_link,
    sender_kind,
)
from cloud_bridge.errors import SenderError
from cloud_bridge.storage.sends import expired_reserved
from cloud_bridge.storage.store import BridgeStore

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeSettings

__all__ = ["FROM", "FINAL", "DeliveryOptions", "Deliverer", "country_of", "seen_at"]

log = logging.getLogger(__name__)

# target state -> the states a row may enter it from (receipts may correct a row that we
# thought was not sent: the provider's word wins).
FROM: Final[dict[str, tuple[str, ...]]] = {
    "sending": ("reserved",),
    "accepted": ("sending", "unknown", "reserved", "expired", "shed"),
    "reserved": ("sending", "unknown"),
    "unknown": ("sending", "unknown"),
    "failed": ("reserved", "sending", "unknown", "accepted"),
    "expired": ("reserved", "unknown"),
    "shed": ("reserved",),
    "delivered": ("sending", "unknown", "accepted", "reserved", "expired", "shed", "undelivered"),
    "undelivered": ("sending", "unknown", "accepted", "reserved", "expired", "shed"),
}
FINAL: Final = ("delivered", "undelivered", "failed", "expired", "shed")
REPLY_ID_OFFSET: Final = 1_500_000_000  # replies' numeric ids (SMSC) never meet offers' ids
ORPHAN_AFTER_S: Final = 30.0  # a reserved row overdue and unleased this long has lost its process
_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits


def country_of(phone: str) -> str | None:
    """ISO country of an E.164 number (phonenumbers), or None."""
    try:
        import phonenumbers

        return phonenumbers.region_code_for_number(phonenumbers.parse(phone)) or None
    except Exception:  # not installed, or not a number: the store's country is used instead
        return None


@dataclass(frozen=True)
class DeliveryOptions:
    offer_ttl_s: float = 600.0
    reply_ttl_s: float = 3600.0
    queue_size: int = 1000
    senders: int = 8
    max_attempts: int = 6
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    reconcile_after_s: float = 5.0
    lease_s: float = 30.0
    give_up_unknown_s: float = 86400.0
    max_parts: int = 2
    transliterate: bool = False
    prices: Mapping[str, float] = field(default_factory=dict)
    currency: str = ""
    default_language: Language = "en"
    optout_base_url: str = "http://127.0.0.1:8080"
    status_callback_url: str | None = None
    rate_per_s: float = 10.0
    burst: int = 1
    orphan_after_s: float = ORPHAN_AFTER_S

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> DeliveryOptions:
        """From ``BridgeSettings``."""
        d, p = settings.delivery, settings.provider
        base = settings.public_url.rstrip("/")
        return cls(
            offer_ttl_s=d.offer_ttl_s,
            queue_size=d.queue_size,
            senders=d.senders,
            max_attempts=d.max_attempts,
            retry_base_s=d.retry_base_s,
            retry_max_s=d.retry_max_s,
            reconcile_after_s=d.reconcile_after_s,
            # A live attempt ends by its timeouts; after that its row is fair game (crash).
            lease_s=p.connect_timeout_s + 2 * p.read_timeout_s + 5.0,
            max_parts=d.max_parts,
            transliterate=d.transliterate,
            prices=dict(d.prices),
            currency=d.currency,
            default_language=d.default_language,
            optout_base_url=d.optout_base_url or base,
            status_callback_url=f"{base}/sms/twilio/status" if p.kind == "twilio" else None,
            rate_per_s=p.rate_per_s,
            burst=p.burst,
        )


@dataclass
class DeliveryCounters:
    attempts: int = 0
    accepted: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    reconciled: int = 0
    expired: int = 0
    shed: int = 0
    receipts: int = 0
    adopted: int = 0  # reserved rows the sweep took over (their process died): goal 0 otherwise


def seen_at(job: dict[str, Any]) -> float:
    """When the customer was seen, as the offer's expiry counts it: the bridge's clock bounds
    it (when the bridge received the event, else when it reserved the send), and the event's
    own time, from the sensor's clock, can only make it earlier. A sensor clock ahead of ours
    never lengthens an offer."""
    times = [job["ts"], job.get("event_received"), job.get("event_ts")]
    return float(min(t for t in times if t is not None and math.isfinite(t)))


class Deliverer:
    """Sends reserved intents through one provider. ``start()`` runs the senders and the timer
    (service); without it ``deliver`` sends at once in the caller's thread (tests, CLI)."""

    def __init__(
        self,
        store: BridgeStore,
        provider: Provider,
        options: DeliveryOptions | None = None,
        bucket: TokenBucket | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.provider = provider
        if options is None:
            # Without settings: the provider's own pace (the sandbox has no limit to respect).
            rate = getattr(provider, "default_rate_per_s", DeliveryOptions.rate_per_s)
            options = DeliveryOptions(rate_per_s=rate, burst=max(1, int(rate // 10)))
        self.options = options
        o = self.options
        if bucket is None and store.postgres:
            # several workers may send through this account: they share one bucket
            bucket = SharedBucket(store, provider.account, o.rate_per_s, o.burst)
        self.bucket = bucket or bucket_for(provider.account, o.rate_per_s, o.burst)
        self.clock = clock
        self.counters = DeliveryCounters()
        self._queue: collections.deque[tuple[str, int, float | None]] = collections.deque()
        self._queued: set[tuple[str, int]] = set()
        # Reserved rows this process is handling: handed by the decision worker, queued, in a
        # sender's hands waiting for a token, or waiting for a retry. Their lease in the
        # store is renewed while they are here, so no sweep (ours or another process's) takes
        # them for orphans however long they wait their turn.
        self._held: set[tuple[str, int]] = set()
        self._cv = threading.Condition()
        self._timers: list[tuple[float, str, int]] = []
        self._timer_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._next_sweep = 0.0
        self._next_renew = 0.0

    # -- entry points ------------------------------------------------------------------------
    def deliver(
        self,
        send_id: int,
        to: str | None = None,
        sender: str | None = None,
        body: str | None = None,
        known: dict[str, Any] | None = None,
    ) -> SendResult:
        """Make a reserved offer final (text with brand and opt-out, key, expiry, cost) and
        queue it, or send it now when the deliverer is not running. ``to``, ``sender`` and
        ``body`` are read from the store (kept in the signature for the decision worker).
        ``known``: the row as the decision that just reserved it knows it (the columns of
        ``delivery_job`` that preparing uses), which saves reading it back."""
        now = self.clock()
        early, expires_at = self._prepare(send_id, now, known)
        if early is not None:
            self.release("sends", send_id)
            return early
        if expires_at is None:  # prepared by someone else meanwhile: theirs is the one
            job = self.store.delivery_job("sends", send_id)
            if job is None:
                return SendResult("failed", error="send vanished")
            expires_at = job["expires_at"]
        return self._dispatch("sends", send_id, expires_at, now)

    def prepare(self, send_id: int, now: float) -> SendResult | None:
        """Fix the final text of a reserved offer once; a SendResult if it ends here."""
        return self._prepare(send_id, now)[0]

    def _prepare(
        self, send_id: int, now: float, known: dict[str, Any] | None = None
    ) -> tuple[SendResult | None, float | None]:
        """prepare(), and the offer's expiry when it is known without reading the row again.
        With ``known`` the row is not read (the guarded UPDATE still only prepares a row that
        is reserved and unprepared)."""
        store, o = self.store, self.options
        job = known if known is not None else store.delivery_job("sends", send_id)
        if job is None:
            return SendResult("failed", error="no such send"), None
        if job["state"] != "reserved":
            return SendResult("failed", error=f"send is {job['state']}, not reserved"), None
        if job["idem_key"]:
            return None, job["expires_at"]
        expires_at = seen_at(job) + o.offer_ttl_s
        language = store.customer_language(job["customer_id"]) or language_of_text(
            job["body"], o.default_language
        )
        token = None
        try:
            kind = sender_kind(job["sender"])
            if kind == "alphanumeric":
                token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(8))
            composed = compose(
                job["body"],
                brand=job["store_name"] or "",
                sender=job["sender"],
                language=language,
                link=optout_link(o.optout_base_url, token) if token else None,
                translit=o.transliterate,
                country=country_of(job["phone"]) or job["store_country"],
                prices=o.prices,
                currency=o.currency,
            )
        except SenderError as exc:
            self._finish("sends", send_id, "failed", now, f"invalid sender: {exc}")
            return SendResult("failed", error="invalid sender name"), None
        cost = composed.cost
        fields = {
            "idem_key": f"pb{send_id}-{secrets.token_hex(4)}",
            "body": composed.text,
            "expires_at": expires_at,
            "encoding": cost.encoding,
            "parts": cost.parts,
            "cost": cost.cost,
            "currency": o.currency or None,
            "language": language,
            "updated": now,
        }
        optout = (token, job["customer_id"], now) if token else None
        if not store.prepare_send(send_id, fields, optout):
            return None, None  # prepared by someone else meanwhile
        if cost.parts > o.max_parts:
            reason = f"text takes {cost.parts} SMS parts ({cost.encoding}), max {o.max_parts}"
            self._finish("sends", send_id, "failed", now, reason)
            return SendResult("failed", error=reason), None
        return None, expires_at

    def queue_reply(
        self,
        customer_id: int,
        action: str,
        sender: str,
        body: str,
        key: str,
        language: str,
        now: float,
    ) -> int | None:
        """Queue one non-marketing confirmation (no consent needed); None if ``key`` was used."""
        cost = cost_of(body, None, self.options.prices, self.options.currency)
        reply_id = self.store.insert_reply(
            {
                "idem_key": key,
                "customer_id": customer_id,
                "action": action,
                "ts": now,
                "state": "reserved",
                "provider": self.provider.name,
                "sender": sender,
                "body": body,
                "expires_at": now + self.options.reply_ttl_s,
                "encoding": cost.encoding,
                "parts": cost.parts,
                "cost": cost.cost,
                "currency": self.options.currency or None,
                "language": language,
                "updated": now,
            }
        )
        if reply_id is not None:
            self._dispatch("replies", reply_id, now + self.options.reply_ttl_s, now)
        return reply_id

    def hold(self, table: str, row_ids: list[int]) -> None:
        """These reserved rows are this process's to send (the decision worker calls this at
        its commit, before handing them over), so the sweep leaves them alone."""
        if self._running:
            with self._cv:
                self._held.update((table, i) for i in row_ids)

    def release(self, table: str, row_id: int) -> None:
        """This process no longer handles the row (sent, final, or its handling failed: then
        the sweep adopts it once its lease runs out)."""
        with self._cv:
            self._held.discard((table, row_id))

    # -- queue and senders -------------------------------------------------------------------
    def _dispatch(
        self, table: str, row_id: int, expires_at: float | None, now: float
    ) -> SendResult:
        if not self._running:
            if expires_at is not None and now >= expires_at:
                reason = "the offer expired before it could be sent"
                self._finish(table, row_id, "expired", now, reason)
                return SendResult("failed", error=reason)
            if not self.bucket.acquire(self._deadline(expires_at, now)):
                self._finish(table, row_id, "expired", now, "no token before the offer expired")
                return SendResult("failed", error="expired waiting for a token")
            return self.attempt(table, row_id)
        return self._enqueue(table, row_id, expires_at, now)

    def _deadline(self, expires_at: float | None, now: float) -> float | None:
        return None if expires_at is None else self.bucket.clock() + (expires_at - now)

    def _enqueue(self, table: str, row_id: int, expires_at: float | None, now: float) -> SendResult:
        shed = ""
        state = "shed"
        with self._cv:
            if (table, row_id) in self._queued:
                return SendResult("queued")
            waiting = len(self._queue)
            clock = self.bucket.clock()
            wait = self.bucket.wait_time(clock, ahead=waiting)
            if waiting >= self.options.queue_size:
                shed = f"shed: queue full ({waiting} waiting)"
            elif expires_at is not None and now + self.bucket.wait_time(clock) > expires_at:
                # Even with nobody ahead it could not go out in time: the offer ran out (a
                # retry near its end), not the bridge's capacity.
                state = "expired"
                shed = f"expired: the offer ends in {max(0.0, expires_at - now):.2f} s, before its turn"
            elif expires_at is not None and now + wait > expires_at:
                shed = (
                    f"shed: would wait {wait:.1f} s for its turn, the offer expires in "
                    f"{max(0.0, expires_at - now):.1f} s"
                )
            else:
                self._queue.append((table, row_id, expires_at))
                self._queued.add((table, row_id))
                self._held.add((table, row_id))
                self._cv.notify()
                return SendResult("queued")
        if state == "shed":
            self.counters.shed += 1  # (_finish counts an expiry)
        self._finish(table, row_id, state, now, shed)
        return SendResult("failed", error=shed)

    def queue_depth(self) -> int:
        with self._cv:
            return len(self._queue)

    def _sender_loop(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._queue and not self._stop.is_set():
                    self._cv.wait(0.5)
                if self._stop.is_set():
                    return
                table, row_id, expires_at = self._queue.popleft()
                self._queued.discard((table, row_id))
            try:
                self._take_turn(table, row_id, expires_at)
            except Exception:  # keep the sender alive; the row is recovered by the sweep
                log.exception("%s %s: delivery failed unexpectedly", table, row_id)
                self.release(table, row_id)

    def _take_turn(self, table: str, row_id: int, expires_at: float | None) -> None:
        """Wait for a token, then attempt. The row is read once, after the token (consent,
        erasure and flags are checked then, right before sending, not before a wait); a row
        that turns out blocked has cost a token, which is rare and only slows the queue."""
        now = self.clock()
        if expires_at is not None and now >= expires_at:
            self._finish(table, row_id, "expired", now, "the offer expired before it could be sent")
            return
        if not self.bucket.acquire(self._deadline(expires_at, now), self._stop):
            if not self._stop.is_set():
                self._finish(table, row_id, "expired", self.clock(), "expired waiting for a token")
            return  # stopping: the row stays reserved and is queued again at the next start
        self.attempt(table, row_id)

    # -- one attempt -------------------------------------------------------------------------
    def _blocker(self, table: str, job: dict[str, Any], now: float) -> tuple[str, str] | None:
        """Why this row must not be sent now, as (final state, reason), or None."""
        if job["expires_at"] is not None and now >= job["expires_at"]:
            return "expired", "the offer expired before it could be sent"
        if job["erased"] or not job["phone"]:
            return "failed", "customer erased"
        if table == "sends" and job["sms_consent"] != "active":
            return "failed", "marketing SMS consent revoked before sending"
        if job["number_flag"]:
            return "failed", f"number flagged: {job['number_flag']}"
        if job["attempts"] >= self.options.max_attempts:
            return "failed", f"gave up after {job['attempts']} attempts"
        return None

    def _outgoing(self, table: str, job: dict[str, Any], now: float) -> Outgoing:
        validity = None
        if job["expires_at"] is not None:
            validity = max(1, int(job["expires_at"] - now))
        callback = self.options.status_callback_url
        return Outgoing(
            key=job["idem_key"],
            to=job["phone"],
            sender=job["sender"],
            body=job["body"],
            numeric_id=job["id"] + (REPLY_ID_OFFSET if table == "replies" else 0),
            validity_s=validity,
            status_callback=f"{callback}?key={job['idem_key']}" if callback else None,
            attempt_at=job["attempt_at"] or now,
            provider_id=job["provider_id"],
        )

    def attempt(self, table: str, row_id: int) -> SendResult:
        """One attempt at a reserved row (the caller has its token)."""
        job = self.store.delivery_job(table, row_id)
        if job is None or job["state"] != "reserved":
            self.release(table, row_id)
            if job is None:
                return SendResult("failed", error="no such row")
            return SendResult("queued", error=f"row is {job['state']}")
        now = self.clock()
        blocker = self._blocker(table, job, now)
        if blocker is not None:
            self._finish(table, row_id, blocker[0], now, blocker[1])
            return SendResult("failed", error=blocker[1])
        attempt = self.store.claim_send(table, row_id, now, now + self.options.lease_s)
        self.release(table, row_id)  # 'sending' now, under the attempt's own lease (or not ours)
        if attempt is None:
            return SendResult("queued", error="claimed by another sender")
        job = {**job, "attempts": attempt, "attempt_at": now}
        msg = self._outgoing(table, job, now)
        self.counters.attempts += 1
        try:
            result = self.provider.submit(msg)
        except Exception as exc:  # an adapter bug must not leave the row 'sending'
            log.exception("%s %s: provider adapter raised", table, row_id)
            result = SendResult("unknown", error=f"provider adapter error: {type(exc).__name__}")
        self._record(table, job, attempt, result, self.clock())
        return result

    def _backoff(self, attempt: int) -> float:
        o = self.options
        return float(
            min(o.retry_max_s, o.retry_base_s * 2.0 ** (attempt - 1)) * (0.5 + random.random())
        )

    def _record(
        self, table: str, job: dict[str, Any], attempt: int, result: SendResult, now: float
    ) -> None:
        row_id, o, store = job["id"], self.options, self.store
        label = f"attempt {attempt}"
        if result.status == "accepted":
            self.counters.accepted += 1
            store.move_send(
                table, row_id, ("sending",), "accepted", now,
                f"{label}: accepted", attempt=attempt, provider_id=result.provider_id,
                error=None, accepted_at=now, lease_until=None,
            )  # fmt: skip
        elif result.status == "retry":
            delay = result.retry_after if result.retry_after is not None else self._backoff(attempt)
            due = now + delay
            if attempt >= o.max_attempts:
                self._finish(
                    table, row_id, "failed", now,
                    f"gave up after {attempt} attempts: {result.error}",
                    from_states=("sending",), attempt=attempt,
                )  # fmt: skip
            elif job["expires_at"] is not None and due >= job["expires_at"]:
                self._finish(
                    table, row_id, "expired", now,
                    f"provider unavailable until the offer expired: {result.error}",
                    from_states=("sending",), attempt=attempt,
                )  # fmt: skip
            else:
                self.counters.retried += 1
                if store.move_send(
                    table, row_id, ("sending",), "reserved", now,
                    f"{label}: {result.error}; retry in {delay:.1f} s", attempt=attempt,
                    next_at=due, error=result.error, lease_until=None,
                ):  # fmt: skip
                    self._schedule(due, table, row_id)
        elif result.status == "failed":
            self._finish(
                table, row_id, "failed", now, f"{label}: {result.error}",
                from_states=("sending",), attempt=attempt,
            )  # fmt: skip
            self._act(result.action, job, result.code, now)
        else:  # unknown
            self.counters.unknown += 1
            store.move_send(
                table, row_id, ("sending",), "unknown", now,
                f"{label}: {result.error}; will ask the provider", attempt=attempt,
                error=result.error, lease_until=None,
                next_at=now + max(o.reconcile_after_s, result.retry_after or 0.0),
            )  # fmt: skip
            self._wake.set()
        log.info(
            "%s %s %s -> %s%s",
            "send" if table == "sends" else "reply",
            row_id,
            label,
            result.status,
            f" ({result.error})" if result.error else "",
        )

    def _finish(
        self,
        table: str,
        row_id: int,
        state: str,
        now: float,
        reason: str,
        from_states: tuple[str, ...] | None = None,
        attempt: int | None = None,
    ) -> bool:
        if state == "expired":
            self.counters.expired += 1
        elif state == "failed":
            self.counters.failed += 1
        self.release(table, row_id)
        return self.store.move_send(
            table, row_id, from_states or FROM[state], state, now, reason,
            attempt=attempt, error=reason, final_at=now, next_at=None, lease_until=None,
        )  # fmt: skip

    def _act(self, action: str | None, job: dict[str, Any], code: str | None, now: float) -> None:
        """What a provider's refusal means for the customer."""
        if action == "opt_out":
            ledger.revoke(
                self.store, job["customer_id"], "sms", at=now,
                proof={"source": "provider", "provider": self.provider.name, "code": code},
            )  # fmt: skip
            log.info("customer %s: provider says unsubscribed; consent revoked", job["customer_id"])
        elif action == "invalid_number":
            self.store.flag_number(
                job["customer_id"], "provider: not a valid mobile number", code, now
            )
            log.info("customer %s: number flagged by the provider (%s)", job["customer_id"], code)

    # -- reconciliation and receipts ---------------------------------------------------------
    def reconcile(self, table: str, row: dict[str, Any], now: float) -> str:
        """Ask the provider about one unknown row; returns the row's new state."""
        o = self.options
        attempt_at = row["attempt_at"] or row["updated"] or now
        expires_at = row["expires_at"]
        if not self.provider.can_reconcile:
            return self._later(table, row, now, "no status API: waiting for a receipt")
        if now - attempt_at < o.reconcile_after_s:
            self.store.move_send(
                table, row["id"], ("unknown",), "unknown", now, "too early to ask",
                next_at=attempt_at + o.reconcile_after_s,
            )  # fmt: skip
            return "unknown"
        job = self.store.delivery_job(table, row["id"]) or row
        if not job.get("phone"):
            return self._later(table, row, now, "customer erased: cannot look the message up")
        status: StatusResult = self.provider.status(self._outgoing(table, job, now))
        self.counters.reconciled += 1
        if status.status == "not_found":
            if expires_at is not None and now >= expires_at:
                self._finish(table, row["id"], "expired", now,
                             "the provider never accepted it and the offer expired")  # fmt: skip
                return "expired"
            if row["attempts"] >= o.max_attempts:
                self._finish(table, row["id"], "failed", now,
                             f"the provider never accepted it after {row['attempts']} attempts")  # fmt: skip
                return "failed"
            if self.store.move_send(
                table, row["id"], ("unknown",), "reserved", now,
                "the provider has no such message: safe to send again", next_at=None,
            ):  # fmt: skip
                self._dispatch(table, row["id"], expires_at, now)
            return "reserved"
        if status.status == "error":
            return self._later(table, row, now, status.error or "status API unavailable")
        self.apply_status(table, row, status, now, "status API")
        return status.status

    def _later(self, table: str, row: dict[str, Any], now: float, why: str) -> str:
        o = self.options
        attempt_at = row["attempt_at"] or now
        end = (row["expires_at"] or attempt_at) + o.give_up_unknown_s
        if now >= end:
            # Never resent: it may have gone out. It stays 'unknown' with the reason.
            self.store.move_send(
                table, row["id"], ("unknown",), "unknown", now,
                f"not reconciled: {why}; not resent", next_at=None, final_at=now,
            )  # fmt: skip
            return "unknown"
        delay = min(300.0, max(o.reconcile_after_s, (now - attempt_at) / 2))
        self.store.move_send(
            table, row["id"], ("unknown",), "unknown", now, why, next_at=now + delay
        )
        return "unknown"

    def apply_status(
        self, table: str, row: dict[str, Any], status: StatusResult, now: float, source: str
    ) -> bool:
        """Move a row as a status lookup or receipt says (the provider's word wins)."""
        target = status.status
        if target not in FROM:
            return False
        fields: dict[str, Any] = {}
        if status.provider_id:
            fields["provider_id"] = status.provider_id
        if target == "accepted":
            fields.update(accepted_at=now, error=None, next_at=None, lease_until=None)
        else:
            fields.update(final_at=now, next_at=None, lease_until=None)
            if status.error:
                fields["error"] = status.error
        moved = self.store.move_send(
            table, row["id"], FROM[target], target, now,
            f"{source}: {target}" + (f" ({status.error})" if status.error else ""), **fields,
        )  # fmt: skip
        if moved and target in ("failed", "undelivered"):
            self._act(status.action, row, status.code, now)
        return moved

    def on_receipt(
        self,
        status: StatusResult,
        now: float,
        key: str | None = None,
        provider_id: str | None = None,
    ) -> bool:
        """A delivery receipt (status callback) for one of our messages."""
        found = self.store.find_send(self.provider.name, provider_id, key) if key else None
        if found is None and provider_id:
            found = self.store.find_send(self.provider.name, provider_id)
        if found is None:
            return False
        self.counters.receipts += 1
        table, row = found
        return self.apply_status(table, row, status, now, "receipt")

    # -- timer, sweep, recovery ----------------------------------------------------------------
    def _schedule(self, due: float, table: str, row_id: int) -> None:
        with self._timer_lock:
            heapq.heappush(self._timers, (due, table, row_id))
        if self._running:
            with self._cv:
                self._held.add((table, row_id))
        self._wake.set()

    def pump(self, now: float | None = None) -> None:
        """Due retries, then (at most every second) the sweep: leases that ran out, unknown
        rows to reconcile, reserved rows that expired. The timer thread calls this."""
        now = self.clock() if now is None else now
        due: list[tuple[str, int]] = []
        with self._timer_lock:
            while self._timers and self._timers[0][0] <= now:
                _, table, row_id = heapq.heappop(self._timers)
                due.append((table, row_id))
        for table, row_id in due:
            job = self.store.delivery_job(table, row_id)
            if job is not None and job["state"] == "reserved":
                self._dispatch(table, row_id, job["expires_at"], now)
        if now >= self._next_renew:
            self._next_renew = now + self.options.orphan_after_s / 3
            self.renew(now)
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self.sweep(now)

    def renew(self, now: float) -> None:
        """Renew the lease of every reserved row this process holds (one statement per 500),
        and forget those that are no longer reserved."""
        with self._cv:
            held = sorted(self._held)
        until = now + self.options.orphan_after_s
        for table in ("sends", "replies"):
            ids = [i for t, i in held if t == table]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                still = self.store.hold_reserved(table, chunk, until)
                gone = {(table, i) for i in chunk if i not in still}
                if gone:  # (one that went back to reserved meanwhile is queued or scheduled)
                    with self._timer_lock:
                        gone -= {(t, i) for _, t, i in self._timers}
                    with self._cv:
                        self._held.difference_update(gone - self._queued)

    def sweep(self, now: float) -> None:
        store = self.store
        for table in ("sends", "replies"):
            for row in store.stale_sending(table, now):
                store.move_send(
                    table, row["id"], ("sending",), "unknown", now,
                    "attempt cut short (bridge stopped or hung): outcome unknown",
                    next_at=(row["attempt_at"] or now) + self.options.reconcile_after_s,
                    lease_until=None,
                )  # fmt: skip
            for row in store.sends_in_state(table, "unknown", due_by=now, limit=200):
                if row["final_at"] is None:
                    try:
                        self.reconcile(table, row, now)
                    except Exception:
                        log.exception("%s %s: reconciliation failed; will retry", table, row["id"])
            for row in expired_reserved(store, table, now):
                self._finish(
                    table, row["id"], "expired", now, "the offer expired before it could be sent"
                )
            self._adopt_orphans(table, now)

    def _adopt_orphans(self, table: str, now: float) -> None:
        """Reserved rows nobody is handling (their process died and may never start again):
        overdue by ``orphan_after_s``, their lease (renewed by the process that holds them)
        run out, and not held here. A safety net: a live bridge never leaves a row to it, so
        ``counters.adopted`` stays 0 unless a process died."""
        if not self._running:
            return
        after = self.options.orphan_after_s
        rows = self.store.orphaned_reserved(table, now, now - after)
        with self._timer_lock:
            scheduled = {(t, i) for _, t, i in self._timers}
        for row in rows:
            key = (table, row["id"])
            with self._cv:
                if key in self._held or key in self._queued:
                    continue
            if key in scheduled:
                continue
            if table == "sends" and not row["idem_key"] and self.prepare(row["id"], now):
                continue
            job = self.store.delivery_job(table, row["id"])
            if job is not None and job["state"] == "reserved":
                self.counters.adopted += 1
                log.info("%s %s: adopted (reserved, unhandled for %.0f s)", table, row["id"], after)
                self._dispatch(table, row["id"], job["expires_at"], now)

    def recover(self, now: float | None = None) -> dict[str, int]:
        """At start: attempts cut short become unknown (reconciled), reserved intents are
        prepared and queued again; nothing is sent twice and nothing is left behind."""
        now = self.clock() if now is None else now
        counts = {"unknown": 0, "requeued": 0, "expired": 0}
        for table in ("sends", "replies"):
            for row in self.store.stale_sending(table, now):
                if self.store.move_send(
                    table, row["id"], ("sending",), "unknown", now,
                    "bridge restarted during the attempt: outcome unknown",
                    next_at=(row["attempt_at"] or now) + self.options.reconcile_after_s,
                    lease_until=None,
                ):  # fmt: skip
                    counts["unknown"] += 1
            for row in self.store.sends_in_state(table, "reserved", limit=1_000_000):
                if table == "sends" and not row["idem_key"]:
                    if self.prepare(row["id"], now) is not None:
                        continue
                    row = self.store.delivery_job(table, row["id"]) or row
                if row["expires_at"] is not None and row["expires_at"] <= now:
                    self._finish(
                        table,
                        row["id"],
                        "expired",
                        now,
                        "the offer expired while the bridge was down",
                    )
                    counts["expired"] += 1
                elif row["next_at"] and row["next_at"] > now:
                    self._schedule(row["next_at"], table, row["id"])
                    counts["requeued"] += 1
                else:
                    self._dispatch(table, row["id"], row["expires_at"], now)
                    counts["requeued"] += 1
        if any(counts.values()):
            log.info("delivery recovery: %s", counts)
        return counts

    def _timer_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.pump()
            except Exception:
                log.exception("delivery timer failed; retrying")

    def start(self) -> None:
        if self._running:
            return
        self._stop.clear()
        self._running = True
        self.recover()
        for i in range(self.options.senders):
            t = threading.Thread(target=self._sender_loop, name=f"sms-sender-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._timer_loop, name="sms-timer", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        with self._cv:
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads.clear()
        self._running = False
        with self._cv:
            # Still 'reserved' in the store: the next start queues them again.
            self._queue.clear()
            self._queued.clear()
            self._held.clear()
