"""Durable outbox: every event is on disk before it is published and leaves only when the
bridge's end-to-end receipt names it (``confirm``), or, talking to a bridge that sends no
receipts, on the broker's PUBACK (``ack``).

paho-mqtt keeps its session in memory, so a restart or a power cut would lose what the broker
has not acknowledged. The outbox is one SQLite file, bounded by count and bytes; when full the
oldest event is dropped and counted, visibly and persistently, in ``dropped``.

Durability, chosen deliberately (the "why" for each pragma is next to it in ``_configure``):

* ``journal_mode=WAL``: an add is a sequential append (kind to SD cards) and readers never
  block the writer.
* ``synchronous=FULL`` for ``add``: the WAL is fsynced at every commit, so an event the agent
  has accepted survives a power cut. (WAL + NORMAL would be corruption-safe too, but may lose
  the last commits; a lost arrival is a lost offer.)
* ``synchronous=NORMAL`` for ``ack`` and ``confirm``: forgetting an event need not be durable. A lost ack only
  means the event is published again after a reboot and the bridge drops it by ``event_id``;
  not fsyncing acks halves the fsyncs under load and keeps paho's network thread (which calls
  ``ack``) from waiting on the disk. The next FULL commit syncs those frames too.

A file that cannot be used at start (corrupt, or write-locked by some other process for longer
than ``busy_timeout_s``) is moved aside with its ``-wal``/``-shm`` (``outbox.db.corrupt-<UTC>``
or ``.locked-<UTC>``), an ERROR is logged, a fresh outbox is created, whatever rows can still be
read from the old file are re-queued, and the event is counted in ``recovered`` (persisted).
Another live edge agent on the same outbox is refused with ``OutboxInUse`` instead (a lock on
``outbox.db.lock``): moving a running agent's outbox away would be wrong.

Errors: ``OutboxError`` (cannot open or create the outbox at all, e.g. permission denied or
disk full) > ``OutboxInUse``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import sqlite_utils

__all__ = ["Outbox", "OutboxError", "OutboxInUse", "OutboxItem"]

log = logging.getLogger(__name__)

# SQLite primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF) that make a file unusable.
_BUSY, _LOCKED, _CORRUPT, _NOTADB = 5, 6, 11, 26
SALVAGE_ROWS_MAX = 1_000_000
SQLITE_HEADER = b"SQLite format 3\x00"


class OutboxError(RuntimeError):
    """The outbox cannot be opened or created (permissions, disk full, I/O error)."""


class OutboxInUse(OutboxError):
    """Another live process (a second edge agent?) has this outbox open."""


class _Unusable(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "corrupt" or "locked"
        self.detail = detail


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    topic: str
    payload: str
    event_id: str


class Outbox:
    """A bounded, durable FIFO of (topic, payload) waiting for the broker's acknowledgement."""

    def __init__(
        self,
        path: str | Path,
        limit: int = 100_000,
        max_bytes: int = 64 << 20,
        busy_timeout_s: float = 5.0,
    ) -> None:
        if limit < 1 or max_bytes < 1024:
            raise ValueError("outbox limit must be >= 1 and max_bytes >= 1024")
        self.path = Path(path)
        self.limit = limit
        self.max_bytes = max_bytes
        self.busy_timeout_s = busy_timeout_s
        self.moved_aside: Path | None = None  # where a bad file went at this start, if anywhere
        self._lock = threading.Lock()
        self._sync = "FULL"  # the connection's current synchronous level
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._guard = self._claim()
        try:
            try:
                self.db = self._open()
            except _Unusable as bad:
                self.db = self._recover(bad)
        except _Unusable as again:
            self._guard.close()
            raise OutboxError(f"fresh outbox {self.path} is {again.kind}: {again.detail}") from None
        except BaseException:
            self._guard.close()
            raise
        self._depth, self._bytes = self._measure()

    # opening -----------------------------------------------------------------------------
    def _claim(self) -> IO[bytes]:
        """One agent per outbox: an advisory lock held while open, released even on kill -9."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fh = open(lock_path, "a+b")  # noqa: SIM115 - held for the outbox's lifetime
        except OSError as exc:
            raise OutboxError(f"cannot open outbox lock {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise OutboxInUse(
                f"outbox {self.path} is in use by another process (is a second edge agent "
                f"running?); refusing to touch it"
            ) from None
        return fh

    def _connect(self, path: Path) -> sqlite3.Connection:
        return sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=self.busy_timeout_s
        )

    def _open(self) -> sqlite_utils.Database:
        """Open (or create) the file and prove it is readable and writable."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            head = b""
        except OSError as exc:
            raise OutboxError(f"cannot read outbox {self.path}: {exc.strerror}") from None
        if head and head != SQLITE_HEADER:
            # Caught before SQLite opens it: closing a connection on such a file deletes its
            # -wal and -shm, which we want to keep with it for a post-mortem.
            raise _Unusable("corrupt", "not an SQLite file (bad header)")
        conn = self._connect(self.path)
        try:
            db = sqlite_utils.Database(conn)
            self._configure(db)
            check = db.execute("PRAGMA quick_check").fetchall()
            if [tuple(r) for r in check] != [("ok",)]:
                raise _Unusable("corrupt", "; ".join(str(r[0]) for r in check[:3]))
            # A write transaction now, so a file some other process keeps write-locked is
            # found at start rather than at the first event.
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                self._create_tables(db)
            return db
        except sqlite3.DatabaseError as exc:
            conn.close()
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in (_BUSY, _LOCKED):
                raise _Unusable("locked", f"still locked after {self.busy_timeout_s:g} s") from None
            if code in (_CORRUPT, _NOTADB):
                raise _Unusable("corrupt", str(exc)) from None
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from None
        except _Unusable:
            conn.close()
            raise

    @staticmethod
    def _configure(db: sqlite_utils.Database) -> None:
        db.execute("PRAGMA journal_mode=WAL")  # appends + readers that never block the writer
        db.execute("PRAGMA synchronous=FULL")  # an accepted event survives a power cut
        # Truncate the WAL back to 4 MiB after checkpoints: an outage backlog must not leave
        # a large WAL file behind on a small SD card.
        db.execute("PRAGMA journal_size_limit=4194304")

    @staticmethod
    def _create_tables(db: sqlite_utils.Database) -> None:
        # AUTOINCREMENT: ids must never be reused after an ack deletes the newest row, or the
        # uplink's "sent up to id N" cursor would skip a new event that got an old id.
        db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id "
            "TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)")

    def _recover(self, bad: _Unusable) -> sqlite_utils.Database:
        """Move the unusable file aside, start fresh, re-queue what can still be read, count it."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}.{bad.kind}-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                try:
                    os.replace(src, Path(str(aside) + suffix))
                except OSError as exc:
                    raise OutboxError(
                        f"outbox {self.path} is {bad.kind} ({bad.detail}) and cannot be moved "
                        f"aside: {exc.strerror}"
                    ) from None
        self.moved_aside = aside
        db = self._open()
        rows, meta = self._salvage(aside)
        with self._lock, db.conn:
            db.execute("BEGIN IMMEDIATE")
            for event_id, topic, payload, created in rows:
                db.execute(
                    "INSERT OR IGNORE INTO outbox(event_id, topic, payload, created) "
                    "VALUES (?,?,?,?)",
                    [event_id, topic, payload, created],
                )
            counts = {"dropped": meta.get("dropped", 0), "recovered": meta.get("recovered", 0) + 1}
            for key, value in counts.items():
                db.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [key, value],
                )
        log.error(
            "outbox %s was %s (%s): moved it aside to %s and started a fresh outbox; "
            "%d pending event(s) could be read back and are queued again (recovery #%d)",
            self.path,
            bad.kind,
            bad.detail,
            aside,
            len(rows),
            counts["recovered"],
        )
        return db

    def _salvage(self, aside: Path) -> tuple[list[tuple[str, str, str, float]], dict[str, int]]:
        """Whatever rows and counters can still be read from a moved-aside file (best effort)."""
        rows: list[tuple[str, str, str, float]] = []
        meta: dict[str, int] = {}
        try:
            with open(aside, "rb") as fh:
                if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    return rows, meta
        except OSError:
            return rows, meta
        try:
            conn = sqlite3.connect(f"file:{aside}?mode=ro", uri=True, timeout=0.5)
        except sqlite3.Error:
            return rows, meta
        try:
            with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
                for key, value in conn.execute("SELECT key, value FROM meta"):
                    meta[str(key)] = int(value)
            with contextlib.suppress(sqlite3.Error):
                cur = conn.execute(
                    "SELECT event_id, topic, payload, created FROM outbox ORDER BY id LIMIT ?",
                    [SALVAGE_ROWS_MAX],
                )
                for row in cur:  # stops at the first unreadable page; keeps what came before
                    if all(isinstance(v, str) for v in row[:3]):
                        rows.append((row[0], row[1], row[2], float(row[3] or time.time())))
        finally:
            conn.close()
        return rows, meta

    def _synchronous(self, level: str) -> None:
        if self._sync != level:  # outside any transaction: SQLite ignores it inside one
            self.db.execute(f"PRAGMA synchronous={level}")
            self._sync = level

    def _measure(self) -> tuple[int, int]:
        row = self.db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox")
        n, b = row.fetchone()
        return int(n), int(b)

    def _meta(self, key: str) -> int:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", [key]).fetchone()
        return int(row[0]) if row else 0

    # public ------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Events dropped because the outbox was full, since it was created."""
        return self._meta("dropped")

    @property
    def recovered(self) -> int:
        """Times an unusable outbox file was moved aside and replaced by a fresh one."""
        return self._meta("recovered")

    def depth(self) -> int:
        return self._depth

    def add(self, topic: str, payload: str, event_id: str) -> int:
        """Store an event durably; returns its outbox id. Drops the oldest when full."""
        size = len(payload)
        with self._lock, self.db.conn:
            self._synchronous("FULL")
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
        """The broker acknowledged the event: forget it (not fsynced: see the module doc)."""
        with self._lock, self.db.conn:
            self._synchronous("NORMAL")
            cur = self.db.execute(
                "DELETE FROM outbox WHERE id=? RETURNING length(payload)", [item_id]
            )
            row = cur.fetchone()
            if row is not None:
                self._depth -= 1
                self._bytes -= int(row[0])

    def confirm(self, event_ids: list[str]) -> list[int]:
        """The bridge has these events (its receipt): forget them; returns the outbox ids
        forgotten (unknown or already forgotten ids are ignored). Not fsynced, as ``ack``."""
        gone: list[int] = []
        if not event_ids:
            return gone
        with self._lock, self.db.conn:
            self._synchronous("NORMAL")
            for start in range(0, len(event_ids), 500):
                chunk = event_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                cur = self.db.execute(
                    f"DELETE FROM outbox WHERE event_id IN ({marks}) RETURNING id, length(payload)",
                    chunk,
                )
                for row in cur.fetchall():
                    gone.append(int(row[0]))
                    self._depth -= 1
                    self._bytes -= int(row[1])
        return gone

    def get(self, ids: list[int]) -> list[OutboxItem]:
        """The rows among ``ids`` still in the outbox, oldest first."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self.db.execute(
                f"SELECT id, topic, payload, event_id FROM outbox WHERE id IN ({marks}) ORDER BY id",
                ids,
            ).fetchall()
        return [OutboxItem(int(r[0]), r[1], r[2], r[3]) for r in rows]

    def flag(self, key: str) -> int:
        """A small persistent setting (e.g. ``receipts``: the bridge announced them)."""
        return self._meta(key)

    def set_flag(self, key: str, value: int) -> None:
        with self._lock, self.db.conn:
            self.db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
            self._guard.close()
