"""Offer policy (pure): event + customer + campaigns + history + now -> Send or Skip(reason).

No IO and no clock: the caller passes ``now``. Checks run in a fixed order (the table below);
the first failing check is the reason, so "why didn't Anna get it?" has one plain answer.
The cap check here is advisory; the store re-checks it atomically when it reserves the send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from datetime import time as dtime
from typing import Final
from zoneinfo import ZoneInfo

from cloud_bridge.templates import TemplateError, render

__all__ = [
    "REASONS",
    "Campaign",
    "Customer",
    "StoreInfo",
    "Event",
    "Policy",
    "Send",
    "Skip",
    "decide",
    "within_hours",
]

# Every reason code a decision can carry, with its plain-words explanation.
REASONS: Final[dict[str, str]] = {
    "sent": "all checks passed; the SMS was sent",
    "unknown_subject": "the device matched no customer on the bridge (roster out of date?)",
    "unknown_store": "the event came from a store the bridge does not know",
    "no_sms_consent": "the customer has no active consent to marketing SMS",
    "no_recognition_consent": "the customer has no active consent to phone recognition",
    "stale_event": "the event is older than the offer lifetime; proximity is now or never",
    "no_campaign": "no active campaign covers this store and trigger",
    "quiet_hours": "outside the store's sending hours (dropped, not deferred)",
    "campaign_cap": "the customer already got this campaign within its cap window",
    "overall_cap": "the customer reached the cap across all campaigns",
    "template_error": "the campaign text could not be rendered for this customer",
}


@dataclass(frozen=True, slots=True)
class StoreInfo:
    id: str
    name: str
    timezone: str
    country: str
    sender_name: str
    send_start: str = "09:00"
    send_end: str = "21:00"


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    crm_id: str
    name: str
    phone: str
    favourite_product: str | None
    consent_sms: bool
    consent_recognition: bool


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str
    trigger: str
    template: str
    stores: tuple[str, ...] = ()
    status: str = "active"
    cap_count: int = 1
    cap_days: int = 30
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str
    store_id: str
    subject: str
    ts: float


@dataclass(frozen=True, slots=True)
class Policy:
    overall_cap: int = 4
    overall_days: int = 30
    offer_ttl_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Send:
    campaign: Campaign
    text: str
    sender: str


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str
    detail: str
    campaign_id: str | None = None


def _clock(s: str) -> dtime | None:
    """'HH:MM' -> time; '24:00' -> None (end of day)."""
    if s == "24:00":
        return None
    hh, mm = s.split(":")
    return dtime(int(hh), int(mm))


def within_hours(store: StoreInfo, now: float) -> bool:
    """Is ``now`` inside the store's sending hours, in the store's own time zone?"""
    local = datetime.fromtimestamp(now, ZoneInfo(store.timezone)).time()
    start, end = _clock(store.send_start), _clock(store.send_end)
    start = start or dtime(0, 0)
    return local >= start and (end is None or local < end)


def _first_name(name: str) -> str:
    return name.split()[0] if name.strip() else name


def decide(
    event: Event,
    store: StoreInfo | None,
    customer: Customer | None,
    campaigns: list[Campaign],
    history: list[tuple[str, float]],
    now: float,
    policy: Policy = Policy(),
) -> Send | Skip:
    """Decide one presence event. ``history`` is (campaign_id, sent_at) of the customer's sends."""
    if store is None:
        return Skip("unknown_store", f"store {event.store_id!r} is not configured")
    if customer is None:
        return Skip("unknown_subject", "no customer has this subject id")
    if not customer.consent_sms:
        return Skip("no_sms_consent", "marketing SMS consent is missing or revoked")
    if not customer.consent_recognition:
        return Skip("no_recognition_consent", "recognition consent is missing or revoked")
    if now - event.ts > policy.offer_ttl_s:
        return Skip(
            "stale_event", f"event is {now - event.ts:.0f} s old (limit {policy.offer_ttl_s:.0f} s)"
        )
    eligible = [
        c
        for c in campaigns
        if c.status == "active"
        and c.trigger == event.type
        and (not c.stores or store.id in c.stores)
    ]
    if not eligible:
        return Skip("no_campaign", f"no active campaign for trigger {event.type!r} in this store")
    if not within_hours(store, now):
        return Skip(
            "quiet_hours", f"store hours {store.send_start}-{store.send_end} {store.timezone}"
        )
    recent_all = [ts for _, ts in history if ts >= now - policy.overall_days * 86400]
    if len(recent_all) >= policy.overall_cap:
        return Skip("overall_cap", f"{len(recent_all)} SMS in {policy.overall_days} days")
    capped: Skip | None = None
    for campaign in sorted(eligible, key=lambda c: -c.priority):
        window = now - campaign.cap_days * 86400
        got = sum(1 for cid, ts in history if cid == campaign.id and ts >= window)
        if got >= campaign.cap_count:
            capped = capped or Skip(
                "campaign_cap",
                f"{got} of {campaign.cap_count} in {campaign.cap_days} days",
                campaign.id,
            )
            continue
        variables = {
            "first_name": _first_name(customer.name),
            "favourite_product": customer.favourite_product or "",
            "store_name": store.name,
        }
        try:
            text = render(campaign.template, variables)
        except TemplateError as exc:
            return Skip("template_error", str(exc), campaign.id)
        return Send(campaign, text, store.sender_name)
    return capped or Skip("no_campaign", "no eligible campaign")
