"""The shipped Mosquitto configuration, for real: TLS, no anonymous access, per-sensor ACL.

One broker for the module runs ``deploy/mosquitto/passby.conf.example`` on a loopback port with
a test CA made by the fixture; its password and ACL files are written by provisioning
(``cloud-bridge sensors add``), exactly as in a deployment.
"""

from __future__ import annotations

import logging
import queue
import ssl
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
from cloud_bridge.ingest.consumer import SUBSCRIPTIONS
from cloud_bridge.sensors.provisioning import add_sensor, redeem, revoke_sensor
from cloud_bridge.storage.store import BridgeStore
from edge_agent.adapters.outbox import Outbox
from edge_agent.adapters.uplink import Uplink, make_client
from edge_agent.config import MqttSettings
from edge_agent.protocol import topic

from .brokers import SecureBroker, start_secure_broker

pytestmark = pytest.mark.integration

BRIDGE_PASSWORD = "bridge-" + uuid.uuid4().hex
QUIET_S = 1.0  # how long "never arrives" is watched; the positive control arrives in ms


@dataclass
class Deployment:
    broker: SecureBroker
    store: BridgeStore
    settings: BridgeSettings
    passwords: dict[str, str]  # broker user -> password (as the sensors got them at pairing)

    def mqtt(self, user: str | None, password: str | None, ca: Path | None) -> MqttSettings:
        return MqttSettings(
            host=self.broker.host,
            port=self.broker.port,
            tls=True,
            ca_file=ca,
            username=user,
            password=password,
            reconnect_max_s=2,
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("secure")
    broker_dir = tmp / "mosquitto"
    broker_dir.mkdir()
    settings = BridgeSettings(
        data_dir=tmp / "bridge",
        data_key="cd" * 32,
        mqtt=BridgeMqttSettings(username="bridge", password=BRIDGE_PASSWORD),
        provisioning=ProvisioningSettings(
            password_file=broker_dir / "passby.passwd",
            acl_file=broker_dir / "passby.acl",
            broker_pid_file=broker_dir / "mosquitto.pid",
        ),
    )
    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    store.upsert_store(
        {
            "id": "main-st",
            "name": "Main St",
            "timezone": "UTC",
            "country": "RU",
            "sender_name": "Shop",
            "site_key": "00" * 16,
        }
    )
    passwords = {"bridge": BRIDGE_PASSWORD}
    for sensor in ("door-1", "door-2"):
        done = add_sensor(store, settings, "main-st", sensor)
        cfg = redeem(store, settings, done.code)
        passwords[cfg.mqtt.username] = cfg.mqtt.password
    assert settings.provisioning.password_file is not None
    assert settings.provisioning.acl_file is not None
    broker = start_secure_broker(
        broker_dir, settings.provisioning.password_file, settings.provisioning.acl_file
    )
    try:
        yield Deployment(broker, store, settings, passwords)
    finally:
        broker.stop()
        store.close()


# -- a small paho v5 client that reports instead of failing ----------------------------------


class Client:
    def __init__(self, d: Deployment, user: str | None, ca: Path | None = None, **kw: Any) -> None:
        password = kw.pop("password", d.passwords.get(user or "", None))
        ca = ca if ca is not None else d.broker.pki.ca_file
        self.settings = d.mqtt(user, password, ca if ca != Path("-") else None)
        self.c = make_client(self.settings, f"test-{user}-{uuid.uuid4().hex[:6]}")
        self.connack: Any = None
        self.connected = threading.Event()
        self.inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.pubacks: dict[int, Any] = {}
        self._puback = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.inbox.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_publish = self._on_publish

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        with self._puback:
            self.pubacks[mid] = reason
            self._puback.notify_all()

    def connect(self) -> Any:
        """CONNACK reason code (raises ssl errors from the TLS handshake)."""
        self.c.connect(self.settings.host, self.settings.port, keepalive=10)
        self.c.loop_start()
        assert self.connected.wait(10), "no CONNACK within 10 s"
        return self.connack

    def subscribe(self, filter_: str) -> list[Any]:
        self.c.subscribe(filter_, qos=1)
        return self.subacks.get(timeout=10)

    def publish(self, topic_: str, payload: bytes) -> Any:
        """The PUBACK reason code."""
        info = self.c.publish(topic_, payload, qos=1)
        with self._puback:
            assert self._puback.wait_for(lambda: info.mid in self.pubacks, timeout=10)
            return self.pubacks[info.mid]

    def got(self, payload: bytes, within: float) -> bool:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.inbox.get(timeout=left).payload == payload:
                    return True
            except queue.Empty:
                return False
        return False

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture()
def clients(deployment: Deployment) -> Iterator[Any]:
    made: list[Client] = []

    def make(user: str | None, **kw: Any) -> Client:
        client = Client(deployment, user, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _connected(make: Any, user: str) -> Client:
    client = make(user)
    reason = client.connect()
    assert not reason.is_failure, f"{user}: {reason}"
    return client


A, B = "main-st.door-1", "main-st.door-2"
A_EVENTS = topic("main-st", "door-1", "events")
B_EVENTS = topic("main-st", "door-2", "events")


# -- authentication -------------------------------------------------------------------------


def test_anonymous_refused(clients: Any) -> None:
    reason = clients(None).connect()
    assert reason.is_failure and str(reason) == "Not authorized"


def test_wrong_password_refused_and_logged(
    deployment: Deployment, clients: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    wrong = clients(A, password="not-" + deployment.passwords[A])
    assert str(wrong.connect()) == "Not authorized"
    # The agent's uplink logs the CONNACK reason and keeps it for the operator.
    settings = deployment.mqtt(A, "wrong", deployment.broker.pki.ca_file)
    outbox = Outbox(tmp_path / "outbox.db")
    uplink = Uplink(settings, "main-st", "door-1", outbox)
    with caplog.at_level(logging.ERROR, logger="edge_agent.adapters.uplink"):
        uplink.start()
        deadline = time.monotonic() + 10
        while uplink.last_connect_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        uplink.stop()
    outbox.close()
    assert uplink.last_connect_error == "Not authorized"
    assert "broker refused the connection: Not authorized" in caplog.text


# -- TLS ------------------------------------------------------------------------------------


def test_tls_works_with_the_ca(clients: Any) -> None:
    client = _connected(clients, A)
    sock = client.c.socket()
    assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("ca", ["system CAs", "another CA"])
def test_tls_fails_without_the_ca(deployment: Deployment, ca: str) -> None:
    ca_file = Path("-") if ca == "system CAs" else deployment.broker.pki.other_ca_file
    client = Client(deployment, A, ca=ca_file)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        client.connect()


def test_plain_mqtt_on_the_tls_port_gets_nowhere(deployment: Deployment) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(A, deployment.passwords[A])
    connacks: list[Any] = []
    c.on_connect = lambda *args: connacks.append(args[3])
    try:
        c.connect(deployment.broker.host, deployment.broker.port, keepalive=5)
        for _ in range(20):
            c.loop(timeout=0.1)
    except (OSError, ValueError):
        pass
    finally:
        c.disconnect()
    assert not connacks


# -- authorisation --------------------------------------------------------------------------


def test_sensor_cannot_publish_into_another_sensors_subtree(clients: Any) -> None:
    bridge = _connected(clients, "bridge")
    assert [str(r) for r in bridge.subscribe("passby/v1/#")] == ["Granted QoS 1"]
    a = _connected(clients, A)
    for leaf in ("events", "status", "stats", "reply/ping", "cmd/ping"):
        forged = f"forged {leaf} {uuid.uuid4().hex}".encode()
        assert str(a.publish(topic("main-st", "door-2", leaf), forged)) == "Not authorized"
        assert not bridge.got(forged, within=QUIET_S / 5)
    # nor commands to itself, nor anything outside passby/v1/{store}/{sensor}/
    for other in (topic("main-st", "door-1", "cmd/ping"), "passby/v1/main-st/door-1x/events"):
        assert str(a.publish(other, b"x")) == "Not authorized"
    own = f"own {uuid.uuid4().hex}".encode()  # control: its own subtree works
    assert not a.publish(A_EVENTS, own).is_failure
    assert bridge.got(own, within=5)
    assert not bridge.got(b"x", within=QUIET_S)


def test_sensor_cannot_read_another_sensors_commands(clients: Any) -> None:
    a, b = _connected(clients, A), _connected(clients, B)
    # Mosquitto 2.0 grants the SUBACK and filters at delivery: what counts is what arrives.
    a.subscribe(topic("main-st", "door-2", "cmd/#"))
    a.subscribe("passby/v1/#")
    b.subscribe(topic("main-st", "door-2", "cmd/#"))
    bridge = _connected(clients, "bridge")
    ping = f"ping {uuid.uuid4().hex}".encode()
    assert not bridge.publish(topic("main-st", "door-2", "cmd/ping"), ping).is_failure
    assert b.got(ping, within=5)  # control: B gets its command
    assert not a.got(ping, within=QUIET_S)
    # and A does not see B's events through a wildcard either
    event = f"b event {uuid.uuid4().hex}".encode()
    assert not b.publish(B_EVENTS, event).is_failure
    assert not a.got(event, within=QUIET_S)


def test_bridge_reads_events_by_shared_subscription_and_sends_commands(clients: Any) -> None:
    bridge = _connected(clients, "bridge")
    reasons = []
    for filter_, _qos in SUBSCRIPTIONS:  # the ingest's own subscriptions, $share included
        reasons += bridge.subscribe(filter_)
    assert all(not r.is_failure for r in reasons), reasons
    a = _connected(clients, A)
    a.subscribe(topic("main-st", "door-1", "cmd/#"))
    event = f"event {uuid.uuid4().hex}".encode()
    assert not a.publish(A_EVENTS, event).is_failure
    assert bridge.got(event, within=5)
    command = f"cmd {uuid.uuid4().hex}".encode()
    assert not bridge.publish(topic("main-st", "door-1", "cmd/ping"), command).is_failure
    assert a.got(command, within=5)
    reply = f"reply {uuid.uuid4().hex}".encode()
    bridge.subscribe(topic("main-st", "door-1", "reply/#"))
    assert not a.publish(topic("main-st", "door-1", "reply/ping"), reply).is_failure
    assert bridge.got(reply, within=5)


def test_agent_uplink_over_tls_with_its_credentials(deployment: Deployment, tmp_path: Path) -> None:
    """The edge's own client path: TLS + password + ACL, retained birth allowed, events acked."""
    bridge = Client(deployment, "bridge")
    bridge.connect()
    bridge.subscribe(f"$share/passby-bridge/{topic('main-st', 'door-1', 'events')}")
    bridge.subscribe(topic("main-st", "door-1", "status"))
    outbox = Outbox(tmp_path / "outbox.db")
    uplink = Uplink(deployment.mqtt(A, deployment.passwords[A], deployment.broker.pki.ca_file),
                    "main-st", "door-1", outbox)  # fmt: skip
    payloads = [f'{{"n": {i}, "id": "{uuid.uuid4().hex}"}}' for i in range(20)]
    try:
        for i, p in enumerate(payloads):
            outbox.add(A_EVENTS, p, f"e{i}")
        uplink.start()
        assert uplink.wait_connected(10), uplink.last_connect_error
        assert uplink.wait_drained(10), f"outbox depth {outbox.depth()}"
        assert all(bridge.got(p.encode(), within=5) for p in payloads)
    finally:
        uplink.stop()
        outbox.close()
        bridge.close()


def test_new_sensor_works_after_provisioning_and_stops_after_revoke(
    deployment: Deployment, clients: Any
) -> None:
    d = deployment
    done = add_sensor(d.store, d.settings, "main-st", "door-3")
    assert d.broker.proc is not None and done.broker.reloaded_pid == d.broker.proc.pid
    password = redeem(d.store, d.settings, done.code).mqtt.password
    deadline = time.monotonic() + 10
    while True:  # SIGHUP is asynchronous: the broker re-reads its files a moment later
        reason = clients(done.username, password=password).connect()
        if not reason.is_failure or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not reason.is_failure, reason
    revoke_sensor(d.store, d.settings, "main-st", "door-3")
    deadline = time.monotonic() + 10
    while True:
        reason = clients(done.username, password=password).connect()
        if reason.is_failure or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert str(reason) == "Not authorized"


# -- identities: each account connects only as itself ----------------------------------------


def test_sensor_account_cannot_take_the_bridges_or_another_sensors_session(
    deployment: Deployment,
) -> None:
    """The shipped config ties the client id to the user name: a sensor account connecting
    with the bridge's documented id (or another sensor's) gets its own id, and nobody is
    thrown off."""
    victims = {"bridge": "passby-bridge-1", B: "passby-edge-main-st-door-2"}
    kicked: dict[str, list[Any]] = {user: [] for user in victims}
    made: list[mqtt.Client] = []
    try:
        for user, client_id in victims.items():
            c = make_client(deployment.mqtt(user, deployment.passwords[user],
                                            deployment.broker.pki.ca_file), client_id)  # fmt: skip
            c.on_disconnect = lambda c, u, f, rc, p, user=user: kicked[user].append(rc)
            up = threading.Event()
            c.on_connect = lambda c, u, f, rc, p, up=up: up.set()
            c.connect(deployment.broker.host, deployment.broker.port)
            c.loop_start()
            made.append(c)
            assert up.wait(10), f"{user} could not connect"
        for client_id in victims.values():  # sensor A tries both identities
            thief = make_client(
                deployment.mqtt(A, deployment.passwords[A], deployment.broker.pki.ca_file),
                client_id,
            )
            got: list[Any] = []
            thief.on_connect = lambda c, u, f, rc, p, got=got: got.append(rc)
            thief.connect(deployment.broker.host, deployment.broker.port)
            thief.loop_start()
            made.append(thief)
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
            assert got and not got[0].is_failure  # it gets in, but as itself
        time.sleep(QUIET_S)
        assert kicked == {"bridge": [], B: []}, f"sessions taken over: {kicked}"
    finally:
        for c in made:
            c.disconnect()
            c.loop_stop()
