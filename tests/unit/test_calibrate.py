"""Calibration: smoothed values per device, enrolled-only mode, anonymous labels, suggestions."""

from __future__ import annotations

import json
import subprocess
import sys

from cloud_bridge.dev.demo.run import CAPTURE
from edge_agent.calibrate import Calibrator, suggest_thresholds

MAC_A = bytes.fromhex("da a1 19 3c 4e 01".replace(" ", ""))
MAC_B = bytes.fromhex("020000000002")


def test_anonymous_mode_ranks_strongest_first_and_hides_macs() -> None:
    cal = Calibrator(b"s" * 16, window_s=10)
    for i in range(20):
        cal.feed(MAC_A, None, -55 + (i % 3), float(i) / 2)
        cal.feed(MAC_B, None, -80, float(i) / 2)
    rows = cal.readings(10.0)
    assert [r.label for r in rows] == [cal.label(MAC_A), cal.label(MAC_B)]
    assert -56 <= rows[0].smoothed_dbm <= -53
    assert rows[1].smoothed_dbm == -80
    assert all(len(r.label) == 6 and r.label not in MAC_A.hex() for r in rows)


def test_subject_mode_ignores_everyone_else() -> None:
    cal = Calibrator(b"s" * 16, subject="00000000000000aa")
    cal.feed(MAC_A, "00000000000000aa", -60, 1.0)
    cal.feed(MAC_B, None, -40, 1.0)
    cal.feed(MAC_B, "00000000000000bb", -40, 1.0)
    rows = cal.readings(2.0)
    assert len(rows) == 1 and rows[0].label == "00000000000000aa"


def test_old_readings_leave_the_window() -> None:
    cal = Calibrator(b"s" * 16, window_s=5)
    cal.feed(MAC_A, None, -50, 0.0)
    assert cal.readings(10.0) == []


def test_suggestions_keep_hysteresis() -> None:
    assert suggest_thresholds(-63.4) == (-63, -73)
    assert suggest_thresholds(-63.4, -75.2) == (-63, -75)
    assert suggest_thresholds(-63, -60) == (-63, -68)
    assert suggest_thresholds(-63, -65) == (-63, -68)  # 2 dB would flap: widened to 5


def test_cli_on_demo_capture_prints_no_mac() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "calibrate",
            "--capture",
            str(CAPTURE),
            "--jsonl",
            "--seconds",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) >= 100
    strongest = max(r["dbm"] for line in lines for r in line["readings"] if r["dbm"] is not None)
    assert -75 < strongest < -30
    assert "da:a1:19" not in out.stdout and "daa119" not in out.stdout
