"""Token bucket (GCRA): rate, burst, look-ahead for shedding, deadlines, sharing."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_bridge.delivery.ratelimit import TokenBucket, bucket_for, reset_buckets


def test_rate_and_burst() -> None:
    b = TokenBucket(rate=10, burst=3)
    waits = [b.reserve(100.0) for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])
    assert b.wait_time(100.0) == pytest.approx(0.4)
    assert b.wait_time(100.0, ahead=5) == pytest.approx(0.9)
    assert b.wait_time(101.0) == 0.0  # a second later the bucket is full again


def test_deadline_books_nothing() -> None:
    b = TokenBucket(rate=1, burst=1)
    assert b.reserve(0.0) == 0.0
    assert b.reserve(0.0, deadline=0.5) is None  # next token at 1.0
    assert b.reserve(0.0, deadline=1.0) == pytest.approx(1.0)
    assert not b.try_take(1.5)
    assert b.try_take(2.0)


def test_acquire_blocks_and_respects_stop() -> None:
    b = TokenBucket(rate=20, burst=1)
    start = time.monotonic()
    for _ in range(5):
        assert b.acquire()
    assert time.monotonic() - start == pytest.approx(0.2, abs=0.08)
    slow = TokenBucket(rate=0.5, burst=1)
    assert slow.acquire()
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    assert not slow.acquire(stop=stop)
    assert not slow.acquire(deadline=time.monotonic() + 0.1)


def test_shared_per_account() -> None:
    reset_buckets()
    a = bucket_for("twilio:AC1", 50, 1)
    assert bucket_for("twilio:AC1", 50, 1) is a
    assert bucket_for("twilio:AC2", 50, 1) is not a
    assert bucket_for("twilio:AC1", 25, 1) is not a  # reconfigured
    reset_buckets()


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(0.5, 500),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_never_more_than_rate_allows(rate: float, burst: int, gaps: list[float]) -> None:
    """Tokens handed out by any time t never exceed burst + rate * (t - first)."""
    b = TokenBucket(rate=rate, burst=burst)
    now, grants = 0.0, []
    for gap in gaps:
        now += gap
        grants.append(now + b.reserve(now))
    first = grants[0]
    for i, t in enumerate(sorted(grants)):
        assert i + 1 <= burst + rate * (t - first) + 1e-6
    u = b.utilisation()
    assert u is None or u <= 1.0 + 1e-9
