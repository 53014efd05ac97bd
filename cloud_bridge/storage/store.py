"""The bridge's store: all SQLite access goes through BridgeStore (sqlite-utils, WAL, migrations).

Migrations are numbered and forward-only; ``schema_migrations`` records which ran. Writes that
must be atomic across threads or processes (event dedupe, cap reservation) use single
statements with unique keys or ``BEGIN IMMEDIATE`` transactions.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy import text

from cloud_bridge.offers.decide import Campaign, Customer, StoreInfo
from cloud_bridge.offers.policy import CAPPED_STATES
from cloud_bridge.storage.compat import CompatSQL
from cloud_bridge.storage.datakey import ENV_VAR, KEY_FILE, DataCipher, DataKeyError, load_data_key
from cloud_bridge.storage.db import Database, is_postgres_url, safe_url
from cloud_bridge.storage.migrations import HEAD, SchemaTooNew, upgrade
from edge_agent.roster import parse_mac

__all__ = ["BridgeStore", "IntegrityError", "SchemaTooNew"]

SEGMENT_FIELDS = ("first_purchase", "visits", "loyalty_tier")


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


# What a decision to send reads while its SMS is in each state: the provider's acceptance is
# the first moment it says 'sent' (migration 9). Every other state keeps its own name.
DECISION_OF_SEND = {"reserved": "reserved", "sending": "reserved", "accepted": "sent"}


def decision_of_send(state: str) -> str:
    """The reason a decision to send reads while its send is in ``state``."""
    return DECISION_OF_SEND.get(state, state)


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
# Advisory lock key held while the schema is created or migrated (one session at a time).
MIGRATION_LOCK = 7310301

# What a unique or foreign key violation raises, on either engine.
IntegrityError: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    psycopg.IntegrityError,
    sqlalchemy.exc.IntegrityError,
)


def decision_row(
    event_id: str,
    customer_id: int | None,
    campaign_id: str | None,
    store_id: str | None,
    outcome: str,
    reason: str,
    detail: str,
    now: float,
    *,
    variant: str | None = None,
    holdout: bool = False,
    segment: str | None = None,
    checks: str | None = None,
) -> list[Any]:
    """One decision's values in the order of ``BridgeStore.DECISION_COLUMNS``."""
    return [
        event_id, customer_id, campaign_id, outcome, reason, detail, now, variant,
        int(holdout), store_id, segment, checks,
    ]  # fmt: skip


class _RolledBack(Exception):
    """Ends ``BridgeStore.rolled_back``'s transaction."""


class BridgeStore:
    """One SQLite file; safe to share between the ingest, worker and web threads."""

    def __init__(self, path: str | Path, data_key: bytes | None = None) -> None:
        """``path`` is a SQLite file (or ``:memory:``) or a ``postgresql://`` URL.

        ``data_key`` encrypts MACs at rest; by default ``PASSBY_DATA_KEY`` or the key file in
        ``keys/`` next to the database (the bridge's data_dir), created on first use. A
        PostgreSQL store has no directory of its own: give it the key (or the variable)."""
        self.postgres = is_postgres_url(path)
        self.location = str(path)
        self.path = Path("postgresql") if self.postgres else Path(path)
        self._memory = str(path) == ":memory:"
        self._tl = threading.local()
        self._data_key = data_key
        self._cipher: DataCipher | None = None
        self._key: bytes | None = None
        self.database = Database(path)
        self.db = CompatSQL(self.database)
        self._lock: Any = self.database._lock
        try:
            self.migrate()
            if data_key is not None:
                _ = self.cipher  # a key given explicitly (the bridge service) is checked at once
        except BaseException:
            self.close()
            raise

    @property
    def _depth(self) -> int:
        return getattr(self._tl, "depth", 0)

    @_depth.setter
    def _depth(self, value: int) -> None:
        self._tl.depth = value

    # plumbing -----------------------------------------------------------------------------
    def migrate(self) -> int:
        """Run pending migrations (Alembic revisions, one process at a time); returns the
        schema version."""
        with self._lock:
            # SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock. Bridge processes starting
            # together migrate one at a time; the next one finds the work done.
            with self.database.transaction() as conn:
                if self.postgres:
                    conn.execute(_ADVISORY_LOCK, {"key": MIGRATION_LOCK})
                ran = upgrade(conn, self.where, self._new_cipher)
            if 2 in ran:
                self.checkpoint()  # the plaintext MACs of schema 1 must not stay in the WAL
            return HEAD

    @contextmanager
    def transaction(self) -> Iterator[CompatSQL]:
        """An exclusive write transaction (serialises writers across threads and processes).

        Nested use joins the outer transaction through a savepoint, so store methods that write
        can be composed into one atomic unit (e.g. a whole CRM import)."""
        with self.database.transaction():
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1

    @contextmanager
    def rolled_back(self) -> Iterator[CompatSQL]:
        """A write transaction that is always rolled back: the real work runs and nothing is
        kept, so a dry run counts exactly what the real run would do."""
        try:
            with self.transaction() as db:
                yield db
                raise _RolledBack
        except _RolledBack:
            pass

    @property
    def where(self) -> str:
        """The database for messages (a PostgreSQL URL without its password)."""
        return safe_url(self.location) if self.postgres else str(self.path)

    @property
    def cipher(self) -> DataCipher:
        """The MAC cipher, checked against the key id recorded when the database first used one."""
        with self._lock:
            if self._cipher is None:
                cipher = self._new_cipher()
                with self.transaction() as db:
                    # Insert-if-absent, then read: two stores opening a new PostgreSQL
                    # database at once must not both insert (a unique key violation).
                    db.execute(
                        "INSERT OR IGNORE INTO bridge_meta(name, value) VALUES ('data_key_id', ?)",
                        [cipher.key_id],
                    )
                    row = db.execute(
                        "SELECT value FROM bridge_meta WHERE name='data_key_id'"
                    ).fetchone()
                    if row[0] != cipher.key_id:
                        raise DataKeyError(
                            f"{self.where}: data key {cipher.key_id} is not the key this "
                            f"database was written with ({row[0]}); check {ENV_VAR} or keys/{KEY_FILE}"
                        )
                self._cipher = cipher
            return self._cipher

    def _new_cipher(self) -> DataCipher:
        """A cipher with the data key, not yet checked against the database's key id."""
        if self._key is None:
            key = self._data_key
            if key is None:
                if self._memory and not os.environ.get(ENV_VAR):
                    key = secrets.token_bytes(32)  # nothing outlives an in-memory db
                elif self.postgres:
                    if not os.environ.get(ENV_VAR):
                        raise DataKeyError(
                            f"{self.where}: a PostgreSQL store keeps no key files: give the "
                            f"bridge its data key ({ENV_VAR}, or data_dir with keys/{KEY_FILE})"
                        )
                    key = load_data_key(Path("."))
                else:
                    key = load_data_key(self.path.parent / "keys")
            self._key = key
        return DataCipher(self._key)

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, params))

    def close(self) -> None:
        with self._lock:
            self.database.close()

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
        segments: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> int:
        """Insert or update a customer by CRM id; ``segments`` may set first_purchase, visits,
        loyalty_tier (absent keys keep their value)."""
        seg = {k: v for k, v in (segments or {}).items() if k in SEGMENT_FIELDS}
        with self.transaction() as db:
            db.execute(
                "INSERT INTO customers(crm_id, subject, name, phone, favourite_product, created, "
                "source) VALUES (?,?,?,?,?,?,?) ON CONFLICT(crm_id) DO UPDATE SET "
                "name=excluded.name, phone=excluded.phone, "
                "favourite_product=excluded.favourite_product",
                [crm_id, subject, name, phone, favourite_product, now, source],
            )
            row = db.execute("SELECT id FROM customers WHERE crm_id=?", [crm_id]).fetchone()
            if seg:
                db.execute(
                    f"UPDATE customers SET {', '.join(f'{k}=?' for k in seg)} WHERE id=?",
                    [*seg.values(), row[0]],
                )
            return int(row[0])

    def customer_row(self, crm_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM customers WHERE crm_id=? AND erased IS NULL", [crm_id])
        return rows[0] if rows else None

    def customers_by_phone(self, phone: str) -> list[dict[str, Any]]:
        """Live customers with this E.164 number, oldest first."""
        if not phone:
            return []
        return self.query(
            "SELECT * FROM customers WHERE phone=? AND erased IS NULL ORDER BY id", [phone]
        )

    def is_live_customer(self, customer_id: int) -> bool:
        """The customer exists and is not erased (the consent ledger writes only for them)."""
        rows = self.query("SELECT 1 FROM customers WHERE id=? AND erased IS NULL", [customer_id])
        return bool(rows)

    def phone_holders(
        self, phones: Iterable[str], crm_ids: Iterable[str]
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        """For a whole import at once: the CRM ids of the live customers holding each of
        ``phones`` (oldest first), and the phone each of ``crm_ids`` has now."""
        holders: dict[str, list[str]] = {}
        current: dict[str, str] = {}
        for column, values in (("phone", sorted(set(phones))), ("crm_id", sorted(set(crm_ids)))):
            for i in range(0, len(values), 500):
                chunk = values[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for r in self.query(
                    f"SELECT crm_id, phone FROM customers WHERE erased IS NULL AND {column} "
                    f"IN ({marks}) ORDER BY id",
                    chunk,
                ):
                    if column == "phone":
                        holders.setdefault(r["phone"], []).append(r["crm_id"])
                    else:
                        current[r["crm_id"]] = r["phone"]
        return holders, current

    def set_crm_id(self, customer_id: int, crm_id: str) -> None:
        """Adopt a CRM id for a customer first known from the portal (the subject stays)."""
        with self.transaction() as db:
            db.execute("UPDATE customers SET crm_id=? WHERE id=?", [crm_id, customer_id])

    def add_device(
        self,
        customer_id: int,
        mac: str | bytes,
        now: float,
        expires: float | None,
        *,
        source: str = "import",
        store_id: str | None = None,
        refresh: bool = True,
        take_over: bool = False,
    ) -> bool:
        """Enrol a MAC (stored encrypted, found by keyed hash). True if the row is new.

        ``refresh`` updates last_seen and expiry of a known device (portal logins); an import
        leaves it alone so re-importing changes nothing. ``take_over`` moves the MAC away from
        any other customer (a confirmed enrolment is the newest word on whose phone it is)."""
        raw = parse_mac(mac) if isinstance(mac, str) else bytes(mac)
        cipher = self.cipher
        lookup = cipher.mac_lookup(raw)
        with self.transaction() as db:
            if take_over:
                db.execute(
                    "DELETE FROM devices WHERE mac_hmac=? AND customer_id<>?",
                    [lookup, customer_id],
                )
            cur = db.execute(
                "INSERT OR IGNORE INTO devices(customer_id, mac_hmac, mac_enc, first_seen, "
                "last_seen, expires, source, store_id) VALUES (?,?,?,?,?,?,?,?)",
                [customer_id, lookup, cipher.encrypt_mac(raw), now, now, expires, source, store_id],
            )
            if cur.rowcount == 1:
                return True
            if refresh:
                db.execute(
                    "UPDATE devices SET last_seen=?, expires=? WHERE customer_id=? AND mac_hmac=?",
                    [now, expires, customer_id, lookup],
                )
            return False

    def device_owners(self, mac: bytes) -> list[int]:
        """Ids of live customers who enrolled this MAC."""
        rows = self.query(
            "SELECT d.customer_id FROM devices d JOIN customers c ON c.id=d.customer_id "
            "WHERE d.mac_hmac=? AND c.erased IS NULL",
            [self.cipher.mac_lookup(mac)],
        )
        return [r["customer_id"] for r in rows]

    def devices_of(self, customer_id: int) -> list[dict[str, Any]]:
        """A customer's devices with the MAC decrypted (``mac`` as aa:bb:..)."""
        rows = self.query(
            "SELECT id, mac_enc, first_seen, last_seen, expires, source, store_id FROM devices "
            "WHERE customer_id=? ORDER BY id",
            [customer_id],
        )
        cipher = self.cipher
        for r in rows:
            r["mac"] = _mac_text(cipher.decrypt_mac(r.pop("mac_enc")))
        return rows

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
                [
                    customer_id,
                    kind,
                    status,
                    text_version,
                    json.dumps(proof or {}, ensure_ascii=False, sort_keys=True),
                    now,
                ],
            )

    def latest_consents(self, customer_id: int) -> dict[str, str]:
        """kind -> latest status of a customer's consents."""
        rows = self.query(
            "SELECT kind, status FROM consents WHERE customer_id=? ORDER BY ts, id", [customer_id]
        )
        return {r["kind"]: r["status"] for r in rows}

    def consents_of(self, customer_id: int) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT kind, status, text_version, proof, ts FROM consents WHERE customer_id=? "
            "ORDER BY ts, id",
            [customer_id],
        )
        for r in rows:
            r["proof"] = json.loads(r["proof"] or "{}")
        return rows

    # suppression and erasure --------------------------------------------------------------
    def suppression(self, kind: str, hmac_hex: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM suppressions WHERE kind=? AND hmac=?", [kind, hmac_hex])
        return rows[0] if rows else None

    def clear_suppression(self, kind: str, hmac_hex: str) -> int:
        with self.transaction() as db:
            return db.execute(
                "DELETE FROM suppressions WHERE kind=? AND hmac=?", [kind, hmac_hex]
            ).rowcount

    def erase_customer(self, customer_id: int, now: float) -> None:
        """Remove a customer's phone, name, MACs, segments, consents and message texts; keep a
        suppression entry (keyed hashes of phone and CRM id) and an anonymous row so past
        decisions and sends still add up."""
        cipher = self.cipher
        with self.transaction() as db:
            row = db.execute(
                "SELECT crm_id, phone FROM customers WHERE id=?", [customer_id]
            ).fetchone()
            if row is None:
                return
            crm_id, phone = row
            for kind, value in (("crm", crm_id), ("phone", phone)):
                if value:
                    db.execute(
                        "INSERT INTO suppressions(kind, hmac, reason, ts) VALUES (?,?,?,?) "
                        "ON CONFLICT(kind, hmac) DO UPDATE SET ts=excluded.ts",
                        [kind, cipher.lookup(kind, value), "erased", now],
                    )
            db.execute("DELETE FROM devices WHERE customer_id=?", [customer_id])
            db.execute("DELETE FROM consents WHERE customer_id=?", [customer_id])
            tomb = f"erased:{customer_id}"
            db.execute(
                "UPDATE customers SET crm_id=?, subject=?, name='', phone='', "
                "favourite_product=NULL, first_purchase=NULL, visits=NULL, loyalty_tier=NULL, "
                "erased=? WHERE id=?",
                [tomb, tomb, now, customer_id],
            )
            db.execute("UPDATE sends SET body='[erased]' WHERE customer_id=?", [customer_id])
            if phone:
                db.execute(
                    "UPDATE sandbox_messages SET to_phone='', body='[erased]' WHERE to_phone=?",
                    [phone],
                )
                db.execute(
                    "UPDATE enrolments SET phone='', name='', crm_id=NULL, mac_hmac=NULL, "
                    "mac_enc=NULL, ip=NULL, user_agent=NULL, code_hash=NULL, "
                    "status=CASE WHEN status='pending' THEN 'erased' ELSE status END "
                    "WHERE phone_hmac=? OR customer_id=?",
                    [cipher.lookup("phone", phone), customer_id],
                )
        self.checkpoint()

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so old page images (e.g. of an erased
        customer) do not linger in the -wal file."""
        with self._lock:
            if not self._memory and not self._depth and not self.postgres:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # enrolments ---------------------------------------------------------------------------
    def insert_enrolment(self, row: dict[str, Any]) -> None:
        with self.transaction() as db:
            db["enrolments"].insert(row)

    def enrolment(self, enrolment_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM enrolments WHERE id=?", [enrolment_id])
        return rows[0] if rows else None

    def update_enrolment(self, enrolment_id: str, **fields: Any) -> None:
        with self.transaction() as db:
            db.execute(
                f"UPDATE enrolments SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                [*fields.values(), enrolment_id],
            )

    def count_enrolments(
        self,
        since: float,
        phone_hmac: str | None = None,
        ip: str | None = None,
        ip_prefix: str | None = None,
    ) -> int:
        """Enrolments started since ``since`` for a phone (keyed hash), from an IP, or from
        IPs whose text starts with ``ip_prefix`` (an IPv6 /64, written exploded)."""
        if phone_hmac is not None:
            sql, arg = "phone_hmac=?", phone_hmac
        elif ip is not None:
            sql, arg = "ip=?", ip
        elif ip_prefix is not None:
            sql, arg = f"substr(ip, 1, {len(ip_prefix):d})=?", ip_prefix
        else:
            raise ValueError("count_enrolments needs phone_hmac, ip or ip_prefix")
        return int(
            self.query(
                f"SELECT count(*) AS n FROM enrolments WHERE {sql} AND created>=?", [arg, since]
            )[0]["n"]
        )

    def expire_enrolments(self, now: float) -> int:
        """Finish enrolments past their expiry and drop the phone, name and device they held."""
        with self.transaction() as db:
            return db.execute(
                "UPDATE enrolments SET status=CASE WHEN status='pending' THEN 'expired' "
                "ELSE status END, phone='', name='', mac_hmac=NULL, mac_enc=NULL, code_hash=NULL "
                "WHERE expires<? AND phone<>''",
                [now],
            ).rowcount

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
        """(mac as aa:bb:.., subject) of every device that goes into a roster."""
        return [(_mac_text(mac), subject) for mac, subject in self.roster_devices(now)]

    def roster_devices(self, now: float) -> list[tuple[bytes, str]]:
        """(raw MAC, subject) of every unexpired device whose owner consented to recognition.

        MACs are decrypted here, in memory, for the roster builder; a MAC claimed by two
        customers goes to the one who used it last."""
        with self._lock:
            rows = self.db.execute(
                "SELECT d.mac_hmac, d.mac_enc, c.subject, d.last_seen, d.id FROM devices d "
                "JOIN customers c ON c.id=d.customer_id "
                "WHERE (d.expires IS NULL OR d.expires > ?) AND c.erased IS NULL AND ("
                "SELECT k.status FROM consents k WHERE k.customer_id=d.customer_id "
                "AND k.kind='recognition' ORDER BY k.ts DESC, k.id DESC LIMIT 1) = 'active'",
                [now],
            ).fetchall()
        latest = {r[0]: r for r in rows}
        if len(latest) != len(rows):  # rare: resolve shared MACs by (last_seen, id)
            for r in rows:
                if r[3:] > latest[r[0]][3:]:
                    latest[r[0]] = r
        decrypt = self.cipher.decrypt_mac
        return [(decrypt(r[1]), r[2]) for r in latest.values()]

    def site_key(self, store_id: str) -> str | None:
        rows = self.query("SELECT site_key FROM stores WHERE id=?", [store_id])
        return rows[0]["site_key"] if rows else None

    def set_site_key(self, store_id: str, site_key_hex: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE stores SET site_key=? WHERE id=?", [site_key_hex, store_id])

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

    def insert_events(
        self, rows: list[tuple[str, str, str, str, str, float, str, float]]
    ) -> set[str]:
        """Store new events in one statement; the ids that were new (the others were seen)."""
        if not rows:
            return set()
        values = ",".join(["(?,?,?,?,?,?,?,?)"] * len(rows))
        with self._lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO events(event_id, store_id, sensor_id, type, subject, ts, "
                f"payload, received) VALUES {values} RETURNING event_id",
                [v for row in rows for v in row],
            )
            return {r[0] for r in cur.fetchall()}

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

    def sensors_seen(self, rows: list[tuple[str, str, float]]) -> None:
        """(store_id, sensor_id, last_seen) for many sensors: one statement per 500, rows in
        key order, a sensor's last_seen only moving forward. Several workers write the same
        sensors' rows: in one order no two statements wait for each other in a cycle
        (measured before: row-lock waits of up to a second, and a deadlock), and whichever
        commits last cannot put an older time back."""
        latest: dict[tuple[str, str], float] = {}
        for store_id, sensor_id, seen in rows:  # one row per sensor: its latest time
            latest[store_id, sensor_id] = max(seen, latest.get((store_id, sensor_id), seen))
        rows = sorted((k[0], k[1], t) for k, t in latest.items())
        for i in range(0, len(rows), 500):
            chunk = rows[i : i + 500]
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO sensors(store_id, sensor_id, last_seen) VALUES "
                    + ",".join(["(?,?,?)"] * len(chunk))
                    + " ON CONFLICT (store_id, sensor_id) DO UPDATE SET "
                    "last_seen=max(coalesce(sensors.last_seen, 0), excluded.last_seen)",
                    [v for r in chunk for v in r],
                )

    def next_new_events(
        self, limit: int = 100, received_before: float | None = None
    ) -> list[dict[str, Any]]:
        """The oldest undecided events (optionally only those received before a time)."""
        if received_before is None:
            return self.query(
                "SELECT * FROM events WHERE state='new' ORDER BY received, ts LIMIT ?", [limit]
            )
        return self.query(
            "SELECT * FROM events WHERE state='new' AND received<? ORDER BY received, ts LIMIT ?",
            [received_before, limit],
        )

    def new_events_by_id(self, event_ids: list[str]) -> list[dict[str, Any]]:
        """These events, if still undecided, oldest first."""
        if not event_ids:
            return []
        # By primary key only: with "AND state='new'" PostgreSQL may pick the state index and
        # filter every undecided event through the id list (under a backlog of N events, each
        # batch then reads all N: measured 12 ms a batch at 12 000)
        rows = self.query(
            f"SELECT * FROM events WHERE event_id IN ({','.join('?' * len(event_ids))}) "
            "ORDER BY received, ts",
            event_ids,
        )
        return [r for r in rows if r["state"] == "new"]

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

    def update_send(
        self, send_id: int, state: str, provider_id: str | None = None, error: str | None = None
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE sends SET state=?, provider_id=coalesce(?, provider_id), error=? WHERE id=?",
                [state, provider_id, error, send_id],
            )
            self._follow_send(db, send_id, state)

    # sandbox provider ---------------------------------------------------------------------
    def sandbox_record(self, sid: str, to_phone: str, sender: str, body: str, now: float) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO sandbox_messages(sid, to_phone, sender, body, ts) VALUES (?,?,?,?,?)",
                [sid, to_phone, sender, body, now],
            )

    # sensor provisioning (migration 3) ----------------------------------------------------
    def save_sensor_credentials(self, row: dict[str, Any], rotate: bool = False) -> None:
        """Create a sensor's credentials (or replace them with ``rotate``), voiding its old codes.

        Raises an ``IntegrityError`` (of either engine) when the sensor exists and ``rotate`` is
        false, or when its broker user name is taken by another sensor."""
        with self.transaction() as db:
            key = [row["store_id"], row["sensor_id"]]
            if rotate:
                cur = db.execute(
                    "UPDATE sensor_credentials SET mqtt_username=?, mqtt_password_hash=?, "
                    "token_id=?, token_sha256=?, channel=coalesce(?, channel), rotated=?, "
                    "revoked=NULL WHERE store_id=? AND sensor_id=?",
                    [
                        row["mqtt_username"],
                        row["mqtt_password_hash"],
                        row["token_id"],
                        row["token_sha256"],
                        row.get("channel"),
                        row["created"],
                        *key,
                    ],
                )
                if cur.rowcount == 0:
                    raise sqlite3.IntegrityError(f"no sensor {key[0]}/{key[1]} to rotate")
            else:
                db["sensor_credentials"].insert(row)
            db.execute(
                "UPDATE pairing_codes SET sealed=NULL, used=coalesce(used, -1) "
                "WHERE store_id=? AND sensor_id=? AND used IS NULL",
                key,
            )
            db.execute("INSERT OR IGNORE INTO sensors(store_id, sensor_id) VALUES (?, ?)", key)

    def add_pairing_code(self, row: dict[str, Any]) -> None:
        with self.transaction() as db:
            db["pairing_codes"].insert(row)

    def redeem_pairing_code(
        self, code_hash: str, now: float, used_by: str | None = None
    ) -> tuple[dict[str, Any] | None, str]:
        """Use a pairing code exactly once: (row with ``sealed``, "") or (None, why not).

        Why not: "unknown", "used", "void" or "expired". Atomic across threads and processes."""
        with self.transaction() as db:
            cur = db.execute(
                "SELECT store_id, sensor_id, sealed, expires, used FROM pairing_codes "
                "WHERE code_hash=?",
                [code_hash],
            )
            found = cur.fetchone()
            if found is None:
                return None, "unknown"
            row = dict(zip([c[0] for c in cur.description], found, strict=True))
            if row["used"] == -1:
                return None, "void"  # replaced by a newer code, or the sensor was revoked
            if row["used"] is not None or row["sealed"] is None:
                return None, "used"
            if row["expires"] <= now:
                db.execute("UPDATE pairing_codes SET sealed=NULL WHERE code_hash=?", [code_hash])
                return None, "expired"
            # Guarded: on PostgreSQL another worker may have read the row unused too; its
            # update commits first and ours then matches nothing.
            if (
                db.execute(
                    "UPDATE pairing_codes SET sealed=NULL, used=?, used_by=? WHERE code_hash=? "
                    "AND used IS NULL AND sealed IS NOT NULL",
                    [now, used_by, code_hash],
                ).rowcount
                != 1
            ):
                return None, "used"
            return row, ""

    def purge_pairing_codes(self, now: float) -> int:
        """Forget the sealed credentials of expired codes (the rows stay for the record)."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE pairing_codes SET sealed=NULL WHERE sealed IS NOT NULL AND expires<=?",
                [now],
            )
            return cur.rowcount

    def sensor_credentials(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        where = "" if include_revoked else "WHERE revoked IS NULL"
        return self.query(f"SELECT * FROM sensor_credentials {where} ORDER BY store_id, sensor_id")

    def sensor_registry(self) -> list[dict[str, Any]]:
        """Provisioned sensors with their live state and latest pairing code's fate."""
        return self.query(
            "SELECT c.store_id, c.sensor_id, c.mqtt_username, c.channel, c.created, c.rotated, "
            "c.revoked, s.state, s.last_seen, s.agent_version, "
            "(SELECT max(created) FROM pairing_codes p WHERE p.store_id=c.store_id AND "
            "p.sensor_id=c.sensor_id) AS code_created, "
            "(SELECT used FROM pairing_codes p WHERE p.store_id=c.store_id AND "
            "p.sensor_id=c.sensor_id ORDER BY created DESC LIMIT 1) AS code_used, "
            "(SELECT expires FROM pairing_codes p WHERE p.store_id=c.store_id AND "
            "p.sensor_id=c.sensor_id ORDER BY created DESC LIMIT 1) AS code_expires "
            "FROM sensor_credentials c LEFT JOIN sensors s ON s.store_id=c.store_id AND "
            "s.sensor_id=c.sensor_id ORDER BY c.store_id, c.sensor_id"
        )

    def revoke_sensor(self, store_id: str, sensor_id: str, now: float) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE sensor_credentials SET revoked=? WHERE store_id=? AND sensor_id=? "
                "AND revoked IS NULL",
                [now, store_id, sensor_id],
            )
            db.execute(
                "UPDATE pairing_codes SET sealed=NULL, used=coalesce(used, -1) "
                "WHERE store_id=? AND sensor_id=? AND used IS NULL",
                [store_id, sensor_id],
            )
            return cur.rowcount == 1

    def sensor_by_token(self, token: str) -> tuple[str, str] | None:
        """(store_id, sensor_id) of the live sensor holding this API token, else None.

        A token is ``pbt1.<id>.<secret>``: the id finds the row, the SHA-256 of the secret is
        compared in constant time with the stored one."""
        prefix, _, rest = token.partition(".")
        token_id, _, secret = rest.partition(".")
        if prefix != "pbt1" or not token_id or not secret:
            return None
        rows = self.query(
            "SELECT store_id, sensor_id, token_sha256 FROM sensor_credentials "
            "WHERE token_id=? AND revoked IS NULL",
            [token_id],
        )
        given = hashlib.sha256(secret.encode("utf-8")).hexdigest()
        stored = rows[0]["token_sha256"] if rows else "0" * 64
        if hmac.compare_digest(given, stored) and rows:
            return rows[0]["store_id"], rows[0]["sensor_id"]
        return None

    # delivery (migration 4) ---------------------------------------------------------------
    def _outbox(self, table: str) -> str:
        if table not in ("sends", "replies"):
            raise ValueError(f"not a send outbox: {table!r}")
        return table

    @staticmethod
    def _log_send(
        db: CompatSQL, table: str, send_id: int, now: float, state: str, detail: str
    ) -> None:
        db.execute(
            "INSERT INTO send_log(kind, send_id, ts, state, detail) VALUES (?,?,?,?,?)",
            ["offer" if table == "sends" else "reply", send_id, now, state, detail],
        )

    def delivery_job(self, table: str, send_id: int) -> dict[str, Any] | None:
        """A send (or reply) with what sending it needs: the customer's phone (never logged),
        erasure, latest marketing consent, number flag; for sends the event time and store."""
        t = self._outbox(table)
        common = (
            "c.phone AS phone, c.erased AS erased, "
            "(SELECT k.status FROM consents k WHERE k.customer_id=s.customer_id AND k.kind='sms' "
            "ORDER BY k.ts DESC, k.id DESC LIMIT 1) AS sms_consent, "
            "(SELECT f.reason FROM number_flags f WHERE f.customer_id=s.customer_id) AS number_flag"
        )
        if t == "sends":
            sql = (
                f"SELECT s.*, {common}, e.ts AS event_ts, e.received AS event_received, "
                "st.name AS store_name, "
                "st.country AS store_country FROM sends s "
                "JOIN customers c ON c.id=s.customer_id "
                "LEFT JOIN decisions d ON d.id=s.decision_id "
                "LEFT JOIN events e ON e.event_id=d.event_id "
                "LEFT JOIN stores st ON st.id=s.store_id WHERE s.id=?"
            )
        else:
            sql = (
                f"SELECT s.*, {common} FROM replies s JOIN customers c ON c.id=s.customer_id "
                "WHERE s.id=?"
            )
        rows = self.query(sql, [send_id])
        return rows[0] if rows else None

    def prepare_send(
        self, send_id: int, fields: dict[str, Any], optout: tuple[str, int, float] | None = None
    ) -> bool:
        """Fix a reserved send's final text, key, expiry and cost once (False if it already
        was prepared or is no longer reserved); ``optout`` = (token, customer id, now) adds the
        send's one-click opt-out link in the same transaction."""
        with self.transaction() as db:
            cur = db.execute(
                f"UPDATE sends SET {', '.join(f'{k}=?' for k in fields)} "
                "WHERE id=? AND idem_key IS NULL AND state='reserved'",
                [*fields.values(), send_id],
            )
            if cur.rowcount != 1:
                return False
            if optout is not None:
                token, customer_id, now = optout
                db.execute(
                    "INSERT INTO optout_links(token, customer_id, send_id, created) VALUES (?,?,?,?)",
                    [token, customer_id, send_id, now],
                )
            self._log_send(
                db, "sends", send_id, fields.get("updated") or time.time(), "reserved", "prepared"
            )
            return True

    def claim_send(self, table: str, send_id: int, now: float, lease_until: float) -> int | None:
        """reserved -> sending, atomically: one claimant across threads and processes. Returns
        the attempt number, or None if the row is not (or no longer) reserved."""
        t = self._outbox(table)
        with self.transaction() as db:
            row = db.execute(
                f"UPDATE {t} SET state='sending', attempts=attempts+1, attempt_at=?, "
                "lease_until=?, next_at=NULL, updated=? WHERE id=? AND state='reserved' "
                "RETURNING attempts",
                [now, lease_until, now, send_id],
            ).fetchone()
            if row is None:
                return None
            attempt = int(row[0])
            self._log_send(db, t, send_id, now, "sending", f"attempt {attempt}")
            return attempt

    def move_send(
        self,
        table: str,
        send_id: int,
        from_states: tuple[str, ...],
        state: str,
        now: float,
        detail: str = "",
        attempt: int | None = None,
        **fields: Any,
    ) -> bool:
        """Guarded transition of a send or reply: only from one of ``from_states`` (and, with
        ``attempt``, only if that is still the latest attempt); logged with ``detail``."""
        t = self._outbox(table)
        values = {"state": state, "updated": now, **fields}
        where = f"id=? AND state IN ({','.join('?' * len(from_states))})"
        args: list[Any] = [send_id, *from_states]
        if attempt is not None:
            where += " AND attempts=?"
            args.append(attempt)
        with self.transaction() as db:
            cur = db.execute(
                f"UPDATE {t} SET {', '.join(f'{k}=?' for k in values)} WHERE {where}",
                [*values.values(), *args],
            )
            if cur.rowcount != 1:
                return False
            self._log_send(db, t, send_id, now, state, detail)
            if t == "sends" and {decision_of_send(f) for f in from_states} != {
                decision_of_send(state)
            }:
                self._follow_send(db, send_id, state)
            return True

    @staticmethod
    def _follow_send(db: CompatSQL, send_id: int, state: str) -> None:
        """The send's decision reads what became of it (in the send's transaction)."""
        reason = decision_of_send(state)
        db.execute(
            "UPDATE decisions SET reason=? WHERE id=(SELECT decision_id FROM sends WHERE id=?) "
            "AND outcome='send' AND reason<>?",
            [reason, send_id, reason],
        )

    def sends_in_state(
        self, table: str, state: str, due_by: float | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Rows in ``state`` (oldest first); with ``due_by`` only those whose next_at has come,
        unscheduled ones (next_at NULL) first on both engines."""
        t = self._outbox(table)
        if due_by is None:
            return self.query(
                f"SELECT * FROM {t} WHERE state=? ORDER BY id LIMIT ?", [state, limit]
            )
        return self.query(
            f"SELECT * FROM {t} WHERE state=? AND (next_at IS NULL OR next_at<=?) "
            "AND final_at IS NULL ORDER BY next_at IS NOT NULL, next_at, id LIMIT ?",
            [state, due_by, limit],
        )

    def hold_reserved(self, table: str, ids: list[int], until: float) -> set[int]:
        """Renew the lease of these rows while they are reserved (their process is alive and
        handles them); returns those still reserved."""
        t = self._outbox(table)
        if not ids:
            return set()
        with self.transaction() as db:
            rows = db.execute(
                f"UPDATE {t} SET lease_until=? WHERE state='reserved' "
                f"AND id IN ({','.join('?' * len(ids))}) RETURNING id",
                [until, *ids],
            ).fetchall()
        return {int(r[0]) for r in rows}

    def orphaned_reserved(self, table: str, now: float, before: float) -> list[dict[str, Any]]:
        """Reserved rows overdue since ``before`` whose lease (if any) ran out by ``now``: the
        process that held them stopped renewing it."""
        t = self._outbox(table)
        return self.query(
            f"SELECT id, idem_key FROM {t} WHERE state='reserved' "
            "AND coalesce(next_at, updated, ts) < ? AND (lease_until IS NULL OR lease_until < ?) "
            "ORDER BY id LIMIT 200",
            [before, now],
        )

    def stale_sending(self, table: str, now: float) -> list[dict[str, Any]]:
        """'sending' rows whose lease ran out: their sender died (kill -9) or hangs."""
        t = self._outbox(table)
        return self.query(
            f"SELECT * FROM {t} WHERE state='sending' AND (lease_until IS NULL OR lease_until<?)",
            [now],
        )

    def find_send(
        self, provider: str, provider_id: str | None = None, key: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """(table, row) of the send or reply with this provider id or our unique key."""
        for t in ("sends", "replies"):
            if key:
                rows = self.query(f"SELECT * FROM {t} WHERE idem_key=?", [key])
            elif provider_id:
                rows = self.query(
                    f"SELECT * FROM {t} WHERE provider=? AND provider_id=?", [provider, provider_id]
                )
            else:
                return None
            if rows:
                return t, rows[0]
        return None

    def record_receipt(
        self, provider: str, provider_id: str, status: str, error: str | None, now: float
    ) -> bool:
        """Remember a delivery receipt; False if this exact one was seen before (a replay)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO delivery_receipts(provider, provider_id, status, error, "
                "received) VALUES (?,?,?,?,?)",
                [provider, provider_id, status, error, now],
            )
            return cur.rowcount == 1

    def record_inbound(
        self,
        provider: str,
        message_id: str,
        phone_hmac: str | None,
        keyword: str | None,
        action: str | None,
        now: float,
    ) -> bool:
        """Remember an inbound message by the provider's id; False if it was seen (a replay)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO inbound_messages(provider, message_id, phone_hmac, keyword, "
                "action, received) VALUES (?,?,?,?,?,?)",
                [provider, message_id, phone_hmac, keyword, action, now],
            )
            return cur.rowcount == 1

    def set_inbound_customers(self, provider: str, message_id: str, customers: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE inbound_messages SET customers=? WHERE provider=? AND message_id=?",
                [customers, provider, message_id],
            )

    def insert_reply(self, row: dict[str, Any]) -> int | None:
        """Queue a confirmation reply; None if one with this idem_key exists already."""
        with self.transaction() as db:
            cur = db.execute(
                f"INSERT OR IGNORE INTO replies({', '.join(row)}) VALUES ({','.join('?' * len(row))})",
                list(row.values()),
            )
            if cur.rowcount != 1:
                return None
            reply_id = int(cur.lastrowid or 0)
            self._log_send(db, "replies", reply_id, row["ts"], row["state"], row.get("action", ""))
            return reply_id

    def flag_number(self, customer_id: int, reason: str, code: str | None, now: float) -> None:
        """A provider said this customer's number cannot take SMS (invalid, landline)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO number_flags(customer_id, reason, code, ts) VALUES (?,?,?,?) "
                "ON CONFLICT(customer_id) DO UPDATE SET reason=excluded.reason, "
                "code=excluded.code, ts=excluded.ts",
                [customer_id, reason, code, now],
            )

    def number_flag(self, customer_id: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM number_flags WHERE customer_id=?", [customer_id])
        return rows[0] if rows else None

    def optout_link_row(self, token: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM optout_links WHERE token=?", [token])
        return rows[0] if rows else None

    def use_optout_link(self, token: str, now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE optout_links SET used=coalesce(used, ?) WHERE token=?", [now, token])

    def customer_language(self, customer_id: int) -> str | None:
        """The language the customer chose when enrolling (latest enrolment), if any."""
        rows = self.query(
            "SELECT language FROM enrolments WHERE customer_id=? ORDER BY created DESC LIMIT 1",
            [customer_id],
        )
        return rows[0]["language"] if rows else None

    def customer_brand(self, customer_id: int) -> dict[str, Any] | None:
        """Store (name, sender_name, country) of the customer's latest send, else the first store."""
        rows = self.query(
            "SELECT st.name, st.sender_name, st.country FROM sends s JOIN stores st "
            "ON st.id=s.store_id WHERE s.customer_id=? ORDER BY s.id DESC LIMIT 1",
            [customer_id],
        ) or self.query("SELECT name, sender_name, country FROM stores ORDER BY id LIMIT 1")
        return rows[0] if rows else None

    def send_log(self, table: str, send_id: int) -> list[dict[str, Any]]:
        kind = "offer" if self._outbox(table) == "sends" else "reply"
        return self.query(
            "SELECT ts, state, detail FROM send_log WHERE kind=? AND send_id=? ORDER BY id",
            [kind, send_id],
        )

    # console accounts, audit, fleet history (migration 6) ----------------------------------
    def add_user(
        self,
        username: str,
        role: str,
        password_hash: str,
        now: float,
        stores: list[str] | tuple[str, ...] = (),
        phone: str | None = None,
    ) -> int:
        """Create a console user (an ``IntegrityError`` of either engine if the name is taken)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO users(username, role, password_hash, phone, created, "
                "password_changed) VALUES (?,?,?,?,?,?)",
                [username, role, password_hash, phone, now, now],
            )
            user_id = int(cur.lastrowid or 0)
            for store_id in stores:
                db.execute(
                    "INSERT OR IGNORE INTO user_stores(user_id, store_id) VALUES (?,?)",
                    [user_id, store_id],
                )
            return user_id

    def _with_stores(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            r["stores"] = [
                x["store_id"]
                for x in self.query(
                    "SELECT store_id FROM user_stores WHERE user_id=? ORDER BY store_id", [r["id"]]
                )
            ]
        return rows

    def user_by_name(self, username: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM users WHERE username=?", [username])
        return self._with_stores(rows)[0] if rows else None

    def user_by_id(self, user_id: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM users WHERE id=?", [user_id])
        return self._with_stores(rows)[0] if rows else None

    def users(self) -> list[dict[str, Any]]:
        return self._with_stores(
            self.query(
                "SELECT id, username, role, phone, created, disabled, last_login FROM users "
                "ORDER BY username"
            )
        )

    def update_user(self, user_id: int, stores: list[str] | None = None, **fields: Any) -> None:
        """Change a user's columns (role, password_hash, phone, disabled...) and/or stores."""
        with self.transaction() as db:
            if fields:
                db.execute(
                    f"UPDATE users SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                    [*fields.values(), user_id],
                )
            if stores is not None:
                db.execute("DELETE FROM user_stores WHERE user_id=?", [user_id])
                for store_id in stores:
                    db.execute(
                        "INSERT INTO user_stores(user_id, store_id) VALUES (?,?)",
                        [user_id, store_id],
                    )

    def create_session(self, row: dict[str, Any]) -> None:
        with self.transaction() as db:
            db["sessions"].insert(row)

    def session_row(self, id_sha256: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM sessions WHERE id_sha256=?", [id_sha256])
        return rows[0] if rows else None

    def touch_session(self, id_sha256: str, now: float, expires: float) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE sessions SET last_seen=?, expires=? WHERE id_sha256=?",
                [now, expires, id_sha256],
            )

    def delete_sessions(
        self, id_sha256: str | None = None, user_id: int | None = None, before: float | None = None
    ) -> int:
        """Log out one session, every session of a user, or purge those expired ``before``."""
        with self.transaction() as db:
            if id_sha256 is not None:
                return db.execute("DELETE FROM sessions WHERE id_sha256=?", [id_sha256]).rowcount
            if user_id is not None:
                return db.execute("DELETE FROM sessions WHERE user_id=?", [user_id]).rowcount
            if before is not None:
                return db.execute("DELETE FROM sessions WHERE expires<?", [before]).rowcount
            return 0

    def add_api_token(self, row: dict[str, Any]) -> None:
        with self.transaction() as db:
            db["api_tokens"].insert(row)

    def api_token_row(self, token_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM api_tokens WHERE id=?", [token_id])
        return rows[0] if rows else None

    def api_tokens(self, user_id: int | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE t.user_id=?", [user_id]) if user_id is not None else ("", [])
        return self.query(
            "SELECT t.id, t.name, t.created, t.last_used, t.revoked, t.user_id, u.username "
            f"FROM api_tokens t JOIN users u ON u.id=t.user_id {where} ORDER BY t.created DESC",
            args,
        )

    def touch_api_token(self, token_id: str, now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE api_tokens SET last_used=? WHERE id=?", [now, token_id])

    def revoke_api_token(self, token_id: str, now: float) -> bool:
        with self.transaction() as db:
            return (
                db.execute(
                    "UPDATE api_tokens SET revoked=? WHERE id=? AND revoked IS NULL",
                    [now, token_id],
                ).rowcount
                == 1
            )

    def record_login_attempt(self, username: str, ip: str | None, ok: bool, now: float) -> int:
        """Log one login attempt (``ip``: the address key the limits count); returns its id.
        An attempt in progress is recorded as failed and marked ok when it succeeds, so guesses
        fired at once are all counted before any password is checked."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO login_attempts(username, ip, ts, ok) VALUES (?,?,?,?)",
                [username.casefold(), ip, now, int(ok)],
            )
            db.execute("DELETE FROM login_attempts WHERE ts<?", [now - 86400])
            return int(cur.lastrowid or 0)

    def login_succeeded(self, attempt_id: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE login_attempts SET ok=1 WHERE id=?", [attempt_id])

    def login_failures(self, username: str, ip: str | None, since: float) -> dict[str, int]:
        """Failed logins since ``since``: ``ip`` from this address (any user name), ``user``
        for this user name (any address), ``pair`` for this user name from this address after
        its last success there."""
        name = username.casefold()
        row = self.query(
            "SELECT (SELECT count(*) FROM login_attempts WHERE ip=? AND ts>=? AND ok=0) AS by_ip, "
            "(SELECT count(*) FROM login_attempts WHERE username=? AND ts>=? AND ok=0) AS by_user, "
            "(SELECT count(*) FROM login_attempts a WHERE a.username=? AND a.ip=? AND a.ts>=? "
            "AND a.ok=0 AND NOT EXISTS (SELECT 1 FROM login_attempts b WHERE b.username=a.username "
            "AND b.ip=a.ip AND b.ok=1 AND b.ts>=a.ts)) AS by_pair",
            [ip, since, name, since, name, ip, since],
        )[0]
        return {"ip": int(row["by_ip"]), "user": int(row["by_user"]), "pair": int(row["by_pair"])}

    def audit(
        self,
        actor: str,
        role: str | None,
        action: str,
        target: str,
        detail: str,
        ip: str | None,
        now: float,
    ) -> None:
        """Append to the audit log (never updated or deleted by the application)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO audit_log(ts, actor, role, action, target, detail, ip) "
                "VALUES (?,?,?,?,?,?,?)",
                [now, actor, role, action, target, detail, ip],
            )

    def record_stats(
        self,
        store_id: str,
        sensor_id: str,
        stats: dict[str, Any],
        now: float,
        retention_s: float = 8 * 86400,
    ) -> None:
        """Keep one stats message in the sensor's history (older than ``retention_s`` goes) and
        the footfall counts of its current and previous hour (the highest count wins: counts
        only grow within an hour, and an agent restart starts again from zero)."""
        cols = (
            "ts", "frames", "frames_per_s", "client_frames", "matched", "malformed",
            "outbox_depth", "dropped", "roster_version", "channel", "iface_state", "cpu_temp_c",
            "disk_free_mb", "uptime_s",
        )  # fmt: skip
        row = {"store_id": store_id, "sensor_id": sensor_id, "received": now}
        row.update({c: stats.get(c) for c in cols})
        row["ts"] = row["ts"] or now
        foot = stats.get("footfall") or {}
        hours = []
        if "hour_start" in foot:
            hour = float(foot["hour_start"])
            hours.append((hour, foot.get("unique", 0), foot.get("visitors", 0)))
            if foot.get("prev_hour_unique"):
                hours.append(
                    (hour - 3600, foot["prev_hour_unique"], foot.get("prev_hour_visitors", 0))
                )
        with self.transaction() as db:
            db["sensor_stats"].insert(row)
            db.execute(
                "DELETE FROM sensor_stats WHERE store_id=? AND sensor_id=? AND received<?",
                [store_id, sensor_id, now - retention_s],
            )
            for hour, unique, visitors in hours:
                db.execute(
                    "INSERT INTO footfall_hours(store_id, sensor_id, hour, unique_devices, "
                    "visitors, passers_by) VALUES (?,?,?,?,?,?) ON CONFLICT(store_id, sensor_id, "
                    "hour) DO UPDATE SET "
                    "unique_devices=max(footfall_hours.unique_devices, excluded.unique_devices), "
                    "visitors=max(footfall_hours.visitors, excluded.visitors), "
                    "passers_by=max(footfall_hours.unique_devices, excluded.unique_devices)"
                    "-max(footfall_hours.visitors, excluded.visitors)",
                    [store_id, sensor_id, hour, int(unique), int(visitors), int(unique - visitors)],
                )

    # offer engine (migration 5) -----------------------------------------------------------
    def campaign_rows(self, campaign_id: str | None = None) -> list[dict[str, Any]]:
        """Campaign rows (JSON columns still text), highest priority first."""
        if campaign_id is not None:
            return self.query("SELECT * FROM campaigns WHERE id=?", [campaign_id])
        return self.query("SELECT * FROM campaigns ORDER BY priority DESC, id")

    def campaigns_stamp(self) -> tuple[Any, ...]:
        """Changes whenever a campaign is added, edited or changes status (cache key)."""
        row = self.db.execute(
            "SELECT count(*), max(updated), total(length(status)), group_concat(status, '') "
            "FROM campaigns"
        ).fetchone()
        return tuple(row)

    def save_campaign(self, row: dict[str, Any], now: float) -> bool:
        """Insert or replace a campaign (JSON-able values are stored as JSON). True if new."""
        row = dict(row)
        for key in ("stores", "variants", "audience", "schedule"):
            if key in row and not isinstance(row[key], str):
                row[key] = json.dumps(row[key], ensure_ascii=False, sort_keys=True)
        with self.transaction() as db:
            old = db.execute("SELECT created FROM campaigns WHERE id=?", [row["id"]]).fetchone()
            row["created"] = old[0] if old and old[0] else now
            row["updated"] = now
            if row.get("status") != "paused":
                row.setdefault("paused_reason", None)  # paused_at stays: the guard counts from it
            db["campaigns"].upsert(row, pk="id")
            return old is None

    def set_campaign_status(
        self, campaign_id: str, status: str, now: float, reason: str | None = None
    ) -> bool:
        paused = status == "paused"
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE campaigns SET status=?, updated=?, paused_reason=?, "
                "paused_at=CASE WHEN ?=1 THEN ? ELSE paused_at END WHERE id=?",
                [status, now, reason if paused else None, int(paused), now, campaign_id],
            )
            return cur.rowcount == 1

    def delete_campaign(self, campaign_id: str) -> str:
        """'deleted', 'missing', or 'used' (it has decisions: end it instead)."""
        with self.transaction() as db:
            if not db.execute("SELECT 1 FROM campaigns WHERE id=?", [campaign_id]).fetchone():
                return "missing"
            if db.execute(
                "SELECT 1 FROM decisions WHERE campaign_id=? LIMIT 1", [campaign_id]
            ).fetchone():
                return "used"
            db.execute("DELETE FROM campaigns WHERE id=?", [campaign_id])
            return "deleted"

    def store_rows(self) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id, name, timezone, country, sender_name, send_start, send_end, "
            "daily_budget FROM stores ORDER BY id"
        )

    def set_store_budget(self, store_id: str, daily_budget: int | None) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE stores SET daily_budget=? WHERE id=?", [daily_budget, store_id]
            )
            return cur.rowcount == 1

    def engine_customer(self, subject: str, before: float, since: float) -> dict[str, Any] | None:
        """The customer with this subject, latest consents, last purchase and the times of the
        visits the sensors saw in [since, before) (``visit_times``, newest first, at most 500)."""
        return self.engine_customers([subject], before, since).get(subject)

    def engine_customers(
        self, subjects: list[str], before: float, since: float
    ) -> dict[str, dict[str, Any]]:
        """``engine_customer`` for many subjects in one statement (the decision worker reads
        a batch's customers at once); subjects that are no customer are left out."""
        if not subjects:
            return {}
        marks = ",".join("?" * len(subjects))
        with self._lock:
            cur = self.db.conn.execute(
                "SELECT c.id, c.subject, c.crm_id, c.name, c.phone, c.favourite_product, "
                "c.loyalty_tier, c.visits, c.first_purchase, c.erased, "
                "(SELECT k.status FROM consents k WHERE k.customer_id=c.id AND k.kind='sms' "
                "ORDER BY k.ts DESC, k.id DESC LIMIT 1) AS sms, "
                "(SELECT k.status FROM consents k WHERE k.customer_id=c.id "
                "AND k.kind='recognition' ORDER BY k.ts DESC, k.id DESC LIMIT 1) AS recognition, "
                "(SELECT max(p.ts) FROM purchases p WHERE p.customer_id=c.id) AS last_purchase, "
                "(SELECT group_concat(v.ts) FROM (SELECT e.ts FROM events e WHERE "
                "e.subject=c.subject AND e.type='visit' AND e.ts>=? AND e.ts<? "
                f"ORDER BY e.ts DESC LIMIT 500) v) AS visit_times "
                f"FROM customers c WHERE c.subject IN ({marks})",
                [since, before, *subjects],
            )
            names = [d[0] for d in cur.description]
            found = cur.fetchall()
        out = {}
        for values in found:
            row = dict(zip(names, values, strict=True))
            visits = row["visit_times"]
            row["visit_times"] = tuple(float(t) for t in visits.split(",")) if visits else ()
            out[row["subject"]] = row
        return out

    def engine_history(
        self, customer_id: int, since: float
    ) -> tuple[tuple[tuple[str, float], ...], tuple[tuple[str, float], ...]]:
        """(sends that count against caps, holdout would-be sends) since ``since``."""
        return self.engine_histories([customer_id], since).get(customer_id, ((), ()))

    def engine_histories(
        self, customer_ids: list[int], since: float
    ) -> dict[int, tuple[tuple[tuple[str, float], ...], tuple[tuple[str, float], ...]]]:
        """``engine_history`` for many customers in one statement; customers with neither
        are left out."""
        if not customer_ids:
            return {}
        placeholders = ",".join("?" * len(CAPPED_STATES))
        ids = ",".join("?" * len(customer_ids))
        with self._lock:
            rows = self.db.conn.execute(
                f"SELECT 0, campaign_id, ts, customer_id FROM sends WHERE customer_id IN ({ids}) "
                f"AND ts>=? AND state IN ({placeholders}) UNION ALL "
                f"SELECT 1, campaign_id, ts, customer_id FROM decisions WHERE customer_id IN ({ids}) "
                "AND outcome='holdout' AND ts>=?",
                [*customer_ids, since, *CAPPED_STATES, *customer_ids, since],
            ).fetchall()
        found: dict[int, tuple[list[tuple[str, float]], list[tuple[str, float]]]] = {}
        for kind, campaign_id, ts, customer_id in rows:
            found.setdefault(customer_id, ([], []))[kind].append((campaign_id, ts))
        return {c: (tuple(s), tuple(h)) for c, (s, h) in found.items()}

    def campaign_send_counts(
        self, campaign_ids: list[str], states: tuple[str, ...] = CAPPED_STATES
    ) -> dict[str, int]:
        """Lifetime sends of these campaigns in ``states`` (default: those counting against
        budgets, including the reserved ones not sent yet)."""
        if not campaign_ids:
            return {}
        placeholders = ",".join("?" * len(states))
        rows = self.query(
            f"SELECT campaign_id, count(*) AS n FROM sends WHERE campaign_id IN "
            f"({','.join('?' * len(campaign_ids))}) AND state IN ({placeholders}) "
            "GROUP BY campaign_id",
            [*campaign_ids, *states],
        )
        return {r["campaign_id"]: r["n"] for r in rows}

    def store_sends_since(self, store_id: str, since: float) -> int:
        placeholders = ",".join("?" * len(CAPPED_STATES))
        return int(
            self.query(
                f"SELECT count(*) AS n FROM sends WHERE store_id=? AND ts>=? "
                f"AND state IN ({placeholders})",
                [store_id, since, *CAPPED_STATES],
            )[0]["n"]
        )

    DECISION_COLUMNS = (
        "event_id, customer_id, campaign_id, outcome, reason, detail, ts, variant, holdout, "
        "store_id, segment, checks"
    )

    def record_decision(self, *args: Any, **kw: Any) -> int:
        """Store one decision (the arguments of ``decision_row``; ``checks``: the chain of
        checks as JSON); its id."""
        with self._lock:
            cur = self.db.conn.execute(
                f"INSERT INTO decisions({self.DECISION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                decision_row(*args, **kw),
            )
            return int(cur.lastrowid or 0)

    def record_decisions(self, rows: list[list[Any]]) -> None:
        """Store many decisions (rows from ``decision_row``) in few statements (the decision
        worker's skips of a batch, inside its transaction)."""
        with self._lock:
            for i in range(0, len(rows), 200):
                chunk = rows[i : i + 200]
                marks = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
                self.db.conn.execute(
                    f"INSERT INTO decisions({self.DECISION_COLUMNS}) VALUES {marks}",
                    [v for r in chunk for v in r],
                )

    def reserve_offer(
        self,
        event_id: str,
        customer_id: int,
        campaign_id: str,
        variant: str,
        store_id: str,
        now: float,
        *,
        cap_count: int,
        cap_days: int,
        overall_cap: int,
        overall_days: int,
        budget: int | None = None,
        store_budget: int | None = None,
        day_start: float = 0.0,
        holdout: bool = False,
        sender: str = "",
        body: str = "",
        provider: str = "",
        segment: str | None = None,
        checks: str | None = None,
        record_failure: bool = True,
        held: frozenset[str] | set[str] = frozenset(),
        joined: bool = False,
    ) -> tuple[int | None, str]:
        """Atomically re-check consent, erasure, every cap and budget, then record the decision
        and (unless the customer is in the holdout) reserve the send. Returns (send id or, for
        a holdout, the decision id; "") or (None, skip reason); with ``record_failure`` False a
        refusal is not stored (the caller decides again). Holdout would-be sends count against
        the campaign's own cap only, so the holdout is exposed as often as the treatment.

        ``held``: keys (see ``lock_for``) the caller's transaction holds already; ``joined``:
        the caller's transaction (or savepoint) covers this reservation, so it takes none of
        its own (the decision worker: two statements less per send)."""
        placeholders = ",".join("?" * len(CAPPED_STATES))
        with contextlib.nullcontext(self.db) if joined else self.transaction() as db:
            keys = [
                f"customer:{customer_id}",
                *([f"campaign:{campaign_id}"] if budget is not None else []),
                *([f"store:{store_id}"] if store_budget is not None else []),
            ]
            self.lock_for([k for k in keys if k not in held])
            # One statement: erasure, both consents, and the customer's sends read once by the
            # customer's index (this campaign's in its window, all in the overall window),
            # plus the campaign's holdout exposures.
            campaign_since, overall_since = now - cap_days * 86400, now - overall_days * 86400
            live = db.execute(
                "SELECT c.erased, (SELECT k.status FROM consents k WHERE k.customer_id=c.id "
                "AND k.kind='sms' ORDER BY k.ts DESC, k.id DESC LIMIT 1), (SELECT k.status "
                "FROM consents k WHERE k.customer_id=c.id AND k.kind='recognition' "
                "ORDER BY k.ts DESC, k.id DESC LIMIT 1), s.n_campaign, s.n_all, "
                "(SELECT count(*) FROM decisions d WHERE d.customer_id=c.id "
                "AND d.outcome='holdout' AND d.campaign_id=? AND d.ts>=?) "
                "FROM customers c CROSS JOIN (SELECT "
                "coalesce(sum(CASE WHEN campaign_id=? AND ts>=? THEN 1 ELSE 0 END), 0) AS n_campaign, "
                "coalesce(sum(CASE WHEN ts>=? THEN 1 ELSE 0 END), 0) AS n_all FROM sends "
                f"WHERE customer_id=? AND ts>=? AND state IN ({placeholders})) s WHERE c.id=?",
                [
                    campaign_id,
                    campaign_since,
                    campaign_id,
                    campaign_since,
                    overall_since,
                    customer_id,
                    min(campaign_since, overall_since),
                    *CAPPED_STATES,
                    customer_id,
                ],
            ).fetchone()
            if live is None or live[0] is not None:
                return None, "erased"
            if live[1] != "active":
                return None, "no_sms_consent"
            if live[2] != "active":
                return None, "no_recognition_consent"
            n_campaign, n_all = int(live[3]) + int(live[5]), int(live[4])
            reason, detail = "", ""
            if n_campaign >= cap_count:
                reason, detail = "campaign_cap", f"{n_campaign} of {cap_count} in {cap_days} days"
            elif budget is not None:
                used = db.execute(
                    f"SELECT count(*) FROM sends WHERE campaign_id=? AND state IN ({placeholders})",
                    [campaign_id, *CAPPED_STATES],
                ).fetchone()[0]
                if used >= budget:
                    reason, detail = "campaign_budget", f"{used} of {budget} SMS used"
            if not reason and not holdout:
                if n_all >= overall_cap:
                    reason, detail = "overall_cap", f"{n_all} SMS in {overall_days} days"
                elif store_budget is not None:
                    today = db.execute(
                        f"SELECT count(*) FROM sends WHERE store_id=? AND ts>=? "
                        f"AND state IN ({placeholders})",
                        [store_id, day_start, *CAPPED_STATES],
                    ).fetchone()[0]
                    if today >= store_budget:
                        reason, detail = "store_budget", f"{today} of {store_budget} SMS today"
            if reason and not record_failure:
                return None, reason
            if reason:
                self.record_decision(
                    event_id,
                    customer_id,
                    campaign_id,
                    store_id,
                    "skip",
                    reason,
                    f"{detail} (when reserving: another event got there first)",
                    now,
                    segment=segment,
                    checks=checks,
                )
                return None, reason
            decision_id = self.record_decision(
                event_id,
                customer_id,
                campaign_id,
                store_id,
                "holdout" if holdout else "send",
                "holdout" if holdout else decision_of_send("reserved"),
                "in the holdout group: no SMS" if holdout else "all checks passed",
                now,
                variant=None if holdout else variant,
                holdout=holdout,
                segment=segment,
                checks=checks,
            )
            if holdout:
                return decision_id, ""
            cur = db.execute(
                "INSERT INTO sends(decision_id, customer_id, campaign_id, store_id, ts, state, "
                "provider, sender, body, variant) VALUES (?,?,?,?,?,?,?,?,?,?)",
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
                    variant,
                ],
            )
            return int(cur.lastrowid or 0), ""

    def bucket_tat(self, name: str) -> float:
        """A shared token bucket's theoretical arrival time (see ratelimit.SharedBucket)."""
        row = self.db.execute("SELECT value FROM bridge_meta WHERE name=?", [name]).fetchone()
        return float(row[0]) if row else float("-inf")

    def bucket_book(
        self, name: str, now: float, interval: float, tolerance: float, deadline: float | None
    ) -> float | None:
        """Book a token atomically (one UPDATE); the new arrival time, or None when it would
        only be free after ``deadline`` (nothing booked)."""
        limit = "" if deadline is None else " AND max(CAST(value AS REAL), ?) - ? <= ?"
        book = (
            "UPDATE bridge_meta SET value = CAST(max(CAST(value AS REAL), ?) + ? AS TEXT) "
            f"WHERE name=?{limit} RETURNING value"
        )
        params = [now, interval, name, *([] if deadline is None else [now, tolerance, deadline])]
        with self._lock:
            row = self.db.execute(book, params).fetchone()
            if row is None:  # the bucket's first use (or a deadline refused: booking again is
                # as atomic; a racing worker that created the row first must not look refused)
                self.db.execute(
                    "INSERT OR IGNORE INTO bridge_meta(name, value) VALUES (?, '-1e300')", [name]
                )
                row = self.db.execute(book, params).fetchone()
        return None if row is None else float(row[0])

    def lock_for(self, keys: list[str]) -> None:
        """Inside a transaction: hold these keys (``customer:<id>``, ``campaign:<id>``,
        ``store:<id>``) until it ends, so a cap or budget is counted and reserved by one worker
        at a time. SQLite's BEGIN IMMEDIATE already serialises every writer; PostgreSQL takes
        transaction-scoped advisory locks, always in the order of their hash, so two workers
        locking overlapping sets never deadlock. Taking a key again is free."""
        if not self.postgres or not keys:
            return
        self.db.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT "
            "hashtextextended(x, 0) AS k FROM unnest(CAST(? AS text[])) x ORDER BY k) s",
            [sorted(set(keys))],
        )

    def try_lock_for(self, keys: list[str]) -> set[str]:
        """Inside a transaction: take those of these keys no other transaction holds, without
        waiting; returns the keys now held (all of them on SQLite, whose BEGIN IMMEDIATE
        already serialises writers)."""
        if not self.postgres or not keys:
            return set(keys)
        rows = self.db.execute(
            "SELECT x FROM unnest(CAST(? AS text[])) x "
            "WHERE pg_try_advisory_xact_lock(hashtextextended(x, 0))",
            [keys],
        ).fetchall()
        return {r[0] for r in rows}

    def reopen(self) -> BridgeStore:
        """Another connection to the same database file (e.g. for the decision worker, so its
        reads do not wait behind the ingest's commits; WAL lets them run side by side)."""
        if self._memory:
            return self
        return BridgeStore(self.location, self._data_key)

    def claim_events(self, event_ids: list[str], state: str = "done") -> set[str]:
        """new -> ``state`` for these events in one statement; the ids this call took (not
        those another worker took first; on PostgreSQL, not those another holds right now)."""
        if not event_ids:
            return set()
        marks = ",".join("?" * len(event_ids))
        if self.postgres:
            # The rows are found by primary key and locked (skipping those another worker
            # holds); only then is their state looked at (the locked, latest version), so the
            # state index is never scanned for them (see new_events_by_id).
            sql = (
                f"WITH c AS (SELECT event_id, state FROM events WHERE event_id IN ({marks}) "
                "FOR UPDATE SKIP LOCKED) UPDATE events e SET state=? FROM c "
                "WHERE e.event_id = c.event_id AND c.state = 'new' RETURNING e.event_id"
            )
            with self._lock:
                return {r[0] for r in self.db.execute(sql, [*event_ids, state]).fetchall()}
        else:
            sql = (
                f"UPDATE events SET state=? WHERE event_id IN ({marks}) AND state='new' "
                "RETURNING event_id"
            )
        with self._lock:
            return {r[0] for r in self.db.execute(sql, [state, *event_ids]).fetchall()}

    def mark_events(self, event_ids: list[str], state: str) -> None:
        with self._lock:
            self.db.conn.executemany(
                "UPDATE events SET state=? WHERE event_id=?", [(state, e) for e in event_ids]
            )

    def optout_stats(
        self, campaign_ids: list[str], window_days: float
    ) -> dict[str, tuple[int, int]]:
        """campaign -> (sends, opt-outs): an opt-out is a revoked marketing consent within
        ``window_days`` after one of the campaign's sends to that customer. Only sends after
        the campaign's last pause count: a resumed campaign is judged on its new sends."""
        if not campaign_ids:
            return {}
        placeholders = ",".join("?" * len(CAPPED_STATES))
        ids = ",".join("?" * len(campaign_ids))
        rows = self.query(
            f"SELECT s.campaign_id, count(*) AS sends, count(DISTINCT CASE WHEN EXISTS ("
            "SELECT 1 FROM consents k WHERE k.customer_id=s.customer_id AND k.kind='sms' "
            "AND k.status='revoked' AND k.ts>=s.ts AND k.ts<=s.ts+?) THEN s.customer_id END) "
            f"AS optouts FROM sends s WHERE s.campaign_id IN ({ids}) "
            f"AND s.state IN ({placeholders}) AND s.ts > coalesce((SELECT c.paused_at FROM "
            "campaigns c WHERE c.id=s.campaign_id), 0) GROUP BY s.campaign_id",
            [window_days * 86400, *campaign_ids, *CAPPED_STATES],
        )
        return {r["campaign_id"]: (r["sends"], r["optouts"]) for r in rows}

    def add_engine_alert(self, kind: str, campaign_id: str | None, detail: str, now: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO engine_alerts(kind, campaign_id, detail, ts) VALUES (?,?,?,?)",
                [kind, campaign_id, detail, now],
            )

    def pause_for_guard(self, campaign_id: str, detail: str, now: float) -> bool:
        """Pause an active campaign and raise an alert, atomically; False if not active."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE campaigns SET status='paused', paused_reason=?, paused_at=?, updated=? "
                "WHERE id=? AND status='active'",
                [f"optout_guard: {detail}", now, now, campaign_id],
            )
            if cur.rowcount != 1:
                return False
            db.execute(
                "INSERT INTO engine_alerts(kind, campaign_id, detail, ts) VALUES (?,?,?,?)",
                ["optout_guard", campaign_id, detail, now],
            )
            return True

    def engine_alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM engine_alerts ORDER BY id DESC LIMIT ?", [limit])

    def engine_stats(self) -> dict[str, Any]:
        """Counters the console and stats show: campaigns by status, guard pauses, alerts."""
        by_status = {
            r["status"]: r["n"]
            for r in self.query("SELECT status, count(*) AS n FROM campaigns GROUP BY status")
        }
        row = self.query(
            "SELECT (SELECT count(*) FROM engine_alerts WHERE kind='optout_guard') AS guard, "
            "(SELECT count(*) FROM campaigns WHERE paused_reason LIKE 'optout_guard%' "
            "AND status='paused') AS paused_by_guard, "
            "(SELECT count(*) FROM decisions WHERE outcome='holdout') AS holdouts"
        )[0]
        return {
            "campaigns": by_status,
            "optout_guard_pauses": row["guard"],
            "paused_by_guard": row["paused_by_guard"],
            "holdout_decisions": row["holdouts"],
        }

    def event_row(self, event_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM events WHERE event_id=?", [event_id])
        return rows[0] if rows else None

    def decisions_of_event(self, event_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT d.*, c.crm_id, s.id AS send_id, s.state AS send_state, "
            "s.error AS send_error FROM decisions d "
            "LEFT JOIN customers c ON c.id=d.customer_id LEFT JOIN sends s ON s.decision_id=d.id "
            "WHERE d.event_id=? ORDER BY d.id",
            [event_id],
        )

    def decisions_of_customer(self, customer_id: int, limit: int = 20) -> list[dict[str, Any]]:
        return self.query(
            "SELECT d.*, e.type AS event_type, e.store_id AS event_store, e.ts AS event_ts, "
            "s.state AS send_state, s.error AS send_error FROM decisions d "
            "LEFT JOIN events e ON e.event_id=d.event_id "
            "LEFT JOIN sends s ON s.decision_id=d.id WHERE d.customer_id=? "
            "ORDER BY d.id DESC LIMIT ?",
            [customer_id, limit],
        )

    def add_purchases(self, rows: list[dict[str, Any]], now: float) -> tuple[int, int]:
        """Insert purchases (``ref`` unique); one transaction. (added, already known)."""
        added = 0
        with self.transaction() as db:
            for r in rows:
                cur = db.execute(
                    "INSERT OR IGNORE INTO purchases(ref, customer_id, store_id, ts, amount, "
                    "currency, imported) VALUES (?,?,?,?,?,?,?)",
                    [
                        r["ref"],
                        r["customer_id"],
                        r.get("store_id"),
                        r["ts"],
                        r["amount"],
                        r.get("currency"),
                        now,
                    ],
                )
                added += cur.rowcount
        return added, len(rows) - added

    def exposures(self, return_days: float, since: float = 0.0) -> list[dict[str, Any]]:
        """Every send and holdout would-be send with whether the customer came back: a
        ``visit`` event of the same subject within ``return_days`` after it; revenue is the
        sum of the customer's imported purchases in that window. SMS cost from the send."""
        window = return_days * 86400
        return self.query(
            "SELECT d.id, d.campaign_id, d.variant, d.store_id, d.holdout, d.ts, d.customer_id, "
            "EXISTS (SELECT 1 FROM returns r WHERE r.decision_id=d.id AND r.after_s<=?) "
            "AS returned, "
            "(SELECT total(p.amount) FROM purchases p WHERE p.customer_id=d.customer_id "
            "AND p.ts>d.ts AND p.ts<=d.ts+?) AS revenue, "
            "s.cost AS cost, s.state AS send_state "
            "FROM decisions d JOIN customers c ON c.id=d.customer_id "
            "LEFT JOIN sends s ON s.decision_id=d.id "
            "WHERE d.outcome IN ('send', 'holdout') AND d.ts>=? "
            "AND (s.id IS NULL OR s.state NOT IN ('failed', 'expired', 'shed'))",
            [window, window, since],
        )

    def meta(self, name: str) -> str | None:
        rows = self.query("SELECT value FROM bridge_meta WHERE name=?", [name])
        return rows[0]["value"] if rows else None

    def set_meta(self, name: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO bridge_meta(name, value) VALUES (?,?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                [name, value],
            )
