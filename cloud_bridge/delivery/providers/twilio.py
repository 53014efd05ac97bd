"""Twilio: the Messages API (form-encoded, Basic auth with the account SID and auth token).

Error codes we act on (``TWILIO_ERRORS``), every status of an outbound message as the delivery
state machine reads it (``TWILIO_STATUSES``, shared by the status lookup and the status
callback in ``delivery/inbound.py``), ``twilio_signature`` (``X-Twilio-Signature`` of
callbacks) and ``TwilioProvider`` (send, and reconcile an ambiguous send by sid or by the
message list; see its docstring).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx

from cloud_bridge.delivery.providers.base import (
    Action,
    LookupStatus,
    OneOff,
    Outgoing,
    SendResult,
    StatusResult,
    classify_exception,
    json_object,
    retry_after_s,
    retry_for_status,
)
from cloud_bridge.errors import ProviderConfigError

__all__ = [
    "TWILIO_ERRORS",
    "TWILIO_STATUSES",
    "TWILIO_MAX_VALIDITY_S",
    "TWILIO_LIST_SKEW_S",
    "twilio_signature",
    "twilio_status",
    "TwilioProvider",
]

# Twilio error codes we act on (https://www.twilio.com/docs/api/errors).
TWILIO_ERRORS: dict[int, str] = {
    20003: "authentication failed (check account SID and auth token)",
    20429: "too many requests",
    21211: "invalid 'To' phone number",
    21408: "permission to send to this region is not enabled",
    21606: "'From' cannot send to this number",
    21610: "the recipient replied STOP (unsubscribed)",
    21612: "cannot route to this number",
    21614: "'To' is not a mobile number",
    30001: "queue overflow",
    30002: "account suspended",
    30003: "unreachable destination handset",
    30004: "message blocked",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered by the carrier",
    30008: "unknown error",
}
_TWILIO_INVALID = {21211, 21614, 30005, 30006}
# Every status Twilio's Message resource defines, as the delivery state machine reads it. The
# status lookup and the status callback both use this table. None: not a status of an outbound
# message (the lookup answers "error", the callback is ignored).
TWILIO_STATUSES: Final[dict[str, LookupStatus | None]] = {
    "queued": "accepted",
    "accepted": "accepted",  # taken by a Messaging Service
    "scheduled": "accepted",  # to go out at its SendAt
    "sending": "accepted",
    "sent": "accepted",  # handed to the carrier; no delivery receipt yet
    "delivered": "delivered",
    "read": "delivered",  # WhatsApp/RCS: read by the recipient
    "undelivered": "undelivered",
    "partially_delivered": "undelivered",  # some parts never arrived; it went out, never resend
    "failed": "failed",
    "canceled": "failed",  # a scheduled message canceled before it went out; never resend
    "receiving": None,  # inbound statuses: an incoming message's sid is never ours
    "received": None,
}
# Twilio's documented range of ValidityPeriod (error 21624 outside it): 1 .. 36 000 s (10 h).
TWILIO_MAX_VALIDITY_S: Final = 36000
# How far before our attempt a message Twilio lists may be dated (clock skew between us and
# Twilio): a message to the same number inside this window with another text makes absence
# unprovable.
TWILIO_LIST_SKEW_S: Final = 300.0


def _twilio_reason(code: int | None, fallback: str) -> str:
    if code is None:
        return fallback
    return f"{code} {TWILIO_ERRORS.get(code, fallback)}"


def twilio_signature(
    url: str, params: Iterable[tuple[str, str]] | Mapping[str, str], token: str
) -> str:
    """Twilio's ``X-Twilio-Signature``: base64(HMAC-SHA1(token, url + sorted key+value pairs))."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    data = url + "".join(k + v for k, v in sorted(pairs))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _twilio_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def twilio_status(
    status: str, sid: str | None = None, error_code: str | int | None = None
) -> StatusResult | None:
    """One Twilio status (lookup or callback) as a StatusResult; None if it is not one of an
    outbound message's statuses (``TWILIO_STATUSES``)."""
    state = TWILIO_STATUSES.get(status)
    if state is None:
        return None
    code = int(str(error_code)) if str(error_code or "").isdigit() else None
    if state in ("accepted", "delivered"):
        return StatusResult(state, provider_id=sid)
    action: Action | None = "invalid_number" if code in _TWILIO_INVALID else None
    if code == 21610:
        action = "opt_out"
    return StatusResult(
        state,
        provider_id=sid,
        error=_twilio_reason(code, status.replace("_", " ")),
        code=None if code is None else str(code),
        action=action,
    )


class TwilioProvider(OneOff):
    """Twilio Messages API: ``POST /2010-04-01/Accounts/{sid}/Messages.json``.

    Twilio has no idempotency key, and its list hides nothing but filters badly: a message still
    queued has no ``date_sent``, so a ``DateSent`` filter misses it. A send without a sid is
    looked up in the full list of messages to its number (no date filter, every page, up to
    ``max_pages``); it is "not found" only if no message to that number was created since
    shortly before the attempt, and only ``absent_after_s`` after the attempt (a request still
    in flight at Twilio has finished by then). Any other message to that number in the window
    (Smart Encoding or link shortening may have changed our text) makes absence unprovable:
    "error", never a second send. The status callback, which carries our key, settles it."""

    name = "twilio"
    can_reconcile = True
    absent_after_s = 60.0
    max_pages = 5

    def __init__(
        self,
        client: httpx.Client,
        account_sid: str,
        auth_token: str,
        messaging_service_sid: str | None = None,
        base_url: str = "https://api.twilio.com",
        absent_after_s: float = 60.0,
    ) -> None:
        if not account_sid or not auth_token:
            raise ProviderConfigError("twilio needs provider.twilio.account_sid and auth_token")
        self.client = client
        self.account_sid = account_sid
        self.auth = (account_sid, auth_token)
        self.messaging_service_sid = messaging_service_sid
        self.absent_after_s = absent_after_s
        self.host = base_url.rstrip("/")
        self.base = f"{self.host}/2010-04-01/Accounts/{account_sid}"
        self.account = f"twilio:{account_sid}"

    def submit(self, msg: Outgoing) -> SendResult:
        data = {"To": msg.to, "Body": msg.body}
        if self.messaging_service_sid:
            data["MessagingServiceSid"] = self.messaging_service_sid
        else:
            data["From"] = msg.sender
        if msg.status_callback:
            data["StatusCallback"] = msg.status_callback
        if msg.validity_s:
            # The offer's remaining life, within Twilio's documented limit.
            data["ValidityPeriod"] = str(min(TWILIO_MAX_VALIDITY_S, max(1, int(msg.validity_s))))
        try:
            r = self.client.post(f"{self.base}/Messages.json", data=data, auth=self.auth)
        except httpx.HTTPError as exc:
            return classify_exception(exc)
        return self.classify(r)

    def classify(self, r: httpx.Response) -> SendResult:
        body = json_object(r)
        code = body.get("code") if isinstance(body.get("code"), int) else None
        if r.status_code in (200, 201) and body.get("sid"):
            error_code = body.get("error_code")
            if body.get("status") == "failed":
                return self._refused(int(error_code) if error_code else None, "failed at once")
            return SendResult("accepted", provider_id=str(body["sid"]))
        if r.status_code == 429 or code == 20429:
            return SendResult(
                "retry",
                error=_twilio_reason(20429, "too many requests"),
                retry_after=retry_after_s(r.headers.get("Retry-After")),
                code="20429",
            )
        retry = retry_for_status(r)
        if retry is not None:
            return retry
        if 200 <= r.status_code < 300:
            return SendResult("unknown", error=f"HTTP {r.status_code} without a message sid")
        return self._refused(code, f"HTTP {r.status_code}")

    @staticmethod
    def _refused(code: int | None, fallback: str) -> SendResult:
        action: Action | None = None
        if code == 21610:
            action = "opt_out"
        elif code in _TWILIO_INVALID:
            action = "invalid_number"
        return SendResult(
            "failed",
            error=_twilio_reason(code, fallback),
            code=None if code is None else str(code),
            action=action,
        )

    @staticmethod
    def _status_of(m: dict[str, Any]) -> StatusResult:
        sid = str(m.get("sid") or "") or None
        status = str(m.get("status") or "")
        found = twilio_status(status, sid, m.get("error_code"))
        if found is None:
            return StatusResult("error", provider_id=sid, error=f"Twilio status {status!r}")
        return found

    def status(self, msg: Outgoing) -> StatusResult:
        try:
            if msg.provider_id:
                r = self.client.get(f"{self.base}/Messages/{msg.provider_id}.json", auth=self.auth)
                if r.status_code == 404:
                    return StatusResult("not_found")
                if r.status_code != 200:
                    return StatusResult("error", error=f"status API HTTP {r.status_code}")
                return self._status_of(json_object(r))
            return self._lookup_without_sid(msg)
        except httpx.HTTPError as exc:
            return StatusResult("error", error=f"status API: {type(exc).__name__}")

    def _lookup_without_sid(self, msg: Outgoing) -> StatusResult:
        """Our message among every message Twilio lists for its number (see the class)."""
        since = msg.attempt_at - TWILIO_LIST_SKEW_S
        url: str | None = f"{self.base}/Messages.json"
        params: dict[str, str] | None = {"To": msg.to, "PageSize": "1000"}
        others = 0
        for _ in range(self.max_pages):
            assert url is not None
            r = self.client.get(url, params=params, auth=self.auth)
            if r.status_code != 200:
                return StatusResult("error", error=f"status API HTTP {r.status_code}")
            page = json_object(r)
            for m in page.get("messages") or []:
                if str(m.get("direction") or "").startswith("inbound"):
                    continue
                created = _twilio_time(m.get("date_created"))
                if created is not None and created < since:
                    continue
                if m.get("body") == msg.body:
                    return self._status_of(m)
                others += 1
            nxt = page.get("next_page_uri")
            if not nxt:
                break
            url, params = f"{self.host}{nxt}", None
        else:
            return StatusResult(
                "error", error=f"more than {self.max_pages} pages of messages to this number"
            )
        if others:
            return StatusResult(
                "error",
                error=f"{others} other message(s) to this number at that time: absence cannot "
                "be proven; waiting for the status callback",
            )
        if time.time() - msg.attempt_at < self.absent_after_s:
            return StatusResult(
                "error",
                error=f"not listed yet; absence is believed {self.absent_after_s:.0f} s after "
                "the attempt",
            )
        return StatusResult("not_found", error="Twilio lists no message to this number since")
