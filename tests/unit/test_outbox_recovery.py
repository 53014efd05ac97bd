"""Outbox at start: a corrupt or locked file is moved aside, a fresh one is used, it is counted."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from edge_agent.adapters.outbox import Outbox, OutboxInUse


def _aside(tmp_path: Path, kind: str) -> list[Path]:
    return sorted(
        p for p in tmp_path.glob(f"o.db.{kind}-*") if not p.name.endswith(("-wal", "-shm"))
    )


def test_garbage_file_is_moved_aside_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not an SQLite database, a bad SD card wrote it" * 100)
    with caplog.at_level(logging.ERROR, logger="edge_agent.adapters.outbox"):
        ob = Outbox(path)
    aside = _aside(tmp_path, "corrupt")
    assert len(aside) == 1 and ob.moved_aside == aside[0]
    assert aside[0].read_bytes().startswith(b"this is not")
    assert ob.recovered == 1 and ob.depth() == 0
    assert ob.add("t", "x", "e1") > 0  # the fresh outbox works
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "corrupt" in record.getMessage() and str(aside[0]) in record.getMessage()
    ob.close()
    again = Outbox(path)
    assert again.recovered == 1 and again.depth() == 1 and again.moved_aside is None
    again.close()


def test_damaged_pages_are_detected_and_readable_rows_requeued(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    for i in range(400):
        ob.add("t", f"payload {i:04d} " + "x" * 200, f"e{i}")
    ob.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 10 * page
    data[-3 * page : -page] = b"\xa5" * (2 * page)  # two leaf pages near the end overwritten
    path.write_bytes(bytes(data))
    ob = Outbox(path)
    assert ob.recovered == 1 and len(_aside(tmp_path, "corrupt")) == 1
    assert 0 < ob.depth() < 400  # what was readable before the damage is queued again
    for item in ob.pending(limit=1000):
        assert item.payload.startswith("payload ")
    ob.close()


def test_locked_file_is_moved_aside_and_its_rows_requeued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path, limit=10)
    for i in range(13):
        ob.add("t", str(i), f"e{i}")
    ob.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # e.g. an sqlite3 shell left open in a transaction
    try:
        with caplog.at_level(logging.ERROR, logger="edge_agent.adapters.outbox"):
            fresh = Outbox(path, limit=10, busy_timeout_s=0.3)
        assert len(_aside(tmp_path, "locked")) == 1
        assert fresh.recovered == 1
        assert [i.payload for i in fresh.pending()] == [str(i) for i in range(3, 13)]
        assert fresh.dropped == 3  # the old file's counter carries over
        assert "locked" in caplog.text
        fresh.close()
    finally:
        holder.close()


def test_second_agent_on_the_same_outbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = Outbox(path)
    first.add("t", "x", "e1")
    with pytest.raises(OutboxInUse, match="second edge agent"):
        Outbox(path)
    first.close()
    assert not list(tmp_path.glob("o.db.*-*"))  # nothing was moved aside
    reopened = Outbox(path)
    assert reopened.depth() == 1 and reopened.recovered == 0
    reopened.close()


def test_recovery_keeps_wal_and_shm_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"\x00garbage" * 600)
    Path(str(path) + "-wal").write_bytes(b"w" * 100)
    Path(str(path) + "-shm").write_bytes(b"s" * 100)
    ob = Outbox(path)
    aside = ob.moved_aside
    assert aside is not None
    assert Path(str(aside) + "-wal").read_bytes() == b"w" * 100
    assert Path(str(aside) + "-shm").read_bytes() == b"s" * 100
    ob.close()
