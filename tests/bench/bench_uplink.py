"""Edge-to-bridge latency and outbox throughput, through a real Mosquitto on loopback.

Stream: ``EVENTS`` presence events at ``RATE``/s. Each is created (its ``ts`` stands for the
frame that made it: the per-frame pipeline costs microseconds, see bench_edge), written to the
``Outbox`` (fsynced) and published by the ``Uplink`` (QoS 1) to Mosquitto (configured with
``set_tcp_nodelay`` as deploy/mosquitto ships it). The bridge runs in its own process, as on
its own machine, with two receivers:

* the bridge's real ``Ingest`` (shared subscription, manual ack) validating and storing each
  event in a ``BridgeStore``, which drops duplicates by ``event_id``: *stored* latency =
  ``received - ts`` from its ``events`` table (``received`` is taken when the message is handed
  to the ingest, so it includes waiting behind earlier messages' database writes);
* a plain MQTT subscriber in the same process: *delivered* latency = arrival - ``ts``, i.e.
  outbox + uplink + broker, what this benchmark is about.

Then a burst (``BURST`` events added as fast as possible), and the outbox alone: adds/s with
``synchronous=FULL`` (one fsync per event) and acks/s.

Headline: ``p50_ms``/``p99_ms`` (delivered), ``ingest_p50_ms``/``ingest_p99_ms`` (stored),
``events_per_s``, ``lost`` and ``duplicates_after_dedupe`` (counted in the bridge's store).
Goal: p99 < 50 ms on loopback, 0 lost, with end-to-end receipts on (the outbox is drained only
by the bridge's receipts). The receipt traffic they add is reported per event
(``receipt_msgs_per_event``, ``receipt_bytes_per_event``, counted where the sensor receives
them) beside the events' own bytes (``event_bytes_per_event``), and ``resent`` counts events
sent again for want of a receipt.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EVENTS = int(os.environ.get("PASSBY_BENCH_UPLINK_EVENTS", 10_000))
RATE = float(os.environ.get("PASSBY_BENCH_UPLINK_RATE", 200.0))
BURST = int(os.environ.get("PASSBY_BENCH_UPLINK_BURST", 5_000))
OUTBOX_ADDS = int(os.environ.get("PASSBY_BENCH_OUTBOX_ADDS", 2_000))
STORE, SENSOR = "bench", "door-1"


def _event(prefix: str, i: int, now: float) -> tuple[str, str]:
    from edge_agent.protocol import PresenceMessage, Rssi

    msg = PresenceMessage(
        event_id=f"{prefix}{i:024x}",
        type="arrive",
        subject=f"{i % 4096:016x}",
        ts=now,
        first_seen=now - 5,
        last_seen=now,
        rssi=Rssi(max=-55, median=-61),
        frames=14,
        dwell_s=0.0,
    )
    return msg.event_id, msg.to_json()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def bridge_main(argv: list[str]) -> None:
    """``bench_uplink.py SETTINGS_JSON DB DATA_KEY_HEX ARRIVALS_JSON``: the bridge side in its
    own process until SIGTERM. Prints "ready" once both receivers are subscribed; at exit writes
    the plain subscriber's {event_id: delivered ms} and prints the ingest's duplicate count."""
    import logging
    import signal
    import threading

    import paho.mqtt.client as mqtt

    from cloud_bridge.ingest.consumer import Ingest
    from cloud_bridge.storage.store import BridgeStore
    from edge_agent.config import MqttSettings

    logging.disable(logging.WARNING)
    settings = MqttSettings(**json.loads(argv[0]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    store = BridgeStore(Path(argv[1]), data_key=bytes.fromhex(argv[2]))
    ingest = Ingest(settings, store, lambda _event_id: None, "bench-bridge")
    delivered: dict[str, float] = {}

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        event = json.loads(msg.payload)
        delivered.setdefault(event["event_id"], (now - event["ts"]) * 1000)

    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect(settings.host, settings.port)
    sub.subscribe(f"passby/v1/{STORE}/{SENSOR}/events", qos=1)
    sub.loop_start()
    ingest.start()
    if ingest.connected.wait(10) and subscribed.wait(10):
        time.sleep(0.5)  # let the ingest's SUBACK land too
        print("ready", flush=True)
    stop.wait(1800)
    ingest.stop()
    sub.disconnect()
    sub.loop_stop()
    store.close()
    Path(argv[3]).write_text(json.dumps(delivered))
    print(json.dumps({"duplicates": ingest.counters.duplicates}), flush=True)


class Rig:
    """Mosquitto + the bridge process + the edge's outbox and uplink, in a temporary dir."""

    def __init__(self, tmp: Path) -> None:
        from cloud_bridge.dev.mosquitto import LocalMosquitto
        from cloud_bridge.storage.store import BridgeStore
        from edge_agent.adapters.outbox import Outbox
        from edge_agent.adapters.uplink import Uplink
        from edge_agent.config import MqttSettings
        from edge_agent.protocol import topic

        self.tmp = tmp
        self.broker = LocalMosquitto(tmp / "mosquitto", extra_config="set_tcp_nodelay true\n")
        self.broker.start()
        settings = MqttSettings(host=self.broker.host, port=self.broker.port)
        data_key = secrets.token_bytes(32)
        self.arrivals = tmp / "delivered.json"
        self.bridge = subprocess.Popen(
            [sys.executable, __file__, settings.model_dump_json(), str(tmp / "bridge.db"),
             data_key.hex(), str(self.arrivals)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.bridge.stdout is not None
        if self.bridge.stdout.readline().strip() != "ready":
            raise RuntimeError("the bridge process did not connect to Mosquitto")
        self.store = BridgeStore(tmp / "bridge.db", data_key=data_key)
        self.outbox = Outbox(tmp / "outbox.db")
        self.uplink = Uplink(settings, STORE, SENSOR, self.outbox)
        self.uplink.start()
        if not self.uplink.wait_connected(10):
            raise RuntimeError("uplink did not connect to Mosquitto")
        self.topic = topic(STORE, SENSOR, "events")
        self.delivered: dict[str, float] = {}
        self.duplicates_dropped = 0
        self.event_bytes = 0
        self.events_added = 0

    def produce(self, prefix: str, n: int, rate: float | None) -> float:
        """Add n events (paced at ``rate``/s, or as fast as possible); returns seconds taken."""
        t0 = time.monotonic()
        for i in range(n):
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            event_id, payload = _event(prefix, i, time.time())
            self.event_bytes += len(payload)
            self.events_added += 1
            self.outbox.add(self.topic, payload, event_id)
            self.uplink.kick()
        return time.monotonic() - t0

    def collect(self, prefix: str, n: int, timeout: float) -> list[dict[str, Any]]:
        """The bridge's stored rows of a run, once all n are in (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self._rows(prefix)
            if len(rows) >= n and self.outbox.depth() == 0:
                break
            time.sleep(0.2)
        return self._rows(prefix)

    def _rows(self, prefix: str) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT event_id, ts, received FROM events WHERE event_id LIKE ?", [prefix + "%"]
        )

    def close(self) -> None:
        self.uplink.stop()
        self.bridge.terminate()
        out, _ = self.bridge.communicate(timeout=60)
        self.duplicates_dropped = json.loads(out.strip().splitlines()[-1])["duplicates"]
        self.delivered = json.loads(self.arrivals.read_text())
        self.outbox.close()
        self.store.close()
        self.broker.stop()


def _figures(rows: list[dict[str, Any]], n: int, delivered: dict[str, float]) -> dict[str, Any]:
    ids = [r["event_id"] for r in rows]
    stored = sorted((r["received"] - r["ts"]) * 1000 for r in rows)
    arrived = sorted(delivered[i] for i in set(ids) if i in delivered)
    span = (max(r["received"] for r in rows) - min(r["ts"] for r in rows)) if rows else 0.0
    out: dict[str, Any] = {
        "events": n,
        "lost": n - len(set(ids)),
        "duplicates_after_dedupe": len(ids) - len(set(ids)),
        "events_per_s": len(set(ids)) / span if span else 0.0,
    }
    for name, values in (("delivered", arrived), ("stored", stored)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}_ms"] = _percentile(values, q)
        out[f"{name}_max_ms"] = values[-1] if values else float("nan")
    return out


def outbox_throughput(tmp: Path, n: int) -> dict[str, float]:
    from edge_agent.adapters.outbox import Outbox

    ob = Outbox(tmp / "throughput.db")
    payload = _event("0" * 8, 0, time.time())[1]
    t0 = time.perf_counter()
    ids = [ob.add("bench/events", payload, f"{i:032x}") for i in range(n)]
    adds = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for item_id in ids:
        ob.ack(item_id)
    acks = n / (time.perf_counter() - t0)
    ob.close()
    return {"outbox_adds_per_s": adds, "outbox_acks_per_s": acks}


def run() -> dict[str, Any]:
    import logging

    from rich.console import Console
    from rich.table import Table

    logging.getLogger("paho.mqtt").setLevel(logging.CRITICAL)  # "not connected" noise at stop
    console = Console(width=max(Console().width, 120))
    with tempfile.TemporaryDirectory(prefix="passby-bench-uplink-") as tmpdir:
        tmp = Path(tmpdir)
        rig = Rig(tmp)
        try:
            stream_prefix, burst_prefix = secrets.token_hex(4), secrets.token_hex(4)
            rig.produce(stream_prefix, EVENTS, RATE)
            stream_rows = rig.collect(stream_prefix, EVENTS, 120)
            t0 = time.monotonic()
            rig.produce(burst_prefix, BURST, None)
            burst_rows = rig.collect(burst_prefix, BURST, 180)
            burst_s = time.monotonic() - t0
        finally:
            rig.close()
        stream = _figures(stream_rows, EVENTS, rig.delivered)
        burst = _figures(burst_rows, BURST, rig.delivered)
        outbox = outbox_throughput(tmp, OUTBOX_ADDS)

    table = Table(title="uplink: outbox -> Mosquitto (loopback) -> bridge (own process)")
    table.add_column("run")
    table.add_column("latency to")
    for column in ("events", "lost", "dup", "p50 ms", "p90 ms", "p99 ms", "max ms", "events/s"):
        table.add_column(column, justify="right")
    up = rig.uplink
    per_event = max(1, rig.events_added)
    receipts = {
        "receipts_on": up.receipts_on,
        "receipt_msgs_per_event": round(up.receipts_received / per_event, 4),
        "receipt_bytes_per_event": round(up.receipt_bytes / per_event, 1),
        "event_bytes_per_event": round(rig.event_bytes / per_event, 1),
        "resent": up.resent,
    }
    for name, f in ((f"stream {RATE:g}/s", stream), ("burst (unpaced)", burst)):
        for where, label in (("delivered", "bridge MQTT client"), ("stored", "stored by ingest")):
            first = where == "delivered"
            table.add_row(
                name if first else "",
                label,
                f"{f['events']:,}" if first else "",
                str(f["lost"]) if first else "",
                str(f["duplicates_after_dedupe"]) if first else "",
                f"{f[where + '_p50_ms']:.1f}",
                f"{f[where + '_p90_ms']:.1f}",
                f"{f[where + '_p99_ms']:.1f}",
                f"{f[where + '_max_ms']:.1f}",
                f"{f['events_per_s']:,.0f}" if first else "",
            )
    table.caption = (
        f"outbox alone: {outbox['outbox_adds_per_s']:,.0f} adds/s (synchronous=FULL, one fsync "
        f"each), {outbox['outbox_acks_per_s']:,.0f} acks/s (NORMAL); burst {BURST:,} events "
        f"stored in {burst_s:.1f} s; duplicate deliveries dropped by the bridge: "
        f"{rig.duplicates_dropped}; receipts "
        f"{'on' if receipts['receipts_on'] else 'OFF'}: {up.receipts_received:,} receipt messages "
        f"for {rig.events_added:,} events = {receipts['receipt_msgs_per_event']:.3f} messages and "
        f"{receipts['receipt_bytes_per_event']:.1f} bytes per event (the event itself: "
        f"{receipts['event_bytes_per_event']:.0f} bytes), {up.resent} resent for want of one"
    )
    console.print(table)
    lost = stream["lost"] + burst["lost"]
    goal = "met" if stream["delivered_p99_ms"] < 50 and lost == 0 else "MISSED"
    console.print(f"goal p99 < 50 ms (delivered) and 0 lost: {goal}")
    return {
        "events": EVENTS,
        "rate_per_s": RATE,
        "p50_ms": round(stream["delivered_p50_ms"], 2),
        "p90_ms": round(stream["delivered_p90_ms"], 2),
        "p99_ms": round(stream["delivered_p99_ms"], 2),
        "max_ms": round(stream["delivered_max_ms"], 2),
        "ingest_p50_ms": round(stream["stored_p50_ms"], 2),
        "ingest_p99_ms": round(stream["stored_p99_ms"], 2),
        "events_per_s": round(stream["events_per_s"], 1),
        "lost": lost,
        "duplicates_after_dedupe": stream["duplicates_after_dedupe"]
        + burst["duplicates_after_dedupe"],
        "duplicates_dropped_by_bridge": rig.duplicates_dropped,
        "burst_events": BURST,
        "burst_stored_per_s": round(burst["events_per_s"], 1),
        "burst_delivered_p99_ms": round(burst["delivered_p99_ms"], 2),
        "outbox_adds_per_s": round(outbox["outbox_adds_per_s"]),
        "outbox_acks_per_s": round(outbox["outbox_acks_per_s"]),
        **receipts,
    }


if __name__ == "__main__":
    bridge_main(sys.argv[1:])
