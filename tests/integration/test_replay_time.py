"""A capture replayed faster than recorded is never dated ahead of the wall clock (the bridge
refuses events from the future), from a file or from a stream, with a real Mosquitto and the
real agent CLI; the bridge's ingest, with its real clock, takes every one of them."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cloud_bridge.demo.run import CAPTURE, agent_command, prepare_site
from cloud_bridge.ingest import IngestCounters, handle_message
from cloud_bridge.mosquitto import LocalMosquitto

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
