"""Console and API (FastAPI, server-rendered Jinja2 pages, no JS build step).

Every console page and ``/api`` route needs a login (session cookie) or an API token; a store
owner sees only their stores everywhere. Every router is a module-level ``APIRouter`` under
``cloud_bridge.web`` (console pages in ``web.console``, JSON APIs in ``web.api``, the enrolment
portal, inbound SMS webhooks, rosters) whose routes take what they need from
``cloud_bridge.web.dependencies``; ``create_app`` puts the store, settings and accounts on
``app.state`` and includes the routers. The non-HTTP logic stays in its concern's package.

The client's address and scheme (rate limits, consent proof, audit, Secure cookies) are the
socket's, unless the peer is a reverse proxy listed in ``web.trusted_proxies``: then they come
from its ``X-Forwarded-For`` / ``X-Forwarded-Proto`` (``ForwardedHeaders``). uvicorn's own
proxy-header handling (which trusts loopback) is off wherever the bridge starts uvicorn.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware

from cloud_bridge import __version__
from cloud_bridge.config import BridgeSettings, WebSettings
from cloud_bridge.storage.overview import overview_rows, ping
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web import enrol, inbound
from cloud_bridge.web.api import campaigns as campaigns_api
from cloud_bridge.web.api import pairing, releases, rosters
from cloud_bridge.web.auth import (
    Accounts,
    AuthError,
    LoginRequired,
    LoginThrottled,
    Principal,
)
from cloud_bridge.web.console import console_routers
from cloud_bridge.web.console.common import (
    TEMPLATES,
    explain_decision,
    mask_phone,
    page,
)
from cloud_bridge.web.dependencies import Anyone, Store

__all__ = ["ForwardedHeaders", "create_app", "mask_phone", "overview", "router", "TEMPLATES"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "console" / "static"


def overview(
    store: BridgeStore, limit: int = 50, principal: Principal | None = None
) -> dict[str, Any]:
    """Everything the overview page and its API show (only the principal's stores)."""
    rows = overview_rows(store, None if principal is None else principal.scope, limit)
    for d in rows["decisions"]:
        explain_decision(d)
    return rows


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IPAddress | None:
    """An address from a forwarded hop: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ForwardedHeaders:
    """ASGI middleware: the client address and scheme from ``X-Forwarded-For`` and
    ``X-Forwarded-Proto``, believed only when the socket peer is a trusted proxy.

    The address is the rightmost hop that is not itself a trusted proxy (each proxy appends
    the address it saw, so everything left of that is the client's own word); a hop that is
    not an IP address stops the walk and the peer's address stays."""

    def __init__(self, app: Any, trusted: list[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(t, strict=False) for t in trusted]
        self.warned = False  # about forwarded headers from a peer not in the list

    def trusted(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip in net for net in self.networks)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        client = scope.get("client")
        if scope["type"] not in ("http", "websocket") or not client:
            pass
        elif not self.trusted(_ip(str(client[0]))):
            if not self.warned and any(n == b"x-forwarded-for" for n, _ in scope["headers"]):
                self.warned = True  # once: a proxy sends it on every request
                log.warning(
                    "X-Forwarded-For from %s ignored: it is not in web.trusted_proxies (if it "
                    "is your reverse proxy, add it there, or every client counts as %s)",
                    client[0],
                    client[0],
                )
        else:
            scope = dict(scope)
            hops: list[str] = []
            proto = ""
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    hops += value.decode("latin-1").split(",")
                elif name == b"x-forwarded-proto":
                    proto = value.decode("latin-1").split(",")[-1].strip().lower()
            for hop in reversed(hops):
                ip = _ip(hop)
                if ip is None:
                    break
                scope["client"] = (str(ip), 0)
                if not self.trusted(ip):
                    break
            if proto in ("http", "https"):
                secure = proto == "https"
                if scope["type"] == "websocket":
                    scope["scheme"] = "wss" if secure else "ws"
                else:
                    scope["scheme"] = proto
        await self.app(scope, receive, send)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


# The overview, health and static files; the other routers live in their own modules.
router = APIRouter()


@router.get("/console/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return Response(status_code=404)
    return FileResponse(path, headers={"Cache-Control": "max-age=300"})


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request, me: Anyone, store: Store) -> HTMLResponse:
    return page(
        request,
        "overview.html",
        me,
        {"o": overview(store, principal=me), "now": time.time()},
        title="Overview",
    )


@router.get("/healthz", tags=["health"])
def healthz(store: Store) -> dict[str, str]:
    """Liveness: the store answers."""
    ping(store)
    return {"status": "ok"}


@router.get("/api/overview", tags=["overview"])
def api_overview(me: Anyone, store: Store) -> dict[str, Any]:
    """Counts, sensors, latest decisions and sandbox SMS (phones masked), of your stores."""
    data = overview(store, principal=me)
    for m in data["messages"]:
        m["to_phone"] = mask_phone(m["to_phone"])
    return data


@router.get("/api/sandbox/messages", tags=["overview"])
def api_sandbox(me: Anyone, store: Store) -> list[dict[str, Any]]:
    """SMS recorded by the sandbox provider (phones masked), of your stores, oldest first."""
    rows = overview(store, limit=100_000, principal=me)["messages"][::-1]
    return [{**m, "to_phone": mask_phone(m["to_phone"])} for m in rows]


def auth_error(request: Request, exc: AuthError) -> Response:
    """An ``AuthError`` as the client wants it: a login redirect or an error page for the
    console, JSON (with ``Retry-After`` / ``WWW-Authenticate``) for ``/api``."""
    if isinstance(exc, LoginRequired) and _wants_html(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={target}", status_code=303)
    headers = {}
    if isinstance(exc, LoginThrottled):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, LoginRequired):
        headers["WWW-Authenticate"] = "Bearer"
    if _wants_html(request):
        principal = getattr(request.state, "principal", None)
        return page(
            request, "error.html", principal, {"message": str(exc)}, exc.status, "Not allowed"
        )
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)


async def security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def routers(with_sensors: bool) -> list[APIRouter]:
    """Every router, in the order the app matches them; the sensor routers need settings."""
    sensors = [rosters.router, releases.router, pairing.router] if with_sensors else []
    return [
        enrol.router,
        inbound.router,
        campaigns_api.router,
        *sensors,
        *console_routers,
        router,
    ]


def create_app(store: BridgeStore, settings: BridgeSettings | None = None) -> FastAPI:
    """The console, API, portal and webhook app over ``store``. The routers read the store,
    settings and accounts from ``app.state`` (``cloud_bridge.web.dependencies``); without
    settings the sensor routes (rosters, releases, pairing) are not mounted."""
    app = FastAPI(
        title="passby console API",
        version=__version__,
        description="Console and JSON API of the passby bridge. Authenticate with a session "
        "(the console) or `Authorization: Bearer pbu1.<id>.<secret>` (an API token from "
        "/account). A store owner sees only their stores.",
    )
    accounts = Accounts(store, settings.web if settings is not None else WebSettings())
    app.state.store = store
    app.state.accounts = accounts
    app.state.settings = settings
    for r in routers(with_sensors=settings is not None):
        app.include_router(r)
    app.add_exception_handler(AuthError, auth_error)  # type: ignore[arg-type]
    app.add_middleware(BaseHTTPMiddleware, dispatch=security_headers)
    # Outermost: every route, dependency and middleware sees the resolved client and scheme.
    app.add_middleware(ForwardedHeaders, trusted=accounts.settings.trusted_proxies)
    return app
