"""MACs at rest: encrypted (AES-GCM) with a keyed lookup hash; no MAC in any spelling in the DB."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from engine_helpers import is_postgres, table_names
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cloud_bridge.config import BridgeSettings
from cloud_bridge.customers.crm_import import import_customers
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage import migrations
from cloud_bridge.storage.customers import all_devices
from cloud_bridge.storage.datakey import DataKeyError
from cloud_bridge.storage.db import sqlalchemy_url
from cloud_bridge.storage.sends import sandbox_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from cloud_bridge.web.app import create_app

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"


def notations(mac: str) -> list[bytes]:
    """A MAC as text in every common spelling, and as its 6 raw bytes."""
    h = mac.replace(":", "").replace("-", "").lower()
    pairs = [h[i : i + 2] for i in range(0, 12, 2)]
    forms = [":".join(pairs), "-".join(pairs), h, f"{h[0:4]}.{h[4:8]}.{h[8:12]}"]
    forms += [f.upper() for f in forms]
    return [f.encode() for f in forms] + [bytes.fromhex(h)]


def db_bytes(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in directory.iterdir()
        if p.is_file() and p.name.startswith("bridge.db")
    }


def fill(store: BridgeStore, tmp_path: Path) -> list[str]:
    """Devices from the tenant file, a CRM import and the enrolment API; their MACs."""
    keys = BridgeKeys(tmp_path)
    tenant = load_tenant(TENANT)
    seed(store, keys, tenant, time.time())
    macs = [m for c in tenant.customers for m in c.macs]
    csv = tmp_path / "crm.csv"
    csv.write_text("crm_id,name,phone,macs\nC-9,Gor,+79167000099,06:0a:0b:0c:0d:0e\n")
    import_customers(store, keys.subject_key, csv, time.time())
    macs.append("06:0a:0b:0c:0d:0e")
    # Without settings the app finds the bridge's keys next to the SQLite file; a PostgreSQL
    # store has no directory, so there the app is given its settings (data_dir).
    settings = (
        BridgeSettings(data_dir=tmp_path, database=store.location) if store.postgres else None
    )
    with TestClient(create_app(store, settings)) as client:  # and one through the enrolment API
        r = client.post(
            "/api/v1/enrolments",
            json={
                "store_id": "main-st",
                "phone": "+79167000098",
                "name": "Ani",
                "language": "hy",
                "consent_sms": True,
                "consent_recognition": True,
                "mac": "0A-1B-2C-3D-4E-5F",
            },
        )
        body = sandbox_rows(store)[-1]["body"]
        code = re.search(r"\d{6}", body).group(0)
        confirm = f"/api/v1/enrolments/{r.json()['enrolment_id']}/confirm"
        assert client.post(confirm, json={"code": code}).status_code == 200
    macs.append("0a:1b:2c:3d:4e:5f")
    # the roster builder still sees the consented devices, decrypted
    roster_macs = {m for m, _ in store.roster_entries(0)}
    assert {"da:a1:19:3c:4e:01", "0a:1b:2c:3d:4e:5f"} <= roster_macs
    gor = store.customer_row("C-9")
    assert [d["mac"] for d in store.devices_of(gor["id"])] == ["06:0a:0b:0c:0d:0e"]
    return macs


def test_no_plaintext_mac_in_any_table(tmp_path: Path, db_location) -> None:
    """Every value of every table, on either engine: MACs only encrypted and as keyed hashes."""
    store = BridgeStore(db_location)
    try:
        macs = fill(store, tmp_path)
        for table in table_names(store):
            for row in store.query(f"SELECT * FROM {table}"):
                for value in row.values():
                    blob = value if isinstance(value, bytes) else str(value).encode()
                    for mac in macs:
                        for needle in notations(mac):
                            assert needle not in blob, f"{needle!r} found in {table}"
        rows = all_devices(store)
        assert len(rows) >= len(macs)
        for r in rows:
            assert len(r["mac_enc"]) == 12 + 6 + 16  # nonce + ciphertext + tag
            assert len(r["mac_hmac"]) == 64
    finally:
        store.close()


def test_no_plaintext_mac_in_the_database_files(tmp_path: Path) -> None:
    """SQLite only: the database file and its WAL, read as bytes (a PostgreSQL server's files
    are not the store's; test_no_plaintext_mac_in_any_table covers its content)."""
    store = BridgeStore(tmp_path / "bridge.db")
    macs = fill(store, tmp_path)
    live = db_bytes(tmp_path)  # with the WAL still open
    store.close()
    files = db_bytes(tmp_path)
    assert files and live
    for name, blob in {**{f"live {k}": v for k, v in live.items()}, **files}.items():
        for mac in macs:
            for needle in notations(mac):
                assert needle not in blob, f"{needle!r} found in {name}"
    rows = sqlite3.connect(tmp_path / "bridge.db").execute("SELECT mac_enc, mac_hmac FROM devices")
    for enc, lookup in rows:
        assert len(enc) == 12 + 6 + 16  # nonce + ciphertext + tag
        assert len(lookup) == 64


def test_database_refuses_another_key(db_location, monkeypatch) -> None:
    store = BridgeStore(db_location, data_key=b"\x01" * 32)
    store.add_device(
        store.upsert_customer("C", "00", "N", "+79160000000", None, 0.0),
        "02:00:00:00:00:01",
        0,
        None,
    )
    store.close()
    with pytest.raises(DataKeyError, match="not the key this database was written with"):
        BridgeStore(db_location, data_key=b"\x02" * 32)  # refused at open
    if not is_postgres(db_location):
        # SQLite's default is the key file next to the database; a PostgreSQL store keeps no
        # key files, its default is PASSBY_DATA_KEY (the fixture's, not the one used above).
        monkeypatch.delenv("PASSBY_DATA_KEY", raising=False)
    lazy = BridgeStore(db_location)  # default key: not the one used above
    with pytest.raises(DataKeyError, match="not the key this database was written with"):
        lazy.roster_entries(0)
    lazy.close()


def test_postgres_store_without_a_data_key_is_refused(postgres_cluster, monkeypatch) -> None:
    """A PostgreSQL store has no directory for a key file: no key given, no key in the
    environment is an error naming the fix, not a key made up on the spot. (SQLite creates
    its key file next to the database: test_key_file_is_created_0600_and_env_wins.)"""
    monkeypatch.delenv("PASSBY_DATA_KEY", raising=False)
    store = BridgeStore(postgres_cluster.create_database(f"nokey_{uuid.uuid4().hex[:12]}"))
    try:
        with pytest.raises(DataKeyError, match="PASSBY_DATA_KEY"):
            store.roster_entries(0)
    finally:
        store.close()


def write_schema_1(location: str | Path) -> None:
    """A bridge database from before migration 2, with plaintext MACs (SQLite file in WAL mode,
    or PostgreSQL), written as that bridge did: revision 0001's frozen SQL and its ledger."""
    url = sqlalchemy_url(str(location)) if is_postgres(location) else f"sqlite:///{location}"
    engine = create_engine(url, poolclass=NullPool)
    first = migrations.script().get_revision("0001").module
    try:
        with engine.begin() as conn:
            if not is_postgres(location):
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            raw = conn.execution_options(no_parameters=True)
            raw.exec_driver_sql(migrations.LEDGER[conn.dialect.name])
            for statement in getattr(first, conn.dialect.name.upper()):
                if statement.strip():
                    raw.exec_driver_sql(statement)
            conn.execute(text("INSERT INTO schema_migrations VALUES (1, 0)"))
            conn.execute(
                text(
                    "INSERT INTO customers(id, crm_id, subject, name, phone, created) "
                    "VALUES (1, 'C-1', 'aa', 'Anna', '+79161234501', 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO consents(customer_id, kind, status, ts) "
                    "VALUES (1, 'recognition', 'active', 0)"
                )
            )
            for mac in ("da:a1:19:3c:4e:01", "f2:5c:d8:01:77:a3"):
                conn.execute(
                    text(
                        "INSERT INTO devices(customer_id, mac, first_seen, last_seen, expires) "
                        "VALUES (1, :mac, 0, 0, NULL)"
                    ),
                    {"mac": mac},
                )
    finally:
        engine.dispose()
        conn.close()


def test_schema_1_database_is_migrated_to_encrypted_macs(db_location) -> None:
    """A bridge database from before migration 2 holds plaintext MACs; opening it encrypts them
    and drops the old table. On SQLite no plaintext is left behind in the files either
    (secure_delete + WAL checkpoint); a PostgreSQL server's files are not the store's."""
    write_schema_1(db_location)
    store = BridgeStore(db_location)
    assert sorted(store.roster_entries(1.0)) == [
        ("da:a1:19:3c:4e:01", "aa"),
        ("f2:5c:d8:01:77:a3", "aa"),
    ]
    assert "devices_v1" not in table_names(store) and "devices" in table_names(store)
    assert len([d for d in all_devices(store) if d["customer_id"] == 1]) == 2
    store.close()
    if is_postgres(db_location):
        return
    for name, blob in db_bytes(Path(db_location).parent).items():
        for mac in ("da:a1:19:3c:4e:01", "f2:5c:d8:01:77:a3"):
            for needle in notations(mac):
                assert needle not in blob, f"{needle!r} left in {name}"
