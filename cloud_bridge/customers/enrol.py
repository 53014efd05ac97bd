"""Enrolment: a customer opts in on the store's captive portal (or through a loyalty app's API)
with double opt-in by SMS code; the confirmed consent carries its proof.

Flow: ``start`` validates phone (E.164), name and the two separate consents, sends a 6-digit
code through the configured provider and answers the same whatever the phone (no enumeration);
``confirm`` checks the code (expiry, limited attempts, single use, stored only as a keyed hash),
then records each consent with its proof and enrols the device MAC (encrypted at rest).

The device MAC comes from the captive portal's redirect parameters (``PORTAL_MAC_PARAMS`` plus
``enrol.portal_mac_param``); the page carries it onward only as a sealed token, never in clear.
A portal login from a MAC already enrolled by a consenting customer refreshes its expiry with
no new code. Never logged: phone, name, MAC, code.

HTTP (``router``): the portal pages under ``/enrol/{store_id}``; JSON ``POST /api/v1/enrolments``,
``POST /api/v1/enrolments/{id}/confirm``, ``GET /api/v1/consent-text``, and the admin
``DELETE /api/v1/customers/{crm_id}`` (erasure).

Who may link identities: the public (portal, app) enrolls a phone, and a confirmed code changes
only the customer who has that phone; the device MAC it names never moves away from another
customer. Naming a ``crm_id`` (attach to that CRM customer, at the verified number, moving the
device to them) or ``source = "crm"`` needs ``Authorization: Bearer <enrol.api_token>`` with the
scope ``enrol.link``; erasure needs the scope ``customers.erase`` (``TOKEN_SCOPES``).
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from cloud_bridge.config import BridgeSettings, EnrolSettings
from cloud_bridge.customers.consent_texts import (
    LANGUAGE_NAMES,
    LANGUAGES,
    ConsentTextError,
    code_sms,
    consent_text,
    pick_language,
    words,
)
from cloud_bridge.customers.erasure import erase_customer
from cloud_bridge.customers.phones import PhoneError, normalise_phone
from cloud_bridge.delivery.providers import Provider, SandboxProvider
from cloud_bridge.offers.decide import StoreInfo
from cloud_bridge.storage.datakey import DataKeyError
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.auth import address_key
from edge_agent.roster import parse_mac, subject_id

__all__ = [
    "PORTAL_MAC_PARAMS",
    "TOKEN_SCOPES",
    "Enrolments",
    "EnrolmentError",
    "InvalidInput",
    "RateLimited",
    "WrongCode",
    "CodeClosed",
    "UnknownStore",
    "SendFailed",
    "Started",
    "Confirmed",
    "router",
    "iso_utc",
]

log = logging.getLogger(__name__)

# Captive-portal redirect parameters that carry the client's MAC, by vendor.
PORTAL_MAC_PARAMS: dict[str, str] = {
    "id": "UniFi (external portal)",
    "clientmac": "openNDS",
    "client_mac": "Cisco Meraki (splash page)",
    "mac": "Aruba (Instant / ClearPass)",
}
# Where the portal wants the client to go afterwards (shown as a link when http(s)).
CONTINUE_PARAMS = ("url", "redir", "continue_url", "redirect")
SOURCES = ("portal", "api", "crm")
# What ``enrol.api_token`` may be allowed to do (``enrol.api_token_scopes``).
TOKEN_SCOPES: dict[str, str] = {
    "customers.erase": "DELETE /api/v1/customers/{crm_id}: erase a customer",
    "enrol.link": "POST /api/v1/enrolments with crm_id or source 'crm': link a phone and a "
    "device to that CRM customer",
}
SWEEP_EVERY_S = 60.0
WEB_CRM_PREFIX = "web-"
_SEAL_DEVICE = b"portal-device"


class EnrolmentError(Exception):
    """Base of the enrolment errors below; ``status`` is the HTTP status the API answers with."""

    status = 400
    word = "err_closed"


class InvalidInput(EnrolmentError):
    status = 422

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {p}" for f, p in problems))
        self.problems = problems


class UnknownStore(EnrolmentError):
    status = 404


class RateLimited(EnrolmentError):
    status = 429
    word = "err_rate"


class SendFailed(EnrolmentError):
    status = 502
    word = "err_send"


class WrongCode(EnrolmentError):
    status = 400
    word = "err_code"

    def __init__(self, attempts_left: int) -> None:
        super().__init__(f"wrong code, {attempts_left} attempt(s) left")
        self.attempts_left = attempts_left


class CodeClosed(EnrolmentError):
    """Unknown, expired, used or exhausted: one answer for all, so nothing leaks."""

    status = 410
    word = "err_closed"


@dataclass(frozen=True, slots=True)
class Started:
    enrolment_id: str
    expires: float


@dataclass(frozen=True, slots=True)
class Confirmed:
    customer_id: int
    crm_id: str
    consents: dict[str, str]
    device_enrolled: bool


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ip_for_limit(ip: str | None) -> tuple[str | None, str | None]:
    """(the address as the consent proof keeps it, what the per-IP limit counts). IPv6 is
    written exploded and counted by its /64 (one subscriber's network, which a caller can
    rotate in); IPv4-mapped IPv6 is IPv4; a non-IP host name is kept and counted as is."""
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:
        return ip, ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        text = addr.exploded
        return text, text[:19]  # the first four groups: the /64
    text = str(addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else addr)
    return text, text


def _clean_name(raw: str) -> str | None:
    name = " ".join((raw or "").split())
    if not name or len(name) > 80 or any(ord(c) < 32 for c in name):
        return None
    return name


class Enrolments:
    """The enrolment library: no HTTP here, ``now`` passed in, store and provider injected."""

    def __init__(
        self,
        store: BridgeStore,
        settings: EnrolSettings,
        provider: Provider,
        subject_key: bytes,
    ) -> None:
        self.store = store
        self.settings = settings
        self.provider = provider
        self.subject_key = subject_key
        self._swept = float("-inf")  # when finished enrolments were last scrubbed
        # Portal opt-outs per address key in the last hour. In memory: the console and its
        # portal pages run in one bridge process (the other workers run --no-console).
        self._optouts: dict[str, list[float]] = {}
        self._optouts_lock = threading.Lock()

    # portal -------------------------------------------------------------------------------
    def mac_from_params(self, params: dict[str, str]) -> bytes | None:
        """The client MAC from captive-portal redirect parameters, if a valid unicast one."""
        names = list(PORTAL_MAC_PARAMS)
        if self.settings.portal_mac_param:
            names.insert(0, self.settings.portal_mac_param)
        for name in names:
            value = params.get(name)
            if value:
                try:
                    raw = parse_mac(value)
                except ValueError:
                    continue
                if not raw[0] & 1 and raw != b"\0" * 6:
                    return raw
        return None

    def seal_device(self, mac: bytes) -> str:
        blob = self.store.cipher.seal(mac, _SEAL_DEVICE)
        return base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def open_device(self, token: str) -> bytes | None:
        if not token or len(token) > 200:
            return None
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac = self.store.cipher.unseal(blob, _SEAL_DEVICE)
        except (ValueError, DataKeyError):
            return None
        return mac if len(mac) == 6 else None

    def refresh_device(self, store_id: str, mac: bytes, now: float) -> bool:
        """A portal login from a MAC a consenting customer enrolled: extend its expiry."""
        refreshed = False
        expires = now + self.settings.device_ttl_days * 86400
        for owner in self.store.device_owners(mac):
            if self.store.latest_consents(owner).get("recognition") == "active":
                self.store.add_device(
                    owner, mac, now, expires, source="portal", store_id=store_id, refresh=True
                )
                refreshed = True
        return refreshed

    # double opt-in ------------------------------------------------------------------------
    def store_info(self, store_id: str) -> StoreInfo:
        info = self.store.store_info(store_id)
        if info is None:
            raise UnknownStore(f"store {store_id!r} is not configured")
        return info

    def start(
        self,
        *,
        store_id: str,
        phone: str,
        name: str,
        language: str,
        consent_sms: bool,
        consent_recognition: bool,
        source: str,
        now: float,
        mac: bytes | None = None,
        crm_id: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        text_version: str | None = None,
    ) -> Started:
        """Validate, rate-limit, send a code. Same answer for a known and an unknown phone."""
        store = self.store_info(store_id)
        problems: list[tuple[str, str]] = []
        try:
            e164 = normalise_phone(phone, store.country)
        except PhoneError as exc:
            problems.append(("phone", f"phone number {exc}"))
            e164 = ""
        clean = _clean_name(name)
        if clean is None:
            problems.append(("name", "name is empty, too long or has control characters"))
        if not (consent_sms or consent_recognition):
            problems.append(("consent", "tick at least one of the two consents"))
        if language not in LANGUAGES:
            problems.append(("language", f"language must be one of {', '.join(LANGUAGES)}"))
        if source not in SOURCES:
            problems.append(("source", f"source must be one of {', '.join(SOURCES)}"))
        if crm_id is not None and not re.fullmatch(r"[^\s]{1,64}", crm_id):
            problems.append(("crm_id", "crm_id must be 1-64 characters without spaces"))
        version = text_version or self.settings.consent_version
        text = None
        if language in LANGUAGES:
            try:
                text = consent_text(version, language)
            except ConsentTextError:
                problems.append(("text_version", f"no consent text {version} in {language}"))
        if problems or text is None or clean is None:
            raise InvalidInput(problems)

        cipher = self.store.cipher
        phone_hmac = cipher.lookup("phone", e164)
        hour_ago = now - 3600
        ip, ip_count = _ip_for_limit(ip)
        enrolment_id = secrets.token_urlsafe(16)
        code = f"{secrets.randbelow(1_000_000):06d}"
        expires = now + self.settings.code_ttl_s
        row = {
            "id": enrolment_id,
            "store_id": store_id,
            "phone": e164,
            "phone_hmac": phone_hmac,
            "name": clean,
            "crm_id": crm_id,
            "language": language,
            "consent_sms": int(bool(consent_sms)),
            "consent_recognition": int(bool(consent_recognition)),
            "text_version": text.version,
            "text_sha256": text.sha256,
            "mac_hmac": cipher.mac_lookup(mac) if mac else None,
            "mac_enc": cipher.encrypt_mac(mac) if mac else None,
            "source": source,
            "ip": ip,
            "user_agent": (user_agent or "")[:300] or None,
            "code_hash": cipher.code_hash(enrolment_id, code),
            "attempts": 0,
            "status": "pending",
            "created": now,
            "expires": expires,
        }
        limited: str | None = None
        with self.store.transaction():  # count and insert atomically: limits hold under load
            # PostgreSQL: one worker at a time per phone and per IP (SQLite's BEGIN IMMEDIATE
            # already serialises every writer)
            self.store.lock_for(
                [f"enrol-phone:{phone_hmac}", *([f"enrol-ip:{ip_count}"] if ip else [])]
            )
            if now - self._swept >= SWEEP_EVERY_S:  # a table scan: not on every request
                self.store.expire_enrolments(now)
                self._swept = now
            from_ip = 0
            if ip and ip_count != ip:  # an IPv6 /64
                from_ip = self.store.count_enrolments(hour_ago, ip_prefix=ip_count)
            elif ip:
                from_ip = self.store.count_enrolments(hour_ago, ip=ip)
            if from_ip >= self.settings.enrolments_per_ip_per_hour:
                limited = "IP"
            elif self.store.count_enrolments(hour_ago, phone_hmac=phone_hmac) >= (
                self.settings.codes_per_phone_per_hour
            ):
                limited = "phone"
            else:
                self.store.insert_enrolment(row)
        if limited is not None:
            log.info("enrolment refused: per-%s rate limit (store %s)", limited, store_id)
            raise RateLimited(f"too many requests for this {limited}")
        minutes = max(1, round(self.settings.code_ttl_s / 60))
        result = self.provider.send(
            e164, store.sender_name, code_sms(language, store.sender_name, code, minutes)
        )
        if result.status == "failed":
            self.store.update_enrolment(enrolment_id, status="failed", code_hash=None)
            # the provider's error text may quote the number: not logged
            log.warning("enrolment code not sent (store %s)", store_id)
            raise SendFailed("the code could not be sent")
        self.store.update_enrolment(enrolment_id, code_message_id=result.provider_id)
        log.info("enrolment started (store %s, source %s)", store_id, source)
        return Started(enrolment_id, expires)

    def confirm(self, enrolment_id: str, code: str, now: float) -> Confirmed:
        """Check the code; on success record the consents with proof and enrol the device."""
        outcome: Confirmed | EnrolmentError
        store = self.store
        cipher = store.cipher
        with store.transaction():
            # PostgreSQL: one confirmation at a time per enrolment (attempts are counted
            # exactly) and per phone (one customer per number); SQLite's BEGIN IMMEDIATE
            # already serialises every writer.
            store.lock_for([f"enrolment:{enrolment_id[:64]}"])
            row = store.enrolment(enrolment_id) if len(enrolment_id) <= 64 else None
            if row is not None:
                store.lock_for([f"enrol-phone:{row['phone_hmac']}"])
            if row is None or row["status"] != "pending":
                outcome = CodeClosed("unknown, used or closed enrolment")
            elif row["expires"] <= now:
                store.expire_enrolments(now)
                outcome = CodeClosed("the code expired")
            elif not hmac.compare_digest(
                cipher.code_hash(enrolment_id, (code or "").strip()[:12]), row["code_hash"] or ""
            ):
                attempts = row["attempts"] + 1
                left = self.settings.code_attempts - attempts
                if left <= 0:
                    store.update_enrolment(
                        enrolment_id,
                        attempts=attempts,
                        status="failed",
                        code_hash=None,
                        phone="",
                        name="",
                        mac_enc=None,
                        mac_hmac=None,
                    )
                    outcome = CodeClosed("attempts exhausted")
                else:
                    store.update_enrolment(enrolment_id, attempts=attempts)
                    outcome = WrongCode(left)
            else:
                outcome = self._apply(row, now)
        if isinstance(outcome, EnrolmentError):
            log.info("enrolment confirm refused: %s", type(outcome).__name__)
            raise outcome
        log.info("enrolment confirmed (store %s)", row["store_id"] if row else "-")
        return outcome

    def _apply(self, row: dict[str, Any], now: float) -> Confirmed:
        """Inside the confirm transaction: customer, device, consents with proof, suppression."""
        store, cipher = self.store, self.store.cipher
        phone, crm_id = row["phone"], row["crm_id"]
        # Only a caller with the enrol.link scope names a CRM id (checked at the API): such an
        # enrolment may attach to that customer. Without one, the customer is found by the
        # phone that just confirmed the code, so only that phone's holder changes them.
        linked = crm_id is not None
        customer = store.customer_row(crm_id) if crm_id else None
        if customer is None:
            by_phone = store.customers_by_phone(phone)
            customer = by_phone[0] if by_phone else None
            if customer is not None and crm_id and customer["crm_id"].startswith(WEB_CRM_PREFIX):
                store.set_crm_id(customer["id"], crm_id)  # the CRM id arrives later: adopt it
                customer["crm_id"] = crm_id
        if customer is None:
            crm_id = crm_id or WEB_CRM_PREFIX + secrets.token_hex(8)
            customer_id = store.upsert_customer(
                crm_id,
                subject_id(self.subject_key, crm_id),
                row["name"],
                phone,
                None,
                now,
                source=row["source"],
            )
        else:
            customer_id, crm_id = customer["id"], customer["crm_id"]
            if customer["phone"] != phone:
                # An app named this CRM id with a new number: the verified number is the one
                # offers may go to from now on.
                store.upsert_customer(
                    crm_id,
                    customer["subject"],
                    customer["name"],
                    phone,
                    customer["favourite_product"],
                    now,
                )
        device = False
        if row["mac_enc"] is not None:
            mac = cipher.decrypt_mac(row["mac_enc"])
            # A MAC is the caller's word (an API field, a captive-portal parameter): only a
            # CRM-linked enrolment may move it away from another customer; otherwise it stays
            # with whoever holds it, so nobody is tracked through someone else's phone.
            if linked or not self._held_by_others(mac, customer_id, now):
                store.add_device(
                    customer_id,
                    mac,
                    now,
                    now + self.settings.device_ttl_days * 86400,
                    source=row["source"],
                    store_id=row["store_id"],
                    take_over=linked,
                )
                device = True
            else:
                log.info("enrolment: device kept by its enrolled owner (store %s)", row["store_id"])
        proof = {
            "method": "sms-code",
            "enrolment_id": row["id"],
            "text_version": row["text_version"],
            "text_sha256": row["text_sha256"],
            "language": row["language"],
            "consented_at": iso_utc(row["created"]),
            "store_id": row["store_id"],
            "source": row["source"],
            "ip": row["ip"],
            "user_agent": row["user_agent"],
            "code_message_id": row["code_message_id"],
            "confirmed_at": iso_utc(now),
        }
        for kind, ticked in (
            ("sms", row["consent_sms"]),
            ("recognition", row["consent_recognition"]),
        ):
            if ticked:
                store.record_consent(
                    customer_id, kind, "active", now, row["text_version"], proof=proof
                )
        # A fresh, provable consent lifts an erasure's suppression of this phone (and CRM id).
        store.clear_suppression("phone", cipher.lookup("phone", phone))
        if row["crm_id"]:
            store.clear_suppression("crm", cipher.lookup("crm", row["crm_id"]))
        store.update_enrolment(
            row["id"],
            status="confirmed",
            confirmed=now,
            customer_id=customer_id,
            code_hash=None,
            phone="",
            name="",
            mac_enc=None,
        )
        return Confirmed(customer_id, crm_id, store.latest_consents(customer_id), device)

    def _optout_allowed(self, key: str, now: float) -> bool:
        """Count one portal opt-out from this address key, unless its hourly limit is used."""
        hour_ago = now - 3600
        with self._optouts_lock:
            if len(self._optouts) > 10_000:  # forget addresses idle for an hour
                self._optouts = {k: v for k, v in self._optouts.items() if v[-1] > hour_ago}
            recent = [t for t in self._optouts.get(key, []) if t > hour_ago]
            if len(recent) >= self.settings.optouts_per_ip_per_hour:
                self._optouts[key] = recent
                return False
            self._optouts[key] = [*recent, now]
            return True

    def _held_by_others(self, mac: bytes, customer_id: int, now: float) -> bool:
        """Another live customer has this MAC enrolled and unexpired."""
        rows = self.store.query(
            "SELECT 1 FROM devices d JOIN customers c ON c.id=d.customer_id WHERE d.mac_hmac=? "
            "AND c.erased IS NULL AND d.customer_id<>? AND (d.expires IS NULL OR d.expires>?) "
            "LIMIT 1",
            [self.store.cipher.mac_lookup(mac), customer_id, now],
        )
        return bool(rows)

    def opt_out(
        self, store_id: str, phone: str, now: float, ip: str | None, user_agent: str | None
    ) -> None:
        """Withdraw both consents of whoever has this number; same answer either way."""
        store = self.store_info(store_id)
        try:
            e164 = normalise_phone(phone, store.country)
        except PhoneError as exc:
            raise InvalidInput([("phone", f"phone number {exc}")]) from None
        if not self._optout_allowed(address_key(ip), now):
            log.info("opt-out refused: per-IP rate limit (store %s)", store_id)
            raise RateLimited("too many opt-outs from this address")
        proof = {
            "source": "portal opt-out",
            "store_id": store_id,
            "ip": ip,
            "user_agent": (user_agent or "")[:300] or None,
            "at": iso_utc(now),
        }
        with self.store.transaction():
            for customer in self.store.customers_by_phone(e164):
                latest = self.store.latest_consents(customer["id"])
                for kind in ("sms", "recognition"):
                    if latest.get(kind) == "active":
                        self.store.record_consent(customer["id"], kind, "revoked", now, None, proof)


# -- HTTP --------------------------------------------------------------------------------------

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parents[1] / "web" / "templates"))


def default_enrolments(store: BridgeStore, settings: BridgeSettings | None = None) -> Enrolments:
    """From the bridge settings (the configured provider, ``enrol`` settings, the subject key
    under data_dir); without settings: sandbox provider, defaults, keys next to the database
    (a SQLite file; a PostgreSQL store needs the settings)."""
    from cloud_bridge.delivery.providers import make_provider
    from cloud_bridge.sensors.keys import BridgeKeys

    if settings is not None:
        return Enrolments(
            store,
            settings.enrol,
            make_provider(settings.provider, store),
            BridgeKeys(settings.data_dir).subject_key,
        )
    if str(store.path) == ":memory:":
        subject_key = secrets.token_bytes(32)
    elif store.postgres:
        # No directory of its own: keys "next to the database" would land in the cwd.
        raise RuntimeError(
            f"{store.where}: a PostgreSQL store keeps no key files: the enrolment page needs "
            "the bridge settings (its data_dir holds the subject key)"
        )
    else:
        subject_key = BridgeKeys(store.path.parent).subject_key
    return Enrolments(store, EnrolSettings(), SandboxProvider(store), subject_key)


class EnrolmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_id: str = Field(description="store the customer enrols at")
    phone: str = Field(description="mobile number; national numbers use the store's country")
    name: str = Field(description="the customer's name, used in offers")
    language: Literal["ru", "hy", "en"] = Field(description="language of the consent text shown")
    consent_sms: bool = Field(description="consent (a): marketing SMS")
    consent_recognition: bool = Field(description="consent (b): phone recognition near the store")
    text_version: str | None = Field(
        None, description="consent text version shown (default current)"
    )
    mac: str | None = Field(None, description="the phone's MAC on the store's Wi-Fi, if known")
    crm_id: str | None = Field(
        None,
        description="the customer's id in the caller's CRM (needs the enrol.link token scope)",
    )
    source: Literal["api", "crm"] = Field(
        "api", description="who collected the consent ('crm' needs the enrol.link token scope)"
    )


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="the 6-digit code from the SMS", max_length=12)


def _client(request: Request) -> tuple[str | None, str | None]:
    return (request.client.host if request.client else None), request.headers.get("user-agent")


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[:16384].decode("utf-8", errors="replace")
    return {k: v[0] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}


def _continue_url(params: dict[str, str]) -> str:
    """Where the captive portal wants the client to go next, if it is a plain http(s) URL."""
    for name in CONTINUE_PARAMS:
        value = params.get(name, "")
        if re.match(r"^https?://[^\s<>\"']+$", value) and len(value) < 2000:
            return value
    return ""


def _require_scope(request: Request, settings: EnrolSettings, scope: str, what: str) -> None:
    """401 without the right bearer token, 403 when the token lacks ``scope``."""
    token = settings.api_token
    if token is None:
        raise HTTPException(403, f"{what} is off: set enrol.api_token with the scope {scope}")
    given = request.headers.get("authorization", "")
    ok = hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode())
    if not ok:
        raise HTTPException(
            401,
            f"{what} needs 'Authorization: Bearer <enrol.api_token>' with the scope {scope}",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if scope not in settings.api_token_scopes:
        raise HTTPException(
            403, f"{what}: enrol.api_token lacks the scope {scope} (enrol.api_token_scopes)"
        )


def _error_json(exc: EnrolmentError) -> JSONResponse:
    body: dict[str, Any] = {"detail": str(exc)}
    if isinstance(exc, InvalidInput):
        body["problems"] = [{"field": f, "problem": p} for f, p in exc.problems]
    if isinstance(exc, WrongCode):
        body["attempts_left"] = exc.attempts_left
    return JSONResponse(body, status_code=exc.status)


def router(
    store: BridgeStore,
    settings: BridgeSettings | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The portal pages and the JSON API. The app's ``state.enrolments`` (an ``Enrolments``)
    is used when set (tests inject one), else one is built from ``settings`` on first use."""
    api = APIRouter()

    def get(request: Request) -> Enrolments:
        state = request.app.state
        if getattr(state, "enrolments", None) is None:
            state.enrolments = default_enrolments(store, settings)
        enrolments: Enrolments = state.enrolments
        return enrolments

    def store_or_404(request: Request, store_id: str) -> tuple[Enrolments, StoreInfo]:
        enrolments = get(request)
        try:
            return enrolments, enrolments.store_info(store_id)
        except UnknownStore:
            raise HTTPException(404, "unknown store") from None

    def language(request: Request, info: StoreInfo, chosen: str | None = None) -> str:
        return pick_language(
            chosen or request.query_params.get("lang"),
            request.headers.get("accept-language"),
            info.country,
        )

    def page(
        request: Request, template: str, info: StoreInfo, lang: str, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        w = words(lang)
        base = {
            "store": info,
            "lang": lang,
            "languages": LANGUAGE_NAMES,
            "w": w,
            "title": w["title"].format(store=info.name),
            "text": consent_text(get(request).settings.consent_version, lang),
            "cont": "",
            "device": "",
        }
        return TEMPLATES.TemplateResponse(request, template, {**base, **ctx}, status_code=status)

    # portal pages -------------------------------------------------------------------------
    @api.get("/enrol/{store_id}", response_class=HTMLResponse)
    def portal(request: Request, store_id: str) -> HTMLResponse:
        enrolments, info = store_or_404(request, store_id)
        params = dict(request.query_params)
        lang = language(request, info)
        mac = enrolments.mac_from_params(params) or enrolments.open_device(params.get("device", ""))
        cont = _continue_url(params)
        if mac is not None and enrolments.refresh_device(store_id, mac, clock()):
            return page(request, "enrol_welcome.html", info, lang, cont=cont)
        device = enrolments.seal_device(mac) if mac else ""
        return page(
            request, "enrol_form.html", info, lang, device=device, cont=cont, form={}, errors={}
        )

    @api.post("/enrol/{store_id}", response_class=HTMLResponse)
    async def portal_start(request: Request, store_id: str) -> HTMLResponse:
        enrolments, info = store_or_404(request, store_id)
        form = await _form(request)
        lang = language(request, info, form.get("lang"))
        mac = enrolments.open_device(form.get("device", ""))
        ip, ua = _client(request)
        ctx = {
            "device": form.get("device", "") if mac else "",
            "cont": _continue_url({"url": form.get("cont", "")}),
            "form": form,
        }
        try:
            started = await run_in_threadpool(
                partial(
                    enrolments.start,
                    store_id=store_id,
                    phone=form.get("phone", ""),
                    name=form.get("name", ""),
                    language=lang,
                    consent_sms=form.get("consent_sms") == "yes",
                    consent_recognition=form.get("consent_recognition") == "yes" and bool(mac),
                    source="portal",
                    now=clock(),
                    mac=mac,
                    ip=ip,
                    user_agent=ua,
                )
            )
        except InvalidInput as exc:
            w = words(lang)
            errors = {f: w[f"err_{f}"] for f, _ in exc.problems if f"err_{f}" in w}
            return page(request, "enrol_form.html", info, lang, 422, errors=errors, **ctx)
        except (RateLimited, SendFailed) as exc:
            errors = {"form": words(lang)[exc.word]}
            return page(request, "enrol_form.html", info, lang, exc.status, errors=errors, **ctx)
        return page(
            request,
            "enrol_code.html",
            info,
            lang,
            enrolment_id=started.enrolment_id,
            cont=ctx["cont"],
            error="",
        )

    @api.post("/enrol/{store_id}/confirm", response_class=HTMLResponse)
    async def portal_confirm(request: Request, store_id: str) -> HTMLResponse:
        enrolments, info = store_or_404(request, store_id)
        form = await _form(request)
        lang = language(request, info, form.get("lang"))
        cont = _continue_url({"url": form.get("cont", "")})
        enrolment_id = form.get("enrolment_id", "")
        try:
            await run_in_threadpool(enrolments.confirm, enrolment_id, form.get("code", ""), clock())
        except WrongCode as exc:
            error = words(lang)["err_code"].format(left=exc.attempts_left)
            return page(
                request,
                "enrol_code.html",
                info,
                lang,
                400,
                enrolment_id=enrolment_id,
                cont=cont,
                error=error,
            )
        except CodeClosed:
            return page(request, "enrol_closed.html", info, lang, 410, cont=cont)
        return page(request, "enrol_done.html", info, lang, cont=cont)

    @api.get("/enrol/{store_id}/optout", response_class=HTMLResponse)
    def optout_page(request: Request, store_id: str) -> HTMLResponse:
        _, info = store_or_404(request, store_id)
        return page(request, "enrol_optout.html", info, language(request, info), done=False)

    @api.post("/enrol/{store_id}/optout", response_class=HTMLResponse)
    async def optout(request: Request, store_id: str) -> HTMLResponse:
        enrolments, info = store_or_404(request, store_id)
        form = await _form(request)
        lang = language(request, info, form.get("lang"))
        ip, ua = _client(request)
        try:
            await run_in_threadpool(
                enrolments.opt_out, store_id, form.get("phone", ""), clock(), ip, ua
            )
        except InvalidInput:
            error = words(lang)["err_phone"]
            return page(request, "enrol_optout.html", info, lang, 422, done=False, error=error)
        except RateLimited as exc:
            error = words(lang)[exc.word]
            return page(request, "enrol_optout.html", info, lang, 429, done=False, error=error)
        return page(request, "enrol_optout.html", info, lang, done=True)

    # JSON API -----------------------------------------------------------------------------
    @api.get("/api/v1/consent-text")
    def api_consent_text(
        request: Request, language: str = "en", version: str | None = None
    ) -> dict[str, str]:
        """The consent text an app must show, with the version and hash to send back."""
        try:
            text = consent_text(version or get(request).settings.consent_version, language)
        except ConsentTextError as exc:
            raise HTTPException(404, str(exc)) from None
        return {
            "version": text.version,
            "language": text.language,
            "sha256": text.sha256,
            "text": text.text,
        }

    @api.post("/api/v1/enrolments", status_code=202)
    def api_start(request: Request, body: EnrolmentIn) -> Response:
        """Start a double opt-in: the customer gets a code by SMS. Naming ``crm_id`` (or
        ``source`` crm) needs the bearer token ``enrol.api_token`` with the scope enrol.link."""
        enrolments = get(request)
        if body.crm_id is not None or body.source == "crm":
            _require_scope(
                request, enrolments.settings, "enrol.link", "naming crm_id or source crm"
            )
        ip, ua = _client(request)
        mac = None
        if body.mac:
            try:
                mac = parse_mac(body.mac)
            except ValueError:
                return _error_json(InvalidInput([("mac", "mac is not a MAC address")]))
            if mac[0] & 1:
                return _error_json(InvalidInput([("mac", "mac is a group address")]))
        try:
            started = enrolments.start(
                store_id=body.store_id,
                phone=body.phone,
                name=body.name,
                language=body.language,
                consent_sms=body.consent_sms,
                consent_recognition=body.consent_recognition,
                source=body.source,
                now=clock(),
                mac=mac,
                crm_id=body.crm_id,
                ip=ip,
                user_agent=ua,
                text_version=body.text_version,
            )
        except EnrolmentError as exc:
            return _error_json(exc)
        body_out = {
            "enrolment_id": started.enrolment_id,
            "status": "code_sent",
            "expires_at": iso_utc(started.expires),
        }
        return JSONResponse(body_out, status_code=202)

    @api.post("/api/v1/enrolments/{enrolment_id}/confirm")
    def api_confirm(request: Request, enrolment_id: str, body: ConfirmIn) -> Response:
        """Confirm with the code from the SMS; the consents become active with their proof."""
        try:
            done = get(request).confirm(enrolment_id, body.code, clock())
        except EnrolmentError as exc:
            return _error_json(exc)
        return JSONResponse(
            {
                "status": "confirmed",
                "crm_id": done.crm_id,
                "consents": done.consents,
                "device_enrolled": done.device_enrolled,
            }
        )

    @api.delete("/api/v1/customers/{crm_id}")
    def api_erase(request: Request, crm_id: str) -> dict[str, Any]:
        """Erase a customer (bearer token ``enrol.api_token`` with the scope customers.erase)."""
        _require_scope(request, get(request).settings, "customers.erase", "the erasure API")
        if not erase_customer(store, crm_id, clock()):
            raise HTTPException(404, "no such customer")
        return {"erased": True}

    return api
