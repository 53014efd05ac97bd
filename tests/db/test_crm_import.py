"""CRM import: row-by-row report, good rows in one transaction, idempotent re-import, evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_helpers import bridge_location, database_setting

from cloud_bridge.customers.crm_import import ImportFileError, import_customers
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.customers import all_devices, consent_rows, customer_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
HEADER = (
    "crm_id,name,phone,first_purchase,visits,loyalty_tier,favourite_product,consent_sms,"
    "consent_recognition,consent_text_version,consent_time,consent_source,macs\n"
)
GOOD_1 = (
    "C-2001,Ольга Петрова,8 (916) 700-00-01,2025-01-10,12,gold,flat white,yes,yes,"
    "paper-v3,2025-01-10T12:00:00Z,paper form 881,02:aa:bb:cc:dd:01;02:aa:bb:cc:dd:02\n"
)
GOOD_2 = "C-2002,Hayk,+37477123456,,3,silver,lavash,true,false,app-v2,2025-02-01 09:30:00+04:00,loyalty app,02-aa-bb-cc-dd-03 02aabbccdd04\n"
BAD = "C-2003,Bad,12345,2025-13-01,-1,,,maybe,,,,,zz\n"
NO_EVIDENCE = "C-2004,Ann,+79167000004,,,,,yes,,,,,\n"
DUPLICATE = "C-2001,Dup,+79167000005,,,,,,,,,,\n"
CSV = HEADER + GOOD_1 + GOOD_2 + BAD + NO_EVIDENCE + DUPLICATE


@pytest.fixture()
def bridge(tmp_path: Path, db_location):
    store = BridgeStore(bridge_location(db_location, tmp_path / "bridge"))
    keys = BridgeKeys(tmp_path / "bridge")
    seed(store, keys, load_tenant(TENANT), time.time())
    yield store, keys, tmp_path
    store.close()


def snapshot(store: BridgeStore) -> dict[str, list]:
    """Everything an import may touch (encrypted MACs compare by their lookup hash)."""
    return {
        "customers": customer_rows(store),
        "devices": [
            {
                k: r[k]
                for k in (
                    "id",
                    "customer_id",
                    "mac_hmac",
                    "first_seen",
                    "last_seen",
                    "expires",
                    "source",
                    "store_id",
                )
            }
            for r in all_devices(store)
        ],  # fmt: skip
        "consents": consent_rows(store),
    }


def run(store, keys, path: Path, **kw):
    return import_customers(store, keys.subject_key, path, time.time(), **kw)


def test_report_names_row_field_and_problem(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(CSV, encoding="utf-8")
    report = run(store, keys, path)
    errors = {(p.row, p.field) for p in report.problems if p.severity == "error"}
    # CSV rows are numbered by file line (the header is line 1)
    assert {
        (4, "phone"),
        (4, "first_purchase"),
        (4, "visits"),
        (4, "consent_sms"),
        (4, "macs"),
        (5, "consent_text_version"),
        (5, "consent_time"),
        (5, "consent_source"),
        (6, "crm_id"),
    } == errors
    dup = next(p for p in report.problems if p.row == 6)
    assert "duplicate of row 2" in dup.problem and dup.crm_id == "C-2001"
    assert (report.rows, report.applied, report.created, report.skipped) == (5, 2, 2, 3)
    assert report.devices_added == 4 and report.consents_recorded == 3
    as_json = report.to_json()
    assert json.loads(json.dumps(as_json))["problems"][0].keys() >= {"row", "field", "problem"}

    olga = store.customer_row("C-2001")
    assert olga["phone"] == "+79167000001"  # normalised with the store's country (RU)
    assert (olga["visits"], olga["loyalty_tier"], olga["first_purchase"]) == (
        12,
        "gold",
        "2025-01-10",
    )
    assert olga["favourite_product"] == "flat white"
    assert {d["mac"] for d in store.devices_of(olga["id"])} == {
        "02:aa:bb:cc:dd:01",
        "02:aa:bb:cc:dd:02",
    }
    assert store.latest_consents(olga["id"]) == {"sms": "active", "recognition": "active"}
    (sms, _) = store.consents_of(olga["id"])
    assert sms["proof"]["source"] == "paper form 881"
    assert sms["proof"]["consented_at"] == "2025-01-10T12:00:00Z"
    assert sms["text_version"] == "paper-v3" and sms["proof"]["import_row"] == 2
    hayk = store.customer_row("C-2002")
    assert hayk["phone"] == "+37477123456"
    assert {d["mac"] for d in store.devices_of(hayk["id"])} == {
        "02:aa:bb:cc:dd:03",
        "02:aa:bb:cc:dd:04",
    }
    assert store.latest_consents(hayk["id"]) == {"sms": "active"}  # false: nothing to revoke
    assert store.customer_row("C-2003") is None and store.customer_row("C-2004") is None


def test_reimport_changes_nothing(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(CSV, encoding="utf-8")
    run(store, keys, path)
    before = snapshot(store)
    again = run(store, keys, path)
    assert snapshot(store) == before
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    assert again.devices_added == 0 and again.consents_recorded == 0


def test_good_rows_apply_in_one_transaction(bridge, monkeypatch) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(HEADER + GOOD_1 + GOOD_2, encoding="utf-8")
    before = snapshot(store)
    real = store.add_device
    calls = []

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # the first row is fully written by now
            raise RuntimeError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(store, "add_device", failing)
    with pytest.raises(RuntimeError):
        run(store, keys, path)
    assert snapshot(store) == before  # the first row was rolled back with the second
    monkeypatch.setattr(store, "add_device", real)
    assert run(store, keys, path).applied == 2


def test_json_format_and_macs_list(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.json"
    path.write_text(
        json.dumps(
            {
                "customers": [
                    {
                        "crm_id": "J-1",
                        "name": "Lusine",
                        "phone": "077 123 457",
                        "visits": 2,
                        "consent_recognition": True,
                        "consent_text_version": "kiosk-v1",
                        "consent_time": "2025-05-01T10:00:00",
                        "consent_source": "kiosk",
                        "macs": ["06:10:20:30:40:50"],
                        "shoe_size": 38,
                    },
                    {"crm_id": "J-2", "name": "No phone"},
                    "garbage",
                ]
            }
        ),
        encoding="utf-8",
    )
    report = run(store, keys, path, store_id=None)
    problems = {(p.row, p.field, p.severity) for p in report.problems}
    assert (1, "shoe_size", "warning") in problems
    assert (1, "phone", "error") in problems  # a national number, and no single store to read it
    assert (2, "phone", "error") in problems and (3, "-", "error") in problems


def test_reimport_of_consent_after_opt_out_does_not_resurrect(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(HEADER + GOOD_1, encoding="utf-8")
    run(store, keys, path)
    olga = store.customer_row("C-2001")
    store.record_consent(olga["id"], "sms", "revoked", time.time(), None, {"source": "STOP"})
    report = run(store, keys, path)
    assert store.latest_consents(olga["id"])["sms"] == "revoked"
    assert any("predates a later record" in p.problem for p in report.problems)


def test_false_revokes_an_older_active_consent(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(HEADER + GOOD_1, encoding="utf-8")
    run(store, keys, path)
    path.write_text(
        HEADER
        + GOOD_1.replace("yes,yes,paper-v3,2025-01-10T12:00:00Z", "no,,,2025-06-01T00:00:00Z"),
        encoding="utf-8",
    )
    report = run(store, keys, path)
    olga = store.customer_row("C-2001")
    assert store.latest_consents(olga["id"]) == {"sms": "revoked", "recognition": "active"}
    assert report.consents_recorded == 1


def test_mac_of_another_customer_is_refused(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(HEADER + "C-3000,Eve,+79167000009,,,,,,,,,,da:a1:19:3c:4e:01\n")  # Anna's
    report = run(store, keys, path)
    assert [(p.row, p.field) for p in report.problems] == [(2, "macs")]
    assert "another customer" in report.problems[0].problem


def test_portal_customer_adopts_crm_id(bridge) -> None:
    store, keys, tmp = bridge
    cid = store.upsert_customer("web-abc", "00ff00ff00ff00ff", "Olga", "+79167000001", None, 1.0)
    path = tmp / "crm.csv"
    path.write_text(HEADER + GOOD_1, encoding="utf-8")
    report = run(store, keys, path)
    assert report.created == 0 and report.updated == 1
    row = store.customer_row("C-2001")
    assert row["id"] == cid and row["subject"] == "00ff00ff00ff00ff"


def test_semicolon_csv_with_bom(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "excel.csv"
    path.write_bytes(
        '\ufeffcrm_id;name;phone;macs\nX-1;Лев;+79167000011;"02:aa:bb:cc:dd:11;02:aa:bb:cc:dd:12"\n'.encode()
    )
    report = run(store, keys, path)
    assert report.applied == 1 and not report.problems
    assert len(store.devices_of(store.customer_row("X-1")["id"])) == 2


def test_unreadable_file_is_a_file_error(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "bad.csv"
    path.write_text("name,phone\nA,+79160000000\n")
    with pytest.raises(ImportFileError, match="crm_id"):
        run(store, keys, path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ImportFileError, match="UTF-8"):
        run(store, keys, path)


def test_cli_table_json_and_exit_status(bridge) -> None:
    store, keys, tmp = bridge
    store.close()
    cfg = tmp / "bridge.toml"
    cfg.write_text(f'data_dir = "{tmp / "bridge"}"\n' + database_setting(store.location))
    path = tmp / "crm.csv"
    path.write_text(CSV, encoding="utf-8")
    cli = [
        sys.executable,
        "-m",
        "cloud_bridge.cli.main",
        "customers",
        "import",
        str(path),
        "-c",
        str(cfg),
    ]
    out = subprocess.run(
        cli,
        capture_output=True,
        text=True,
        timeout=60,
        # a PostgreSQL store's data key comes from the environment
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
        | {k: v for k, v in os.environ.items() if k == "PASSBY_DATA_KEY"},
    )
    assert out.returncode == 1, out.stderr
    assert "row" in out.stdout and "duplicate of row 2" in out.stdout
    assert "applied 2 (2 new" in out.stdout
    out = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60)
    report = json.loads(out.stdout)
    assert report["unchanged"] == 2 and report["created"] == 0
    assert {"row": 6, "field": "crm_id"}.items() <= next(
        p for p in report["problems"] if p["row"] == 6
    ).items()
    path.write_text(HEADER + GOOD_1, encoding="utf-8")
    assert subprocess.run(cli, capture_output=True, timeout=60).returncode == 0
