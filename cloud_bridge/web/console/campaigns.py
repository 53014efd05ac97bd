"""Campaign pages (marketer, admin): list; create/edit with a live preview per variant (text
for a sample customer, GSM-7/UCS-2, parts, cost per SMS, audience size now, estimated sends and
cost per day); schedule, caps, holdout; test send to one's own phone; activate / pause; every
validation error inline at its field. Builds on ``cloud_bridge.offers.campaigns`` (model, validation,
storage) and ``cloud_bridge.delivery.sms_text`` (final text, encoding, cost). JSON: preview and test send
under ``/api/v1/campaigns`` next to the campaign CRUD."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from cloud_bridge.config import BridgeSettings
from cloud_bridge.delivery.sms_text import compose, language_of_text, optout_link
from cloud_bridge.errors import MessageError
from cloud_bridge.offers.campaigns import (
    CampaignDef,
    CampaignError,
    Problem,
    engine_campaign,
    row_to_dict,
    save_campaigns,
    validate_campaigns,
)
from cloud_bridge.offers.decide import SEGMENTS, WEEKDAYS, Customer, segment_of
from cloud_bridge.offers.policy import CAP_COUNT, CAP_DAYS
from cloud_bridge.offers.templates import TemplateError, render
from cloud_bridge.storage.customers import consented_count, consented_sample, triggered_pairs
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.auth import Principal, audit
from cloud_bridge.web.console.common import mask_phone, page
from cloud_bridge.web.console.reports import SENT
from cloud_bridge.web.dependencies import MaybeSettings, Staff, Store

__all__ = ["router", "form_to_campaign", "preview"]

VARIANT_SLOTS = ("A", "B", "C")
SAMPLE_SIZE = 2000
_CACHE_S = 60.0
_TRIGGERED_S = 600.0  # two weeks of arrivals hardly change in ten minutes
_consented_cache: dict[str, tuple[float, list[dict[str, Any]], int]] = {}
_triggered_cache: dict[tuple[str, str, tuple[str, ...]], tuple[float, int]] = {}
_cache_lock = threading.Lock()


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", name.strip().lower()).strip("-")[:40] or "campaign"
    return s if s[0].isalnum() else "c-" + s


def form_to_campaign(form: FormData | dict[str, Any], campaign_id: str | None) -> dict[str, Any]:
    """The campaign-file shape (what ``validate_campaigns`` takes) of the console form."""

    def get(name: str) -> str:
        return str(form.get(name, "") or "").strip()

    def many(name: str) -> list[str]:
        if isinstance(form, FormData):
            return [str(v) for v in form.getlist(name) if str(v).strip()]
        v = form.get(name, [])
        return [str(x) for x in (v if isinstance(v, list) else [v]) if str(x).strip()]

    def number(name: str) -> Any:
        raw = get(name)
        if raw == "":
            return None
        try:
            return float(raw) if "." in raw else int(raw)
        except ValueError:
            return raw  # validation names the field

    variants = [
        {"id": slot, "template": get(f"variants.{slot}")}
        for slot in VARIANT_SLOTS
        if get(f"variants.{slot}")
    ]
    schedule: dict[str, Any] = {"weekdays": many("schedule.weekdays")}
    for key in ("start_date", "end_date"):
        if get(f"schedule.{key}"):
            schedule[key] = get(f"schedule.{key}")
    if get("schedule.hours_from") or get("schedule.hours_to"):
        schedule["hours"] = [get("schedule.hours_from"), get("schedule.hours_to")]
    out: dict[str, Any] = {
        "id": campaign_id or _slug(get("name")),
        "name": get("name"),
        "status": get("status") or "draft",
        "stores": many("stores"),
        "trigger": {"type": get("trigger.type") or "arrive"},
        "audience": {"segments": many("audience.segments")},
        "schedule": schedule,
        "variants": variants,
        "caps": {
            "count": number("caps.count") or CAP_COUNT,
            "days": number("caps.days") or CAP_DAYS,
        },
        "priority": number("priority") or 0,
        "holdout_pct": number("holdout_pct") if get("holdout_pct") != "" else 10.0,
        "budget": number("budget"),
    }
    return out


def _field_of(problem: Problem) -> str:
    """The form field a validation problem belongs to."""
    f = problem.field
    m = re.match(r"variants\[(\d+)\]", f)
    if m:
        i = int(m.group(1))
        return f"variants.{VARIANT_SLOTS[i]}" if i < len(VARIANT_SLOTS) else "variants"
    for key in ("stores", "audience.segments", "schedule.weekdays", "schedule.hours"):
        if f.startswith(key):
            return key
    return f or "form"


def _errors(exc: CampaignError, data: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in exc.problems:
        key = _field_of(p)
        if key == "variants" and not data["variants"]:
            key = "variants.A"
        if key == "id":
            key = "name"
        out.setdefault(key, p.message)
    return out


def _consented(store: BridgeStore, now: float) -> tuple[list[dict[str, Any]], int]:
    """(a sample of customers with active SMS and recognition consent, how many there are);
    cached for a minute: it scans every customer."""
    with _cache_lock:
        hit = _consented_cache.get(store.location)
        if hit and now - hit[0] < _CACHE_S:
            return hit[1], hit[2]
    total = consented_count(store)
    sample = consented_sample(store, SAMPLE_SIZE)
    with _cache_lock:
        _consented_cache[store.location] = (now, sample, total)
    return sample, total


def _triggered(store: BridgeStore, trigger: str, store_ids: list[str], now: float) -> int:
    """Distinct (customer, UTC day) pairs with a ``trigger`` event at these stores over the last
    14 days; cached for ten minutes: on a big store it reads two weeks of events."""
    key = (store.location, trigger, tuple(store_ids))
    with _cache_lock:
        hit = _triggered_cache.get(key)
        if hit and now - hit[0] < _TRIGGERED_S:
            return hit[1]
    n = triggered_pairs(store, trigger, store_ids, now - 14 * 86400)
    with _cache_lock:
        _triggered_cache[key] = (now, n)
    return int(n)


def _customer(r: dict[str, Any]) -> Customer:
    return Customer(
        id=r["id"],
        crm_id=r["crm_id"],
        name=r["name"],
        phone="",
        favourite_product=r["favourite_product"],
        consent_sms=True,
        consent_recognition=True,
        loyalty_tier=r["loyalty_tier"],
        visits=r["visits"],
        first_purchase=r["first_purchase"],
    )


def _in_audience(defn: CampaignDef, c: Customer, now: float) -> bool:
    from cloud_bridge.offers.decide import _rule_holds, _rule_value

    engine = engine_campaign(
        {
            "id": defn.id, "name": defn.name, "trigger": defn.trigger.type,
            "template": defn.variants[0].template, "status": "active", "cap_count": CAP_COUNT,
            "cap_days": CAP_DAYS, "priority": 0, "audience": defn.audience.model_dump(),
        }
    )  # fmt: skip
    a = engine.audience
    if a.segments and segment_of(c, now) not in a.segments:
        return False
    return all(_rule_holds(rule, _rule_value(rule, c, now)) for rule in a.rules)


def preview(
    store: BridgeStore, settings: BridgeSettings | None, defn: CampaignDef, now: float
) -> dict[str, Any]:
    """What the campaign's texts look like and cost, who it reaches, and what a day costs."""
    d = (settings or BridgeSettings()).delivery
    stores = [r for r in store.store_rows() if not defn.stores or r["id"] in defn.stores]
    st = stores[0] if stores else None
    sample, consented = _consented(store, now)
    matching = [c for c in map(_customer, sample) if _in_audience(defn, c, now)]
    audience = round(consented * len(matching) / len(sample)) if sample else 0
    who = matching[0] if matching else None
    values = {
        "first_name": (who.name.split() or ["Anna"])[0] if who else "Anna",
        "favourite_product": (who.favourite_product or "") if who else "espresso beans",
        "store_name": st["name"] if st else "Main St.",
    }
    base = d.optout_base_url or (settings.public_url if settings else "https://pb.example")
    variants = []
    for v in defn.variants:
        item: dict[str, Any] = {"id": v.id, "template": v.template}
        try:
            body = render(v.template, values)
            c = compose(
                body,
                brand=st["name"] if st else "",
                sender=st["sender_name"] if st else "Sender",
                language=language_of_text(body, d.default_language),
                link=optout_link(base, "X" * 8),
                translit=d.transliterate,
                country=st["country"] if st else None,
                prices=d.prices,
                currency=d.currency,
            )
            item.update(
                text=c.text, encoding=c.cost.encoding, chars=c.cost.chars, parts=c.cost.parts,
                cost=c.cost.cost, non_gsm=c.cost.non_gsm[:8], error=None,
                too_long=c.cost.parts > d.max_parts,
            )  # fmt: skip
        except (TemplateError, MessageError) as exc:
            item.update(text=None, error=str(exc))
        variants.append(item)
    # Sends per day: distinct consented customers who triggered at these stores per day over
    # the last 14 days, scaled to the audience share, less the holdout, bounded by the cap.
    ids = [s["id"] for s in stores]
    triggered = _triggered(store, defn.trigger.type, ids, now) if ids else 0
    share = len(matching) / len(sample) if sample else 0.0
    per_day = triggered / 14 * share * (1 - defn.holdout_pct / 100)
    per_day = min(per_day, audience * defn.caps.count / defn.caps.days)
    costs = [v["cost"] for v in variants if v.get("cost") is not None]
    each = sum(costs) / len(costs) if costs else None
    return {
        "variants": variants,
        "sample_customer": values["first_name"] if who else None,
        "store": st["name"] if st else None,
        "audience_now": audience,
        "consented": consented,
        "estimated_sends_per_day": round(per_day, 1),
        "cost_per_sms": each,
        "estimated_cost_per_day": round(per_day * each, 2) if each is not None else None,
        "currency": d.currency,
        "max_parts": d.max_parts,
    }


router = APIRouter()


def form_page(
    store: BridgeStore,
    settings: BridgeSettings | None,
    request: Request,
    me: Principal,
    data: dict[str, Any],
    existing: bool,
    errors: dict[str, str] | None = None,
    status: int = 200,
    notice: str = "",
) -> HTMLResponse:
    pv = None
    try:
        [defn] = validate_campaigns([data])
        pv = preview(store, settings, defn, time.time())
    except CampaignError:
        pass
    return page(
        request,
        "campaign_form.html",
        me,
        {
            "c": data,
            "existing": existing,
            "errors": errors or {},
            "stores": store.store_rows(),
            "segments": SEGMENTS,
            "weekdays": WEEKDAYS,
            "slots": VARIANT_SLOTS,
            "pv": pv,
            "notice": notice,
            "my_phone": mask_phone(me.phone) if me.phone else "",
        },
        status=status,
        title=f"Campaign: {data['name']}" if existing else "New campaign",
    )


def load(store: BridgeStore, campaign_id: str) -> dict[str, Any]:
    rows = store.campaign_rows(campaign_id)
    if not rows:
        raise HTTPException(404, f"no campaign {campaign_id!r}")
    return {**row_to_dict(rows[0]), "paused_reason": rows[0].get("paused_reason")}


@router.get("/campaigns", response_class=HTMLResponse, include_in_schema=False)
def campaigns_page(request: Request, me: Staff, store: Store, notice: str = "") -> HTMLResponse:
    rows = [
        {**row_to_dict(c), "paused_reason": c.get("paused_reason"), "updated": c.get("updated")}
        for c in store.campaign_rows()
    ]
    # "SMS sent": what the provider took, not what is reserved (as the reports count it)
    counts = store.campaign_send_counts([c["id"] for c in rows], SENT)
    return page(
        request,
        "campaigns.html",
        me,
        {"campaigns": rows, "sent": counts, "notice": notice},
        title="Campaigns",
    )


@router.get("/campaigns/new", response_class=HTMLResponse, include_in_schema=False)
def new_page(request: Request, me: Staff, store: Store, settings: MaybeSettings) -> HTMLResponse:
    blank = form_to_campaign({"holdout_pct": "10"}, "new")
    blank["variants"] = [{"id": "A", "template": ""}]
    return form_page(store, settings, request, me, {**blank, "id": ""}, existing=False)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse, include_in_schema=False)
def edit_page(
    request: Request,
    campaign_id: str,
    me: Staff,
    store: Store,
    settings: MaybeSettings,
    notice: str = "",
) -> HTMLResponse:
    return form_page(
        store, settings, request, me, load(store, campaign_id), existing=True, notice=notice
    )


async def save(
    store: BridgeStore,
    settings: BridgeSettings | None,
    request: Request,
    me: Principal,
    campaign_id: str | None,
) -> Response:
    form = await request.form()
    data = form_to_campaign(form, campaign_id)
    action = str(form.get("action", "save"))
    existing = campaign_id is not None
    if existing:
        data["status"] = load(store, campaign_id or "")["status"]
    if action == "activate":
        data["status"] = "active"
    try:
        [defn] = validate_campaigns([data], store, settings)
        if not existing and store.campaign_rows(defn.id):
            raise CampaignError([Problem("name", f"a campaign with id {defn.id!r} exists")])
    except CampaignError as exc:
        return form_page(
            store, settings, request, me, data, existing, _errors(exc, data), status=422
        )
    save_campaigns(store, [defn], f"console:{me.username}", time.time())
    audit(request, me, "campaign.save", defn.id, f"status={defn.status}")
    if action == "activate":
        audit(request, me, "campaign.activate", defn.id)
    word = "activated" if action == "activate" else "saved"
    return RedirectResponse(f"/campaigns/{defn.id}?notice={word}", status_code=303)


@router.post("/campaigns/new", include_in_schema=False)
async def create(request: Request, me: Staff, store: Store, settings: MaybeSettings) -> Response:
    return await save(store, settings, request, me, None)


@router.post("/campaigns/preview", response_class=HTMLResponse, include_in_schema=False)
async def preview_fragment(
    request: Request, me: Staff, store: Store, settings: MaybeSettings
) -> HTMLResponse:
    form = await request.form()
    data = form_to_campaign(form, str(form.get("id") or "") or None)
    try:
        [defn] = validate_campaigns([data], store, settings)
        pv, errors = preview(store, settings, defn, time.time()), {}
    except CampaignError as exc:
        pv, errors = None, _errors(exc, data)
    return page(request, "_campaign_preview.html", me, {"pv": pv, "errors": errors, "c": data})


def test_send(
    store: BridgeStore,
    settings: BridgeSettings | None,
    me: Principal,
    defn: CampaignDef,
    variant: str,
) -> dict[str, Any]:
    user = store.user_by_id(me.user_id) or {}
    phone = user.get("phone")
    if not phone:
        raise HTTPException(409, "set your own phone on /account first")
    pv = preview(store, settings, defn, time.time())
    item = next((v for v in pv["variants"] if v["id"] == variant), None)
    if item is None or not item.get("text"):
        raise HTTPException(422, f"variant {variant!r} has no text to send")
    from cloud_bridge.delivery.providers import make_provider

    stores = [s for s in store.store_rows() if not defn.stores or s["id"] in defn.stores]
    sender = stores[0]["sender_name"] if stores else "passby"
    provider = make_provider(settings.provider if settings else "sandbox", store)
    result = provider.send(phone, sender, "[TEST] " + item["text"])
    return {
        "status": result.status,
        "to": mask_phone(phone),
        "variant": variant,
        "provider_id": result.provider_id,
        "error": result.error,
    }


@router.post("/campaigns/test-send", response_class=HTMLResponse, include_in_schema=False)
async def test_send_form(
    request: Request, me: Staff, store: Store, settings: MaybeSettings
) -> HTMLResponse:
    form = await request.form()
    data = form_to_campaign(form, str(form.get("id") or "") or None)
    try:
        [defn] = validate_campaigns([data], store, settings)
    except CampaignError as exc:
        return page(
            request, "_campaign_preview.html", me,
            {"pv": None, "errors": _errors(exc, data), "c": data}, status=422,
        )  # fmt: skip
    variant = str(form.get("variant", "A"))
    try:
        out = test_send(store, settings, me, defn, variant)
    except HTTPException as exc:
        out = {"status": "failed", "error": exc.detail, "variant": variant}
    audit(request, me, "campaign.test_send", defn.id, f"variant={out.get('variant')}")
    pv = preview(store, settings, defn, time.time())
    return page(
        request, "_campaign_preview.html", me, {"pv": pv, "errors": {}, "c": data, "sent": out}
    )


@router.post("/campaigns/{campaign_id}", include_in_schema=False)
async def update(
    request: Request, campaign_id: str, me: Staff, store: Store, settings: MaybeSettings
) -> Response:
    load(store, campaign_id)
    return await save(store, settings, request, me, campaign_id)


@router.post("/campaigns/{campaign_id}/status", include_in_schema=False)
async def status_form(request: Request, campaign_id: str, me: Staff, store: Store) -> Response:
    form = await request.form()
    status = str(form.get("status", ""))
    if status not in ("active", "paused", "ended", "draft"):
        raise HTTPException(400, "status: one of active, paused, ended, draft")
    load(store, campaign_id)
    store.set_campaign_status(
        campaign_id, status, time.time(), f"by {me.username}" if status == "paused" else None
    )
    audit(request, me, f"campaign.{status}", campaign_id)
    return RedirectResponse(f"/campaigns/{campaign_id}?notice={status}", status_code=303)


# JSON ---------------------------------------------------------------------------------
@router.post("/api/v1/campaigns/preview", tags=["campaigns"])
def api_preview(
    body: dict[str, Any], me: Staff, store: Store, settings: MaybeSettings
) -> dict[str, Any]:
    """Preview a campaign (the same body as POST /api/v1/campaigns): each variant's final
    text for a sample customer, GSM-7/UCS-2, parts, cost per SMS; audience size now;
    estimated sends and cost per day. 422 with the fields at fault."""
    try:
        [defn] = validate_campaigns([{"id": "preview", **body}], store, settings)
    except CampaignError as exc:
        raise HTTPException(
            422, {"errors": [{"field": p.field, "message": p.message} for p in exc.problems]}
        ) from None
    return preview(store, settings, defn, time.time())


@router.post("/api/v1/campaigns/{campaign_id}/test-send", tags=["campaigns"])
def api_test_send(
    request: Request,
    campaign_id: str,
    me: Staff,
    store: Store,
    settings: MaybeSettings,
    variant: str = "A",
) -> dict[str, Any]:
    """Send a saved campaign's variant, marked [TEST], to your own phone (set on /account)."""
    try:
        [defn] = validate_campaigns([load(store, campaign_id)], store, settings)
    except CampaignError as exc:
        raise HTTPException(
            422, {"errors": [{"field": p.field, "message": p.message} for p in exc.problems]}
        ) from None
    out = test_send(store, settings, me, defn, variant)
    audit(request, me, "campaign.test_send", campaign_id, f"variant={variant}")
    return out
