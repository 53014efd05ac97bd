"""The provider interface and what every HTTP provider shares.

``Provider`` (``submit``, ``status``, ``send``), the message it sends (``Outgoing``) and what it
answers (``SendResult``, ``StatusResult``; what each status means: the package docstring).
``OneOff`` gives every provider ``send(to, sender, body)`` for one transactional SMS. The shared
HTTP reading: ``classify_exception`` (a transport error: surely not sent, or maybe sent),
``retry_for_status`` (429 and 5xx), ``retry_after_s`` (``Retry-After``), ``json_object``; and
the one ``httpx.Client`` a provider uses (``http_client``) with its request log silenced
(``quiet_http_client_logs``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx

if TYPE_CHECKING:
    from cloud_bridge.config import ProviderSettings

__all__ = [
    "SendStatus",
    "Action",
    "LookupStatus",
    "Outgoing",
    "SendResult",
    "StatusResult",
    "Provider",
    "OneOff",
    "retry_after_s",
    "classify_exception",
    "retry_for_status",
    "json_object",
    "quiet_http_client_logs",
    "http_client",
]

SendStatus = Literal["accepted", "retry", "failed", "unknown", "queued"]
Action = Literal["opt_out", "invalid_number"]
# What a status lookup (or a status callback) says about a send (StatusResult.status).
LookupStatus = Literal["accepted", "delivered", "undelivered", "failed", "not_found", "error"]


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

    status: LookupStatus
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


class OneOff:
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


def retry_for_status(r: httpx.Response) -> SendResult | None:
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


def json_object(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def quiet_http_client_logs() -> None:
    """The HTTP client's own loggers write every request URL (httpx at INFO) and connection
    details (httpcore at DEBUG); a provider URL may carry a phone number (Twilio's list
    filter), so they are kept at WARNING whatever the root level is."""
    for name in ("httpx", "httpcore", "hpack"):
        logging.getLogger(name).setLevel(logging.WARNING)


def http_client(settings: ProviderSettings) -> httpx.Client:
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
