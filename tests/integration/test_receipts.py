"""End-to-end receipts with the shipped Mosquitto config (TLS, passwords, ACL): an event leaves
the sensor's outbox only when the bridge has stored it, whatever the broker or a stranger does.

Each test replays events from the real ``Outbox`` + ``Uplink`` (a sensor's account) into the
real ``Ingest`` (the bridge's account) and ends with every event stored exactly once and the
outbox empty:

(a) a sensor account takes over the bridge's client id during the replay (with the shipped
    config, which ties client ids to accounts, and without that line, where only receipts help);
(b) the broker restarts while the bridge is down and another subscriber is on the events topic;
(c) the bridge is killed with ``kill -9`` between storing a batch and confirming it, and
    another worker carries on.

Receipt timeout 1 s here (30 s by default) so a resend round takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from cloud_bridge.config import BridgeSettings, ProvisioningSettings
from cloud_bridge.config import MqttSettings as BridgeMqttSettings
from cloud_bridge.ingest.consumer import Ingest
from cloud_bridge.sensors.provisioning import add_sensor, mosquitto_hash, redeem
from cloud_bridge.storage.events import event_rows
from cloud_bridge.storage.store import BridgeStore
from edge_agent.adapters.outbox import Outbox
from edge_agent.adapters.uplink import Uplink, make_client, session_properties
from edge_agent.config import MqttSettings
from edge_agent.protocol import topic

from .brokers import SecureBroker, make_test_pki
from .fault_agent import event

pytestmark = pytest.mark.integration

DATA_KEY = "cd" * 32
BRIDGE_PASSWORD = "bridge-" + uuid.uuid4().hex
TOOL_PASSWORD = "tool-" + uuid.uuid4().hex
A, B = "main-st.door-1", "main-st.door-2"
EVENTS_A = topic("main-st", "door-1", "events")
RECEIPTS = {"receipt_timeout_s": 1.0}  # sensor-side receipt options (see the module doc)
IDENTITY_LINE = "use_username_as_clientid true\n"


class Broker(SecureBroker):
    """The shipped config; ``identity=False`` strips the line that ties client ids to accounts."""

    identity = True

    def write_config(self) -> None:
        super().write_config()
        if not self.identity:
            text = self.config_path.read_text()
            self.config_path.write_text(text.replace(IDENTITY_LINE, ""))


@dataclass
class Deployment:
    broker: Broker
    tmp: Path
    passwords: dict[str, str]

    def mqtt(self, user: str, **kw: Any) -> MqttSettings:
        return MqttSettings(
            host=self.broker.host,
            port=self.broker.port,
            tls=True,
            ca_file=self.broker.pki.ca_file,
            username=user,
            password=self.passwords[user],
            reconnect_min_s=0.5,
            reconnect_max_s=1.0,
            **kw,
        )

    def bridge_mqtt(self, user: str, **kw: Any) -> BridgeMqttSettings:
        """The same connection as the bridge's settings model holds it."""
        return BridgeMqttSettings(**self.mqtt(user, **kw).model_dump())

    def store(self) -> BridgeStore:
        return BridgeStore(self.tmp / "bridge.db", data_key=bytes.fromhex(DATA_KEY))


def deploy(tmp: Path, identity: bool = True) -> Deployment:
    broker_dir = tmp / "mosquitto"
    broker_dir.mkdir(parents=True)
    settings = BridgeSettings(
        data_dir=tmp / "bridge-data",
        data_key=DATA_KEY,
        mqtt=BridgeMqttSettings(username="bridge", password=BRIDGE_PASSWORD),
        provisioning=ProvisioningSettings(
            password_file=broker_dir / "passby.passwd",
            acl_file=broker_dir / "passby.acl",
            bridge_accounts=["bridge-2", "bridge-tool"],
        ),
    )
    store = BridgeStore(tmp / "provisioning.db", data_key=bytes.fromhex(DATA_KEY))
    store.upsert_store(
        {"id": "main-st", "name": "Main St", "timezone": "UTC", "country": "RU",
         "sender_name": "Shop", "site_key": "00" * 16}
    )  # fmt: skip
    passwords = {
        "bridge": BRIDGE_PASSWORD,
        "bridge-2": BRIDGE_PASSWORD,
        "bridge-tool": TOOL_PASSWORD,
    }
    for sensor in ("door-1", "door-2"):
        cfg = redeem(store, settings, add_sensor(store, settings, "main-st", sensor).code)
        passwords[cfg.mqtt.username] = cfg.mqtt.password
    store.close()
    pw = broker_dir / "passby.passwd"  # the extra bridge accounts, as mosquitto_passwd adds them
    extra = [f"{u}:{mosquitto_hash(passwords[u])}" for u in ("bridge-2", "bridge-tool")]
    pw.write_text(pw.read_text() + "\n".join(extra) + "\n")
    broker = Broker(broker_dir, make_test_pki(broker_dir / "pki"), pw, broker_dir / "passby.acl")
    broker.identity = identity
    broker.start()
    return Deployment(broker, tmp, passwords)


@pytest.fixture()
def shipped(tmp_path: Path) -> Iterator[Deployment]:
    d = deploy(tmp_path)
    yield d
    d.broker.stop()


class Bridge:
    """The real ingest with a bridge account; counts how often the broker threw it off."""

    def __init__(
        self, d: Deployment, user: str = "bridge", worker_id: str = "1", **kw: Any
    ) -> None:
        self.store = d.store()
        self.ingest = Ingest(
            d.bridge_mqtt(user, **kw),
            self.store,
            lambda _e: None,
            client_id=f"passby-bridge-{worker_id}",
        )
        self.kicked = 0
        inner = self.ingest._on_disconnect

        def on_disconnect(*a: Any) -> None:
            self.kicked += 1
            inner(*a)

        self.ingest._client.on_disconnect = on_disconnect
        self.ingest.start()
        assert self.ingest.connected.wait(10), "the bridge could not connect"
        time.sleep(0.3)  # SUBACK

    def ids(self, prefix: str) -> list[str]:
        return [r["event_id"] for r in event_rows(self.store) if r["event_id"].startswith(prefix)]

    def close(self) -> None:
        self.ingest.stop()
        self.store.close()


class Sensor:
    """The real outbox and uplink of sensor door-1; ``replay`` adds events at a rate."""

    def __init__(self, d: Deployment, path: Path) -> None:
        self.outbox = Outbox(path)
        self.uplink = Uplink(d.mqtt(A, **RECEIPTS), "main-st", "door-1", self.outbox)
        self.uplink.start()
        assert self.uplink.wait_connected(10), self.uplink.last_connect_error

    def replay(self, prefix: str, count: int, rate: float) -> None:
        t0 = time.monotonic()
        for i in range(count):
            if (delay := t0 + i / rate - time.monotonic()) > 0:
                time.sleep(delay)
            msg = event(prefix, i, time.time())
            self.outbox.add(EVENTS_A, msg.to_json(), msg.event_id)
            self.uplink.kick()

    def close(self) -> None:
        self.uplink.stop()
        self.outbox.close()


def _client(d: Deployment, user: str, client_id: str, **handlers: Any) -> mqtt.Client:
    c = make_client(d.mqtt(user), client_id)
    for name, fn in handlers.items():
        setattr(c, name, fn)
    return c


def _settle(bridge: Bridge, sensor: Sensor, prefix: str, count: int, timeout: float) -> list[str]:
    """Wait until the bridge has every event and the outbox is empty (or the timeout)."""
    deadline = time.monotonic() + timeout
    got = bridge.ids(prefix)
    while time.monotonic() < deadline and (len(set(got)) < count or sensor.outbox.depth()):
        time.sleep(0.2)
        got = bridge.ids(prefix)
    return got


def _exactly_once(got: list[str], prefix: str, count: int) -> None:
    want = {f"{prefix}{i:024x}" for i in range(count)}
    missing = want - set(got)
    assert not missing, f"{len(missing)} of {count} events never stored"
    assert sorted(got) == sorted(want), "an event stored twice, or one that was never sent"


# -- (a) a sensor account takes over the bridge's client id during a replay ------------------


@pytest.mark.parametrize("identity", [True, False], ids=["shipped", "without-identity-line"])
def test_bridge_client_id_takeover_during_replay_loses_nothing(
    tmp_path: Path, identity: bool
) -> None:
    d = deploy(tmp_path, identity=identity)
    bridge = Bridge(d)
    sensor = Sensor(d, tmp_path / "outbox.db")
    taken = {"connacks": 0}

    def on_connect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        if not reason.is_failure:
            taken["connacks"] += 1

    attacker = _client(d, B, "passby-bridge-1", on_connect=on_connect)  # the documented id
    prefix, count = uuid.uuid4().hex[:8], 400
    try:
        attacker.connect_async(
            d.broker.host, d.broker.port, clean_start=False, properties=session_properties(3600)
        )
        attacker.loop_start()  # reconnects by itself: a takeover back and forth
        sensor.replay(prefix, count, rate=50.0)
        attacker.disconnect()
        attacker.loop_stop()
        got = _settle(bridge, sensor, prefix, count, timeout=60)
        _exactly_once(got, prefix, count)
        assert sensor.outbox.depth() == 0
        assert taken["connacks"] >= 1, "the attacker never got in: the test proves nothing"
        if identity:  # the broker gives the attacker its own id: the bridge is never thrown off
            assert bridge.kicked == 0, f"the bridge was thrown off {bridge.kicked} times"
        else:  # without the line the takeover happens, and receipts alone keep every event
            assert bridge.kicked >= 2, f"only {bridge.kicked} takeovers: the test proves little"
        print(f"identity={identity}: takeovers {bridge.kicked}, resent {sensor.uplink.resent}")
    finally:
        attacker.loop_stop()
        sensor.close()
        bridge.close()
        d.broker.stop()


# -- (b) broker restart while the bridge is down and another subscriber is on the events topic --


def test_broker_restart_with_the_bridge_down_and_a_stray_subscriber_loses_nothing(
    shipped: Deployment, tmp_path: Path
) -> None:
    d = shipped
    bridge = Bridge(d)
    sensor = Sensor(d, tmp_path / "outbox.db")
    warm = uuid.uuid4().hex[:8]
    sensor.replay(warm, 5, rate=50.0)  # the sensor has met the bridge
    assert len(_settle(bridge, sensor, warm, 5, timeout=20)) == 5
    bridge.ingest.stop()  # the bridge is away (deploying) ...
    d.broker.restart()  # ... while the broker restarts: its shared subscription is gone
    stray: list[bytes] = []
    tool = _client(d, "bridge-tool", "tool", on_message=lambda c, u, m: stray.append(m.payload))
    tool.connect(d.broker.host, d.broker.port)
    tool.loop_start()
    tool.subscribe("passby/v1/+/+/events", qos=1)  # a monitoring tool, say
    time.sleep(0.5)
    prefix, count = uuid.uuid4().hex[:8], 100
    try:
        assert sensor.uplink.wait_connected(15)
        sensor.replay(prefix, count, rate=100.0)
        time.sleep(2.0)  # every event has been PUBACKed (the tool matched) by now
        assert len(stray) >= count, f"the stray subscriber got only {len(stray)}"
        assert sensor.outbox.depth() == count, "events PUBACKed but not stored left the outbox"
        tool.disconnect()
        tool.loop_stop()
        bridge.ingest.start()  # the bridge returns
        got = _settle(bridge, sensor, prefix, count, timeout=60)
        _exactly_once(got, prefix, count)
        assert sensor.outbox.depth() == 0
    finally:
        tool.loop_stop()
        sensor.close()
        bridge.close()


# -- (c) the bridge killed with kill -9 between storing and confirming ---------------------------


FAULT_BRIDGE = Path(__file__).with_name("fault_bridge.py")


def test_bridge_killed_between_storing_and_confirming_loses_nothing(
    shipped: Deployment, tmp_path: Path
) -> None:
    d = shipped
    secret = tmp_path / "bridge.password"
    secret.write_text(BRIDGE_PASSWORD)
    # worker 1 (its own process) dies right after a commit; its session expires 2 s later
    # (Mosquitto 2.0.11 keeps handing an offline session its share of a $share group until then)
    worker1 = subprocess.Popen(
        [sys.executable, str(FAULT_BRIDGE), "--port", str(d.broker.port),
         "--db", str(tmp_path / "bridge.db"), "--data-key", DATA_KEY, "--user", "bridge",
         "--password-file", str(secret), "--ca", str(d.broker.pki.ca_file),
         "--kill-after", "100", "--session-expiry", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker1.stdout is not None
    first = json.loads(worker1.stdout.readline() or "{}")
    assert first == {"connected": True}, worker1.stderr.read() if worker1.stderr else ""
    worker2 = Bridge(d, user="bridge-2", worker_id="2")  # a second worker, its own account
    sensor = Sensor(d, tmp_path / "outbox.db")
    prefix, count = uuid.uuid4().hex[:8], 600
    try:
        feeder = threading.Thread(target=sensor.replay, args=(prefix, count, 100.0))
        feeder.start()
        worker1.wait(timeout=30)
        assert worker1.returncode == -9, f"worker 1 was not killed: rc {worker1.returncode}"
        killed_at = json.loads(worker1.stdout.readline() or "{}")
        assert killed_at.get("stored", 0) >= 100, killed_at
        feeder.join(timeout=30)
        got = _settle(worker2, sensor, prefix, count, timeout=90)
        _exactly_once(got, prefix, count)
        assert sensor.outbox.depth() == 0
        print(f"worker 1 killed after storing {killed_at['stored']}; resent {sensor.uplink.resent}")
    finally:
        if worker1.poll() is None:
            worker1.kill()
        sensor.close()
        worker2.close()


# -- upgrades in either order, and dead letters --------------------------------------------------


def _uplink(broker: Any, path: Path, **kw: Any) -> tuple[Outbox, Uplink]:
    outbox = Outbox(path)
    settings = MqttSettings(host=broker.host, port=broker.port, reconnect_max_s=1.0, **kw)
    uplink = Uplink(settings, "main-st", "door-1", outbox)
    uplink.start()
    assert uplink.wait_connected(10)
    return outbox, uplink


def test_new_sensor_with_an_old_bridge_forgets_on_puback_and_does_not_loop(
    mosquitto: Any, tmp_path: Path
) -> None:
    """An old bridge: a shared subscriber that announces nothing and sends no receipts."""
    got: list[bytes] = []
    old_bridge = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "old-bridge", protocol=mqtt.MQTTv5)
    old_bridge.on_message = lambda c, u, m: got.append(m.payload)
    old_bridge.connect(mosquitto.host, mosquitto.port)
    old_bridge.loop_start()
    old_bridge.subscribe("$share/passby-bridge/passby/v1/+/+/events", qos=1)
    time.sleep(0.3)
    outbox, uplink = _uplink(mosquitto, tmp_path / "outbox.db", receipt_timeout_s=0.5)
    try:
        for i in range(50):
            msg = event("01d0b1d9", i, time.time())
            outbox.add(EVENTS_A, msg.to_json(), msg.event_id)
        uplink.kick()
        assert uplink.wait_drained(10), f"outbox depth {outbox.depth()}"
        time.sleep(2.0)  # four receipt timeouts: nothing may be sent again
        assert not uplink.receipts_on
        assert uplink.resent == 0
        assert len(got) == 50
    finally:
        uplink.stop()
        outbox.close()
        old_bridge.disconnect()
        old_bridge.loop_stop()


def test_old_sensor_with_the_new_bridge_still_delivers(mosquitto: Any, tmp_path: Path) -> None:
    """receipts = "off" behaves as a sensor from before receipts: it never subscribes to them."""
    store = BridgeStore(tmp_path / "bridge.db", data_key=bytes.fromhex(DATA_KEY))
    ingest = Ingest(
        BridgeMqttSettings(host=mosquitto.host, port=mosquitto.port), store, lambda _e: None
    )
    ingest.start()
    assert ingest.connected.wait(10)
    time.sleep(0.3)
    outbox, uplink = _uplink(mosquitto, tmp_path / "outbox.db", receipts="off")
    try:
        for i in range(50):
            msg = event("01d5e750", i, time.time())
            outbox.add(EVENTS_A, msg.to_json(), msg.event_id)
        uplink.kick()
        assert uplink.wait_drained(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ingest.counters.events < 50:
            time.sleep(0.1)
        assert ingest.counters.events == 50
        assert uplink.receipts_received == 0 and not uplink.receipts_on
        assert ingest.counters.receipts >= 1  # sent, and dropped by the broker: nobody reads them
    finally:
        uplink.stop()
        outbox.close()
        ingest.stop()
        store.close()


def test_dead_lettered_event_is_receipted_and_dropped_with_the_reason(
    mosquitto: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BridgeStore(tmp_path / "bridge.db", data_key=bytes.fromhex(DATA_KEY))
    ingest = Ingest(
        BridgeMqttSettings(host=mosquitto.host, port=mosquitto.port), store, lambda _e: None
    )
    ingest.start()
    assert ingest.connected.wait(10)
    time.sleep(0.3)
    outbox, uplink = _uplink(mosquitto, tmp_path / "outbox.db", receipt_timeout_s=0.5)
    try:
        good = event("dead0001", 1, time.time())
        bad = json.loads(event("dead0001", 2, time.time()).to_json())
        bad["subject"] = "aa:bb:cc:dd:ee:ff"  # a MAC is never a subject: refused by the bridge
        outbox.add(EVENTS_A, good.to_json(), good.event_id)
        outbox.add(EVENTS_A, json.dumps(bad), bad["event_id"])
        uplink.kick()
        assert uplink.wait_drained(10), f"outbox depth {outbox.depth()}"
        assert uplink.dead == 1 and ingest.counters.dead_letters == 1
        assert ingest.counters.events == 1
        assert f"the bridge refused event {bad['event_id']}: invalid events message" in caplog.text
        assert "aa:bb:cc:dd:ee:ff" not in caplog.text  # the reason never echoes the value
    finally:
        uplink.stop()
        outbox.close()
        ingest.stop()
        store.close()
