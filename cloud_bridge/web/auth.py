"""Console accounts: roles, argon2 passwords, sessions, CSRF, login rate limit, API tokens, audit.

Roles (``ROLES``): ``admin`` sees and changes everything; ``marketer`` runs campaigns, customers
and reports for every store; ``owner`` sees only the stores bound to the account, on every page
and every API route (``Principal.scope``).

Secrets are never stored: a session cookie and an API token carry 32 random bytes whose SHA-256
is what the database keeps (a high-entropy secret needs no slow hash); passwords are argon2id.

A request is authenticated by the session cookie or by ``Authorization: Bearer pbu1.<id>.<secret>``
(an API token acts as its user, for CRM integrations). A state-changing request that rides on
the cookie must carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``)
and, when the browser sends one, an ``Origin`` of this site. Bearer requests carry no ambient
credential and need neither.

Exception tree::

    AuthError
    ├── LoginRequired      (401: no or expired session / token)
    ├── Forbidden          (403: role or store scope, CSRF)
    ├── LoginThrottled     (429: too many failed logins; retry_after)
    └── AccountError       (bad user name, role, password, store on create/change)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request

from cloud_bridge.addresses import address_key
from cloud_bridge.config import WebSettings
from cloud_bridge.storage.store import BridgeStore, IntegrityError
from cloud_bridge.storage.stores import store_ids

__all__ = [
    "ROLES",
    "SESSION_COOKIE",
    "AuthError",
    "LoginRequired",
    "Forbidden",
    "LoginThrottled",
    "AccountError",
    "Principal",
    "Accounts",
    "THROTTLE_POLICY",
    "address_key",
    "authenticate",
    "require",
    "audit",
]

log = logging.getLogger(__name__)

ROLES: Final[dict[str, str]] = {
    "admin": "runs the fleet and the cloud side: every page, users, tokens, audit, erasure",
    "marketer": "campaigns, customers and consent, reports, for every store",
    "owner": "their own stores only: footfall, results, install checklist",
}
SESSION_COOKIE: Final = "passby_session"
SECURE_SESSION_COOKIE: Final = "__Host-passby_session"  # __Host-: Secure, path /, no domain
LOGIN_COOKIE: Final = "passby_login"  # double-submit token of the login form (login CSRF)
TOKEN_PREFIX: Final = "pbu1"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
MIN_PASSWORD: Final = 10
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{1,63}$")
# OWASP's argon2id minimum (19 MiB, t=2, p=1): ~50 ms here; hashes made with other
# parameters are upgraded at the next successful login.
HASHER: Final = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
_DUMMY_HASH: Final = HASHER.hash("passby-timing-equaliser")


class AuthError(Exception):
    status = 400


class LoginRequired(AuthError):
    status = 401


class Forbidden(AuthError):
    status = 403


class LoginThrottled(AuthError):
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after} s")
        self.retry_after = retry_after


class AccountError(AuthError):
    status = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user through a session or one of their API tokens."""

    user_id: int
    username: str
    role: str
    stores: tuple[str, ...]
    via: str  # "session" or "token"
    csrf: str = ""
    phone: str | None = None

    @property
    def scope(self) -> tuple[str, ...] | None:
        """Stores this principal may see; None = every store."""
        return self.stores if self.role == "owner" else None

    def can_see(self, store_id: str | None) -> bool:
        return self.scope is None or (store_id is not None and store_id in self.scope)

    def visible(self, store_ids: list[str] | tuple[str, ...]) -> list[str]:
        return [s for s in store_ids if self.can_see(s)]


THROTTLE_POLICY: Final = """\
A login is refused (429) before its password is checked when, within web.login_window_s:
- its address failed web.login_failures_per_ip times, under any user names (guessing many
  accounts from one place); an IPv6 address counts as its /64;
- its address failed web.login_failures_per_user times for this user name since its last
  success there (guessing one account from one place);
- the user name failed web.login_failures_per_account times from all addresses (a spread-out
  attack) and this address is one of those that failed for it.
A stranger's failures never count against another address, so the owner, coming from an
address that has not been failing, can still log in while their account is under attack."""


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Accounts:
    """Users, sessions and API tokens on the bridge store."""

    def __init__(self, store: BridgeStore, settings: WebSettings | None = None) -> None:
        self.store = store
        self.settings = settings or WebSettings()

    # users ------------------------------------------------------------------------------
    @staticmethod
    def check_password(password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise AccountError("password", f"at least {MIN_PASSWORD} characters")
        if len(password) > 1024:
            raise AccountError("password", "at most 1024 characters")

    def _check_stores(self, role: str, stores: list[str]) -> list[str]:
        if role not in ROLES:
            raise AccountError("role", f"one of {', '.join(ROLES)}")
        clean = sorted({s.strip() for s in stores if s.strip()})
        known = store_ids(self.store)
        unknown = [s for s in clean if s not in known]
        if unknown:
            raise AccountError("stores", f"unknown store(s): {', '.join(unknown)}")
        if role == "owner" and not clean:
            raise AccountError("stores", "a store owner needs at least one store")
        return clean

    def add_user(
        self,
        username: str,
        role: str,
        password: str,
        now: float,
        stores: list[str] | tuple[str, ...] = (),
        phone: str | None = None,
    ) -> int:
        if not _USERNAME.match(username):
            raise AccountError(
                "username", "2-64 of letters, digits, _ . @ - (letter or digit first)"
            )
        self.check_password(password)
        clean = self._check_stores(role, list(stores))
        try:
            return self.store.add_user(
                username, role, HASHER.hash(password), now, clean, phone or None
            )
        except IntegrityError:
            raise AccountError("username", f"{username!r} is taken") from None

    def set_password(self, user_id: int, password: str, now: float) -> None:
        self.check_password(password)
        self.store.update_user(user_id, password_hash=HASHER.hash(password), password_changed=now)
        self.store.delete_sessions(user_id=user_id)

    def set_role(self, user_id: int, role: str, stores: list[str]) -> None:
        clean = self._check_stores(role, stores)
        self.store.update_user(user_id, stores=clean, role=role)
        self.store.delete_sessions(user_id=user_id)

    def disable(self, user_id: int, now: float) -> None:
        self.store.update_user(user_id, disabled=now)
        self.store.delete_sessions(user_id=user_id)

    # login --------------------------------------------------------------------------------
    def login(self, username: str, password: str, ip: str | None, now: float) -> dict[str, Any]:
        """The user row if the password is right; LoginThrottled or LoginRequired otherwise.

        The limits (``THROTTLE_POLICY``) are checked before the password, so a throttled
        guesser learns nothing; the check and the attempt's record are one step, so guesses
        fired at once are counted before any is verified; an unknown user costs the same
        argon2 work as a known one."""
        s = self.settings
        name, key = username[:64], address_key(ip)
        with self.store.transaction():
            # PostgreSQL: one check at a time per account and per address (SQLite's BEGIN
            # IMMEDIATE already serialises every writer).
            self.store.lock_for([f"login-user:{name.casefold()}", f"login-ip:{key}"])
            n = self.store.login_failures(name, key, now - s.login_window_s)
            throttled = (
                n["ip"] >= s.login_failures_per_ip
                or n["pair"] >= s.login_failures_per_user
                or (n["user"] >= s.login_failures_per_account and n["pair"] > 0)
            )
            attempt = None if throttled else self.store.record_login_attempt(name, key, False, now)
        if attempt is None:
            log.info("login throttled (%s)", "address" if n["ip"] >= s.login_failures_per_ip
                     else "account")  # fmt: skip
            raise LoginThrottled(int(s.login_window_s))
        user = self.store.user_by_name(username) if len(username) <= 64 else None
        ok = False
        try:
            ok = HASHER.verify(user["password_hash"] if user else _DUMMY_HASH, password[:1024])
        except (VerificationError, InvalidHashError):
            ok = False
        ok = ok and user is not None and not user["disabled"]
        if not ok or user is None:
            raise LoginRequired("wrong user name or password")
        self.store.login_succeeded(attempt)
        if HASHER.check_needs_rehash(user["password_hash"]):
            self.store.update_user(user["id"], password_hash=HASHER.hash(password))
        self.store.update_user(user["id"], last_login=now)
        return user

    def start_session(
        self, user_id: int, ip: str | None, user_agent: str | None, now: float
    ) -> tuple[str, str]:
        """(cookie value, CSRF token) of a new session."""
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self.store.create_session(
            {
                "id_sha256": _sha(secret),
                "user_id": user_id,
                "csrf": csrf,
                "created": now,
                "expires": now + self.settings.session_idle_s,
                "last_seen": now,
                "ip": ip,
                "user_agent": (user_agent or "")[:200],
            }
        )
        return secret, csrf

    def _principal(self, user: dict[str, Any] | None, via: str, csrf: str = "") -> Principal | None:
        if user is None or user["disabled"]:
            return None
        return Principal(
            user_id=user["id"],
            username=user["username"],
            role=user["role"],
            stores=tuple(user["stores"]),
            via=via,
            csrf=csrf,
            phone=user.get("phone"),
        )

    def session(self, secret: str, now: float) -> Principal | None:
        key = _sha(secret)
        row = self.store.session_row(key)
        if row is None:
            return None
        if row["expires"] <= now or row["created"] + self.settings.session_max_s <= now:
            self.store.delete_sessions(id_sha256=key)
            return None
        if now - row["last_seen"] > 60:  # sliding expiry, written at most once a minute
            self.store.touch_session(key, now, now + self.settings.session_idle_s)
        return self._principal(self.store.user_by_id(row["user_id"]), "session", row["csrf"])

    def end_session(self, secret: str) -> None:
        self.store.delete_sessions(id_sha256=_sha(secret))

    # API tokens ---------------------------------------------------------------------------
    def new_token(self, user_id: int, name: str, now: float) -> tuple[str, str]:
        """(token id, the whole token): the token is shown once and kept only as a hash."""
        name = name.strip()
        if not 1 <= len(name) <= 80:
            raise AccountError("name", "1-80 characters, e.g. 'CRM nightly import'")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        self.store.add_api_token(
            {
                "id": token_id,
                "user_id": user_id,
                "name": name,
                "token_sha256": _sha(secret),
                "created": now,
            }
        )
        return token_id, f"{TOKEN_PREFIX}.{token_id}.{secret}"

    def token(self, token: str, now: float) -> Principal | None:
        prefix, _, rest = token.partition(".")
        token_id, _, secret = rest.partition(".")
        if prefix != TOKEN_PREFIX or not token_id or not secret:
            return None
        row = self.store.api_token_row(token_id)
        stored = row["token_sha256"] if row else "0" * 64
        if not hmac.compare_digest(_sha(secret), stored) or row is None or row["revoked"]:
            return None
        if not row["last_used"] or now - row["last_used"] > 60:
            self.store.touch_api_token(token_id, now)
        return self._principal(self.store.user_by_id(row["user_id"]), "token")


# FastAPI glue -------------------------------------------------------------------------------
def cookie_secure(request: Request, settings: WebSettings) -> bool:
    if settings.cookie_secure == "always":
        return True
    if settings.cookie_secure == "never":
        return False
    return request.url.scheme == "https"


def session_secret(request: Request) -> str:
    return request.cookies.get(SECURE_SESSION_COOKIE) or request.cookies.get(SESSION_COOKIE) or ""


def _origin_ok(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


async def authenticate(request: Request) -> Principal | None:
    """The request's principal (cached on the request), CSRF-checked for unsafe methods."""
    if hasattr(request.state, "principal"):
        return request.state.principal  # type: ignore[no-any-return]
    accounts: Accounts = request.app.state.accounts
    now = time.time()
    principal: Principal | None = None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        principal = accounts.token(token.strip(), now)
        if principal is None:
            raise LoginRequired("the API token is unknown or revoked")
    else:
        secret = session_secret(request)
        principal = accounts.session(secret, now) if secret else None
        if principal is not None and request.method not in SAFE_METHODS:
            given = request.headers.get("x-csrf-token", "")
            if not given and "form" in request.headers.get("content-type", ""):
                given = str((await request.form()).get("csrf", ""))
            if not (given and hmac.compare_digest(given, principal.csrf)) or not _origin_ok(
                request
            ):
                raise Forbidden("the form expired or came from another site (CSRF): reload it")
    request.state.principal = principal
    return principal


def require(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the principal, if logged in with one of ``roles`` (any role if none)."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if principal is None:
            raise LoginRequired("log in first")
        if roles and principal.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}")
        return principal

    return dependency


def audit(
    request: Request, principal: Principal | None, action: str, target: str = "", detail: str = ""
) -> None:
    """Append an admin or consent action to the audit log (who, what, on what, from where)."""
    store: BridgeStore = request.app.state.accounts.store
    store.audit(
        principal.username if principal else "-",
        principal.role if principal else None,
        action,
        target,
        detail,
        request.client.host if request.client else None,
        time.time(),
    )
