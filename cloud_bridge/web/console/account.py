"""Login, logout, one's own account (phone for test sends, password, API tokens) and the admin
pages for users, tokens and the audit log; with their JSON API."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from cloud_bridge.config import WebSettings
from cloud_bridge.customers.phones import PhoneError, normalise_phone
from cloud_bridge.storage.accounts import audit_entries
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import store_names
from cloud_bridge.web.auth import (
    LOGIN_COOKIE,
    ROLES,
    SECURE_SESSION_COOKIE,
    SESSION_COOKIE,
    AccountError,
    LoginRequired,
    LoginThrottled,
    Principal,
    audit,
    cookie_secure,
    session_secret,
)
from cloud_bridge.web.console.common import page
from cloud_bridge.web.dependencies import AccountsDep, Admin, Anyone, Staff, Store, WebConfig

__all__ = ["router"]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(description="login name", min_length=2, max_length=64)
    role: str = Field(description="admin, marketer or owner")
    password: str = Field(description="at least 10 characters", min_length=10, max_length=1024)
    stores: list[str] = Field(default_factory=list, description="stores of an owner")
    phone: str | None = Field(None, description="own phone for test sends (E.164)")


class UserOut(BaseModel):
    id: int = Field(description="user id")
    username: str = Field(description="login name")
    role: str = Field(description="admin, marketer or owner")
    stores: list[str] = Field(description="stores bound to the account (owners)")
    disabled: float | None = Field(None, description="when the account was disabled")
    last_login: float | None = Field(None, description="last successful login, epoch s")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="what the token is for", min_length=1, max_length=80)


class TokenOut(BaseModel):
    id: str = Field(description="token id (public part)")
    token: str = Field(description="the whole token: shown once, kept only as a hash")


class Me(BaseModel):
    username: str = Field(description="login name")
    role: str = Field(description="admin, marketer or owner")
    stores: list[str] | None = Field(description="stores this account sees (null = all)")


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _phone(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return normalise_phone(raw, None)
    except PhoneError as exc:
        raise AccountError("phone", str(exc)) from None


router = APIRouter()


def login_page(
    request: Request, settings: WebSettings, error: str = "", status: int = 200, nxt: str = "/"
) -> Response:
    token = secrets.token_urlsafe(16)
    resp = page(
        request,
        "login.html",
        None,
        {"login_token": token, "error": error, "next": nxt},
        status=status,
        title="Log in",
    )
    resp.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, settings),
        max_age=3600,
    )
    return resp


ROW_ID_MAX: Final = 2**63 - 1  # the databases' 64-bit integer ids


def _row_id(text: object) -> int | None:
    """A form's row id, or None when it is not one (not digits, 0, or beyond a 64-bit id)."""
    value = str(text).strip()
    if not value.isdigit() or len(value) > 19:
        return None
    number = int(value)
    return number if 1 <= number <= ROW_ID_MAX else None


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form(request: Request, settings: WebConfig, next: str = "/") -> Response:
    return login_page(request, settings, nxt=_safe_next(next))


@router.post("/login", include_in_schema=False)
async def login(
    request: Request, store: Store, accounts: AccountsDep, settings: WebConfig
) -> Response:
    form = await request.form()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    nxt = _safe_next(str(form.get("next", "/")))
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    given = str(form.get("login_token", ""))
    if not cookie or not hmac.compare_digest(cookie, given):
        return login_page(request, settings, "The form expired: log in again.", 403, nxt)
    ip = request.client.host if request.client else None
    now = time.time()
    try:
        user = accounts.login(username, password, ip, now)
    except LoginThrottled as exc:
        resp = login_page(request, settings, str(exc).capitalize() + ".", 429, nxt)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    except LoginRequired:
        return login_page(request, settings, "Wrong user name or password.", 401, nxt)
    old = session_secret(request)
    if old:
        accounts.end_session(old)  # no session fixation: always a fresh id
    secret, _ = accounts.start_session(user["id"], ip, request.headers.get("user-agent"), now)
    store.audit(user["username"], user["role"], "login", "", "", ip, now)
    resp = RedirectResponse(nxt, status_code=303)
    secure = cookie_secure(request, settings)
    resp.set_cookie(
        SECURE_SESSION_COOKIE if secure else SESSION_COOKIE,
        secret,
        httponly=True,
        samesite="lax",
        secure=secure,
        max_age=int(settings.session_max_s),
        path="/",
    )
    resp.delete_cookie(LOGIN_COOKIE)
    return resp


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, me: Anyone, accounts: AccountsDep) -> Response:
    accounts.end_session(session_secret(request))
    audit(request, me, "logout")
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    resp.delete_cookie(SECURE_SESSION_COOKIE, path="/", secure=True)
    return resp


# own account ------------------------------------------------------------------------
def account_page(
    store: BridgeStore,
    request: Request,
    me: Principal,
    notice: str = "",
    errors: dict[str, str] | None = None,
    new_token: str = "",
    status: int = 200,
) -> HTMLResponse:
    user = store.user_by_id(me.user_id) or {}
    tokens = store.api_tokens(me.user_id) if me.role != "owner" else []
    return page(
        request,
        "account.html",
        me,
        {
            "user": user,
            "tokens": tokens,
            "notice": notice,
            "errors": errors or {},
            "new_token": new_token,
        },
        status=status,
        title="Your account",
    )


@router.get("/account", response_class=HTMLResponse, include_in_schema=False)
def account(request: Request, me: Anyone, store: Store) -> HTMLResponse:
    return account_page(store, request, me)


@router.post("/account", response_class=HTMLResponse, include_in_schema=False)
async def account_post(
    request: Request, me: Anyone, store: Store, accounts: AccountsDep
) -> HTMLResponse:
    form = await request.form()
    action = str(form.get("action", ""))
    now = time.time()
    try:
        if action == "phone":
            store.update_user(me.user_id, phone=_phone(str(form.get("phone", ""))))
            return account_page(store, request, me, "Phone saved: test sends go there.")
        if action == "password":
            user = store.user_by_id(me.user_id) or {}
            ip = request.client.host if request.client else None
            try:  # counted like a login from this address (a stolen session cannot guess)
                accounts.login(me.username, str(form.get("current", "")), ip, now)
            except LoginThrottled as exc:
                raise AccountError("current", str(exc)) from None
            except LoginRequired:
                raise AccountError("current", "that is not your current password") from None
            accounts.set_password(user["id"], str(form.get("password", "")), now)
            audit(request, me, "password.change", me.username)
            return RedirectResponse("/login", status_code=303)  # type: ignore[return-value]
        if action == "token" and me.role != "owner":
            token_id, token = accounts.new_token(me.user_id, str(form.get("name", "")), now)
            audit(request, me, "token.create", token_id, str(form.get("name", "")))
            return account_page(store, request, me, "Token created: copy it now.", new_token=token)
        if action == "revoke" and me.role != "owner":
            token_id = str(form.get("token_id", ""))
            row = store.api_token_row(token_id)
            if row and row["user_id"] == me.user_id and store.revoke_api_token(token_id, now):
                audit(request, me, "token.revoke", token_id)
            return account_page(store, request, me, "Token revoked.")
    except AccountError as exc:
        return account_page(store, request, me, errors={exc.field: exc.problem}, status=400)
    raise HTTPException(400, f"unknown action {action!r}")


# admin: users, tokens, audit ----------------------------------------------------------
def admin_page(
    store: BridgeStore,
    request: Request,
    me: Principal,
    notice: str = "",
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "admin.html",
        me,
        {
            "users": store.users(),
            "tokens": store.api_tokens(),
            "audit": audit_entries(store, 200),
            "stores": store_names(store),
            "roles": ROLES,
            "notice": notice,
            "errors": errors or {},
            "form": form or {},
        },
        status=status,
        title="Admin: users, API tokens, audit log",
    )


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
def admin(request: Request, me: Admin, store: Store) -> HTMLResponse:
    return admin_page(store, request, me)


@router.post("/admin/users", response_class=HTMLResponse, include_in_schema=False)
async def admin_users(
    request: Request, me: Admin, store: Store, accounts: AccountsDep
) -> HTMLResponse:
    form = await request.form()
    action = str(form.get("action", "add"))
    now = time.time()
    values = {k: str(v) for k, v in form.items() if k not in ("csrf", "password")}
    stores = [str(s) for s in form.getlist("stores")]
    try:
        if action == "add":
            user_id = accounts.add_user(
                values.get("username", "").strip(),
                values.get("role", ""),
                str(form.get("password", "")),
                now,
                stores,
                _phone(values.get("phone", "")),
            )
            audit(
                request,
                me,
                "user.add",
                values.get("username", ""),
                f"role={values.get('role')} stores={','.join(stores)} id={user_id}",
            )
            return admin_page(store, request, me, f"User {values.get('username')} added.")
        target_id = _row_id(values.get("user_id", ""))
        user = None if target_id is None else store.user_by_id(target_id)
        if user is None:
            raise AccountError("user_id", "no such user")
        if action == "disable":
            if user["id"] == me.user_id:
                raise AccountError("user_id", "you cannot disable yourself")
            accounts.disable(user["id"], now)
            audit(request, me, "user.disable", user["username"])
            return admin_page(store, request, me, f"User {user['username']} disabled.")
        if action == "role":
            accounts.set_role(user["id"], values.get("role", ""), stores)
            audit(
                request,
                me,
                "user.role",
                user["username"],
                f"role={values.get('role')} stores={','.join(stores)}",
            )
            return admin_page(store, request, me, f"User {user['username']} changed.")
    except AccountError as exc:
        return admin_page(
            store, request, me, errors={exc.field: exc.problem}, form=values, status=400
        )
    raise HTTPException(400, f"unknown action {action!r}")


@router.post("/admin/tokens", response_class=HTMLResponse, include_in_schema=False)
async def admin_tokens(request: Request, me: Admin, store: Store) -> HTMLResponse:
    form = await request.form()
    token_id = str(form.get("token_id", ""))
    if store.revoke_api_token(token_id, time.time()):
        audit(request, me, "token.revoke", token_id)
    return admin_page(store, request, me, f"Token {token_id} revoked.")


# JSON ---------------------------------------------------------------------------------
@router.get("/api/v1/me", response_model=Me, tags=["accounts"])
def api_me(me: Anyone) -> Me:
    """Who the caller is, and which stores they see."""
    return Me(
        username=me.username,
        role=me.role,
        stores=list(me.scope) if me.scope is not None else None,
    )


@router.get("/api/v1/users", response_model=list[UserOut], tags=["accounts"])
def api_users(me: Admin, store: Store) -> list[dict[str, Any]]:
    """Every console user (admin)."""
    return store.users()


@router.post("/api/v1/users", response_model=UserOut, status_code=201, tags=["accounts"])
def api_add_user(
    request: Request, body: UserIn, me: Admin, store: Store, accounts: AccountsDep
) -> dict[str, Any]:
    """Create a user (admin); owners need at least one store."""
    try:
        user_id = accounts.add_user(
            body.username,
            body.role,
            body.password,
            time.time(),
            body.stores,
            _phone(body.phone or ""),
        )
    except AccountError as exc:
        raise HTTPException(422, [{"loc": ["body", exc.field], "msg": exc.problem}]) from None
    audit(request, me, "user.add", body.username, f"role={body.role} via api")
    return store.user_by_id(user_id) or {}


@router.get("/api/v1/tokens", tags=["accounts"])
def api_tokens(me: Staff, store: Store) -> list[dict[str, Any]]:
    """The caller's API tokens (an admin sees everyone's); never the secrets."""
    return store.api_tokens(None if me.role == "admin" else me.user_id)


@router.post("/api/v1/tokens", response_model=TokenOut, status_code=201, tags=["accounts"])
def api_new_token(request: Request, body: TokenIn, me: Staff, accounts: AccountsDep) -> TokenOut:
    """A new API token acting as the caller (for CRM integrations); shown once."""
    try:
        token_id, token = accounts.new_token(me.user_id, body.name, time.time())
    except AccountError as exc:
        raise HTTPException(422, [{"loc": ["body", exc.field], "msg": exc.problem}]) from None
    audit(request, me, "token.create", token_id, body.name)
    return TokenOut(id=token_id, token=token)


@router.delete("/api/v1/tokens/{token_id}", status_code=204, tags=["accounts"])
def api_revoke_token(request: Request, token_id: str, me: Staff, store: Store) -> Response:
    """Revoke one of the caller's tokens (an admin: anyone's)."""
    row = store.api_token_row(token_id)
    if row is None or (me.role != "admin" and row["user_id"] != me.user_id):
        raise HTTPException(404, "no such token")
    if store.revoke_api_token(token_id, time.time()):
        audit(request, me, "token.revoke", token_id)
    return Response(status_code=204)


@router.get("/api/v1/audit", tags=["accounts"])
def api_audit(
    me: Admin,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=ROW_ID_MAX)] = None,
) -> list[dict[str, Any]]:
    """The audit log, newest first (admin)."""
    return audit_entries(store, limit, before_id)
