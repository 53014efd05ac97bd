"""What every console page shares: templates, filters, the page renderer, navigation, scope
(the store scope's SQL is ``cloud_bridge.storage.scope``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from cloud_bridge.offers.decide import REASONS
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import stores_by_name
from cloud_bridge.web.auth import Forbidden, Principal

__all__ = [
    "TEMPLATES",
    "SECURITY_HEADERS",
    "page",
    "nav",
    "when",
    "mask_phone",
    "visible_stores",
    "check_store",
    "explain_decision",
]

TEMPLATES: Final = Jinja2Templates(directory=str(Path(__file__).parents[1] / "templates"))

# Console pages load nothing from elsewhere and run only our own script file.
SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

NAV: Final[list[tuple[str, str, tuple[str, ...]]]] = [
    ("/", "Overview", ("admin", "marketer", "owner")),
    ("/fleet", "Fleet", ("admin",)),
    ("/stores", "Stores", ("admin", "marketer", "owner")),
    ("/campaigns", "Campaigns", ("admin", "marketer")),
    ("/customers", "Customers", ("admin", "marketer")),
    ("/reports", "Reports", ("admin", "marketer", "owner")),
    ("/admin", "Admin", ("admin",)),
    ("/account", "Account", ("admin", "marketer", "owner")),
]


def nav(principal: Principal | None) -> list[tuple[str, str]]:
    if principal is None:
        return []
    return [(href, label) for href, label, roles in NAV if principal.role in roles]


def when(ts: float | None, tz: str | None = None) -> str:
    if not ts:
        return "-"
    if tz:
        return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_SPANS = ((90, 1, "s"), (5400, 60, "min"), (172800, 3600, "h"), (math.inf, 86400, "d"))


def _span(seconds: float, digits: int) -> str:
    """A non-negative duration in the largest unit that keeps it readable: ``42 s``, ``5 min``."""
    for limit, size, unit in _SPANS:
        if seconds < limit:
            return f"{seconds / size:.{digits}f} {unit}"
    raise AssertionError("unreachable: the last span is unbounded")


def ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    return _span(max(0, now - ts), 0) + " ago"


def offset(seconds: float | None) -> str:
    """A signed clock offset: ``+1.5 s``, ``−5.1 min``, ``+2.0 h``, ``−3.0 d`` (``-`` unknown)."""
    if seconds is None:
        return "-"
    return ("+" if seconds >= 0 else "\u2212") + _span(abs(seconds), 1)


def mask_phone(phone: str | None) -> str:
    """+79161234501 -> +7916*****01: enough to recognise, not enough to dial."""
    phone = phone or ""
    return phone[:5] + "*" * max(0, len(phone) - 7) + phone[-2:] if len(phone) > 7 else "***"


def num(x: float | int | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}".replace(",", " ")
    return f"{x:,.{digits}f}".replace(",", " ")


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f} %"


def ticks(text: str) -> Markup:
    """Escape ``text`` and show its `backticked` parts as code (commands in fixes)."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


TEMPLATES.env.filters["when"] = when
TEMPLATES.env.filters["ticks"] = ticks
TEMPLATES.env.filters["mask_phone"] = mask_phone
TEMPLATES.env.filters["num"] = num
TEMPLATES.env.filters["pct"] = pct
TEMPLATES.env.filters["offset"] = offset
TEMPLATES.env.globals["ago"] = ago


def page(
    request: Request,
    name: str,
    principal: Principal | None,
    context: dict[str, Any] | None = None,
    status: int = 200,
    title: str = "",
) -> HTMLResponse:
    """Render a console page with the navigation for this principal and security headers."""
    ctx = {
        "me": principal,
        "nav": nav(principal),
        "path": request.url.path,
        "title": title,
        "csrf": principal.csrf if principal else "",
        **(context or {}),
    }
    response = TEMPLATES.TemplateResponse(request, name, ctx, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def visible_stores(store: BridgeStore, principal: Principal) -> list[dict[str, Any]]:
    """The stores this principal may see (all of them unless a store owner)."""
    rows = stores_by_name(store)
    return [r for r in rows if principal.can_see(r["id"])]


def check_store(principal: Principal, store_id: str | None) -> None:
    """403 unless the principal may see this store (a store owner: only their own)."""
    if store_id is not None and not principal.can_see(store_id):
        raise Forbidden(f"store {store_id!r} is not one of yours")


def explain_decision(d: dict[str, Any]) -> dict[str, Any]:
    """A decision row as the console shows it: its reason in plain words and, for a send that
    did not reach the phone, why (the send's error)."""
    d["explanation"] = REASONS.get(d["reason"], d["reason"])
    if d.get("send_error") and d["reason"] not in ("sent", "delivered"):
        d["detail"] = d["send_error"]
    return d
