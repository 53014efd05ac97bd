"""deploy/monitoring: the Prometheus job, alert rules and Grafana dashboard admins install.

Every metric the rules and the dashboard use must be served by the real bridge app's /metrics
on a store with data (a renamed metric breaks this test, not the alerts in silence);
tests/integration/test_monitoring.py runs `promtool` on the rules and the scrape config."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml
from console_helpers import add_sensor_state, make_world
from delivery_helpers import add_customer, reserve
from prometheus_client.parser import text_string_to_metric_families
from scripted_provider import Scripted, deliverer

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
METRIC = re.compile(r"\b(passby_[a-z0-9_]+)\b")


def rules() -> list[dict]:  # type: ignore[type-arg]
    data = yaml.safe_load((MON / "passby-alerts.yml").read_text())
    return [r for g in data["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((MON / "grafana-passby.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_the_alerts_the_issue_asks_for_exist() -> None:
    names = {r["alert"] for r in rules()}
    for want in ("PassbyBoxOffline", "PassbyOutboxGrowing", "PassbyNoFrames", "PassbyStaleRoster",
                 "PassbyProviderErrors", "PassbyOptOutGuardTripped", "PassbySendsStuck"):  # fmt: skip
        assert want in names


def served_metrics(tmp_path: Path) -> set[str]:
    """Sample names the real console app serves at /metrics on a store with data."""
    w = make_world(tmp_path)
    now = time.time()
    add_sensor_state(w.store, "main-st", "door-1", now, outbox_depth=3)
    add_sensor_state(w.store, "main-st", "door-2", now - 3600, frames_per_s=0.0)
    w.store.bump_roster_version("main-st")
    w.store.insert_event("a" * 32, "main-st", "door-1", "arrive", "0" * 16, now, "{}", now)
    w.store.record_decision("a" * 32, None, None, "main-st", "skip", "unknown_subject", "-", now)
    d = deliverer(w.store, Scripted(["retry", "accepted", "invalid"]))
    first = reserve(w.store, add_customer(w.store, 901, now), now)
    d.deliver(first)
    d.pump(now + 1)
    d.deliver(reserve(w.store, add_customer(w.store, 902, now), now))
    assert w.store.pause_for_guard("fav-15", "3 opt-outs of 100", now)
    r = w.client().get("/metrics", headers={"Authorization": f"Bearer {w.token('ada')}"})
    assert r.status_code == 200
    return {s.name for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def test_every_metric_the_rules_and_dashboard_use_is_served(tmp_path: Path) -> None:
    served = served_metrics(tmp_path)
    used: dict[str, str] = {}
    for r in rules():
        for name in METRIC.findall(r["expr"]):
            used[name] = f"alert {r['alert']}"
    for expr in dashboard_exprs():
        for name in METRIC.findall(expr):
            used.setdefault(name, "the Grafana dashboard")
    assert len(used) >= 10
    missing = {name: where for name, where in used.items() if name not in served}
    assert not missing, f"not served by /metrics: {missing}"


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dash = json.loads((MON / "grafana-passby.json").read_text())
    assert dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])
    assert any(v["name"] == "datasource" for v in dash["templating"]["list"])
