"""Offer policy (pure): event + store + customer + campaigns + history + now -> Send or Skip.

No IO and no clock: the caller passes ``now`` and everything the decision depends on, so the
same inputs always give the same answer (and ``cloud-bridge explain`` can show it). Everything
that shapes a decision is a table at the top of this module; the defaults (caps, sending hours,
the country hours, the send states that count) are defined once in ``offers/policy.py``.

Checks run in a fixed order. First the checks about the customer and the moment, in this
order: store known, customer known, not erased, marketing SMS consent, recognition consent,
event fresh (not older than the offer lifetime, not dated more than the allowed clock skew
ahead of ``now``), inside the store's sending hours (store hours narrowed by the country's legal
minimum, in the store's own time zone, so DST is handled by the tz database), an active
campaign for this store and trigger, cross-campaign cap, store daily budget. Then each
candidate campaign, highest priority first: schedule (dates, weekdays, hours), dwell, signal,
audience (segment and rules), opt-out guard, budget, per-campaign cap. The first campaign that
passes is chosen; the customer is then either in its holdout group (``Skip("holdout")``, the
would-be send is recorded to measure lift) or gets the variant assigned to them
(``Send(campaign, variant, text)``). Otherwise the reason of the highest-priority candidate
that failed is the answer. Every decision carries its ``trace``: the chain of checks in plain
words.

Holdout and variant assignment is a keyed hash of (campaign, customer): deterministic, stable
across restarts and processes, and uniform.

The cap and budget checks here are advisory; the store re-checks them atomically when it
reserves the send (``BridgeStore.reserve_offer``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from functools import lru_cache
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from cloud_bridge.clock import DEFAULT_MAX_SKEW_S, future_problem
from cloud_bridge.offers.policy import (
    CAP_COUNT,
    CAP_DAYS,
    COUNTRY_HOURS,
    OVERALL_CAP,
    OVERALL_DAYS,
    SEND_END,
    SEND_START,
)
from cloud_bridge.offers.templates import TemplateError, render

__all__ = [
    "REASONS",
    "DECISION_REASONS",
    "SEND_REASONS",
    "SEGMENTS",
    "RULE_FIELDS",
    "RULE_OPS",
    "COUNTRY_HOURS",
    "WEEKDAYS",
    "STATUSES",
    "TRIGGERS",
    "Audience",
    "Campaign",
    "CampaignBook",
    "Check",
    "Counters",
    "Customer",
    "Event",
    "History",
    "Policy",
    "Rule",
    "Schedule",
    "Send",
    "Skip",
    "StoreInfo",
    "Variant",
    "assign",
    "decide",
    "local_day_start",
    "local_time",
    "optout_guard_trips",
    "rule_holds",
    "rule_value",
    "rule_words",
    "segment_of",
    "sending_window",
    "unit_pair",
    "within_hours",
]

# What a decision to send reads once its SMS moves on from 'reserved' (store.decision_of_send;
# delivery moves it, the engine never decides these).
SEND_REASONS: Final[dict[str, str]] = {
    "sent": "all checks passed; the provider accepted the SMS",
    "delivered": "all checks passed; the SMS was delivered to the phone",
    "undelivered": "all checks passed; the provider accepted the SMS but could not deliver it",
    "unknown": "all checks passed; the provider's answer was lost: the bridge asks it what became "
    "of the SMS and never sends it blindly again",
    "failed": "all checks passed, but the SMS was not sent: refused by the provider, or consent, "
    "number or erasure stopped it before sending",
    "expired": "all checks passed, but the offer expired before the SMS could be sent",
    "shed": "all checks passed, but the bridge dropped the SMS unsent: its send queue was full, "
    "or its turn would have come after the offer expired (more SMS than the provider's rate)",
}

# Every reason code the engine's decision is stored with, with its plain-words explanation, in
# check order (a send: 'reserved' until the provider accepts it).
DECISION_REASONS: Final[dict[str, str]] = {
    "reserved": "all checks passed; the SMS is reserved and on its way: the provider has not "
    "accepted it yet",
    "holdout": "all checks passed, but the customer is in the campaign's holdout group: no SMS; "
    "the would-be send is recorded to measure the campaign's lift",
    "unknown_store": "the event came from a store the bridge does not know",
    "unknown_subject": "the device matched no customer on the bridge (roster out of date?)",
    "erased": "the customer was erased on request",
    "no_sms_consent": "the customer has no active consent to marketing SMS",
    "no_recognition_consent": "the customer has no active consent to phone recognition",
    "stale_event": "the event is older than the offer lifetime; proximity is now or never",
    "future_event": "the event is dated ahead of the bridge's clock by more than the allowed "
    "skew: the sensor's clock is wrong",
    "quiet_hours": "outside the store's sending hours (dropped, not deferred)",
    "no_campaign": "no active campaign covers this store and trigger",
    "overall_cap": "the customer reached the cap across all campaigns",
    "store_budget": "the store's daily SMS budget is used up",
    "out_of_schedule": "outside the campaign's dates, weekdays or hours",
    "short_dwell": "the customer has not been near the store long enough for the campaign",
    "weak_signal": "the phone's signal was weaker than the campaign's minimum (too far away)",
    "audience": "the customer is not in the campaign's audience (segment or rules)",
    "optout_guard": "the campaign's opt-out rate is above the guard; it is being paused",
    "campaign_budget": "the campaign has used up its SMS budget",
    "campaign_cap": "the customer already got this campaign within its cap window",
    "template_error": "the campaign text could not be rendered for this customer",
}

# Every reason a stored decision can read, with its plain-words explanation.
REASONS: Final[dict[str, str]] = {**DECISION_REASONS, **SEND_REASONS}

# Audience segments, computed from the CRM fields and the visits the sensors saw.
SEGMENTS: Final[dict[str, str]] = {
    "newcomer": "fewer than Policy.regular_visits known visits, and not lapsed",
    "regular": "at least Policy.regular_visits known visits, and not lapsed",
    "lapsed": "known before (a visit or purchase) but no visit or purchase for "
    "Policy.lapsed_days days",
}

# Fields an audience rule may test: name -> (kind, what it is).
RULE_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "loyalty_tier": ("text", "loyalty tier from the CRM"),
    "favourite_product": ("text", "the product the customer buys most often (CRM)"),
    "visits": ("number", "known visits: the CRM's count plus visits the sensors saw"),
    "visits_in_days": ("number", "visits the sensors saw in the last `days` days"),
    "days_since_first_purchase": ("number", "days since the first purchase (CRM)"),
}

# Rule operators -> plain words; which ones apply to which kind of field.
RULE_OPS: Final[dict[str, str]] = {
    "in": "is one of",
    "not_in": "is none of",
    "eq": "equals",
    "ne": "differs from",
    "gte": "is at least",
    "lte": "is at most",
    "gt": "is more than",
    "lt": "is less than",
    "exists": "is known",
    "missing": "is not known",
}
OPS_FOR_KIND: Final[dict[str, frozenset[str]]] = {
    "text": frozenset({"in", "not_in", "exists", "missing"}),
    "number": frozenset({"eq", "ne", "gte", "lte", "gt", "lt", "exists", "missing"}),
}

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STATUSES: Final = ("draft", "active", "paused", "ended")
TRIGGERS: Final = ("arrive", "visit")
DAY: Final = 86400.0


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreInfo:
    id: str
    name: str
    timezone: str
    country: str
    sender_name: str
    send_start: str = SEND_START
    send_end: str = SEND_END
    daily_budget: int | None = None  # SMS per local day; None = no limit


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    crm_id: str
    name: str
    phone: str
    favourite_product: str | None
    consent_sms: bool
    consent_recognition: bool
    loyalty_tier: str | None = None
    visits: int | None = None  # the CRM's visit count
    first_purchase: str | None = None  # YYYY-MM-DD
    visit_times: tuple[float, ...] = ()  # visits the sensors saw before this event
    last_purchase: float | None = None  # latest imported purchase
    erased: bool = False


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    template: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Rule:
    field: str
    op: str
    value: tuple[str, ...] | float | None = None
    days: int | None = None


@dataclass(frozen=True, slots=True)
class Audience:
    segments: tuple[str, ...] = ()  # empty: every segment
    rules: tuple[Rule, ...] = ()  # all must hold


@dataclass(frozen=True, slots=True)
class Schedule:
    start_date: str | None = None  # YYYY-MM-DD, store local, inclusive
    end_date: str | None = None  # inclusive
    weekdays: tuple[int, ...] = ()  # 0 = Monday; empty: every day
    hours: tuple[str, str] | None = None  # store local, [start, end)


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str
    trigger: str
    template: str  # the single text of a campaign without variants
    stores: tuple[str, ...] = ()  # empty: every store
    status: str = "active"
    cap_count: int = CAP_COUNT
    cap_days: int = CAP_DAYS
    priority: int = 0
    variants: tuple[Variant, ...] = ()
    holdout_pct: float = 0.0
    budget: int | None = None  # SMS over the campaign's life; None = no limit
    audience: Audience = Audience()
    schedule: Schedule = Schedule()
    min_dwell_s: float = 0.0
    min_rssi: float | None = None
    rssi_stat: str = "median"  # which of the event's RSSI figures min_rssi applies to

    def all_variants(self) -> tuple[Variant, ...]:
        return self.variants or (Variant("A", self.template),)


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str
    store_id: str
    subject: str
    ts: float  # the sensor's clock
    rssi_max: float | None = None
    rssi_median: float | None = None
    dwell_s: float = 0.0
    received: float | None = None  # when the bridge stored it (the bridge's clock)


@dataclass(frozen=True, slots=True)
class Policy:
    overall_cap: int = OVERALL_CAP
    overall_days: int = OVERALL_DAYS
    offer_ttl_s: float = 600.0
    max_clock_skew_s: float = DEFAULT_MAX_SKEW_S
    regular_visits: int = 3
    lapsed_days: int = 60
    optout_max_rate: float = 0.02
    optout_min_sends: int = 200


@dataclass(frozen=True, slots=True)
class History:
    """One customer's past: SMS that count against caps, and holdout would-be sends."""

    sends: tuple[tuple[str, float], ...] = ()  # (campaign id, ts)
    holdouts: tuple[tuple[str, float], ...] = ()  # (campaign id, ts)


@dataclass(frozen=True, slots=True)
class Counters:
    """Shared figures budgets and the opt-out guard need (advisory: re-checked atomically)."""

    campaign_sends: Mapping[str, int] = field(default_factory=dict)  # lifetime, per campaign
    store_sends_today: int = 0  # this store, its local day
    optouts: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # id -> (sends, opt-outs)


class Check(NamedTuple):
    """One step of a decision: which check, passed or not, plain words, campaign if any."""

    code: str
    ok: bool
    words: str
    campaign_id: str | None = None


# -- outputs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    campaign: Campaign
    variant: Variant
    text: str
    sender: str = ""
    trace: tuple[Check, ...] = ()
    segment: str = ""


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str
    detail: str
    campaign_id: str | None = None
    trace: tuple[Check, ...] = ()
    holdout: bool = False
    segment: str = ""


# -- campaign index -------------------------------------------------------------------------


class CampaignBook:
    """Campaigns indexed by (store, trigger), highest priority first: a decision looks at the
    few that can apply, not at every campaign. Build once per campaign change."""

    __slots__ = ("campaigns", "_by_id", "_by_store", "_anywhere", "_memo")

    def __init__(self, campaigns: Iterable[Campaign]) -> None:
        self.campaigns: tuple[Campaign, ...] = tuple(campaigns)
        self._by_id = {c.id: c for c in self.campaigns}
        self._by_store: dict[tuple[str, str], list[Campaign]] = {}
        self._anywhere: dict[str, list[Campaign]] = {}
        for c in self.campaigns:
            if c.stores:
                for s in c.stores:
                    self._by_store.setdefault((s, c.trigger), []).append(c)
            else:
                self._anywhere.setdefault(c.trigger, []).append(c)
        self._memo: dict[tuple[str, str], tuple[tuple[Campaign, ...], tuple[Campaign, ...]]] = {}

    def candidates(self, store_id: str, trigger: str) -> tuple[Campaign, ...]:
        """Every campaign for this store and trigger, whatever its status, best first."""
        return self.split(store_id, trigger)[0] + self.split(store_id, trigger)[1]

    def split(
        self, store_id: str, trigger: str
    ) -> tuple[tuple[Campaign, ...], tuple[Campaign, ...]]:
        """(active, not active) campaigns for this store and trigger, best first."""
        key = (store_id, trigger)
        found = self._memo.get(key)
        if found is None:
            both = self._by_store.get(key, []) + self._anywhere.get(trigger, [])
            ranked = sorted(both, key=lambda c: (-c.priority, c.id))
            found = (
                tuple(c for c in ranked if c.status == "active"),
                tuple(c for c in ranked if c.status != "active"),
            )
            self._memo[key] = found
        return found

    def get(self, campaign_id: str) -> Campaign | None:
        return self._by_id.get(campaign_id)


# -- helpers --------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _minutes(hhmm: str) -> int:
    """'HH:MM' -> minutes after midnight; '24:00' -> 1440."""
    hh, mm = hhmm.split(":")
    return int(hh) * 60 + int(mm)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@lru_cache(maxsize=1024)
def _window(start: str, end: str, country: str) -> tuple[int, int, str]:
    """Effective sending hours in minutes [start, end) and how they came about."""
    s, e = _minutes(start), _minutes(end)
    legal = COUNTRY_HOURS.get(country)
    if legal is None:
        return s, e, f"{start}-{end}"
    ls, le = _minutes(legal[0]), _minutes(legal[1])
    es, ee = max(s, ls), min(e, le)
    if (es, ee) == (s, e):
        return s, e, f"{start}-{end}"
    return (
        es,
        ee,
        f"{_hhmm(es)}-{_hhmm(ee)} (store {start}-{end}, {country} legal {legal[0]}-{legal[1]})",
    )


def sending_window(store: StoreInfo) -> tuple[int, int, str]:
    """The store's sending hours after the country's legal minimum: (start, end, words)."""
    return _window(store.send_start, store.send_end, store.country)


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def local_time(store: StoreInfo, now: float) -> datetime:
    """``now`` on the store's wall clock (DST included, from the tz database)."""
    return datetime.fromtimestamp(now, _zone(store.timezone))


def local_day_start(store: StoreInfo, now: float) -> float:
    """Epoch of the store's local midnight that began the day ``now`` falls in."""
    local = local_time(store, now)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def within_hours(store: StoreInfo, now: float) -> bool:
    """Is ``now`` inside the store's sending hours (and the country's), in the store's zone?"""
    local = local_time(store, now)
    start, end, _ = sending_window(store)
    m = local.hour * 60 + local.minute
    return start <= m < end


@lru_cache(maxsize=4096)
def _day_epoch(day: str) -> float:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp()


def unit_pair(campaign_id: str, customer_id: int) -> tuple[float, float]:
    """Two independent uniform numbers in [0, 1) fixed by (campaign, customer): the halves of
    one BLAKE2b digest (holdout, variant)."""
    digest = hashlib.blake2b(f"{campaign_id}\x1f{customer_id}".encode(), digest_size=16).digest()
    return (
        int.from_bytes(digest[:8], "big") / 18446744073709551616.0,
        int.from_bytes(digest[8:], "big") / 18446744073709551616.0,
    )


def assign(campaign: Campaign, customer_id: int) -> tuple[bool, Variant]:
    """(in holdout?, variant) of a customer in a campaign: deterministic and uniform."""
    variants = campaign.all_variants()
    if campaign.holdout_pct <= 0 and len(variants) == 1:
        return False, variants[0]
    u_hold, u_var = unit_pair(campaign.id, customer_id)
    holdout = u_hold * 100.0 < campaign.holdout_pct
    if len(variants) == 1:
        return holdout, variants[0]
    u = u_var * sum(v.weight for v in variants)
    for v in variants:
        u -= v.weight
        if u < 0:
            return holdout, v
    return holdout, variants[-1]


def _last_activity(customer: Customer) -> float | None:
    last = max(customer.visit_times) if customer.visit_times else None
    for ts in (
        customer.last_purchase,
        _day_epoch(customer.first_purchase) if customer.first_purchase else None,
    ):
        if ts is not None and (last is None or ts > last):
            last = ts
    return last


def segment_of(customer: Customer, now: float, policy: Policy = Policy()) -> str:
    """newcomer / regular / lapsed (see SEGMENTS)."""
    known = (customer.visits or 0) + len(customer.visit_times)
    last = _last_activity(customer)
    if last is not None and now - last > policy.lapsed_days * DAY:
        return "lapsed"
    return "regular" if known >= policy.regular_visits else "newcomer"


def optout_guard_trips(sends: int, optouts: int, policy: Policy = Policy()) -> bool:
    """Pause a campaign whose opt-outs / sends exceed the limit once it has enough sends."""
    return sends >= policy.optout_min_sends and optouts > policy.optout_max_rate * sends


def rule_value(rule: Rule, customer: Customer, now: float) -> str | float | None:
    """The customer's value of the rule's field (None when unknown)."""
    f = rule.field
    if f == "loyalty_tier":
        return customer.loyalty_tier or None
    if f == "favourite_product":
        return customer.favourite_product or None
    if f == "visits":
        return float((customer.visits or 0) + len(customer.visit_times))
    if f == "visits_in_days":
        since = now - (rule.days or 0) * DAY
        return float(sum(1 for ts in customer.visit_times if ts >= since))
    if f == "days_since_first_purchase":
        if not customer.first_purchase:
            return None
        return float(int((now - _day_epoch(customer.first_purchase)) // DAY))
    return None


def rule_holds(rule: Rule, have: str | float | None) -> bool:
    """Does the rule hold for this value (``rule_value``)?"""
    op = rule.op
    if op == "exists":
        return have is not None
    if op == "missing":
        return have is None
    if have is None:
        return False
    if isinstance(have, str):
        wanted = rule.value if isinstance(rule.value, tuple) else ()
        hit = have.casefold() in {w.casefold() for w in wanted}
        return hit if op == "in" else not hit
    ref = rule.value if isinstance(rule.value, int | float) else 0.0
    return {
        "eq": have == ref,
        "ne": have != ref,
        "gte": have >= ref,
        "lte": have <= ref,
        "gt": have > ref,
        "lt": have < ref,
    }.get(op, False)


_rule_value, _rule_holds = rule_value, rule_holds  # older names (console)


def rule_words(rule: Rule) -> str:
    name = rule.field.replace("_", " ")
    if rule.field == "visits_in_days":
        name = f"visits in the last {rule.days} days"
    if rule.op in ("exists", "missing"):
        return f"{name} {RULE_OPS[rule.op]}"
    value = (
        ", ".join(rule.value)
        if isinstance(rule.value, tuple)
        else f"{rule.value:g}"
        if isinstance(rule.value, int | float)
        else "?"
    )
    return f"{name} {RULE_OPS.get(rule.op, rule.op)} {value}"


def _show(v: str | float | None) -> str:
    if v is None:
        return "unknown"
    return f"{v:g}" if isinstance(v, float) else repr(v)


def _first_name(name: str) -> str:
    return name.split()[0] if name.strip() else name


def _campaign_fails(
    c: Campaign,
    event: Event,
    customer: Customer,
    segment: str,
    local: datetime,
    history: History,
    counters: Counters,
    now: float,
    policy: Policy,
) -> tuple[str, str] | None:
    """The first check this campaign fails for this customer, as (code, words); None if none."""
    s = c.schedule
    if s.start_date or s.end_date or s.weekdays or s.hours:
        today = local.date().isoformat()
        if s.start_date and today < s.start_date:
            return "out_of_schedule", f"the campaign starts on {s.start_date} (today is {today})"
        if s.end_date and today > s.end_date:
            return "out_of_schedule", f"the campaign ended on {s.end_date} (today is {today})"
        if s.weekdays and local.weekday() not in s.weekdays:
            days = ", ".join(WEEKDAYS[d] for d in s.weekdays)
            return "out_of_schedule", f"it runs on {days}; today is {WEEKDAYS[local.weekday()]}"
        if s.hours:
            m = local.hour * 60 + local.minute
            if not _minutes(s.hours[0]) <= m < _minutes(s.hours[1]):
                return (
                    "out_of_schedule",
                    f"it runs {s.hours[0]}-{s.hours[1]}; it is {_hhmm(m)} at the store",
                )
    if c.min_dwell_s and event.dwell_s < c.min_dwell_s:
        return (
            "short_dwell",
            f"near the store {event.dwell_s:.0f} s, campaign needs {c.min_dwell_s:.0f} s",
        )
    if c.min_rssi is not None:
        rssi = event.rssi_max if c.rssi_stat == "max" else event.rssi_median
        if rssi is None or rssi < c.min_rssi:
            heard = "no signal reading" if rssi is None else f"{rssi:.0f} dBm"
            return (
                "weak_signal",
                f"signal ({c.rssi_stat}) {heard}, campaign needs {c.min_rssi:.0f} dBm",
            )
    a = c.audience
    if a.segments and segment not in a.segments:
        return (
            "audience",
            f"the customer is a {segment}; the campaign is for {', '.join(a.segments)}",
        )
    for rule in a.rules:
        have = rule_value(rule, customer, now)
        if not rule_holds(rule, have):
            return "audience", f"rule '{rule_words(rule)}' does not hold (it is {_show(have)})"
    stats = counters.optouts.get(c.id)
    if stats is not None and optout_guard_trips(stats[0], stats[1], policy):
        return "optout_guard", (
            f"{stats[1]} opt-outs in {stats[0]} sends "
            f"({stats[1] / stats[0]:.1%} > {policy.optout_max_rate:.0%})"
        )
    if c.budget is not None:
        used = counters.campaign_sends.get(c.id, 0)
        if used >= c.budget:
            return "campaign_budget", f"{used} of {c.budget} SMS used"
    window = now - c.cap_days * DAY
    got = sum(1 for cid, ts in history.sends if cid == c.id and ts >= window)
    got += sum(1 for cid, ts in history.holdouts if cid == c.id and ts >= window)
    if got >= c.cap_count:
        return "campaign_cap", f"{got} of {c.cap_count} in {c.cap_days} days"
    return None


def decide(
    event: Event,
    store: StoreInfo | None,
    customer: Customer | None,
    campaigns: CampaignBook | Sequence[Campaign],
    history: History | Sequence[tuple[str, float]],
    now: float,
    policy: Policy = Policy(),
    counters: Counters = Counters(),
) -> Send | Skip:
    """Decide one presence event (see the module docstring for the order of checks).

    ``history`` is the customer's History (or just (campaign id, sent at) of their SMS)."""
    if not isinstance(history, History):
        history = History(sends=tuple(history))
    book = campaigns if isinstance(campaigns, CampaignBook) else CampaignBook(campaigns)
    trace: list[Check] = []

    def skip(code: str, words: str, campaign_id: str | None = None, seg: str = "") -> Skip:
        trace.append(Check(code, False, words, campaign_id))
        return Skip(code, words, campaign_id, tuple(trace), segment=seg)

    if store is None:
        return skip("unknown_store", f"store {event.store_id!r} is not configured")
    trace.append(Check("store", True, f"store {store.id} is known ({store.timezone})"))
    if customer is None:
        return skip("unknown_subject", "no customer has this subject id")
    if customer.erased:
        return skip("erased", "the customer was erased on request")
    trace.append(Check("customer", True, "the device belongs to a known customer"))
    if not customer.consent_sms:
        return skip("no_sms_consent", "marketing SMS consent is missing or revoked")
    if not customer.consent_recognition:
        return skip("no_recognition_consent", "recognition consent is missing or revoked")
    trace.append(Check("consent", True, "marketing SMS and recognition consents are active"))
    age = now - event.ts
    if age > policy.offer_ttl_s:
        return skip("stale_event", f"event is {age:.0f} s old (limit {policy.offer_ttl_s:.0f} s)")
    skew = policy.max_clock_skew_s
    future = future_problem([("event", event.ts)], now, skew)
    if future is not None:  # stored before ingest checked times, or by another path
        return skip("future_event", future)
    if age < 0:
        words = (
            f"event is dated {-age:.0f} s ahead of the bridge's clock, within the allowed "
            f"{skew:.0f} s"
        )
    else:
        words = f"event is {age:.0f} s old"
    trace.append(Check("fresh", True, words))
    local = local_time(store, now)
    start, end, words = sending_window(store)
    minute = local.hour * 60 + local.minute
    if not start <= minute < end:
        return skip(
            "quiet_hours",
            f"it is {_hhmm(minute)} ({store.timezone}); sending hours {words}",
        )
    trace.append(Check("hours", True, f"it is {_hhmm(minute)} at the store, within {words}"))
    active, inactive = book.split(store.id, event.type)
    for c in inactive:
        trace.append(Check("inactive", False, f"campaign {c.id} is {c.status}", c.id))
    if not active:
        return skip("no_campaign", f"no active campaign for trigger {event.type!r} in this store")
    window = now - policy.overall_days * DAY
    recent = sum(1 for _, ts in history.sends if ts >= window)
    if recent >= policy.overall_cap:
        return skip(
            "overall_cap",
            f"{recent} SMS in {policy.overall_days} days (cap {policy.overall_cap})",
        )
    trace.append(
        Check(
            "overall_cap",
            True,
            f"{recent} SMS in {policy.overall_days} days, under the cap of {policy.overall_cap}",
        )
    )
    if store.daily_budget is not None:
        if counters.store_sends_today >= store.daily_budget:
            return skip(
                "store_budget", f"{counters.store_sends_today} of {store.daily_budget} SMS today"
            )
        trace.append(
            Check(
                "store_budget",
                True,
                f"{counters.store_sends_today} of {store.daily_budget} SMS today",
            )
        )
    segment = segment_of(customer, now, policy)
    first: tuple[str, str, str] | None = None
    for c in active:
        failed = _campaign_fails(c, event, customer, segment, local, history, counters, now, policy)
        if failed is not None:
            trace.append(Check(failed[0], False, failed[1], c.id))
            if first is None:
                first = (failed[0], failed[1], c.id)
            continue
        trace.append(
            Check("campaign", True, f"campaign {c.id} applies (customer is a {segment})", c.id)
        )
        holdout, variant = assign(c, customer.id)
        if holdout:
            words = f"customer is in the {c.holdout_pct:g}% holdout of {c.id}: no SMS"
            trace.append(Check("holdout", False, words, c.id))
            return Skip("holdout", words, c.id, tuple(trace), holdout=True, segment=segment)
        variables = {
            "first_name": _first_name(customer.name),
            "favourite_product": customer.favourite_product or "",
            "store_name": store.name,
        }
        try:
            text = render(variant.template, variables)
        except TemplateError as exc:
            return skip("template_error", str(exc), c.id, segment)
        trace.append(Check("sent", True, f"variant {variant.id} of {c.id}", c.id))
        return Send(c, variant, text, store.sender_name, tuple(trace), segment)
    assert first is not None  # active is not empty
    # the chain already holds every campaign's failure: the answer is the first one
    return Skip(first[0], first[1], first[2], tuple(trace), segment=segment)
