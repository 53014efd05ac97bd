"""Scale-out harness shared by tests/integration/test_scale_workers.py and the ``scale`` bench.

A PostgreSQL database seeded with stores, consenting customers and capped campaigns; bridge
workers as real ``cloud-bridge run --no-console --worker-id N`` processes on it, sharing the
events through Mosquitto's shared subscription; a publisher process standing in for the
sensors; and the audit that counts what must never happen (an event decided twice, a message
sent twice, a cap exceeded).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_bridge.storage.events import event_count
from cloud_bridge.storage.store import CAPPED_STATES, BridgeStore

REPO = Path(__file__).resolve().parents[2]
BRIDGE = str(Path(sys.executable).with_name("cloud-bridge"))
DATA_KEY = "7a" * 32
STORES = 500  # 2 000 sensors: 4 doors in each of 500 stores
DOORS = 4
CAMPAIGNS = (  # (id, trigger, cap_count, cap_days, priority)
    ("welcome", "arrive", 1, 30, 2),
    ("regulars", "visit", 2, 30, 1),
)


def seed(store: BridgeStore, customers: int, now: float) -> None:
    """Stores open all day, ``customers`` consenting customers (subject = hex of the id) and
    the capped campaigns above."""
    with store.transaction() as db:
        for s in range(STORES):
            db["stores"].insert(
                {
                    "id": f"s{s:04d}",
                    "name": f"Store {s}",
                    "timezone": "UTC",
                    "country": "RU",
                    "sender_name": "PassbyShop",
                    "send_start": "00:00",
                    "send_end": "24:00",
                    "site_key": "00" * 16,
                }
            )
        for i in range(1, customers + 1):
            db.execute(
                "INSERT INTO customers(id, crm_id, subject, name, phone, created) "
                "VALUES (?,?,?,?,?,?)",
                [i, f"C-{i}", f"{i:016x}", "Anna", f"+7916{i:07d}", now],
            )
            for kind in ("sms", "recognition"):
                db.execute(
                    "INSERT INTO consents(customer_id, kind, status, ts) VALUES (?,?,?,?)",
                    [i, kind, "active", now - 86400],
                )
    for cid, trigger, cap, days, prio in CAMPAIGNS:
        store.save_campaign(
            {
                "id": cid,
                "name": cid.title(),
                "trigger": trigger,
                "template": "{name}, 10% off today",
                "stores": [],
                "status": "active",
                "cap_count": cap,
                "cap_days": days,
                "priority": prio,
            },
            now,
        )


def make_events(n: int, customers: int, rng: random.Random, dup_share: float = 0.02) -> list[str]:
    """JSON lines ``[topic, event]``; ``dup_share`` of them are sent twice (same event_id)."""
    lines = []
    for _ in range(n):
        cust = rng.randrange(customers) + 1
        sensor = rng.randrange(STORES * DOORS)
        event = {
            "schema": "passby.event/1",
            "event_id": uuid.uuid4().hex,
            "type": "arrive" if rng.random() < 0.7 else "visit",
            "subject": f"{cust:016x}",
            "rssi": {"max": -55, "median": -62},
            "frames": 12,
            "dwell_s": 45.0,
        }
        topic = f"passby/v1/s{sensor // DOORS:04d}/door-{sensor % DOORS + 1}/events"
        lines.append(json.dumps([topic, event]))
        if rng.random() < dup_share:
            lines.append(lines[-1])
    return lines


PUBLISHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
port, path, rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
offset = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0  # a bench's pinned clock
events = [json.loads(line) for line in open(path)]
pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "scale-publisher", protocol=mqtt.MQTTv5)
pub.max_inflight_messages_set(2000)
pub.max_queued_messages_set(0)
pub.connect("127.0.0.1", port)
pub.loop_start()
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
infos = []
sent = {}
for i, (topic, event) in enumerate(events):
    if rate > 0:
        ahead = t0 + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    if event["event_id"] not in sent:
        ts = time.time() + offset
        event.update(ts=ts, first_seen=ts - 30, last_seen=ts)
        sent[event["event_id"]] = event
    infos.append(pub.publish(topic, json.dumps(sent[event["event_id"]]), qos=1))
for info in infos:
    info.wait_for_publish(300)
print(json.dumps({"publish_s": time.perf_counter() - t0, "acked": sum(i.is_published() for i in infos),
                  "cpu_s": time.process_time()}), flush=True)
pub.disconnect()
pub.loop_stop()
"""


@dataclass
class Fleet:
    """Worker processes on one database and broker."""

    workdir: Path
    dsn: str
    broker_port: int
    orphan_after_s: float = 10.0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def config(self) -> Path:
        path = self.workdir / "bridge.toml"
        path.write_text(
            f'database = "{self.dsn}"\n'
            f'data_dir = "{self.workdir / "data"}"\n'
            f'data_key = "{DATA_KEY}"\n'
            f"orphan_after_s = {self.orphan_after_s}\n"
            "[mqtt]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.broker_port}\n"
            "[provider]\n"
            'kind = "sandbox"\n'
            "rate_per_s = 1000\n"
        )
        return path

    def start(self, worker_id: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PASSBY_")}
        with open(self.workdir / f"worker-{worker_id}.log", "ab") as log:
            self.procs[worker_id] = subprocess.Popen(
                [BRIDGE, "run", "--config", str(self.config()), "--no-console",
                 "--worker-id", worker_id],
                stdout=log, stderr=log, cwd=self.workdir, env=env, start_new_session=True,
            )  # fmt: skip
        self.wait_connected(worker_id)

    def log(self, worker_id: str) -> str:
        return (self.workdir / f"worker-{worker_id}.log").read_text(errors="replace")

    def wait_connected(self, worker_id: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[worker_id]
        marks = 0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {worker_id} exited: {self.log(worker_id)[-2000:]}")
            now = self.log(worker_id).count("bridge connected to")
            if now > marks:
                return
            time.sleep(0.05)
        raise RuntimeError(f"worker {worker_id} did not connect: {self.log(worker_id)[-2000:]}")

    def kill(self, worker_id: str) -> None:
        proc = self.procs.pop(worker_id)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


class Publisher:
    """The sensors' side, in its own process (as from other machines)."""

    def __init__(
        self, workdir: Path, port: int, lines: list[str], rate: float = 0.0, offset: float = 0.0
    ) -> None:
        """``offset``: seconds added to the wall time the events are stamped with (a bench
        whose bridge runs on a pinned clock stamps them on that clock)."""
        path = workdir / "events.jsonl"
        path.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(port), str(path), str(rate), repr(offset)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the publisher could not connect to Mosquitto")

    def go(self) -> float:
        assert self.proc.stdin is not None
        t0 = time.time()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return t0

    def result(self, timeout: float = 300) -> dict[str, Any]:
        out = self.proc.communicate(timeout=timeout)[0]
        return dict(json.loads(out.strip().splitlines()[-1]))


def wait_decided(store: BridgeStore, unique: int, timeout: float) -> bool:
    """True once ``unique`` events are stored and none is still undecided."""
    # Polled gently (it shares the CPU with what it measures): the throughput is taken from
    # the decisions' own timestamps, not from when this loop notices.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event_count(store) >= unique:
            break
        time.sleep(0.5)
    while time.monotonic() < deadline:
        if not store.query("SELECT 1 AS x FROM events WHERE state='new' LIMIT 1"):
            return True
        time.sleep(0.25)
    return False


def audit(store: BridgeStore) -> dict[str, Any]:
    """What must never happen, counted from the database."""
    q = store.query
    decided_twice = q(
        "SELECT coalesce(sum(n - 1), 0) AS n FROM (SELECT event_id, count(*) AS n FROM decisions "
        "GROUP BY event_id HAVING count(*) > 1) x"
    )[0]["n"]
    sent_twice = q(
        "SELECT coalesce(sum(n - 1), 0) AS n FROM (SELECT decision_id, count(*) AS n FROM sends "
        "GROUP BY decision_id HAVING count(*) > 1) x"
    )[0]["n"]
    states = ",".join(f"'{s}'" for s in CAPPED_STATES)
    over = 0
    for cid, _, cap, _, _ in CAMPAIGNS:
        over += q(
            f"SELECT coalesce(sum(n - ?), 0) AS n FROM (SELECT customer_id, count(*) AS n "
            f"FROM sends WHERE campaign_id=? AND state IN ({states}) GROUP BY customer_id "
            f"HAVING count(*) > ?) x",
            [cap, cid, cap],
        )[0]["n"]
    undecided = q(
        "SELECT count(*) AS n FROM events e WHERE e.type IN ('arrive', 'visit') AND NOT EXISTS "
        "(SELECT 1 FROM decisions d WHERE d.event_id = e.event_id)"
    )[0]["n"]
    return {
        "events": q("SELECT count(*) AS n FROM events")[0]["n"],
        "decisions": q("SELECT count(*) AS n FROM decisions")[0]["n"],
        "sends": q("SELECT count(*) AS n FROM sends")[0]["n"],
        "errors": q("SELECT count(*) AS n FROM events WHERE state='error'")[0]["n"],
        "undecided": undecided,
        "duplicates": int(decided_twice) + int(sent_twice),
        "cap_violations": int(over),
    }


def latencies(store: BridgeStore, since: float = 0.0) -> list[float]:
    """Seconds from the sensor's publish (event ts) to the stored decision, per event (those
    published from ``since`` on)."""
    rows = store.query(
        "SELECT d.ts - e.ts AS s FROM decisions d JOIN events e ON e.event_id = d.event_id "
        "WHERE e.ts >= ?",
        [since],
    )
    return sorted(float(r["s"]) for r in rows)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def _proc_stat(pid: str) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state is [0], ppid [1], pgrp [2],
    utime [11], stime [12], cutime [13], cstime [14]); None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(
    worker_groups: list[int], postmaster: int, mosquitto: int | None = None
) -> dict[str, float]:
    """CPU seconds used so far by this run's own processes, by role (from /proc): the bridge
    workers (every process in their process groups), this PostgreSQL cluster (its postmaster
    and every process it forked, with the children it already reaped: backends that ended)
    and the broker. Only these: other clusters and workers on the machine are not counted.
    The publisher is left out: it exits before the run ends."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"workers": 0.0, "postgres": 0.0, "mosquitto": 0.0}
    groups = set(worker_groups)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        f = _proc_stat(pid)
        if f is None:
            continue
        used = (int(f[11]) + int(f[12])) / tick
        if int(f[2]) in groups:
            out["workers"] += used
        elif int(pid) == postmaster:
            out["postgres"] += used + (int(f[13]) + int(f[14])) / tick
        elif int(f[1]) == postmaster:
            out["postgres"] += used
        elif mosquitto is not None and int(pid) == mosquitto:
            out["mosquitto"] += used
    return out


def postmaster_pid(data_dir: Path) -> int:
    """The cluster's postmaster (first line of its postmaster.pid)."""
    return int((data_dir / "postmaster.pid").read_text().split()[0])
