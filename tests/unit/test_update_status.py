"""A failed box update reaches the console: passby_update.py's status file -> the agent's stats
(``update_failed``) -> the bridge's ingest -> a fleet alert; a successful update clears it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from console_helpers import add_sensor_state

from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.ingest.fleet import sensor_health
from cloud_bridge.storage.fleet import sensor_rows
from cloud_bridge.storage.store import BridgeStore
from edge_agent.adapters.update_status import MAX_LEN, failed_update
from edge_agent.protocol import StatsMessage


def test_failed_update_text_from_the_status_file(tmp_path: Path) -> None:
    f = tmp_path / "update-status.json"
    assert failed_update(f) is None  # no update yet
    f.write_text("{not json")
    assert failed_update(f) is None
    f.write_text(json.dumps({"result": "ok", "version": "1.2.1", "current": "1.2.1"}))
    assert failed_update(f) is None
    f.write_text(json.dumps({"result": "failed", "version": "1.2.0", "current": "1.1.0",
                             "error": "passby-agent.service did not become active with 1.2.0; "
                             "rolled back to 1.1.0"}))  # fmt: skip
    assert failed_update(f) == (
        "1.2.0: passby-agent.service did not become active with 1.2.0; rolled back to 1.1.0"
    )
    f.write_text(json.dumps({"result": "failed", "version": "1.2.0", "error": "x" * 1000}))
    text = failed_update(f)
    assert text is not None and len(text) == MAX_LEN and text.endswith("...")


def test_a_failed_update_in_the_stats_is_a_fleet_alert(tmp_path: Path) -> None:
    status = tmp_path / "update-status.json"
    status.write_text(json.dumps({"result": "failed", "version": "1.2.0",
                                  "error": "rolled back to 1.1.0"}))  # fmt: skip
    store = BridgeStore(tmp_path / "bridge.db")
    try:
        now = time.time()
        add_sensor_state(store, "main-st", "door-1", now)
        stats = StatsMessage(
            ts=now, uptime_s=5, agent_version="1.1.0", frames=1, frames_per_s=1.0,
            client_frames=1, matched=0, malformed=0, outbox_depth=0, dropped=0,
            roster_version=1, update_failed=failed_update(status),
        ).to_json()  # fmt: skip
        kind = handle_message(
            store, "passby/v1/main-st/door-1/stats", stats.encode(), now, IngestCounters()
        )
        assert kind != "dead_letter", kind
        row = [r for r in sensor_rows(store) if r["sensor_id"] == "door-1"][0]
        alerts = sensor_health(row, [], None, now).alerts
        assert [(a.kind, a.detail) for a in alerts] == [
            ("update_failed", "1.2.0: rolled back to 1.1.0")
        ]
        # The next update works: the stats carry nothing and the alert is gone.
        status.write_text(json.dumps({"result": "ok", "version": "1.2.1"}))
        ok = json.loads(stats) | {"update_failed": failed_update(status), "ts": now + 60}
        handle_message(
            store, "passby/v1/main-st/door-1/stats", json.dumps(ok).encode(), now + 60,
            IngestCounters(),
        )  # fmt: skip
        row = [r for r in sensor_rows(store) if r["sensor_id"] == "door-1"][0]
        assert list(sensor_health(row, [], None, now + 60).alerts) == []
    finally:
        store.close()
