"""Outbox: durable, ordered, bounded with a visible drop counter, survives reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.adapters.outbox import Outbox


def test_add_pending_ack_roundtrip(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ids = [ob.add("t/events", f'{{"n":{i}}}', f"e{i}") for i in range(5)]
    assert ob.depth() == 5
    assert [i.id for i in ob.pending()] == ids
    ob.ack(ids[0])
    ob.ack(ids[0])  # a second PUBACK for the same row is harmless
    assert ob.depth() == 4
    assert [i.event_id for i in ob.pending(after_id=ids[2])] == ["e3", "e4"]


def test_survives_reopen(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.add("t", "a", "e1")
    ob.add("t", "b", "e2")
    ob.ack(ob.pending()[0].id)
    ob.close()
    again = Outbox(tmp_path / "o.db")
    assert again.depth() == 1
    assert [i.payload for i in again.pending()] == ["b"]


def test_duplicate_event_id_stored_once(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    a = ob.add("t", "x", "same")
    b = ob.add("t", "x", "same")
    assert a == b and ob.depth() == 1


def test_bounded_drops_oldest_and_counts(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", limit=3)
    for i in range(5):
        ob.add("t", str(i), f"e{i}")
    assert ob.depth() == 3
    assert [i.payload for i in ob.pending()] == ["2", "3", "4"]
    assert ob.dropped == 2
    ob.close()
    assert Outbox(tmp_path / "o.db", limit=3).dropped == 2


def test_byte_bound(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", limit=1000, max_bytes=2048)
    for i in range(5):
        ob.add("t", "x" * 800, f"e{i}")
    assert ob.depth() == 2 and ob.dropped == 3


def test_rejects_silly_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Outbox(tmp_path / "o.db", limit=0)


def test_ids_never_reused_after_ack(tmp_path: Path) -> None:
    """The uplink sends rows with id > its cursor; a reused id would never be sent."""
    ob = Outbox(tmp_path / "o.db")
    first = ob.add("t", "a", "e1")
    ob.ack(first)
    second = ob.add("t", "b", "e2")
    assert second > first
    ob.close()
    assert Outbox(tmp_path / "o.db").add("t", "c", "e3") > second
