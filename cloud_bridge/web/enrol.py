"""The enrolment portal pages (``/enrol/{store_id}``...) and its JSON API
(``/api/v1/consent-text``, ``/api/v1/enrolments``, ``DELETE /api/v1/customers/{crm_id}``) over
HTTP; the double opt-in itself (codes, limits, consents, devices) is
``cloud_bridge.customers.enrol.Enrolments``, which the app keeps on ``app.state.enrolments``
(``dependencies.get_enrolments``)."""

from __future__ import annotations

import hmac
import re
import urllib.parse
from functools import partial
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from cloud_bridge.config import EnrolSettings
from cloud_bridge.customers.consent_texts import (
    LANGUAGE_NAMES,
    ConsentTextError,
    consent_text,
    pick_language,
    words,
)
from cloud_bridge.customers.enrol import (
    CONTINUE_PARAMS,
    CodeClosed,
    EnrolmentError,
    Enrolments,
    InvalidInput,
    RateLimited,
    SendFailed,
    UnknownStore,
    WrongCode,
    iso_utc,
)
from cloud_bridge.customers.erasure import erase_customer
from cloud_bridge.offers.decide import StoreInfo
from cloud_bridge.web.dependencies import Clock, EnrolmentsDep, Store, enrolments_of
from edge_agent.roster import parse_mac

__all__ = ["router", "EnrolmentIn", "ConfirmIn"]

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

router = APIRouter()


class EnrolmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_id: str = Field(description="store the customer enrols at")
    phone: str = Field(description="mobile number; national numbers use the store's country")
    name: str = Field(description="the customer's name, used in offers")
    language: Literal["ru", "hy", "en"] = Field(description="language of the consent text shown")
    consent_sms: bool = Field(description="consent (a): marketing SMS")
    consent_recognition: bool = Field(description="consent (b): phone recognition near the store")
    text_version: str | None = Field(
        None, description="consent text version shown (default current)"
    )
    mac: str | None = Field(None, description="the phone's MAC on the store's Wi-Fi, if known")
    crm_id: str | None = Field(
        None,
        description="the customer's id in the caller's CRM (needs the enrol.link token scope)",
    )
    source: Literal["api", "crm"] = Field(
        "api", description="who collected the consent ('crm' needs the enrol.link token scope)"
    )


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="the 6-digit code from the SMS", max_length=12)


def _client(request: Request) -> tuple[str | None, str | None]:
    return (request.client.host if request.client else None), request.headers.get("user-agent")


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[:16384].decode("utf-8", errors="replace")
    return {k: v[0] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}


def _continue_url(params: dict[str, str]) -> str:
    """Where the captive portal wants the client to go next, if it is a plain http(s) URL."""
    for name in CONTINUE_PARAMS:
        value = params.get(name, "")
        if re.match(r"^https?://[^\s<>\"']+$", value) and len(value) < 2000:
            return value
    return ""


def _require_scope(request: Request, settings: EnrolSettings, scope: str, what: str) -> None:
    """401 without the right bearer token, 403 when the token lacks ``scope``."""
    token = settings.api_token
    if token is None:
        raise HTTPException(403, f"{what} is off: set enrol.api_token with the scope {scope}")
    given = request.headers.get("authorization", "")
    ok = hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode())
    if not ok:
        raise HTTPException(
            401,
            f"{what} needs 'Authorization: Bearer <enrol.api_token>' with the scope {scope}",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if scope not in settings.api_token_scopes:
        raise HTTPException(
            403, f"{what}: enrol.api_token lacks the scope {scope} (enrol.api_token_scopes)"
        )


def _error_json(exc: EnrolmentError) -> JSONResponse:
    body: dict[str, Any] = {"detail": str(exc)}
    if isinstance(exc, InvalidInput):
        body["problems"] = [{"field": f, "problem": p} for f, p in exc.problems]
    if isinstance(exc, WrongCode):
        body["attempts_left"] = exc.attempts_left
    return JSONResponse(body, status_code=exc.status)


def store_or_404(enrolments: Enrolments, store_id: str) -> tuple[Enrolments, StoreInfo]:
    try:
        return enrolments, enrolments.store_info(store_id)
    except UnknownStore:
        raise HTTPException(404, "unknown store") from None


def language(request: Request, info: StoreInfo, chosen: str | None = None) -> str:
    return pick_language(
        chosen or request.query_params.get("lang"),
        request.headers.get("accept-language"),
        info.country,
    )


def page(
    enrolments: Enrolments,
    request: Request,
    template: str,
    info: StoreInfo,
    lang: str,
    status: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    w = words(lang)
    base = {
        "store": info,
        "lang": lang,
        "languages": LANGUAGE_NAMES,
        "w": w,
        "title": w["title"].format(store=info.name),
        "text": consent_text(enrolments.settings.consent_version, lang),
        "cont": "",
        "device": "",
    }
    return TEMPLATES.TemplateResponse(request, template, {**base, **ctx}, status_code=status)


# portal pages -------------------------------------------------------------------------
@router.get("/enrol/{store_id}", response_class=HTMLResponse)
def portal(
    request: Request, store_id: str, enrolments: EnrolmentsDep, clock: Clock
) -> HTMLResponse:
    enrolments, info = store_or_404(enrolments, store_id)
    params = dict(request.query_params)
    lang = language(request, info)
    mac = enrolments.mac_from_params(params) or enrolments.open_device(params.get("device", ""))
    cont = _continue_url(params)
    if mac is not None and enrolments.refresh_device(store_id, mac, clock()):
        return page(enrolments, request, "enrol_welcome.html", info, lang, cont=cont)
    device = enrolments.seal_device(mac) if mac else ""
    return page(
        enrolments,
        request,
        "enrol_form.html",
        info,
        lang,
        device=device,
        cont=cont,
        form={},
        errors={},
    )


@router.post("/enrol/{store_id}", response_class=HTMLResponse)
async def portal_start(
    request: Request, store_id: str, enrolments: EnrolmentsDep, clock: Clock
) -> HTMLResponse:
    enrolments, info = store_or_404(enrolments, store_id)
    form = await _form(request)
    lang = language(request, info, form.get("lang"))
    mac = enrolments.open_device(form.get("device", ""))
    ip, ua = _client(request)
    ctx = {
        "device": form.get("device", "") if mac else "",
        "cont": _continue_url({"url": form.get("cont", "")}),
        "form": form,
    }
    try:
        started = await run_in_threadpool(
            partial(
                enrolments.start,
                store_id=store_id,
                phone=form.get("phone", ""),
                name=form.get("name", ""),
                language=lang,
                consent_sms=form.get("consent_sms") == "yes",
                consent_recognition=form.get("consent_recognition") == "yes" and bool(mac),
                source="portal",
                now=clock(),
                mac=mac,
                ip=ip,
                user_agent=ua,
            )
        )
    except InvalidInput as exc:
        w = words(lang)
        errors = {f: w[f"err_{f}"] for f, _ in exc.problems if f"err_{f}" in w}
        return page(enrolments, request, "enrol_form.html", info, lang, 422, errors=errors, **ctx)
    except (RateLimited, SendFailed) as exc:
        errors = {"form": words(lang)[exc.word]}
        return page(
            enrolments, request, "enrol_form.html", info, lang, exc.status, errors=errors, **ctx
        )
    return page(
        enrolments,
        request,
        "enrol_code.html",
        info,
        lang,
        enrolment_id=started.enrolment_id,
        cont=ctx["cont"],
        error="",
    )


@router.post("/enrol/{store_id}/confirm", response_class=HTMLResponse)
async def portal_confirm(
    request: Request, store_id: str, enrolments: EnrolmentsDep, clock: Clock
) -> HTMLResponse:
    enrolments, info = store_or_404(enrolments, store_id)
    form = await _form(request)
    lang = language(request, info, form.get("lang"))
    cont = _continue_url({"url": form.get("cont", "")})
    enrolment_id = form.get("enrolment_id", "")
    try:
        await run_in_threadpool(enrolments.confirm, enrolment_id, form.get("code", ""), clock())
    except WrongCode as exc:
        error = words(lang)["err_code"].format(left=exc.attempts_left)
        return page(
            enrolments,
            request,
            "enrol_code.html",
            info,
            lang,
            400,
            enrolment_id=enrolment_id,
            cont=cont,
            error=error,
        )
    except CodeClosed:
        return page(enrolments, request, "enrol_closed.html", info, lang, 410, cont=cont)
    return page(enrolments, request, "enrol_done.html", info, lang, cont=cont)


@router.get("/enrol/{store_id}/optout", response_class=HTMLResponse)
def optout_page(request: Request, store_id: str, enrolments: EnrolmentsDep) -> HTMLResponse:
    _, info = store_or_404(enrolments, store_id)
    return page(enrolments, request, "enrol_optout.html", info, language(request, info), done=False)


@router.post("/enrol/{store_id}/optout", response_class=HTMLResponse)
async def optout(
    request: Request, store_id: str, enrolments: EnrolmentsDep, clock: Clock
) -> HTMLResponse:
    enrolments, info = store_or_404(enrolments, store_id)
    form = await _form(request)
    lang = language(request, info, form.get("lang"))
    ip, ua = _client(request)
    try:
        await run_in_threadpool(
            enrolments.opt_out, store_id, form.get("phone", ""), clock(), ip, ua
        )
    except InvalidInput:
        error = words(lang)["err_phone"]
        return page(
            enrolments, request, "enrol_optout.html", info, lang, 422, done=False, error=error
        )
    except RateLimited as exc:
        error = words(lang)[exc.word]
        return page(
            enrolments, request, "enrol_optout.html", info, lang, 429, done=False, error=error
        )
    return page(enrolments, request, "enrol_optout.html", info, lang, done=True)


# JSON API -----------------------------------------------------------------------------
@router.get("/api/v1/consent-text")
def api_consent_text(
    request: Request, language: str = "en", version: str | None = None
) -> dict[str, str]:
    """The consent text an app must show, with the version and hash to send back."""
    try:
        text = consent_text(version or enrolments_of(request).settings.consent_version, language)
    except ConsentTextError as exc:
        raise HTTPException(404, str(exc)) from None
    return {
        "version": text.version,
        "language": text.language,
        "sha256": text.sha256,
        "text": text.text,
    }


@router.post("/api/v1/enrolments", status_code=202)
def api_start(
    request: Request, body: EnrolmentIn, enrolments: EnrolmentsDep, clock: Clock
) -> Response:
    """Start a double opt-in: the customer gets a code by SMS. Naming ``crm_id`` (or
    ``source`` crm) needs the bearer token ``enrol.api_token`` with the scope enrol.link."""
    if body.crm_id is not None or body.source == "crm":
        _require_scope(request, enrolments.settings, "enrol.link", "naming crm_id or source crm")
    ip, ua = _client(request)
    mac = None
    if body.mac:
        try:
            mac = parse_mac(body.mac)
        except ValueError:
            return _error_json(InvalidInput([("mac", "mac is not a MAC address")]))
        if mac[0] & 1:
            return _error_json(InvalidInput([("mac", "mac is a group address")]))
    try:
        started = enrolments.start(
            store_id=body.store_id,
            phone=body.phone,
            name=body.name,
            language=body.language,
            consent_sms=body.consent_sms,
            consent_recognition=body.consent_recognition,
            source=body.source,
            now=clock(),
            mac=mac,
            crm_id=body.crm_id,
            ip=ip,
            user_agent=ua,
            text_version=body.text_version,
        )
    except EnrolmentError as exc:
        return _error_json(exc)
    body_out = {
        "enrolment_id": started.enrolment_id,
        "status": "code_sent",
        "expires_at": iso_utc(started.expires),
    }
    return JSONResponse(body_out, status_code=202)


@router.post("/api/v1/enrolments/{enrolment_id}/confirm")
def api_confirm(
    request: Request,
    enrolment_id: str,
    body: ConfirmIn,
    enrolments: EnrolmentsDep,
    clock: Clock,
) -> Response:
    """Confirm with the code from the SMS; the consents become active with their proof."""
    try:
        done = enrolments.confirm(enrolment_id, body.code, clock())
    except EnrolmentError as exc:
        return _error_json(exc)
    return JSONResponse(
        {
            "status": "confirmed",
            "crm_id": done.crm_id,
            "consents": done.consents,
            "device_enrolled": done.device_enrolled,
        }
    )


@router.delete("/api/v1/customers/{crm_id}")
def api_erase(
    request: Request, crm_id: str, store: Store, enrolments: EnrolmentsDep, clock: Clock
) -> dict[str, Any]:
    """Erase a customer (bearer token ``enrol.api_token`` with the scope customers.erase)."""
    _require_scope(request, enrolments.settings, "customers.erase", "the erasure API")
    if not erase_customer(store, crm_id, clock()):
        raise HTTPException(404, "no such customer")
    return {"erased": True}
