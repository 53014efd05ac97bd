"""Real Mosquitto brokers and MQTT v5 clients for integration tests; failures fail the test.

The broker itself is ``cloud_bridge.mosquitto.LocalMosquitto`` (the demo uses the same
launcher), so tests exercise the code users run. This module adds what tests need on
top: a missing binary or a broker that does not start *fails* the test (never skips)
with the reason and the tail of Mosquitto's log, ``kill()`` for crash tests, and a
small paho-mqtt v2 client helper that waits for CONNACK and collects messages.

Running as root (CI): Mosquitto 2.0.11 started as root drops privileges to the
``mosquitto`` user unless the config names another ``user``. It still listens, but
that user can write neither the log file nor the persistence database in the
root-owned tmp directory, so there is no log and retained messages die with a
restart. The launcher therefore writes ``user <current user>`` (``user root``) when
euid is 0; Mosquitto then only logs a warning.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from cloud_bridge.mosquitto import BrokerError, LocalMosquitto

__all__ = ["Broker", "Messages", "connect", "disconnect", "start_broker"]

CONNECT_TIMEOUT_S = 10.0


class Broker(LocalMosquitto):
    """A private Mosquitto on a free loopback port.

    Attributes: ``host``, ``port``, ``config_path``, ``log_path``, ``workdir``
    (persistence lives there), ``binary``. Methods: ``start()``, ``stop()``
    (SIGTERM: Mosquitto saves its database), ``restart()`` (same port, same
    persistence), ``kill()`` (SIGKILL: nothing saved, like a power cut), ``log_tail()``.
    """

    def start(self, timeout: float = 10.0) -> None:
        try:
            super().start(timeout)
        except BrokerError as exc:
            pytest.fail(
                f"Mosquitto did not start ({self.binary} -c {self.config_path}): {exc}",
                pytrace=False,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def start_broker(workdir: Path, extra_config: str = "") -> Broker:
    """Create and start a broker in ``workdir``; fails the running test if it cannot."""
    try:
        broker = Broker(workdir, extra_config=extra_config)
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    broker.start()
    return broker


class Messages:
    """Thread-safe inbox for a client's ``on_message``."""

    def __init__(self) -> None:
        self._q: queue.Queue[mqtt.MQTTMessage] = queue.Queue()

    def __call__(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._q.put(msg)

    def get(self, timeout: float = 10.0) -> mqtt.MQTTMessage:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no MQTT message within {timeout:.0f} s", pytrace=False)

    def empty(self) -> bool:
        return self._q.empty()


def connect(
    broker: LocalMosquitto,
    client_id: str,
    *,
    clean_start: bool = True,
    properties: mqtt.Properties | None = None,
    messages: Messages | None = None,
) -> mqtt.Client:
    """An MQTT v5 client connected to ``broker`` with its network loop running.

    Call ``client.loop_stop(); client.disconnect()`` when done (or use ``disconnect()``).
    """
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    connected = threading.Event()
    result: list[Any] = []

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.append(reason)
        connected.set()

    client.on_connect = on_connect
    if messages is not None:
        client.on_message = messages
    client.connect(broker.host, broker.port, clean_start=clean_start, properties=properties)
    client.loop_start()
    if not connected.wait(CONNECT_TIMEOUT_S):
        client.loop_stop()
        pytest.fail(
            f"no CONNACK from {broker.host}:{broker.port} within "
            f"{CONNECT_TIMEOUT_S:.0f} s. {broker.log_tail()}",
            pytrace=False,
        )
    if result[0].is_failure:
        client.loop_stop()
        pytest.fail(f"broker refused {client_id!r}: {result[0]}", pytrace=False)
    return client


def disconnect(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()
