"""Upgrades: the bridge's migrations are forward-only and carry data over from every older schema.

For each older schema version N we build a database with the real migration runner stopped at
N, fill it with rows (a small domain seed that means something: a store, two consenting
customers with devices, a campaign, one SMS already sent; plus one row in every other table),
then open it with today's ``BridgeStore``, which migrates it to the latest version. Then:
every row is still there, the schema equals a fresh install's, and the data still works (the
customer who already got the offer is capped, the other one gets it, rosters decrypt).

All of this runs on SQLite and on PostgreSQL (each released migration keeps the SQL it ran on
each engine, frozen); a fresh PostgreSQL database must also have the schema of a fresh SQLite
file, bridge workers starting together on a new PostgreSQL database must all get through the
migrations, and the tables of ``storage/schema.py`` must agree with what the migrations build.

The migrations are Alembic revisions (``storage/migrations/versions/``). "A database at schema
N" is what the bridge before Alembic left: its ``schema_migrations`` ledger at N and no
``alembic_version``; the store adopts it as revision N and continues.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from engine_helpers import is_postgres, table_names
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.offers.worker import DecisionWorker
from cloud_bridge.storage import migrations
from cloud_bridge.storage import store as store_mod
from cloud_bridge.storage.compat import CompatSQL
from cloud_bridge.storage.datakey import DataCipher
from cloud_bridge.storage.db import Database, sqlalchemy_url
from cloud_bridge.storage.schema import metadata
from cloud_bridge.storage.store import BridgeStore

LATEST = migrations.HEAD
KEY = bytes(range(32))
NOW = time.time()


@pytest.fixture(autouse=True)
def _now_is_now() -> None:
    """NOW follows the wall clock per test: an offer expires 10 min after the event by the
    real clock, and the full suite reaches this module more than 10 min after importing it."""
    global NOW
    NOW = time.time()


DAY = 86400.0
TOPIC = "passby/v1/main-st/door-1/events"
ANNA, BORIS = "0123456789abcdef", "fedcba9876543210"
MACS = {1: "da:a1:19:3c:4e:01", 2: "6e:12:7a:90:b3:22"}

# Released migrations never change: a database that already ran one would never see the edit.
# When you add migration N+1, migration N is frozen: add its lines here (the test prints them).
# The SQLite hashes are those of the SQL text the bridge ran before Alembic (its statements
# joined by ";" again), unchanged by the move to revision files.
PINNED = {
    1: "9ca211ae7edf99fc5db492c39e6ddd78452ab31aef08435691b36a43b0db4ba2",
    2: "5260c6175b2ab47c6555e5d7efb3bac08e9c73fb2397b4263ab45a806a300ac1",
    3: "e62cbf3800114df276b9a991bdf0bf37cc2c6d817ff6c617476930017d737292",
    4: "1191b8bdb66782b2f8e7cb7c3772c85d85e85ef7f94caddd864210d800bc0321",
    5: "cc0b7ee14e2b3b15c0b9aa574127756a7d9b09133071056d9298ba7f48155d06",
    6: "6fab49659cb6998e615b70d63c7fedd6d43e95152e620dece3b5ca7eba3d7f19",
    7: "15660fbbb86d0f4e0948c62e7a7f36bcbe78264667ffab8601e5004c88534a8c",
    8: "66c4a9194b3a5848a79ca7379492dc2c142cb423f9fcdca6c7ae663d6958e95e",
    9: "91de1e15805af8f5a46fc4e487db530fe05311307374874354ff515a8009ef65",
}
PINNED_POSTGRESQL = {
    1: "e13bea1dcaaa45c76e6a9b0e7e3251406d2a8d0d02c339db41c9605fa2c3199c",
    2: "0ffac1886bf34d50746cddd909afa339076d049a96975122d95d4a6039668c32",
    3: "b1e9b0087ebddf33d919fd45129391becac1fbaec450e949c1a6792565a94636",
    4: "aa28ae50bb2d4db38bf3aa731dee7836d47c32f40b8f0d452ed8348f9a004a85",
    5: "f27520cfd461512a98f756c5147c6b8f405cc2d11e502bc3a31089ba7768bd48",
    6: "7052367e6318d98fef39db5a3748818862512753e4da96030e457c4e7405807a",
    7: "15660fbbb86d0f4e0948c62e7a7f36bcbe78264667ffab8601e5004c88534a8c",
    8: "21b183d5eea4b4110ed41e39fe6eb4481f8f46624fcf9968f602ec563e7f60ab",
    9: "f7e89d10d334c887e019e3535f0c0d3fc1bc4457defca39697a7a14bb35c0a29",
}


def revision_module(n: int) -> Any:
    script: Script | None = migrations.script().get_revision(f"{n:04d}")
    assert script is not None, f"no revision {n:04d}"
    return script.module


def migration_sha256(n: int, dialect: str = "sqlite") -> str:
    statements = getattr(revision_module(n), dialect.upper())
    return hashlib.sha256(";".join(statements).encode()).hexdigest()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_released_migrations_are_never_edited(dialect: str) -> None:
    pins = PINNED if dialect == "sqlite" else PINNED_POSTGRESQL
    problems = []
    for n in range(1, LATEST + 1):
        want = pins.get(n)
        got = migration_sha256(n, dialect)
        if want is None and n == LATEST:
            continue  # the newest may still change until it is released
        if want is None:
            problems.append(
                f"migration {n} is frozen now that {n + 1} exists: add\n    {n}: {got!r},"
            )
        elif want != got:
            problems.append(
                f"migration {n} changed after release (sha256 {got}). Migrations are forward-"
                "only: a database that ran it will never run your edit. Add a new migration "
                "instead (only if it was never released anywhere, update the pin)."
            )
    assert not [n for n in pins if n > LATEST], "a pinned migration was removed"
    assert not problems, "\n".join(problems)


# building old databases ---------------------------------------------------------------------
def build_at(version: int, location: str | Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at schema ``version`` as the bridge before Alembic left it: the real runner
    stopped at that revision (the same frozen SQL that bridge ran), then without the
    ``alembic_version`` table that bridge did not have."""
    with monkeypatch.context() as m:
        m.setattr(migrations, "TARGET", f"{version:04d}")
        # Schema 1 had no data key (MACs were plaintext): it cannot check one.
        BridgeStore(location, data_key=KEY if version >= 2 else None).close()
    engine = sql_engine(location)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
    finally:
        engine.dispose()


def sql_engine(location: str | Path) -> Any:
    """A SQLAlchemy engine on the test's database (either engine)."""
    url = sqlalchemy_url(str(location)) if is_postgres(location) else f"sqlite:///{location}"
    return create_engine(url, poolclass=NullPool)


# The raw database under a store: a sqlite3 connection, or the store's transitional adapter
# (which runs the same SQLite-dialect SQL, translated). Catalogue questions are asked per engine.
Raw = sqlite3.Connection | CompatSQL
SQLITE_TYPES = {"bigint": "INTEGER", "text": "TEXT", "double precision": "REAL", "bytea": "BLOB"}


def open_raw(location: str | Path) -> Raw:
    return (
        CompatSQL(Database(str(location))) if is_postgres(location) else sqlite3.connect(location)
    )


def columns(conn: Raw, table: str) -> list[tuple[str, str, bool, Any, int]]:
    """(name, SQLite type, not null, default as SQL text, position in the primary key)."""
    if isinstance(conn, sqlite3.Connection):
        return [
            (r[1], r[2].upper(), bool(r[3]), r[4], r[5])
            for r in conn.execute(f"PRAGMA table_info({table})")
        ]
    pk = [
        r[0]
        for r in conn.execute(
            "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) "
            "WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a ON a.attrelid=i.indrelid "
            "AND a.attnum=k.attnum WHERE i.indrelid=to_regclass(?) AND i.indisprimary "
            "ORDER BY k.n",
            [table],
        )
    ]
    return [
        (
            name,
            SQLITE_TYPES[type_],
            nullable == "NO",
            _pg_default(default),
            pk.index(name) + 1 if name in pk else 0,
        )
        for name, type_, nullable, default in conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema=current_schema() "
            "AND table_name=? ORDER BY ordinal_position",
            [table],
        )
    ]


def tables(conn: Raw) -> list[str]:
    if isinstance(conn, sqlite3.Connection):
        sql = (
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "AND name <> 'schema_migrations' ORDER BY name"
        )
    else:
        sql = (
            "SELECT table_name FROM information_schema.tables WHERE table_type='BASE TABLE' "
            "AND table_schema=current_schema() AND table_name <> 'schema_migrations' ORDER BY 1"
        )
    return [r[0] for r in conn.execute(sql)]


def foreign_keys(conn: Raw, table: str) -> list[tuple[str, str, str | None]]:
    """(column, referenced table, referenced column) of each foreign key."""
    if isinstance(conn, sqlite3.Connection):
        return [(fk[3], fk[2], fk[4]) for fk in conn.execute(f"PRAGMA foreign_key_list({table})")]
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT kcu.column_name, ccu.table_name, ccu.column_name "
            "FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu "
            "ON kcu.constraint_name=tc.constraint_name AND kcu.table_schema=tc.table_schema "
            "JOIN information_schema.constraint_column_usage ccu "
            "ON ccu.constraint_name=tc.constraint_name AND ccu.table_schema=tc.table_schema "
            "WHERE tc.constraint_type='FOREIGN KEY' AND tc.table_schema=current_schema() "
            "AND tc.table_name=?",
            [table],
        )
    ]


def insert(conn: Raw, table: str, row: dict[str, Any]) -> None:
    """Insert the keys this schema version has; NOT NULL columns without a default get a value."""
    cols = columns(conn, table)
    names = {c[0] for c in cols}
    row = {k: v for k, v in row.items() if k in names}
    for name, type_, notnull, default, pk in cols:
        if name not in row and notnull and default is None and not _rowid(cols, pk, type_):
            row[name] = synthetic(table, name, type_)
    conn.execute(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        list(row.values()),
    )


def _rowid(cols: list[tuple[str, str, bool, Any, int]], pk: int, type_: str) -> bool:
    """The column is the table's only primary key and an integer: the engine numbers it (a
    key of several integer columns, as in the report figures, needs values)."""
    return bool(pk) and "INT" in type_ and sum(1 for c in cols if c[4]) == 1


def synthetic(table: str, column: str, type_: str) -> Any:
    if "INT" in type_:
        return 1
    if "REAL" in type_ or "FLOA" in type_ or "DOUB" in type_:
        return NOW - 3 * DAY
    if "BLOB" in type_:
        return b"\x00\x01"
    return f"{table}.{column}"


def seed_domain(conn: Raw) -> None:
    """What a running bridge holds: a store, two consenting customers, a campaign, one SMS sent."""
    insert(conn, "stores", {
        "id": "main-st", "name": "Main St. Coffee", "timezone": "Europe/Moscow", "country": "RU",
        "sender_name": "MainStCafe", "send_start": "00:00", "send_end": "24:00",
        "site_key": "00" * 16, "roster_version": 3,
    })  # fmt: skip
    insert(conn, "sensors", {
        "store_id": "main-st", "sensor_id": "door-1", "state": "online", "agent_version": "0.1.0",
        "roster_version": 3, "last_seen": NOW - 60,
    })  # fmt: skip
    cipher = DataCipher(KEY)
    device_cols = {c[0] for c in columns(conn, "devices")}
    for cid, crm, subject, name, phone, fav in (
        (1, "C-1001", ANNA, "Anna", "+79161234501", "espresso beans"),
        (2, "C-1002", BORIS, "Boris", "+79161234502", "almond croissants"),
    ):
        insert(conn, "customers", {
            "id": cid, "crm_id": crm, "subject": subject, "name": name, "phone": phone,
            "favourite_product": fav, "created": NOW - 10 * DAY,
        })  # fmt: skip
        raw = bytes.fromhex(MACS[cid].replace(":", ""))
        device = {"customer_id": cid, "first_seen": NOW - 9 * DAY, "last_seen": NOW - DAY}
        if "mac" in device_cols:  # schema 1 kept MACs in plaintext
            device["mac"] = MACS[cid]
        else:
            device |= {"mac_hmac": cipher.mac_lookup(raw), "mac_enc": cipher.encrypt_mac(raw)}
        insert(conn, "devices", device)
        for kind in ("sms", "recognition"):
            insert(conn, "consents", {
                "customer_id": cid, "kind": kind, "status": "active", "text_version": "v1",
                "proof": json.dumps({"source": "test"}), "ts": NOW - 10 * DAY,
            })  # fmt: skip
    insert(conn, "campaigns", {
        "id": "fav-15", "name": "15% off your favourite", "trigger": "arrive",
        "template": "{{ first_name }}, 15% off {{ favourite_product }} today at {{ store_name }}.",
        "stores": json.dumps(["main-st"]), "status": "active", "cap_count": 1, "cap_days": 30,
        "priority": 0,
    })  # fmt: skip
    payload = {"schema": "passby.event/1", "event_id": "e" * 32, "type": "arrive"}
    insert(conn, "events", {
        "event_id": "e" * 32, "store_id": "main-st", "sensor_id": "door-1", "type": "arrive",
        "subject": ANNA, "ts": NOW - DAY, "payload": json.dumps(payload),
        "received": NOW - DAY, "state": "done",
    })  # fmt: skip
    insert(conn, "decisions", {
        "id": 1, "event_id": "e" * 32, "customer_id": 1, "campaign_id": "fav-15",
        "outcome": "send", "reason": "sent", "detail": "all checks passed", "ts": NOW - DAY,
    })  # fmt: skip
    insert(conn, "sends", {
        "id": 1, "decision_id": 1, "customer_id": 1, "campaign_id": "fav-15",
        "store_id": "main-st", "ts": NOW - DAY, "state": "delivered", "provider": "sandbox",
        "provider_id": "sb-1", "sender": "MainStCafe",
        "body": "Anna, 15% off espresso beans today at Main St. Coffee.",
    })  # fmt: skip
    # A send the bridge shed (before migration 9: 'failed' with its reason): never reached Boris.
    insert(conn, "decisions", {
        "id": 2, "event_id": "e" * 32, "customer_id": 2, "campaign_id": "fav-15",
        "outcome": "send", "reason": "sent", "detail": "all checks passed", "ts": NOW - DAY,
    })  # fmt: skip
    insert(conn, "sends", {
        "id": 2, "decision_id": 2, "customer_id": 2, "campaign_id": "fav-15",
        "store_id": "main-st", "ts": NOW - DAY, "state": "failed", "provider": "sandbox",
        "error": "shed: queue full (1000 waiting)", "sender": "MainStCafe",
        "body": "Boris, 15% off almond croissants today at Main St. Coffee.",
    })  # fmt: skip
    insert(conn, "sandbox_messages", {
        "sid": "sb-1", "to_phone": "+79161234501", "sender": "MainStCafe",
        "body": "Anna, 15% off espresso beans today at Main St. Coffee.", "ts": NOW - DAY,
    })  # fmt: skip
    insert(conn, "dead_letters", {
        "topic": TOPIC, "reason": "invalid events message", "payload_sha256": "0" * 64,
        "payload_bytes": 3, "received": NOW - DAY,
    })  # fmt: skip


def fill_the_rest(conn: Raw) -> None:
    """One row in every table still empty, parents first, foreign keys pointing at real rows."""
    empty = [t for t in tables(conn) if not conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()]
    fks = {t: foreign_keys(conn, t) for t in empty}
    done: set[str] = set()
    while len(done) < len(empty):
        progress = False
        for t in empty:
            parents = {fk[1] for fk in fks[t]} - {t}
            if t in done or not parents <= (done | (set(tables(conn)) - set(empty))):
                continue
            row: dict[str, Any] = {}
            for column, parent, key in fks[t]:
                ref = conn.execute(f"SELECT {key or 'rowid'} FROM {parent} LIMIT 1").fetchone()
                row[column] = ref[0] if ref else None
            cols = columns(conn, t)
            for name, type_, _notnull, default, pk in cols:
                if name in row or _rowid(cols, pk, type_):
                    continue
                row[name] = (
                    default_value(default) if default is not None else synthetic(t, name, type_)
                )
            insert(conn, t, row)
            done.add(t)
            progress = True
        assert progress, f"cannot order tables by foreign keys: {set(empty) - done}"


def default_value(sql_default: str) -> Any:
    """The value of a column DEFAULT clause as SQLite reports it ('[]', 0, 'median'...)."""
    if sql_default.startswith("'") and sql_default.endswith("'"):
        return sql_default[1:-1].replace("''", "'")
    try:
        return json.loads(sql_default)
    except ValueError:
        return sql_default


def snapshot(conn: Raw) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    out = {}
    for t in tables(conn):
        cols = [c[0] for c in columns(conn, t)]
        rows = sorted(conn.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall(), key=repr)
        out[t] = (cols, rows)
    return out


def _devices_encrypted(old: tuple[list[str], list[tuple[Any, ...]]], new: Raw) -> None:
    """Migration 2: plaintext MACs moved into encrypted rows, found again by keyed lookup."""
    cols, rows = old
    cipher = DataCipher(KEY)
    got = {
        (cid, cipher.decrypt_mac(enc).hex(":"), first, last)
        for cid, enc, first, last in new.execute(
            "SELECT customer_id, mac_enc, first_seen, last_seen FROM devices"
        )
    }
    want = {(r[cols.index("customer_id")], r[cols.index("mac")], r[cols.index("first_seen")],
             r[cols.index("last_seen")]) for r in rows}  # fmt: skip
    assert got == want


def _rewritten(
    old: tuple[list[str], list[tuple[Any, ...]]], new: Raw, table: str, column: str, want: Any
) -> None:
    """Every row is still there, equal but for ``column``, which reads ``want(row)``."""
    cols, rows = old
    i = cols.index(column)
    expected = sorted(
        (tuple(want(dict(zip(cols, r, strict=True))) if j == i else v for j, v in enumerate(r))
         for r in rows), key=repr,
    )  # fmt: skip
    got = sorted(new.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall(), key=repr)
    assert got == expected, f"{table}.{column} after migration 9"


def _shed_sends(old: tuple[list[str], list[tuple[Any, ...]]], new: Raw) -> None:
    """Migration 9: a send the bridge shed (failed or expired with a 'shed:' error) is 'shed'."""

    def state(r: dict[str, Any]) -> str:
        shed = r["state"] in ("failed", "expired") and (r.get("error") or "").startswith("shed:")
        return "shed" if shed else r["state"]

    _rewritten(old, new, "sends", "state", state)


def _decisions_follow_sends(old: tuple[list[str], list[tuple[Any, ...]]], new: Raw) -> None:
    """Migration 9: a decision to send reads what became of its SMS, never 'sent' ahead."""
    states = dict(new.execute("SELECT decision_id, state FROM sends").fetchall())

    def reason(r: dict[str, Any]) -> str:
        if r["outcome"] != "send" or r["id"] not in states:
            return str(r["reason"])
        return store_mod.decision_of_send(states[r["id"]])

    _rewritten(old, new, "decisions", "reason", reason)


def _figures_rebuilt(old: tuple[list[str], list[tuple[Any, ...]]], new: Raw) -> None:
    """Migration 9: the report figures' marks are dropped, so the next report rebuilds them."""
    assert new.execute("SELECT count(*) FROM report_marks").fetchone()[0] == 0


# Tables a migration rewrites on purpose, from (table, schema version before): how to check them.
TRANSFORMED: dict[tuple[str, int], Callable[[Any, Raw], None]] = {
    ("devices", 1): _devices_encrypted,
    ("sends", 8): _shed_sends,
    ("decisions", 8): _decisions_follow_sends,
    ("report_marks", 8): _figures_rebuilt,
}


def advance_identities(conn: CompatSQL) -> None:
    """PostgreSQL: rows seeded with explicit ids leave an identity column's sequence behind
    (SQLite takes max(rowid) + 1): move each past the ids in use, as a data import must."""
    for t in tables(conn):
        if any(c[0] == "id" and c[4] and c[1] == "INTEGER" for c in columns(conn, t)):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                f"coalesce((SELECT max(id) FROM {t}), 0) + 1, false)"
            )


@pytest.mark.parametrize("version", range(1, LATEST + 1), ids=lambda v: f"from-v{v}")
def test_upgrade_from_an_older_schema_keeps_every_row(
    version: int,
    tmp_path: Path,
    db_location: str | Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    build_at(version, db_location, monkeypatch)
    conn = open_raw(db_location)
    assert max(r[0] for r in conn.execute("SELECT version FROM schema_migrations")) == version
    seed_domain(conn)
    fill_the_rest(conn)
    if isinstance(conn, sqlite3.Connection):
        conn.commit()
    else:
        advance_identities(conn)
    before = snapshot(conn)
    assert all(rows for _cols, rows in before.values()), "every table holds data before upgrading"
    conn.close()

    store = BridgeStore(db_location, data_key=KEY)  # migrates
    try:
        new = store.db if store.postgres else sqlite3.connect(db_location)
        versions = [r[0] for r in new.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == list(range(1, LATEST + 1))
        if not store.postgres:  # PostgreSQL checks its pages and keys as it writes them
            assert new.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert new.execute("PRAGMA foreign_key_check").fetchall() == []
        after = set(tables(new))
        for t, (cols, rows) in before.items():
            check = TRANSFORMED.get((t, version)) or next(
                (fn for (name, v), fn in TRANSFORMED.items() if name == t and v >= version), None
            )
            if check is not None:
                check((cols, rows), new)
                continue
            assert t in after, f"upgrading from v{version} dropped table {t} with its data"
            now_cols = [c[0] for c in columns(new, t)]
            lost = [c for c in cols if c not in now_cols]
            assert not lost, f"upgrading from v{version} dropped {t} columns {lost}"
            got = sorted(new.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall(), key=repr)
            assert got == rows, f"upgrading from v{version} changed rows of {t}"
    finally:
        store.close()
    if is_postgres(db_location):
        fresh: str | Path = _fresh_pg(request.getfixturevalue("postgres_cluster"))
    else:
        fresh = tmp_path / "fresh.db"
    assert_same_schema_as_fresh(db_location, fresh)
    assert_data_still_works(db_location)


def assert_same_schema_as_fresh(upgraded: str | Path, fresh: str | Path) -> None:
    schemas = []
    for location in (upgraded, fresh):
        store = BridgeStore(location, data_key=KEY)
        try:
            schemas.append(catalogue(store))
        finally:
            store.close()
    assert schemas[0] == schemas[1], "an upgraded database must look like a fresh one"


def assert_data_still_works(location: str | Path) -> None:
    """Same events, same decisions as before the upgrade: Anna is capped, Boris gets his SMS."""
    store = BridgeStore(location, data_key=KEY)
    try:
        counters = IngestCounters()
        for subject in (ANNA, BORIS):
            payload = {
                "schema": "passby.event/1", "event_id": hashlib.md5(subject.encode()).hexdigest(),
                "type": "arrive", "subject": subject, "ts": NOW - 5, "first_seen": NOW - 30,
                "last_seen": NOW - 5, "rssi": {"max": -60, "median": -64}, "frames": 12,
                "dwell_s": 0,
            }  # fmt: skip
            assert (
                handle_message(store, TOPIC, json.dumps(payload).encode(), NOW, counters) == "event"
            )
        DecisionWorker(store, SandboxProvider(store)).process_pending(now=NOW)
        reasons = {
            r["customer_id"]: r["reason"]
            for r in store.query("SELECT customer_id, reason FROM decisions WHERE ts = ?", [NOW])
        }
        assert reasons == {1: "campaign_cap", 2: "sent"}, reasons
        bodies = [r["body"] for r in store.query("SELECT body FROM sandbox_messages ORDER BY id")]
        assert bodies[-1].startswith("Boris, 15% off almond croissants")
        assert {mac for mac, _ in store.roster_entries(NOW)} == set(MACS.values())
    finally:
        store.close()


def catalogue(store: BridgeStore) -> list[tuple[Any, ...]]:
    """The whole schema as the engine describes it (SQLite: the DDL text of every object;
    PostgreSQL: columns, indexes, constraints and views from its catalogue)."""
    if not store.postgres:
        return sorted(
            (r["type"], r["name"], " ".join((r["sql"] or "").split()))
            for r in store.query(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
        )
    queries = [
        "SELECT 'column', table_name, column_name, data_type, is_nullable, column_default, "
        "is_identity, collation_name FROM information_schema.columns "
        "WHERE table_schema=current_schema()",
        "SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname=current_schema()",
        "SELECT 'constraint', c.conname, t.relname, pg_get_constraintdef(c.oid) "
        "FROM pg_constraint c JOIN pg_class t ON t.oid=c.conrelid "
        "WHERE t.relnamespace=to_regnamespace(current_schema())",
        "SELECT 'view', viewname, definition FROM pg_views WHERE schemaname=current_schema()",
    ]
    return sorted(tuple(r.values()) for q in queries for r in store.query(q))


def test_migrating_twice_changes_nothing(db_location) -> None:
    store = BridgeStore(db_location, data_key=KEY)
    first = store.query("SELECT version, applied FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in first] == list(range(1, LATEST + 1))
    assert store.migrate() == LATEST
    assert store.query("SELECT version, applied FROM schema_migrations ORDER BY version") == first
    schema = catalogue(store)
    assert schema
    store.close()
    again = BridgeStore(db_location, data_key=KEY)
    try:
        assert catalogue(again) == schema
        assert (
            again.query("SELECT version, applied FROM schema_migrations ORDER BY version") == first
        )
    finally:
        again.close()


# PostgreSQL: the same migrations, translated ------------------------------------------------
# A fresh PostgreSQL database must end up with the schema a fresh SQLite file has: the same
# tables and views, the same columns in the same order with the corresponding types, keys,
# defaults and indexes. (The pinned hashes above are of the one SQL text both engines run.)
PG_TYPES = {
    "INTEGER": "bigint",
    "TEXT": "text",
    "REAL": "double precision",
    "BLOB": "bytea",
    "VARCHAR(32)": "character varying",  # alembic_version.version_num
}


def portable_schema(store: BridgeStore) -> dict[str, Any]:
    """Tables, views, columns, keys and indexes in terms both engines share."""
    out: dict[str, Any] = {}
    pg = store.postgres
    if pg:
        views = [
            r["name"]
            for r in store.query(
                "SELECT table_name AS name FROM information_schema.views "
                "WHERE table_schema=current_schema() ORDER BY 1"
            )
        ]
    else:
        views = [r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type='view'")]
    out["views"] = sorted(views)
    for t in [*table_names(store), *views]:
        if pg:
            cols = [
                (r["name"], r["type"], r["nullable"] == "NO", _pg_default(r["dflt"]))
                for r in store.query(
                    "SELECT column_name AS name, data_type AS type, is_nullable AS nullable, "
                    "column_default AS dflt FROM information_schema.columns "
                    "WHERE table_schema=current_schema() AND table_name=? ORDER BY ordinal_position",
                    [t],
                )
            ]
        else:
            pks = {
                r["name"]
                for r in store.query("SELECT name, pk FROM pragma_table_info(?)", [t])
                if r["pk"]
            }
            cols = [
                (
                    r["name"],
                    PG_TYPES.get(r["type"].upper(), r["type"]),
                    # SQLite lets a non-INTEGER primary key column hold NULL (a historical
                    # quirk); PostgreSQL makes every primary key column NOT NULL.
                    bool(r["notnull"]) or r["name"] in pks,
                    r["dflt_value"],
                )
                for r in store.query("SELECT * FROM pragma_table_info(?)", [t])
            ]
        if t in views:
            cols = [c[0] for c in cols]  # view columns have no declared type in SQLite
        out[f"columns {t}"] = cols
        if t not in views:
            out[f"unique {t}"] = _unique_keys(store, t)
            out[f"foreign {t}"] = _foreign_keys(store, t)
    out["indexes"] = _indexes(store)
    return out


def _pg_default(default: str | None) -> str | None:
    """'[]'::text -> '[]' (PostgreSQL shows the type of a default; SQLite does not)."""
    if default is None:
        return None
    return re.sub(r"::[a-z ]+$", "", default)


def _unique_keys(store: BridgeStore, table: str) -> set[tuple[str, ...]]:
    if store.postgres:
        rows = store.query(
            "SELECT i.indexrelid AS id, a.attname AS col, k.n FROM pg_index i "
            "JOIN pg_class t ON t.oid=i.indrelid "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid=t.oid AND a.attnum=k.attnum "
            "WHERE t.relname=? AND t.relnamespace=to_regnamespace(current_schema()) "
            "AND i.indisunique ORDER BY id, k.n",
            [table],
        )
        keys: dict[Any, list[str]] = {}
        for r in rows:
            keys.setdefault(r["id"], []).append(r["col"])
        return {tuple(k) for k in keys.values()}
    out = set()
    for idx in store.query('SELECT name FROM pragma_index_list(?) WHERE "unique"', [table]):
        cols = store.query("SELECT name FROM pragma_index_info(?) ORDER BY seqno", [idx["name"]])
        out.add(tuple(c["name"] for c in cols))
    # an INTEGER PRIMARY KEY is the rowid in SQLite, not an index
    pk = [
        r["name"]
        for r in store.query("SELECT name, pk FROM pragma_table_info(?)", [table])
        if r["pk"]
    ]
    if pk:
        out.add(tuple(pk))
    return out


def _foreign_keys(store: BridgeStore, table: str) -> set[tuple[str, str, str | None]]:
    raw = store.db if store.postgres else sqlite3.connect(store.location)
    return set(foreign_keys(raw, table))


def _indexes(store: BridgeStore) -> set[tuple[str, str, tuple[str, ...]]]:
    """The indexes the migrations create by name: (name, table, columns)."""
    if store.postgres:
        rows = store.query(
            "SELECT indexname, tablename, indexdef FROM pg_indexes i "
            "WHERE schemaname=current_schema() AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conname=i.indexname)"
        )
        return {
            (
                r["indexname"],
                r["tablename"],
                tuple(
                    c.strip() for c in re.search(r"\((.*)\)$", r["indexdef"]).group(1).split(",")
                ),
            )
            for r in rows
        }
    rows = store.query(
        "SELECT name, tbl_name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
    )
    return {
        (
            r["name"],
            r["tbl_name"],
            tuple(
                c["name"]
                for c in store.query(
                    "SELECT name FROM pragma_index_info(?) ORDER BY seqno", [r["name"]]
                )
            ),
        )
        for r in rows
    }


def _fresh_pg(cluster: Any) -> str:
    return cluster.create_database(f"mig_{uuid.uuid4().hex[:12]}")  # type: ignore[no-any-return]


def test_fresh_postgres_has_the_schema_of_a_fresh_sqlite_file(
    tmp_path: Path, postgres_cluster: Any
) -> None:
    lite = BridgeStore(tmp_path / "bridge.db", data_key=KEY)
    pg = BridgeStore(_fresh_pg(postgres_cluster), data_key=KEY)
    try:
        assert pg.migrate() == lite.migrate() == LATEST
        versions = "SELECT version FROM schema_migrations ORDER BY version"
        assert pg.query(versions) == lite.query(versions)
        assert table_names(pg) == table_names(lite)
        want, got = portable_schema(lite), portable_schema(pg)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == want[key], key
    finally:
        pg.close()
        lite.close()


def open_at_once(location: str | Path, n: int) -> tuple[list[BridgeStore], list[BaseException]]:
    """``n`` threads open a store on ``location`` at the same moment: (stores, errors)."""
    go = threading.Barrier(n)
    opened: list[BridgeStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        go.wait()
        try:
            opened.append(BridgeStore(location, data_key=KEY))
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return opened, errors


def test_two_stores_opening_a_fresh_postgres_database_at_once_both_succeed(
    postgres_cluster: Any,
) -> None:
    """Bridge workers started together: an advisory lock runs each migration once, the other
    store waits for it, then finds it done."""
    for _ in range(3):
        opened, errors = open_at_once(_fresh_pg(postgres_cluster), 2)
        try:
            assert not errors, errors
            assert len(opened) == 2
            rows = opened[0].query("SELECT version FROM schema_migrations ORDER BY version")
            assert [r["version"] for r in rows] == list(range(1, LATEST + 1))  # each once
            assert catalogue(opened[0]) == catalogue(opened[1])
        finally:
            for store in opened:
                store.close()


def test_migrations_only_go_forward() -> None:
    """Numbered revisions 0001..N in one line, and no down-migrations: going back means
    restoring a backup."""
    revs = migrations.revisions()
    assert revs == [f"{n:04d}" for n in range(1, LATEST + 1)]
    files = sorted(p.name for p in (Path(migrations.__file__).parent / "versions").glob("*.py"))
    assert [f[:4] for f in files] == revs, "one file per revision, named by its number"
    for n in range(1, LATEST + 1):
        module = revision_module(n)
        assert module.down_revision == (None if n == 1 else f"{n - 1:04d}")
        assert not hasattr(module, "downgrade"), f"revision {n:04d} has a downgrade"
    names = {n.lower() for n in dir(store_mod) + dir(migrations)}
    assert not any("downgrade" in n or "rollback_migration" in n for n in names)


def test_the_tables_of_schema_py_are_what_the_migrations_build(db_location: str | Path) -> None:
    """Alembic compares storage/schema.py with the upgraded database: no difference."""
    BridgeStore(db_location, data_key=KEY).close()
    engine = sql_engine(db_location)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diffs = [d for d in compare_metadata(context, metadata) if not sqlite_quirk(conn, d)]
    finally:
        engine.dispose()
    assert diffs == []


def sqlite_quirk(conn: Any, diff: Any) -> bool:
    """Differences SQLite's catalogue cannot express: a primary key column that is not an
    integer may hold NULL there (SQLAlchemy's primary keys are NOT NULL), and an INTEGER
    PRIMARY KEY numbers its rows without an identity clause. Also one of Alembic's SQLite
    comparator: it cannot unquote an empty string default (DEFAULT '' reads "('')")."""
    if conn.dialect.name != "sqlite" or not isinstance(diff, list) or len(diff) != 1:
        return False
    kind, _schema, table, column, _existing, old, new = diff[0]
    col = metadata.tables[table].c[column]
    if kind == "modify_nullable":
        return bool(col.primary_key and old is True and new is False)
    if kind == "modify_default" and col.identity is not None:
        return old is None and new is col.identity
    if kind == "modify_default":
        return str(getattr(old, "arg", None)) in ("('')", "''") and new.arg == ""
    return False


def test_newer_schema_is_refused(db_location) -> None:
    """A downgrade is refused with a clear message instead of running on an unknown schema."""
    import pytest

    from cloud_bridge.storage.store import BridgeStore, SchemaTooNew

    db = BridgeStore(db_location)
    db.db.execute("INSERT INTO schema_migrations VALUES (?, 0)", [LATEST + 1])
    db.close()
    with pytest.raises(SchemaTooNew, match="newer than this bridge"):
        BridgeStore(db_location)
