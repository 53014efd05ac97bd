"""What a route needs, as FastAPI dependencies: the store, the settings, the accounts, the
clock, the enrolment service, the SMS deliverer and the current user with its role checks.

Everything is read from ``app.state``, set once by ``create_app`` (``store``, ``settings``,
``accounts``); a test swaps any of them with ``app.dependency_overrides[get_x] = ...``
(``get_clock`` is the usual one). The routers are module-level ``APIRouter`` objects whose route
functions take these as parameters, e.g. ``def page(store: Store, me: Admin)``.

A dependency reads only the request, so none of them adds a parameter to the OpenAPI document.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from cloud_bridge.config import BridgeSettings, WebSettings
from cloud_bridge.customers.enrol import Enrolments, default_enrolments
from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import SandboxProvider, make_provider
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.auth import Accounts, Principal, authenticate, require

__all__ = [
    "get_store",
    "get_settings",
    "get_bridge_settings",
    "get_accounts",
    "get_web_settings",
    "get_clock",
    "get_enrolments",
    "enrolments_of",
    "get_deliverer",
    "deliverer_of",
    "current_user",
    "require_role",
    "Store",
    "MaybeSettings",
    "Settings",
    "AccountsDep",
    "WebConfig",
    "Clock",
    "EnrolmentsDep",
    "Sender",
    "User",
    "Anyone",
    "Admin",
    "Staff",
    "Viewer",
]


async def get_store(request: Request) -> BridgeStore:
    """The bridge's store (``app.state.store``)."""
    store: BridgeStore = request.app.state.store
    return store


async def get_settings(request: Request) -> BridgeSettings | None:
    """The bridge settings, or None for an app made without them (tests, the demo page)."""
    settings: BridgeSettings | None = request.app.state.settings
    return settings


async def get_bridge_settings(request: Request) -> BridgeSettings:
    """The bridge settings, for routers that ``create_app`` mounts only when it has them."""
    settings: BridgeSettings | None = request.app.state.settings
    if settings is None:
        raise RuntimeError("this route needs the bridge settings: create_app(store, settings)")
    return settings


async def get_accounts(request: Request) -> Accounts:
    """Console accounts, sessions and API tokens (``app.state.accounts``)."""
    accounts: Accounts = request.app.state.accounts
    return accounts


async def get_web_settings(request: Request) -> WebSettings:
    """The ``web`` settings the accounts were made with (defaults without bridge settings)."""
    accounts: Accounts = request.app.state.accounts
    return accounts.settings


async def get_clock() -> Callable[[], float]:
    """The wall clock the routes read (tests override it with a clock of their own)."""
    return time.time


def enrolments_of(request: Request) -> Enrolments:
    """The enrolment service: ``app.state.enrolments`` when set (tests inject one), else one
    built from the settings on first use and kept there."""
    state = request.app.state
    if getattr(state, "enrolments", None) is None:
        state.enrolments = default_enrolments(state.store, state.settings)
    enrolments: Enrolments = state.enrolments
    return enrolments


async def get_enrolments(request: Request) -> Enrolments:
    """``enrolments_of`` as a dependency."""
    return enrolments_of(request)


def deliverer_of(request: Request) -> Deliverer:
    """The SMS deliverer webhooks report to: the running service's (``app.state.deliverer``),
    else one sending in the request, made on first use and kept on ``app.state``."""
    state = request.app.state
    d: Deliverer | None = getattr(state, "deliverer", None)
    if d is not None:
        return d
    if getattr(state, "fallback_deliverer", None) is None:
        store: BridgeStore = state.store
        settings: BridgeSettings | None = state.settings
        if settings is None:
            state.fallback_deliverer = Deliverer(store, SandboxProvider(store))
        else:
            state.fallback_deliverer = Deliverer(
                store,
                make_provider(settings.provider, store),
                DeliveryOptions.from_settings(settings),
            )
    fallback: Deliverer = state.fallback_deliverer
    return fallback


async def get_deliverer(request: Request) -> Deliverer:
    """``deliverer_of`` as a dependency."""
    return deliverer_of(request)


async def current_user(request: Request) -> Principal | None:
    """The logged-in principal (session cookie or API token), None if nobody; a cookie-borne
    unsafe request without its CSRF token is refused (``auth.authenticate``)."""
    return await authenticate(request)


def require_role(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the current user, if logged in with one of ``roles`` (any role if none);
    401 (``LoginRequired``) without a login, 403 (``Forbidden``) with another role."""
    return require(*roles)


Store = Annotated[BridgeStore, Depends(get_store)]
MaybeSettings = Annotated[BridgeSettings | None, Depends(get_settings)]
Settings = Annotated[BridgeSettings, Depends(get_bridge_settings)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]
WebConfig = Annotated[WebSettings, Depends(get_web_settings)]
Clock = Annotated[Callable[[], float], Depends(get_clock)]
EnrolmentsDep = Annotated[Enrolments, Depends(get_enrolments)]
Sender = Annotated[Deliverer, Depends(get_deliverer)]
User = Annotated[Principal | None, Depends(current_user)]
Anyone = Annotated[Principal, Depends(require_role())]
Admin = Annotated[Principal, Depends(require_role("admin"))]
Staff = Annotated[Principal, Depends(require_role("admin", "marketer"))]
Viewer = Annotated[Principal, Depends(require_role("admin", "owner"))]
