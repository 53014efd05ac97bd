"""Customers and consent in the console: CRM import with the row report, search by CRM id or
phone, consent history with proof, erasure (admin, audited); owners never see customers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import World, csrf_of, make_world

from cloud_bridge.storage.accounts import audit_entries

CSV = (
    "crm_id,name,phone,favourite_product,consent_sms,consent_recognition,consent_text_version,"
    "consent_time,consent_source\n"
    "C-2001,Vera,+7 916 555-00-01,tea,true,true,v1,2026-01-10T10:00:00Z,crm-form\n"
    "C-2002,Gleb,not-a-phone,coffee,,,,,\n"
)


@pytest.fixture()
def world(tmp_path: Path, db_location) -> Iterator[World]:
    w = make_world(tmp_path, db_location)
    yield w
    w.store.close()


def test_import_search_consent_proof_and_erasure(world: World) -> None:
    mia = world.client("mia")
    r = mia.post(
        "/customers/import",
        data={"csrf": csrf_of(mia, "/customers"), "store_id": "main-st"},
        files={"file": ("crm.csv", CSV.encode(), "text/csv")},
    )
    assert r.status_code == 200
    assert 'id="import-applied"><b class="ok">1</b>' in r.text
    assert "phone" in r.text and ">3</td>" in r.text  # line 3 of the file, field phone
    audit = [{k: r[k] for k in ("action", "target")} for r in audit_entries(world.store, 1)]
    assert audit == [{"action": "customers.import", "target": "crm.csv"}]
    # search by any spelling of the phone, or by CRM id prefix
    for q in ("+79165550001", "8 916 555 00 01", "C-200"):
        hits = mia.get("/api/v1/customers", params={"q": q}).json()
        assert [h["crm_id"] for h in hits] == ["C-2001"], q
        assert hits[0]["phone"] == "+7916*****01"
    page = mia.get("/customers?q=C-2001").text
    assert "/customers/C-2001" in page
    detail = mia.get("/api/v1/customers/C-2001").json()
    assert detail["consents_now"] == {"sms": "active", "recognition": "active"}
    assert detail["consent_history"][0]["proof"]
    assert "crm-form" in mia.get("/customers/C-2001").text
    # erasure is for admins, confirmed by typing the id
    assert mia.post("/api/v1/customers/C-2001/erase").status_code == 403
    ada = world.client("ada")
    token = csrf_of(ada, "/customers/C-2001")
    r = ada.post("/customers/C-2001/erase", data={"csrf": token, "confirm": "nope"})
    assert r.status_code == 400
    r = ada.post(
        "/customers/C-2001/erase", data={"csrf": token, "confirm": "C-2001"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert mia.get("/api/v1/customers/C-2001").status_code == 404
    assert [
        {"action": r["action"]} for r in audit_entries(world.store) if r["target"] == "C-2001"
    ] == [{"action": "customer.erase"}]


def test_api_import_with_a_token_and_dry_run(world: World) -> None:
    auth = {"Authorization": f"Bearer {world.token('mia', 'CRM nightly')}"}
    api = world.client()
    r = api.post("/api/v1/customers/import?dry_run=true", content=CSV.encode(), headers=auth)
    assert r.status_code == 200
    report = r.json()
    assert report["dry_run"] and report["applied"] == 1 and report["skipped"] == 1
    assert [(p["row"], p["field"]) for p in report["problems"]] == [(3, "phone")]
    assert not world.store.customer_row("C-2001")
    r = api.post("/api/v1/customers/import", content=CSV.encode(), headers=auth)
    assert r.json()["created"] == 1 and world.store.customer_row("C-2001")


def test_owner_cannot_see_customers(world: World) -> None:
    olga = world.client("olga")
    assert olga.get("/customers").status_code == 403
    assert olga.get("/api/v1/customers", params={"q": "C-1001"}).status_code == 403
    assert olga.get("/api/v1/customers/C-1001").status_code == 403
