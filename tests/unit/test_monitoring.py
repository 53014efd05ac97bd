"""deploy/monitoring: the Prometheus job, alert rules and Grafana dashboard admins install.

`promtool` (Debian's prometheus package) checks the rules and the scrape config and runs the
rules' unit tests; every metric the rules and the dashboard use must be served by the real
bridge app's /metrics on a store with data (a renamed metric breaks this test, not the alerts
in silence)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from console_helpers import add_sensor_state, make_world
from db.test_deliver import Scripted, deliverer
from delivery_helpers import add_customer, reserve
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
METRIC = re.compile(r"\b(passby_[a-z0-9_]+)\b")


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is not installed: apt-get install prometheus", pytrace=False)
    return path


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def rules() -> list[dict]:  # type: ignore[type-arg]
    data = yaml.safe_load((MON / "passby-alerts.yml").read_text())
    return [r for g in data["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((MON / "grafana-passby.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    res = run(promtool(), "check", "rules", MON / "passby-alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    res = run(promtool(), "test", "rules", "passby-alerts.test.yml", cwd=MON)
    assert res.returncode == 0, res.stdout + res.stderr
    # Every alert has a unit test that expects it to fire.
    tests = yaml.safe_load((MON / "passby-alerts.test.yml").read_text())
    fired = {
        t["alertname"]
        for case in tests["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert fired == {r["alert"] for r in rules()}


def test_promtool_checks_the_scrape_config(tmp_path: Path) -> None:
    conf = (MON / "prometheus.yml").read_text()
    (tmp_path / "passby-bridge.token").write_text("pb_token\n")
    shutil.copy(MON / "passby-alerts.yml", tmp_path)
    conf = conf.replace("/etc/prometheus/", f"{tmp_path}/")
    (tmp_path / "prometheus.yml").write_text(conf)
    res = run(promtool(), "check", "config", tmp_path / "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    job = yaml.safe_load(conf)["scrape_configs"][0]["job_name"]
    down = next(r for r in rules() if r["alert"] == "PassbyBridgeDown")
    assert f'job="{job}"' in down["expr"]


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
