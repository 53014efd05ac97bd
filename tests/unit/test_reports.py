"""Returns, lift with a confidence interval, revenue from imported purchases, stores ranked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud_bridge.cli.main import app as cli_app
from cloud_bridge.customers.erasure import erase_customer
from cloud_bridge.reports.figures import (
    build_report,
    import_purchases,
    newcombe_diff,
    summarise,
    wilson,
)
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.customers import customer_by_crm_id, customer_rows, purchase_rows
from cloud_bridge.storage.report_figures import return_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
DAY = 86400.0


def test_wilson_and_newcombe_known_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 vs 48/80
    d, lo, hi = newcombe_diff(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert lo == pytest.approx(0.0524, abs=5e-4) and hi == pytest.approx(0.3339, abs=5e-4)
    # 9/10 vs 3/10 -> 0.6 [0.1705, 0.8090]
    d, lo, hi = newcombe_diff(9, 10, 3, 10)
    assert (lo, hi) == (pytest.approx(0.1705, abs=5e-4), pytest.approx(0.8090, abs=5e-4))
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=5e-4)
    assert newcombe_diff(1, 0, 1, 5) == (None, None, None)


def exposure(cid: str, variant: str | None, store: str, holdout: bool, returned: bool, **kw):
    return {
        "campaign_id": cid,
        "variant": None if holdout else variant,
        "store_id": store,
        "holdout": int(holdout),
        "returned": int(returned),
        "revenue": kw.get("revenue", 0.0),
        "cost": kw.get("cost", 0.0),
        "ts": kw.get("ts", 0.0),
    }


def test_summarise_lines_and_ranking() -> None:
    rows = (
        [exposure("c", "A", "s1", False, i < 30, revenue=10.0, cost=0.05) for i in range(100)]
        + [exposure("c", "B", "s2", False, i < 50, revenue=10.0 * (i < 50)) for i in range(100)]
        + [exposure("c", None, "s1", True, i < 2) for i in range(10)]
        + [exposure("c", None, "s2", True, i < 3) for i in range(10)]
    )
    rep = summarise(rows, now=100 * DAY, return_days=14)
    [camp] = rep.campaigns
    assert (camp.sends, camp.returns, camp.holdout, camp.holdout_returns) == (200, 80, 20, 5)
    assert camp.return_rate == pytest.approx(0.4) and camp.holdout_rate == pytest.approx(0.25)
    assert camp.lift == pytest.approx(0.15)
    assert camp.lift_lo is not None and camp.lift_lo < 0.15 < camp.lift_hi  # type: ignore[operator]
    assert camp.cost == pytest.approx(5.0)
    assert camp.revenue == pytest.approx(1000.0 + 500.0)
    assert camp.incremental_revenue == pytest.approx((1500 / 200 - 0) * 200)
    variants = {v.variant: v for v in rep.variants}
    assert variants["A"].return_rate == pytest.approx(0.3)
    assert variants["B"].holdout == 20  # compared with the campaign's whole holdout
    per_store = {(x.campaign_id, x.store_id): x for x in rep.campaign_stores}
    assert per_store["c", "s1"].holdout == 10 and per_store["c", "s1"].holdout_returns == 2
    assert [s.store_id for s in rep.stores] == ["s2", "s1"]  # 50 % beats 30 %
    assert rep.stores[0].open == 0


def test_open_windows_are_counted() -> None:
    rows = [exposure("c", "A", "s", False, False, ts=100 * DAY - DAY) for _ in range(3)]
    rep = summarise(rows, now=100 * DAY, return_days=14)
    assert rep.campaigns[0].open == 3


@pytest.fixture()
def bridge(tmp_path: Path):
    store = BridgeStore(tmp_path / "bridge.db")
    keys = BridgeKeys(tmp_path)
    seed(store, keys, load_tenant(TENANT), time.time())
    yield store, tmp_path
    store.close()


def add_exposure(
    store: BridgeStore,
    crm: str,
    ts: float,
    holdout: bool = False,
    variant: str = "A",
    state="delivered",
) -> None:
    cust = customer_by_crm_id(store, crm)["id"]
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO decisions(event_id, customer_id, campaign_id, outcome, reason, detail, "
            "ts, variant, holdout, store_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                f"e-{crm}-{ts}",
                cust,
                "fav-15",
                "holdout" if holdout else "send",
                "holdout" if holdout else "sent",
                "",
                ts,
                None if holdout else variant,
                int(holdout),
                "main-st",
            ],
        )
        if not holdout:
            db.execute(
                "INSERT INTO sends(decision_id, customer_id, campaign_id, store_id, ts, state, "
                "provider, sender, body, variant, cost) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    cur.lastrowid,
                    cust,
                    "fav-15",
                    "main-st",
                    ts,
                    state,
                    "sandbox",
                    "S",
                    "b",
                    variant,
                    0.05,
                ],
            )


def add_visit(store: BridgeStore, crm: str, ts: float, type_: str = "visit") -> None:
    subject = customer_by_crm_id(store, crm)["subject"]
    store.insert_event(f"v-{crm}-{ts}-{type_}", "main-st", "door-1", type_, subject, ts, "{}", ts)


def test_returns_from_visits_within_the_window(bridge) -> None:
    store, _ = bridge
    now = time.time()
    t0 = now - 30 * DAY
    add_exposure(store, "C-1001", t0)  # returns on day 3
    add_visit(store, "C-1001", t0 + 3 * DAY)
    add_exposure(store, "C-1002", t0)  # returns only on day 15: too late
    add_visit(store, "C-1002", t0 + 15 * DAY)
    add_visit(store, "C-1002", t0 - DAY)  # before the SMS: not a return
    add_exposure(store, "C-1003", t0, holdout=True)  # holdout returns on day 1
    add_visit(store, "C-1003", t0 + DAY)
    add_visit(store, "C-1003", t0 + 2 * DAY, "arrive")  # an arrive is not a visit
    add_exposure(store, "C-1004", t0, state="failed")  # never reached the customer: ignored
    add_visit(store, "C-1004", t0 + DAY)
    rep = build_report(store, now, 14)
    [c] = rep.campaigns
    assert (c.sends, c.returns, c.holdout, c.holdout_returns) == (2, 1, 1, 1)
    assert build_report(store, now, 20).campaigns[0].returns == 2  # a wider window
    # the returns view lists every later visit with its delay; the report applies the window
    crm = {c["id"]: c["crm_id"] for c in customer_rows(store)}
    view = [
        {**r, "crm_id": crm[r["customer_id"]]}
        for r in return_rows(store)
        if r["customer_id"] in crm
    ]
    delays = sorted((r["crm_id"], round(r["after_s"] / DAY)) for r in view)
    assert delays == [("C-1001", 3), ("C-1002", 15), ("C-1003", 1), ("C-1004", 1)]
    assert c.cost == pytest.approx(0.10)


def test_purchases_import_revenue_and_idempotence(bridge) -> None:
    store, tmp_path = bridge
    now = time.time()
    t0 = now - 30 * DAY
    add_exposure(store, "C-1001", t0)
    add_exposure(store, "C-1003", t0, holdout=True)
    when = lambda d: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + d * DAY))  # noqa: E731
    csv = tmp_path / "purchases.csv"
    csv.write_text(
        "crm_id;store_id;time;amount;currency;order_id\n"
        f"C-1001;main-st;{when(2)};12,50;rub;o-1\n"
        f"C-1001;main-st;{when(40)};99;RUB;o-2\n"  # after the window
        f"C-1003;;{when(1)};4;RUB;\n"
        f"C-9999;main-st;{when(1)};4;RUB;\n"
        f"C-1002;main-st;yesterday;4;RUB;\n"
        f"C-1002;nowhere;{when(1)};4;RUB;\n"
        f"C-1002;main-st;{when(1)};lots;RUB;\n",
        encoding="utf-8",
    )
    rep = import_purchases(store, csv, now)
    assert (rep.rows, rep.added, rep.known) == (7, 3, 0)
    fields = [(line, f) for line, f, _ in rep.problems]
    assert fields == [(5, "crm_id"), (6, "time"), (7, "store_id"), (8, "amount")]
    again = import_purchases(store, csv, now)
    assert (again.added, again.known) == (0, 3)
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"purchases": [{"crm_id": "C-1001", "time": when(3), "amount": 1}]}))
    assert import_purchases(store, js, now).added == 1
    [c] = build_report(store, now, 14).campaigns
    assert c.revenue == pytest.approx(13.5)
    assert c.holdout_revenue_per == pytest.approx(4.0)
    assert c.incremental_revenue == pytest.approx(13.5 - 4.0)
    # an erased customer's purchases are refused as suppressed
    erase_customer(store, "C-1002", now)
    late = tmp_path / "late.csv"
    late.write_text(f"crm_id,time,amount\nC-1002,{when(1)},5\n")
    rep = import_purchases(store, late, now)
    assert rep.problems == [(2, "crm_id", "customer erased on request: suppressed")]


def test_naive_purchase_time_is_store_local(bridge) -> None:
    store, tmp_path = bridge
    f = tmp_path / "p.csv"
    f.write_text("crm_id,store_id,time,amount\nC-1001,main-st,2026-03-14T12:00:00,1\n")
    import_purchases(store, f, time.time())
    ts = purchase_rows(store)[0]["ts"]
    assert ts == 1773478800.0  # 12:00 Moscow = 09:00 UTC


def test_report_cli_ranks_stores(bridge) -> None:
    store, tmp_path = bridge
    now = time.time()
    add_exposure(store, "C-1001", now - 20 * DAY)
    add_visit(store, "C-1001", now - 19 * DAY)
    add_exposure(store, "C-1002", now - 20 * DAY, variant="B")
    add_exposure(store, "C-1003", now - 20 * DAY, holdout=True)
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n')
    r = CliRunner().invoke(cli_app, ["report", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "Stores ranked by conversion" in r.output and "main-st" in r.output
    assert "50.0%" in r.output  # 1 return of 2 sends
    r = CliRunner().invoke(cli_app, ["report", "--json", "--days", "3", "-c", str(cfg)])
    data = json.loads(r.output)
    assert data["return_days"] == 3
    assert {v["variant"] for v in data["variants"]} == {"A", "B"}
    assert data["stores"][0]["store_id"] == "main-st"
    f = tmp_path / "p.csv"
    f.write_text("crm_id,time,amount\nC-1001,2026-01-01,3\nC-0,2026-01-01,1\n")
    r = CliRunner().invoke(cli_app, ["purchases", "import", str(f), "-c", str(cfg)])
    assert r.exit_code == 1 and "added 1" in r.output and "row 3: crm_id" in r.output
