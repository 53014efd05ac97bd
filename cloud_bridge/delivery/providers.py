"""SMS providers behind one small interface, each on an injected ``httpx.Client``.

``submit(Outgoing) -> SendResult`` classifies the provider's answer into what the delivery state
machine needs to know:

* ``accepted``: the provider took the message (with its id).
* ``retry``: the provider surely did not take it: the connection was never made (refused, DNS,
  connect timeout), or it answered 429/503 (honour ``Retry-After``) or 500/502 (an error before
  processing). Safe to send again.
* ``failed``: the provider refused it for good (bad number, opted out, forbidden text, 501/505:
  a request it cannot serve); the ``action`` says what else must happen (``opt_out``: revoke
  consent; ``invalid_number``: flag).
* ``unknown``: the request may have been processed but we did not see the answer (read timeout,
  dropped connection, 504 and every other 5xx, SMSC 9 "identical request", SMSC 4 "address
  blocked", after which an earlier identical request may have gone out). Never sent again
  blindly: the deliverer asks ``status(Outgoing)`` (after ``retry_after``) or waits for a
  receipt.

``status(Outgoing) -> StatusResult`` asks the provider's status API about one message, by its
provider id when we have one, else by our own key (SMSC's client-chosen ``id``) or by recipient,
body and time (Twilio's message list). ``not_found`` is returned only when the provider
positively shows it does not have the message (what allows a second send); anything less
certain is ``error`` (ask again later, never resend). Twilio's and SMSC's statuses are mapped by
one table each (``TWILIO_STATUSES``, ``SMSC_STATUS_STATES``), used by the status lookup and by
the status callbacks alike.

Credentials and phone numbers travel in request bodies or headers (Twilio: Basic auth and form
bodies; SMSC: POST bodies for send.php and status.php), except Twilio's message list, whose
``To`` filter exists only as a query parameter. The HTTP client's own request log (httpx at
INFO writes every URL) is silenced by ``quiet_http_client_logs``.

Providers: Twilio (Messages API, form-encoded, Basic auth; ``twilio_signature`` checks
callbacks), SMSC.ru (HTTP API, alphanumeric senders, error codes 1-9, status codes), a generic
HTTP gateway (URL, method, body template, success rule) and the sandbox that records messages in
the store for the demo. ``send(to, sender, body)`` sends one transactional SMS directly (the
enrolment code). Phone numbers and texts are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal, Protocol

import httpx

from cloud_bridge.errors import ProviderConfigError
from cloud_bridge.storage.sends import sandbox_has
from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "Outgoing",
    "SendResult",
    "StatusResult",
    "Provider",
    "SandboxProvider",
    "TwilioProvider",
    "SmscProvider",
    "HttpGatewayProvider",
    "TWILIO_ERRORS",
    "SMSC_ERRORS",
    "SMSC_STATUSES",
    "SMSC_STATUS_STATES",
    "TWILIO_STATUSES",
    "TWILIO_MAX_VALIDITY_S",
    "classify_exception",
    "quiet_http_client_logs",
    "smsc_status",
    "twilio_status",
    "retry_after_s",
    "twilio_signature",
    "make_provider",
]

log = logging.getLogger(__name__)

SendStatus = Literal["accepted", "retry", "failed", "unknown", "queued"]
Action = Literal["opt_out", "invalid_number"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One SMS to send: our unique key for the intent and what the provider needs."""

    key: str
    to: str
    sender: str
    body: str
    numeric_id: int = 0  # SMSC's client-chosen message id (32-bit)
    validity_s: int | None = None  # how long the network may keep trying
    status_callback: str | None = None
    attempt_at: float = 0.0  # wall time the (last) attempt started: reconciliation window
    provider_id: str | None = None

    def __repr__(self) -> str:  # never a phone number or a text in a log or traceback
        return f"Outgoing(key={self.key!r}, provider_id={self.provider_id!r})"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the provider said (see the module docstring); ``error`` is the reason in words."""

    status: SendStatus
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    code: str | None = None
    action: Action | None = None
    parts: int | None = None


@dataclass(frozen=True, slots=True)
class StatusResult:
    """A status lookup: accepted (still on its way), delivered, undelivered, failed,
    not_found (the provider never took it), or error (could not ask; try later)."""

    status: Literal["accepted", "delivered", "undelivered", "failed", "not_found", "error"]
    provider_id: str | None = None
    error: str | None = None
    code: str | None = None
    action: Action | None = None


class Provider(Protocol):
    name: str  # provider kind, stored with each send
    account: str  # rate-limit key: one token bucket per provider account
    can_reconcile: bool  # has a status API for ambiguous outcomes

    def submit(self, msg: Outgoing) -> SendResult: ...

    def status(self, msg: Outgoing) -> StatusResult: ...

    def send(self, to: str, sender: str, body: str) -> SendResult: ...


class _OneOff:
    """``send(to, sender, body)``: one transactional SMS outside the send outbox (enrolment
    codes). "retry" comes back as "failed" (it was surely not sent); nothing is retried."""

    def submit(self, msg: Outgoing) -> SendResult:  # pragma: no cover - every provider has one
        raise NotImplementedError

    def send(self, to: str, sender: str, body: str) -> SendResult:
        key = "tx-" + uuid.uuid4().hex
        result = self.submit(
            Outgoing(key=key, to=to, sender=sender, body=body, attempt_at=time.time())
        )
        if result.status == "retry":
            return SendResult("failed", error=result.error, code=result.code)
        return result


# -- shared HTTP classification ----------------------------------------------------------------


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_exception(exc: httpx.HTTPError) -> SendResult:
    """A transport error: was the request surely not sent (retry) or maybe sent (unknown)?"""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return SendResult("retry", error=f"not sent: {name} (no connection)")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.LocalProtocolError):
        return SendResult("failed", error=f"not sent: {name} (check the provider URL)")
    # Read/write timeouts, resets and dropped connections: the provider may have the message.
    return SendResult("unknown", error=f"no answer: {name}")


def _retry_for_status(r: httpx.Response) -> SendResult | None:
    """What a 429 or 5xx says about a send request (None for other statuses):

    * 429, 503: busy, not processed: retry (honour ``Retry-After``);
    * 500, 502: an error before processing: retry;
    * 501, 505: the provider cannot serve this request at all: failed (a configuration error);
    * 504 and every other 5xx (507, 508, 520-599 ...): maybe processed: unknown, ask.
    """
    status = r.status_code
    if status in (429, 503):
        return SendResult(
            "retry",
            error=f"HTTP {status} (provider busy)",
            retry_after=retry_after_s(r.headers.get("Retry-After")),
            code=str(status),
        )
    if status in (500, 502):
        return SendResult("retry", error=f"HTTP {status} (provider error before processing)")
    if status in (501, 505):
        return SendResult(
            "failed", error=f"HTTP {status} (the provider cannot serve this request)",
            code=str(status),
        )  # fmt: skip
    if 500 <= status < 600:
        return SendResult("unknown", error=f"HTTP {status} (server error: maybe processed)")
    return None


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# -- sandbox -------------------------------------------------------------------------------------


class SandboxProvider(_OneOff):
    """Accepts every message and records it in the bridge store's ``sandbox_messages``."""

    name = "sandbox"
    account = "sandbox"
    can_reconcile = True
    default_rate_per_s = 1000.0  # no network, no operator: pace only when configured

    def __init__(self, store: BridgeStore) -> None:
        self.store = store

    @staticmethod
    def _sid(key: str) -> str:
        return "SB" + hashlib.sha256(key.encode()).hexdigest()[:32]

    def submit(self, msg: Outgoing) -> SendResult:
        sid = self._sid(msg.key)
        try:
            self.store.sandbox_record(sid, msg.to, msg.sender, msg.body, time.time())
        except Exception as exc:  # sqlite3.IntegrityError: this key was recorded before
            if sandbox_has(self.store, sid):
                return SendResult("accepted", provider_id=sid)
            raise exc
        return SendResult("accepted", provider_id=sid)

    def status(self, msg: Outgoing) -> StatusResult:
        sid = msg.provider_id or self._sid(msg.key)
        if sandbox_has(self.store, sid):
            return StatusResult("accepted", provider_id=sid)
        return StatusResult("not_found")


# -- Twilio --------------------------------------------------------------------------------------

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
TWILIO_STATUSES: Final[dict[str, str | None]] = {
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
        return StatusResult(state, provider_id=sid)  # type: ignore[arg-type]
    action: Action | None = "invalid_number" if code in _TWILIO_INVALID else None
    if code == 21610:
        action = "opt_out"
    return StatusResult(
        state,  # type: ignore[arg-type]
        provider_id=sid,
        error=_twilio_reason(code, status.replace("_", " ")),
        code=None if code is None else str(code),
        action=action,
    )


class TwilioProvider(_OneOff):
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
        body = _json(r)
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
        retry = _retry_for_status(r)
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
                return self._status_of(_json(r))
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
            page = _json(r)
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


# -- SMSC.ru -------------------------------------------------------------------------------------

# send.php error codes (https://smsc.ru/api/http/send/sms/).
SMSC_ERRORS: dict[int, str] = {
    1: "parameter error",
    2: "invalid login or password",
    3: "insufficient funds",
    4: "address temporarily blocked (frequent errors or repeated requests)",
    5: "invalid date format",
    6: "message forbidden (by text or sender name)",
    7: "invalid phone number format",
    8: "message cannot be delivered to this number",
    9: "identical send request repeated within a minute",
}
# status.php error codes: 3 is "message not found" (a single-message lookup; a multiple one
# answers status -3 instead), 4 the same address block as send.php's, 9 too many lookups of
# one message within a minute.
SMSC_STATUS_ERRORS: dict[int, str] = {
    1: "parameter error",
    2: "invalid login or password",
    3: "message not found",
    4: "address temporarily blocked",
    5: "error deleting the message",
    9: "more than five lookups of one message within a minute",
}
# status.php / callback message statuses.
SMSC_STATUSES: dict[int, str] = {
    -3: "message not found",
    -2: "stopped",
    -1: "waiting to be sent",
    0: "passed to the operator",
    1: "delivered",
    2: "read",
    3: "expired",
    4: "link followed",
    20: "cannot be delivered",
    22: "invalid number",
    23: "message forbidden",
    24: "insufficient funds",
    25: "unavailable number",
}
# Every SMSC status as the delivery state machine reads it (status lookup and callback alike).
# A code not listed here is not guessed at: the lookup answers "error", the callback is ignored.
SMSC_STATUS_STATES: Final[dict[int, str]] = {
    -3: "not_found",
    -2: "failed",  # stopped (by the account or SMSC) before it went out; never resend
    -1: "accepted",
    0: "accepted",
    1: "delivered",
    2: "delivered",
    4: "delivered",  # the recipient followed a link in it
    3: "undelivered",  # expired in the network
    20: "undelivered",
    22: "failed",
    23: "failed",
    24: "failed",
    25: "failed",
}
_SMSC_INVALID = {22, 25}
# SMSC's FAQ: an address is blocked for 10 (frequent errors) or 30 minutes. A send refused with
# error 4 is asked about, not resent, once the shorter block is over.
SMSC_BLOCK_S: Final = 600.0


def smsc_status(code: int, pid: str | None = None) -> StatusResult | None:
    """One SMSC status code (lookup or callback) as a StatusResult; None if not documented."""
    state = SMSC_STATUS_STATES.get(code)
    if state is None:
        return None
    reason = f"SMSC status {code}: {SMSC_STATUSES[code]}"
    if state == "not_found":
        return StatusResult("not_found", error=reason)
    if state in ("accepted", "delivered"):
        return StatusResult(state, provider_id=pid)  # type: ignore[arg-type]
    return StatusResult(
        state,  # type: ignore[arg-type]
        provider_id=pid,
        error=reason,
        code=str(code),
        action="invalid_number" if code in _SMSC_INVALID else None,
    )


def smsc_validity(seconds: int | None) -> str | None:
    """SMSC's ``valid`` parameter (hh:mm, 00:01..24:00)."""
    if not seconds:
        return None
    minutes = min(24 * 60, max(1, -(-int(seconds) // 60)))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class SmscProvider(_OneOff):
    """SMSC.ru HTTP API: ``/sys/send.php`` and ``/sys/status.php`` with ``fmt=3`` (JSON), both by
    POST (SMSC takes GET or POST), so the password and the phone never sit in a URL."""

    name = "smsc"
    can_reconcile = True
    block_s = SMSC_BLOCK_S

    def __init__(
        self,
        client: httpx.Client,
        login: str,
        password: str,
        base_url: str = "https://smsc.ru",
        duplicate_window_s: float = 60.0,
    ) -> None:
        if not login or not password:
            raise ProviderConfigError("smsc needs provider.smsc.login and password")
        self.client = client
        self.login = login
        self.password = password
        self.base = base_url.rstrip("/")
        self.account = f"smsc:{login}"
        # SMSC refuses an identical send within a minute (error 9): ask after that.
        self.duplicate_window_s = duplicate_window_s

    def _auth(self) -> dict[str, str]:
        return {"login": self.login, "psw": self.password, "fmt": "3", "charset": "utf-8"}

    def submit(self, msg: Outgoing) -> SendResult:
        data = {
            **self._auth(),
            "phones": msg.to,
            "mes": msg.body,
            "sender": msg.sender,
            "id": str(msg.numeric_id),
            "cost": "3",
        }
        valid = smsc_validity(msg.validity_s)
        if valid:
            data["valid"] = valid
        try:
            r = self.client.post(f"{self.base}/sys/send.php", data=data)
        except httpx.HTTPError as exc:
            return classify_exception(exc)
        retry = _retry_for_status(r)
        if retry is not None:
            return retry
        body = _json(r)
        if r.status_code != 200 or not body:
            return SendResult("unknown", error=f"HTTP {r.status_code} without a JSON answer")
        if "error_code" in body:
            return self._error(_int(body["error_code"]))
        if "id" in body:
            cnt = body.get("cnt")
            return SendResult(
                "accepted",
                provider_id=str(body["id"]),
                parts=int(cnt) if isinstance(cnt, int | str) and str(cnt).isdigit() else None,
            )
        return SendResult("unknown", error="answer without id or error_code")

    def send(self, to: str, sender: str, body: str) -> SendResult:
        """A one-off text (an enrolment code, unique each time): error 4 refused this request
        and no identical one came before it, so it surely was not sent."""
        result = super().send(to, sender, body)
        if result.status == "unknown" and result.code == "4":
            return SendResult("failed", error=result.error, code="4")
        return result

    def _error(self, code: int | None) -> SendResult:
        reason = f"SMSC {code}: {SMSC_ERRORS.get(code or 0, 'unknown error')}"
        if code == 4:
            # The address is blocked; this request was not processed, but the block may be for
            # repeated identical requests, so an earlier copy may have gone out. Wait out the
            # block, then ask; never resend blindly.
            return SendResult("unknown", error=reason, code="4", retry_after=self.block_s)
        if code == 9:
            # "Identical request within a minute": an earlier identical request reached SMSC,
            # so the message may be on its way. Ask (after the window), never resend blindly.
            return SendResult(
                "unknown", error=reason, code="9", retry_after=self.duplicate_window_s
            )
        if code is None:
            return SendResult("unknown", error="SMSC answered an error without a code")
        action: Action | None = "invalid_number" if code in (7, 8) else None
        return SendResult("failed", error=reason, code=str(code), action=action)

    def status(self, msg: Outgoing) -> StatusResult:
        data = {**self._auth(), "phone": msg.to, "id": str(msg.numeric_id)}
        try:
            r = self.client.post(f"{self.base}/sys/status.php", data=data)
        except httpx.HTTPError as exc:
            return StatusResult("error", error=f"status API: {type(exc).__name__}")
        body = _json(r)
        if r.status_code != 200 or not body:
            return StatusResult("error", error=f"status API HTTP {r.status_code}")
        if "error_code" in body:
            code = _int(body["error_code"])
            reason = f"SMSC status error {code}: {SMSC_STATUS_ERRORS.get(code or 0, 'unknown')}"
            if code == 3:  # documented "message not found" of a single-message lookup
                return StatusResult("not_found", error=reason, code="3")
            return StatusResult("error", error=reason, code=None if code is None else str(code))
        code = _int(body.get("status"))
        if code is None:
            # A missing or garbled status is not "not found": ask again later.
            return StatusResult("error", error="SMSC status answer without a status")
        found = smsc_status(code, str(msg.numeric_id))
        if found is None:
            return StatusResult("error", error=f"SMSC status {code}: not documented")
        return found


def _int(value: Any) -> int | None:
    """An integer field of a provider's JSON (number or numeric string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


# -- generic HTTP gateway --------------------------------------------------------------------------

_PLACEHOLDERS = ("to", "sender", "body", "key", "id", "validity_s", "provider_id")


def _escape(value: str, how: str) -> str:
    if how == "json":
        return json.dumps(value, ensure_ascii=False)[1:-1]
    if how == "form":
        return urllib.parse.quote_plus(value)
    if how == "url":
        return urllib.parse.quote(value, safe="")
    return value


def fill(template: str, values: Mapping[str, str], how: str) -> str:
    """Replace ``{name}`` placeholders (only ours; other braces, e.g. JSON's, stay)."""
    out = template
    for name in _PLACEHOLDERS:
        if "{" + name + "}" in out:
            out = out.replace("{" + name + "}", _escape(values.get(name, ""), how))
    return out


@dataclass(frozen=True)
class GatewayRules:
    """How to talk to a generic HTTP SMS gateway."""

    url: str
    method: str = "POST"
    body_format: Literal["json", "form", "none"] = "json"
    body_template: str = (
        '{"to": "{to}", "from": "{sender}", "text": "{body}", "reference": "{key}"}'
    )
    headers: Mapping[str, str] = field(default_factory=dict)
    success_status: tuple[int, ...] = (200, 201, 202)
    success_regex: str | None = None
    id_regex: str | None = r'"(?:id|message_id|messageId)"\s*:\s*"?([A-Za-z0-9_.:-]+)'
    retry_status: tuple[int, ...] = (429, 500, 502, 503)
    status_url: str | None = None
    delivered_regex: str | None = r"(?i)delivered"
    failed_regex: str | None = r"(?i)failed|undeliverable|rejected"


class HttpGatewayProvider(_OneOff):
    """Any HTTP SMS API described by a URL, a method, a body template and a success rule."""

    name = "http"

    def __init__(self, client: httpx.Client, rules: GatewayRules, account: str = "") -> None:
        if not rules.url:
            raise ProviderConfigError("http gateway needs provider.http.url")
        for pattern in (
            rules.success_regex,
            rules.id_regex,
            rules.delivered_regex,
            rules.failed_regex,
        ):
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ProviderConfigError(f"http gateway regex {pattern!r}: {exc}") from None
        self.client = client
        self.rules = rules
        self.account = account or f"http:{urllib.parse.urlsplit(rules.url).netloc}"
        for name, template in (("url", rules.url), ("status_url", rules.status_url or "")):
            private = [p for p in ("to", "body", "sender") if "{" + p + "}" in template]
            if private:
                log.warning(
                    "provider.http.%s puts {%s} in the URL: phone numbers or texts will travel "
                    "in URLs (and in any proxy's log); put them in the body if the gateway can",
                    name,
                    "}, {".join(private),
                )
        self.can_reconcile = bool(rules.status_url)

    @staticmethod
    def _values(msg: Outgoing) -> dict[str, str]:
        return {
            "to": msg.to,
            "sender": msg.sender,
            "body": msg.body,
            "key": msg.key,
            "id": str(msg.numeric_id),
            "validity_s": str(msg.validity_s or ""),
            "provider_id": msg.provider_id or "",
        }

    def submit(self, msg: Outgoing) -> SendResult:
        rules = self.rules
        values = self._values(msg)
        url = fill(rules.url, values, "url")
        content = (
            None
            if rules.body_format == "none"
            else fill(rules.body_template, values, rules.body_format)
        )
        headers = dict(rules.headers)
        if rules.body_format == "json":
            headers.setdefault("Content-Type", "application/json")
        elif rules.body_format == "form":
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            r = self.client.request(rules.method, url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            return classify_exception(exc)
        if r.status_code in rules.success_status and (
            rules.success_regex is None or re.search(rules.success_regex, r.text)
        ):
            match = re.search(rules.id_regex, r.text) if rules.id_regex else None
            return SendResult("accepted", provider_id=match.group(1) if match else None)
        if r.status_code in rules.retry_status:
            return SendResult(
                "retry",
                error=f"HTTP {r.status_code} from the gateway",
                retry_after=retry_after_s(r.headers.get("Retry-After")),
                code=str(r.status_code),
            )
        if r.status_code in rules.success_status:
            # A 2xx that fails the success rule: we cannot tell.
            return SendResult("unknown", error=f"HTTP {r.status_code}: answer not understood")
        server = _retry_for_status(r) if r.status_code >= 500 else None
        if server is not None:  # 5xx not in retry_status: 504 and the rest maybe processed
            return server
        return SendResult(
            "failed", error=f"HTTP {r.status_code} from the gateway", code=str(r.status_code)
        )

    def status(self, msg: Outgoing) -> StatusResult:
        rules = self.rules
        if not rules.status_url:
            return StatusResult("error", error="no status API configured: waiting for a receipt")
        try:
            headers = {k: v for k, v in rules.headers.items() if k.lower() != "content-type"}
            r = self.client.get(fill(rules.status_url, self._values(msg), "url"), headers=headers)
        except httpx.HTTPError as exc:
            return StatusResult("error", error=f"status API: {type(exc).__name__}")
        if r.status_code == 404:
            return StatusResult("not_found")
        if r.status_code != 200:
            return StatusResult("error", error=f"status API HTTP {r.status_code}")
        match = re.search(rules.id_regex, r.text) if rules.id_regex else None
        pid = msg.provider_id or (match.group(1) if match else None)
        if rules.delivered_regex and re.search(rules.delivered_regex, r.text):
            return StatusResult("delivered", provider_id=pid)
        if rules.failed_regex and re.search(rules.failed_regex, r.text):
            return StatusResult("failed", provider_id=pid, error="gateway reports failure")
        return StatusResult("accepted", provider_id=pid)


# -- factory -------------------------------------------------------------------------------------


def make_provider(
    settings: Any, store: BridgeStore, client: httpx.Client | None = None
) -> Provider:
    """The configured provider. ``settings`` is a ``ProviderSettings`` (or just its kind, as a
    string, for the sandbox); ``client`` is the shared httpx.Client (made from the settings'
    timeouts when not given)."""
    kind = settings if isinstance(settings, str) else settings.kind
    if kind == "sandbox":
        return SandboxProvider(store)
    if isinstance(settings, str):
        raise ProviderConfigError(f"SMS provider {kind!r} needs its settings")
    if client is None:
        client = http_client(settings)
    if kind == "twilio":
        t = settings.twilio
        return TwilioProvider(
            client,
            t.account_sid or "",
            t.auth_token_value() or "",
            t.messaging_service_sid,
            t.base_url,
            t.absent_after_s,
        )
    if kind == "smsc":
        s = settings.smsc
        return SmscProvider(client, s.login or "", s.password_value() or "", s.base_url)
    if kind == "http":
        h = settings.http
        headers = dict(h.headers)
        token = h.token_value()
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        rules = GatewayRules(
            url=h.url or "",
            method=h.method,
            body_format=h.body_format,
            body_template=h.body_template,
            headers=headers,
            success_status=tuple(h.success_status),
            success_regex=h.success_regex,
            id_regex=h.id_regex,
            retry_status=tuple(h.retry_status),
            status_url=h.status_url,
            delivered_regex=h.delivered_regex,
            failed_regex=h.failed_regex,
        )
        return HttpGatewayProvider(client, rules, account=h.account)
    raise ProviderConfigError(f"unknown SMS provider kind {kind!r}")


def quiet_http_client_logs() -> None:
    """The HTTP client's own loggers write every request URL (httpx at INFO) and connection
    details (httpcore at DEBUG); a provider URL may carry a phone number (Twilio's list
    filter), so they are kept at WARNING whatever the root level is."""
    for name in ("httpx", "httpcore", "hpack"):
        logging.getLogger(name).setLevel(logging.WARNING)


def http_client(settings: Any) -> httpx.Client:
    """The one httpx.Client a provider uses: bounded pool, explicit timeouts, no redirects."""
    quiet_http_client_logs()
    return httpx.Client(
        timeout=httpx.Timeout(
            settings.read_timeout_s,
            connect=settings.connect_timeout_s,
            pool=settings.connect_timeout_s,
        ),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        follow_redirects=False,
    )
