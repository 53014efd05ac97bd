"""Console pages against a big store: 1 k sensors, 100 k customers, 1 M decisions.

    .venv/bin/python tests/bench/bench_console.py [--dir DIR]

Builds the store once (kept in DIR), then times each main page and API call for an admin and
a store owner (median of 5), and prints a table. The goal: every page under 300 ms."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from console_helpers import PASSWORD, login  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from cloud_bridge.auth import Accounts  # noqa: E402
from cloud_bridge.store import BridgeStore  # noqa: E402
from cloud_bridge.web import create_app  # noqa: E402

STORES, SENSORS, CUSTOMERS, DECISIONS = 100, 1000, 100_000, 1_000_000


def build(path: Path) -> BridgeStore:
    store = BridgeStore(path, b"\x01" * 32)
    if store.query("SELECT count(*) AS n FROM decisions")[0]["n"] >= DECISIONS:
        return store
    now = time.time()
    rnd = random.Random(1)
    db = store.db
    with store.transaction():
        for s in range(STORES):
            db.execute(
                "INSERT INTO stores(id, name, timezone, country, sender_name, site_key, "
                "roster_version) VALUES (?,?,?,?,?,?,3)",
                [f"s{s:03d}", f"Store {s}", "Europe/Moscow", "RU", "Shop", "00" * 32],
            )
        stats = json.dumps({"frames_per_s": 12.0, "outbox_depth": 0, "dropped": 0,
                            "cpu_temp_c": 50.0, "disk_free_mb": 900.0, "channel": 6})  # fmt: skip
        for i in range(SENSORS):
            sid = f"s{i % STORES:03d}"
            db.execute(
                "INSERT INTO sensors VALUES (?,?,?,?,?,?,?)",
                [sid, f"door-{i}", "online", "0.1", 3, now - rnd.random() * 100, stats],
            )
            for k in range(15):
                db.execute(
                    "INSERT INTO sensor_stats(store_id, sensor_id, received, ts, frames_per_s, "
                    "outbox_depth, dropped) VALUES (?,?,?,?,?,?,0)",
                    [sid, f"door-{i}", now - 60 * k, now - 60 * k, 10.0, 0],
                )
        db.conn.executemany(
            "INSERT INTO customers(id, crm_id, subject, name, phone, created) VALUES (?,?,?,?,?,?)",
            [(c, f"C-{c}", f"{c:016x}", f"Name {c}", f"+7916{c:07d}", now) for c in range(1, CUSTOMERS + 1)],
        )  # fmt: skip
        db.conn.executemany(
            "INSERT INTO consents(customer_id, kind, status, ts, proof) VALUES (?,?,?,?,'{}')",
            [(c, k, "active", now) for c in range(1, CUSTOMERS + 1) for k in ("sms", "recognition")],
        )  # fmt: skip
        reasons = ["no_campaign", "quiet_hours", "campaign_cap", "holdout", "sent", "audience"]
        batch_e, batch_d = [], []
        for d in range(1, DECISIONS + 1):
            ts = now - rnd.random() * 30 * 86400
            st = f"s{d % STORES:03d}"
            eid = f"{d:032x}"
            batch_e.append(
                (eid, st, "door-1", "arrive", f"{d % CUSTOMERS + 1:016x}", ts, "{}", ts, "done")
            )
            reason = reasons[d % len(reasons)]
            outcome = "send" if reason == "sent" else ("holdout" if reason == "holdout" else "skip")
            batch_d.append(
                (
                    eid,
                    d % CUSTOMERS + 1,
                    "camp-1",
                    outcome,
                    reason,
                    "-",
                    ts,
                    "A",
                    int(outcome == "holdout"),
                    st,
                )
            )
            if len(batch_e) >= 50_000:
                db.conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", batch_e)
                db.conn.executemany(
                    "INSERT INTO decisions(event_id, customer_id, campaign_id, outcome, reason, "
                    "detail, ts, variant, holdout, store_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    batch_d,
                )
                batch_e, batch_d = [], []
        db.execute(
            "INSERT INTO sends(decision_id, customer_id, campaign_id, store_id, ts, state, provider, "
            "sender, body, variant) SELECT id, customer_id, campaign_id, store_id, ts, 'delivered', "
            "'sandbox', 'Shop', 'hi', variant FROM decisions WHERE outcome='send'"
        )
    Accounts(store).add_user("ada", "admin", PASSWORD, now)
    Accounts(store).add_user("olga", "owner", PASSWORD, now, ["s001"])
    return store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=Path("var/bench-console"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    store = build(args.dir / "bridge.db")
    print(f"store ready in {time.monotonic() - t0:.0f} s")
    app = create_app(store)
    rows = []
    for user, paths in (
        ("ada", ["/", "/fleet", "/fleet/s001/door-1", "/stores", "/stores/s001", "/campaigns",
                 "/customers?q=C-4242", "/customers/C-4242", "/reports", "/api/v1/fleet"]),
        ("olga", ["/", "/stores/s001", "/reports", "/api/v1/reports"]),
    ):  # fmt: skip
        c = TestClient(app)
        login(c, user)
        for p in paths:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                r = c.get(p)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (p, r.status_code)
            rows.append((user, p, statistics.median(times)))
    print(f"{'user':6} {'page':28} {'median ms':>10}")
    for user, p, ms in rows:
        print(f"{user:6} {p:28} {ms:10.0f}{'  SLOW' if ms > 300 else ''}")


if __name__ == "__main__":
    main()
