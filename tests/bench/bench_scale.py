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
800 customers about one event in five ends in an SMS (the caps)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import tempfile
import time
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
    broker = LocalMosquitto(work / "mosquitto")
    broker.start()
    fleet = Fleet(work, dsn, broker.port)
    unique = len(set(lines))
    try:
        for k in range(workers):
            fleet.start(str(k + 1))
        # throughput: the backlog queued at the broker for frozen workers, then drained
        pub = Publisher(work, broker.port, lines)
        freeze(fleet, signal.SIGSTOP)
        try:
            pub.go()
            published = pub.result()
        finally:
            freeze(fleet, signal.SIGCONT)
            cpu0 = cpu_seconds()
            t0 = time.time()
        if not wait_decided(store, unique, 900):
            raise RuntimeError(f"{workers} workers: not all events decided: {audit(store)}")
        cpu1 = cpu_seconds()
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
    }


def run() -> dict[str, Any]:
    lines = make_events(EVENTS, CUSTOMERS, random.Random(10))
    paced = make_events(LATENCY_EVENTS, CUSTOMERS, random.Random(11))
    tmp = Path(tempfile.mkdtemp(prefix="passby-bench-scale-"))
    results = []
    with LocalPostgres() as pg:
        # Rounds of 1, 2, 4 workers, interleaved, so that a slow spell of this (virtual)
        # machine does not land on one configuration only; each configuration's median run
        # is its figure.
        for k in range(ROUNDS):
            for n in WORKERS:
                results.append(one_run(pg, n, lines, paced, tmp / f"r{k}"))
    shutil.rmtree(tmp, ignore_errors=True)
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
    print(f"{'run':>4} {'workers':>7} {'bridge':>7} {'postgres':>8} {'mosquitto':>9} "
          f"{'cores busy':>10}")  # fmt: skip
    for i, r in enumerate(results):
        c = r["cpu_ms"]
        print(f"{i + 1:>4} {r['workers']:>7} {c['workers']:>7.2f} {c['postgres']:>8.2f} "
              f"{c['mosquitto']:>9.2f} {r['cores_busy']:>10.2f}")  # fmt: skip
    figures: dict[str, Any] = {
        "duplicates": sum(r["duplicates"] for r in results),
        "cap_violations": sum(r["cap_violations"] for r in results),
        "undecided": sum(r["undecided"] for r in results),
        "runs": len(results),
    }
    for n, r in by.items():
        figures[f"events_per_s_{n}"] = round(r["events_per_s"], 1)
        figures[f"p99_ms_{n}"] = round(r["p99_ms"], 1)
        figures[f"cores_busy_{n}"] = round(r["cores_busy"], 2)
    if 1 in by and 2 in by:
        figures["scaling_2_over_1"] = round(by[2]["events_per_s"] / by[1]["events_per_s"], 2)
    if 1 in by and 4 in by:
        figures["scaling_4_over_1"] = round(by[4]["events_per_s"] / by[1]["events_per_s"], 2)
    return figures
