"""Provider webhooks and the one-click opt-out link over HTTP (``/sms/...``, ``/o/{token}``);
the signature checks, parsing and consent changes are ``cloud_bridge.delivery.inbound``'s.

The running service puts its Deliverer on ``app.state.deliverer``; without one a Deliverer
sending in the request is made on first use (``dependencies.get_deliverer``)."""

from __future__ import annotations

import hmac
import html
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from cloud_bridge.config import BridgeSettings
from cloud_bridge.delivery.inbound import (
    _OPTOUT_TEXT,
    InboundOutcome,
    _check_gateway,
    _check_twilio,
    _link_context,
    _page,
    _smsc_charset,
    handle_inbound,
    optout,
    smsc_form,
    smsc_signature,
)
from cloud_bridge.delivery.outbox import Deliverer
from cloud_bridge.delivery.providers import StatusResult, smsc_status, twilio_status
from cloud_bridge.errors import SignatureError, WebhookError
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.dependencies import MaybeSettings, Store, deliverer_of

__all__ = ["router", "Hooks"]

log = logging.getLogger(__name__)

router = APIRouter()


@dataclass(frozen=True)
class Hooks:
    """What a webhook needs: the store, the provider settings and (made only when a message
    is applied, as before) the deliverer."""

    store: BridgeStore
    settings: BridgeSettings | None
    request: Request

    @property
    def deliverer(self) -> Deliverer:
        return deliverer_of(self.request)

    @property
    def kind(self) -> str:
        return self.settings.provider.kind if self.settings is not None else "sandbox"

    @property
    def public_url(self) -> str:
        return self.settings.public_url if self.settings is not None else "http://127.0.0.1:8080"

    @property
    def default_language(self) -> str:
        return self.settings.delivery.default_language if self.settings is not None else "en"

    @property
    def translit(self) -> bool:
        return self.settings.delivery.transliterate if self.settings is not None else False

    @property
    def max_age(self) -> float:
        return self.settings.delivery.webhook_max_age_s if self.settings is not None else 300.0

    def twilio_token(self) -> str | None:
        return self.settings.provider.twilio.auth_token_value() if self.settings else None


async def hooks_of(request: Request, store: Store, settings: MaybeSettings) -> Hooks:
    return Hooks(store, settings, request)


HooksDep = Annotated[Hooks, Depends(hooks_of)]


def run(fn: Callable[[], Response]) -> Response:
    try:
        return fn()
    except WebhookError as exc:
        log.warning("webhook refused: %s", exc)
        raise HTTPException(exc.status_code, str(exc)) from None


def inbound(
    hooks: Hooks, provider: str, message_id: str, phone: str, to: str | None, text: str
) -> InboundOutcome:
    return handle_inbound(
        hooks.store, hooks.deliverer, provider, message_id, phone, to, text, time.time(),
        default_language=hooks.default_language, translit=hooks.translit,
    )  # fmt: skip


def receipt(hooks: Hooks, status: StatusResult, key: str | None, pid: str | None, raw: str) -> None:
    """Apply a receipt once; the same receipt again (a retry or a replay) changes nothing."""
    d, store = hooks.deliverer, hooks.store
    now = time.time()
    if pid and not store.record_receipt(d.provider.name, pid, raw, status.error, now):
        log.info("receipt %s/%s seen before: ignored", d.provider.name, raw)
        return
    d.on_receipt(status, now, key=key, provider_id=pid)


# Twilio ---------------------------------------------------------------------------------
@router.post("/sms/twilio/status", include_in_schema=False)
async def twilio_status_callback(request: Request, hooks: HooksDep) -> Response:
    form = await request.form()
    params = [(k, str(v)) for k, v in form.multi_items()]

    def go() -> Response:
        if hooks.kind != "twilio":
            raise HTTPException(404, "Twilio is not the configured provider")
        _check_twilio(hooks.twilio_token(), request, hooks.public_url, params)
        p = dict(params)
        raw = p.get("MessageStatus", "")
        status = twilio_status(raw, p.get("MessageSid"), p.get("ErrorCode"))
        if status is None:
            log.info("Twilio status callback %r: not an outbound status; ignored", raw[:40])
        else:
            receipt(hooks, status, request.query_params.get("key"), p.get("MessageSid"), raw)
        return Response(status_code=204)

    return run(go)


@router.post("/sms/twilio/inbound", include_in_schema=False)
async def twilio_inbound(request: Request, hooks: HooksDep) -> Response:
    form = await request.form()
    params = [(k, str(v)) for k, v in form.multi_items()]

    def go() -> Response:
        if hooks.kind != "twilio":
            raise HTTPException(404, "Twilio is not the configured provider")
        _check_twilio(hooks.twilio_token(), request, hooks.public_url, params)
        p = dict(params)
        inbound(
            hooks,
            "twilio",
            p.get("MessageSid", ""),
            p.get("From", ""),
            p.get("To"),
            p.get("Body", ""),
        )
        return Response("<Response/>", media_type="text/xml")

    return run(go)


# SMSC.ru ----------------------------------------------------------------------------------
@router.post("/sms/smsc/callback", include_in_schema=False)
async def smsc_callback(request: Request, hooks: HooksDep) -> Response:
    body = await request.body()

    def go() -> Response:
        if hooks.kind != "smsc" or hooks.settings is None:
            raise HTTPException(404, "SMSC is not the configured provider")
        charset = _smsc_charset(
            request.query_params.get("charset"), request.headers.get("content-type", "")
        )
        p = smsc_form(body, charset)
        password = hooks.settings.provider.smsc.password_value() or ""
        if "mes" in p:  # an incoming SMS
            fields = [p.get(k, "") for k in ("sms_id", "phone", "mes", "to")]
        else:
            fields = [p.get(k, "") for k in ("id", "phone", "status")]
        try:
            expected = smsc_signature(fields, password, charset)
        except UnicodeEncodeError:
            expected = ""
        if not expected or not hmac.compare_digest(p.get("md5", ""), expected):
            raise SignatureError("bad SMSC md5 check field")
        if "mes" in p:
            inbound(hooks, "smsc", p.get("sms_id", ""), p.get("phone", ""), p.get("to"), p["mes"])
            return Response("OK", media_type="text/plain")
        raw = p.get("status", "").strip()
        code = int(raw) if re.fullmatch(r"-?\d+", raw) else None
        status = smsc_status(code, p.get("id")) if code is not None else None
        if status is None or status.status == "not_found":
            # Not a state we can place (undocumented, or "not found"): changes nothing.
            log.info("SMSC status callback %r: not a delivery state; ignored", raw[:8])
        else:
            receipt(hooks, status, None, p.get("id"), raw)
        return Response("OK", media_type="text/plain")

    return run(go)


# generic HTTP gateway ---------------------------------------------------------------------
def gateway_json(hooks: Hooks, request: Request, body: bytes) -> dict[str, Any]:
    settings = hooks.settings
    secret = settings.provider.http.webhook_secret_value() if settings is not None else None
    _check_gateway(
        secret, request.headers.get("X-Passby-Signature", ""), body, time.time(), hooks.max_age
    )
    try:
        data = json.loads(body)
    except ValueError:
        raise WebhookError("body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookError("body is not a JSON object")
    return data


@router.post("/sms/http/status", include_in_schema=False)
async def http_status(request: Request, hooks: HooksDep) -> Response:
    body = await request.body()

    def go() -> Response:
        if hooks.kind != "http":
            raise HTTPException(404, "the generic gateway is not the configured provider")
        data = gateway_json(hooks, request, body)
        state = str(data.get("status", "")).lower()
        if state not in ("accepted", "delivered", "undelivered", "failed"):
            raise WebhookError(f"unknown status {state!r}")
        pid = str(data.get("id") or "") or None
        receipt(
            hooks,
            StatusResult(state, provider_id=pid, error=str(data.get("error") or "") or None),  # type: ignore[arg-type]
            str(data.get("reference") or "") or None,
            pid or str(data.get("reference") or ""),
            state,
        )
        return Response(status_code=204)

    return run(go)


@router.post("/sms/http/inbound", include_in_schema=False)
async def http_inbound(request: Request, hooks: HooksDep) -> Response:
    body = await request.body()

    def go() -> Response:
        if hooks.kind != "http":
            raise HTTPException(404, "the generic gateway is not the configured provider")
        data = gateway_json(hooks, request, body)
        inbound(
            hooks, "http", str(data.get("id", "")), str(data.get("from", "")),
            str(data.get("to") or "") or None, str(data.get("text", "")),
        )  # fmt: skip
        return Response(status_code=204)

    return run(go)


# sandbox (demo) ---------------------------------------------------------------------------
@router.post("/sms/sandbox/inbound", include_in_schema=False)
async def sandbox_inbound(request: Request, hooks: HooksDep) -> dict[str, Any]:
    body = await request.body()

    def go() -> Response:
        if hooks.kind != "sandbox":
            raise HTTPException(404, "the sandbox is not the configured provider")
        try:
            data = json.loads(body)
        except ValueError:
            raise WebhookError("body is not JSON") from None
        out = inbound(
            hooks, "sandbox", str(data.get("id", "")), str(data.get("from", "")),
            str(data.get("to") or "") or None, str(data.get("text", "")),
        )  # fmt: skip
        return Response(
            json.dumps({"action": out.action, "customers": out.customers, "changed": out.changed}),
            media_type="application/json",
        )

    return run(go)  # type: ignore[return-value]


# one-click opt-out --------------------------------------------------------------------------
@router.get("/o/{token}", response_class=HTMLResponse, include_in_schema=False)
def optout_page(token: str, store: Store) -> HTMLResponse:
    lang, brand = _link_context(store, token)
    t = _OPTOUT_TEXT[lang]
    if not re.fullmatch(r"[A-Za-z0-9]{4,32}", token) or store.optout_link_row(token) is None:
        return HTMLResponse(_page(lang, t["title"], f"<p>{html.escape(t['bad'])}</p>"), 404)
    # One click: the form posts itself when the page opens; without JavaScript it is one
    # button. A link preview (which runs no script) cannot unsubscribe anyone.
    body = (
        f"<p>{html.escape(t['ask'].format(brand=brand or 'SMS'))}</p>"
        f'<form method="post" id="f"><button type="submit">{html.escape(t["button"])}</button>'
        "</form><script>document.getElementById('f').submit()</script>"
    )
    return HTMLResponse(_page(lang, t["title"], body), headers={"Cache-Control": "no-store"})


@router.post("/o/{token}", response_class=HTMLResponse, include_in_schema=False)
def optout_post(token: str, store: Store) -> HTMLResponse:
    lang, brand = _link_context(store, token)
    t = _OPTOUT_TEXT[lang]
    ok, _ = optout(store, token, time.time())
    if not ok:
        return HTMLResponse(_page(lang, t["title"], f"<p>{html.escape(t['bad'])}</p>"), 404)
    return HTMLResponse(
        _page(lang, t["title"], f"<p>{html.escape(t['done'].format(brand=brand or 'SMS'))}</p>"),
        headers={"Cache-Control": "no-store"},
    )
