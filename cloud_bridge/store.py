"""The bridge's store: all SQLite access goes through BridgeStore (sqlite-utils, WAL, migrations).

Migrations are numbered and forward-only; ``schema_migrations`` records which ran. Writes that
must be atomic across threads or processes (event dedupe, cap reservation) use single
statements with unique keys or ``BEGIN IMMEDIATE`` transactions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from cloud_bridge.decide import Campaign, Customer, StoreInfo

__all__ = ["BridgeStore", "MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: the thin chain
    """
    CREATE TABLE stores (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, timezone TEXT NOT NULL, country TEXT NOT NULL,
        sender_name TEXT NOT NULL, send_start TEXT NOT NULL DEFAULT '09:00',
        send_end TEXT NOT NULL DEFAULT '21:00', site_key TEXT NOT NULL,
        roster_version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE sensors (
        store_id TEXT NOT NULL, sensor_id TEXT NOT NULL, state TEXT, agent_version TEXT,
        roster_version INTEGER, last_seen REAL, last_stats TEXT,
        PRIMARY KEY (store_id, sensor_id)
    );
    CREATE TABLE customers (
        id INTEGER PRIMARY KEY, crm_id TEXT NOT NULL UNIQUE, subject TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL, phone TEXT NOT NULL, favourite_product TEXT, created REAL NOT NULL
    );
    CREATE TABLE devices (
        id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
        mac TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, expires REAL,
        UNIQUE (customer_id, mac)
    );
    CREATE TABLE consents (
        id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
        kind TEXT NOT NULL, status TEXT NOT NULL, text_version TEXT, proof TEXT, ts REAL NOT NULL
    );
    CREATE INDEX consents_customer ON consents(customer_id, kind, ts);
    CREATE TABLE campaigns (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, trigger TEXT NOT NULL, template TEXT NOT NULL,
        stores TEXT NOT NULL DEFAULT '[]', status TEXT NOT NULL DEFAULT 'active',
        cap_count INTEGER NOT NULL DEFAULT 1, cap_days INTEGER NOT NULL DEFAULT 30,
        priority INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE events (
        event_id TEXT PRIMARY KEY, store_id TEXT NOT NULL, sensor_id TEXT NOT NULL,
        type TEXT NOT NULL, subject TEXT NOT NULL, ts REAL NOT NULL, payload TEXT NOT NULL,
        received REAL NOT NULL, state TEXT NOT NULL DEFAULT 'new'
    );
    CREATE INDEX events_state ON events(state, received);
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY, topic TEXT NOT NULL, reason TEXT NOT NULL,
        payload_sha256 TEXT NOT NULL, payload_bytes INTEGER NOT NULL, received REAL NOT NULL
    );
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, customer_id INTEGER, campaign_id TEXT,
        outcome TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, ts REAL NOT NULL
    );
    CREATE INDEX decisions_event ON decisions(event_id);
    CREATE TABLE sends (
        id INTEGER PRIMARY KEY, decision_id INTEGER NOT NULL UNIQUE REFERENCES decisions(id),
        customer_id INTEGER NOT NULL, campaign_id TEXT NOT NULL, store_id TEXT NOT NULL,
        ts REAL NOT NULL, state TEXT NOT NULL, provider TEXT NOT NULL, provider_id TEXT,
        error TEXT, sender TEXT NOT NULL, body TEXT NOT NULL
    );
    CREATE INDEX sends_customer ON sends(customer_id, campaign_id, ts);
    CREATE TABLE sandbox_messages (
        id INTEGER PRIMARY KEY, sid TEXT NOT NULL UNIQUE, to_phone TEXT NOT NULL,
        sender TEXT NOT NULL, body TEXT NOT NULL, ts REAL NOT NULL
    );
    """,
]

# Sends in these states count against caps (a failed send never reached the customer).
CAPPED_STATES = ("reserved", "sending", "accepted", "delivered", "unknown")


class BridgeStore:
    """One SQLite file; safe to share between the ingest, worker and web threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self.db = sqlite_utils.Database(conn)
        if str(path) != ":memory:":
            self.db.enable_wal()
        self.db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.RLock()
        self.migrate()

    # plumbing -----------------------------------------------------------------------------
    def migrate(self) -> int:
        """Run pending migrations; returns the schema version."""
        with self._lock:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied REAL)"
            )
            done = {r[0] for r in self.db.execute("SELECT version FROM schema_migrations")}
            for number, sql in enumerate(MIGRATIONS, start=1):
                if number in done:
                    continue
                with self.db.conn:
                    self.db.execute("BEGIN IMMEDIATE")
                    for statement in sql.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    self.db.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?)", [number, time.time()]
                    )
            return len(MIGRATIONS)

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """An exclusive write transaction (serialises writers across threads and processes)."""
        with self._lock, self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            yield self.db

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, params))

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    # tenant -------------------------------------------------------------------------------
    def upsert_store(self, row: dict[str, Any]) -> None:
        with self.transaction() as db:
            db["stores"].upsert(row, pk="id")

    def store_info(self, store_id: str) -> StoreInfo | None:
        rows = self.query("SELECT * FROM stores WHERE id=?", [store_id])
        if not rows:
            return None
        r = rows[0]
        return StoreInfo(
            id=r["id"],
            name=r["name"],
            timezone=r["timezone"],
            country=r["country"],
            sender_name=r["sender_name"],
            send_start=r["send_start"],
            send_end=r["send_end"],
        )

    def upsert_customer(
        self,
        crm_id: str,
        subject: str,
        name: str,
        phone: str,
        favourite_product: str | None,
        now: float,
    ) -> int:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO customers(crm_id, subject, name, phone, favourite_product, created) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(crm_id) DO UPDATE SET name=excluded.name, "
                "phone=excluded.phone, favourite_product=excluded.favourite_product",
                [crm_id, subject, name, phone, favourite_product, now],
            )
            row = db.execute("SELECT id FROM customers WHERE crm_id=?", [crm_id]).fetchone()
            return int(row[0])

    def add_device(self, customer_id: int, mac: str, now: float, expires: float | None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO devices(customer_id, mac, first_seen, last_seen, expires) "
                "VALUES (?,?,?,?,?) ON CONFLICT(customer_id, mac) DO UPDATE SET "
                "last_seen=excluded.last_seen, expires=excluded.expires",
                [customer_id, mac.lower(), now, now, expires],
            )

    def record_consent(
        self,
        customer_id: int,
        kind: str,
        status: str,
        now: float,
        text_version: str | None = None,
        proof: dict[str, Any] | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO consents(customer_id, kind, status, text_version, proof, ts) "
                "VALUES (?,?,?,?,?,?)",
                [customer_id, kind, status, text_version, json.dumps(proof or {}), now],
            )

    def upsert_campaign(self, row: dict[str, Any]) -> None:
        row = dict(row)
        row["stores"] = json.dumps(row.get("stores", []))
        with self.transaction() as db:
            db["campaigns"].upsert(row, pk="id")

    def campaigns(self) -> list[Campaign]:
        out = []
        for r in self.query("SELECT * FROM campaigns ORDER BY priority DESC, id"):
            out.append(
                Campaign(
                    id=r["id"],
                    name=r["name"],
                    trigger=r["trigger"],
                    template=r["template"],
                    stores=tuple(json.loads(r["stores"])),
                    status=r["status"],
                    cap_count=r["cap_count"],
                    cap_days=r["cap_days"],
                    priority=r["priority"],
                )
            )
        return out

    def customer_by_subject(self, subject: str) -> Customer | None:
        rows = self.query("SELECT * FROM customers WHERE subject=?", [subject])
        if not rows:
            return None
        r = rows[0]
        consents = {
            c["kind"]: c["status"]
            for c in self.query(
                "SELECT kind, status FROM consents WHERE customer_id=? ORDER BY ts, id", [r["id"]]
            )
        }
        return Customer(
            id=r["id"],
            crm_id=r["crm_id"],
            name=r["name"],
            phone=r["phone"],
            favourite_product=r["favourite_product"],
            consent_sms=consents.get("sms") == "active",
            consent_recognition=consents.get("recognition") == "active",
        )

    def roster_entries(self, now: float) -> list[tuple[str, str]]:
        """(mac, subject) of every unexpired device whose owner consented to recognition."""
        rows = self.query(
            "SELECT d.mac, c.subject, c.id FROM devices d JOIN customers c ON c.id=d.customer_id "
            "WHERE d.expires IS NULL OR d.expires > ?",
            [now],
        )
        out = []
        for r in rows:
            latest = self.query(
                "SELECT status FROM consents WHERE customer_id=? AND kind='recognition' "
                "ORDER BY ts DESC, id DESC LIMIT 1",
                [r["id"]],
            )
            if latest and latest[0]["status"] == "active":
                out.append((r["mac"], r["subject"]))
        return out

    def bump_roster_version(self, store_id: str) -> int:
        with self.transaction() as db:
            db.execute(
                "UPDATE stores SET roster_version = roster_version + 1 WHERE id=?", [store_id]
            )
            row = db.execute("SELECT roster_version FROM stores WHERE id=?", [store_id]).fetchone()
            return int(row[0])

    # ingest -------------------------------------------------------------------------------
    def insert_event(
        self,
        event_id: str,
        store_id: str,
        sensor_id: str,
        type_: str,
        subject: str,
        ts: float,
        payload: str,
        now: float,
    ) -> bool:
        """Store a new event; False if the event_id was already seen (a duplicate)."""
        with self._lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO events(event_id, store_id, sensor_id, type, subject, ts, "
                "payload, received) VALUES (?,?,?,?,?,?,?,?)",
                [event_id, store_id, sensor_id, type_, subject, ts, payload, now],
            )
            return cur.rowcount == 1

    def dead_letter(self, topic: str, reason: str, sha256: str, size: int, now: float) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO dead_letters(topic, reason, payload_sha256, payload_bytes, received) "
                "VALUES (?,?,?,?,?)",
                [topic, reason, sha256, size, now],
            )

    def sensor_seen(self, store_id: str, sensor_id: str, now: float, **fields: Any) -> None:
        row = {"store_id": store_id, "sensor_id": sensor_id, "last_seen": now, **fields}
        with self._lock:
            self.db["sensors"].upsert(row, pk=("store_id", "sensor_id"))

    def next_new_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM events WHERE state='new' ORDER BY received, ts LIMIT ?", [limit]
        )

    def mark_event(self, event_id: str, state: str) -> None:
        with self._lock:
            self.db.execute("UPDATE events SET state=? WHERE event_id=?", [state, event_id])

    # decisions and sends ------------------------------------------------------------------
    def send_history(self, customer_id: int, since: float) -> list[tuple[str, float]]:
        rows = self.query(
            f"SELECT campaign_id, ts FROM sends WHERE customer_id=? AND ts>=? "
            f"AND state IN ({','.join('?' * len(CAPPED_STATES))})",
            [customer_id, since, *CAPPED_STATES],
        )
        return [(r["campaign_id"], r["ts"]) for r in rows]

    def record_skip(
        self,
        event_id: str,
        customer_id: int | None,
        campaign_id: str | None,
        reason: str,
        detail: str,
        now: float,
    ) -> int:
        with self._lock:
            cur = self.db.execute(
                "INSERT INTO decisions(event_id, customer_id, campaign_id, outcome, reason, detail, ts) "
                "VALUES (?,?,?,?,?,?,?)",
                [event_id, customer_id, campaign_id, "skip", reason, detail, now],
            )
            return int(cur.lastrowid or 0)

    def reserve_send(
        self,
        event_id: str,
        customer_id: int,
        campaign_id: str,
        store_id: str,
        cap_count: int,
        cap_days: int,
        overall_cap: int,
        overall_days: int,
        sender: str,
        body: str,
        provider: str,
        now: float,
    ) -> tuple[int | None, str]:
        """Atomically re-check caps and reserve a send. (send id, "") or (None, skip reason)."""
        with self.transaction() as db:
            placeholders = ",".join("?" * len(CAPPED_STATES))
            n_campaign = db.execute(
                f"SELECT count(*) FROM sends WHERE customer_id=? AND campaign_id=? AND ts>=? "
                f"AND state IN ({placeholders})",
                [customer_id, campaign_id, now - cap_days * 86400, *CAPPED_STATES],
            ).fetchone()[0]
            n_all = db.execute(
                f"SELECT count(*) FROM sends WHERE customer_id=? AND ts>=? AND state IN ({placeholders})",
                [customer_id, now - overall_days * 86400, *CAPPED_STATES],
            ).fetchone()[0]
            if n_campaign >= cap_count or n_all >= overall_cap:
                reason = "campaign_cap" if n_campaign >= cap_count else "overall_cap"
                db.execute(
                    "INSERT INTO decisions(event_id, customer_id, campaign_id, outcome, reason, "
                    "detail, ts) VALUES (?,?,?,?,?,?,?)",
                    [
                        event_id,
                        customer_id,
                        campaign_id,
                        "skip",
                        reason,
                        "cap reached when reserving (another event got there first)",
                        now,
                    ],
                )
                return None, reason
            cur = db.execute(
                "INSERT INTO decisions(event_id, customer_id, campaign_id, outcome, reason, detail, ts) "
                "VALUES (?,?,?,?,?,?,?)",
                [event_id, customer_id, campaign_id, "send", "sent", "all checks passed", now],
            )
            decision_id = int(cur.lastrowid or 0)
            cur = db.execute(
                "INSERT INTO sends(decision_id, customer_id, campaign_id, store_id, ts, state, "
                "provider, sender, body) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    decision_id,
                    customer_id,
                    campaign_id,
                    store_id,
                    now,
                    "reserved",
                    provider,
                    sender,
                    body,
                ],
            )
            return int(cur.lastrowid or 0), ""

    def update_send(
        self, send_id: int, state: str, provider_id: str | None = None, error: str | None = None
    ) -> None:
        with self._lock:
            self.db.execute(
                "UPDATE sends SET state=?, provider_id=coalesce(?, provider_id), error=? WHERE id=?",
                [state, provider_id, error, send_id],
            )

    # sandbox provider ---------------------------------------------------------------------
    def sandbox_record(self, sid: str, to_phone: str, sender: str, body: str, now: float) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO sandbox_messages(sid, to_phone, sender, body, ts) VALUES (?,?,?,?,?)",
                [sid, to_phone, sender, body, now],
            )
