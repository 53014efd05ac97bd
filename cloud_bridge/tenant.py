"""Load a tenant file (store, customers with devices and consent, campaigns) into the store.

Used by the demo and by ``cloud-bridge seed``. Re-loading the same file changes nothing.
"""

from __future__ import annotations

import secrets
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloud_bridge.config import ConfigError
from cloud_bridge.customers import consent as ledger
from cloud_bridge.customers.erasure import suppressed
from cloud_bridge.delivery.sms_text import sender_kind, validate_template_cost
from cloud_bridge.errors import SenderError, TemplateCostError
from cloud_bridge.offers.policy import CAP_COUNT, CAP_DAYS, SEND_END, SEND_START
from cloud_bridge.offers.templates import TemplateError, validate
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import site_key_rows
from edge_agent.protocol import ID_PATTERN
from edge_agent.roster import parse_mac, subject_id

__all__ = ["StoreDef", "Tenant", "load_tenant", "save_store", "seed"]

HOURS = r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreDef(_M):
    id: str = Field(pattern=ID_PATTERN, description="store id (used in MQTT topics)")
    name: str = Field(min_length=1, description="display name, used in SMS texts")
    timezone: str = Field(description="IANA time zone, e.g. Europe/Moscow")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO country code")
    sender_name: str = Field(
        description="sender: alphanumeric id (1-11 characters, a letter at least) or a number"
    )
    sending_hours: tuple[str, str] = Field(
        (SEND_START, SEND_END), description="local sending hours"
    )
    ap_bssid: str | None = Field(None, description="store access point BSSID")
    ap_ssid: str | None = Field(None, description="store Wi-Fi name")
    channel: int | None = Field(None, ge=1, le=196, description="store AP channel")
    daily_budget: int | None = Field(
        None, ge=0, description="SMS per store-local day across campaigns (unset: no limit)"
    )

    @field_validator("sender_name")
    @classmethod
    def _sender(cls, v: str) -> str:
        try:
            sender_kind(v)
        except SenderError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("sending_hours")
    @classmethod
    def _hours(cls, v: tuple[str, str]) -> tuple[str, str]:
        import re

        for h in v:
            if not re.match(HOURS, h):
                raise ValueError(f"{h!r} is not HH:MM")
        if v[0] >= v[1]:
            raise ValueError("sending hours must start before they end")
        return v


class SensorDef(_M):
    id: str = Field(pattern=ID_PATTERN)


class CustomerDef(_M):
    crm_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    phone: str = Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164 phone number")
    favourite_product: str | None = None
    consent: bool = False
    macs: list[str] = Field(default_factory=list)

    @field_validator("macs")
    @classmethod
    def _macs(cls, v: list[str]) -> list[str]:
        out = []
        for i, mac in enumerate(v):
            try:
                raw = parse_mac(mac)
            except ValueError:
                raise ValueError(f"macs[{i}] is not a MAC address") from None
            if raw[0] & 1:
                raise ValueError(f"macs[{i}] is a group address")
            out.append(mac.lower())
        return out


class CampaignDef(_M):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    trigger: str = Field(pattern=r"^(arrive|visit)$")
    template: str
    stores: list[str] = Field(default_factory=list)
    cap_count: int = Field(CAP_COUNT, ge=1)
    cap_days: int = Field(CAP_DAYS, ge=1)
    priority: int = 0

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            validate(v)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return v


class Tenant(_M):
    store: StoreDef
    # Boxes are added with `cloud-bridge sensors add` (their broker account, token and pairing
    # code live there); an old file's [sensor] section is still read, and ignored.
    sensor: SensorDef | None = None
    customers: list[CustomerDef] = Field(default_factory=list)
    campaigns: list[CampaignDef] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cost(self) -> Tenant:
        # Each text with brand and opt-out must fit the maximum SMS parts (sms_text).
        for i, camp in enumerate(self.campaigns):
            try:
                validate_template_cost(
                    camp.template, store_name=self.store.name, sender=self.store.sender_name
                )
            except TemplateCostError as exc:
                raise ValueError(f"campaigns[{i}].template: {exc}") from None
        return self

    @model_validator(mode="after")
    def _one_phone_one_customer(self) -> Tenant:
        # A phone is one customer: its consent, its STOP (which goes by phone), its offers.
        first: dict[str, tuple[int, str]] = {}
        for i, c in enumerate(self.customers):
            if c.phone in first:
                j, crm_id = first[c.phone]
                raise ValueError(
                    f"customers[{i}].phone: the phone of customers[{j}] ({crm_id}) too"
                )
            first[c.phone] = (i, c.crm_id)
        return self


def load_tenant(path: Path) -> Tenant:
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return Tenant.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {len(exc.errors())} invalid field(s)"]
        for err in exc.errors():
            lines.append("  " + ".".join(str(p) for p in err["loc"]) + ": " + err["msg"])
        raise ConfigError("\n".join(lines)) from None


def save_store(store: BridgeStore, s: StoreDef) -> bool:
    """Insert or update one store from its validated definition; a new store gets a random site
    key, an existing one keeps its own. True when the store is new."""
    existing = site_key_rows(store, s.id)
    store.upsert_store(
        {
            "id": s.id,
            "name": s.name,
            "timezone": s.timezone,
            "country": s.country,
            "sender_name": s.sender_name,
            "send_start": s.sending_hours[0],
            "send_end": s.sending_hours[1],
            "daily_budget": s.daily_budget,
            "site_key": existing[0]["site_key"] if existing else secrets.token_hex(16),
        }
    )
    return not existing


def seed(store: BridgeStore, keys: BridgeKeys, tenant: Tenant, now: float) -> None:
    """Upsert the tenant. Consent in a tenant file is recorded as imported evidence; MACs are
    stored encrypted; customers erased on request (suppressed) are skipped."""
    s = tenant.store
    save_store(store, s)
    for c in tenant.customers:
        if suppressed(store, c.phone, c.crm_id):
            continue  # erased on request: a tenant file cannot bring them back (see erasure.py)
        cid = store.upsert_customer(
            c.crm_id,
            subject_id(keys.subject_key, c.crm_id),
            c.name,
            c.phone,
            c.favourite_product,
            now,
        )
        for mac in c.macs:
            store.add_device(cid, mac, now, expires=None)
        latest = store.latest_consents(cid)
        proof = {"source": "tenant file import", "imported_at": now}
        for kind in ledger.KINDS:
            if c.consent:  # no confirmation time: recorded only where the kind has no record
                ledger.grant(
                    store, cid, kind, confirmed_at=None, now=now,
                    text_version="tenant-import", proof=proof,
                )  # fmt: skip
            elif latest.get(kind) == "active":  # a file's "no" revokes an active consent only
                ledger.revoke(store, cid, kind, at=now, proof=proof)
    for camp in tenant.campaigns:
        store.upsert_campaign(
            {
                "id": camp.id,
                "name": camp.name,
                "trigger": camp.trigger,
                "template": camp.template,
                "stores": camp.stores or [s.id],
                "status": "active",
                "cap_count": camp.cap_count,
                "cap_days": camp.cap_days,
                "priority": camp.priority,
            }
        )
