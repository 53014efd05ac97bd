"""Several bridge workers on PostgreSQL behind Mosquitto's shared subscription.

Real processes (``cloud-bridge run --no-console --worker-id N``), a real PostgreSQL cluster
and broker. Every event is decided exactly once, caps hold across workers, the events are
spread over the workers, and a worker SIGKILLed in the middle of its work loses nothing and
duplicates nothing (restarted under its id, it gets back what the broker held for it; what it
had stored but not decided, the other worker takes over).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from scale_helpers import Fleet, Publisher, audit, make_events, seed, wait_decided

from cloud_bridge.dev.mosquitto import LocalMosquitto
from cloud_bridge.storage.events import event_count
from cloud_bridge.storage.store import BridgeStore
from edge_agent.protocol import StatsMessage

CUSTOMERS = 400


@pytest.fixture()
def world(postgres_cluster, tmp_path: Path) -> Iterator[tuple[BridgeStore, LocalMosquitto, Fleet]]:  # type: ignore[no-untyped-def]
    dsn = postgres_cluster.create_database(f"scale{int(time.time() * 1000) % 10**9}")
    store = BridgeStore(dsn, data_key=bytes.fromhex("7a" * 32))
    seed(store, CUSTOMERS, time.time())
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    fleet = Fleet(tmp_path, dsn, broker.port, orphan_after_s=2.0)
    try:
        yield store, broker, fleet
    finally:
        fleet.stop()
        broker.stop()
        store.close()


def worker_summary(fleet: Fleet, worker_id: str) -> dict[str, int]:
    """The counts a worker logs when it stops (SIGTERM)."""
    m = re.findall(
        r"worker (\S+) stopping: (\d+) events stored, (\d+) decided, (\d+) taken over",
        fleet.log(worker_id),
    )
    assert m, fleet.log(worker_id)[-1500:]
    wid, stored, decided, orphans = m[-1]
    assert wid == worker_id
    return {"stored": int(stored), "decided": int(decided), "orphans": int(orphans)}


def test_two_workers_share_events_and_keep_caps(world) -> None:  # type: ignore[no-untyped-def]
    store, broker, fleet = world
    fleet.start("a")
    fleet.start("b")
    lines = make_events(3000, CUSTOMERS, random.Random(1))
    unique = len(set(lines))
    pub = Publisher(fleet.workdir, broker.port, lines)
    pub.go()
    assert pub.result()["acked"] == len(lines)
    assert wait_decided(store, unique, 120), audit(store)
    found = audit(store)
    assert found["events"] == unique  # every duplicate publish dropped
    assert found["undecided"] == 0 and found["errors"] == 0
    assert found["duplicates"] == 0 and found["cap_violations"] == 0
    # One welcome per customer seen arriving, at most two regulars per customer seen visiting.
    arrivals = store.query("SELECT count(DISTINCT subject) AS n FROM events WHERE type='arrive'")[
        0
    ]["n"]
    welcome = store.query("SELECT count(*) AS n FROM sends WHERE campaign_id='welcome'")[0]["n"]
    assert welcome == arrivals
    # Stats go to one worker of the group too: one history row per message, not one per worker.
    stats = StatsMessage(
        ts=time.time(), uptime_s=60, agent_version="1.0", frames=10, frames_per_s=1.0,
        client_frames=5, matched=1, malformed=0, outbox_depth=0, dropped=0, roster_version=1,
    )  # fmt: skip
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "stats-probe", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for i in range(10):
        client.publish(f"passby/v1/s0001/door-{i % 4 + 1}/stats", stats.model_dump_json())
    deadline = time.monotonic() + 20
    while store.query("SELECT count(*) AS n FROM sensor_stats")[0]["n"] < 10:
        assert time.monotonic() < deadline, "stats never stored"
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    time.sleep(1.0)  # a second copy would have landed by now
    assert store.query("SELECT count(*) AS n FROM sensor_stats")[0]["n"] == 10
    # Both workers did a real share: the shared subscription spreads the events.
    fleet.stop()
    stored = {w: worker_summary(fleet, w) for w in ("a", "b")}
    assert sum(s["stored"] for s in stored.values()) == unique
    for w, s in stored.items():
        assert s["stored"] > unique * 0.25, (w, stored)
        assert s["decided"] > unique * 0.25, (w, stored)


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(world) -> None:  # type: ignore[no-untyped-def]
    store, broker, fleet = world
    fleet.start("a")
    fleet.start("b")
    lines = make_events(4000, CUSTOMERS, random.Random(2))
    unique = len(set(lines))
    pub = Publisher(fleet.workdir, broker.port, lines, rate=400.0)
    pub.go()
    # Kill worker a while events are flowing and being decided.
    deadline = time.monotonic() + 30
    while store.query("SELECT count(*) AS n FROM decisions")[0]["n"] < 300:
        assert time.monotonic() < deadline, "no decisions within 30 s"
        time.sleep(0.02)
    fleet.kill("a")
    killed_at = event_count(store)
    time.sleep(1.0)
    fleet.start("a")  # as systemd would: same worker id, same MQTT session
    assert pub.result()["acked"] == len(lines)
    assert wait_decided(store, unique, 120), audit(store)
    found = audit(store)
    assert killed_at < unique  # the kill really happened mid-stream
    assert found["events"] == unique
    assert found["undecided"] == 0 and found["errors"] == 0
    assert found["duplicates"] == 0 and found["cap_violations"] == 0
    sandbox = store.query("SELECT count(*) AS n, count(DISTINCT sid) AS d FROM sandbox_messages")[0]
    assert sandbox["n"] == sandbox["d"]
    # Every send reserved is delivered once, including those the killed worker had reserved.
    deadline = time.monotonic() + 60
    while store.query("SELECT count(*) AS n FROM sends WHERE state='reserved'")[0]["n"]:
        assert time.monotonic() < deadline, "reserved sends never delivered"
        time.sleep(0.2)
