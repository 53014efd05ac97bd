"""Fixtures for tests against real components; everything here is marked ``integration``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .brokers import Broker, start_broker

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture()
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto on a free loopback port (anonymous, persistent, logging to tmp).

    Yields a ``Broker`` with ``host``, ``port``, ``config_path``, ``log_path``, ``workdir``,
    ``url``, ``running``, ``restart()``, ``stop()``, ``kill()``, ``log_tail()``. Fails the
    test (never skips) when Mosquitto is missing or does not start.
    """
    broker = start_broker(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture()
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start extra brokers, each in its own dir, with optional config lines appended."""
    started: list[Broker] = []

    def make(extra_config: str = "", name: str | None = None) -> Broker:
        broker = start_broker(tmp_path / (name or f"mosquitto-{len(started)}"), extra_config)
        started.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()
