"""edge-agent doctor: each failure explained with its fix, on facts and on real interfaces."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_agent.doctor import Facts, diagnose, gather

GOOD = dict(
    exists=True,
    wireless=True,
    arphrd=803,
    driver="mt76x2u",
    monitor_supported=True,
    channel=6,
    want_channel=6,
    can_raw=True,
    frames_seen=1200,
    listen_s=3.0,
)


def names(checks):
    return {c.name: c for c in checks}


def test_all_green() -> None:
    checks = diagnose(Facts(iface="wlan1", **GOOD))
    assert all(c.ok for c in checks), checks
    assert {
        "interface",
        "wireless",
        "driver",
        "monitor-mode",
        "channel",
        "permissions",
        "frames",
    } == set(names(checks))


@pytest.mark.parametrize(
    "change,failing,fix_part",
    [
        ({"exists": False}, "interface", "ip link"),
        ({"wireless": False}, "wireless", "--iface"),
        ({"driver": "brcmfmac"}, "driver", "hardware/README.md"),
        ({"monitor_supported": False}, "monitor-capable", "hardware/README.md"),
        ({"arphrd": 1}, "monitor-mode", "set type monitor"),
        ({"channel": 11}, "channel", "set channel 6"),
        ({"can_raw": False, "raw_error": "Operation not permitted"}, "permissions", "CAP_NET_RAW"),
        ({"frames_seen": 0}, "frames", "antenna"),
    ],
)
def test_each_failure_has_a_fix(change: dict, failing: str, fix_part: str) -> None:
    checks = names(diagnose(Facts(iface="wlan1", **{**GOOD, **change})))
    assert not checks[failing].ok
    assert fix_part in checks[failing].fix
    assert sum(not c.ok for c in checks.values()) == 1


def test_gather_on_real_interfaces() -> None:
    assert not gather("passby-nope0", None).exists
    lo = gather("lo", None, listen_s=0)
    assert lo.exists and not lo.wireless and lo.arphrd == 772
    assert names(diagnose(lo))["wireless"].ok is False


def test_cli_exit_code_and_message() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "doctor", "--iface", "lo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "not a Wi-Fi interface" in out.stdout


def test_cli_output_fits_an_80_column_ssh_window() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "doctor", "--iface", "lo", "--listen", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80", "TERM": "xterm"},
    )
    lines = out.stdout.splitlines()
    assert len(lines) > 3
    wide = [line for line in lines if len(line) > 80]
    assert not wide, f"{len(wide)} lines wider than 80 columns, e.g. {wide[0]!r}"
    # Every failing check still says what we saw and how to fix it, in full.
    text = " ".join(" ".join(lines).split())
    assert "not a Wi-Fi interface" in text and "fix:" in text
