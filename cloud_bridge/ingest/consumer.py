"""MQTT ingest: validate each sensor message, dead-letter the bad ones, drop duplicates.

An event is committed to the store before we acknowledge it (paho ``manual_ack``): if storing
fails, no PUBACK goes out and the broker redelivers, so an acknowledged event is always on disk.
Invalid messages are kept as dead letters with the reason (and only a hash of the payload: it
may hold anything).

End-to-end receipts: after a batch is committed, and before its PUBACKs, every sensor that
sent events in it gets one ``ReceiptMessage`` on ``passby/v1/{store}/{sensor}/receipts`` (QoS 1)
naming the events stored (duplicates included: the sensor sent it again because a receipt got
lost) and those dead-lettered, with the reason. Only then may the sensor forget them. On every
connect the bridge publishes the retained ``BridgeHello`` that tells sensors to wait for
receipts. A crash between commit and receipt costs a resend, which is a duplicate here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cloud_bridge.clock import DEFAULT_MAX_SKEW_S, EVENT_TIME_FIELDS, finite, future_problem
from cloud_bridge.config import MqttSettings
from cloud_bridge.ingest.mqtt import make_client, session_properties
from cloud_bridge.storage.store import BridgeStore
from edge_agent.protocol import (
    BRIDGE_HELLO_TOPIC,
    EVENT_ID_PATTERN,
    PROTOCOL_VERSION,
    TOPIC_ROOT,
    BridgeHello,
    DeadReceipt,
    PresenceMessage,
    ReceiptMessage,
    StatsMessage,
    StatusMessage,
    TopicError,
    parse_topic,
    topic,
)

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

# An MQTT payload as paho hands it over (MQTTMessage.payload).
Payload = bytes | bytearray

__all__ = [
    "IngestCounters",
    "Receipts",
    "handle_message",
    "handle_batch",
    "flush_seen",
    "Ingest",
    "SUBSCRIPTIONS",
]

log = logging.getLogger(__name__)

SHARE_GROUP = "passby-bridge"
SEEN_EVERY_S = 1.0  # a sensor's last_seen needs no more than one write a second
BATCH_MAX = 200  # messages stored together at most
BATCH_LINGER_S = 0.002  # how long a message waits for others to be stored with
# Events and stats go to ONE bridge worker of the group (MQTT v5 shared subscription): each is
# stored once however many workers run. Status is retained and small: every worker gets it
# (a shared subscription would not deliver retained messages), and storing it is idempotent.
SUBSCRIPTIONS = (
    (f"$share/{SHARE_GROUP}/{TOPIC_ROOT}/+/+/events", 1),
    (f"{TOPIC_ROOT}/+/+/status", 1),
    (f"$share/{SHARE_GROUP}/{TOPIC_ROOT}/+/+/stats", 0),
)


@dataclass
class IngestCounters:
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    status: int = 0
    stats: int = 0
    # the bridge's setting (policy.max_clock_skew_s): event times further ahead are refused
    max_skew_s: float = DEFAULT_MAX_SKEW_S
    # sensors that sent events since the last flush, with the time of the latest: written
    # together at most once a second (one statement, not one per event)
    seen_due: dict[tuple[str, str], float] = field(default_factory=dict)
    seen_flushed: float = 0.0
    # sensors whose last status spoke another protocol version: their events are refused
    incompatible: dict[tuple[str, str], int] = field(default_factory=dict)
    last_dead_reason: str = ""  # the reason of the latest dead letter (for its receipt)
    receipts: int = 0  # receipt messages published
    receipt_bytes: int = 0  # their payload bytes


_EVENT_ID_RE = re.compile(EVENT_ID_PATTERN)
RECEIPT_IDS_MAX = 1000  # event ids per receipt message (a batch is at most BATCH_MAX anyway)


@dataclass
class Receipts:
    """What a committed batch settled, per sensor: events stored (new or duplicate) and events
    dead-lettered with the reason. ``messages()`` gives the receipts to publish."""

    stored: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    dead: dict[tuple[str, str], list[DeadReceipt]] = field(default_factory=dict)

    def messages(self, now: float) -> list[tuple[str, str]]:
        """(topic, payload) of one receipt per sensor (more for a very large batch)."""
        out = []
        for key in sorted(set(self.stored) | set(self.dead)):
            stored, dead = self.stored.get(key, []), self.dead.get(key, [])
            for i in range(0, max(len(stored), len(dead)), RECEIPT_IDS_MAX):
                msg = ReceiptMessage(
                    stored=stored[i : i + RECEIPT_IDS_MAX],
                    dead=dead[i : i + RECEIPT_IDS_MAX],
                    ts=now,
                )
                out.append((topic(key[0], key[1], "receipts"), msg.to_json()))
        return out


def _event_id_of(payload: Payload) -> str | None:
    """The event_id of an events payload that was refused, if it has a well-formed one."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    event_id = data.get("event_id") if isinstance(data, dict) else None
    return event_id if isinstance(event_id, str) and _EVENT_ID_RE.match(event_id) else None


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(payload)"
        value = err.get("input")
        if (
            loc in EVENT_TIME_FIELDS
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            if not finite(value):
                parts.append(f"{loc} is not a finite time ({value})")
                continue
            if value <= 0:
                parts.append(f"{loc} is not a time ({value!r}: epoch seconds must be > 0)")
                continue
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def handle_message(
    store: BridgeStore, topic: str, payload: Payload, now: float, counters: IngestCounters
) -> str:
    """Validate and store one message; returns 'event', 'duplicate', 'dead', 'status' or 'stats'."""
    return handle_batch(store, [(topic, payload)], now, counters)[0][0]


def handle_batch(
    store: BridgeStore,
    messages: list[tuple[str, Payload]],
    now: float,
    counters: IngestCounters,
    receipts: Receipts | None = None,
) -> list[tuple[str, str]]:
    """Validate and store messages in order; (kind, event_id) for each, kind as for
    ``handle_message``. The events are stored together, in one statement: if that fails the
    exception propagates and none of them counts as stored (nothing must be acknowledged).
    ``receipts``, when given, collects what each sensor may forget once this returned."""
    results: list[tuple[str, str]] = []
    rows: list[tuple[int, PresenceMessage, str, str, str]] = []
    for topic_, payload in messages:
        kind, event = _one(store, topic_, payload, now, counters)
        if event is not None:
            store_id, sensor_id, _ = parse_topic(topic_)
            rows.append((len(results), event, store_id, sensor_id, payload.decode("utf-8")))
        elif kind == "dead" and receipts is not None:
            _receipt_dead(receipts, topic_, payload, counters.last_dead_reason)
        results.append((kind, ""))
    if receipts is not None:
        for _, msg, store_id, sensor_id, _ in rows:
            receipts.stored.setdefault((store_id, sensor_id), []).append(msg.event_id)
    if not rows:
        return results
    fresh = store.insert_events(
        [(m.event_id, st, se, m.type, m.subject, m.ts, text, now) for _, m, st, se, text in rows]
    )
    for index, msg, store_id, sensor_id, _ in rows:
        if msg.event_id in fresh:
            fresh.discard(msg.event_id)  # a second copy in the same batch is a duplicate
            counters.events += 1
            counters.seen_due[(store_id, sensor_id)] = now
            results[index] = ("event", msg.event_id)
        else:
            counters.duplicates += 1
            results[index] = ("duplicate", msg.event_id)
    if now - counters.seen_flushed >= SEEN_EVERY_S:
        flush_seen(store, counters, now)
    return results


def _receipt_dead(receipts: Receipts, topic_: str, payload: Payload, reason: str) -> None:
    """A dead-lettered event is settled too: its sensor must drop it, not send it forever."""
    try:
        store_id, sensor_id, leaf = parse_topic(topic_)
    except TopicError:
        return
    event_id = _event_id_of(payload) if leaf == "events" else None
    if event_id is not None:
        receipts.dead.setdefault((store_id, sensor_id), []).append(
            DeadReceipt(event_id=event_id, reason=reason[:300])
        )


def _one(
    store: BridgeStore, topic: str, payload: Payload, now: float, counters: IngestCounters
) -> tuple[str, PresenceMessage | None]:
    """One message: a valid event is returned to be stored with its batch ('pending');
    anything else is handled here.

    Event times are checked against the bridge's clock, ``now``: an event whose ``ts``,
    ``first_seen`` or ``last_seen`` lies more than ``counters.max_skew_s`` ahead of it, or is
    not a finite time, is dead-lettered with the reason (``cloud_bridge.clock``). A stats
    message is kept whatever (finite) time it carries: its ``ts`` minus ``now`` is the sensor's
    clock offset, kept with the sensor's latest stats (``clock_offset_s``) for the fleet page,
    its clock_skew alert and /metrics."""

    def dead(reason: str) -> tuple[str, None]:
        counters.dead_letters += 1
        counters.last_dead_reason = reason
        store.dead_letter(topic, reason, hashlib.sha256(payload).hexdigest(), len(payload), now)
        log.warning("dead letter on %s: %s", topic, reason)
        return "dead", None

    try:
        store_id, sensor_id, leaf = parse_topic(topic)
    except TopicError as exc:
        return dead(str(exc))
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead(f"payload is not UTF-8 (byte {exc.start})")
    try:
        if leaf == "events":
            other = counters.incompatible.get((store_id, sensor_id))
            if other is not None:
                return dead(
                    f"sensor speaks protocol v{other}, this bridge v{PROTOCOL_VERSION}: event refused"
                )
            event = PresenceMessage.model_validate_json(text)
            times = ((f, getattr(event, f)) for f in EVENT_TIME_FIELDS)
            problem = future_problem(times, now, counters.max_skew_s)
            if problem is not None:
                return dead(f"event time refused: {problem}")
            return "pending", event
        if leaf == "status":
            status = StatusMessage.model_validate_json(text)
            counters.status += 1
            state: str = status.state
            counters.incompatible.pop((store_id, sensor_id), None)
            if status.protocol != PROTOCOL_VERSION:
                # Refuse the peer loudly: its events would not be understood.
                state = "incompatible"
                counters.incompatible[(store_id, sensor_id)] = status.protocol
                log.error(
                    "sensor %s/%s speaks protocol v%s, this bridge speaks v%s: upgrade one of them",
                    store_id,
                    sensor_id,
                    status.protocol,
                    PROTOCOL_VERSION,
                )
            store.sensor_seen(
                store_id,
                sensor_id,
                now,
                state=state,
                agent_version=status.agent_version,
                roster_version=status.roster_version,
            )
            return "status", None
        if leaf == "stats":
            stats = StatsMessage.model_validate_json(text)
            counters.stats += 1
            if not finite(stats.ts):
                return dead(f"invalid stats message: ts is not a finite time ({stats.ts})")
            # the sensor's clock offset: its ts when it published against ours when it came
            # (stats are QoS 0 and never queued, so the transit time is small)
            offset = stats.ts - now
            store.sensor_seen(
                store_id,
                sensor_id,
                now,
                last_stats=json.dumps({**stats.model_dump(), "clock_offset_s": offset}),
                roster_version=stats.roster_version,
                agent_version=stats.agent_version,
            )
            store.record_stats(store_id, sensor_id, stats.model_dump(), now)
            return "stats", None
    except ValidationError as exc:
        return dead(f"invalid {leaf} message: {_reason(exc)}")
    return dead(f"unexpected topic leaf {leaf!r}")


def flush_seen(store: BridgeStore, counters: IngestCounters, now: float) -> None:
    """Write the last_seen of every sensor that sent events since the last flush."""
    counters.seen_flushed = now
    if counters.seen_due:
        due, counters.seen_due = counters.seen_due, {}
        store.sensors_seen([(k[0], k[1], t) for k, t in due.items()])


class Ingest:
    """Subscribes with an MQTT v5 shared subscription so several bridges share the events."""

    def __init__(
        self,
        settings: MqttSettings,
        store: BridgeStore,
        on_event: Callable[[str], None],
        client_id: str = "passby-bridge-1",
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_event = on_event
        self.counters = IngestCounters(max_skew_s=max_skew_s)
        self.connected = threading.Event()
        self._client = make_client(settings, client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._lock = threading.Lock()  # the counters, between the MQTT thread and the flusher
        self._pending: list[MQTTMessage] = []  # received, not yet stored (nor acknowledged)
        self._pending_cv = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the bridge connection: %s", reason_code)
            return
        client.subscribe(list(SUBSCRIPTIONS))
        # Retained: a sensor (re)connecting learns that it must wait for receipts.
        hello = BridgeHello(ts=time.time()).to_json()
        client.publish(BRIDGE_HELLO_TOPIC, hello, qos=1, retain=True)
        self.connected.set()
        log.info("bridge connected to %s:%s", self.settings.host, self.settings.port)

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        log.warning("bridge disconnected from broker: %s", reason_code)

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        """Messages are stored in small batches (one statement for their events), then
        acknowledged in the order they came: what is acknowledged is on disk."""
        with self._lock:
            self._pending.append(message)
            if len(self._pending) >= BATCH_MAX:
                self._store_pending()
            else:
                self._pending_cv.notify()

    def _store_pending(self) -> None:
        """(with the lock) Store the pending messages, acknowledge them, wake the decisions."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        receipts = Receipts()
        now = time.time()
        try:
            results = handle_batch(
                self.store, [(m.topic, m.payload) for m in batch], now, self.counters, receipts
            )
        except Exception:  # e.g. database away or disk full: not acknowledged, redelivered
            log.exception("failed to store %d messages; not acknowledged", len(batch))
            return
        self._send_receipts(receipts, now)
        for message in batch:
            if message.qos > 0:
                try:
                    self._client.ack(message.mid, message.qos)
                except Exception as exc:  # gone meanwhile: the broker sends it again, deduped
                    log.warning("could not acknowledge message %s: %s", message.mid, exc)
        for kind, event_id in results:
            if kind == "event":
                self.on_event(event_id)

    def _send_receipts(self, receipts: Receipts, now: float) -> None:
        """(after the commit) Tell each sensor what it may forget. A receipt lost here only
        costs a resend after the sensor's receipt timeout."""
        for topic_, payload in receipts.messages(now):
            try:
                self._client.publish(topic_, payload, qos=1)
            except Exception as exc:  # e.g. disconnected meanwhile: the sensor resends
                log.warning("could not send a receipt on %s: %s", topic_, exc)
                continue
            self.counters.receipts += 1
            self.counters.receipt_bytes += len(payload)

    def start(self) -> None:
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=session_properties(self.settings.session_expiry_s),
        )
        self._client.loop_start()
        self._stop.clear()  # an ingest can be stopped and started again
        self._flusher = threading.Thread(target=self._flush_loop, name="ingest-seen", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        """Stores what the MQTT thread received once it has lingered BATCH_LINGER_S, and
        writes the last_seen of the sensors of the last events even when no message follows."""
        next_seen = time.monotonic() + SEEN_EVERY_S
        while not self._stop.is_set():
            try:
                with self._lock:
                    if not self._pending:
                        self._pending_cv.wait(min(0.2, max(0.0, next_seen - time.monotonic())))
                if self._pending:
                    self._stop.wait(BATCH_LINGER_S)  # let a burst gather
                    with self._lock:
                        self._store_pending()
                if time.monotonic() >= next_seen:
                    next_seen = time.monotonic() + SEEN_EVERY_S
                    self.flush()
            except Exception:  # keep storing: what failed was not acknowledged
                log.exception("ingest flush failed")
                self._stop.wait(0.5)

    def flush(self) -> None:
        try:
            with self._lock:
                self._store_pending()
                flush_seen(self.store, self.counters, time.time())
        except Exception:  # the database is away: the next flush writes them
            log.exception("could not record when sensors were last seen")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5.0)
        self.flush()
