"""Campaigns: the model, TOML files, validation that names the field, storage (the JSON API is
``cloud_bridge.web.api.campaigns``).

A campaign file holds one campaign (top-level keys) or several (``[[campaigns]]``)::

    [[campaigns]]
    id = "fav-regulars"
    name = "Regulars: 15% off the favourite"
    status = "active"                 # draft | active | paused | ended
    stores = ["main-st"]              # empty: every store
    priority = 10                     # higher wins when several apply
    holdout_pct = 10                  # customers who get no SMS, to measure lift
    budget = 500                      # SMS over the campaign's life (optional)

    [campaigns.trigger]
    type = "arrive"                   # arrive | visit
    min_dwell_s = 0                   # seconds near the store (visit events carry dwell)
    min_rssi = -75                    # dBm; the event's median RSSI (rssi = "max" to change)

    [campaigns.audience]
    segments = ["regular", "lapsed"]  # newcomer | regular | lapsed; empty: everyone
    [[campaigns.audience.rules]]
    field = "loyalty_tier"            # see decide.RULE_FIELDS
    op = "in"                         # see decide.RULE_OPS
    value = ["gold", "silver"]

    [campaigns.schedule]
    start_date = 2026-03-01           # store local dates, inclusive
    end_date = 2026-03-31
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    hours = ["10:00", "20:00"]        # store local; also inside the store's sending hours

    [campaigns.caps]
    count = 1                         # SMS of this campaign per customer ...
    days = 30                         # ... per this many days

    [[campaigns.variants]]
    id = "A"
    template = "{{ first_name }}, 15% off {{ favourite_product }} today at {{ store_name }}."
    [[campaigns.variants]]
    id = "B"
    template = "{{ first_name }}, your {{ favourite_product }}: -15% today only."

Shorthands: ``trigger = "arrive"`` and a single ``template = "..."`` (one variant "A").
Texts are sandboxed Jinja2 templates with the variables of ``templates.VARIABLES``; an unknown
variable, a syntax error, a render error (also with an empty favourite product) or a text that
would take more SMS parts than allowed (``sms_text.validate_template_cost``) is refused when the
campaign is saved, never found at send time. Every problem names its field, e.g.
``campaigns[0].variants[1].template: ...``.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloud_bridge.offers.decide import (
    OPS_FOR_KIND,
    RULE_FIELDS,
    WEEKDAYS,
    Audience,
    Campaign,
    CampaignBook,
    Rule,
    Schedule,
    Variant,
)
from cloud_bridge.offers.policy import CAP_COUNT, CAP_DAYS
from cloud_bridge.offers.templates import VARIABLES, TemplateError, render
from cloud_bridge.storage.store import BridgeStore
from edge_agent.protocol import ID_PATTERN

__all__ = [
    "CampaignDef",
    "CampaignError",
    "Problem",
    "engine_campaign",
    "load_book",
    "read_campaign_file",
    "save_campaigns",
    "to_row",
    "validate_campaigns",
]

HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleDef(_M):
    field: Literal[
        "loyalty_tier", "favourite_product", "visits", "visits_in_days", "days_since_first_purchase"
    ] = Field(description="customer field the rule tests (decide.RULE_FIELDS)")
    op: Literal["in", "not_in", "eq", "ne", "gte", "lte", "gt", "lt", "exists", "missing"] = Field(
        description="comparison (decide.RULE_OPS)"
    )
    value: list[str] | float | str | None = Field(
        None, description="list of texts (in/not_in) or a number (comparisons)"
    )
    days: int | None = Field(None, ge=1, le=3650, description="window of visits_in_days")

    @model_validator(mode="after")
    def _coherent(self) -> RuleDef:
        kind = RULE_FIELDS[self.field][0]
        if self.op not in OPS_FOR_KIND[kind]:
            allowed = ", ".join(sorted(OPS_FOR_KIND[kind]))
            raise ValueError(f"op {self.op!r} does not apply to {self.field} (use {allowed})")
        if self.op in ("exists", "missing"):
            if self.value is not None:
                raise ValueError(f"op {self.op!r} takes no value")
        elif kind == "text":
            if isinstance(self.value, str):
                self.value = [self.value]
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"{self.field} {self.op} needs a list of texts as value")
        elif not isinstance(self.value, int | float) or isinstance(self.value, bool):
            raise ValueError(f"{self.field} {self.op} needs a number as value")
        if (self.field == "visits_in_days") != (self.days is not None):
            raise ValueError("days is required for visits_in_days and only there")
        return self


class AudienceDef(_M):
    segments: list[Literal["newcomer", "regular", "lapsed"]] = Field(
        default_factory=list, description="segments the campaign is for; empty: every segment"
    )
    rules: list[RuleDef] = Field(
        default_factory=list, description="rules over CRM fields and visits; all must hold"
    )


class TriggerDef(_M):
    type: Literal["arrive", "visit"] = Field("arrive", description="presence event that triggers")
    min_dwell_s: float = Field(0.0, ge=0, le=86400, description="minimum seconds near the store")
    min_rssi: float | None = Field(None, ge=-120, le=0, description="minimum signal, dBm")
    rssi: Literal["median", "max"] = Field("median", description="which RSSI figure min_rssi uses")


class ScheduleDef(_M):
    start_date: date | None = Field(None, description="first day (store local), inclusive")
    end_date: date | None = Field(None, description="last day (store local), inclusive")
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=list, description="days of the week it runs; empty: every day"
    )
    hours: tuple[str, str] | None = Field(None, description="store local [start, end) HH:MM")

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        if v is None:
            return v
        for h in v:
            if not HHMM.match(h):
                raise ValueError(f"{h!r} is not HH:MM")
        if v[0] >= v[1]:
            raise ValueError("hours must start before they end")
        return v

    @field_validator("weekdays")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a weekday is listed twice")
        return v

    @model_validator(mode="after")
    def _order(self) -> ScheduleDef:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class VariantDef(_M):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,16}$", description="variant id (A, B, ...)")
    template: str = Field(min_length=1, max_length=1000, description="Jinja2 text of the SMS")
    weight: float = Field(1.0, gt=0, le=1000, description="relative share of customers")

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        check_template(v)
        return v


class CapsDef(_M):
    count: int = Field(
        CAP_COUNT, ge=1, le=100, description="SMS of this campaign per customer per window"
    )
    days: int = Field(CAP_DAYS, ge=1, le=366, description="the cap's window, days")


class CampaignDef(_M):
    id: str = Field(pattern=ID_PATTERN, description="campaign id")
    name: str = Field(min_length=1, max_length=200, description="name shown to marketers")
    status: Literal["draft", "active", "paused", "ended"] = Field("draft", description="status")
    stores: list[str] = Field(default_factory=list, description="store ids; empty: every store")
    trigger: TriggerDef = Field(default_factory=TriggerDef, description="what triggers an offer")
    audience: AudienceDef = Field(default_factory=AudienceDef, description="who gets it")
    schedule: ScheduleDef = Field(default_factory=ScheduleDef, description="when it runs")
    variants: list[VariantDef] = Field(min_length=1, max_length=10, description="texts (A/B)")
    caps: CapsDef = Field(default_factory=CapsDef, description="per-customer frequency cap")
    priority: int = Field(0, ge=-1000, le=1000, description="higher wins when several apply")
    holdout_pct: float = Field(10.0, ge=0, le=50, description="% of customers held out (lift)")
    budget: int | None = Field(None, ge=1, description="SMS over the campaign's life")

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("trigger"), str):
                data["trigger"] = {"type": data["trigger"]}
            if "template" in data and "variants" not in data:
                data["variants"] = [{"id": "A", "template": data.pop("template")}]
        return data

    @model_validator(mode="after")
    def _unique(self) -> CampaignDef:
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError("variant ids must be unique")
        if len(set(self.stores)) != len(self.stores):
            raise ValueError("a store is listed twice")
        return self


def check_template(template: str) -> None:
    """Render with sample values, and again with an empty favourite product and non-Latin
    names (a customer may have none): ValueError naming the problem."""
    samples = [
        {name: f"<{name}>" for name in VARIABLES},
        {"first_name": "Анна", "favourite_product": "", "store_name": "Կենտրոն"},
    ]
    try:
        for values in samples:
            render(template, values)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None


# -- validation in context ------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class CampaignError(ValueError):
    """Campaigns that cannot be saved; ``problems`` name each field."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(map(str, problems)))


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part:
            out += ("." if out else "") + str(part)
    return out


def _cost_problems(
    defn: CampaignDef, prefix: str, stores: dict[str, dict[str, Any]], settings: Any
) -> list[Problem]:
    """SMS parts of each text with brand and opt-out, for each store it may go out from."""
    from cloud_bridge.delivery.sms_text import validate_template_cost
    from cloud_bridge.errors import MessageError

    delivery = getattr(settings, "delivery", None)
    options: dict[str, Any] = {}
    if delivery is not None:
        options = {"max_parts": delivery.max_parts, "translit": delivery.transliterate}
    targets: list[dict[str, Any] | None] = [
        stores[s] for s in (defn.stores or list(stores)) if s in stores
    ]
    out = []
    for i, v in enumerate(defn.variants):
        for st in targets or [None]:
            try:
                if st is None:
                    validate_template_cost(v.template, **options)
                else:
                    validate_template_cost(
                        v.template,
                        store_name=st["name"],
                        sender=st["sender_name"],
                        country=st["country"],
                        **options,
                    )
            except (MessageError, TemplateError) as exc:
                where = f" (store {st['id']})" if st else ""
                out.append(Problem(f"{prefix}variants[{i}].template", f"{exc}{where}"))
                break
    return out


def validate_campaigns(
    raw: list[Any], store: BridgeStore | None = None, settings: Any = None, prefix: str = ""
) -> list[CampaignDef]:
    """Validate campaign dicts; CampaignError with every problem (field named) if any. With a
    store: the stores must exist and each text must fit the SMS part limit for them."""
    known = {r["id"]: r for r in store.store_rows()} if store is not None else {}
    defs: list[CampaignDef] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        at = f"{prefix}[{i}]." if prefix else ""
        try:
            defn = CampaignDef.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                msg = err["msg"].removeprefix("Value error, ")
                where = _loc(at.rstrip("."), err["loc"]) or at.rstrip(".") or "(campaign)"
                problems.append(Problem(where, msg))
            stores = item.get("stores") if isinstance(item, dict) else None
            if store is not None and isinstance(stores, list):
                for j, s in enumerate(stores):
                    if isinstance(s, str) and s not in known:
                        problems.append(Problem(f"{at}stores[{j}]", f"unknown store {s!r}"))
            continue
        if defn.id in seen:
            problems.append(Problem(f"{at}id", f"{defn.id!r} is also campaign [{seen[defn.id]}]"))
        seen[defn.id] = i
        if store is not None:
            for j, s in enumerate(defn.stores):
                if s not in known:
                    problems.append(Problem(f"{at}stores[{j}]", f"unknown store {s!r}"))
            problems += _cost_problems(defn, at, known, settings)
        defs.append(defn)
    if problems:
        raise CampaignError(problems)
    return defs


def read_campaign_file(path: Path) -> tuple[list[Any], str]:
    """The raw campaign tables of a TOML file (one campaign, or ``[[campaigns]]``) and the
    prefix their problems are named with ("campaigns" or "")."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignError([Problem("", str(exc))], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError([Problem("", f"not TOML: {exc}")], str(path)) from None
    if "campaigns" in data:
        extra = sorted(set(data) - {"campaigns"})
        if extra:
            raise CampaignError([Problem(extra[0], "unexpected key next to [[campaigns]]")])
        if not isinstance(data["campaigns"], list):
            raise CampaignError([Problem("campaigns", "must be an array of tables")], str(path))
        return list(data["campaigns"]), "campaigns"
    return [data], ""


# -- storage and the engine's view ----------------------------------------------------------


def to_row(defn: CampaignDef, source: str) -> dict[str, Any]:
    s = defn.schedule
    return {
        "id": defn.id,
        "name": defn.name,
        "trigger": defn.trigger.type,
        "template": defn.variants[0].template,
        "stores": defn.stores,
        "status": defn.status,
        "cap_count": defn.caps.count,
        "cap_days": defn.caps.days,
        "priority": defn.priority,
        "variants": [v.model_dump() for v in defn.variants],
        "holdout_pct": defn.holdout_pct,
        "budget": defn.budget,
        "audience": defn.audience.model_dump(),
        "schedule": {
            "start_date": s.start_date.isoformat() if s.start_date else None,
            "end_date": s.end_date.isoformat() if s.end_date else None,
            "weekdays": list(s.weekdays),
            "hours": list(s.hours) if s.hours else None,
        },
        "min_dwell_s": defn.trigger.min_dwell_s,
        "min_rssi": defn.trigger.min_rssi,
        "rssi_stat": defn.trigger.rssi,
        "source": source,
    }


def save_campaigns(
    store: BridgeStore, defs: list[CampaignDef], source: str, now: float
) -> list[tuple[str, bool]]:
    """Save validated campaigns in one transaction: [(id, new?)]."""
    out = []
    with store.transaction():
        for d in defs:
            out.append((d.id, store.save_campaign(to_row(d, source), now)))
    return out


def _json(text: Any, default: Any) -> Any:
    if text is None or text == "":
        return default
    return json.loads(text) if isinstance(text, str) else text


def row_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A stored campaign in the shape of a campaign file (what the API returns)."""
    variants = _json(row.get("variants"), []) or [{"id": "A", "template": row["template"]}]
    schedule = {k: v for k, v in _json(row.get("schedule"), {}).items() if v not in (None, [])}
    trigger: dict[str, Any] = {"type": row["trigger"], "rssi": row.get("rssi_stat") or "median"}
    if row.get("min_dwell_s"):
        trigger["min_dwell_s"] = row["min_dwell_s"]
    if row.get("min_rssi") is not None:
        trigger["min_rssi"] = row["min_rssi"]
    out: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "stores": _json(row.get("stores"), []),
        "trigger": trigger,
        "audience": _json(row.get("audience"), {}) or {"segments": [], "rules": []},
        "schedule": schedule,
        "variants": variants,
        "caps": {"count": row["cap_count"], "days": row["cap_days"]},
        "priority": row["priority"],
        "holdout_pct": row.get("holdout_pct") or 0.0,
        "budget": row.get("budget"),
    }
    return out


def engine_campaign(row: dict[str, Any]) -> Campaign:
    """A stored campaign row as the pure engine's Campaign (legacy rows included)."""
    variants = tuple(
        Variant(v["id"], v["template"], float(v.get("weight", 1.0)))
        for v in _json(row.get("variants"), [])
    )
    a = _json(row.get("audience"), {})
    rules = tuple(
        Rule(
            r["field"],
            r["op"],
            tuple(r["value"])
            if isinstance(r.get("value"), list)
            else (float(r["value"]) if r.get("value") is not None else None),
            r.get("days"),
        )
        for r in a.get("rules", [])
    )
    s = _json(row.get("schedule"), {})
    hours = s.get("hours")
    return Campaign(
        id=row["id"],
        name=row["name"],
        trigger=row["trigger"],
        template=row["template"],
        stores=tuple(_json(row.get("stores"), [])),
        status=row["status"],
        cap_count=row["cap_count"],
        cap_days=row["cap_days"],
        priority=row["priority"],
        variants=variants,
        holdout_pct=float(row.get("holdout_pct") or 0.0),
        budget=row.get("budget"),
        audience=Audience(tuple(a.get("segments", [])), rules),
        schedule=Schedule(
            s.get("start_date"),
            s.get("end_date"),
            tuple(WEEKDAYS.index(d) for d in s.get("weekdays", [])),
            (hours[0], hours[1]) if hours else None,
        ),
        min_dwell_s=float(row.get("min_dwell_s") or 0.0),
        min_rssi=row.get("min_rssi"),
        rssi_stat=row.get("rssi_stat") or "median",
    )


def load_book(store: BridgeStore) -> CampaignBook:
    return CampaignBook(engine_campaign(r) for r in store.campaign_rows())
