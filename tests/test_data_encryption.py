"""MACs at rest: encrypted (AES-GCM) with a keyed lookup hash; no MAC in any spelling in the DB."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud_bridge.config import BridgeSettings
from cloud_bridge.crm_import import import_customers
from cloud_bridge.datakey import DataCipher, DataKeyError, load_data_key
from cloud_bridge.keys import BridgeKeys
from cloud_bridge.store import MIGRATIONS, BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from cloud_bridge.web import create_app

TENANT = Path(__file__).parents[1] / "cloud_bridge" / "demo" / "tenant.toml"


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


def test_no_plaintext_mac_in_the_database_files(tmp_path: Path) -> None:
    store = BridgeStore(tmp_path / "bridge.db")
    keys = BridgeKeys(tmp_path)
    tenant = load_tenant(TENANT)
    seed(store, keys, tenant, time.time())
    macs = [m for c in tenant.customers for m in c.macs]
    csv = tmp_path / "crm.csv"
    csv.write_text("crm_id,name,phone,macs\nC-9,Gor,+79167000099,06:0a:0b:0c:0d:0e\n")
    import_customers(store, keys.subject_key, csv, time.time())
    macs.append("06:0a:0b:0c:0d:0e")
    with TestClient(create_app(store)) as client:  # and one through the enrolment API
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
        body = store.query("SELECT body FROM sandbox_messages ORDER BY id DESC LIMIT 1")[0]["body"]
        code = re.search(r"\d{6}", body).group(0)
        confirm = f"/api/v1/enrolments/{r.json()['enrolment_id']}/confirm"
        assert client.post(confirm, json={"code": code}).status_code == 200
    macs.append("0a:1b:2c:3d:4e:5f")
    # the roster builder still sees the consented devices, decrypted
    roster_macs = {m for m, _ in store.roster_entries(0)}
    assert {"da:a1:19:3c:4e:01", "0a:1b:2c:3d:4e:5f"} <= roster_macs
    gor = store.customer_row("C-9")
    assert [d["mac"] for d in store.devices_of(gor["id"])] == ["06:0a:0b:0c:0d:0e"]
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


def test_cipher_roundtrip_lookup_and_tamper() -> None:
    cipher = DataCipher(bytes(range(32)))
    mac = bytes.fromhex("02aabbccddee")
    a, b = cipher.encrypt_mac(mac), cipher.encrypt_mac(mac)
    assert a != b  # fresh nonce every time
    assert cipher.decrypt_mac(a) == cipher.decrypt_mac(b) == mac
    assert cipher.mac_lookup(mac) == cipher.mac_lookup(bytes(mac))
    assert cipher.mac_lookup(mac) != DataCipher(bytes(32)).mac_lookup(mac)
    with pytest.raises(DataKeyError):
        cipher.decrypt_mac(a[:-1] + bytes([a[-1] ^ 1]))
    with pytest.raises(DataKeyError):
        DataCipher(bytes(32)).decrypt_mac(a)


def test_key_file_is_created_0600_and_env_wins(tmp_path: Path) -> None:
    key = load_data_key(tmp_path / "keys", env={})
    path = tmp_path / "keys" / "data.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_data_key(tmp_path / "keys", env={}) == key
    other = "ab" * 32
    assert load_data_key(tmp_path / "keys", env={"PASSBY_DATA_KEY": other}) == bytes.fromhex(other)
    with pytest.raises(DataKeyError, match="64 hex"):
        load_data_key(tmp_path / "keys", env={"PASSBY_DATA_KEY": "abcd"})


def test_database_refuses_another_key(tmp_path: Path, monkeypatch) -> None:
    store = BridgeStore(tmp_path / "bridge.db", data_key=b"\x01" * 32)
    store.add_device(
        store.upsert_customer("C", "00", "N", "+79160000000", None, 0.0),
        "02:00:00:00:00:01",
        0,
        None,
    )
    store.close()
    with pytest.raises(DataKeyError, match="not the key this database was written with"):
        BridgeStore(tmp_path / "bridge.db", data_key=b"\x02" * 32)  # refused at open
    monkeypatch.delenv("PASSBY_DATA_KEY", raising=False)
    lazy = BridgeStore(tmp_path / "bridge.db")  # default key file: not the one used above
    with pytest.raises(DataKeyError):
        lazy.roster_entries(0)
    lazy.close()


def test_settings_key_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PASSBY_DATA_KEY", "cd" * 32)
    settings = BridgeSettings(data_dir=tmp_path)
    assert settings.data_key_bytes() == bytes.fromhex("cd" * 32)
    assert "cdcd" not in repr(settings)  # a secret, never printed
    monkeypatch.delenv("PASSBY_DATA_KEY")
    assert BridgeSettings(data_dir=tmp_path).data_key_bytes() == load_data_key(
        tmp_path / "keys", env={}
    )
    assert os.path.exists(tmp_path / "keys" / "data.key")


def test_schema_1_database_is_migrated_to_encrypted_macs(tmp_path: Path) -> None:
    """A bridge database from before migration 2 holds plaintext MACs; opening it encrypts them
    and leaves no plaintext behind (secure_delete + WAL checkpoint)."""
    path = tmp_path / "bridge.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied REAL)")
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO schema_migrations VALUES (1, 0)")
    conn.execute(
        "INSERT INTO customers(id, crm_id, subject, name, phone, created) "
        "VALUES (1, 'C-1', 'aa', 'Anna', '+79161234501', 0)"
    )
    conn.execute(
        "INSERT INTO consents(customer_id, kind, status, ts) VALUES (1, 'recognition', 'active', 0)"
    )
    for mac in ("da:a1:19:3c:4e:01", "f2:5c:d8:01:77:a3"):
        conn.execute(
            "INSERT INTO devices(customer_id, mac, first_seen, last_seen, expires) "
            "VALUES (1, ?, 0, 0, NULL)",
            [mac],
        )
    conn.commit()
    conn.close()
    store = BridgeStore(path)
    assert sorted(store.roster_entries(1.0)) == [
        ("da:a1:19:3c:4e:01", "aa"),
        ("f2:5c:d8:01:77:a3", "aa"),
    ]
    assert not store.query("SELECT name FROM sqlite_master WHERE name='devices_v1'")
    store.close()
    for name, blob in db_bytes(tmp_path).items():
        for mac in ("da:a1:19:3c:4e:01", "f2:5c:d8:01:77:a3"):
            for needle in notations(mac):
                assert needle not in blob, f"{needle!r} left in {name}"
