"""A capture replayed faster than recorded is never dated ahead of the wall clock (the bridge
refuses events from the future), from a file or from a stream, with a real Mosquitto and the
real agent CLI; the bridge's ingest, with its real clock, takes every one of them."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cloud_bridge.dev.demo.run import CAPTURE, agent_command, prepare_site
from cloud_bridge.dev.mosquitto import LocalMosquitto
from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.events import dead_letter_rows, event_count, event_rows
from cloud_bridge.storage.fleet import sensor_rows
from cloud_bridge.storage.sends import sandbox_rows, send_rows

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("source", ["file", "stream"])
def test_fast_replay_is_never_dated_ahead_of_the_wall_clock(tmp_path: Path, source: str) -> None:
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    site = prepare_site(tmp_path, broker.port, 0)
    got: list[tuple[float, str, bytes]] = []
    lock = threading.Lock()

    def on_message(c, u, m) -> None:  # type: ignore[no-untyped-def]
        with lock:
            got.append((time.time(), m.topic, m.payload))

    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spy", protocol=mqtt.MQTTv5)
    spy.on_message = on_message
    try:
        spy.connect("127.0.0.1", broker.port)
        spy.subscribe("passby/v1/+/+/events", qos=1)
        spy.loop_start()
        time.sleep(0.3)
        started = time.time()
        if source == "file":
            proc = subprocess.run(agent_command(site.edge_toml), capture_output=True, timeout=120)
        else:  # the same records through a pipe: the agent cannot know the capture's length
            cmd = [*agent_command(site.edge_toml)[:-1], "-"]
            proc = subprocess.run(cmd, input=CAPTURE.read_bytes(), capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        took = time.time() - started
        published = sum(json.loads(proc.stdout.decode().splitlines()[-1])["events"].values())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(got) < published:
            time.sleep(0.05)
    finally:
        spy.loop_stop()
        spy.disconnect()
        broker.stop()
    # the capture lasts 479 s; read in a few seconds, it would run minutes ahead of the clock
    assert took < 120 and published >= 6 and len(got) == published, (took, published, len(got))
    times = []
    for received, _, payload in got:
        msg = json.loads(payload)
        newest = max(msg["ts"], msg["first_seen"], msg["last_seen"])
        assert newest <= received + 0.01, (newest - received, msg["type"])
        assert msg["first_seen"] <= msg["last_seen"]
        times.append(msg["ts"])
    assert min(times) >= started - 1.0  # rebased: the replay looks live
    counters = IngestCounters()
    for received, topic, payload in got:
        assert handle_message(site.db, topic, payload, received, counters) == "event"
    assert counters.dead_letters == 0
    site.db.close()


def test_running_bridge_refuses_future_events_and_flags_the_sensor_clock(tmp_path: Path) -> None:
    """The issue's measurement, with a real Mosquitto and the running bridge: an event dated
    +2 days and one with ts = 1e12 are dead-lettered with the reason and nothing is sent; a
    sensor whose stats run 5 min ahead gets the clock_skew alert; an event within the skew is
    sent, its offer expiring by the bridge's clock."""
    from cloud_bridge.config import BridgeSettings, load_settings
    from cloud_bridge.ingest.fleet import sensor_health
    from cloud_bridge.service import BridgeService
    from edge_agent.roster import subject_id

    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    site = prepare_site(tmp_path, broker.port, 0)
    service = BridgeService(load_settings(BridgeSettings, site.bridge_toml), web=False)
    service.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="door-1", protocol=mqtt.MQTTv5)
    try:
        assert service.ingest.connected.wait(10), "bridge could not connect to Mosquitto"
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        anna = subject_id(site.keys.subject_key, "C-1001")
        now = time.time()

        def event(ts: float) -> bytes:
            return json.dumps(
                {"schema": "passby.event/1", "event_id": uuid.uuid4().hex, "type": "arrive",
                 "subject": anna, "ts": ts, "first_seen": min(ts, now) - 5, "last_seen": ts,
                 "rssi": {"max": -55, "median": -60}, "frames": 7, "dwell_s": 0}
            ).encode()  # fmt: skip

        base = "passby/v1/main-st/door-1"
        for ts in (now + 2 * 86400, 1e12):
            pub.publish(f"{base}/events", event(ts), qos=1).wait_for_publish(5)
        stats = {
            "ts": now + 300, "uptime_s": 5.0, "agent_version": "0.1.0", "frames": 1,
            "frames_per_s": 1.0, "client_frames": 1, "matched": 0, "malformed": 0,
            "outbox_depth": 0, "dropped": 0, "roster_version": 1,
        }  # fmt: skip
        pub.publish(f"{base}/stats", json.dumps(stats).encode(), qos=0).wait_for_publish(5)
        db = site.db
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            len(dead_letter_rows(db)) < 2
            or not [s for s in sensor_rows(db) if s["last_stats"] is not None]
        ):
            time.sleep(0.05)
        reasons = [r["reason"] for r in dead_letter_rows(db)]
        assert len(reasons) == 2, reasons
        assert "ts is 2.0 days ahead of the bridge's clock" in reasons[0]
        assert "years ahead of the bridge's clock" in reasons[1]
        assert event_count(db) == 0
        [row] = [r for r in sensor_rows(db) if r["sensor_id"] == "door-1"]
        health = sensor_health(row, [], None, time.time())
        assert [a.kind for a in health.alerts] == ["clock_skew"], health.alerts
        # within the skew: sent, and the offer expires 10 min after the bridge got it
        pub.publish(f"{base}/events", event(time.time() + 60), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not [
            s for s in send_rows(db) if s["state"] not in ("reserved", "sending")
        ]:
            time.sleep(0.05)
        event_of = {d["id"]: d["event_id"] for d in decision_rows(db)}
        received = {e["event_id"]: e["received"] for e in event_rows(db)}
        [send] = [
            {**s, "received": received[event_of[s["decision_id"]]]}
            for s in send_rows(db)
            if event_of.get(s["decision_id"]) in received
        ]
        assert send["state"] in ("accepted", "delivered"), send
        assert send["expires_at"] == pytest.approx(send["received"] + 600, abs=1e-3)
        assert len(sandbox_rows(db)) == 1
    finally:
        pub.loop_stop()
        pub.disconnect()
        service.stop()
        site.db.close()
        broker.stop()
