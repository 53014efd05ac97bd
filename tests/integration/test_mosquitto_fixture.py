"""The ``mosquitto`` fixture runs a real broker: QoS 1 round trip, persistence across restart."""

from __future__ import annotations

import socket
import uuid

import paho.mqtt.client as mqtt
import pytest

import cloud_bridge.dev.mosquitto as launcher

from .brokers import Broker, Messages, connect, disconnect, start_broker

STATUS = "passby/v1/main-st/door-1/status"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def test_fixture_runs_a_private_broker_on_loopback(mosquitto: Broker) -> None:
    assert mosquitto.host == "127.0.0.1"
    assert mosquitto.running and _port_open(mosquitto.host, mosquitto.port)
    config = mosquitto.config_path.read_text()
    assert f"listener {mosquitto.port} 127.0.0.1" in config
    assert "persistence true" in config and str(mosquitto.workdir) in config
    assert mosquitto.log_path.is_file(), "Mosquitto could not write its log (privilege drop?)"
    assert "running" in mosquitto.log_path.read_text()


def test_qos1_publish_subscribe_round_trip(mosquitto: Broker) -> None:
    inbox = Messages()
    sub = connect(mosquitto, "test-sub", messages=inbox)
    pub = connect(mosquitto, "test-pub")
    try:
        _, mid = sub.subscribe("passby/v1/+/+/events", qos=1)
        assert mid is not None
        _wait_suback(sub)
        payload = b'{"schema": 1, "type": "arrive"}'
        info = pub.publish("passby/v1/main-st/door-1/events", payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()  # PUBACK received
        msg = inbox.get()
        assert (msg.topic, msg.payload, msg.qos) == ("passby/v1/main-st/door-1/events", payload, 1)
    finally:
        disconnect(sub)
        disconnect(pub)


def test_retained_message_survives_restart(mosquitto: Broker) -> None:
    pub = connect(mosquitto, "sensor-door-1")
    info = pub.publish(STATUS, b"online", qos=1, retain=True)
    info.wait_for_publish(timeout=10)
    assert info.is_published()
    disconnect(pub)
    port = mosquitto.port

    mosquitto.restart()

    assert mosquitto.port == port and mosquitto.running
    assert (mosquitto.workdir / "mosquitto.db").is_file()
    inbox = Messages()
    sub = connect(mosquitto, "bridge", messages=inbox)
    try:
        sub.subscribe(STATUS, qos=1)
        msg = inbox.get()
        assert (msg.topic, msg.payload, msg.retain) == (STATUS, b"online", True)
    finally:
        disconnect(sub)


def test_persistent_session_keeps_qos1_messages_across_restart(mosquitto: Broker) -> None:
    """A subscriber with a persistent session gets QoS 1 messages published while it was away,
    even though the broker restarted in between (the bridge relies on this)."""
    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    sub = connect(mosquitto, "bridge-worker", clean_start=False, properties=props)
    sub.subscribe("passby/v1/+/+/events", qos=1)
    _wait_suback(sub)
    disconnect(sub)

    pub = connect(mosquitto, "sensor-door-1")
    pub.publish("passby/v1/main-st/door-1/events", b"queued", qos=1).wait_for_publish(10)
    disconnect(pub)
    mosquitto.restart()

    inbox = Messages()
    sub = connect(mosquitto, "bridge-worker", clean_start=False, properties=props, messages=inbox)
    try:
        assert inbox.get().payload == b"queued"
    finally:
        disconnect(sub)


def test_a_broker_that_does_not_start_fails_the_test_with_its_log(tmp_path) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        start_broker(tmp_path / "bad", extra_config="no_such_option on\n")
    assert "Mosquitto did not start" in str(failed.value)
    assert "no_such_option" in str(failed.value)


def test_a_missing_mosquitto_fails_not_skips(tmp_path, monkeypatch) -> None:
    def missing() -> str:
        raise launcher.BrokerError("mosquitto is not installed: apt-get install mosquitto")

    monkeypatch.setattr(launcher, "find_mosquitto", missing)
    with pytest.raises(pytest.fail.Exception) as failed:
        start_broker(tmp_path / "none")
    assert "not installed" in str(failed.value)


def test_each_test_gets_its_own_broker(mosquitto: Broker, mosquitto_factory) -> None:
    other = mosquitto_factory(name=f"other-{uuid.uuid4().hex[:6]}")
    assert other.port != mosquitto.port and other.workdir != mosquitto.workdir
    other.kill()
    assert not other.running and mosquitto.running


def _wait_suback(client: mqtt.Client) -> None:
    """Its PUBACK comes after the broker processed our SUBSCRIBE (one connection, in order)."""
    client.publish("passby/v1/_sync", b"", qos=1).wait_for_publish(10)
