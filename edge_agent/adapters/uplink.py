"""MQTT uplink: publishes the outbox with QoS 1 and forgets an event only on the bridge's receipt.

A PUBACK only says the broker took the event; a broker restart that lost the bridge's shared
subscription, a stray subscriber on the events topic or someone holding the bridge's client id
can all PUBACK an event the bridge never stores. So, once the bridge has announced receipts
(retained ``BridgeHello`` on ``passby/v1/_bridge/hello``; remembered in the outbox's meta so the
next start does not have to wait for it), an event leaves the outbox only when a
``ReceiptMessage`` on ``.../receipts`` names it (stored or dead-lettered). An event PUBACKed
but not receipted within ``receipt_timeout_s`` (doubling per attempt, at most 8x) is published
again; the bridge drops the duplicate by ``event_id`` and receipts it again. At most
``MAX_AWAITING`` events wait for receipts; past that the uplink sends nothing new (the outbox
keeps them). Without a hello (an old bridge), or with ``receipts = "off"``, an event is
forgotten on PUBACK as before. On the first connect with nothing remembered, sending waits for
the hello subscription's SUBACK and ``HELLO_WAIT_S`` (retained messages follow it at once).

A stable client id with a persistent MQTT v5 session (``clean_start=False`` + session expiry),
a retained ``online`` birth and an ``offline`` last will on ``status``. On every (re)connect all
outbox rows are sent again; the bridge drops duplicates by ``event_id``. The reconnect backoff
is capped by ``reconnect_max_s`` (at most 15 s).
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent import __version__
from edge_agent.adapters.outbox import Outbox, OutboxItem
from edge_agent.config import MqttSettings
from edge_agent.protocol import (
    BRIDGE_HELLO_TOPIC,
    BridgeHello,
    ReceiptMessage,
    StatusMessage,
    topic,
)

__all__ = ["Uplink"]

log = logging.getLogger(__name__)

BATCH = 200  # rows read from the outbox per pass
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT v5 PUBACK reason code
# At most this many events published and not yet acknowledged: paho would otherwise queue the
# whole backlog in memory (and refuse past 65 535 with MQTT_ERR_QUEUE_SIZE).
MAX_INFLIGHT = 200
EARLY_TTL_S = 2.0  # a PUBACK that beat publish() back is claimed within this, or is stale
MAX_AWAITING = 20_000  # events PUBACKed and waiting for the bridge's receipt, at most
RESEND_SCAN_S = 0.25  # how often the uplink looks for overdue receipts
HELLO_WAIT_S = 0.5  # after the hello SUBACK, for a retained hello to arrive
RECEIPTS_FLAG = "receipts"  # outbox meta: the bridge announced receipts (1) or withdrew them (0)


def make_client(settings: MqttSettings, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    """A paho v2 client configured for MQTT v5, TLS and credentials as settings say."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.tls:
        ctx = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.cert_file:
            ctx.load_cert_chain(
                str(settings.cert_file), str(settings.key_file) if settings.key_file else None
            )
        client.tls_set_context(ctx)
    password = settings.password_value()
    if settings.username or password:
        client.username_pw_set(settings.username, password)
    client.enable_logger(logging.getLogger("paho.mqtt"))  # DEBUG shows every packet
    client.on_socket_open = _no_delay
    client.reconnect_delay_set(
        min_delay=max(1, int(settings.reconnect_min_s)), max_delay=int(settings.reconnect_max_s)
    )
    return client


def _no_delay(client: mqtt.Client, userdata: object, sock: object) -> None:
    """Small packets leave at once. Without this, Nagle holds a PUBLISH back behind our PUBACK
    of a receipt until the broker's delayed TCP ACK (measured: p50 3 -> 25 ms with receipts)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]


def session_properties(expiry_s: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no hints
    props.SessionExpiryInterval = expiry_s
    return props


class Uplink:
    """Drains an Outbox to the broker in a background thread."""

    def __init__(
        self,
        settings: MqttSettings,
        store_id: str,
        sensor_id: str,
        outbox: Outbox,
        roster_version: Callable[[], int] = lambda: 0,
        on_command: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.status_topic = topic(store_id, sensor_id, "status")
        self.stats_topic = topic(store_id, sensor_id, "stats")
        self.cmd_prefix = topic(store_id, sensor_id, "cmd/")
        self.reply_prefix = topic(store_id, sensor_id, "reply/")
        self.receipts_topic = topic(store_id, sensor_id, "receipts")
        self._on_command = on_command
        self._roster_version = roster_version
        self._client = make_client(settings, client_id=f"passby-edge-{store_id}-{sensor_id}")
        will = StatusMessage(state="offline", agent_version=__version__).to_json()
        self._client.will_set(self.status_topic, will, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_subscribe = self._on_subscribe
        self._attempt = 0
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox id
        # PUBACKs that beat publish() back to the sender thread (mid -> failed?). paho calls
        # on_publish under its own lock, so we must not hold ours across publish().
        self._early: dict[int, tuple[float, ReasonCode | None]] = {}
        self._hold_until = 0.0  # no sending before this (backoff after an undelivered event)
        self._rewind: int | None = None  # resend from after this outbox id (undelivered events)
        self._backoff_s = 0.0
        self._untracked: set[int] = set()  # mids of status messages: nothing to ack
        self._sent_upto = 0  # highest outbox id handed to paho since the last connect
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self.last_connect_error: str | None = None
        # end-to-end receipts (see the module doc)
        self._receipts_on = settings.receipts == "on" or (
            settings.receipts == "auto" and outbox.flag(RECEIPTS_FLAG) >= 1
        )
        self._awaiting: dict[int, float] = {}  # outbox id -> when to send again, no receipt
        self._attempts: dict[int, int] = {}  # outbox id -> times sent again for want of one
        self._hello_mid: int | None = None
        self._next_scan = 0.0  # next look for events whose receipt is overdue
        # outbox ids whose receipt beat their PUBACK here: nothing left to wait for
        self._confirmed_early: set[int] = set()
        self._settled = threading.Event()  # receipts mode known for this connection
        self.receipts_received = 0  # receipt messages
        self.receipt_bytes = 0  # their payload bytes
        self.resent = 0  # events sent again because no receipt came in time
        self.dead = 0  # events the bridge dead-lettered (dropped here, reason logged)

    @property
    def receipts_on(self) -> bool:
        """Events are forgotten only on the bridge's receipt (not on PUBACK)."""
        return self._receipts_on

    def awaiting_receipts(self) -> int:
        return len(self._awaiting)

    # paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            self.last_connect_error = str(reason_code)
            log.error("broker refused the connection: %s", reason_code)
            return
        self.last_connect_error = None
        self._attempt = 0
        log.info("connected to broker %s:%s", self.settings.host, self.settings.port)
        # Renewed on every connect: a broker that lost our session must not lose our commands
        # nor our receipts.
        subs = []
        if self._on_command is not None:
            subs.append((self.cmd_prefix + "#", 1))
        if self.settings.receipts != "off":
            subs += [(self.receipts_topic, 1), (BRIDGE_HELLO_TOPIC, 1)]
        if self._receipts_on or self.settings.receipts == "off":
            self._settled.set()
        else:
            self._settled.clear()  # wait for a retained hello before trusting PUBACKs
        if subs:
            _, mid = client.subscribe(subs)
            self._hello_mid = mid
        birth = StatusMessage(
            state="online",
            agent_version=__version__,
            roster_version=self._roster_version(),
            ts=time.time(),
        ).to_json()
        with self._lock:
            # Ids from the last connection mean nothing now (paho re-sends its own queue with
            # them; those answers are ignored: the outbox resend below covers every row).
            self._untracked.clear()
            self._inflight.clear()
            self._early.clear()
            self._awaiting.clear()  # everything is sent again below, and awaited again
            self._attempts.clear()
            self._confirmed_early.clear()
            self._hold_until = 0.0  # a fresh connection: retry held events at once
            # Resend everything not yet acknowledged. Applied by the sender thread itself before
            # its next outbox read, so a pass in progress cannot move the cursor past it.
            self._rewind = 0
        info = client.publish(self.status_topic, birth, qos=1, retain=True)
        with self._lock:
            self._untracked.add(info.mid)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._connected.clear()
        if not self._stop.is_set():
            delay = self._next_delay()
            log.warning("disconnected from broker: %s; reconnecting in %.1f s", reason_code, delay)

    def _on_connect_fail(self, client, userdata) -> None:  # type: ignore[no-untyped-def]
        delay = self._next_delay()
        log.warning(
            "cannot reach broker %s:%s; retrying in %.1f s",
            self.settings.host,
            self.settings.port,
            delay,
        )

    def _next_delay(self) -> float:
        """Capped exponential backoff with full jitter, so a fleet does not reconnect in step
        after a broker restart. paho waits ``min_delay`` before its next attempt."""
        cap = min(self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        delay = random.uniform(
            self.settings.reconnect_min_s, max(cap, self.settings.reconnect_min_s)
        )
        self._client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
        return delay

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        if mid == self._hello_mid and not self._settled.is_set():
            timer = threading.Timer(HELLO_WAIT_S, self._settle_mode)
            timer.daemon = True
            timer.start()

    def _settle_mode(self) -> None:
        if not self._settled.is_set():
            log.info(
                "no receipts announced by the bridge: events are forgotten on the broker's PUBACK"
            )
            self._settled.set()
            self._wake.set()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        if message.topic == self.receipts_topic:
            self._on_receipt(message.payload)
        elif message.topic == BRIDGE_HELLO_TOPIC:
            self._on_hello(message.payload)
        elif self._on_command is not None and message.topic.startswith(self.cmd_prefix):
            self._on_command(message.topic[len(self.cmd_prefix) :], message.payload)

    def _set_receipts(self, on: bool, why: str) -> None:
        if self.settings.receipts != "auto" or on == self._receipts_on:
            return
        self.outbox.set_flag(RECEIPTS_FLAG, 1 if on else 0)
        with self._lock:
            self._receipts_on = on
            if not on:  # what waits for a receipt is sent again and forgotten on PUBACK
                self._awaiting.clear()
                self._rewind = 0
        log.info(
            "%s: events are now forgotten %s",
            why,
            "only on the bridge's receipt" if on else "on the broker's PUBACK",
        )

    def _on_hello(self, payload: bytes) -> None:
        try:
            hello = BridgeHello.model_validate_json(payload) if payload else None
        except ValueError as exc:
            log.warning("ignored an invalid bridge hello (%s)", str(exc).splitlines()[0])
            return
        if hello is not None and hello.receipts >= 1:
            self._set_receipts(True, f"the bridge announced receipts v{hello.receipts}")
        else:
            self._set_receipts(False, "the bridge withdrew receipts")
        self._settled.set()
        self._wake.set()

    def _on_receipt(self, payload: bytes) -> None:
        try:
            receipt = ReceiptMessage.model_validate_json(payload)
        except ValueError as exc:
            log.warning("ignored an invalid receipt (%s)", str(exc).splitlines()[0])
            return
        self.receipts_received += 1
        self.receipt_bytes += len(payload)
        self._set_receipts(True, "the bridge sends receipts")
        for dead in receipt.dead:
            log.warning("the bridge refused event %s: %s (dropped)", dead.event_id, dead.reason)
        self.dead += len(receipt.dead)
        gone = self.outbox.confirm([*receipt.stored, *(d.event_id for d in receipt.dead)])
        with self._lock:
            for item_id in gone:
                if self._awaiting.pop(item_id, None) is None:
                    self._confirmed_early.add(item_id)
                self._attempts.pop(item_id, None)
            if len(self._confirmed_early) > 2 * MAX_INFLIGHT:  # their PUBACKs will not come now
                self._confirmed_early.clear()
        self._settled.set()
        self._wake.set()

    def publish_reply(self, name: str, payload: str) -> None:
        """Answer a command on reply/{name} (QoS 1)."""
        self._publish_untracked(self.reply_prefix + name, payload, qos=1, retain=False)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            if mid in self._untracked:
                self._untracked.discard(mid)
                return
            item_id = self._inflight.pop(mid, None)
            if item_id is None:
                self._early[mid] = (time.monotonic(), reason_code)
                if len(self._early) > 1000:  # answers nobody claimed: stale, never to match
                    cutoff = time.monotonic() - EARLY_TTL_S
                    self._early = {m: e for m, e in self._early.items() if e[0] >= cutoff}
                return
        self._settle(item_id, reason_code)
        if len(self._inflight) < MAX_INFLIGHT // 2:
            self._wake.set()

    def _settle(self, item_id: int, reason_code: ReasonCode | None) -> None:
        """The broker answered an event's PUBLISH: forget it only if it surely went on.

        MQTT v5 PUBACK 0x10 "No matching subscribers" is a success code, but it means the broker
        dropped the event: no bridge was subscribed (e.g. it is reconnecting after a broker
        restart that lost its shared subscription). Such events, like refused ones, stay in the
        outbox and are sent again after a backoff."""
        code = reason_code.value if reason_code is not None else 0
        log.debug("outbox row %s acknowledged (%s)", item_id, reason_code)
        if code == 0 or (code < 0x80 and code != NO_MATCHING_SUBSCRIBERS):
            self._backoff_s = 0.0
            with self._lock:
                if item_id in self._confirmed_early:  # its receipt came first
                    self._confirmed_early.discard(item_id)
                    return
                if self._receipts_on:  # the broker has it; only the bridge's receipt counts
                    n = self._attempts.get(item_id, 0)
                    wait = self.settings.receipt_timeout_s * min(2**n, 8)
                    self._awaiting[item_id] = time.monotonic() + wait
                    return
            self.outbox.ack(item_id)
            return
        with self._lock:
            # The sender thread applies the rewind before its next read of the outbox (it may
            # be advancing its cursor past this row right now).
            back = item_id - 1
            self._rewind = back if self._rewind is None else min(self._rewind, back)
            now = time.monotonic()
            first = now >= self._hold_until
            if first:  # first refusal of this round: back off further
                self._backoff_s = min(max(self._backoff_s * 2, 0.5), 30.0)
                self._hold_until = now + self._backoff_s
        if first:
            log.warning(
                "event %s not delivered (%s); kept in the outbox, retrying in %.1f s",
                item_id,
                reason_code,
                self._backoff_s,
            )

    # sender thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._connected.is_set() and time.monotonic() >= self._hold_until:
                self._resend_unconfirmed()
                self._send_pending()

    def _resend_unconfirmed(self) -> None:
        """Events PUBACKed but without a receipt in time go out again (oldest first)."""
        now = time.monotonic()
        if not self._awaiting or not self._settled.is_set() or now < self._next_scan:
            return
        self._next_scan = now + RESEND_SCAN_S  # a scan is O(awaiting): not at every event
        with self._lock:
            due = sorted(i for i, t in self._awaiting.items() if t <= now)[:BATCH]
            for item_id in due:
                del self._awaiting[item_id]
                self._attempts[item_id] = self._attempts.get(item_id, 0) + 1
        if not due:
            return
        items = self.outbox.get(due)
        with self._lock:
            for item_id in set(due) - {item.id for item in items}:  # confirmed meanwhile
                self._attempts.pop(item_id, None)
        if items:
            log.info("%d event(s) without the bridge's receipt in time: sending again", len(items))
        for n, item in enumerate(items):
            if len(self._inflight) >= MAX_INFLIGHT or not self._publish_item(item):
                with self._lock:  # the rest waits for the next pass
                    for later in items[n:]:
                        self._awaiting[later.id] = now
                return
            self.resent += 1

    def _publish_item(self, item: OutboxItem) -> bool:
        """Publish one outbox row and track its PUBACK; False when paho refused it."""
        info = self._client.publish(item.topic, item.payload, qos=1)
        log.debug("outbox row %s published as mid %s (rc %s)", item.id, info.mid, info.rc)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False  # not connected any more; resent after reconnect
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is not None and time.monotonic() - early[0] > EARLY_TTL_S:
                early = None  # a stale answer to an old message with a reused id
            if early is None:
                self._inflight[info.mid] = item.id
        if early is not None:
            self._settle(item.id, early[1])
        return True

    def _send_pending(self) -> None:
        while self._connected.is_set() and not self._stop.is_set():
            if time.monotonic() < self._hold_until or not self._settled.is_set():
                return
            if len(self._awaiting) >= MAX_AWAITING:
                return  # the bridge is not confirming: keep the rest in the outbox
            with self._lock:
                if self._rewind is not None:
                    self._sent_upto = min(self._sent_upto, self._rewind)
                    self._rewind = None
                after = self._sent_upto
            items = self.outbox.pending(after_id=after, limit=BATCH)
            if not items:
                return
            for item in items:
                if self._rewind is not None:
                    break  # an event came back undelivered: start over from it (after the hold)
                if len(self._inflight) >= MAX_INFLIGHT:
                    return  # enough unacknowledged in flight; on_publish wakes us
                if not self._publish_item(item):
                    return  # not connected any more; resent after reconnect
                with self._lock:
                    self._sent_upto = max(self._sent_upto, item.id)

    # public --------------------------------------------------------------------------------
    def start(self) -> None:
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=session_properties(self.settings.session_expiry_s),
        )
        self._client.loop_start()
        self._thread.start()

    def kick(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    def _publish_untracked(
        self, topic_: str, payload: str, qos: int, retain: bool
    ) -> mqtt.MQTTMessageInfo:
        """Publish something that is not an outbox row, so its ack is not mistaken for one."""
        info = self._client.publish(topic_, payload, qos=qos, retain=retain)
        with self._lock:
            if self._early.pop(info.mid, None) is None:
                self._untracked.add(info.mid)
        return info

    def publish_stats(self, payload: str) -> None:
        if self._connected.is_set():
            self._publish_untracked(self.stats_topic, payload, qos=0, retain=False)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_drained(self, timeout: float) -> bool:
        """Until every outbox row is acknowledged (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.depth() == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return self.outbox.depth() == 0

    def stop(self) -> None:
        """Leave cleanly: a clean disconnect does not fire the will, so publish offline first."""
        self._stop.set()
        self._wake.set()
        if self._connected.is_set():
            offline = StatusMessage(
                state="offline",
                agent_version=__version__,
                roster_version=self._roster_version(),
                ts=time.time(),
            ).to_json()
            info = self._publish_untracked(self.status_topic, offline, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()
        self._thread.join(timeout=2.0)
