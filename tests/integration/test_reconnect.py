"""The uplink's reconnect backoff is capped: a sensor is back within 15 s of the broker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_agent.adapters.outbox import Outbox
from edge_agent.adapters.uplink import Uplink
from edge_agent.config import MqttSettings

from .brokers import Broker

pytestmark = pytest.mark.integration

OUTAGE_S = 30.0  # long enough for the backoff to reach its cap (1, 2, 4, 8, 10 s ...)


def test_backoff_never_exceeds_15_s_with_the_default_settings(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    try:
        uplink = Uplink(MqttSettings(port=1), "s1", "d1", outbox)
        delays = [uplink._next_delay() for _ in range(40)]
        assert max(delays) <= 15.0, f"backoff grew to {max(delays):.1f} s"
        assert max(delays) > 2.0  # it does back off
    finally:
        outbox.close()


def test_sensor_back_within_15_s_of_the_broker_returning(mosquitto: Broker, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    uplink = Uplink(MqttSettings(host=mosquitto.host, port=mosquitto.port), "s1", "d1", outbox)
    try:
        uplink.start()
        assert uplink.wait_connected(10)
        mosquitto.stop()
        deadline = time.monotonic() + 5
        while uplink._connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not uplink._connected.is_set(), "the uplink did not notice the broker left"
        time.sleep(OUTAGE_S)
        mosquitto.start()
        back = time.monotonic()
        assert uplink.wait_connected(20), "not reconnected within 20 s"
        took = time.monotonic() - back
        assert took <= 15.0, f"reconnected {took:.1f} s after the broker returned"
        print(f"reconnected {took:.1f} s after the broker returned ({OUTAGE_S:g} s outage)")
    finally:
        uplink.stop()
        outbox.close()
