"""deploy/monitoring checked by `promtool` (Debian's prometheus package): it checks the alert rules
and the scrape config and runs the rules' unit tests (tests/unit/test_monitoring.py checks that
the real bridge app serves every metric they use)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"


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
