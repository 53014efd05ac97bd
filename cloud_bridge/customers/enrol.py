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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloud_bridge.addresses import address_key
from cloud_bridge.config import BridgeSettings, EnrolSettings
from cloud_bridge.customers import consent as ledger
from cloud_bridge.customers.consent_texts import (
    LANGUAGES,
    ConsentTextError,
    code_sms,
    consent_text,
)
from cloud_bridge.customers.phones import PhoneError, normalise_phone
from cloud_bridge.delivery.providers import Provider, SandboxProvider
from cloud_bridge.offers.decide import StoreInfo
from cloud_bridge.storage.customers import mac_held_by_others
from cloud_bridge.storage.datakey import DataKeyError
from cloud_bridge.storage.store import BridgeStore
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
    "default_enrolments",
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
            if ticked:  # the code just confirmed is the freshest confirmation there is
                ledger.grant(
                    store, customer_id, kind, confirmed_at=now, now=now,
                    text_version=row["text_version"], proof=proof,
                )  # fmt: skip
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
        return mac_held_by_others(self.store, self.store.cipher.mac_lookup(mac), customer_id, now)

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
                for kind in ledger.KINDS:
                    ledger.revoke(self.store, customer["id"], kind, at=now, proof=proof)


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
