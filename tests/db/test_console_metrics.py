"""Prometheus /metrics: events, decisions by reason, sends by status, queue depths, sensors;
admin only."""

from __future__ import annotations

import time

from console_helpers import add_sensor_state


def _samples(store) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from cloud_bridge.web.console.metrics import StoreCollector

    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_for_the_alerts(db_location) -> None:  # type: ignore[no-untyped-def]
    """What deploy/monitoring's alerts need: each sensor's health, the published roster, the
    provider's errors, the oldest send waiting past its time, the opt-out guard; on SQLite and
    PostgreSQL."""
    from delivery_helpers import STORE_ID, add_customer, new_store, reserve
    from scripted_provider import Scripted, deliverer

    store = new_store(db_location)
    try:
        now = time.time()
        add_sensor_state(store, STORE_ID, "door-1", now, outbox_depth=7, frames_per_s=0.0)
        add_sensor_state(store, STORE_ID, "door-2", now - 3600, roster_version=2)
        store.bump_roster_version(STORE_ID)
        store.bump_roster_version(STORE_ID)
        store.bump_roster_version(STORE_ID)
        # Provider: one retry then accepted, one refusal; one send stuck since 10 minutes ago.
        c1, c2, c3 = (add_customer(store, i, now) for i in (1, 2, 3))
        d = deliverer(store, Scripted(["retry", "accepted", "invalid"]))
        s1 = reserve(store, c1, now)
        assert d.deliver(s1).status == "retry"
        d.pump(now + 1)
        assert d.deliver(reserve(store, c2, now)).status == "failed"
        reserve(store, c3, now - 600)
        assert store.pause_for_guard("fav-15", "3 opt-outs of 100", now)
        m = _samples(store)
    finally:
        store.close()

    def one(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    s1_, s2_ = {"store": STORE_ID, "sensor": "door-1"}, {"store": STORE_ID, "sensor": "door-2"}
    assert one("passby_sensor_up", **s1_) == 1 and one("passby_sensor_up", **s2_) == 0
    assert abs(one("passby_sensor_last_seen_timestamp_seconds", **s2_) - (now - 3600)) < 1
    assert one("passby_sensor_outbox_depth", **s1_) == 7
    assert one("passby_sensor_frames_per_second", **s1_) == 0.0
    assert one("passby_sensor_frames_per_second", **s2_) == 12.5
    assert one("passby_sensor_roster_version", **s2_) == 2
    assert one("passby_store_roster_version", store=STORE_ID) == 3
    assert one("passby_provider_attempts_total", provider="sandbox", result="accepted") == 1
    assert one("passby_provider_attempts_total", provider="sandbox", result="error") == 2
    assert 590 <= one("passby_oldest_waiting_seconds", queue="sends") <= 700
    assert one("passby_oldest_waiting_seconds", queue="events") >= 0
    assert one("passby_optout_guard_trips_total") == 1
    assert one("passby_campaigns_paused_by_guard") == 1
