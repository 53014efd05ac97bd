"""The console's /metrics on a SQLite store (tests/db/test_console_metrics.py: the alert figures on
both engines)."""

from __future__ import annotations

import time
from pathlib import Path

from console_helpers import add_sensor_state, make_world


def test_metrics(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    now = time.time()
    add_sensor_state(w.store, "main-st", "door-1", now, outbox_depth=7)
    w.store.insert_event("a" * 32, "main-st", "door-1", "arrive", "0" * 16, now, "{}", now)
    w.store.record_decision("a" * 32, None, None, "main-st", "skip", "unknown_subject", "-", now)
    assert w.client("olga").get("/metrics").status_code == 403
    auth = {"Authorization": f"Bearer {w.token('ada')}"}
    r = w.client().get("/metrics", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'passby_events_total{type="arrive"} 1.0' in text
    assert 'passby_decisions_total{outcome="skip",reason="unknown_subject"} 1.0' in text
    assert 'passby_queue_depth{queue="events"} 1.0' in text
    assert 'passby_queue_depth{queue="sensor_outboxes"} 7.0' in text
    assert 'passby_sensors{state="online"} 1.0' in text
