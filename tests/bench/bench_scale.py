"""Scale-out: 1, 2 and 4 bridge workers on PostgreSQL behind Mosquitto's shared subscription.

Each run gets a fresh database (500 stores, customers with consent, two capped campaigns), N
worker processes (``cloud-bridge run --no-console --worker-id k``) and a publisher process
standing in for 2 000 sensors (2 % of its events sent twice, as a sensor re-sending after a
lost PUBACK does). Two measurements per run:

- Throughput: the workers are connected and subscribed, then frozen (SIGSTOP) while the
  publisher hands the whole backlog to Mosquitto (acknowledged, queued for the group); then
  they are let go (SIGCONT) and drain it. events/s = unique events over the time from the
  release to the last decision stored. The sensors live on other machines: freezing the
  workers while publishing keeps the publisher's own CPU off the two cores being measured
  (publishing into running workers, it took 2.3 CPU seconds out of a 7.5 s run with two
  workers, about 15 % of the machine).
- Latency: then the publisher sends fresh events at the fleet's rate (2 000 sensors x 0.2/s =
  400 events/s, PASSBY_BENCH_SCALE_RATE) and each event's time from publish (its ts) to its
  stored decision is taken: p50/p99 at that load.

Then the audit: events decided twice, sends for one decision twice, sends over a campaign
cap; and nothing left undecided. The baseline is the 1-worker run of the same data;
``scaling_2_over_1`` is drain events/s with two workers over that with one. PostgreSQL runs
with fsync and synchronous_commit on, as in production. Environment:
PASSBY_BENCH_SCALE_EVENTS (default 12 000), _CUSTOMERS (800), _WORKERS (1,2,4), _RATE (400),
_LATENCY_EVENTS (4 000), _ROUNDS (3; each configuration's median run is its figure). With
800 customers about one event in five ends in an SMS (the caps).

CPU per event: the CPU the drain took (utime + stime from /proc) of the run's own bridge
workers (their process groups) and of its own PostgreSQL cluster (the postmaster, every
process it forked and those it already reaped), over the unique events; other clusters and
workers on the machine are not counted. ``cpu_ms_per_event_N`` is bridge + PostgreSQL with N
workers: each configuration's median over the rounds, bridge and PostgreSQL taken from that
same run. ``cpu_2_over_1`` is the median over the rounds of two workers' figure over one's in
the same round (the rounds run 1 then 2 workers back to back: on a machine whose other load
comes and goes, the pair shares its spell). Work per
event from PostgreSQL's own statistics, over the run (drain and paced events, read after the
workers stopped so every backend flushed its counters): commits and rollbacks, deadlocks,
row updates and how many were HOT. PASSBY_BENCH_SCALE_PGSTATS=1 also loads
pg_stat_statements (the statements' calls and time, per event) and samples the backends' wait
events every 50 ms while draining; it costs CPU of its own, so its runs are for finding where
the time goes, not for the headline figures."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))

from scale_helpers import (  # noqa: E402
    DATA_KEY,
    Fleet,
    Publisher,
    audit,
    cpu_seconds,
    latencies,
    make_events,
    pct,
    postmaster_pid,
    seed,
    wait_decided,
)

from cloud_bridge.dev.mosquitto import LocalMosquitto  # noqa: E402
from cloud_bridge.dev.pgserver import LocalPostgres  # noqa: E402
from cloud_bridge.storage.store import BridgeStore  # noqa: E402

EVENTS = int(os.environ.get("PASSBY_BENCH_SCALE_EVENTS", "12000"))
CUSTOMERS = int(os.environ.get("PASSBY_BENCH_SCALE_CUSTOMERS", "800"))
WORKERS = [int(w) for w in os.environ.get("PASSBY_BENCH_SCALE_WORKERS", "1,2,4").split(",")]
RATE = float(os.environ.get("PASSBY_BENCH_SCALE_RATE", "400"))
LATENCY_EVENTS = int(os.environ.get("PASSBY_BENCH_SCALE_LATENCY_EVENTS", "4000"))
ROUNDS = int(os.environ.get("PASSBY_BENCH_SCALE_ROUNDS", "3"))
PGSTATS = os.environ.get("PASSBY_BENCH_SCALE_PGSTATS", "") == "1"
# what one event may cost with two workers, over one (issue 15)
CPU_RATIO_GOAL = 1.1


def send_states(store: BridgeStore) -> dict[str, int]:
    rows = store.query("SELECT state, count(*) AS n FROM sends GROUP BY state ORDER BY state")
    return {r["state"]: int(r["n"]) for r in rows}


def wait_sent(store: BridgeStore, timeout: float) -> bool:
    """True once no send is still reserved or being sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not store.query(
            "SELECT 1 AS x FROM sends WHERE state IN ('reserved', 'sending') LIMIT 1"
        ):
            return True
        time.sleep(0.1)
    return False


def pg_counters(dsn: str) -> dict[str, int]:
    """The database's own counters (pg_stat_database, pg_stat_user_tables), summed."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        db = conn.execute(
            "SELECT xact_commit, xact_rollback, deadlocks, conflicts, tup_inserted, "
            "tup_updated, tup_deleted, blks_hit + blks_read FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
        tables = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
        ).fetchall()
    assert db is not None
    out = dict(
        zip(
            ("commits", "rollbacks", "deadlocks", "conflicts", "inserted", "updated",
             "deleted", "blocks"),
            (int(v) for v in db),
            strict=True,
        )
    )  # fmt: skip
    out["hot_updated"] = sum(int(t[3]) for t in tables)
    for name, ins, upd, hot in tables:
        if upd:
            out[f"upd:{name}"] = int(upd)
            out[f"hot:{name}"] = int(hot)
        if ins:
            out[f"ins:{name}"] = int(ins)
    return out


def pg_statements(dsn: str) -> list[tuple[str, int, float, int]]:
    """pg_stat_statements' statements of this database: (query, calls, ms, rows), by time."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query, calls, total_exec_time, rows FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() "
            "ORDER BY total_exec_time DESC"
        ).fetchall()
    return [(str(q), int(c), float(t), int(r)) for q, c, t, r in rows]


class WaitSampler:
    """Samples the database's backends every ``every`` s: state and wait event."""

    def __init__(self, dsn: str, every: float = 0.05) -> None:
        self.dsn, self.every = dsn, every
        self.seen: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(self.every):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                ).fetchall()
                self.samples += 1
                for state, wtype, wevent in rows:
                    if state == "active":
                        self.seen[f"{wtype or 'CPU'}:{wevent or '-'}"] += 1

    def stop(self) -> dict[str, float]:
        """Active backends by wait event: the mean number over the samples."""
        self._stop.set()
        self._thread.join()
        return {k: v / max(1, self.samples) for k, v in self.seen.most_common()}


def freeze(fleet: Fleet, sig: int) -> None:
    for proc in fleet.procs.values():
        os.killpg(proc.pid, sig)


def one_run(
    pg: LocalPostgres, workers: int, lines: list[str], paced: list[str], tmp: Path
) -> dict[str, Any]:
    work = tmp / f"w{workers}"
    work.mkdir(parents=True)
    dsn = pg.create_database(f"scale_{tmp.name}_{workers}")
    store = BridgeStore(dsn, data_key=bytes.fromhex(DATA_KEY))
    seed(store, CUSTOMERS, time.time())
    if PGSTATS:
        store.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    broker = LocalMosquitto(work / "mosquitto")
    broker.start()
    fleet = Fleet(work, dsn, broker.port)
    unique = len(set(lines))
    postmaster = postmaster_pid(pg.data)
    waits: dict[str, float] = {}
    statements: list[tuple[str, int, float, int]] = []
    try:
        for k in range(workers):
            fleet.start(str(k + 1))
        groups = [p.pid for p in fleet.procs.values()]
        assert broker.proc is not None
        mosquitto = broker.proc.pid

        def cpu() -> dict[str, float]:
            return cpu_seconds(groups, postmaster, mosquitto)

        # throughput: the backlog queued at the broker for frozen workers, then drained
        pub = Publisher(work, broker.port, lines)
        time.sleep(1.5)  # the seeding's counters are flushed by now (idle backends: 1 s)
        pg0 = pg_counters(dsn)
        if PGSTATS:
            store.query("SELECT pg_stat_statements_reset()")
        freeze(fleet, signal.SIGSTOP)
        try:
            pub.go()
            published = pub.result()
        finally:
            sampler = WaitSampler(dsn) if PGSTATS else None
            freeze(fleet, signal.SIGCONT)
            cpu0 = cpu()
            t0 = time.time()
        if not wait_decided(store, unique, 900):
            raise RuntimeError(f"{workers} workers: not all events decided: {audit(store)}")
        # the CPU an event costs includes sending its SMS: the window closes once every send
        # reserved by the drain has left reserved/sending (one worker's deliverer lagging
        # behind its decisions must not move its work out of the window)
        if not wait_sent(store, 300):
            raise RuntimeError(f"{workers} workers: sends not settled: {send_states(store)}")
        cpu1 = cpu()
        drain_sends = send_states(store)
        if sampler is not None:
            waits = sampler.stop()
            statements = pg_statements(dsn)
        last = store.query("SELECT max(ts) AS t FROM decisions")[0]["t"]
        elapsed = last - t0
        # latency: fresh events at the fleet's rate
        t1 = time.time()
        pub = Publisher(work, broker.port, paced, rate=RATE)
        pub.go()
        pub.result()
        if not wait_decided(store, unique + len(set(paced)), 300):
            raise RuntimeError(f"{workers} workers: paced events not decided: {audit(store)}")
        lat = latencies(store, since=t1)
        found = audit(store)
    finally:
        fleet.stop()
        broker.stop()
    try:  # the workers' backends ended, so every counter is flushed
        pg1 = pg_counters(dsn)
        decided = store.query("SELECT count(*) AS n FROM decisions")[0]["n"]
    finally:
        store.close()
    for k in range(workers):
        for line in fleet.log(str(k + 1)).splitlines():
            if "stopping:" in line:
                print(f"  worker {k + 1}/{workers}: {line.split('stopping: ')[1]}")
    return {
        **found,
        "workers": workers,
        "events": unique,
        "published": published["acked"],
        "elapsed_s": elapsed,
        "events_per_s": unique / elapsed,
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "latency_events": len(lat),
        # CPU per event, milliseconds, by role; and how busy the machine's cores were
        "cpu_ms": {k: (cpu1[k] - cpu0[k]) * 1000 / unique for k in cpu1},
        "cores_busy": sum(cpu1[k] - cpu0[k] for k in cpu1) / elapsed,
        # PostgreSQL's own counters over the run, per decided event
        "pg": {k: (pg1.get(k, 0) - pg0.get(k, 0)) / decided for k in pg1},
        "waits": waits,
        "statements": statements,
        "decided_run": decided,
        "drain_sends": drain_sends,
    }


def check_run(r: dict[str, Any]) -> None:
    """Fail loudly when a run did not do the work it claims: every event decided once, no
    error, no send twice or over a cap, about one event in five ending in an SMS, and every
    SMS of the drain sent (none expired or shed: a cheaper path than the one measured)."""
    problems = [
        f"{r[k]} {k}" for k in ("duplicates", "cap_violations", "undecided", "errors") if r[k]
    ]
    if r["sends"] < 0.1 * r["events"]:
        problems.append(f"only {r['sends']} sends for {r['events']} events")
    unsent = {k: v for k, v in r["drain_sends"].items() if k not in ("accepted", "delivered")}
    if unsent:
        problems.append(f"sends of the drain not sent: {unsent}")
    if problems:
        raise RuntimeError(f"{r['workers']} workers: " + "; ".join(problems))


def bridge_pg_ms(r: dict[str, Any]) -> float:
    return float(r["cpu_ms"]["workers"] + r["cpu_ms"]["postgres"])


def print_pg(by: dict[int, dict[str, Any]]) -> None:
    """PostgreSQL's counters per decided event, and (with PGSTATS) the statements and waits."""
    keys = sorted({k for r in by.values() for k in r["pg"]}, key=lambda k: (":" in k, k))
    print("\nPostgreSQL per decided event (median runs; HOT: updates that wrote no index):")
    print(f"{'counter':32} " + " ".join(f"{f'{n} worker(s)':>12}" for n in by))
    for k in keys:
        vals = [r["pg"].get(k, 0.0) for r in by.values()]
        if any(abs(v) >= 0.0005 for v in vals):
            print(f"{k:32} " + " ".join(f"{v:>12.3f}" for v in vals))
    for n, r in by.items():
        if r["waits"]:
            print(f"\n{n} worker(s): active backends by wait event (mean over samples while "
                  "draining):")  # fmt: skip
            for k, v in list(r["waits"].items())[:10]:
                print(f"  {v:6.2f}  {k}")
        if r["statements"]:
            events = r["events"]
            print(f"\n{n} worker(s): statements by time while draining (per event: calls, "
                  "µs, rows):")  # fmt: skip
            for q, calls, ms, rows in r["statements"][:30]:
                text = " ".join(q.split())[:110]
                print(f"  {calls / events:6.2f} {ms * 1000 / events:8.1f} "
                      f"{rows / events:6.2f}  {text}")  # fmt: skip


def run() -> dict[str, Any]:
    lines = make_events(EVENTS, CUSTOMERS, random.Random(10))
    paced = make_events(LATENCY_EVENTS, CUSTOMERS, random.Random(11))
    tmp = Path(tempfile.mkdtemp(prefix="passby-bench-scale-"))
    results = []
    settings = (
        {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
        if PGSTATS
        else {}
    )
    with LocalPostgres(settings=settings) as pg:
        # Rounds of 1, 2, 4 workers, interleaved, so that a slow spell of this (virtual)
        # machine does not land on one configuration only; each configuration's median run
        # is its figure.
        for k in range(ROUNDS):
            for n in WORKERS:
                results.append(one_run(pg, n, lines, paced, tmp / f"r{k}"))
                check_run(results[-1])
    shutil.rmtree(tmp, ignore_errors=True)
    if PGSTATS:  # everything measured, for comparing the configurations statement by statement
        dump = Path(tempfile.gettempdir()) / f"passby-bench-scale-pgstats-{os.getpid()}.json"
        dump.write_text(json.dumps(results, default=str))
        print(f"PostgreSQL statistics of every run: {dump}")
    by: dict[int, dict[str, Any]] = {}
    for n in WORKERS:
        runs = sorted((r for r in results if r["workers"] == n), key=lambda r: r["events_per_s"])
        by[n] = runs[len(runs) // 2]
    base = by[WORKERS[0]]["events_per_s"]
    print(f"scale-out on PostgreSQL, {os.cpu_count()} cores: a backlog of {len(lines)} publishes "
          f"({by[WORKERS[0]]['events']} unique events, 2 000 sensor topics) drained, then "
          f"{len(paced)} more at {RATE:.0f}/s for latency; {CUSTOMERS} customers; "
          f"{ROUNDS} rounds")  # fmt: skip
    print(f"{'run':>4} {'workers':>7} {'events/s':>9} {'x 1 worker':>10} {'p50 ms*':>8} "
          f"{'p99 ms*':>8} {'drain s':>8} {'decided':>8} {'sends':>6} {'dupes':>5} "
          f"{'cap viol':>8} {'undecided':>9}")  # fmt: skip
    for i, r in enumerate(results):
        mark = "median" if any(r is m for m in by.values()) else ""
        print(f"{i + 1:>4} {r['workers']:>7} {r['events_per_s']:>9.0f} "
              f"{r['events_per_s'] / base:>10.2f} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} "
              f"{r['elapsed_s']:>8.1f} {r['decisions']:>8} {r['sends']:>6} {r['duplicates']:>5} "
              f"{r['cap_violations']:>8} {r['undecided']:>9} {mark}")  # fmt: skip
    print(f"* publish to decision at {RATE:.0f} events/s ({by[WORKERS[0]]['latency_events']} "
          "events); x 1 worker: over the median 1-worker run")  # fmt: skip
    print("\nCPU per event (ms) by role, and cores busy while draining (this machine has "
          f"{os.cpu_count()}):")  # fmt: skip
    # CPU per event: each configuration's median run by bridge + PostgreSQL ms
    cpu_by: dict[int, dict[str, Any]] = {}
    for n in WORKERS:
        runs = sorted((r for r in results if r["workers"] == n), key=bridge_pg_ms)
        cpu_by[n] = runs[len(runs) // 2]
    base_cpu = bridge_pg_ms(cpu_by[WORKERS[0]])
    print(f"{'run':>4} {'workers':>7} {'bridge':>7} {'postgres':>8} {'bridge+pg':>9} "
          f"{'x 1 worker':>10} {'mosquitto':>9} {'cores busy':>10}")  # fmt: skip
    for i, r in enumerate(results):
        c = r["cpu_ms"]
        mark = "median" if any(r is m for m in cpu_by.values()) else ""
        print(f"{i + 1:>4} {r['workers']:>7} {c['workers']:>7.2f} {c['postgres']:>8.2f} "
              f"{bridge_pg_ms(r):>9.2f} {bridge_pg_ms(r) / base_cpu:>10.2f} "
              f"{c['mosquitto']:>9.2f} {r['cores_busy']:>10.2f} {mark}")  # fmt: skip
    print("\nsends of the drain by state when the CPU window closed:")
    for i, r in enumerate(results):
        print(f"{i + 1:>4} {r['workers']:>7}  "
              + ", ".join(f"{k} {v}" for k, v in r["drain_sends"].items()))  # fmt: skip
    print_pg(by)
    figures: dict[str, Any] = {
        "duplicates": sum(r["duplicates"] for r in results),
        "cap_violations": sum(r["cap_violations"] for r in results),
        "undecided": sum(r["undecided"] for r in results),
        "runs": len(results),
    }
    for n, r in cpu_by.items():
        figures[f"cpu_ms_per_event_{n}"] = round(bridge_pg_ms(r), 3)
        figures[f"cpu_ms_bridge_{n}"] = round(r["cpu_ms"]["workers"], 3)
        figures[f"cpu_ms_postgres_{n}"] = round(r["cpu_ms"]["postgres"], 3)
    for n, r in by.items():
        figures[f"events_per_s_{n}"] = round(r["events_per_s"], 1)
        figures[f"p99_ms_{n}"] = round(r["p99_ms"], 1)
        figures[f"cores_busy_{n}"] = round(r["cores_busy"], 2)
    if 1 in by and 2 in by:
        figures["scaling_2_over_1"] = round(by[2]["events_per_s"] / by[1]["events_per_s"], 2)
        pairs = sorted(
            bridge_pg_ms(results[k + 1]) / bridge_pg_ms(results[k])
            for k in range(len(results) - 1)
            if results[k]["workers"] == 1 and results[k + 1]["workers"] == 2
        )
        figures["cpu_2_over_1"] = round(pairs[len(pairs) // 2], 3)
        figures["cpu_2_over_1_rounds"] = [round(p, 3) for p in pairs]
        figures["cpu_2_over_1_goal"] = CPU_RATIO_GOAL
    if 1 in by and 4 in by:
        figures["scaling_4_over_1"] = round(by[4]["events_per_s"] / by[1]["events_per_s"], 2)
    return figures
