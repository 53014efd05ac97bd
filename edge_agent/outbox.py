"""Durable outbox: every event is on disk before it is published and leaves only on PUBACK.

paho-mqtt keeps its session in memory, so a restart or a power cut would lose what the broker
has not acknowledged. The outbox is a SQLite file in WAL mode with ``synchronous=FULL`` (an event
is fsynced before we publish it: events are rare, a lost arrival is not). Bounded by count and
bytes; when full the oldest event is dropped and counted, visibly, in ``dropped``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

__all__ = ["Outbox", "OutboxItem"]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    topic: str
    payload: str
    event_id: str


class Outbox:
    """A bounded, durable FIFO of (topic, payload) waiting for the broker's acknowledgement."""

    def __init__(self, path: str | Path, limit: int = 100_000, max_bytes: int = 64 << 20) -> None:
        if limit < 1 or max_bytes < 1024:
            raise ValueError("outbox limit must be >= 1 and max_bytes >= 1024")
        self.limit = limit
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=FULL")
        if "outbox" not in self.db.table_names():
            # AUTOINCREMENT: ids must never be reused after an ack deletes the newest row, or
            # the uplink's "sent up to id N" cursor would skip a new event that got an old id.
            self.db.execute(
                "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL "
                "UNIQUE, topic TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL)"
            )
        if "meta" not in self.db.table_names():
            self.db["meta"].create({"key": str, "value": int}, pk="key")
        self._depth, self._bytes = self._measure()

    def _measure(self) -> tuple[int, int]:
        row = self.db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox")
        n, b = row.fetchone()
        return int(n), int(b)

    @property
    def dropped(self) -> int:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        return int(row[0]) if row else 0

    def depth(self) -> int:
        return self._depth

    def add(self, topic: str, payload: str, event_id: str) -> int:
        """Store an event durably; returns its outbox id. Drops the oldest when full."""
        size = len(payload)
        with self._lock, self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            dropped = 0
            while self._depth > 0 and (
                self._depth >= self.limit or self._bytes + size > self.max_bytes
            ):
                oldest = self.db.execute(
                    "SELECT id, length(payload) FROM outbox ORDER BY id LIMIT 1"
                ).fetchone()
                self.db.execute("DELETE FROM outbox WHERE id=?", [oldest[0]])
                self._depth -= 1
                self._bytes -= int(oldest[1])
                dropped += 1
            if dropped:
                self.db.execute(
                    "INSERT INTO meta(key, value) VALUES('dropped', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                    [dropped],
                )
            cur = self.db.execute(
                "INSERT OR IGNORE INTO outbox(event_id, topic, payload, created) VALUES (?,?,?,?)",
                [event_id, topic, payload, time.time()],
            )
            if cur.rowcount:
                self._depth += 1
                self._bytes += size
                return int(cur.lastrowid or 0)
            row = self.db.execute("SELECT id FROM outbox WHERE event_id=?", [event_id]).fetchone()
            return int(row[0])

    def pending(self, after_id: int = 0, limit: int = 500) -> list[OutboxItem]:
        """Events not yet acknowledged, oldest first, with id > after_id."""
        with self._lock:
            rows = self.db.execute(
                "SELECT id, topic, payload, event_id FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                [after_id, limit],
            ).fetchall()
        return [OutboxItem(int(r[0]), r[1], r[2], r[3]) for r in rows]

    def ack(self, item_id: int) -> None:
        """The broker acknowledged the event: forget it."""
        with self._lock, self.db.conn:
            cur = self.db.execute(
                "DELETE FROM outbox WHERE id=? RETURNING length(payload)", [item_id]
            )
            row = cur.fetchone()
            if row is not None:
                self._depth -= 1
                self._bytes -= int(row[0])

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
