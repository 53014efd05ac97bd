"""Token buckets per provider account, shared by every sender of the process.

The bucket is a GCRA (generic cell rate algorithm) in its "theoretical arrival time" form: one
float per bucket, exact for any rate, and able to tell a caller how long the N-th waiter in a
queue will wait, which is what shedding needs ("this offer would expire before its turn").
``reserve`` books a token and returns how long to wait for it; ``wait_time`` only looks.

The core takes ``now`` as an argument; ``acquire`` is the thin blocking wrapper.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "TokenBucket",
    "BucketStats",
    "BucketStore",
    "SharedBucket",
    "bucket_for",
    "reset_buckets",
]


@dataclass
class BucketStats:
    taken: int = 0
    first: float | None = None  # clock time of the first token taken
    last: float | None = None  # clock time the last token taken became available

    def took(self, at: float) -> None:
        """A token taken, available at clock time ``at``."""
        self.taken += 1
        if self.first is None:
            self.first = at
        self.last = at

    def utilisation(self, rate: float, burst: int) -> float | None:
        """Tokens taken over tokens the bucket could give between the first and the last."""
        if self.first is None or self.last is None or self.taken < 2:
            return None
        capacity = burst + rate * (self.last - self.first)
        return self.taken / capacity if capacity > 0 else None


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` at once."""

    rate: float
    burst: int = 1
    clock: Callable[[], float] = time.monotonic
    stats: BucketStats = field(default_factory=BucketStats)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")
        self._interval = 1.0 / self.rate
        self._tolerance = (self.burst - 1) * self._interval
        self._tat = float("-inf")  # theoretical arrival time of the next token
        self._lock = threading.Lock()

    def wait_time(self, now: float, ahead: int = 0) -> float:
        """Seconds until a token is free for a caller with ``ahead`` callers before it."""
        with self._lock:
            tat = max(self._tat, now)
            return max(0.0, tat + ahead * self._interval - self._tolerance - now)

    def reserve(self, now: float, deadline: float | None = None) -> float | None:
        """Book the next token; returns the seconds to wait until it is ours (0 = now), or
        None, booking nothing, when it would only be ours after ``deadline``."""
        with self._lock:
            tat = max(self._tat, now)
            wait = max(0.0, tat - self._tolerance - now)
            if deadline is not None and now + wait > deadline:
                return None
            self._tat = tat + self._interval
            self.stats.took(now + wait)
            return wait

    def try_take(self, now: float) -> bool:
        """Take a token only if one is free now."""
        return self.reserve(now, deadline=now) is not None

    def acquire(self, deadline: float | None = None, stop: threading.Event | None = None) -> bool:
        """Block until a token is ours. False (nothing booked) if it would come after
        ``deadline`` (clock time); False too when ``stop`` is set while waiting."""
        wait = self.reserve(self.clock(), deadline)
        if wait is None:
            return False
        if wait > 0:
            if stop is not None:
                return not stop.wait(wait)
            time.sleep(wait)
        return True

    def utilisation(self) -> float | None:
        return self.stats.utilisation(self.rate, self.burst)


class BucketStore(Protocol):
    """Where a SharedBucket keeps its arrival time (BridgeStore's ``bucket_tat``/``bucket_book``)."""

    def bucket_tat(self, name: str) -> float: ...

    def bucket_book(
        self, name: str, now: float, interval: float, tolerance: float, deadline: float | None
    ) -> float | None: ...


class SharedBucket(TokenBucket):
    """The same bucket kept in the database, for several bridge workers sending through one
    provider account: its one float (the theoretical arrival time) lives in ``bridge_meta``
    and every booking is one atomic UPDATE, so N workers together keep the account's rate.
    The clock is wall time (workers on several hosts need NTP, as the provider's does)."""

    def __init__(self, store: BucketStore, account: str, rate: float, burst: int = 1) -> None:
        super().__init__(rate, burst, clock=time.time)
        self.store = store
        self.name = f"ratelimit:{account}"

    def wait_time(self, now: float, ahead: int = 0) -> float:
        tat = self.store.bucket_tat(self.name)
        return max(0.0, max(tat, now) + ahead * self._interval - self._tolerance - now)

    def reserve(self, now: float, deadline: float | None = None) -> float | None:
        tat = self.store.bucket_book(self.name, now, self._interval, self._tolerance, deadline)
        if tat is None:
            return None
        wait = max(0.0, tat - self._interval - self._tolerance - now)
        with self._lock:
            self.stats.took(now + wait)
        return wait


_buckets: dict[str, TokenBucket] = {}
_registry_lock = threading.Lock()


def bucket_for(account: str, rate: float, burst: int = 1) -> TokenBucket:
    """The process-wide bucket of a provider account (created on first use; a later call with
    another rate or burst gets a fresh bucket with the new numbers)."""
    with _registry_lock:
        bucket = _buckets.get(account)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = _buckets[account] = TokenBucket(rate, burst)
        return bucket


def reset_buckets() -> None:
    """Forget every shared bucket (tests)."""
    with _registry_lock:
        _buckets.clear()
