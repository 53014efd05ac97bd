"""Faults with a real Mosquitto and the real bridge ingest: nothing acknowledged is ever lost.

The edge side is the real ``Outbox`` + ``Uplink`` (in this process, or in
``fault_agent.py`` processes that we ``kill -9``); the bridge side is the real ``Ingest`` into
a ``BridgeStore``, which drops duplicates by ``event_id``. Every test is bounded in time.

Broker outage length: ``PASSBY_FAULT_OUTAGE_S`` (default 30 s, as the issue asks; a shorter
value such as 10 passes the same way for quick local runs). The length does not change the code path
under test: while the broker is away every event goes to the outbox and nowhere else, and on
reconnect the whole backlog is sent again from the outbox. The only thing that scales with the
outage is the backlog (200/s x 30 s = 6 000 rows, far below the 100 000-row outbox limit, which
test 3 exercises on its own).

Broker restarts and the bridge: Mosquitto 2.0.11 restores a persistent session's plain
subscriptions after a restart but NOT its shared ones (``$share/...``, which the ingest uses).
Until the bridge has reconnected and subscribed again, the broker acknowledges a sensor's events
with PUBACK 0x10 "No matching subscribers" and drops them; the uplink therefore keeps such
events in the outbox and sends them again after a backoff
(``test_events_published_before_the_bridge_resubscribes_are_kept``). The other tests hold the agent back (``SIGSTOP``, or
start it later) until the bridge is subscribed again (``Bridge.ready``), so they test the edge's
own guarantees deterministically instead of racing the bridge's reconnect.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.config import MqttSettings
from cloud_bridge.ingest.consumer import Ingest
from cloud_bridge.storage.events import dead_letter_rows, event_rows
from cloud_bridge.storage.store import BridgeStore
from edge_agent.protocol import topic

from .brokers import Broker
from .fault_agent import STORE, event

pytestmark = pytest.mark.integration

AGENT = Path(__file__).with_name("fault_agent.py")
OUTAGE_S = float(os.environ.get("PASSBY_FAULT_OUTAGE_S", "30"))
RATE = 200.0


class Bridge:
    """The bridge's real ingest (shared subscription, manual ack, dedupe) into a store."""

    def __init__(self, broker: Broker, path: Path) -> None:
        self.broker = broker
        self.store = BridgeStore(path, data_key=secrets.token_bytes(32))
        settings = MqttSettings(host=broker.host, port=broker.port, reconnect_max_s=1.0)
        self.ingest = Ingest(settings, self.store, lambda _event_id: None, client_id="fault-bridge")
        self.ingest.start()
        assert self.ingest.connected.wait(10), "bridge could not connect"

    def ids(self, prefix: str) -> set[str]:
        return {r["event_id"] for r in event_rows(self.store) if r["event_id"].startswith(prefix)}

    def wait_for(self, prefix: str, want: set[str], timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        got = self.ids(prefix)
        while not want <= got and time.monotonic() < deadline:
            time.sleep(0.2)
            got = self.ids(prefix)
        return got

    def ready(self, timeout: float = 15.0) -> None:
        """Block until the bridge is connected AND its shared subscription delivers again."""
        import paho.mqtt.client as mqtt

        probe_prefix = _prefix()
        assert self.ingest.connected.wait(timeout), "bridge did not reconnect"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        try:
            deadline = time.monotonic() + timeout
            for i in range(10_000):
                msg = event(probe_prefix, i, time.time())
                client.publish(topic(STORE, "probe", "events"), msg.to_json(), qos=1)
                time.sleep(0.1)
                if self.ids(probe_prefix) or time.monotonic() > deadline:
                    break
        finally:
            client.disconnect()
            client.loop_stop()
        assert self.ids(probe_prefix), "the bridge's subscription did not come back"

    def close(self) -> None:
        self.ingest.stop()
        self.store.close()


@pytest.fixture()
def bridge(mosquitto: Broker, tmp_path: Path) -> Iterator[Bridge]:
    b = Bridge(mosquitto, tmp_path / "bridge.db")
    yield b
    b.close()


def _ids(prefix: str, numbers: Any) -> set[str]:
    return {f"{prefix}{i:024x}" for i in numbers}


def _prefix() -> str:
    return secrets.token_hex(4)


class AgentProcess:
    """fault_agent.py in its own process; its stdout lines are collected as they come."""

    def __init__(self, broker: Broker, db: Path, prefix: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(AGENT), "--port", str(broker.port), "--db", str(db),
             "--prefix", prefix, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    @property
    def added(self) -> list[int]:
        return [d["added"] for d in list(self.lines) if "added" in d]

    def wait_added(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.added) < n and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.02)
        assert len(self.added) >= n, f"agent added {len(self.added)} < {n}: {self.finish(0)}"

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for the process; returns its final summary line (or {} if it had none)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
        done = [d for d in self.lines if d.get("done")]
        return done[-1] if done else {"rc": self.proc.returncode, "stderr": self.stderr[-2000:]}


def _outbox_depth(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


# -- (1) the broker goes away for OUTAGE_S during a 200 events/s stream -----------------------


def test_broker_outage_during_stream_loses_nothing(
    mosquitto: Broker, bridge: Bridge, tmp_path: Path
) -> None:
    prefix, before_s, after_s = _prefix(), 3.0, 3.0
    total = int(RATE * (before_s + OUTAGE_S + after_s))
    db = tmp_path / "outbox.db"
    agent = AgentProcess(mosquitto, db, prefix, "--count", str(total), "--rate", str(RATE))
    agent.wait_added(int(RATE * before_s), timeout=before_s + 5)
    mosquitto.stop()  # SIGTERM: Mosquitto saves its persistence file
    time.sleep(OUTAGE_S)
    agent.pause()  # see the module doc: the bridge must be subscribed again first
    backlog = _outbox_depth(db)
    mosquitto.start()  # same port, same persistence
    bridge.ready()
    agent.resume()
    summary = agent.finish(timeout=after_s + 40)
    assert summary.get("drained") and summary["depth"] == 0, summary
    assert summary["dropped"] == 0
    want = _ids(prefix, range(total))
    got = bridge.wait_for(prefix, want, timeout=30)
    missing = want - got
    assert not missing, f"{len(missing)} of {total} events never reached the bridge"
    assert got == want  # exactly once after dedupe: one row per event_id, nothing else
    assert backlog >= RATE * OUTAGE_S * 0.9, f"the outage did not back up the outbox ({backlog})"
    assert not dead_letter_rows(bridge.store)
    print(
        f"outage {OUTAGE_S:g} s: {total} events, backlog {backlog}, "
        f"{bridge.ingest.counters.duplicates} duplicates dropped by the bridge"
    )


def test_events_published_before_the_bridge_resubscribes_are_kept(
    mosquitto: Broker, bridge: Bridge, tmp_path: Path
) -> None:
    """After a broker restart, events sent before the bridge subscribes again must not be lost."""
    prefix, db = _prefix(), tmp_path / "outbox.db"
    bridge.ingest.stop()  # the bridge is away (deploying, say) while the broker restarts
    mosquitto.restart()
    agent = AgentProcess(mosquitto, db, prefix, "--count", "50", "--drain", "20")
    agent.wait_added(50, timeout=10)
    time.sleep(1.0)  # the broker has answered every publish by now
    left_in_outbox = _outbox_depth(db)
    bridge.ingest.start()
    bridge.ready()  # control: the bridge is subscribed and receiving again
    summary = agent.finish(timeout=30)
    want = _ids(prefix, range(50))
    got = bridge.wait_for(prefix, want, timeout=20)
    assert left_in_outbox == 50, "events answered 'no matching subscribers' must stay in the outbox"
    assert want <= got, f"{len(want - got)} of 50 events lost"
    assert summary.get("drained"), summary


# -- (2) kill -9 of the agent with events in its outbox ----------------------------------------


def test_kill_9_with_events_in_outbox_then_restart_delivers_all(
    mosquitto: Broker, bridge: Bridge, tmp_path: Path
) -> None:
    db, prefix = tmp_path / "outbox.db", _prefix()
    # a) killed mid-stream while the broker is up (some events in flight)
    first = AgentProcess(mosquitto, db, prefix, "--count", "2000", "--rate", str(RATE))
    first.wait_added(300, timeout=10)
    first.kill9()
    durable = set(first.added)
    # b) restarted, killed again while the broker is down: a real backlog in the outbox
    second = AgentProcess(
        mosquitto, db, prefix, "--start", "10000", "--count", "2000", "--rate", str(RATE)
    )
    second.wait_added(100, timeout=10)
    mosquitto.stop()
    second.wait_added(len(second.added) + 200, timeout=10)
    second.kill9()
    durable |= set(second.added)
    backlog = _outbox_depth(db)
    assert backlog >= 150, f"expected a backlog at kill time, outbox holds {backlog}"
    # c) broker back, agent restarted: it drains what the killed ones left
    mosquitto.start()
    bridge.ready()
    third = AgentProcess(mosquitto, db, prefix, "--drain", "30")
    summary = third.finish(timeout=40)
    assert summary.get("drained") and summary["depth"] == 0, summary
    want = _ids(prefix, durable)
    got = bridge.wait_for(prefix, want, timeout=20)
    assert not want - got, f"{len(want - got)} durable events lost (backlog was {backlog})"
    # anything else that arrived was generated by an agent too (added, killed before printing)
    generated = _ids(prefix, range(0, 2000)) | _ids(prefix, range(10000, 12000))
    assert got <= generated


# -- (3) outbox limit reached while the broker is down -----------------------------------------


def test_outbox_limit_while_broker_down_drops_oldest_and_keeps_running(
    mosquitto: Broker, bridge: Bridge, tmp_path: Path
) -> None:
    db, prefix, limit, count = tmp_path / "outbox.db", _prefix(), 100, 300
    mosquitto.stop()
    agent = AgentProcess(
        mosquitto, db, prefix, "--count", str(count), "--limit", str(limit), "--drain", "30"
    )
    agent.wait_added(count, timeout=15)
    time.sleep(0.3)
    assert agent.proc.poll() is None, "the agent stopped when its outbox was full"
    assert _outbox_depth(db) == limit
    agent.pause()
    mosquitto.start()
    bridge.ready()
    agent.resume()
    summary = agent.finish(timeout=40)
    assert summary == {
        "done": True,
        "depth": 0,
        "dropped": count - limit,
        "recovered": 0,
        "drained": True,
    }, summary
    newest = _ids(prefix, range(count - limit, count))
    got = bridge.wait_for(prefix, newest, timeout=20)
    assert got == newest  # the newest `limit` delivered; the oldest dropped, and counted


# -- (4) a corrupt or locked outbox at start ---------------------------------------------------


def test_corrupt_outbox_at_start_is_moved_aside_and_counted(
    mosquitto: Broker, bridge: Bridge, tmp_path: Path
) -> None:
    db, prefix = tmp_path / "outbox.db", _prefix()
    db.write_bytes(b"\x00\xffnot a database: the SD card lied" * 500)
    agent = AgentProcess(mosquitto, db, prefix, "--count", "50", "--drain", "20")
    summary = agent.finish(timeout=40)
    assert summary.get("drained") and summary["recovered"] == 1, summary
    assert "was corrupt" in agent.stderr and "moved it aside" in agent.stderr
    aside = [
        p for p in tmp_path.glob("outbox.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"\x00\xffnot a database")
    want = _ids(prefix, range(50))
    assert bridge.wait_for(prefix, want, timeout=20) == want


def test_locked_outbox_at_start_is_moved_aside_and_its_events_still_delivered(
    mosquitto: Broker, bridge: Bridge, tmp_path: Path
) -> None:
    db, prefix = tmp_path / "outbox.db", _prefix()
    mosquitto.stop()  # the first agent leaves 40 events behind
    first = AgentProcess(mosquitto, db, prefix, "--count", "40", "--drain", "0.1")
    assert first.finish(timeout=20)["depth"] == 40
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # some other process keeps the file write-locked
    try:
        mosquitto.start()
        bridge.ready()
        agent = AgentProcess(
            mosquitto, db, prefix, "--start", "40", "--count", "20", "--busy-timeout", "0.5"
        )
        summary = agent.finish(timeout=40)
    finally:
        holder.close()
    assert summary.get("drained") and summary["recovered"] == 1, summary
    assert "was locked" in agent.stderr and "40 pending event(s)" in agent.stderr
    assert any(tmp_path.glob("outbox.db.locked-*"))
    want = _ids(prefix, range(60))  # the 40 left behind are read back and delivered too
    assert bridge.wait_for(prefix, want, timeout=20) == want
