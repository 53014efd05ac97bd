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

One module each: ``base`` (the interface, results and the shared HTTP reading), ``sandbox``,
``twilio``, ``smsc``, ``http_gateway``; ``make_provider`` (here) builds the configured one.
Callers import from this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from cloud_bridge.delivery.providers.base import (
    Outgoing,
    Provider,
    SendResult,
    StatusResult,
    classify_exception,
    http_client,
    quiet_http_client_logs,
    retry_after_s,
)
from cloud_bridge.delivery.providers.http_gateway import GatewayRules, HttpGatewayProvider, fill
from cloud_bridge.delivery.providers.sandbox import SandboxProvider
from cloud_bridge.delivery.providers.smsc import (
    SMSC_STATUS_STATES,
    SmscProvider,
    smsc_status,
    smsc_validity,
)
from cloud_bridge.delivery.providers.twilio import (
    TWILIO_STATUSES,
    TwilioProvider,
    twilio_signature,
    twilio_status,
)
from cloud_bridge.errors import ProviderConfigError
from cloud_bridge.storage.store import BridgeStore

if TYPE_CHECKING:
    from cloud_bridge.config import ProviderSettings

__all__ = [
    "Outgoing",
    "SendResult",
    "StatusResult",
    "Provider",
    "SandboxProvider",
    "TwilioProvider",
    "SmscProvider",
    "HttpGatewayProvider",
    "GatewayRules",
    "SMSC_STATUS_STATES",
    "TWILIO_STATUSES",
    "classify_exception",
    "fill",
    "quiet_http_client_logs",
    "smsc_status",
    "smsc_validity",
    "twilio_status",
    "retry_after_s",
    "twilio_signature",
    "make_provider",
]


def make_provider(
    settings: ProviderSettings | str, store: BridgeStore, client: httpx.Client | None = None
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
