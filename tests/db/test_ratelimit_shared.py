"""The provider's rate kept across bridge workers: a token bucket in the PostgreSQL store.

Two buckets on two store connections (as two worker processes have) book tokens for one
account; together they keep its rate: every booking is one atomic UPDATE."""

from __future__ import annotations

import threading

from cloud_bridge.delivery.ratelimit import SharedBucket
from cloud_bridge.storage.store import BridgeStore


def test_two_workers_share_one_rate(db_location) -> None:  # type: ignore[no-untyped-def]
    a, b = BridgeStore(db_location), BridgeStore(db_location)
    try:
        ba, bb = SharedBucket(a, "acct", rate=10.0), SharedBucket(b, "acct", rate=10.0)
        other = SharedBucket(b, "other-account", rate=10.0)
        now = 1_000_000.0
        waits: list[float] = []
        lock = threading.Lock()

        def book(bucket: SharedBucket) -> None:
            for _ in range(25):
                w = bucket.reserve(now)
                assert w is not None
                with lock:
                    waits.append(w)

        threads = [threading.Thread(target=book, args=(x,)) for x in (ba, bb)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # 50 tokens at 10/s from one instant: exactly one every 0.1 s, none given twice.
        assert sorted(round(w, 6) for w in waits) == [round(i * 0.1, 6) for i in range(50)]
        assert ba.stats.taken + bb.stats.taken == 50
        # Another account has its own bucket; looking does not book.
        assert other.wait_time(now) == 0.0
        assert other.reserve(now) == 0.0
        assert abs(ba.wait_time(now) - 5.0) < 1e-6
        # A deadline before the next free token books nothing.
        assert ba.reserve(now, deadline=now + 4.0) is None
        assert abs(bb.wait_time(now) - 5.0) < 1e-6
        booked = ba.reserve(now, deadline=now + 5.0)
        assert booked is not None and abs(booked - 5.0) < 1e-6
    finally:
        a.close()
        b.close()


def test_first_booking_races_another_worker_creating_the_bucket(db_location) -> None:  # type: ignore[no-untyped-def]
    """Worker A finds no bucket row; before it creates one, worker B creates it and books.
    A must still get the next token, not be told 'refused'."""
    a, b = BridgeStore(db_location), BridgeStore(db_location)
    try:
        ba, bb = SharedBucket(a, "race", rate=10.0), SharedBucket(b, "race", rate=10.0)
        now = 2_000_000.0
        real_execute = a.db.execute
        raced: list[float | None] = []

        def execute(sql, params=None):  # type: ignore[no-untyped-def]
            cursor = real_execute(sql, params) if params is not None else real_execute(sql)
            if sql.startswith("UPDATE bridge_meta") and not raced:
                rows = cursor.fetchall()
                assert rows == []  # A's first UPDATE found no row
                raced.append(bb.reserve(now))  # B creates the bucket and books token 0

                class Empty:
                    def fetchone(self):  # type: ignore[no-untyped-def]
                        return None

                return Empty()
            return cursor

        a.db.execute = execute  # type: ignore[method-assign]
        try:
            got = ba.reserve(now)
        finally:
            a.db.execute = real_execute  # type: ignore[method-assign]
        assert raced == [0.0]
        assert got is not None and abs(got - 0.1) < 1e-6
    finally:
        a.close()
        b.close()
