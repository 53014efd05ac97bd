"""Daily report figures: every report read from them equals the straightforward computation
over the rows (``BridgeStore.exposures`` + ``summarise``, and the console's plain queries), for
date ranges (whole and partial days), store, campaign and variant filters, an owner's stores
and holdout lift; and stays equal as rows are added, sends change state, customers come back,
purchases arrive, a customer is erased and an id turns up late."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.reports.figures import (
    Report,
    build_report,
    day_of,
    exposure_report,
    refresh_figures,
    reset_figures,
    summarise,
)
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.report_figures import decision_day_rows, exposure_day_rows
from cloud_bridge.storage.sends import send_rows
from cloud_bridge.storage.store import BridgeStore, decision_of_send
from cloud_bridge.web.auth import Principal
from cloud_bridge.web.console import reports as console

DAY = 86400.0
STORES = ["s1", "s2", "s3"]
CAMPAIGNS = {"c1": ["A", "B"], "c2": ["A"]}
STATES = ["delivered", "delivered", "accepted", "failed", "expired", "undelivered", "unknown",
          "reserved", "shed"]  # fmt: skip
SKIPS = ["no_campaign", "campaign_cap", "quiet_hours", "no_sms_consent", "unknown_subject"]
ADMIN = Principal(1, "ada", "admin", (), "session")
OWNER = Principal(2, "olga", "owner", ("s1", "s3"), "session")


class World:
    """A store filled with random but meaningful rows, and the means to add more."""

    def __init__(self, store: BridgeStore, seed: int, now: float) -> None:
        self.store, self.rnd, self.now = store, random.Random(seed), now
        self.n = 0
        with store.transaction() as db:
            for sid in STORES:
                db.execute(
                    "INSERT INTO stores(id, name, timezone, country, sender_name, site_key) "
                    "VALUES (?,?,?,?,?,?)",
                    [sid, sid, "Europe/Moscow", "RU", "Shop", "00" * 32],
                )
            for c in range(1, 31):
                db.execute(
                    "INSERT INTO customers(id, crm_id, subject, name, phone, created) "
                    "VALUES (?,?,?,?,?,?)",
                    [c, f"C-{c}", f"{c:016x}", f"N{c}", f"+7916000{c:04d}", now - 60 * DAY],
                )

    def subject(self, customer: int) -> str:
        return f"{customer:016x}"

    def event(self, type_: str, customer: int | None, ts: float, received: float | None = None,
              store_id: str | None = None) -> str:  # fmt: skip
        self.n += 1
        eid = f"{self.n:032x}"
        sid = store_id or self.rnd.choice(STORES)
        subject = self.subject(customer) if customer else "ffffffffffffffff"
        self.store.insert_event(eid, sid, "door-1", type_, subject, ts, "{}", received or ts)
        return eid

    def decision(self, ts: float, **kw: Any) -> int:
        """An arrive event and its decision: a send (with its send), holdout or skip."""
        r = self.rnd
        customer = kw.get("customer", r.randint(1, 30))
        eid = self.event("arrive", customer, ts - r.random() * 60, kw.get("received"),
                         kw.get("event_store"))  # fmt: skip
        store_id = kw.get("store_id", self.store.event_row(eid)["store_id"])
        kind = kw.get("kind") or r.choice(["send", "send", "holdout", "skip", "skip"])
        campaign = kw.get("campaign", r.choice(sorted(CAMPAIGNS)))
        variant = r.choice(CAMPAIGNS[campaign])
        with self.store.transaction() as db:
            if kind == "skip":
                reason = r.choice(SKIPS)
                cur = db.execute(
                    "INSERT INTO decisions(event_id, customer_id, campaign_id, outcome, reason, "
                    "detail, ts, store_id) VALUES (?,?,?,?,?,?,?,?)",
                    [eid, None if reason == "unknown_subject" else customer,
                     None if reason == "no_campaign" else campaign, "skip", reason, "", ts,
                     store_id],
                )  # fmt: skip
                return int(cur.lastrowid)
            holdout = kind == "holdout"
            state = kw.get("state", r.choice(STATES))
            reason = "holdout" if holdout else decision_of_send(state)
            values = [eid, customer, campaign, kind, reason, "", ts,
                      None if holdout else variant, int(holdout), store_id]  # fmt: skip
            if "id" in kw:
                db.execute(
                    "INSERT INTO decisions(id, event_id, customer_id, campaign_id, outcome, "
                    "reason, detail, ts, variant, holdout, store_id) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [kw["id"], *values],
                )
                did = kw["id"]
            else:
                did = db.execute(
                    "INSERT INTO decisions(event_id, customer_id, campaign_id, outcome, reason, "
                    "detail, ts, variant, holdout, store_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    values,
                ).lastrowid
            if not holdout:
                db.execute(
                    "INSERT INTO sends(decision_id, customer_id, campaign_id, store_id, ts, "
                    "state, provider, sender, body, variant, cost) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [did, customer, campaign, store_id, ts + r.random() * 5,
                     state, "sandbox", "Shop", "hi", variant,
                     r.choice([None, 0.05, 0.1])],
                )  # fmt: skip
        return int(did)

    def fill(self, start: float, end: float, decisions: int) -> None:
        r = self.rnd
        for _ in range(decisions):
            self.decision(r.uniform(start, end))
        for _ in range(decisions // 2):  # customers coming back (or not yet known ones)
            self.event("visit", r.choice([None, *range(1, 31)]), r.uniform(start, self.now))
        purchases = [
            {"ref": f"p{i}-{start}", "customer_id": r.randint(1, 30),
             "store_id": r.choice(STORES), "ts": r.uniform(start, self.now),
             "amount": round(r.uniform(1, 50), 2), "currency": "RUB"}
            for i in range(decisions // 4)
        ]  # fmt: skip
        self.store.add_purchases(purchases, self.now)
        for c in r.sample(range(1, 31), 4):  # SMS opt-outs
            self.store.record_consent(c, "sms", "revoked", r.uniform(start, self.now))


# -- the straightforward computations ----------------------------------------------------------


def plain_report(
    store: BridgeStore, now: float, days: int, since: float, until: float, keep: Any
) -> Report:
    rows = [e for e in store.exposures(days, since) if e["ts"] < until and keep(e)]
    return summarise(rows, now, days)


def plain_console(store: BridgeStore, f: console.Filters, me: Principal) -> dict[str, Any]:
    """The console's funnel, skip reasons and opt-out rates as plain queries over the rows."""
    scope, args = "1=1", []
    if me.scope is not None:
        scope, args = f"IN ({','.join('?' * len(me.scope))})", list(me.scope)

    def where(store_col: str, ts_col: str, alias: str) -> tuple[str, list[Any]]:
        sql = [f"{store_col} {scope}" if args else scope, f"{ts_col}>=?", f"{ts_col}<?"]
        out = [*args, f.since, f.until]
        if f.store_id:
            sql.append(f"{store_col}=?")
            out.append(f.store_id)
        if alias and f.campaign_id:
            sql.append(f"{alias}.campaign_id=?")
            out.append(f.campaign_id)
        if alias and f.variant:
            sql.append(f"{alias}.variant=?")
            out.append(f.variant)
        return " AND ".join(sql), out

    ev, ev_args = where("e.store_id", "e.ts", "")
    dw, d_args = where("e.store_id", "d.ts", "d")
    sw, s_args = where("s.store_id", "s.ts", "s")
    sent = ",".join("?" * len(console.SENT))
    q = store.query
    return {
        "detections": q(
            f"SELECT count(*) AS n FROM events e WHERE e.type IN ('arrive','visit') AND {ev}",
            ev_args,
        )[0]["n"],
        "eligible": q(
            "SELECT count(*) AS n FROM decisions d JOIN events e ON e.event_id=d.event_id "
            f"WHERE {dw} AND d.reason NOT IN ({','.join('?' * len(console.NOT_ELIGIBLE))})",
            [*d_args, *console.NOT_ELIGIBLE],
        )[0]["n"],
        "sends": q(
            f"SELECT coalesce(sum(CASE WHEN s.state IN ({sent}) THEN 1 ELSE 0 END), 0) AS sent, "
            "coalesce(sum(CASE WHEN s.state='delivered' THEN 1 ELSE 0 END), 0) AS delivered "
            f"FROM sends s WHERE {sw}",
            [*console.SENT, *s_args],
        )[0],
        "skips": {
            r["reason"]: r["n"]
            for r in q(
                "SELECT d.reason, count(*) AS n FROM decisions d JOIN events e "
                f"ON e.event_id=d.event_id WHERE {dw} AND d.outcome<>'send' GROUP BY d.reason",
                d_args,
            )
        },
        "outcomes": _outcomes(
            q(f"SELECT s.state, count(*) AS n FROM sends s WHERE {sw} GROUP BY s.state", s_args)
        ),
        "optout": [
            (r["campaign_id"], r["sends"], r["optouts"])
            for r in q(
                "SELECT s.campaign_id, count(*) AS sends, count(DISTINCT CASE WHEN EXISTS "
                "(SELECT 1 FROM consents k WHERE k.customer_id=s.customer_id AND k.kind='sms' "
                "AND k.status='revoked' AND k.ts>=s.ts AND k.ts<=s.ts+?) THEN s.customer_id "
                f"END) AS optouts FROM sends s WHERE {sw} AND s.state IN ({sent}) "
                "GROUP BY s.campaign_id ORDER BY s.campaign_id",
                [console.OPTOUT_WINDOW_DAYS * 86400, *s_args, *console.SENT],
            )
        ],
    }


def _outcomes(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Sends by state as their decisions read them."""
    out: dict[str, int] = {}
    for r in rows:
        out[decision_of_send(r["state"])] = out.get(decision_of_send(r["state"]), 0) + r["n"]
    return out


def figures_console(store: BridgeStore, f: console.Filters, me: Principal) -> dict[str, Any]:
    refresh_figures(store, console.RETURN_DAYS)
    fun = console.funnel(store, f, me, Report(console.RETURN_DAYS))
    return {
        "detections": fun["detections"],
        "eligible": fun["eligible"],
        "sends": {"sent": fun["sent"], "delivered": fun["delivered"]},
        "skips": {r["reason"]: r["n"] for r in console.skip_reasons(store, f, me)},
        "outcomes": {r["outcome"]: r["n"] for r in console.send_outcomes(store, f, me)},
        "optout": [
            (r["campaign_id"], r["sends"], r["optouts"]) for r in console.optout_rates(store, f, me)
        ],
    }


def same(a: Report, b: Report) -> None:
    """Equal reports: counts exactly, sums of money up to rounding."""
    da, db = asdict(a), asdict(b)
    assert da.keys() == db.keys()
    for section in ("campaigns", "variants", "campaign_stores", "stores"):
        assert len(da[section]) == len(db[section]), section
        for x, y in zip(da[section], db[section], strict=True):
            for k, v in x.items():
                w = y[k]
                if isinstance(v, float) or isinstance(w, float):
                    assert v == pytest.approx(w, rel=1e-9, abs=1e-9), (section, k, x, y)
                else:
                    assert v == w, (section, k, x, y)


def check_all(store: BridgeStore, now: float) -> int:
    """Every report the console and CLI can ask for equals the straightforward one; returns
    how many exposures the plain report counted (so a test can see it was not empty)."""
    midnight = (day_of(now) + 1) * DAY
    counted = 0
    for days in (14, 3):
        for since, until in (
            (0.0, math.inf),  # the CLI: every exposure
            (midnight - 30 * DAY, midnight),  # the console's last 30 days
            (midnight - 9 * DAY, midnight - 2 * DAY),  # a week, some time ago
            (now - 20.5 * DAY, now - 3.25 * DAY),  # parts of days at both ends
            (now - 5.2 * DAY, now - 5.1 * DAY),  # within one day
        ):
            for where, args, keep in (
                ("1=1", [], lambda e: True),
                ("store_id=?", ["s2"], lambda e: e["store_id"] == "s2"),
                ("store_id IN (?, ?)", ["s1", "s3"], lambda e: e["store_id"] in ("s1", "s3")),
                ("campaign_id=?", ["c1"], lambda e: e["campaign_id"] == "c1"),
                (
                    "campaign_id=? AND (holdout<>0 OR variant=?)",
                    ["c1", "B"],
                    lambda e: e["campaign_id"] == "c1" and (e["holdout"] or e["variant"] == "B"),
                ),
            ):
                want = plain_report(store, now, days, since, until, keep)
                got = exposure_report(
                    store, now, days, since, None if until == math.inf else until, where, args
                )
                same(got, want)
                counted += sum(x.sends + x.holdout for x in want.campaigns)
        same(build_report(store, now, days), plain_report(store, now, days, 0, math.inf, all))
    today = datetime.fromtimestamp(now, UTC).date()
    for me in (ADMIN, OWNER):
        for start, end, extra in (
            (today - timedelta(days=29), today, {}),
            (today - timedelta(days=6), today - timedelta(days=2), {"store_id": "s3"}),
            (today - timedelta(days=29), today, {"campaign_id": "c1"}),
            (today - timedelta(days=29), today, {"campaign_id": "c1", "variant": "A"}),
        ):
            f = console.Filters(start, end, **extra)
            assert figures_console(store, f, me) == plain_console(store, f, me), (me, f)
            plain = plain_report(
                store, now, console.RETURN_DAYS, f.since, f.until,
                lambda e, f=f, me=me: me.can_see(e["store_id"])
                and (not f.store_id or e["store_id"] == f.store_id)
                and (not f.campaign_id or e["campaign_id"] == f.campaign_id)
                and (not f.variant or e["holdout"] or e["variant"] == f.variant),
            )  # fmt: skip
            same(console.report_of(store, f, me, now), plain)
    return counted


@pytest.fixture()
def world(db_location: Any, tmp_path: Path) -> Any:
    store = BridgeStore(db_location, b"\x07" * 32)
    yield World(store, 1, time.time())
    store.close()


def test_figures_equal_the_plain_computation(world: World) -> None:
    now = world.now
    world.fill(now - 40 * DAY, now, 240)
    # legacy and odd rows: a decision without a store, one whose store is not its event's
    world.decision(now - 2 * DAY, kind="skip", store_id=None)
    world.decision(now - 3 * DAY, kind="send", store_id="s2", event_store="s3")
    # exposures around the open-window boundary of both return windows
    for days in (14, 3):
        for h in (-5, -1, 1, 5):
            world.decision(now - days * DAY + h * 3600, kind="send", state="delivered")
    assert check_all(world.store, now) > 100
    lift = build_report(world.store, now, 14).campaigns[0]
    assert lift.holdout > 0 and lift.lift is not None and lift.lift_lo is not None


def test_figures_follow_every_change(world: World) -> None:
    store, now, r = world.store, world.now, world.rnd
    world.fill(now - 30 * DAY, now - DAY, 120)
    check_all(store, now)  # builds the figures
    # new decisions and sends today and (late-processed) days ago
    for _ in range(10):
        world.decision(now - r.random() * 3 * DAY, received=time.time())
    # sends change state: fail (no longer an exposure), get their cost, get delivered
    for row in send_rows(store)[:12]:
        to = {"delivered": "failed", "reserved": "shed", "shed": "expired"}.get(
            row["state"], "delivered"
        )
        store.move_send("sends", row["id"], (row["state"],), to, time.time(), cost=0.2)
    # customers come back: visits of exposed customers, received now
    for e in r.sample(store.exposures(14), 8):
        customer = e["customer_id"]
        world.event("visit", customer, e["ts"] + r.uniform(0.1, 16) * DAY, time.time())
    # purchases imported now, made days ago
    store.add_purchases(
        [{"ref": f"late-{i}", "customer_id": r.randint(1, 30), "store_id": "s1",
          "ts": now - r.uniform(0, 20) * DAY, "amount": 10.0 + i} for i in range(6)],
        time.time(),
    )  # fmt: skip
    # an erased customer's visits stop counting as returns
    returned = [e for e in store.exposures(14) if e["returned"]]
    store.erase_customer(returned[0]["customer_id"], time.time())
    check_all(store, now)


def test_an_id_that_turns_up_late_is_counted(world: World) -> None:
    """PostgreSQL hands out ids before the commit: a decision with a lower id than one already
    seen can appear later. It is looked for again and counted once."""
    store, now = world.store, world.now
    world.fill(now - 10 * DAY, now, 20)
    top = max(d["id"] for d in decision_rows(store))
    world.decision(now - DAY, kind="send", state="delivered", id=top + 2, received=time.time())
    check_all(store, now)
    # committed after top + 2
    world.decision(now - 2 * DAY, kind="holdout", id=top + 1, received=time.time())
    check_all(store, now)
    refresh_figures(store, 14)  # once counted, never again
    check_all(store, now)


def test_reset_rebuilds_and_figures_are_per_window(world: World) -> None:
    store, now = world.store, world.now
    world.fill(now - 20 * DAY, now, 60)
    check_all(store, now)
    windows = {r["return_days"] for r in exposure_day_rows(store)}
    assert windows == {3, 14}
    reset_figures(store)
    assert len(decision_day_rows(store)) == 0
    check_all(store, now)
