"""A stand-in edge agent for fault tests: the real Outbox + Uplink, synthetic presence events.

Run as a process (so a test can ``kill -9`` it)::

    python tests/integration/fault_agent.py --port P --db outbox.db --prefix 1a2b3c4d \\
        --count 600 --rate 200 [--start 0] [--limit 100000] [--busy-timeout 5] [--drain 30]

Event ``i`` gets ``event_id = prefix + f"{i:024x}"``. After each event is committed to the
outbox the process prints ``{"added": i}`` (so a test knows what was durable when it killed
us), and at the end ``{"done": true, "depth": ..., "dropped": ..., "recovered": ...,
"drained": ...}``. ``--count 0`` only drains what the outbox holds. It exits 0 when the outbox
drained within ``--drain`` seconds, else 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from edge_agent.adapters.outbox import Outbox
from edge_agent.adapters.uplink import Uplink
from edge_agent.config import MqttSettings
from edge_agent.protocol import PresenceMessage, Rssi, topic

STORE, SENSOR = "main-st", "door-1"


def event(prefix: str, i: int, now: float) -> PresenceMessage:
    return PresenceMessage(
        event_id=f"{prefix}{i:024x}",
        type="arrive",
        subject=f"{i % 1000:016x}",
        ts=now,
        first_seen=now - 5,
        last_seen=now,
        rssi=Rssi(max=-55, median=-60),
        frames=12,
        dwell_s=0.0,
    )


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--prefix", required=True, help="8 hex digits")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--limit", type=int, default=100_000)
    ap.add_argument("--busy-timeout", type=float, default=5.0)
    ap.add_argument("--drain", type=float, default=30.0)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )

    outbox = Outbox(args.db, limit=args.limit, busy_timeout_s=args.busy_timeout)
    say(opened=True, depth=outbox.depth(), recovered=outbox.recovered)
    settings = MqttSettings(
        host=args.host, port=args.port, reconnect_min_s=0.5, reconnect_max_s=1.0
    )
    uplink = Uplink(settings, STORE, SENSOR, outbox)
    uplink.start()
    events_topic = topic(STORE, SENSOR, "events")
    t0 = time.monotonic()
    for n, i in enumerate(range(args.start, args.start + args.count)):
        due = t0 + n / args.rate
        if (delay := due - time.monotonic()) > 0:
            time.sleep(delay)
        msg = event(args.prefix, i, time.time())
        outbox.add(events_topic, msg.to_json(), msg.event_id)
        uplink.kick()
        say(added=i)
    drained = uplink.wait_drained(args.drain)
    say(
        done=True,
        depth=outbox.depth(),
        dropped=outbox.dropped,
        recovered=outbox.recovered,
        drained=drained,
    )
    uplink.stop()
    outbox.close()
    return 0 if drained else 3


if __name__ == "__main__":
    raise SystemExit(main())
