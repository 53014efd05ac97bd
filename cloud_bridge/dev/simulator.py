"""Fleet simulator: thousands of simulated sensors, each a real MQTT v5 client, for load tests.

Every simulated sensor connects with its own client id (``passby-sim-{store}-{sensor}``) and
its own broker account, exactly as a paired box does: a retained ``online`` status with an
``offline`` last will, ``PresenceMessage`` events at QoS 1 on ``.../events``, ``StatsMessage``
at QoS 0 every ``stats_interval_s``, and it answers ``cmd/ping`` (other commands are refused:
a simulated box has no roster or presence settings). Payloads are the models of
``edge_agent.protocol``; subjects are opaque subject ids (given, or random ones the bridge does
not know), never a MAC or phone number.

Many clients, few threads: each worker process drives its share of the paho clients from one
``selectors`` loop (paho's external-loop API: ``on_socket_open/close``,
``on_socket_register_write/unregister_write``, ``loop_read``/``loop_write``/``loop_misc``);
``processes`` spreads the fleet over several such loops. Connections open at ``connect_rate``
per second so thousands of logins do not stampede the broker. A run always ends by itself:
``duration_s`` of publishing, at most ``drain_s`` more waiting for PUBACKs, then an ``offline``
status and a clean disconnect for every sensor.

Accounting: an event counts as acknowledged only on a PUBACK with a success code other than
0x10 "no matching subscribers" (the broker dropped it: no bridge was subscribed). The summary
has every counter, publish->PUBACK latency percentiles and the acknowledged event ids (or the
SHA-256 of their sorted list), so a caller can check that every acknowledged event reached the
bridge's store (``missing_events``/``wait_stored``).

Credentials come from the bridge's own provisioning (``provision_fleet``: ``add_sensor`` then a
pairing code redeemed at once, Mosquitto password/ACL files rewritten once at the end) and are
kept in a JSON file with mode 0600 (``write_credentials``/``load_credentials``).

As a library (a benchmark)::

    creds, _ = provision_fleet(store, settings, 2000)          # or load_credentials(path)
    summary = run_simulation(SimulationPlan(creds.sensors, creds.broker, duration_s=600))
    assert wait_stored(store, summary.acked_event_ids) == []   # nothing acknowledged was lost

Limits: paho's ``connect()`` blocks for the TCP (and TLS) handshake, so one loop opens about
1/RTT connections a second; towards a distant broker use more ``processes``. With
``processes=1`` the loop runs in the caller's process, whose open-file limit is raised: another
paho client there that (re)connects meanwhile may get a descriptor above 1023, which paho's own
``select()`` loop refuses, so a benchmark with its bridge in the same process should connect it
first or use ``processes >= 2``.

Errors: ``SimulatorError`` (a plan or file that cannot work; the message says what to change).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import math
import multiprocessing
import os
import queue
import random
import re
import secrets
import selectors
import signal
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_bridge import __version__
from cloud_bridge.dev.mosquitto import raise_nofile
from edge_agent.protocol import (
    ID_PATTERN,
    SUBJECT_PATTERN,
    PresenceMessage,
    ReplyMessage,
    Rssi,
    StatsMessage,
    StatusMessage,
    topic,
)

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeSettings
    from cloud_bridge.sensors.provisioning import BrokerUpdate
    from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "AGENT_VERSION",
    "BrokerTarget",
    "CREDENTIALS_SCHEMA",
    "FleetCredentials",
    "SimSensor",
    "SimulationPlan",
    "SimulationSummary",
    "SimulatorError",
    "load_credentials",
    "load_subjects",
    "missing_events",
    "provision_fleet",
    "revoke_fleet",
    "run_simulation",
    "subjects_from_store",
    "wait_stored",
    "write_credentials",
]

log = logging.getLogger(__name__)

AGENT_VERSION = f"sim-{__version__}"
CREDENTIALS_SCHEMA = "passby.sim-credentials/1"
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT v5 PUBACK: a success code, but nobody got the message
LEAVE_S = 3.0  # after the drain: time for offline statuses to be acknowledged
CLOSE_S = 2.0  # then for the DISCONNECTs to go out
MISC_EVERY_S = 1.0  # keepalive bookkeeping (loop_misc) of every client
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0
FD_MARGIN = 64  # descriptors beyond one per sensor (log files, pipes, the selector)
_SUBJECT_RE = re.compile(SUBJECT_PATTERN)
_ID_RE = re.compile(ID_PATTERN)
# What simulated presence transitions look like: arrivals dominate, as at a shop door.
EVENT_TYPES: tuple[Literal["arrive", "visit", "leave"], ...] = ("arrive", "visit", "leave")
EVENT_WEIGHTS = (0.5, 0.2, 0.3)


class SimulatorError(ValueError):
    """A simulation that cannot run as asked; the message says what to change."""


# -- plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimSensor:
    """One simulated sensor and its broker account (the password never shows in a repr)."""

    store_id: str
    sensor_id: str
    username: str
    password: str = field(repr=False)

    @property
    def client_id(self) -> str:
        return f"passby-sim-{self.store_id}-{self.sensor_id}"


@dataclass(frozen=True)
class BrokerTarget:
    """Where the simulated sensors connect (as provisioning tells real sensors)."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_pem: str | None = field(default=None, repr=False)  # private CA, PEM text
    ca_file: Path | None = None  # or a CA bundle file
    keepalive_s: int = 30

    def ssl_context(self) -> ssl.SSLContext | None:
        """One context shared by every client (loading the CA 2 000 times would take seconds)."""
        if not self.tls:
            return None
        return ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None, cadata=self.ca_pem or None
        )


@dataclass(frozen=True)
class SimulationPlan:
    """What to simulate. ``rate_per_sensor`` events/s each (``total_rate`` overrides it)."""

    sensors: tuple[SimSensor, ...]
    broker: BrokerTarget = field(default_factory=BrokerTarget)
    duration_s: float = 60.0
    rate_per_sensor: float = 0.2
    total_rate: float | None = None
    stats_interval_s: float = 60.0
    connect_rate: float = 200.0  # new connections per second over the whole fleet
    processes: int = 1
    subjects: tuple[str, ...] = ()
    unknown_share: float = 0.0  # share of events with a random subject (1.0 without subjects)
    drain_s: float = 15.0
    session_expiry_s: int = 300
    max_inflight: int = 100  # per sensor, as paho's max_inflight_messages
    keep_event_ids: bool = True
    seed: int | None = None

    @property
    def per_sensor_rate(self) -> float:
        if self.total_rate is not None:
            return self.total_rate / max(1, len(self.sensors))
        return self.rate_per_sensor

    def check(self) -> None:
        """Raise SimulatorError naming the first setting that cannot work."""
        problems = []
        if not self.sensors:
            problems.append(
                "no sensors to simulate (provision some, or check the credentials file)"
            )
        if not 0 < self.duration_s <= 7 * 86400:
            problems.append(f"duration_s {self.duration_s} must be > 0 and at most a week")
        if self.per_sensor_rate < 0 or self.per_sensor_rate > 1000:
            problems.append(f"rate {self.per_sensor_rate}/s per sensor must be 0..1000")
        if self.stats_interval_s <= 0:
            problems.append(f"stats_interval_s {self.stats_interval_s} must be > 0")
        if self.connect_rate <= 0:
            problems.append(f"connect_rate {self.connect_rate} must be > 0")
        if not 1 <= self.processes <= 64:
            problems.append(f"processes {self.processes} must be 1..64")
        if not 0.0 <= self.unknown_share <= 1.0:
            problems.append(f"unknown_share {self.unknown_share} must be between 0 and 1")
        if self.drain_s < 0:
            problems.append(f"drain_s {self.drain_s} must be >= 0")
        bad = [s for s in self.subjects if not _SUBJECT_RE.match(s)]
        if bad:
            problems.append(
                f"{len(bad)} subject(s) are not 16 hex digits (first: {bad[0]!r}); subjects are "
                "keyed hashes, never MACs or phone numbers"
            )
        names = [s.client_id for s in self.sensors]
        if len(set(names)) != len(names):
            problems.append("two simulated sensors share a store and sensor id")
        bad_ids = [
            v for s in self.sensors for v in (s.store_id, s.sensor_id) if not _ID_RE.match(v)
        ]
        if bad_ids:
            problems.append(f"id {bad_ids[0]!r} does not match {ID_PATTERN}")
        if problems:
            raise SimulatorError("; ".join(problems))


# -- summary ----------------------------------------------------------------------------------

_COUNTERS = (
    "connected",
    "connect_refused",
    "connect_errors",
    "disconnects",
    "reconnects",
    "events_published",
    "events_acked",
    "events_refused",
    "events_no_subscribers",
    "events_unacked",
    "events_skipped_offline",
    "events_not_queued",
    "status_sent",
    "status_acked",
    "stats_sent",
    "commands_answered",
)


@dataclass
class SimulationSummary:
    """What happened; ``to_dict()`` is the JSON summary (ids only on request)."""

    sensors: int
    processes: int
    duration_s: float
    target_rate: float  # events/s over the fleet once every sensor is connected
    started: float  # epoch seconds
    elapsed_s: float  # wall time of the whole run, ramp and drain included
    publish_window_s: float  # first to last event published
    connected: int = 0  # sensors that got a successful CONNACK at least once
    never_connected: int = 0
    connect_refused: int = 0  # sensors the broker refused (bad credentials, not authorised)
    refused_reasons: dict[str, int] = field(default_factory=dict)
    connect_errors: int = 0  # socket-level connection failures (each retried with backoff)
    disconnects: int = 0  # connections lost while running
    reconnects: int = 0
    events_published: int = 0
    events_acked: int = 0
    events_refused: int = 0  # PUBACK with a failure reason code
    events_no_subscribers: int = 0  # PUBACK 0x10: the broker had no bridge to give it to
    events_unacked: int = 0  # still without an answer at the end
    events_skipped_offline: int = 0  # due while the sensor was disconnected: never created
    events_not_queued: int = 0  # paho refused to queue them
    status_sent: int = 0
    status_acked: int = 0
    stats_sent: int = 0
    commands_answered: int = 0
    achieved_rate: float = 0.0  # acknowledged events per second of the publish window
    latency_ms: dict[str, float] = field(default_factory=dict)
    acked_ids_sha256: str = ""
    acked_event_ids: list[str] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list)

    @property
    def lost_at_broker(self) -> int:
        """Published events that never got a successful PUBACK."""
        return self.events_published - self.events_acked

    def to_dict(self, include_ids: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not include_ids:
            out.pop("acked_event_ids")
        out["lost_at_broker"] = self.lost_at_broker
        return out


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1], 2)}


def ids_digest(event_ids: Iterable[str]) -> str:
    """SHA-256 of the sorted ids joined by newlines: compare with the same over the store."""
    return hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()


# -- one simulated sensor ---------------------------------------------------------------------

_IDLE, _CONNECTING, _UP, _DOWN, _REFUSED, _LEAVING, _DONE = range(7)


class _SimClient:
    """A paho client driven by the shard's loop; every callback runs in that loop's thread."""

    def __init__(self, shard: _Shard, sensor: SimSensor, ctx: ssl.SSLContext | None) -> None:
        self.shard = shard
        self.sensor = sensor
        self.status_topic = topic(sensor.store_id, sensor.sensor_id, "status")
        self.events_topic = topic(sensor.store_id, sensor.sensor_id, "events")
        self.stats_topic = topic(sensor.store_id, sensor.sensor_id, "stats")
        self.cmd_prefix = topic(sensor.store_id, sensor.sensor_id, "cmd/")
        self.reply_prefix = topic(sensor.store_id, sensor.sensor_id, "reply/")
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=sensor.client_id, protocol=mqtt.MQTTv5
        )
        if ctx is not None:
            c.tls_set_context(ctx)
        c.username_pw_set(sensor.username, sensor.password)
        will = StatusMessage(state="offline", agent_version=AGENT_VERSION).to_json()
        c.will_set(self.status_topic, will, qos=1, retain=True)
        c.max_inflight_messages_set(shard.plan.max_inflight)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        self.client = c
        self.state = _IDLE
        self.ever_connected = False
        self.backoff = BACKOFF_MIN_S
        self.inflight: dict[int, tuple[str, float]] = {}  # mid -> (event_id, published at)
        self.status_mids: set[int] = set()
        self.events_sent = 0
        self.scheduled = False  # events and stats are scheduled from the first login on
        self.started = time.monotonic()
        self.sock: Any = None

    # sockets -> the shard's selector
    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.sock = sock
        self.shard.sel.register(sock, selectors.EVENT_READ, self)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.shard.sel.unregister(sock)
        self.sock = None

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.shard.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.shard.sel.modify(sock, selectors.EVENT_READ, self)

    # connection
    def connect(self) -> None:
        s = self.shard
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no hints
        props.SessionExpiryInterval = s.plan.session_expiry_s
        self.state = _CONNECTING
        try:
            # First login starts clean (no session left by an earlier run); later ones resume
            # it, so QoS 1 messages in flight when the link broke are sent again.
            self.client.connect(
                s.plan.broker.host,
                s.plan.broker.port,
                keepalive=s.plan.broker.keepalive_s,
                clean_start=not self.ever_connected,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            s.count["connect_errors"] += 1
            s.note_error(f"connect {self.sensor.username}: {exc}")
            self._retry()

    def _retry(self) -> None:
        self.state = _DOWN
        delay = self.backoff * random.uniform(0.5, 1.0)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
        if self.shard.phase == _RUN:
            self.shard.schedule(time.monotonic() + delay, _CONNECT, self)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        s = self.shard
        if reason.is_failure:
            if self.state != _REFUSED:
                s.count["connect_refused"] += 1
                s.refused_reasons[str(reason)] = s.refused_reasons.get(str(reason), 0) + 1
            self.state = _REFUSED  # wrong credentials do not get better by retrying
            return
        if self.ever_connected:
            s.count["reconnects"] += 1
        else:
            s.count["connected"] += 1
        self.ever_connected = True
        self.backoff = BACKOFF_MIN_S
        self.state = _UP
        client.subscribe(self.cmd_prefix + "#", qos=1)
        self.publish_status("online")
        if not self.scheduled:
            self.scheduled = True
            s.start_schedules(self)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self.state in (_REFUSED, _LEAVING, _DONE):
            if self.state == _LEAVING:
                self.state = _DONE
            return
        if self.state == _UP:
            self.shard.count["disconnects"] += 1
            log.debug("simulated sensor %s lost its connection: %s", self.sensor.username, reason)
        elif self.state == _CONNECTING:  # e.g. no CONNACK within the keepalive: broker full?
            self.shard.count["connect_errors"] += 1
            self.shard.note_error(f"connect {self.sensor.username}: no CONNACK ({reason})")
        self._retry()

    # messages
    def publish_status(self, state: Literal["online", "offline"]) -> None:
        payload = StatusMessage(
            state=state,
            agent_version=AGENT_VERSION,
            ts=time.time(),
        ).to_json()
        info = self.client.publish(self.status_topic, payload, qos=1, retain=True)
        self.status_mids.add(info.mid)
        self.shard.count["status_sent"] += 1

    def publish_event(self, payload: str, event_id: str) -> None:
        s = self.shard
        info = self.client.publish(self.events_topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            s.count["events_not_queued"] += 1  # NO_CONN: queued by paho, sent on reconnect
            return
        self.inflight[info.mid] = (event_id, time.monotonic())
        self.events_sent += 1
        s.count["events_published"] += 1
        s.published_window(time.monotonic())

    def publish_stats(self, now_wall: float) -> None:
        uptime = time.monotonic() - self.started
        hour = math.floor(now_wall / 3600) * 3600
        frames = int(uptime * 40)
        payload = StatsMessage(
            ts=now_wall,
            uptime_s=uptime,
            agent_version=AGENT_VERSION,
            frames=frames,
            frames_per_s=40.0,
            client_frames=frames // 2,
            matched=self.events_sent,
            malformed=0,
            outbox_depth=len(self.inflight),
            dropped=0,
            roster_version=0,
            channel=6,
            iface_state="simulated",
            footfall={
                "hour_start": hour,
                "unique": self.events_sent * 3,
                "visitors": self.events_sent,
                "passers_by": self.events_sent * 2,
            },
        ).to_json()
        self.client.publish(self.stats_topic, payload, qos=0)
        self.shard.count["stats_sent"] += 1

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        s = self.shard
        sent = self.inflight.pop(mid, None)
        if sent is None:
            if mid in self.status_mids:
                self.status_mids.discard(mid)
                s.count["status_acked"] += 1
            return
        code = reason.value if reason is not None else 0
        if code == NO_MATCHING_SUBSCRIBERS:
            s.count["events_no_subscribers"] += 1
        elif code >= 0x80:
            s.count["events_refused"] += 1
        else:
            s.count["events_acked"] += 1
            s.latencies.append((time.monotonic() - sent[1]) * 1000.0)
            if s.plan.keep_event_ids:
                s.acked_ids.append(sent[0])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        if not message.topic.startswith(self.cmd_prefix):
            return
        name = message.topic[len(self.cmd_prefix) :]
        try:
            request_id = str(json.loads(message.payload).get("request_id", ""))
        except (ValueError, AttributeError):
            request_id = ""
        ok = name == "ping"
        reply = ReplyMessage(
            request_id=request_id if request_id and len(request_id) <= 64 else "",
            ok=ok,
            detail="simulated sensor" if ok else f"simulated sensor: {name!r} not simulated",
            ts=time.time(),
            data={
                "uptime_s": round(time.monotonic() - self.started, 1),
                "agent_version": AGENT_VERSION,
                "outbox_depth": len(self.inflight),
            }
            if ok
            else {},
        )
        with contextlib.suppress(ValueError):
            client.publish(self.reply_prefix + name, reply.to_json(), qos=1)
            self.shard.count["commands_answered"] += 1


# -- one loop ---------------------------------------------------------------------------------

_CONNECT, _EVENT, _STATS = range(3)
_RUN, _DRAIN, _LEAVE, _CLOSE = range(4)


class _Shard:
    """Many simulated sensors on one ``selectors`` loop in one thread."""

    def __init__(
        self,
        plan: SimulationPlan,
        sensors: Sequence[SimSensor],
        connect_rate: float,
        seed: int,
        stop: threading.Event | None = None,
    ) -> None:
        self.plan = plan
        self.connect_rate = connect_rate
        self.rng = random.Random(seed)
        self.stop = stop or threading.Event()
        self.sel = selectors.DefaultSelector()
        self.count = dict.fromkeys(_COUNTERS, 0)
        self.refused_reasons: dict[str, int] = {}
        self.latencies: list[float] = []
        self.acked_ids: list[str] = []
        self.errors: list[str] = []
        self.first_pub: float | None = None
        self.last_pub: float | None = None
        self.phase = _RUN
        self._heap: list[tuple[float, int, int, _SimClient]] = []
        self._seq = 0
        ctx = plan.broker.ssl_context()
        self.clients = [_SimClient(self, s, ctx) for s in sensors]
        rate = plan.per_sensor_rate
        self.period = 1.0 / rate if rate > 0 else math.inf

    def note_error(self, text: str) -> None:
        if len(self.errors) < 20:  # a broker that is down would otherwise fill memory
            self.errors.append(text)

    def schedule(self, when: float, action: int, sim: _SimClient) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, action, sim))

    def published_window(self, now: float) -> None:
        if self.first_pub is None:
            self.first_pub = now
        self.last_pub = now

    def start_schedules(self, sim: _SimClient) -> None:
        """A sensor's first connection: its events start at a random phase of its period (the
        fleet's load is smooth), its stats somewhere in the first interval."""
        now = time.monotonic()
        if self.period != math.inf:
            self.schedule(now + self.rng.uniform(0, self.period), _EVENT, sim)
        self.schedule(now + self.rng.uniform(0, self.plan.stats_interval_s), _STATS, sim)

    def _event_payload(self) -> tuple[str, str]:
        now = time.time()
        rng = self.rng
        subjects = self.plan.subjects
        if subjects and rng.random() >= self.plan.unknown_share:
            subject = rng.choice(subjects)
        else:
            subject = f"{rng.getrandbits(64):016x}"
        kind = rng.choices(EVENT_TYPES, EVENT_WEIGHTS)[0]
        dwell = 0.0 if kind == "arrive" else rng.uniform(30, 1800)
        msg = PresenceMessage(
            event_id=secrets.token_hex(16),
            type=kind,
            subject=subject,
            ts=now,
            first_seen=now - dwell - rng.uniform(1, 10),
            last_seen=now,
            rssi=Rssi(max=rng.randint(-65, -45), median=rng.randint(-75, -60)),
            frames=rng.randint(3, 400),
            dwell_s=dwell,
        )
        return msg.event_id, msg.to_json()

    def _act(self, when: float, action: int, sim: _SimClient) -> None:
        if action == _CONNECT:
            if self.phase == _RUN and sim.state in (_IDLE, _DOWN):
                sim.connect()
            return
        if self.phase != _RUN:
            return
        if action == _EVENT:
            self.schedule(when + self.period, _EVENT, sim)
            if sim.state != _UP:
                self.count["events_skipped_offline"] += 1
                return
            event_id, payload = self._event_payload()
            sim.publish_event(payload, event_id)
        elif action == _STATS:
            self.schedule(when + self.plan.stats_interval_s, _STATS, sim)
            if sim.state == _UP:
                sim.publish_stats(time.time())

    def _inflight(self) -> int:
        return sum(len(c.inflight) for c in self.clients)

    def _io(self, sim: _SimClient, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                sim.client.loop_read()
                # TLS: records already decrypted wait in the SSL object, not the socket, so
                # the selector would not wake us for them.
                while sim.sock is not None and getattr(sim.sock, "pending", int)() > 0:
                    sim.client.loop_read()
            if mask & selectors.EVENT_WRITE and sim.sock is not None:
                sim.client.loop_write()
        except Exception as exc:  # one client's failure must not end everyone's run
            log.exception("simulated sensor %s: network loop failed", sim.sensor.username)
            self.note_error(f"{sim.sensor.username}: {type(exc).__name__}: {exc}")

    def run(self) -> dict[str, Any]:
        plan = self.plan
        t0 = time.monotonic()
        for i, sim in enumerate(self.clients):
            self.schedule(t0 + i / self.connect_rate, _CONNECT, sim)
        t_end = t0 + plan.duration_s
        phase_until = t_end
        next_misc = t0 + MISC_EVERY_S
        while True:
            now = time.monotonic()
            if self.phase == _RUN and (now >= t_end or self.stop.is_set()):
                self.phase, phase_until = _DRAIN, now + plan.drain_s
            if self.phase == _DRAIN and (now >= phase_until or self._inflight() == 0):
                self.phase, phase_until = _LEAVE, now + LEAVE_S
                for sim in self.clients:
                    if sim.state == _UP:
                        sim.publish_status("offline")  # a clean disconnect fires no will
            if self.phase == _LEAVE and (
                now >= phase_until or not any(c.status_mids for c in self.clients)
            ):
                self.phase, phase_until = _CLOSE, now + CLOSE_S
                bye = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]  # paho: no hints
                bye.SessionExpiryInterval = 0  # the broker may forget the session now
                for sim in self.clients:
                    if sim.state in (_UP, _CONNECTING):
                        sim.state = _LEAVING
                        sim.client.disconnect(properties=bye)
                    elif sim.state != _REFUSED:
                        sim.state = _DONE
            if self.phase == _CLOSE and (
                now >= phase_until or not any(c.sock is not None for c in self.clients)
            ):
                break
            wake = min(phase_until, next_misc)
            if self._heap:
                wake = min(wake, self._heap[0][0])
            for key, mask in self.sel.select(max(0.0, min(wake - now, 0.25))):
                self._io(key.data, mask)
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                when, _, action, sim = heapq.heappop(self._heap)
                self._act(when, action, sim)
            if now >= next_misc:
                next_misc = now + MISC_EVERY_S
                for sim in self.clients:
                    if sim.sock is not None:
                        sim.client.loop_misc()
        for sim in self.clients:  # whatever did not close in time
            if sim.sock is not None:
                with contextlib.suppress(OSError):
                    sim.sock.close()
        self.sel.close()
        self.count["events_unacked"] = self._inflight()
        window = (
            (self.last_pub - self.first_pub)
            if self.first_pub is not None and self.last_pub is not None
            else 0.0
        )
        return {
            "count": self.count,
            "refused_reasons": self.refused_reasons,
            "latencies": self.latencies,
            "acked_ids": self.acked_ids,
            "errors": self.errors,
            "never_connected": sum(1 for c in self.clients if not c.ever_connected),
            "window": window,
        }


def _shard_main(
    plan: SimulationPlan, sensors: Sequence[SimSensor], rate: float, seed: int, out: Any
) -> None:
    """Entry point of a worker process: run one loop, put the result on ``out``."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    raise_nofile()
    try:
        result = _Shard(plan, sensors, rate, seed, stop).run()
    except Exception as exc:  # reported by the parent with the others' results
        log.exception("simulator shard failed")
        result = {"failed": f"{type(exc).__name__}: {exc}"}
    out.put(result)


def _check_nofile(sensors: int, processes: int) -> None:
    limit = raise_nofile()
    need = math.ceil(sensors / processes) + FD_MARGIN
    if limit < need:
        raise SimulatorError(
            f"{sensors} sensors in {processes} process(es) need about {need} open files per "
            f"process but the limit is {limit}: raise it ('ulimit -n {need * 2}', or "
            f"LimitNOFILE= in a systemd unit) or use more --processes"
        )


def run_simulation(plan: SimulationPlan, stop: threading.Event | None = None) -> SimulationSummary:
    """Run the plan to its end (or until ``stop`` is set) and return the summary.

    With ``processes`` 1 the loop runs in the calling thread; otherwise each worker process
    (spawned, not forked: the caller may have threads) runs one loop over its share."""
    plan.check()
    _check_nofile(len(plan.sensors), plan.processes)
    seed = plan.seed if plan.seed is not None else secrets.randbits(32)
    started, t0 = time.time(), time.monotonic()
    results: list[dict[str, Any]] = []
    if plan.processes == 1:
        results.append(_Shard(plan, plan.sensors, plan.connect_rate, seed, stop).run())
    else:
        results = _run_processes(plan, seed, stop)
    return _merge(plan, results, started, time.monotonic() - t0)


def _run_processes(
    plan: SimulationPlan, seed: int, stop: threading.Event | None
) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    n = plan.processes
    procs = []
    for i in range(n):
        share = plan.sensors[i::n]
        if not share:
            continue
        p = ctx.Process(
            target=_shard_main,
            args=(plan, share, plan.connect_rate / n, seed + i, out),
            name=f"passby-sim-{i}",
            daemon=True,
        )
        p.start()
        procs.append(p)
    # Spawning and importing take a few seconds; past this the workers are stuck, not slow.
    deadline = time.monotonic() + plan.duration_s + plan.drain_s + LEAVE_S + CLOSE_S + 60
    results: list[dict[str, Any]] = []
    signalled = False
    while len(results) < len(procs) and time.monotonic() < deadline:
        if stop is not None and stop.is_set() and not signalled:
            signalled = True
            for p in procs:
                if p.pid is not None and p.is_alive():
                    os.kill(p.pid, signal.SIGINT)
        try:
            results.append(out.get(timeout=0.5))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and out.empty():
                break
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()
    missing = len(procs) - len(results)
    if missing:
        results.append({"failed": f"{missing} simulator process(es) gave no result"})
    return results


def _merge(
    plan: SimulationPlan, results: list[dict[str, Any]], started: float, elapsed: float
) -> SimulationSummary:
    summary = SimulationSummary(
        sensors=len(plan.sensors),
        processes=plan.processes,
        duration_s=plan.duration_s,
        target_rate=round(plan.per_sensor_rate * len(plan.sensors), 3),
        started=started,
        elapsed_s=round(elapsed, 3),
        publish_window_s=0.0,
    )
    latencies: list[float] = []
    ids: list[str] = []
    for r in results:
        if "failed" in r:
            summary.errors.append(r["failed"])
            continue
        for name, value in r["count"].items():
            setattr(summary, name, getattr(summary, name) + value)
        for reason, n in r["refused_reasons"].items():
            summary.refused_reasons[reason] = summary.refused_reasons.get(reason, 0) + n
        latencies += r["latencies"]
        ids += r["acked_ids"]
        summary.errors += r["errors"]
        summary.never_connected += r["never_connected"]
        summary.publish_window_s = max(summary.publish_window_s, round(r["window"], 3))
    if summary.publish_window_s > 0:
        summary.achieved_rate = round(summary.events_acked / summary.publish_window_s, 2)
    summary.latency_ms = _percentiles(latencies)
    summary.acked_event_ids = ids
    summary.acked_ids_sha256 = ids_digest(ids) if plan.keep_event_ids else ""
    return summary


# -- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetCredentials:
    """The simulated sensors' accounts and where provisioning said the broker is."""

    sensors: tuple[SimSensor, ...]
    broker: BrokerTarget
    created: float = 0.0


def write_credentials(path: Path, creds: FleetCredentials) -> None:
    """Write the credentials file with mode 0600 (created so, never world-readable)."""
    data = {
        "schema": CREDENTIALS_SCHEMA,
        "created": creds.created,
        "broker": {
            "host": creds.broker.host,
            "port": creds.broker.port,
            "tls": creds.broker.tls,
            "ca_pem": creds.broker.ca_pem,
        },
        "sensors": [
            {
                "store_id": s.store_id,
                "sensor_id": s.sensor_id,
                "username": s.username,
                "password": s.password,
            }
            for s in creds.sensors
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def load_credentials(path: Path) -> FleetCredentials:
    """Read a credentials file written by ``write_credentials``; SimulatorError says what's wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SimulatorError(f"cannot read credentials file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SimulatorError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != CREDENTIALS_SCHEMA:
        raise SimulatorError(
            f"{path}: not a simulator credentials file (schema {CREDENTIALS_SCHEMA} expected; "
            "write one with 'cloud-bridge simulate --provision N')"
        )
    try:
        b = data["broker"]
        broker = BrokerTarget(
            host=str(b["host"]), port=int(b["port"]), tls=bool(b["tls"]), ca_pem=b.get("ca_pem")
        )
        sensors = tuple(
            SimSensor(
                str(s["store_id"]), str(s["sensor_id"]), str(s["username"]), str(s["password"])
            )
            for s in data["sensors"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SimulatorError(f"{path}: malformed entry ({type(exc).__name__}: {exc})") from None
    return FleetCredentials(sensors, broker, float(data.get("created", 0.0)))


def load_subjects(path: Path) -> tuple[str, ...]:
    """Subjects, one per line (blank lines and ``#`` comments ignored), each 16 hex digits."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SimulatorError(f"cannot read subjects file {path}: {exc.strerror}") from None
    out = []
    for n, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip().lower()
        if not text:
            continue
        if not _SUBJECT_RE.match(text):
            raise SimulatorError(
                f"{path}:{n}: {text[:20]!r} is not a subject id (16 hex digits); subjects are "
                "keyed hashes, never MACs or phone numbers"
            )
        out.append(text)
    return tuple(out)


def subjects_from_store(store: BridgeStore, limit: int = 100_000) -> tuple[str, ...]:
    """Subject ids of the bridge's customers (events for them go through the whole decision)."""
    from cloud_bridge.storage.customers import subjects

    rows = subjects(store, limit)
    return tuple(r["subject"] for r in rows)


# -- provisioning through the bridge's own code ------------------------------------------------


def provision_fleet(
    store: BridgeStore,
    settings: BridgeSettings,
    count: int,
    prefix: str = "sim",
    per_store: int = 10,
    now: float | None = None,
) -> tuple[FleetCredentials, BrokerUpdate]:
    """Provision ``count`` simulated sensors in stores ``{prefix}-0001``... (created if missing,
    ``per_store`` sensors each, ids ``sensor-N``) with ``provisioning.add_sensor`` (existing
    ones get new credentials, as ``--rotate``), and redeem each pairing code at once, as a
    box does, to learn its password. The Mosquitto files are rewritten once at the end."""
    from cloud_bridge.sensors.provisioning import add_sensor, redeem, write_broker_files

    if count < 1 or per_store < 1:
        raise SimulatorError("count and per_store must be at least 1")
    if not _ID_RE.match(f"{prefix}-0001"):
        raise SimulatorError(f"store prefix {prefix!r} makes invalid store ids ({ID_PATTERN})")
    now = time.time() if now is None else now
    existing = {(r["store_id"], r["sensor_id"]) for r in store.sensor_credentials(True)}
    sensors: list[SimSensor] = []
    broker = BrokerTarget()
    for i in range(count):
        store_id = f"{prefix}-{i // per_store + 1:04d}"
        sensor_id = f"sensor-{i % per_store + 1}"
        if i % per_store == 0 and store.site_key(store_id) is None:
            store.upsert_store(
                {
                    "id": store_id,
                    "name": f"Simulated store {i // per_store + 1}",
                    "timezone": "UTC",
                    "country": "ZZ",
                    "sender_name": "passby-sim",
                    "site_key": secrets.token_hex(16),
                }
            )
        done = add_sensor(
            store,
            settings,
            store_id,
            sensor_id,
            rotate=(store_id, sensor_id) in existing,
            now=now,
            write_broker=False,
        )
        paired = redeem(store, settings, done.code, now=now, used_by="fleet-simulator")
        m = paired.mqtt
        broker = BrokerTarget(host=m.host, port=m.port, tls=m.tls, ca_pem=m.ca_pem)
        sensors.append(SimSensor(store_id, sensor_id, m.username, m.password))
    update = write_broker_files(store, settings)
    log.info("provisioned %d simulated sensors under %s-*", count, prefix)
    return FleetCredentials(tuple(sensors), broker, now), update


def revoke_fleet(
    store: BridgeStore, settings: BridgeSettings, prefix: str = "sim"
) -> tuple[int, BrokerUpdate]:
    """Revoke every live sensor in the stores ``{prefix}-NNNN``; the broker files once at the end."""
    from cloud_bridge.sensors.provisioning import revoke_sensor, write_broker_files

    pattern = re.compile(rf"^{re.escape(prefix)}-\d{{4}}$")
    n = 0
    for r in store.sensor_credentials():
        if pattern.match(r["store_id"]):
            revoke_sensor(store, settings, r["store_id"], r["sensor_id"], write_broker=False)
            n += 1
    return n, write_broker_files(store, settings)


# -- checking the bridge's store ---------------------------------------------------------------


def missing_events(store: Any, event_ids: Sequence[str], chunk: int = 500) -> list[str]:
    """The ids among ``event_ids`` that are not in the store's ``events`` table.

    ``store`` is anything with ``query(sql, params) -> list[dict]`` taking ``?`` placeholders
    (``BridgeStore``)."""
    from cloud_bridge.storage.events import known_event_ids

    missing: list[str] = []
    for i in range(0, len(event_ids), chunk):
        part = list(event_ids[i : i + chunk])
        found = known_event_ids(store, part)
        missing += [e for e in part if e not in found]
    return missing


def wait_stored(
    store: Any, event_ids: Sequence[str], timeout_s: float = 60.0, poll_s: float = 0.5
) -> list[str]:
    """Wait until every id is stored (the ingest may still be catching up); the missing ones."""
    missing = missing_events(store, event_ids)
    deadline = time.monotonic() + timeout_s
    while missing and time.monotonic() < deadline:
        time.sleep(poll_s)
        missing = missing_events(store, missing)
    return missing
