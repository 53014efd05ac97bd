"""The send states' transition table is closed (sending through a store: tests/db/test_deliver.py)."""

from __future__ import annotations

from cloud_bridge.delivery.outbox import FROM


def test_transition_table_is_closed() -> None:
    known = set(FROM) | {"reserved"}
    for target, sources in FROM.items():
        assert set(sources) <= known, target
