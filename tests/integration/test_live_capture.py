"""Live capture through a real AF_PACKET socket with the kernel BPF filter, in a private netns."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edge_agent.adapters.capture import CaptureError, ChannelHopper, iface_linktype

pytestmark = pytest.mark.integration
PROBE = Path(__file__).parents[1] / "helpers" / "live_probe.py"


@pytest.fixture()
def netns():
    name = f"passby-{uuid.uuid4().hex[:8]}"
    res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot create a network namespace (needs root and iproute2): {res.stderr}")
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def _probe(ns: str, mode: str) -> dict:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, str(PROBE), mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernel_filter_passes_only_client_frames(netns: str) -> None:
    res = _probe(netns, "bpf")
    assert res["filtered"] is True
    # 5 rounds of 4 frame kinds were sent; the kernel let through only probe + null ToDS.
    assert res["received"] == 10
    assert sorted(map(tuple, res["client"])) == sorted(
        [("da:a1:19:3c:4e:01", 4, -61)] * 5 + [("da:a1:19:3c:4e:01", 0x24, -66)] * 5
    )


def test_without_filter_parser_still_selects(netns: str) -> None:
    res = _probe(netns, "nobpf")
    assert res["filtered"] is False and res["received"] == 20
    assert len(res["client"]) == 10


def test_linktype_of_non_wifi_interface_is_refused() -> None:
    with pytest.raises(CaptureError, match="not in monitor mode"):
        iface_linktype("lo")
    with pytest.raises(CaptureError, match="does not exist"):
        iface_linktype("passby-none0")


def test_channel_hopper_runs_iw_plan() -> None:
    calls: list[list[str]] = []

    def runner(cmd):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0 if cmd[-1] != "11" else 1, "", "busy")

    hop = ChannelHopper("wlan1", [6, 1, 11], dwell_s=0.05, runner=runner)
    hop.start()
    import time

    time.sleep(0.4)
    hop.close()
    chans = [c[-1] for c in calls]
    assert chans[:4] == ["6", "1", "11", "6"]
    assert all(c[:4] == ["iw", "dev", "wlan1", "set"] for c in calls)
    assert hop.errors >= 1
    with pytest.raises(ValueError):
        ChannelHopper("wlan1", [15])


def test_live_chain_in_netns(netns: str) -> None:
    """The agent on a live interface (kernel BPF) publishes arrive then leave through Mosquitto;
    the stranger's frames and the AP's beacons produce nothing."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, str(PROBE.parent / "live_chain.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0, res["stderr"]
    assert [e["type"] for e in res["events"]] == ["arrive", "leave"], res
    assert {e["subject"] for e in res["events"]} == {res["subject"]}
    s = res["summary"]
    assert s["matched"] == 30 and s["client"] == 60
    # The kernel filter kept the 30 beacons out: nothing well-formed but non-client reached us.
    # (The namespace's loopback also carries the agent's own MQTT packets, whose zeroed
    # Ethernet header passes the filter's byte test; the parser rejects them as malformed.
    # A monitor-mode interface carries only 802.11 frames.)
    assert s["frames"] - s["client"] - s["malformed"] - s["bad_fcs"] == 0
