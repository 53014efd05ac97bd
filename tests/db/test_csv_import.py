"""CSV imports (customers and purchases) at their boundary: a header naming a column twice is
refused, an encoding error is placed by line and field, ``--dry-run`` reports exactly what the
real run then does, and a phone that belongs to another customer is reported on its row."""

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
from cloud_bridge.customers.erasure import erase_customer
from cloud_bridge.reports.figures import import_purchases
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.customers import all_devices, consent_rows, customer_rows, purchase_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
ANNA_PHONE = "+79161234501"  # the demo tenant's C-1001
BORIS_PHONE = "+79161234502"  # C-1002


@pytest.fixture()
def bridge(tmp_path: Path, db_location):
    store = BridgeStore(bridge_location(db_location, tmp_path / "bridge"))
    keys = BridgeKeys(tmp_path / "bridge")
    seed(store, keys, load_tenant(TENANT), time.time())
    yield store, keys, tmp_path
    store.close()


def run(store, keys, path: Path, **kw):
    return import_customers(store, keys.subject_key, path, time.time(), **kw)


def snapshot(store: BridgeStore) -> dict[str, list]:
    return {
        "customers": customer_rows(store),
        "consents": consent_rows(store),
        "purchases": purchase_rows(store),
        "devices": [
            {k: r[k] for k in ("id", "customer_id", "mac_hmac")} for r in all_devices(store)
        ],
    }


# -- header ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("crm_id,name,phone,phone", "column phone appears twice (columns 3 and 4)"),
        ("crm_id,Phone,name, phone ", "column phone appears twice (columns 2 and 4)"),
        ("crm_id;name;phone;macs;MACS;macs", "column macs appears 3 times (columns 4, 5 and 6)"),
    ],
)
def test_duplicate_header_column_is_refused(bridge, header: str, words: str) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    sep = ";" if ";" in header else ","
    values = sep.join(
        ["X-1", "Lev", "+79167000011", "+79167000012", "", ""][: header.count(sep) + 1]
    )
    path.write_text(f"{header}\n{values}\n", encoding="utf-8")
    before = snapshot(store)
    with pytest.raises(ImportFileError) as err:
        run(store, keys, path)
    assert words in str(err.value) and str(path) in str(err.value)
    assert "keep one" in str(err.value)
    assert snapshot(store) == before


def test_duplicate_unknown_columns_are_only_ignored(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text("crm_id,name,phone,note,note,\nX-1,Lev,+79167000011,a,b,\n", encoding="utf-8")
    report = run(store, keys, path)
    assert report.applied == 1
    assert {p.severity for p in report.problems} == {"warning"}


def test_purchases_duplicate_header_column_is_refused(bridge) -> None:
    store, _, tmp = bridge
    path = tmp / "p.csv"
    path.write_text("crm_id,time,amount,amount\nC-1001,2026-01-01T10:00:00Z,5,500\n")
    with pytest.raises(ValueError, match=r"column amount appears twice \(columns 3 and 4\)"):
        import_purchases(store, path, time.time())
    assert len(purchase_rows(store)) == 0


# -- encoding ----------------------------------------------------------------------------------


def test_encoding_error_names_line_and_field(bridge) -> None:
    """A file saved as windows-1251 (Excel's default for Russian): refused naming the line and
    the column of the first bad byte, never echoing the line (it holds names and phones)."""
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    text = "crm_id,name,phone\nX-1,Lev,+79167000011\nX-2,Ольга,+79167000012\n"
    path.write_bytes(text.encode("cp1251"))
    with pytest.raises(ImportFileError) as err:
        run(store, keys, path)
    message = str(err.value)
    assert "line 3, column 2 (name), character 5" in message, message
    assert "not UTF-8" in message and "CSV UTF-8" in message
    assert "byte" not in message.split("not UTF-8")[0]  # the place is the line, not an offset
    assert "+79167000012" not in message and "X-2" not in message


def test_encoding_error_in_the_header_and_in_a_quoted_multiline_field(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_bytes("crm_id;name;phone;Заметка\n".encode("cp1251"))
    with pytest.raises(ImportFileError, match=r"line 1, column 4 of the header, character 19"):
        run(store, keys, path)
    body = b'crm_id,name,phone,macs\nX-1,"Lev\nthe second",+79167000011,\n'
    path.write_bytes(b"\xef\xbb\xbf" + body.replace(b"second", b"s\xe9cond"))  # BOM, latin-1 é
    with pytest.raises(ImportFileError, match=r"line 3, column 2 \(name\), character 6"):
        run(store, keys, path)


def test_purchases_encoding_error_names_line_and_field(bridge) -> None:
    store, _, tmp = bridge
    path = tmp / "p.csv"
    path.write_bytes("crm_id;time;amount;currency\nC-1001;2026-01-01;5;руб\n".encode("cp1251"))
    with pytest.raises(ValueError, match=r"line 2, column 4 \(currency\), character 21"):
        import_purchases(store, path, time.time())


def test_cli_reports_the_encoding_error_with_exit_status_2(bridge) -> None:
    store, _, tmp = bridge
    store.close()
    cfg = tmp / "bridge.toml"
    cfg.write_text(f'data_dir = "{tmp / "bridge"}"\n' + database_setting(store.location))
    path = tmp / "crm.csv"
    path.write_bytes("crm_id,name,phone\nX-2,Ольга,+79167000012\n".encode("cp1251"))
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"} | {
        k: v for k, v in os.environ.items() if k == "PASSBY_DATA_KEY"
    }
    cli = [sys.executable, "-m", "cloud_bridge.cli.main"]
    out = subprocess.run(
        [*cli, "customers", "import", str(path), "-c", str(cfg)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.returncode == 2 and "line 2, column 2 (name)" in out.stderr, out.stderr
    out = subprocess.run(
        [*cli, "purchases", "import", str(path), "-c", str(cfg)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.returncode == 2 and "line 2, column 2 (name)" in out.stderr, out.stderr


# -- dry run -----------------------------------------------------------------------------------

MIXED = (
    "crm_id,name,phone,favourite_product,visits,consent_sms,consent_text_version,consent_time,"
    "consent_source,macs\n"
    # unchanged: the demo's Anna as she is
    f"C-1001,Anna,{ANNA_PHONE},espresso beans,,,,,,\n"
    # updated: Boris gets a loyalty count, a new MAC and evidence of consent (already active)
    f"C-1002,Boris,{BORIS_PHONE},almond croissants,7,yes,paper-v1,2025-01-01T00:00:00Z,paper,"
    "02:aa:bb:cc:dd:21\n"
    # new, with a device and a consent
    "N-1,Lev,+79167000031,,2,yes,paper-v1,2025-01-01T00:00:00Z,paper,02:aa:bb:cc:dd:22\n"
    "N-2,Mila,+79167000032,,,,,,,\n"
    # erased on request: suppressed
    "C-1004,Dmitri,+79161234504,,,,,,,\n"
    # bad
    "N-3,Bad,12,,,,,,,\n"
)


def test_dry_run_counts_what_the_real_run_does(bridge) -> None:
    store, keys, tmp = bridge
    erase_customer(store, "C-1004", time.time())
    path = tmp / "crm.csv"
    path.write_text(MIXED, encoding="utf-8")
    before = snapshot(store)
    dry = run(store, keys, path, dry_run=True)
    assert snapshot(store) == before  # nothing written
    real = run(store, keys, path)
    counts = ("rows", "applied", "created", "updated", "unchanged", "devices_added",
              "consents_recorded", "skipped", "suppressed")  # fmt: skip
    assert {k: getattr(dry, k) for k in counts} == {k: getattr(real, k) for k in counts}
    assert (real.created, real.updated, real.unchanged, real.suppressed) == (2, 1, 1, 1)
    assert (real.devices_added, real.consents_recorded, real.skipped) == (2, 1, 2)
    assert dry.problems == real.problems and dry.dry_run and not real.dry_run
    # and again: the second dry run foresees a second real run that changes nothing
    dry2 = run(store, keys, path, dry_run=True)
    assert (dry2.created, dry2.updated, dry2.unchanged, dry2.devices_added) == (0, 0, 4, 0)


def test_cli_dry_run_line_matches_the_real_run(bridge) -> None:
    store, keys, tmp = bridge
    erase_customer(store, "C-1004", time.time())
    store.close()
    cfg = tmp / "bridge.toml"
    cfg.write_text(f'data_dir = "{tmp / "bridge"}"\n' + database_setting(store.location))
    path = tmp / "crm.csv"
    path.write_text(MIXED, encoding="utf-8")
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"} | {
        k: v for k, v in os.environ.items() if k == "PASSBY_DATA_KEY"
    }
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

    def last_line(*extra: str) -> str:
        out = subprocess.run([*cli, *extra], capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 1, out.stderr  # the bad row
        return out.stdout.strip().splitlines()[-1]

    dry = last_line("--dry-run")
    real = last_line()
    assert dry == real.replace("applied", "would apply")
    assert "would apply 4 (2 new, 1 updated, 1 unchanged), skipped 2 (1 suppressed)" in dry


def test_purchases_dry_run_counts_what_the_real_run_does(bridge) -> None:
    store, _, tmp = bridge
    path = tmp / "p.csv"
    path.write_text(
        "crm_id,time,amount,order_id\n"
        "C-1001,2026-01-01T10:00:00Z,5,o-1\n"
        "C-1001,2026-01-02T10:00:00Z,6,o-2\n"
        "C-1002,2026-01-02T10:00:00Z,7,o-2\n"  # the same order id: already known by then
        "C-9999,2026-01-02T10:00:00Z,7,o-3\n",
        encoding="utf-8",
    )
    before = snapshot(store)
    dry = import_purchases(store, path, time.time(), dry_run=True)
    assert snapshot(store) == before
    real = import_purchases(store, path, time.time())
    assert (dry.rows, dry.added, dry.known, dry.problems) == (
        real.rows, real.added, real.known, real.problems,
    )  # fmt: skip
    assert (real.added, real.known) == (2, 1)
    again = import_purchases(store, path, time.time(), dry_run=True)
    assert (again.added, again.known) == (0, 3)


# -- a phone that belongs to another customer --------------------------------------------------


def test_phone_of_another_customer_is_refused_on_its_row(bridge) -> None:
    """One phone, one customer: consent is proven by a code sent to the phone, STOP from a
    phone revokes every customer with it and START would restore them all. A new CRM id with
    Anna's phone is refused on its row, naming Anna's CRM id, never the phone."""
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(
        "crm_id,name,phone\n"
        f"Z-1,Eve,{ANNA_PHONE}\n"
        "Z-2,Lev,+79167000041\n"
        f"C-1002,Boris,{ANNA_PHONE}\n",  # Boris moved onto Anna's phone
        encoding="utf-8",
    )
    dry = run(store, keys, path, dry_run=True)
    report = run(store, keys, path)
    errors = [(p.row, p.field, p.crm_id) for p in report.problems if p.severity == "error"]
    assert errors == [(2, "phone", "Z-1"), (4, "phone", "C-1002")]
    for p in report.problems:
        assert "customer C-1001" in p.problem and ANNA_PHONE not in p.problem
        assert "STOP" in p.problem
    assert (report.applied, report.created, report.skipped) == (1, 1, 2)
    assert dry.problems == report.problems and dry.applied == report.applied
    assert [c["crm_id"] for c in store.customers_by_phone(ANNA_PHONE)] == ["C-1001"]
    assert store.customer_row("C-1002")["phone"] == BORIS_PHONE
    assert store.customer_row("Z-1") is None


def test_two_rows_of_one_file_with_one_phone_are_both_refused(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(
        "crm_id,name,phone\nZ-1,Eve,+79167000051\nZ-2,Lev,+79167000052\nZ-3,Ada,+79167000051\n",
        encoding="utf-8",
    )
    report = run(store, keys, path)
    errors = {p.row: p.problem for p in report.problems if p.severity == "error"}
    assert set(errors) == {2, 4}
    assert "customer Z-3 (row 4 of this file)" in errors[2]
    assert "customer Z-1 (row 2 of this file)" in errors[4]
    assert report.applied == 1 and store.customers_by_phone("+79167000051") == []


def test_phones_swapped_within_one_file_are_fine(bridge) -> None:
    """Anna and Boris swap numbers in the CRM: after the import each phone still has one
    customer, whatever the order of the rows."""
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(
        f"crm_id,name,phone\nC-1001,Anna,{BORIS_PHONE}\nC-1002,Boris,{ANNA_PHONE}\n",
        encoding="utf-8",
    )
    report = run(store, keys, path)
    assert not report.problems and report.updated == 2
    assert [c["crm_id"] for c in store.customers_by_phone(ANNA_PHONE)] == ["C-1002"]
    assert [c["crm_id"] for c in store.customers_by_phone(BORIS_PHONE)] == ["C-1001"]


def test_a_refused_move_keeps_the_old_phone_taken(bridge) -> None:
    """Anna's row would free her phone, but it is refused (a MAC of Boris): she keeps her
    phone, so the row that takes it is refused too."""
    store, keys, tmp = bridge
    path = tmp / "crm.csv"
    path.write_text(
        "crm_id,name,phone,macs\n"
        f"Z-1,Eve,{ANNA_PHONE},\n"
        "C-1001,Anna,+79167000061,6e:12:7a:90:b3:22\n",
        encoding="utf-8",
    )
    report = run(store, keys, path)
    errors = sorted((p.row, p.field) for p in report.problems if p.severity == "error")
    assert errors == [(2, "phone"), (3, "macs")]
    assert report.applied == 0


def test_a_phone_shared_before_the_import_is_a_warning_not_a_block(bridge) -> None:
    """Two customers that already shared a phone (an older import) can still be updated; the
    row says so as a warning, so the admin can merge them."""
    store, keys, tmp = bridge
    store.upsert_customer("C-9", "00aa00aa00aa00aa", "Twin", ANNA_PHONE, None, time.time())
    path = tmp / "crm.csv"
    path.write_text(f"crm_id,name,phone\nC-1001,Anna P.,{ANNA_PHONE}\n", encoding="utf-8")
    report = run(store, keys, path)
    assert report.applied == 1 and report.updated == 1
    [warning] = report.problems
    assert (warning.row, warning.field, warning.severity) == (2, "phone", "warning")
    assert "customer C-9" in warning.problem and "already" in warning.problem


def test_portal_customer_with_the_phone_is_adopted_not_a_conflict(bridge) -> None:
    store, keys, tmp = bridge
    cid = store.upsert_customer("web-abc", "00ff00ff00ff00ff", "Olga", "+79167000071", None, 1.0)
    path = tmp / "crm.csv"
    path.write_text("crm_id,name,phone\nC-2001,Olga,+79167000071\n", encoding="utf-8")
    report = run(store, keys, path)
    assert not report.problems and report.applied == 1 and report.created == 0
    assert store.customer_row("C-2001")["id"] == cid


# -- the same boundary in JSON: a key given twice in one object ---------------------------------


def test_json_customer_with_a_field_given_twice_is_refused_on_its_item(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.json"
    path.write_text(
        '[{"crm_id": "J-1", "name": "Lev", "phone": "+79167000081", "phone": "+79167000082"},'
        ' {"crm_id": "J-2", "name": "Mila", "phone": "+79167000083", "note": 1, "note": 2}]',
        encoding="utf-8",
    )
    report = run(store, keys, path)
    errors = [(p.row, p.field, p.severity) for p in report.problems if p.severity == "error"]
    assert errors == [(1, "phone", "error")]
    assert "given twice" in report.problems[0].problem
    assert store.customer_row("J-1") is None and store.customer_row("J-2") is not None


def test_json_purchase_with_a_field_given_twice_is_refused(bridge) -> None:
    store, _, tmp = bridge
    path = tmp / "p.json"
    path.write_text(
        '[{"crm_id": "C-1001", "time": "2026-01-01T10:00:00Z", "amount": 5, "amount": 500}]'
    )
    rep = import_purchases(store, path, time.time())
    assert rep.problems == [
        (1, "amount", "given twice in this object: which one counts is a guess")
    ]
    assert rep.added == 0


def test_json_encoding_error_names_line_and_character(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "crm.json"
    path.write_bytes('[\n {"crm_id": "J-1",\n  "name": "Ольга"}]'.encode("cp1251"))
    with pytest.raises(ImportFileError, match=r"line 3, character 12: not UTF-8"):
        run(store, keys, path)


# -- columns left out ----------------------------------------------------------------------------


def test_a_column_left_out_keeps_what_the_customer_had(bridge) -> None:
    """A file without the segment columns updates names and phones and keeps each customer's
    favourite product, visits, tier and first purchase; an empty cell in a column that is there
    clears that field."""
    store, keys, tmp = bridge
    full = tmp / "full.csv"
    full.write_text(
        "crm_id,name,phone,favourite_product,visits,loyalty_tier,first_purchase\n"
        f"C-1001,Anna,{ANNA_PHONE},beans,7,gold,2024-01-02\n"
    )
    assert not run(store, keys, full).problems
    before = store.customer_row("C-1001")
    assert (before["favourite_product"], before["visits"], before["loyalty_tier"]) == (
        "beans",
        7,
        "gold",
    )
    thin = tmp / "thin.csv"
    thin.write_text(f"crm_id,name,phone\nC-1001,Anna K.,{ANNA_PHONE}\n")
    report = run(store, keys, thin)
    after = store.customer_row("C-1001")
    assert after["name"] == "Anna K." and report.updated == 1
    for field in ("favourite_product", "visits", "loyalty_tier", "first_purchase"):
        assert after[field] == before[field], field
    # Re-importing the thin file is "unchanged", not "updated": absent columns do not differ.
    assert run(store, keys, thin).unchanged == 1
    # A column that is there but empty says "no value": it clears.
    cleared = tmp / "cleared.csv"
    cleared.write_text(f"crm_id,name,phone,favourite_product\nC-1001,Anna K.,{ANNA_PHONE},\n")
    run(store, keys, cleared)
    assert store.customer_row("C-1001")["favourite_product"] is None
    assert store.customer_row("C-1001")["visits"] == 7


def test_a_json_key_left_out_keeps_what_the_customer_had(bridge) -> None:
    store, keys, tmp = bridge
    path = tmp / "c.json"
    first = {"crm_id": "C-1001", "name": "Anna", "phone": ANNA_PHONE, "favourite_product": "tea"}
    path.write_text(json.dumps([first | {"visits": 3}]))
    run(store, keys, path)
    path.write_text(json.dumps([{"crm_id": "C-1001", "name": "Anna B", "phone": ANNA_PHONE}]))
    run(store, keys, path)
    row = store.customer_row("C-1001")
    assert (row["name"], row["favourite_product"], row["visits"]) == ("Anna B", "tea", 3)
