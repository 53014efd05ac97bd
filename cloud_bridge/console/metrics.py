"""Prometheus ``/metrics`` for the bridge, read from the store at scrape time (so every worker
process reports the same numbers): events by type, decisions by reason, sends by status,
provider latency, queue depths, sensors by state. Scraped with an admin API token
(``bearer_token`` in the Prometheus job) or an admin session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cloud_bridge.auth import Principal, require
from cloud_bridge.fleet import SILENT_AFTER_S
from cloud_bridge.store import BridgeStore

__all__ = ["metrics_router", "StoreCollector"]

Admin = Annotated[Principal, Depends(require("admin"))]


class StoreCollector(Collector):
    def __init__(self, store: BridgeStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        q = self.store.query
        events = CounterMetricFamily("passby_events", "presence events stored", labels=["type"])
        for r in q("SELECT type, count(*) AS n FROM events GROUP BY type"):
            events.add_metric([r["type"]], r["n"])
        yield events
        decisions = CounterMetricFamily(
            "passby_decisions",
            "offer decisions by outcome and reason",
            labels=["outcome", "reason"],
        )
        for r in q("SELECT outcome, reason, count(*) AS n FROM decisions GROUP BY 1, 2"):
            decisions.add_metric([r["outcome"], r["reason"]], r["n"])
        yield decisions
        sends = GaugeMetricFamily("passby_sends", "SMS sends by state", labels=["state"])
        for r in q("SELECT state, count(*) AS n FROM sends GROUP BY state"):
            sends.add_metric([r["state"]], r["n"])
        yield sends
        lat = GaugeMetricFamily(
            "passby_provider_latency_seconds",
            "provider answer time of sends accepted in the last hour (avg and max)",
            labels=["provider", "stat"],
        )
        for r in q(
            "SELECT provider, avg(accepted_at-attempt_at) AS avg, max(accepted_at-attempt_at) "
            "AS max FROM sends WHERE accepted_at>=? AND attempt_at IS NOT NULL GROUP BY provider",
            [time.time() - 3600],
        ):
            lat.add_metric([r["provider"], "avg"], r["avg"] or 0.0)
            lat.add_metric([r["provider"], "max"], r["max"] or 0.0)
        yield lat
        depth = GaugeMetricFamily("passby_queue_depth", "work waiting", labels=["queue"])
        row = q(
            "SELECT (SELECT count(*) FROM events WHERE state='new') AS events, "
            "(SELECT count(*) FROM sends WHERE state IN ('reserved','sending')) AS sends, "
            "(SELECT count(*) FROM replies WHERE state IN ('reserved','sending')) AS replies"
        )[0]
        for name, n in row.items():
            depth.add_metric([name], n)
        outbox = q(
            "SELECT coalesce(sum(json_extract(last_stats, '$.outbox_depth')), 0) AS n FROM sensors"
        )
        depth.add_metric(["sensor_outboxes"], outbox[0]["n"])
        yield depth
        dead = CounterMetricFamily("passby_dead_letters", "rejected sensor messages")
        dead.add_metric([], q("SELECT count(*) AS n FROM dead_letters")[0]["n"])
        yield dead
        clock = GaugeMetricFamily(
            "passby_sensor_clock_offset_seconds",
            "sensor clock minus bridge clock at the sensor's latest stats (alert beyond the "
            "allowed skew, policy.max_clock_skew_s)",
            labels=["store", "sensor"],
        )
        for r in q(
            "SELECT store_id, sensor_id, json_extract(last_stats, '$.clock_offset_s') AS offset "
            "FROM sensors WHERE json_extract(last_stats, '$.clock_offset_s') IS NOT NULL "
            "ORDER BY store_id, sensor_id"
        ):
            clock.add_metric([r["store_id"], r["sensor_id"]], float(r["offset"]))
        yield clock
        sensors = GaugeMetricFamily("passby_sensors", "sensors by state", labels=["state"])
        now = time.time()
        counts = {"online": 0, "offline": 0, "silent": 0}
        for r in q("SELECT state, last_seen FROM sensors WHERE last_seen IS NOT NULL"):
            if r["state"] == "online" and now - r["last_seen"] > SILENT_AFTER_S:
                counts["silent"] += 1
            else:
                counts[r["state"] if r["state"] in counts else "offline"] += 1
        for state, n in counts.items():
            sensors.add_metric([state], n)
        yield sensors


def metrics_router(store: BridgeStore) -> APIRouter:
    r = APIRouter()
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))

    @r.get("/metrics", tags=["health"], response_class=Response)
    def metrics(me: Admin) -> Response:
        """Prometheus text format (admin token or session)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return r
