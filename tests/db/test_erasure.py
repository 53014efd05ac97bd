"""Erasure on request (CLI and API): PII gone, suppression stops re-import, a new double opt-in
lifts it, and the next roster leaves the customer out."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_helpers import bridge_location, database_setting
from fastapi.testclient import TestClient

from cloud_bridge.config import BridgeSettings, EnrolSettings
from cloud_bridge.customers.crm_import import import_customers
from cloud_bridge.customers.enrol import Enrolments
from cloud_bridge.customers.erasure import erase_customer, suppressed
from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.sensors.rosters import build_store_roster
from cloud_bridge.storage.customers import (
    all_devices,
    consent_rows,
    customer_rows,
    suppression_rows,
)
from cloud_bridge.storage.sends import sandbox_rows, send_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from cloud_bridge.web.app import create_app
from edge_agent.roster import load_roster, parse_mac

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
ANNA_MAC = "da:a1:19:3c:4e:01"
ANNA_PHONE = "+79161234501"


@pytest.fixture()
def bridge(tmp_path: Path, db_location):
    store = BridgeStore(bridge_location(db_location, tmp_path / "bridge"))
    keys = BridgeKeys(tmp_path / "bridge")
    seed(store, keys, load_tenant(TENANT), time.time())
    # Anna got an offer: her name is in the send body and in the sandbox
    anna = store.customer_row("C-1001")
    store.sandbox_record("SB1", ANNA_PHONE, "MainStCafe", "Anna, 15% off espresso beans", 1.0)
    store.db.execute(
        "INSERT INTO decisions(id, event_id, customer_id, campaign_id, outcome, reason, detail, ts)"
        " VALUES (1, 'e1', ?, 'fav-15', 'send', 'sent', '', 1)",
        [anna["id"]],
    )
    store.db.execute(
        "INSERT INTO sends(decision_id, customer_id, campaign_id, store_id, ts, state, provider, "
        "sender, body) VALUES (1, ?, 'fav-15', 'main-st', 1, 'accepted', 'sandbox', 'MainStCafe', "
        "'Anna, 15% off espresso beans')",
        [anna["id"]],
    )
    yield store, keys, tmp_path
    store.close()


def roster_subjects(store: BridgeStore, keys: BridgeKeys) -> dict[str, str | None]:
    data, _ = build_store_roster(store, keys, "main-st", time.time())
    site = bytes.fromhex(store.site_key("main-st"))
    roster = load_roster(data, keys.signing_key.public_key(), site, "main-st")
    return {mac: roster.lookup(parse_mac(mac)) for mac in (ANNA_MAC, "6e:12:7a:90:b3:22")}


def assert_anna_gone(store: BridgeStore, db_file: Path) -> None:
    assert store.customer_row("C-1001") is None
    assert not store.customers_by_phone(ANNA_PHONE)
    row = [c for c in customer_rows(store) if c["erased"] is not None][0]
    assert row["name"] == "" and row["phone"] == "" and row["favourite_product"] is None
    assert row["crm_id"].startswith("erased:") and row["subject"].startswith("erased:")
    assert not [d for d in all_devices(store) if d["customer_id"] == row["id"]]
    assert not [k for k in consent_rows(store) if k["customer_id"] == row["id"]]
    assert send_rows(store)[0]["body"] == "[erased]"
    assert [
        {"to_phone": m["to_phone"], "body": m["body"]}
        for m in sandbox_rows(store)
        if m["sid"] == "SB1"
    ][0] == {  # fmt: skip
        "to_phone": "",
        "body": "[erased]",
    }
    assert suppressed(store, ANNA_PHONE, None) and suppressed(store, None, "C-1001")
    # only keyed hashes are kept in the suppression list
    for r in suppression_rows(store):
        assert re.fullmatch(r"[0-9a-f]{64}", r["hmac"])
    if store.postgres:
        # On disk, PostgreSQL keeps old row versions until VACUUM reclaims them (the SQLite
        # store zeroes deleted content and truncates its WAL): the file check is SQLite's.
        return
    # and nothing of hers is left on disk (WAL checkpointed, deleted content zeroed)
    blob = b"".join(p.read_bytes() for p in db_file.parent.glob("bridge.db*"))
    for needle in (b"Anna", ANNA_PHONE.encode(), b"espresso", b"C-1001"):
        assert needle not in blob, needle


def test_erase_removes_pii_and_roster_entry(bridge) -> None:
    store, keys, tmp = bridge
    before = roster_subjects(store, keys)
    assert before[ANNA_MAC] is not None
    assert erase_customer(store, "C-1001", time.time())
    after = roster_subjects(store, keys)
    assert after[ANNA_MAC] is None  # the next roster excludes her
    assert after["6e:12:7a:90:b3:22"] == before["6e:12:7a:90:b3:22"]  # Boris untouched
    assert_anna_gone(store, tmp / "bridge" / "bridge.db")
    assert not erase_customer(store, "C-1001", time.time())  # already gone


def test_reimport_is_reported_as_suppressed(bridge) -> None:
    store, keys, tmp = bridge
    erase_customer(store, "C-1001", time.time())
    path = tmp / "crm.csv"
    path.write_text(
        "crm_id,name,phone,consent_sms,consent_recognition,consent_text_version,consent_time,"
        "consent_source,macs\n"
        f"C-1001,Anna,{ANNA_PHONE},yes,yes,paper,2026-01-01T00:00:00Z,paper,{ANNA_MAC}\n"
        f"C-7777,Anna again,{ANNA_PHONE},yes,yes,paper,2026-01-01T00:00:00Z,paper,\n"
    )
    report = import_customers(store, keys.subject_key, path, time.time())
    assert report.suppressed == 2 and report.applied == 0
    assert all(p.problem.startswith("suppressed") for p in report.problems)
    # a tenant file cannot bring her back either
    seed(store, keys, load_tenant(TENANT), time.time())
    assert store.customer_row("C-1001") is None
    assert roster_subjects(store, keys)[ANNA_MAC] is None


def test_new_double_opt_in_lifts_the_suppression(bridge) -> None:
    store, keys, _ = bridge
    erase_customer(store, "C-1001", time.time())
    enrolments = Enrolments(store, EnrolSettings(), SandboxProvider(store), keys.subject_key)
    started = enrolments.start(
        store_id="main-st",
        phone=ANNA_PHONE,
        name="Anna",
        language="ru",
        consent_sms=True,
        consent_recognition=True,
        source="portal",
        now=time.time(),
        mac=parse_mac(ANNA_MAC),
    )
    body = sandbox_rows(store)[-1]["body"]
    done = enrolments.confirm(started.enrolment_id, re.search(r"\d{6}", body).group(0), time.time())
    assert done.consents == {"sms": "active", "recognition": "active"}
    assert not suppressed(store, ANNA_PHONE, None)
    assert roster_subjects(store, keys)[ANNA_MAC] is not None  # recognised again, new subject


def test_api_erasure_needs_the_token(bridge) -> None:
    store, keys, tmp = bridge
    settings = BridgeSettings(
        data_dir=tmp / "bridge", enrol=EnrolSettings(api_token="s3cret-erasure-token-0123")
    )
    with TestClient(create_app(store, settings)) as client:
        assert client.delete("/api/v1/customers/C-1001").status_code == 401
        bad = {"authorization": "Bearer nope"}
        assert client.delete("/api/v1/customers/C-1001", headers=bad).status_code == 401
        ok = {"authorization": "Bearer s3cret-erasure-token-0123"}
        r = client.delete("/api/v1/customers/C-1001", headers=ok)
        assert r.status_code == 200 and r.json() == {"erased": True}
        assert client.delete("/api/v1/customers/C-1001", headers=ok).status_code == 404
    assert_anna_gone(store, tmp / "bridge" / "bridge.db")


def test_cli_erase(bridge) -> None:
    store, keys, tmp = bridge
    store.close()
    cfg = tmp / "bridge.toml"
    cfg.write_text(f'data_dir = "{tmp / "bridge"}"\n' + database_setting(store.location))
    cli = [sys.executable, "-m", "cloud_bridge.cli.main", "customers", "erase"]
    out = subprocess.run(
        [*cli, "C-1001", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "Anna" not in out.stdout and ANNA_PHONE not in out.stdout
    out = subprocess.run(
        [*cli, "C-nope", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "no customer" in out.stderr
    again = BridgeStore(store.location)
    try:
        assert_anna_gone(again, tmp / "bridge" / "bridge.db")
    finally:
        again.close()
