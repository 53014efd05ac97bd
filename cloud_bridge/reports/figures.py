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

The statistics at the top are pure functions; ``build_report`` reads the store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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


# -- daily figures --------------------------------------------------------------------------
# Reports read figures kept per UTC day and store (migration 8) instead of every row:
#
#   report_event_days      detections (arrive, visit events)           recomputed per store-day
#   report_send_days       sends by campaign, variant and state        recomputed per store-day
#   report_decision_days   decisions by campaign, variant, outcome,    counted once per decision
#                          reason (store: the event's; a send's
#                          reason: 'send', its fate is in sends)
#   report_exposures       per return window, every send and holdout   recomputed per exposure
#                          would-be send: counted (it reached a
#                          customer we have), returned, revenue, cost
#   report_exposure_days   per window, the exposures' daily sums       changed by each exposure's
#                                                                      difference
#
# ``refresh_figures`` finds what changed since it last looked (report_marks) and brings the
# figures up to date, in one transaction no other refresh runs alongside:
#
#   decisions, sends, send_log, purchases   ids above the last one seen; an id below it that was
#                                           missing (PostgreSQL hands ids out before the commit)
#                                           is looked for again for GAP_S
#   events (arrive, visit)                  ``received`` from the last one seen less LOOKBACK_S
#                                           (the ingest's clock: event ids are text), each once
#   erasures                                the number of erased customers changed
#
# A new decision is counted; a new send or a send's state change recomputes its store-day and
# its decision's exposure; a visit, purchase or erasure the exposures of that customer it can
# change. Recomputing is harmless when nothing changed, so the marks other than the decisions'
# may lag; the decisions' count each decision exactly once.

DAY_S = 86400
SEND_REASON = "send"  # the reason report_decision_days counts every decision to send under
DETECTIONS = ("arrive", "visit")
LOOKBACK_S = 60.0
GAP_S = 600.0
MAX_GAPS = 10_000
CHUNK = 500
_GROUP = "store_id, campaign_id, variant, holdout"

# Every exposure as BridgeStore.exposures sees it, with whether it counts (a send that reached
# a customer we have, or a holdout), whether it returned (a visit within the window after it),
# the revenue of the customer's purchases in that window and the SMS cost.
_EXPOSURE_FACTS = (
    "SELECT d.id AS decision_id, d.ts, d.store_id, d.campaign_id, d.variant, d.holdout, "
    "CASE WHEN c.id IS NOT NULL AND (s.id IS NULL OR s.state NOT IN ('failed', 'expired', "
    "'shed')) "
    "THEN 1 ELSE 0 END AS counted, CASE WHEN EXISTS (SELECT 1 FROM events e "
    "WHERE e.subject=c.subject AND e.type='visit' AND e.ts>d.ts AND e.ts-d.ts<=?) "
    "THEN 1 ELSE 0 END AS returned, coalesce((SELECT sum(p.amount) FROM purchases p "
    "WHERE p.customer_id=d.customer_id AND p.ts>d.ts AND p.ts<=d.ts+?), 0) AS revenue, "
    "coalesce(s.cost, 0) AS cost FROM decisions d LEFT JOIN customers c ON c.id=d.customer_id "
    "LEFT JOIN sends s ON s.decision_id=d.id WHERE d.outcome IN ('send', 'holdout')"
)
_FACT_COLUMNS = ("return_days", "decision_id", "day", "ts", "store_id", "campaign_id", "variant",
                 "holdout", "counted", "returned", "revenue", "cost")  # fmt: skip


def day_of(ts: float) -> int:
    """The UTC day number of ``ts``: day * 86400 <= ts < (day + 1) * 86400, exactly."""
    day = int(ts // DAY_S)
    while ts < day * DAY_S:
        day -= 1
    while ts >= (day + 1) * DAY_S:
        day += 1
    return day


def _day_sql(ts: str) -> str:
    """SQL for ``day_of(ts)`` (a quotient rounded up to the next day a hair before midnight is
    put back)."""
    day = f"CAST({ts} / {DAY_S} AS INTEGER)"
    return f"{day} - CASE WHEN {ts} < {day} * {DAY_S} THEN 1 ELSE 0 END"


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
        return store.query(
            f"SELECT {_GROUP}, count(*) AS n, sum(returned) AS returns, sum(revenue) AS revenue, "
            "sum(cost) AS cost, sum(CASE WHEN holdout=0 AND ts+?>? THEN 1 ELSE 0 END) AS open "
            "FROM report_exposures WHERE return_days=? AND counted=1 AND ts>=? AND ts<? "
            f"{'AND holdout=0 AND ts+?>? ' if only_open else ''}AND ({where}) GROUP BY {_GROUP}",
            [window, now, return_days, lo, hi, *([window, now] if only_open else []), *args],
        )

    for lo, hi in edges:
        for r in exposures(lo, hi):
            add(r, int(r["n"]), int(r["open"]))
    days, days_args = "day>=?", [first]
    if last is not None:
        days, days_args = "day>=? AND day<?", [first, last]
    for r in store.query(
        f"SELECT {_GROUP}, sum(n) AS n, sum(returns) AS returns, sum(revenue) AS revenue, "
        f"sum(cost) AS cost FROM report_exposure_days WHERE return_days=? AND {days} "
        f"AND ({where}) GROUP BY {_GROUP}",
        [return_days, *days_args, *args],
    ):
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
        for r in store.query(
            f"SELECT {_GROUP}, sum(n) AS open FROM report_exposure_days WHERE return_days=? "
            f"AND {days} AND holdout=0 AND ({where}) "
            f"GROUP BY {_GROUP}",
            [return_days, open_from, *days_args[1:], *args],
        ):
            add({**r, **zero}, 0, int(r["open"]))
    lo, hi = max(first * DAY_S, now - window - 1.0), open_from * DAY_S
    if last is not None:
        hi = min(hi, last * DAY_S)
    if lo < hi:
        for r in exposures(lo, hi, only_open=True):
            add({**r, **zero}, 0, int(r["open"]))
    return _report(by, return_days)


# -- keeping the daily figures ------------------------------------------------------------


def _among(column: str, stores: Iterable[str | None] | None) -> tuple[str, list[Any]]:
    """``column`` is one of ``stores`` (None among them: or NULL); None: any."""
    if stores is None:
        return "1=1", []
    stores = set(stores)
    named = sorted(s for s in stores if s is not None)
    parts = [f"{column} IN ({','.join('?' * len(named))})"] if named else []
    if None in stores:
        parts.append(f"{column} IS NULL")
    return "(" + " OR ".join(parts or ["0=1"]) + ")", named


def _chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    items = sorted(items)
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _store_days(
    store: BridgeStore, kind: str, day: int | None, stores: Iterable[str] | None
) -> list[tuple[Any, ...]]:
    """Detections (``kind`` "events") or sends by state ("sends") of these stores on ``day``
    (None: every store, every day), from the rows, as rows of their report table."""
    if stores is None:  # the indexes are by store first: name every store
        stores = {r["store_id"] for r in store.query(f"SELECT DISTINCT store_id FROM {kind}")}
    span, span_args = "1=1", []
    if day is not None:
        span, span_args = "ts>=? AND ts<?", [day * DAY_S, (day + 1) * DAY_S]
    out: list[tuple[Any, ...]] = []
    for part in _chunks(stores):
        marks = ",".join("?" * len(part))
        if kind == "events":
            out += [
                (r["day"], r["store_id"], r["type"], r["n"])
                for r in store.query(
                    f"SELECT {_day_sql('ts')} AS day, store_id, type, count(*) AS n FROM events "
                    f"WHERE store_id IN ({marks}) AND type IN (?, ?) AND {span} "
                    "GROUP BY 1, store_id, type",
                    [*part, *DETECTIONS, *span_args],
                )
            ]
        else:
            out += [
                (r["day"], r["store_id"], r["campaign_id"], r["variant"], r["state"], r["n"])
                for r in store.query(
                    f"SELECT {_day_sql('ts')} AS day, store_id, campaign_id, variant, state, "
                    f"count(*) AS n FROM sends WHERE store_id IN ({marks}) AND {span} "
                    "GROUP BY 1, store_id, campaign_id, variant, state",
                    [*part, *span_args],
                )
            ]
    return out


_STORE_DAY_COLUMNS = {
    "events": ("report_event_days", "day, store_id, type, n"),
    "sends": ("report_send_days", "day, store_id, campaign_id, variant, state, n"),
}


def _put_store_days(
    db: Any, kind: str, rows: list[tuple[Any, ...]], days: dict[int, set[str]] | None
) -> None:
    """Replace the ``kind`` figures of these store-days (None: all) by ``rows``."""
    table, columns = _STORE_DAY_COLUMNS[kind]
    if days is None:
        db.execute(f"DELETE FROM {table}")
    for day, stores in (days or {}).items():
        for part in _chunks(stores):
            db.execute(
                f"DELETE FROM {table} WHERE day=? AND store_id IN ({','.join('?' * len(part))})",
                [day, *part],
            )
    _insert(db, table, columns, rows)


def _insert(db: Any, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        marks = ",".join("?" * len(rows[0]))
        db.conn.executemany(f"INSERT INTO {table}({columns}) VALUES ({marks})", rows)


def _merge(
    db: Any, table: str, scope: dict[str, Any], keys: tuple[str, ...], values: tuple[str, ...],
    changes: dict[tuple[Any, ...], list[float]],
) -> None:  # fmt: skip
    """Add ``changes`` (by day, store_id and ``keys``: amounts of ``values``, the first a count)
    to the rows of ``table`` within ``scope``; rows whose count drops to 0 go."""
    by_store_day: dict[tuple[int, Any], dict[tuple[Any, ...], list[float]]] = defaultdict(dict)
    for key, amounts in changes.items():
        by_store_day[key[0], key[1]][key[2:]] = amounts
    fixed = "".join(f"{c}=? AND " for c in scope)
    for (day, store_id), part in by_store_day.items():
        cond, cond_args = _among("store_id", [store_id])
        where, args = f"{fixed}day=? AND {cond}", [*scope.values(), day, *cond_args]
        rows = {
            tuple(r[k] for k in keys): [r[v] for v in values]
            for r in db.query(
                f"SELECT {', '.join((*keys, *values))} FROM {table} WHERE {where}", args
            )
        }
        for key, amounts in part.items():
            old = rows.get(key, [0] * len(values))
            rows[key] = [a + b for a, b in zip(old, amounts, strict=True)]
        db.execute(f"DELETE FROM {table} WHERE {where}", args)
        _insert(
            db, table, ", ".join((*scope, "day", "store_id", *keys, *values)),
            [(*scope.values(), day, store_id, *k, *v) for k, v in rows.items() if v[0]],
        )  # fmt: skip


# A decision to send is counted once, as 'send': its reason follows its SMS (reserved, sent,
# delivered, shed, ...), and what became of the sends is counted in report_send_days.
_DECISION_REASON = f"CASE WHEN d.outcome='send' THEN '{SEND_REASON}' ELSE d.reason END"


def _decision_rows(store: BridgeStore, where: str, args: list[Any]) -> list[dict[str, Any]]:
    """Decisions counted by day, event store, campaign, variant, outcome and reason (a send's
    reason as SEND_REASON)."""
    return store.query(
        f"SELECT {_day_sql('d.ts')} AS day, e.store_id, d.campaign_id, d.variant, d.outcome, "
        f"{_DECISION_REASON} AS reason, count(*) AS n FROM decisions d "
        f"JOIN events e ON e.event_id=d.event_id WHERE {where} "
        f"GROUP BY 1, e.store_id, d.campaign_id, d.variant, d.outcome, {_DECISION_REASON}",
        args,
    )


def _count_decisions(db: Any, store: BridgeStore, ids: list[int]) -> None:
    """Count these new decisions in report_decision_days."""
    changes: dict[tuple[Any, ...], list[float]] = {}
    for part in _chunks(ids):
        for r in _decision_rows(store, f"d.id IN ({','.join('?' * len(part))})", part):
            key = (r["day"], r["store_id"], r["campaign_id"], r["variant"], r["outcome"],
                   r["reason"])  # fmt: skip
            changes[key] = [changes.get(key, [0])[0] + r["n"]]
    _merge(db, "report_decision_days", {}, ("campaign_id", "variant", "outcome", "reason"),
           ("n",), changes)  # fmt: skip


def _facts(store: BridgeStore, window: int, ids: list[int] | None) -> dict[int, tuple[Any, ...]]:
    """Exposure facts of these decisions (None: all) for the window, from the rows."""
    parts: Iterable[list[int] | None] = [None] if ids is None else _chunks(ids)
    out = {}
    for part in parts:
        cond = "" if part is None else f" AND d.id IN ({','.join('?' * len(part))})"
        for r in store.query(_EXPOSURE_FACTS + cond, [window * DAY_S] * 2 + (part or [])):
            out[r["decision_id"]] = (
                window, r["decision_id"], day_of(r["ts"]), r["ts"], r["store_id"],
                r["campaign_id"], r["variant"], r["holdout"], r["counted"], r["returned"],
                float(r["revenue"] or 0.0), float(r["cost"] or 0.0),
            )  # fmt: skip
    return out


def _refresh_exposures(db: Any, store: BridgeStore, window: int, ids: set[int]) -> None:
    """Recompute the window's facts of these exposures; move their daily sums by the change."""
    new = _facts(store, window, list(ids))
    changes: dict[tuple[Any, ...], list[float]] = {}

    def move(fact: tuple[Any, ...], sign: int) -> None:
        _, _, day, _, store_id, campaign, variant, holdout, counted, returned, revenue, cost = fact
        if counted:
            key = (day, store_id, campaign, variant, holdout)
            old = changes.get(key, [0, 0, 0.0, 0.0])
            changes[key] = [old[0] + sign, old[1] + sign * returned, old[2] + sign * revenue,
                            old[3] + sign * cost]  # fmt: skip

    for part in _chunks(ids):
        marks = ",".join("?" * len(part))
        for r in db.query(
            f"SELECT {', '.join(_FACT_COLUMNS)} FROM report_exposures WHERE return_days=? "
            f"AND decision_id IN ({marks})",
            [window, *part],
        ):
            move(tuple(r[c] for c in _FACT_COLUMNS), -1)
        db.execute(
            f"DELETE FROM report_exposures WHERE return_days=? AND decision_id IN ({marks})",
            [window, *part],
        )
    for fact in new.values():
        move(fact, 1)
    _insert(db, "report_exposures", ", ".join(_FACT_COLUMNS), list(new.values()))
    _merge(db, "report_exposure_days", {"return_days": window},
           ("campaign_id", "variant", "holdout"), ("n", "returns", "revenue", "cost"),
           changes)  # fmt: skip


def _build_exposures(db: Any, window: int, facts: dict[int, tuple[Any, ...]]) -> None:
    db.execute("DELETE FROM report_exposures WHERE return_days=?", [window])
    db.execute("DELETE FROM report_exposure_days WHERE return_days=?", [window])
    _insert(db, "report_exposures", ", ".join(_FACT_COLUMNS), list(facts.values()))
    db.execute(
        "INSERT INTO report_exposure_days(return_days, day, store_id, campaign_id, variant, "
        "holdout, n, returns, revenue, cost) SELECT return_days, day, store_id, campaign_id, "
        "variant, holdout, count(*), sum(returned), sum(revenue), sum(cost) "
        "FROM report_exposures WHERE return_days=? AND counted=1 "
        "GROUP BY return_days, day, store_id, campaign_id, variant, holdout",
        [window],
    )


# Marks ------------------------------------------------------------------------------------


def _marks(store: BridgeStore) -> dict[str, float]:
    return {r["name"]: r["value"] for r in store.query("SELECT name, value FROM report_marks")}


def _set_marks(db: Any, values: dict[str, float], drop: Iterable[str] = ()) -> None:
    for name in drop:
        db.execute("DELETE FROM report_marks WHERE name=?", [name])
    for name, value in values.items():
        db.execute(
            "INSERT INTO report_marks(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            [name, value],
        )


@contextmanager
def _alone(store: BridgeStore) -> Iterator[Any]:
    """A write transaction no other refresh runs alongside (SQLite's BEGIN IMMEDIATE already
    serialises writers; on PostgreSQL an advisory lock)."""
    with store.transaction() as db:
        store.lock_for(["reports:figures"])
        yield db


# What each table with integer ids tells: SELECT ... FROM table t ...
_WATCHED = {
    "decisions": "SELECT t.id, t.store_id, t.ts, t.outcome FROM decisions t",
    "sends": "SELECT t.id, t.store_id, t.ts, t.decision_id FROM sends t",
    "send_log": "SELECT t.id, s.store_id, s.ts, s.decision_id FROM send_log t "
    "LEFT JOIN sends s ON t.kind='offer' AND s.id=t.send_id",
    "purchases": "SELECT t.id, t.customer_id, t.ts FROM purchases t",
}


def _fresh(
    store: BridgeStore, table: str, marks: dict[str, float], clock: float, out: dict[str, float],
    drop: list[str], prefix: str = "",
) -> list[dict[str, Any]]:  # fmt: skip
    """Rows of ``table`` added since the marks (named with ``prefix``): ids above the mark and
    missing ids below it that have turned up. Notes the new marks in ``out`` and ``drop``."""
    mark = int(marks.get(f"{prefix}id:{table}", 0))
    gap = f"{prefix}gap:{table}:"
    gaps = {int(n[len(gap) :]): v for n, v in marks.items() if n.startswith(gap)}
    rows = store.query(f"{_WATCHED[table]} WHERE t.id>?", [mark])
    ids = [int(r["id"]) for r in rows]
    for part in _chunks(gaps):
        found = store.query(f"{_WATCHED[table]} WHERE t.id IN ({','.join('?' * len(part))})", part)
        rows += found
        for r in found:
            drop.append(f"{gap}{int(r['id'])}")
            gaps.pop(int(r["id"]))
    drop += [f"{gap}{n}" for n, noticed in gaps.items() if noticed < clock - GAP_S]
    top = max(ids, default=mark)
    if top - mark > len(ids):
        missing = sorted(set(range(mark + 1, top + 1)) - set(ids))
        out.update({f"{gap}{n}": clock for n in missing[-MAX_GAPS:]})
    out[f"{prefix}id:{table}"] = top
    return rows


@dataclass
class _Dirty:
    """What to recompute: store-days of detections and sends, exposures (decision ids)."""

    events: dict[int, set[str]] = field(default_factory=dict)
    sends: dict[int, set[str]] = field(default_factory=dict)
    exposures: set[int] = field(default_factory=set)

    def day(self, kind: dict[int, set[str]], store_id: str | None, ts: float | None) -> None:
        if store_id is not None and ts is not None:
            kind.setdefault(day_of(ts), set()).add(store_id)

    def customer(self, store: BridgeStore, customer_id: Any, lo: float, hi: float) -> None:
        """The customer's exposures from ``lo`` to ``hi`` (decision time)."""
        if customer_id is not None:
            self.exposures.update(
                r["id"]
                for r in store.query(
                    "SELECT id FROM decisions WHERE customer_id=? "
                    "AND outcome IN ('send', 'holdout') AND ts>=? AND ts<?",
                    [customer_id, lo, hi],
                )
            )

    def __bool__(self) -> bool:
        return bool(self.events or self.sends or self.exposures)


def _detect(
    store: BridgeStore, marks: dict[str, float], windows: list[int], clock: float
) -> tuple[_Dirty, list[int], dict[str, float], list[str]]:
    """What changed since the marks: what to recompute, the decisions to count, new marks and
    marks to drop."""
    dirty, out, drop = _Dirty(), dict[str, float](), list[str]()
    reach = max(windows, default=0) * DAY_S + 1.0  # how far back a visit or purchase reaches
    new = [int(r["id"]) for r in _fresh(store, "decisions", marks, clock, out, drop, "d:")]
    for r in _fresh(store, "decisions", marks, clock, out, drop):
        if r["outcome"] in ("send", "holdout"):
            dirty.exposures.add(int(r["id"]))
    for table in ("sends", "send_log"):
        for r in _fresh(store, table, marks, clock, out, drop):
            dirty.day(dirty.sends, r["store_id"], r["ts"])
            if r["decision_id"] is not None:
                dirty.exposures.add(int(r["decision_id"]))
    for r in _fresh(store, "purchases", marks, clock, out, drop):
        dirty.customer(store, r["customer_id"], r["ts"] - reach, r["ts"])
    # Events by the ingest's clock, looking LOOKBACK_S back; those already seen then are
    # remembered (by id) so that they are not done again.
    received = marks.get("received", float("-inf"))
    seen = {n[3:] for n in marks if n.startswith("ev:")}
    top = received
    for r in store.query(
        "SELECT e.event_id, e.store_id, e.type, e.ts, e.received, c.id AS customer_id "
        "FROM events e LEFT JOIN customers c ON e.type='visit' AND c.subject=e.subject "
        "WHERE e.type IN (?, ?) AND e.received>=?",
        [*DETECTIONS, received - LOOKBACK_S],
    ):
        top = max(top, r["received"])
        if r["event_id"] not in seen:
            out[f"ev:{r['event_id']}"] = r["received"]
            dirty.day(dirty.events, r["store_id"], r["ts"])
            if r["type"] == "visit":
                dirty.customer(store, r["customer_id"], r["ts"] - reach, r["ts"])
    out["received"] = top
    drop += [n for n, v in marks.items() if n.startswith("ev:") and v < top - LOOKBACK_S]
    # Erasures (rare): an erased customer's visits no longer count as returns.
    row = store.query(
        "SELECT count(*) AS n, max(erased) AS latest FROM customers WHERE erased IS NOT NULL"
    )[0]
    latest = row["latest"] or 0.0
    if row["n"] != marks.get("erased:n", 0) or latest != marks.get("erased:max", 0.0):
        erased = store.query(
            "SELECT id FROM customers WHERE erased>=?", [marks.get("erased:max", 0.0) - LOOKBACK_S]
        )
        if len(erased) < row["n"] - marks.get("erased:n", 0):
            erased = store.query("SELECT id FROM customers WHERE erased IS NOT NULL")
        for c in erased:
            dirty.customer(store, c["id"], float("-inf"), float("inf"))
        out["erased:n"], out["erased:max"] = row["n"], latest
    return dirty, new, out, drop


def _capture(store: BridgeStore, clock: float) -> dict[str, float]:
    """Marks as of now, taken before a build reads the rows: the ids seen (and those missing
    among the last 1000), the last event received, the erasures."""
    out: dict[str, float] = {}
    for table in _WATCHED:
        top = store.query(f"SELECT max(id) AS top FROM {table}")[0]["top"] or 0
        recent = {r["id"] for r in store.query(f"SELECT id FROM {table} WHERE id>?", [top - 1000])}
        for prefix in ("", "d:") if table == "decisions" else ("",):
            out |= {f"{prefix}gap:{table}:{n}": clock
                    for n in set(range(max(1, top - 999), top + 1)) - recent}  # fmt: skip
            out[f"{prefix}id:{table}"] = top
    row = store.query(
        "SELECT max(received) AS top FROM events WHERE type IN (?, ?)", list(DETECTIONS)
    )[0]
    out["received"] = row["top"] if row["top"] is not None else float("-inf")
    row = store.query(
        "SELECT count(*) AS n, max(erased) AS latest FROM customers WHERE erased IS NOT NULL"
    )[0]
    out["erased:n"], out["erased:max"] = row["n"], row["latest"] or 0.0
    return out


def _catch_up(db: Any, store: BridgeStore, clock: float) -> None:
    """Inside ``_alone``: bring every figure up to date from the marks."""
    marks = _marks(store)
    windows = sorted(int(n[7:]) for n in marks if n.startswith("window:"))
    dirty, new, out, drop = _detect(store, marks, windows, clock)
    _count_decisions(db, store, new)
    for kind in ("events", "sends"):
        days = getattr(dirty, kind)
        for day, stores in days.items():
            _put_store_days(db, kind, _store_days(store, kind, day, stores), {day: stores})
    for window in windows:
        _refresh_exposures(db, store, window, dirty.exposures)
    _set_marks(db, out, drop)


def refresh_figures(
    store: BridgeStore, return_days: int | None = None, clock: float | None = None
) -> None:
    """Bring the daily figures up to date, with those of the ``return_days`` window.

    The first call builds them from every row (a while on a big store: one pass per kind,
    outside any transaction, so the bridge keeps working), then stores them with marks taken
    before reading and catches up from those. Later calls find what changed and recompute only
    that; a call that finds nothing writes nothing."""
    clock = time.time() if clock is None else clock
    marks = _marks(store)
    if marks.get("base") != 1:
        taken = _capture(store, clock)
        gaps = [int(n.split(":")[-1]) for n in taken if n.startswith("d:gap:")]
        events = _store_days(store, "events", None, None)
        sends = _store_days(store, "sends", None, None)
        missing = f" AND d.id NOT IN ({','.join('?' * len(gaps))})" if gaps else ""
        decisions = _decision_rows(store, f"d.id<=?{missing}", [taken["d:id:decisions"], *gaps])
        with _alone(store) as db:
            db.execute("DELETE FROM report_marks")
            db.execute("DELETE FROM report_exposures")
            db.execute("DELETE FROM report_exposure_days")
            db.execute("DELETE FROM report_decision_days")
            _put_store_days(db, "events", events, None)
            _put_store_days(db, "sends", sends, None)
            _insert(db, "report_decision_days", "day, store_id, campaign_id, variant, outcome, "
                    "reason, n", [tuple(r.values()) for r in decisions])  # fmt: skip
            _set_marks(db, {**taken, "base": 1})
            _catch_up(db, store, clock)
        marks = _marks(store)
    if return_days is not None and marks.get(f"window:{return_days}") != 1:
        taken = _capture(store, clock)
        facts = _facts(store, return_days, None)
        with _alone(store) as db:
            _build_exposures(db, return_days, facts)
            # what changed while reading: found from the marks taken before
            dirty = _detect(store, taken, [return_days], clock)[0]
            _refresh_exposures(db, store, return_days, dirty.exposures)
            _set_marks(db, {f"window:{return_days}": 1})
            _catch_up(db, store, clock)
        return
    windows = sorted(int(n[7:]) for n in marks if n.startswith("window:"))
    dirty, new, out, drop = _detect(store, marks, windows, clock)
    if dirty or new or drop or any(marks.get(k) != v for k, v in out.items()):
        with _alone(store) as db:
            _catch_up(db, store, clock)


def reset_figures(store: BridgeStore) -> None:
    """Forget the daily figures: the next report builds them again from every row."""
    with store.transaction() as db:
        for table in ("report_marks", "report_event_days", "report_decision_days",
                      "report_send_days", "report_exposures", "report_exposure_days"):  # fmt: skip
            db.execute(f"DELETE FROM {table}")


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
