"""Event time against the bridge's clock: events dated ahead of it by more than the allowed
skew are dead-lettered with the reason (never decided, never sent); the offer's expiry comes
from the bridge's clock; a sensor's clock offset is kept per sensor and raises a fleet alert
when it is beyond the skew."""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from console_helpers import add_sensor_state, make_world

from cloud_bridge.config import BridgeSettings
from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.ingest.fleet import sensor_health
from cloud_bridge.offers.worker import DecisionWorker, policy_from_settings
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.events import dead_letter_rows, event_count
from cloud_bridge.storage.fleet import sensor_rows
from cloud_bridge.storage.sends import sandbox_rows, send_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed
from edge_agent.roster import subject_id

TENANT = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
TOPIC = "passby/v1/main-st/door-1/events"
STATS = "passby/v1/main-st/door-1/stats"
DAY = 86400.0


@pytest.fixture()
def bridge(tmp_path: Path, db_location):
    store = BridgeStore(db_location)
    keys = BridgeKeys(tmp_path)
    seed(store, keys, load_tenant(TENANT), time.time())
    yield store, keys
    store.close()


def event_text(keys: BridgeKeys, ts: Any, first: Any = None, last: Any = None) -> bytes:
    """An arrive event of Anna (consents active, the demo campaign applies) as JSON text;
    non-finite floats are written the way Python's json writes them (NaN, Infinity)."""
    first = ts - 10 if first is None else first
    last = ts if last is None else last
    return json.dumps(
        {
            "schema": "passby.event/1",
            "event_id": uuid.uuid4().hex,
            "type": "arrive",
            "subject": subject_id(keys.subject_key, "C-1001"),
            "ts": ts,
            "first_seen": first,
            "last_seen": last,
            "rssi": {"max": -58, "median": -64},
            "frames": 9,
            "dwell_s": 0,
        }
    ).encode()


def outcome(store: BridgeStore) -> tuple[int, list[str], int]:
    """(events stored, decision reasons, SMS handed to the sandbox) after the worker ran."""
    DecisionWorker(store, SandboxProvider(store)).process_pending()
    events = event_count(store)
    reasons = [r["reason"] for r in decision_rows(store)]
    sms = len(sandbox_rows(store))
    return events, reasons, sms


@pytest.mark.parametrize(
    ("shift", "field", "words"),
    [
        (2 * DAY, "ts", "ts is 2.0 days ahead of the bridge's clock"),
        (600.0, "ts", "ts is 600 s ahead of the bridge's clock"),
        (121.0, "last_seen", "last_seen is 121 s ahead of the bridge's clock"),
        (3600.0, "first_seen", "first_seen is 1.0 h ahead of the bridge's clock"),
    ],
)
def test_future_event_is_dead_lettered_with_the_reason(
    bridge, shift: float, field: str, words: str
) -> None:
    store, keys = bridge
    now = time.time()
    times = {"ts": now, "first": now - 10, "last": now}
    if field == "ts":
        times = {"ts": now + shift, "first": now - 10, "last": now + shift}
    elif field == "last_seen":
        times["last"] = now + shift
    else:
        times = {"ts": now, "first": now + shift, "last": now + shift}
    payload = event_text(keys, times["ts"], times["first"], times["last"])
    c = IngestCounters()
    assert handle_message(store, TOPIC, payload, now, c) == "dead"
    [dead] = dead_letter_rows(store)
    assert dead["topic"] == TOPIC
    assert words in dead["reason"], dead["reason"]
    assert "at most 120 s" in dead["reason"] and "sensor's clock" in dead["reason"]
    assert outcome(store) == (0, [], 0)  # nothing stored, decided or sent
    assert c.dead_letters == 1 and c.events == 0


@pytest.mark.parametrize(
    ("ts", "words"),
    [
        (1e12, "ts is 31,6"),  # 1e12 s is some 31,688 years ahead
        (math.inf, "ts is not a finite time (inf)"),
        (math.nan, "ts is not a finite time (nan)"),
        (-1.0, "ts is not a time (-1.0: epoch seconds must be > 0)"),
    ],
)
def test_absurd_event_times_are_refused_with_a_clear_reason(bridge, ts: float, words: str) -> None:
    store, keys = bridge
    now = time.time()
    last = ts if math.isfinite(ts) and ts > 0 else now
    payload = event_text(keys, ts, first=now - 10, last=last)
    assert handle_message(store, TOPIC, payload, now, IngestCounters()) == "dead"
    [dead] = dead_letter_rows(store)
    assert words in dead["reason"], dead["reason"]
    assert outcome(store) == (0, [], 0)


def test_skew_is_a_setting(bridge) -> None:
    """The same event, 100 s ahead: refused with a skew of 60 s, accepted with the default."""
    store, keys = bridge
    now = time.time()
    narrow = IngestCounters(max_skew_s=60)
    assert handle_message(store, TOPIC, event_text(keys, now + 100), now, narrow) == "dead"
    assert "at most 60 s" in dead_letter_rows(store)[0]["reason"]
    assert (
        handle_message(store, TOPIC, event_text(keys, now + 100), now, IngestCounters()) == "event"
    )
    settings = BridgeSettings(policy={"max_clock_skew_s": 60})
    assert policy_from_settings(settings.policy).max_clock_skew_s == 60
    assert BridgeSettings().policy.max_clock_skew_s == 120


def test_event_slightly_ahead_is_sent_and_expires_by_the_bridge_clock(bridge) -> None:
    """A sensor 60 s ahead (within the skew): the event is fresh, Anna gets her SMS, and the
    offer expires offer_ttl_s after the bridge RECEIVED it, not 60 s later than that."""
    store, keys = bridge
    received = time.time()
    payload = event_text(keys, received + 60)
    assert handle_message(store, TOPIC, payload, received, IngestCounters()) == "event"
    assert outcome(store) == (1, ["sent"], 1)
    [send] = send_rows(store)
    assert send["expires_at"] == pytest.approx(received + 600, abs=1e-3)


def test_late_event_expires_from_when_the_customer_was_seen(bridge) -> None:
    """The bridge's clock bounds the expiry; an event's earlier time can only shorten it
    (an event that spent 8 min in an outbox leaves 2 min of a 10 min offer)."""
    store, keys = bridge
    received = time.time()
    payload = event_text(keys, received - 480)
    assert handle_message(store, TOPIC, payload, received, IngestCounters()) == "event"
    assert outcome(store) == (1, ["sent"], 1)
    [send] = send_rows(store)
    assert send["expires_at"] == pytest.approx(received - 480 + 600, abs=1e-3)


def test_future_event_stored_before_the_check_is_not_sent(bridge) -> None:
    """An event stored by an older bridge (or another path) dated 2 days ahead is skipped by
    the decision with its own reason, not sent with an expiry 2 days away."""
    store, keys = bridge
    now = time.time()
    eid = uuid.uuid4().hex
    subject = subject_id(keys.subject_key, "C-1001")
    text = event_text(keys, now + 2 * DAY).decode()
    store.insert_event(eid, "main-st", "door-1", "arrive", subject, now + 2 * DAY, text, now)
    assert outcome(store) == (1, ["future_event"], 0)
    [d] = decision_rows(store)
    assert "2.0 days ahead of the bridge's clock" in d["detail"]


# -- the pure engine --------------------------------------------------------------------------


# -- the sensor's clock in the fleet ----------------------------------------------------------


def stats_text(ts: float) -> bytes:
    return json.dumps(
        {
            "ts": ts, "uptime_s": 100.0, "agent_version": "0.1.0", "frames": 10,
            "frames_per_s": 2.0, "client_frames": 5, "matched": 0, "malformed": 0,
            "outbox_depth": 0, "dropped": 0, "roster_version": 1,
        }
    ).encode()  # fmt: skip


def test_sensor_clock_offset_is_kept_and_alerts_beyond_the_skew(bridge) -> None:
    store, _ = bridge
    now = time.time()
    c = IngestCounters()
    assert handle_message(store, STATS, stats_text(now + 300), now, c) == "stats"
    [row] = [r for r in sensor_rows(store) if r["sensor_id"] == "door-1"]
    assert json.loads(row["last_stats"])["clock_offset_s"] == pytest.approx(300.0, abs=1e-3)
    health = sensor_health(row, [], None, now + 1)
    assert [a.kind for a in health.alerts] == ["clock_skew"]
    [alert] = health.alerts
    assert "300 s ahead" in alert.detail and "timedatectl" in alert.fix
    assert health.to_json()["clock_offset_s"] == pytest.approx(300.0, abs=1e-3)
    # behind counts too (its events go stale), and a wider skew setting silences it
    assert handle_message(store, STATS, stats_text(now - 200), now + 60, c) == "stats"
    [row] = [r for r in sensor_rows(store) if r["sensor_id"] == "door-1"]
    health = sensor_health(row, [], None, now + 61)
    assert [a.detail for a in health.alerts] == ["260 s behind the bridge's clock"]
    assert sensor_health(row, [], None, now + 61, max_skew_s=300).alerts == ()
    # a sensor whose clock is right: no alert
    assert handle_message(store, STATS, stats_text(now + 121), now + 120, c) == "stats"
    [row] = [r for r in sensor_rows(store) if r["sensor_id"] == "door-1"]
    assert sensor_health(row, [], None, now + 121).alerts == ()


def test_sensor_clock_on_fleet_pages_and_metrics(tmp_path: Path, db_location) -> None:
    w = make_world(tmp_path, db_location)
    now = time.time()
    add_sensor_state(w.store, "main-st", "door-1", now, clock_offset_s=-305.0)
    add_sensor_state(w.store, "main-st", "door-2", now, clock_offset_s=1.5)
    admin = w.client("ada")
    api = admin.get("/api/v1/fleet").json()
    by_id = {s["sensor_id"]: s for s in api["sensors"]}
    assert by_id["door-1"]["clock_offset_s"] == -305.0
    assert [a["kind"] for a in by_id["door-1"]["alerts"]] == ["clock_skew"]
    assert by_id["door-2"]["alerts"] == [] and by_id["door-2"]["clock_offset_s"] == 1.5
    page = admin.get("/fleet").text
    assert "clock_skew" in page and "−5.1 min" in page and "+1.5 s" in page
    sensor = admin.get("/fleet/main-st/door-1").text
    assert "5.1 min behind the bridge" in sensor and "timedatectl" in sensor
    auth = {"Authorization": f"Bearer {w.token('ada')}"}
    text = w.client().get("/metrics", headers=auth).text
    assert 'passby_sensor_clock_offset_seconds{sensor="door-1",store="main-st"} -305.0' in text
    assert 'passby_sensor_clock_offset_seconds{sensor="door-2",store="main-st"} 1.5' in text
