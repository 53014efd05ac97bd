"""Report figures: the daily sums the reports read, kept up to date from the rows, and the
report pages' queries over them.

What each table holds and how ``refresh_figures`` keeps it are in the comment below. Filters
arrive as values (``FigureFilter``: the principal's stores, a store, a campaign, a variant)
and become SQL here.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cloud_bridge.storage.scope import Scope, store_scope_sql
from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "DAY_S",
    "FigureFilter",
    "day_of",
    "exposure_filter",
    "edge_exposure_sums",
    "day_exposure_sums",
    "open_day_sums",
    "refresh_figures",
    "reset_figures",
    "detections",
    "eligible_decisions",
    "sent_and_delivered",
    "skip_reason_rows",
    "send_state_rows",
    "sends_by_campaign",
    "optouts_by_campaign",
    "campaign_ids",
    "decision_day_rows",
    "exposure_day_rows",
    "return_rows",
]

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


# -- the exposure sums exposure_report adds up ---------------------------------------------


def edge_exposure_sums(
    store: BridgeStore, now: float, return_days: int, lo: float, hi: float, where: str,
    args: Sequence[Any], only_open: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """The exposures from ``lo`` to ``hi`` that match ``where`` (``exposure_filter``), summed by
    store, campaign, variant and holdout (``only_open``: only sends whose window is open)."""
    window = return_days * DAY_S
    return store.query(
        f"SELECT {_GROUP}, count(*) AS n, sum(returned) AS returns, sum(revenue) AS revenue, "
        "sum(cost) AS cost, sum(CASE WHEN holdout=0 AND ts+?>? THEN 1 ELSE 0 END) AS open "
        "FROM report_exposures WHERE return_days=? AND counted=1 AND ts>=? AND ts<? "
        f"{'AND holdout=0 AND ts+?>? ' if only_open else ''}AND ({where}) GROUP BY {_GROUP}",
        [window, now, return_days, lo, hi, *([window, now] if only_open else []), *args],
    )


def _days(first: int, last: int | None) -> tuple[str, list[Any]]:
    if last is not None:
        return "day>=? AND day<?", [first, last]
    return "day>=?", [first]


def day_exposure_sums(
    store: BridgeStore, return_days: int, first: int, last: int | None, where: str,
    args: Sequence[Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """The daily exposure sums of days ``first`` to ``last`` (exclusive; None: on) that match
    ``where``, summed by store, campaign, variant and holdout."""
    days, days_args = _days(first, last)
    return store.query(
        f"SELECT {_GROUP}, sum(n) AS n, sum(returns) AS returns, sum(revenue) AS revenue, "
        f"sum(cost) AS cost FROM report_exposure_days WHERE return_days=? AND {days} "
        f"AND ({where}) GROUP BY {_GROUP}",
        [return_days, *days_args, *args],
    )


def open_day_sums(
    store: BridgeStore, return_days: int, open_from: int, last: int | None, where: str,
    args: Sequence[Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """The sends (``open``) of days ``open_from`` to ``last`` (exclusive; None: on) that match
    ``where``, from the daily sums, by store, campaign, variant and holdout."""
    days, days_args = _days(open_from, last)
    return store.query(
        f"SELECT {_GROUP}, sum(n) AS open FROM report_exposure_days WHERE return_days=? "
        f"AND {days} AND holdout=0 AND ({where}) "
        f"GROUP BY {_GROUP}",
        [return_days, *days_args, *args],
    )


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


# -- the report pages' queries ------------------------------------------------------------


@dataclass(frozen=True)
class FigureFilter:
    """What a report page shows: the principal's stores (None: all), and optionally one store,
    one campaign, one variant."""

    scope: Scope
    store_id: str | None = None
    campaign_id: str | None = None
    variant: str | None = None


def _scope(f: FigureFilter, store_col: str = "store_id") -> tuple[str, list[Any]]:
    """The principal's stores and the store filter, on ``store_col``."""
    cond, args = store_scope_sql(f.scope, store_col)
    if f.store_id:
        return f"{cond} AND {store_col}=?", [*args, f.store_id]
    return cond, list(args)


def _campaign(
    f: FigureFilter, alias: str = "", keep_holdouts: bool = False
) -> tuple[str, list[Any]]:
    sql, args = [], []
    if f.campaign_id:
        sql.append(f"{alias}campaign_id=?")
        args.append(f.campaign_id)
    if f.variant:
        sql.append("(holdout<>0 OR variant=?)" if keep_holdouts else f"{alias}variant=?")
        args.append(f.variant)
    return "".join(f" AND {s}" for s in sql), args


def exposure_filter(f: FigureFilter) -> tuple[str, list[Any]]:
    """The condition (and its arguments) on the exposures that match ``f``, for
    ``exposure_report``; a variant filter keeps the campaign's holdout to compare with."""
    where, args = _scope(f)
    cw, c_args = _campaign(f, keep_holdouts=True)
    return where + cw, [*args, *c_args]


def detections(store: BridgeStore, days: Sequence[int], f: FigureFilter) -> Any:
    """Detections (arrive and visit events) of days ``days[0]`` to ``days[1]`` (exclusive)."""
    where, args = _scope(f)
    return store.query(
        "SELECT coalesce(sum(n), 0) AS n FROM report_event_days "
        f"WHERE day>=? AND day<? AND {where}",
        [*days, *args],
    )[0]["n"]


def eligible_decisions(
    store: BridgeStore, days: Sequence[int], f: FigureFilter, not_eligible: Sequence[str]
) -> Any:
    """Decisions of the days whose reason is none of ``not_eligible``."""
    where, args = _scope(f)
    cw, c_args = _campaign(f)
    return store.query(
        "SELECT coalesce(sum(n), 0) AS n FROM report_decision_days WHERE day>=? AND day<? "
        f"AND {where}{cw} AND reason NOT IN ({','.join('?' * len(not_eligible))})",
        [*days, *args, *c_args, *not_eligible],
    )[0]["n"]


def sent_and_delivered(
    store: BridgeStore, days: Sequence[int], f: FigureFilter, sent: Sequence[str]
) -> dict[str, Any]:
    """Sends of the days in a ``sent`` state (sent) and delivered (delivered)."""
    where, args = _scope(f)
    cw, c_args = _campaign(f)
    return store.query(
        f"SELECT coalesce(sum(CASE WHEN state IN ({','.join('?' * len(sent))}) THEN n "
        "ELSE 0 END), 0) AS sent, coalesce(sum(CASE WHEN state='delivered' THEN n ELSE 0 END), "
        f"0) AS delivered FROM report_send_days WHERE day>=? AND day<? AND {where}{cw}",
        [*sent, *days, *args, *c_args],
    )[0]


def skip_reason_rows(
    store: BridgeStore, days: Sequence[int], f: FigureFilter
) -> list[dict[str, Any]]:
    """Decisions of the days other than sends by reason (n), most first."""
    where, args = _scope(f)
    cw, c_args = _campaign(f)
    return store.query(
        "SELECT reason, sum(n) AS n FROM report_decision_days WHERE day>=? AND day<? "
        f"AND {where}{cw} AND outcome<>'send' GROUP BY reason ORDER BY n DESC, reason",
        [*days, *args, *c_args],
    )


def send_state_rows(
    store: BridgeStore, days: Sequence[int], f: FigureFilter
) -> list[dict[str, Any]]:
    """Sends of the days by state (n)."""
    where, args = _scope(f)
    cw, c_args = _campaign(f)
    return store.query(
        "SELECT state, sum(n) AS n FROM report_send_days WHERE day>=? AND day<? "
        f"AND {where}{cw} GROUP BY state",
        [*days, *args, *c_args],
    )


def sends_by_campaign(
    store: BridgeStore, days: Sequence[int], f: FigureFilter, sent: Sequence[str]
) -> list[dict[str, Any]]:
    """Sends of the days in a ``sent`` state by campaign (sends), by campaign id."""
    where, args = _scope(f)
    cw, c_args = _campaign(f)
    marks = ",".join("?" * len(sent))
    return store.query(
        "SELECT campaign_id, sum(n) AS sends FROM report_send_days WHERE day>=? AND day<? "
        f"AND {where}{cw} AND state IN ({marks}) GROUP BY campaign_id ORDER BY campaign_id",
        [*days, *args, *c_args, *sent],
    )


def optouts_by_campaign(
    store: BridgeStore, f: FigureFilter, since: float, until: float, window_s: float,
    sent: Sequence[str],
) -> dict[str, int]:  # fmt: skip
    """Per campaign: customers who revoked SMS consent within ``window_s`` after one of its
    sends (in a ``sent`` state) from ``since`` to ``until``."""
    _, c_args = _campaign(f)
    marks = ",".join("?" * len(sent))
    # Driven by the revocations (few): CROSS JOIN keeps them the outer loop, and each one's
    # sends are found by customer ("|| ''" keeps SQLite off the store index for them).
    sw, s_args = _scope(f, "s.store_id || ''")
    scw, _ = _campaign(f, "s.")
    return {
        r["campaign_id"]: int(r["n"])
        for r in store.query(
            "SELECT s.campaign_id, count(DISTINCT s.customer_id) AS n FROM consents k "
            "CROSS JOIN sends s WHERE s.customer_id=k.customer_id AND k.ts>=s.ts "
            "AND k.ts<=s.ts+? AND k.kind='sms' AND k.status='revoked' AND k.ts>=? AND k.ts<=? "
            f"AND s.ts>=? AND s.ts<? AND {sw}{scw} AND s.state IN ({marks}) "
            "GROUP BY s.campaign_id",
            [window_s, since, until + window_s, since, until, *s_args, *c_args, *sent],
        )
    }


def campaign_ids(store: BridgeStore) -> list[str]:
    """Every campaign's id, sorted."""
    return [c["id"] for c in store.query("SELECT id FROM campaigns ORDER BY id")]


def decision_day_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every row of the daily decision counts, every column."""
    return store.query("SELECT * FROM report_decision_days")


def exposure_day_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """Every row of the daily exposure sums, every column."""
    return store.query("SELECT * FROM report_exposure_days")


def return_rows(store: BridgeStore) -> list[dict[str, Any]]:
    """The ``returns`` view: every later visit of a customer after a send, with its delay."""
    return store.query("SELECT * FROM returns")
