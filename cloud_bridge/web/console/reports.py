"""Report pages (every role; a store owner only their stores): the funnel (detections ->
eligible -> sent -> delivered -> returns) by store, campaign, variant and date range; skip
reasons; opt-out rate against the 2 % line; lift vs holdout with its 95 % interval and stores
ranked by conversion (``cloud_bridge.reports.figures``); CSV export; server-side SVG charts."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from cloud_bridge.offers.decide import REASONS
from cloud_bridge.reports.figures import Report, day_of, exposure_report, refresh_figures
from cloud_bridge.storage.report_figures import (
    FigureFilter,
    campaign_ids,
    detections,
    eligible_decisions,
    exposure_filter,
    optouts_by_campaign,
    send_state_rows,
    sends_by_campaign,
    sent_and_delivered,
    skip_reason_rows,
)
from cloud_bridge.storage.store import BridgeStore, decision_of_send
from cloud_bridge.web.auth import Principal
from cloud_bridge.web.console.charts import COLORS, hbars
from cloud_bridge.web.console.common import check_store, page, visible_stores
from cloud_bridge.web.dependencies import Anyone, Store

__all__ = ["router", "Filters", "funnel", "skip_reasons", "send_outcomes", "optout_rates"]

DateQ = Annotated[date | None, Query(description="YYYY-MM-DD (UTC), inclusive")]
RETURN_DAYS = 14
OPTOUT_LINE = 0.02
OPTOUT_WINDOW_DAYS = 30
SENT = ("accepted", "delivered", "undelivered", "unknown")
# Skips that come before any campaign could apply: the customer was not eligible at all.
NOT_ELIGIBLE = (
    "unknown_store",
    "unknown_subject",
    "erased",
    "no_sms_consent",
    "no_recognition_consent",
    "stale_event",
    "future_event",
    "no_campaign",
)


@dataclass(frozen=True)
class Filters:
    start: date
    end: date  # inclusive
    store_id: str | None = None
    campaign_id: str | None = None
    variant: str | None = None

    @property
    def since(self) -> float:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp()

    @property
    def until(self) -> float:
        e = self.end + timedelta(days=1)
        return datetime(e.year, e.month, e.day, tzinfo=UTC).timestamp()

    def query(self) -> str:
        parts = [f"start={self.start}", f"end={self.end}"]
        for k in ("store_id", "campaign_id", "variant"):
            if getattr(self, k):
                parts.append(f"{k}={getattr(self, k)}")
        return "&".join(parts)


def _days(f: Filters) -> list[Any]:
    """The filters' UTC days as the daily figures number them: first, last (exclusive)."""
    return [day_of(f.since), day_of(f.until)]


def _figures(f: Filters, me: Principal) -> FigureFilter:
    """The filters and the principal's stores as the report figures take them."""
    return FigureFilter(me.scope, f.store_id, f.campaign_id, f.variant)


def report_of(store: BridgeStore, f: Filters, me: Principal, now: float) -> Report:
    """Returns and lift over the exposures that match the filters (and the principal's stores);
    a variant filter keeps the campaign's holdout to compare with."""
    where, args = exposure_filter(_figures(f, me))
    return exposure_report(store, now, RETURN_DAYS, f.since, f.until, where, args, refresh=False)


def funnel(store: BridgeStore, f: Filters, me: Principal, report: Report) -> dict[str, int]:
    """Detections (arrive and visit events), decisions of eligible customers, SMS sent and
    delivered, returns; from the daily figures (``refresh_figures`` first)."""
    days, fig = _days(f), _figures(f, me)
    sends = sent_and_delivered(store, days, fig, SENT)
    returns = sum(line.returns for line in report.stores)
    return {
        "detections": int(detections(store, days, fig)),
        "eligible": int(eligible_decisions(store, days, fig, NOT_ELIGIBLE)),
        "sent": int(sends["sent"]),
        "delivered": int(sends["delivered"]),
        "returns": int(returns),
    }


def skip_reasons(store: BridgeStore, f: Filters, me: Principal) -> list[dict[str, Any]]:
    rows = skip_reason_rows(store, _days(f), _figures(f, me))
    for r in rows:
        r["n"] = int(r["n"])
        r["explanation"] = REASONS.get(r["reason"], r["reason"])
    return rows


def send_outcomes(store: BridgeStore, f: Filters, me: Principal) -> list[dict[str, Any]]:
    """What became of the SMS the decisions reserved, as their decisions read it (reserved,
    sent, delivered, undelivered, unknown, failed, expired, shed), from the daily figures."""
    counts: dict[str, int] = {}
    for r in send_state_rows(store, _days(f), _figures(f, me)):
        reason = decision_of_send(r["state"])
        counts[reason] = counts.get(reason, 0) + int(r["n"])
    return [
        {"outcome": k, "n": n, "explanation": REASONS.get(k, k)}
        for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def optout_rates(store: BridgeStore, f: Filters, me: Principal) -> list[dict[str, Any]]:
    """Per campaign: sends in the period and customers who opted out of SMS within 30 days
    after one of them; the rate against the 2 % line. Sends from the daily figures; opt-outs
    from the SMS consent revocations that can follow a send of the period (few)."""
    fig = _figures(f, me)
    rows = sends_by_campaign(store, _days(f), fig, SENT)
    window = OPTOUT_WINDOW_DAYS * 86400
    optouts = optouts_by_campaign(store, fig, f.since, f.until, window, SENT)
    for r in rows:
        r["sends"] = int(r["sends"])
        r["optouts"] = optouts.get(r["campaign_id"], 0)
        r["rate"] = r["optouts"] / r["sends"] if r["sends"] else None
        r["over_line"] = r["rate"] is not None and r["rate"] > OPTOUT_LINE
    return rows


def _line(x: Any) -> dict[str, Any]:
    return asdict(x)


def build(store: BridgeStore, f: Filters, me: Principal, now: float) -> dict[str, Any]:
    if f.store_id:
        check_store(me, f.store_id)
    refresh_figures(store, RETURN_DAYS)
    rep = report_of(store, f, me, now)
    return {
        "filters": {
            "start": f.start.isoformat(),
            "end": f.end.isoformat(),
            "store_id": f.store_id,
            "campaign_id": f.campaign_id,
            "variant": f.variant,
        },
        "funnel": funnel(store, f, me, rep),
        "skip_reasons": skip_reasons(store, f, me),
        "send_outcomes": send_outcomes(store, f, me),
        "optout": optout_rates(store, f, me),
        "optout_line": OPTOUT_LINE,
        "return_days": RETURN_DAYS,
        "campaigns": [_line(x) for x in rep.campaigns],
        "variants": [_line(x) for x in rep.variants],
        "campaign_stores": [_line(x) for x in rep.campaign_stores],
        "stores_ranked": [_line(x) for x in rep.stores],
    }


def _filters(
    start: date | None, end: date | None, store_id: str | None, campaign_id: str | None,
    variant: str | None, now: float,
) -> Filters:  # fmt: skip
    today = datetime.fromtimestamp(now, UTC).date()
    end = end or today
    start = start or end - timedelta(days=29)
    if start > end:
        start, end = end, start
    return Filters(start, end, store_id or None, campaign_id or None, variant or None)


CSV_COLUMNS = (
    "section", "campaign_id", "variant", "store_id", "sends", "returns", "return_rate",
    "holdout", "holdout_returns", "holdout_rate", "lift", "lift_lo", "lift_hi", "revenue",
    "cost", "open",
)  # fmt: skip


def to_csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["# passby report", *(f"{k}={v}" for k, v in data["filters"].items() if v)])
    w.writerow(["funnel", *data["funnel"].keys()])
    w.writerow(["funnel", *data["funnel"].values()])
    w.writerow(["skip_reason", "count"])
    for r in data["skip_reasons"]:
        w.writerow([r["reason"], r["n"]])
    w.writerow(["send_outcome", "count"])
    for r in data["send_outcomes"]:
        w.writerow([r["outcome"], r["n"]])
    w.writerow(["optout", "campaign_id", "sends", "optouts", "rate"])
    for r in data["optout"]:
        w.writerow(["optout", r["campaign_id"], r["sends"], r["optouts"], r["rate"]])
    w.writerow(CSV_COLUMNS)
    for section in ("campaigns", "variants", "campaign_stores", "stores_ranked"):
        for line in data[section]:
            w.writerow([section, *(line.get(c) for c in CSV_COLUMNS[1:])])
    return out.getvalue()


router = APIRouter()


@router.get("/reports", response_class=HTMLResponse, include_in_schema=False)
def reports_page(
    request: Request,
    me: Anyone,
    store: Store,
    start: date | None = None,
    end: date | None = None,
    store_id: str | None = None,
    campaign_id: str | None = None,
    variant: str | None = None,
) -> HTMLResponse:
    now = time.time()
    f = _filters(start, end, store_id, campaign_id, variant, now)
    data = build(store, f, me, now)
    fun = data["funnel"]
    names = ("detections", "eligible", "sent", "delivered", "returns")
    charts = {
        "funnel": hbars(
            [(n, float(fun[n]), COLORS[i % len(COLORS)]) for i, n in enumerate(names)],
            "Funnel",
        ),
        "skips": hbars(
            [(s["reason"], float(s["n"]), COLORS[1]) for s in data["skip_reasons"][:10]],
            "Skip reasons",
        ),
        "optout": hbars(
            [(o["campaign_id"], o["rate"] or 0.0, COLORS[3] if o["over_line"] else COLORS[2])
             for o in data["optout"]],
            "Opt-out rate by campaign",
            line=OPTOUT_LINE,
            line_label="2 % line",
            fmt=lambda v: f"{v * 100:.1f} %",
        ),
    }  # fmt: skip
    campaigns = campaign_ids(store)
    return page(
        request,
        "reports.html",
        me,
        {
            "d": data,
            "charts": charts,
            "stores": visible_stores(store, me),
            "campaign_ids": campaigns if me.role != "owner" else campaigns,
            "query": f.query(),
        },
        title="Reports",
    )


@router.get("/reports.csv", include_in_schema=False)
def reports_csv(
    me: Anyone,
    store: Store,
    start: DateQ = None,
    end: DateQ = None,
    store_id: str | None = None,
    campaign_id: str | None = None,
    variant: str | None = None,
) -> Response:
    now = time.time()
    f = _filters(start, end, store_id, campaign_id, variant, now)
    body = to_csv(build(store, f, me, now))
    name = f"passby-report-{f.start}-{f.end}.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/api/v1/reports", tags=["reports"])
def api_report(
    me: Anyone,
    store: Store,
    start: DateQ = None,
    end: DateQ = None,
    store_id: str | None = None,
    campaign_id: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Funnel, skip reasons, opt-out rates (2 % line), returns and lift vs holdout (95 %
    Newcombe interval) by campaign, variant and store, stores ranked by conversion. Default
    period: the last 30 days. A store owner gets their stores only."""
    now = time.time()
    return build(store, _filters(start, end, store_id, campaign_id, variant, now), me, now)


@router.get("/api/v1/reports.csv", tags=["reports"], response_class=Response)
def api_report_csv(
    me: Anyone,
    store: Store,
    start: DateQ = None,
    end: DateQ = None,
    store_id: str | None = None,
    campaign_id: str | None = None,
    variant: str | None = None,
) -> Response:
    """The same report as CSV."""
    return reports_csv(me, store, start, end, store_id, campaign_id, variant)
