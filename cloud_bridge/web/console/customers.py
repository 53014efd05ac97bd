"""Customer and consent pages (admin, marketer): CRM CSV/JSON import with the row report,
search by CRM id or phone, a customer's consent history with its proof, and erasure on request
(admin). JSON under ``/api/v1/customers``. Imports and erasures go to the audit log."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloud_bridge.config import BridgeSettings
from cloud_bridge.customers.crm_import import ImportFileError, ImportReport, import_customers
from cloud_bridge.customers.erasure import erase_customer
from cloud_bridge.customers.phones import PhoneError, normalise_phone
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.customers import (
    device_rows,
    live_customer_count,
    recent_decisions,
    search_rows,
)
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import store_countries, store_exists, store_names
from cloud_bridge.web.auth import Principal, audit
from cloud_bridge.web.console.common import explain_decision, mask_phone, page
from cloud_bridge.web.dependencies import Admin, MaybeSettings, Staff, Store

__all__ = ["router", "search_customers", "customer_detail"]

MAX_IMPORT_BYTES = 20 * 1024 * 1024


def search_customers(store: BridgeStore, q: str, limit: int = 50) -> list[dict[str, Any]]:
    """Live customers whose CRM id starts with ``q`` or whose phone is ``q`` (any spelling)."""
    q = q.strip()
    if not q:
        return []
    phones = {q}
    for region in [None, *store_countries(store)]:
        with contextlib.suppress(PhoneError):
            phones.add(normalise_phone(q, region))
    rows = search_rows(store, q, phones, limit)
    for r in rows:
        r["phone"] = mask_phone(r["phone"])
        r["consents"] = store.latest_consents(r["id"])
    return rows


def customer_detail(store: BridgeStore, crm_id: str) -> dict[str, Any]:
    row = store.customer_row(crm_id)
    if row is None:
        raise HTTPException(404, f"no customer {crm_id!r} (or erased)")
    devices = device_rows(store, row["id"])
    decisions = recent_decisions(store, row["id"])
    for d in decisions:
        explain_decision(d)
    return {
        "crm_id": row["crm_id"],
        "name": row["name"],
        "phone": mask_phone(row["phone"]),
        "favourite_product": row["favourite_product"],
        "loyalty_tier": row["loyalty_tier"],
        "visits": row["visits"],
        "first_purchase": row["first_purchase"],
        "source": row["source"],
        "created": row["created"],
        "consents_now": store.latest_consents(row["id"]),
        "consent_history": store.consents_of(row["id"]),
        "devices": devices,
        "decisions": decisions,
    }


router = APIRouter()


def run_import(
    store: BridgeStore,
    settings: BridgeSettings | None,
    request: Request,
    me: Principal,
    data: bytes,
    filename: str,
    store_id: str | None,
    dry_run: bool,
) -> ImportReport:
    keys_dir = settings.data_dir if settings is not None else store.path.parent
    ttl = settings.enrol.device_ttl_days if settings is not None else 90.0
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"the file is over {MAX_IMPORT_BYTES // 2**20} MB")
    if store_id and not store_exists(store, store_id):
        raise HTTPException(422, f"store_id: unknown store {store_id!r}")
    fmt = "json" if filename.lower().endswith(".json") else "csv"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("import." + fmt)
        path.write_bytes(data)
        try:
            report = import_customers(
                store,
                BridgeKeys(keys_dir).subject_key,
                path,
                time.time(),
                fmt=fmt,
                store_id=store_id or None,
                device_ttl_days=ttl,
                dry_run=dry_run,
            )
        except ImportFileError as exc:
            raise HTTPException(422, str(exc).replace(str(path), filename)) from None
    report.file = filename
    if not dry_run:
        audit(
            request, me, "customers.import", filename,
            f"rows={report.rows} applied={report.applied} created={report.created} "
            f"consents={report.consents_recorded} skipped={report.skipped} "
            f"sha256={report.sha256[:16]}",
        )  # fmt: skip
    return report


@router.get("/customers", response_class=HTMLResponse, include_in_schema=False)
def customers_page(request: Request, me: Staff, store: Store, q: str = "") -> HTMLResponse:
    total = live_customer_count(store)
    return page(
        request,
        "customers.html",
        me,
        {
            "q": q,
            "results": search_customers(store, q),
            "total": total,
            "stores": store_names(store),
            "report": None,
        },
        title="Customers and consent",
    )


@router.post("/customers/import", response_class=HTMLResponse, include_in_schema=False)
async def import_form(
    request: Request, me: Staff, store: Store, settings: MaybeSettings
) -> HTMLResponse:
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "choose a CSV or JSON file")
    data = await upload.read()
    report = run_import(
        store,
        settings,
        request,
        me,
        data,
        upload.filename or "upload.csv",
        str(form.get("store_id") or "") or None,
        bool(form.get("dry_run")),
    )
    total = live_customer_count(store)
    return page(
        request,
        "customers.html",
        me,
        {
            "q": "",
            "results": [],
            "total": total,
            "stores": store_names(store),
            "report": report,
        },
        title="Customers and consent",
    )


@router.get("/customers/{crm_id}", response_class=HTMLResponse, include_in_schema=False)
def customer_page(request: Request, crm_id: str, me: Staff, store: Store) -> HTMLResponse:
    c = customer_detail(store, crm_id)
    return page(request, "customer.html", me, {"c": c}, title=f"Customer {crm_id}")


@router.post("/customers/{crm_id}/erase", include_in_schema=False)
async def erase_form(request: Request, crm_id: str, me: Admin, store: Store) -> Response:
    form = await request.form()
    if str(form.get("confirm", "")).strip() != crm_id:
        raise HTTPException(400, "type the CRM id to confirm the erasure")
    if not erase_customer(store, crm_id, time.time()):
        raise HTTPException(404, f"no customer {crm_id!r}")
    audit(request, me, "customer.erase", crm_id, "erased on request (console)")
    return RedirectResponse(f"/customers?q=&erased={crm_id}", status_code=303)


# JSON ---------------------------------------------------------------------------------
@router.get("/api/v1/customers", tags=["customers"])
def api_search(
    me: Staff, store: Store, q: Annotated[str, Query(min_length=1, max_length=64)]
) -> list[dict[str, Any]]:
    """Customers by CRM id (or its beginning) or phone (any spelling); phones masked."""
    return search_customers(store, q)


@router.get("/api/v1/customers/{crm_id}", tags=["customers"])
def api_customer(crm_id: str, me: Staff, store: Store) -> dict[str, Any]:
    """One customer: segments, consents now and their history with proof, devices (no
    MACs), latest decisions with reasons."""
    return customer_detail(store, crm_id)


@router.post("/api/v1/customers/import", tags=["customers"])
async def api_import(
    request: Request,
    me: Staff,
    store: Store,
    settings: MaybeSettings,
    filename: Annotated[str, Query(max_length=200)] = "import.csv",
    store_id: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Import a CRM file sent as the request body (CSV, or JSON when ``filename`` ends in
    .json). The row report names each bad row, field and problem; good rows are applied
    in one transaction (none with ``dry_run``)."""
    report = run_import(
        store, settings, request, me, await request.body(), filename, store_id, dry_run
    )
    return report.to_json()


@router.post("/api/v1/customers/{crm_id}/erase", tags=["customers"])
def api_erase(request: Request, crm_id: str, me: Admin, store: Store) -> dict[str, Any]:
    """Erase a customer on request (admin): PII, MACs, consents and texts go; a hashed
    suppression entry stays."""
    if not erase_customer(store, crm_id, time.time()):
        raise HTTPException(404, f"no customer {crm_id!r}")
    audit(request, me, "customer.erase", crm_id, "erased on request (api)")
    return {"erased": crm_id}
