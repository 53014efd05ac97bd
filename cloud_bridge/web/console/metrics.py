"""Prometheus ``/metrics`` for the bridge, read from the store at scrape time (so every worker
process reports the same numbers): events by type, decisions by reason, sends by status,
provider latency and errors, queue depths and the age of the oldest waiting item, the opt-out
guard, sensors by state and each sensor's health (up, last seen, outbox, frames, roster
version). Scraped with an admin API token (``authorization`` in the Prometheus job) or an
admin session. The alert rules and the dashboard in ``deploy/monitoring/`` use these names."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cloud_bridge.ingest.fleet import SILENT_AFTER_S
from cloud_bridge.storage.fleet import sensor_gauges
from cloud_bridge.storage.metrics import (
    campaigns_paused_by_guard,
    clock_offsets,
    dead_letter_count,
    decisions_by_outcome,
    events_by_type,
    oldest_waiting,
    optout_guard_trips,
    provider_attempts,
    provider_latency,
    queue_depths,
    sends_by_state,
    sensor_outbox_total,
    sensor_states,
)
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import roster_versions
from cloud_bridge.web.dependencies import Admin, Store

__all__ = ["router", "StoreCollector"]


class StoreCollector(Collector):
    def __init__(self, store: BridgeStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        store = self.store
        events = CounterMetricFamily("passby_events", "presence events stored", labels=["type"])
        for r in events_by_type(store):
            events.add_metric([r["type"]], r["n"])
        yield events
        decisions = CounterMetricFamily(
            "passby_decisions",
            "offer decisions by outcome and reason",
            labels=["outcome", "reason"],
        )
        for r in decisions_by_outcome(store):
            decisions.add_metric([r["outcome"], r["reason"]], r["n"])
        yield decisions
        sends = GaugeMetricFamily("passby_sends", "SMS sends by state", labels=["state"])
        for r in sends_by_state(store):
            sends.add_metric([r["state"]], r["n"])
        yield sends
        lat = GaugeMetricFamily(
            "passby_provider_latency_seconds",
            "provider answer time of sends accepted in the last hour (avg and max)",
            labels=["provider", "stat"],
        )
        for r in provider_latency(store, time.time() - 3600):
            lat.add_metric([r["provider"], "avg"], r["avg"] or 0.0)
            lat.add_metric([r["provider"], "max"], r["max"] or 0.0)
        yield lat
        depth = GaugeMetricFamily("passby_queue_depth", "work waiting", labels=["queue"])
        row = queue_depths(store)
        for name, n in row.items():
            depth.add_metric([name], n)
        depth.add_metric(["sensor_outboxes"], sensor_outbox_total(store))
        yield depth
        dead = CounterMetricFamily("passby_dead_letters", "rejected sensor messages")
        dead.add_metric([], dead_letter_count(store))
        yield dead
        clock = GaugeMetricFamily(
            "passby_sensor_clock_offset_seconds",
            "sensor clock minus bridge clock at the sensor's latest stats (alert beyond the "
            "allowed skew, policy.max_clock_skew_s)",
            labels=["store", "sensor"],
        )
        for r in clock_offsets(store):
            clock.add_metric([r["store_id"], r["sensor_id"]], float(r["offset"]))
        yield clock
        sensors = GaugeMetricFamily("passby_sensors", "sensors by state", labels=["state"])
        now = time.time()
        counts = {"online": 0, "offline": 0, "silent": 0}
        for r in sensor_states(store):
            if r["state"] == "online" and now - r["last_seen"] > SILENT_AFTER_S:
                counts["silent"] += 1
            else:
                counts[r["state"] if r["state"] in counts else "offline"] += 1
        for state, n in counts.items():
            sensors.add_metric([state], n)
        yield sensors
        yield from self._per_sensor(now)
        yield from self._delivery(now)
        guard = CounterMetricFamily(
            "passby_optout_guard_trips", "campaigns the opt-out guard paused (ever)"
        )
        guard.add_metric([], optout_guard_trips(store))
        yield guard
        paused = GaugeMetricFamily(
            "passby_campaigns_paused_by_guard", "campaigns paused by the opt-out guard right now"
        )
        paused.add_metric([], campaigns_paused_by_guard(store))
        yield paused

    def _per_sensor(self, now: float) -> Iterator[GaugeMetricFamily]:
        labels = ["store", "sensor"]
        up = GaugeMetricFamily(
            "passby_sensor_up", "1 if the sensor is online and heard lately, else 0", labels=labels
        )
        seen = GaugeMetricFamily(
            "passby_sensor_last_seen_timestamp_seconds",
            "when the bridge last heard from the sensor",
            labels=labels,
        )
        outbox = GaugeMetricFamily(
            "passby_sensor_outbox_depth",
            "events waiting in the sensor's outbox (last stats)",
            labels=labels,
        )
        frames = GaugeMetricFamily(
            "passby_sensor_frames_per_second", "frames the sensor hears (last stats)", labels=labels
        )
        roster = GaugeMetricFamily(
            "passby_sensor_roster_version", "roster version the sensor has loaded", labels=labels
        )
        rows = sensor_gauges(self.store)
        for r in rows:
            names = [str(r["store_id"]), str(r["sensor_id"])]
            last = r["last_seen"]
            online = r["state"] == "online" and last is not None and now - last <= SILENT_AFTER_S
            up.add_metric(names, 1 if online else 0)
            if last is not None:
                seen.add_metric(names, last)
            try:
                stats = json.loads(r["last_stats"] or "{}")
            except ValueError:
                stats = {}
            if isinstance(stats.get("outbox_depth"), int | float):
                outbox.add_metric(names, stats["outbox_depth"])
            if isinstance(stats.get("frames_per_s"), int | float):
                frames.add_metric(names, stats["frames_per_s"])
            roster.add_metric(names, r["roster_version"] or 0)
        yield from (up, seen, outbox, frames, roster)
        published = GaugeMetricFamily(
            "passby_store_roster_version", "latest roster version published for the store",
            labels=["store"],
        )  # fmt: skip
        for r in roster_versions(self.store):
            published.add_metric([str(r["id"])], r["roster_version"] or 0)
        yield published

    def _delivery(self, now: float) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        attempts = CounterMetricFamily(
            "passby_provider_attempts",
            "SMS provider calls by answer: 'accepted', or 'error' (refused, failed, no answer)",
            labels=["provider", "result"],
        )
        for r in provider_attempts(self.store):
            attempts.add_metric([r["provider"], r["result"]], r["n"])
        yield attempts
        oldest = GaugeMetricFamily(
            "passby_oldest_waiting_seconds",
            "age of the oldest item due but not done: 'sends' (reserved, sending or unknown "
            "past its due time), 'events' (not yet decided); 0 when none",
            labels=["queue"],
        )
        row = oldest_waiting(self.store, now)
        for name in ("sends", "events"):
            since = row[name]
            oldest.add_metric([name], max(0.0, now - since) if since is not None else 0.0)
        yield oldest


router = APIRouter()


@router.get("/metrics", tags=["health"], response_class=Response)
def metrics(me: Admin, store: Store) -> Response:
    """Prometheus text format (admin token or session)."""
    registry = CollectorRegistry()  # per scrape: the numbers are read from the store anyway
    registry.register(StoreCollector(store))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
