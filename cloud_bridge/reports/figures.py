"""Returns, lift and store ranking; CRM purchases import for revenue.

An *exposure* is a send (an SMS that was not refused, expired or shed) or a holdout customer's
would-be send. An exposure *returns* when the same subject produces a ``visit`` event within
``return_days`` (default 14) after it. For each campaign, variant and store::

    return rate          returns / sends
    holdout return rate  holdout returns / holdout exposures
    lift                 return rate - holdout return rate (percentage points), with a 95 %
                         confidence interval (Newcombe's hybrid score interval for a
                         difference of proportions: sound for small counts and rates near 0)

Variants are compared with their campaign's holdout; a campaign in one store with that
campaign's holdout in the same store. Stores are ranked by conversion (return rate, then the
Wilson lower bound, then volume). With imported purchases, revenue is the customer's purchases
in the same window; incremental revenue = (revenue per send - revenue per holdout exposure) x
sends. Exposures whose window has not closed yet are counted and shown as ``open``.

The statistics at the top are pure functions; ``build_report`` reads the daily figures that
``cloud_bridge.storage.report_figures`` keeps.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cloud_bridge.storage.report_figures import (
    DAY_S,
    day_exposure_sums,
    day_of,
    edge_exposure_sums,
    open_day_sums,
    refresh_figures,
    reset_figures,
)
from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "Line",
    "Report",
    "PurchaseReport",
    "wilson",
    "newcombe_diff",
    "summarise",
    "build_report",
    "exposure_report",
    "refresh_figures",
    "reset_figures",
    "day_of",
    "print_report",
    "import_purchases",
]

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_diff(
    k1: int, n1: int, k2: int, n2: int, z: float = Z95
) -> tuple[float | None, float | None, float | None]:
    """p1 - p2 with Newcombe's hybrid score interval (method 10); None where undefined."""
    if n1 == 0 or n2 == 0:
        return None, None, None
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, lo, hi


@dataclass
class _Acc:
    sends: int = 0
    returns: int = 0
    revenue: float = 0.0
    cost: float = 0.0
    open: int = 0
    h_n: int = 0
    h_returns: int = 0
    h_revenue: float = 0.0


@dataclass(frozen=True)
class Line:
    campaign_id: str | None
    variant: str | None
    store_id: str | None
    sends: int
    returns: int
    return_rate: float | None
    holdout: int
    holdout_returns: int
    holdout_rate: float | None
    lift: float | None
    lift_lo: float | None
    lift_hi: float | None
    revenue: float
    revenue_per_send: float | None
    holdout_revenue_per: float | None
    incremental_revenue: float | None
    cost: float
    open: int
    rate_lo: float | None = None

    @classmethod
    def of(
        cls,
        acc: _Acc,
        hold: _Acc,
        campaign_id: str | None,
        variant: str | None,
        store_id: str | None,
    ) -> Line:
        rate = acc.returns / acc.sends if acc.sends else None
        hrate = hold.h_returns / hold.h_n if hold.h_n else None
        lift, lo, hi = newcombe_diff(acc.returns, acc.sends, hold.h_returns, hold.h_n)
        rps = acc.revenue / acc.sends if acc.sends else None
        hrp = hold.h_revenue / hold.h_n if hold.h_n else None
        incr = (rps - hrp) * acc.sends if rps is not None and hrp is not None else None
        return cls(
            campaign_id,
            variant,
            store_id,
            acc.sends,
            acc.returns,
            rate,
            hold.h_n,
            hold.h_returns,
            hrate,
            lift,
            lo,
            hi,
            acc.revenue,
            rps,
            hrp,
            incr,
            acc.cost,
            acc.open,
            wilson(acc.returns, acc.sends)[0] if acc.sends else None,
        )


@dataclass(frozen=True)
class Report:
    return_days: int
    campaigns: list[Line] = field(default_factory=list)
    variants: list[Line] = field(default_factory=list)
    campaign_stores: list[Line] = field(default_factory=list)
    stores: list[Line] = field(default_factory=list)  # ranked by conversion

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "return_days": self.return_days,
            "campaigns": [asdict(x) for x in self.campaigns],
            "variants": [asdict(x) for x in self.variants],
            "campaign_stores": [asdict(x) for x in self.campaign_stores],
            "stores": [asdict(x) for x in self.stores],
        }


Key = tuple[str, str | None, str | None, str | None]


def _add(
    by: dict[Key, _Acc],
    campaign_id: str | None,
    variant: str | None,
    store_id: str | None,
    holdout: bool,
    n: int,
    returns: int,
    revenue: float,
    cost: float,
    open_: int,
) -> None:
    """Add ``n`` exposures of one campaign, variant, store and holdout flag (with their
    returns, revenue, cost and open windows) to the campaign, variant, campaign x store and
    store lines. Holdouts have no variant: variants use the campaign's holdout."""
    keys: list[Key] = [("c", campaign_id, None, None), ("cs", campaign_id, None, store_id)]
    keys.append(("s", None, None, store_id))
    if not holdout:
        keys.append(("v", campaign_id, variant, None))
    for key in keys:
        acc = by[key]
        if holdout:
            acc.h_n += n
            acc.h_returns += returns
            acc.h_revenue += revenue
        else:
            acc.sends += n
            acc.returns += returns
            acc.revenue += revenue
            acc.cost += cost
            acc.open += open_


def _report(by: dict[Key, _Acc], return_days: int) -> Report:
    report = Report(return_days)
    for (kind, cid, var, sid), acc in sorted(
        by.items(), key=lambda kv: tuple(str(x) for x in kv[0])
    ):
        if kind == "c":
            report.campaigns.append(Line.of(acc, acc, cid, None, None))
        elif kind == "v":
            report.variants.append(Line.of(acc, by["c", cid, None, None], cid, var, None))
        elif kind == "cs":
            report.campaign_stores.append(Line.of(acc, acc, cid, None, sid))
        else:
            report.stores.append(Line.of(acc, acc, None, None, sid))
    report.stores.sort(
        key=lambda x: (
            -(x.return_rate if x.return_rate is not None else -1.0),
            -(x.rate_lo or 0.0),
            -x.sends,
            x.store_id or "",
        )
    )
    return report


def summarise(exposures: Iterable[dict[str, Any]], now: float, return_days: int) -> Report:
    """Aggregate exposure rows (``BridgeStore.exposures``) into the report's lines."""
    by: dict[Key, _Acc] = defaultdict(_Acc)
    window = return_days * 86400
    for e in exposures:
        holdout = bool(e["holdout"])
        _add(
            by, e["campaign_id"], e["variant"], e["store_id"], holdout, 1,
            int(bool(e["returned"])), e["revenue"] or 0.0, e["cost"] or 0.0,
            int(not holdout and e["ts"] + window > now),
        )  # fmt: skip
    return _report(by, return_days)


def build_report(
    store: BridgeStore, now: float, return_days: int = 14, since: float = 0.0
) -> Report:
    """The report over every exposure since ``since``, from the daily figures."""
    return exposure_report(store, now, return_days, since)


def exposure_report(
    store: BridgeStore,
    now: float,
    return_days: int,
    since: float = 0.0,
    until: float | None = None,
    where: str = "1=1",
    args: list[Any] | tuple[Any, ...] = (),
    refresh: bool = True,
) -> Report:
    """The report over exposures from ``since`` to ``until`` (None: all) that match ``where``
    (on store_id, campaign_id, variant, holdout): whole UTC days from the daily sums, parts of
    days at either end and the windows still open at ``now`` from the exposures."""
    if refresh:
        refresh_figures(store, return_days)
    window = return_days * DAY_S
    first = day_of(since) + (since != day_of(since) * DAY_S)
    last = day_of(until) if until is not None else None  # exclusive
    edges: list[tuple[float, float]] = [(since, first * DAY_S)] if since < first * DAY_S else []
    if until is not None and last is not None:
        if last < first:
            first, last, edges = 0, 0, [(since, until)]  # within one day
        elif until > last * DAY_S:
            edges.append((last * DAY_S, until))
    by: dict[Key, _Acc] = defaultdict(_Acc)

    def add(r: dict[str, Any], n: int, open_: int) -> None:
        _add(
            by, r["campaign_id"], r["variant"], r["store_id"], bool(r["holdout"]), n,
            int(r["returns"] or 0), float(r["revenue"] or 0.0), float(r["cost"] or 0.0), open_,
        )  # fmt: skip

    def exposures(lo: float, hi: float, only_open: bool = False) -> list[dict[str, Any]]:
        return edge_exposure_sums(store, now, return_days, lo, hi, where, args, only_open)

    for lo, hi in edges:
        for r in exposures(lo, hi):
            add(r, int(r["n"]), int(r["open"]))
    for r in day_exposure_sums(store, return_days, first, last, where, args):
        add(r, int(r["n"]), 0)
    # Open windows: every send of the days whose first second is still open, from the sums;
    # of the day or two the window's start falls in, from the exposures; none before.
    open_from = day_of(now - window)
    while open_from * DAY_S + window <= now:
        open_from += 1
    while (open_from - 1) * DAY_S + window > now:
        open_from -= 1
    open_from = max(open_from, first)
    zero = {"returns": 0, "revenue": 0.0, "cost": 0.0}
    if last is None or open_from < last:
        for r in open_day_sums(store, return_days, open_from, last, where, args):
            add({**r, **zero}, 0, int(r["open"]))
    lo, hi = max(first * DAY_S, now - window - 1.0), open_from * DAY_S
    if last is not None:
        hi = min(hi, last * DAY_S)
    if lo < hi:
        for r in exposures(lo, hi, only_open=True):
            add({**r, **zero}, 0, int(r["open"]))
    return _report(by, return_days)


# -- printing -------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _pp(x: float | None, lo: float | None, hi: float | None) -> str:
    if x is None or lo is None or hi is None:
        return "-"
    return f"{100 * x:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def print_report(report: Report, console: Any = None) -> None:
    """Rich tables: campaigns, variants, campaign x store, stores ranked by conversion."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)  # piped or redirected: keep every column readable
    columns = [
        "sends",
        "returns",
        "return rate",
        "holdout",
        "holdout rate",
        "lift (95% CI)",
        "revenue",
        "incr. revenue",
        "SMS cost",
        "open",
    ]

    def table(title: str, keys: list[str], lines: list[Line], rank: bool = False) -> None:
        t = Table(title=title)
        if rank:
            t.add_column("#", justify="right")
        for k in keys:
            t.add_column(k)
        for c in columns:
            t.add_column(c, justify="right")
        for i, x in enumerate(lines, 1):
            ids = {"campaign": x.campaign_id or "-", "variant": x.variant or "-"}
            ids["store"] = x.store_id or "-"
            t.add_row(
                *([str(i)] if rank else []),
                *(ids[k] for k in keys),
                str(x.sends),
                str(x.returns),
                _pct(x.return_rate),
                str(x.holdout),
                _pct(x.holdout_rate),
                _pp(x.lift, x.lift_lo, x.lift_hi),
                _money(x.revenue),
                _money(x.incremental_revenue),
                _money(x.cost),
                str(x.open),
            )
        console.print(t)

    days = report.return_days
    if not report.campaigns:
        console.print(f"no sends or holdout exposures yet (returns: a visit within {days} days)")
        return
    table(f"Campaigns (a return: a visit within {days} days)", ["campaign"], report.campaigns)
    table(
        "Variants (lift against the campaign's holdout)", ["campaign", "variant"], report.variants
    )
    table("Campaigns by store", ["campaign", "store"], report.campaign_stores)
    table("Stores ranked by conversion (return rate)", ["store"], report.stores, rank=True)


# -- purchases import -----------------------------------------------------------------------

PURCHASE_FIELDS = ("crm_id", "store_id", "time", "amount", "currency", "order_id")


@dataclass
class PurchaseReport:
    file: str
    rows: int = 0
    added: int = 0
    known: int = 0
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (row, field, problem)
    dry_run: bool = False


def _rows(path: Path, fmt: str | None) -> list[tuple[int, dict[str, Any]]]:
    from cloud_bridge.csv_input import check_header, decode_text, load_json, sniff_delimiter

    kind = fmt or ("json" if path.suffix.lower() == ".json" else "csv")
    text = decode_text(path.read_bytes(), path, csv_file=kind == "csv")
    if kind == "json":
        data = load_json(text, path)
        if isinstance(data, dict):
            data = data.get("purchases", [])
        if not isinstance(data, list):
            raise ValueError("JSON must be a list of purchases or {'purchases': [...]}")
        return [(i, r if isinstance(r, dict) else {}) for i, r in enumerate(data, 1)]
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text))
    check_header(list(reader.fieldnames or []), path, PURCHASE_FIELDS)
    unknown = set(reader.fieldnames or []) - set(PURCHASE_FIELDS)
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(sorted(unknown))}; use {PURCHASE_FIELDS}")
    return [(reader.line_num, dict(r)) for r in reader]


def _when(value: Any, tz: str | None) -> float:
    s = str(value).strip()
    if not s:
        raise ValueError("is empty")
    when = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if when.tzinfo is None:  # a naive time is the store's local time (UTC without a store)
        when = when.replace(tzinfo=ZoneInfo(tz) if tz else UTC)
    return when.timestamp()


def import_purchases(
    store: BridgeStore, path: Path, now: float, fmt: str | None = None, dry_run: bool = False
) -> PurchaseReport:
    """Import CRM purchases (crm_id, store_id, time, amount[, currency, order_id]). Each row is
    checked on its own (the report names row, field and problem); good rows go in one
    transaction; re-importing changes nothing (order_id, else a hash of the row, is unique).
    Purchases of customers erased on request are skipped as suppressed. A CSV must be UTF-8
    (an error names its line and column) and name each column once. ``dry_run`` counts added
    and already-known purchases exactly as the real run would, and keeps nothing."""
    from cloud_bridge.csv_input import TWICE
    from cloud_bridge.customers.erasure import suppressed

    report = PurchaseReport(str(path), dry_run=dry_run)
    stores = {r["id"]: r["timezone"] for r in store.store_rows()}
    good = []
    for line, raw in _rows(path, fmt):
        report.rows += 1

        def bad(f: str, problem: str, line: int = line) -> None:
            report.problems.append((line, f, problem))

        twice = [k for k in getattr(raw, "twice", ()) if k in PURCHASE_FIELDS]
        if twice:
            for k in twice:
                bad(k, TWICE)
            continue
        crm_id = str(raw.get("crm_id") or "").strip()
        if not crm_id:
            bad("crm_id", "is required")
            continue
        customer = store.customer_row(crm_id)
        if customer is None:
            if suppressed(store, None, crm_id):
                bad("crm_id", "customer erased on request: suppressed")
            else:
                bad("crm_id", f"no customer {crm_id!r}")
            continue
        sid = str(raw.get("store_id") or "").strip() or None
        if sid is not None and sid not in stores:
            bad("store_id", f"unknown store {sid!r}")
            continue
        try:
            ts = _when(raw.get("time"), stores.get(sid) if sid else None)
        except ValueError as exc:
            bad("time", f"not an ISO 8601 time ({exc})")
            continue
        try:
            amount = float(str(raw.get("amount", "")).replace(",", ".").strip())
            if not math.isfinite(amount):
                raise ValueError
        except ValueError:
            bad("amount", f"not a number: {raw.get('amount')!r}")
            continue
        order = str(raw.get("order_id") or "").strip()
        ref = (
            f"order:{order}"
            if order
            else "row:"
            + hashlib.sha256(f"{crm_id}\x1f{sid}\x1f{ts}\x1f{amount}".encode()).hexdigest()[:32]
        )
        good.append(
            {
                "ref": ref,
                "customer_id": customer["id"],
                "store_id": sid,
                "ts": ts,
                "amount": amount,
                "currency": (str(raw.get("currency") or "").strip().upper() or None),
            }
        )
    if dry_run:  # the real insert, rolled back: counts what the real run will report
        with store.rolled_back():
            report.added, report.known = store.add_purchases(good, now)
        return report
    report.added, report.known = store.add_purchases(good, now)
    return report
