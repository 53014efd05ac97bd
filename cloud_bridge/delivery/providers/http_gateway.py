"""A generic HTTP SMS gateway: a URL, a method, a body template and a success rule.

Placeholders ``{to} {sender} {body} {key} {id} {validity_s} {provider_id}`` are filled escaped for
where they go (``fill``); ``GatewayRules`` is what ``[provider.http]`` configures.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from cloud_bridge.delivery.providers.base import (
    OneOff,
    Outgoing,
    SendResult,
    StatusResult,
    classify_exception,
    retry_after_s,
    retry_for_status,
)
from cloud_bridge.errors import ProviderConfigError

__all__ = [
    "GatewayRules",
    "HttpGatewayProvider",
    "fill",
]

log = logging.getLogger(__name__)

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


class HttpGatewayProvider(OneOff):
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
        server = retry_for_status(r) if r.status_code >= 500 else None
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
