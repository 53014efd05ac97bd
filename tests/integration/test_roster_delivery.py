"""A sensor is provisioned, pairs, and gets its roster the way the fleet does: the bridge publishes
a new signed version, announces it on cmd/roster through Mosquitto, the agent downloads it
over HTTP with its API token, verifies it, keeps it as last good and recognises customers."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cloud_bridge.config import BridgeSettings, load_settings
from cloud_bridge.dev.demo.run import CAPTURE, prepare_site
from cloud_bridge.dev.mosquitto import LocalMosquitto, free_port
from cloud_bridge.ingest.commands import send_commands
from cloud_bridge.sensors.provisioning import add_sensor
from cloud_bridge.sensors.roster_delivery import publish_roster
from cloud_bridge.service import BridgeService
from cloud_bridge.storage.events import event_rows
from cloud_bridge.storage.fleet import sensor_rows

pytestmark = pytest.mark.integration
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 127)


def _wait(predicate, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_provision_pair_publish_download_recognise(tmp_path: Path) -> None:
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    port = free_port()
    site = prepare_site(tmp_path, broker.port, port)
    url = f"http://127.0.0.1:{port}"
    settings = load_settings(
        BridgeSettings,
        site.bridge_toml,
        public_url=url,
        provisioning={"mqtt_host": "127.0.0.1", "mqtt_port": broker.port, "mqtt_tls": False},
    )
    service = BridgeService(settings)
    service.start()
    agent = None
    try:
        prov = add_sensor(service.store, settings, "main-st", "door-2")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "enroll",
                prov.code,
                "--bridge",
                url,
                "--out",
                str(tmp_path / "door2"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        edge_toml = tmp_path / "door2" / "edge.toml"
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(edge_toml), "--capture", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert agent.stdin is not None
        agent.stdin.write(PCAP_HEADER)
        agent.stdin.flush()
        store = service.store
        _wait(
            lambda: [
                s
                for s in sensor_rows(store)
                if s["sensor_id"] == "door-2" and s["state"] == "online"
            ],
            "the paired sensor to come online",
        )
        # The new sensor has no roster yet: it recognises nobody.
        [ping] = send_commands(settings.mqtt, "ping", [("main-st", "door-2")], {}, timeout=10)
        assert ping.reply is not None and ping.reply.data["roster_version"] == 0

        pub = publish_roster(settings, store, site.keys, "main-st", timeout=15)
        by_sensor = {o.sensor_id: o.reply for o in pub.outcomes}
        assert by_sensor["door-2"] is not None and by_sensor["door-2"].ok, by_sensor
        assert by_sensor["door-2"].data["roster_version"] == pub.version == 2
        roster_file = tmp_path / "door2" / "data" / "roster.bin"
        assert (
            roster_file.read_bytes() == (settings.data_dir / "rosters" / "main-st.bin").read_bytes()
        )

        # The download API: token required, own store only, ETag answered with 304.
        token = (tmp_path / "door2" / "api.token").read_text().strip()
        api = f"{url}/api/v1/rosters/main-st"
        assert httpx.get(api).status_code == 401
        assert httpx.get(api, headers={"Authorization": "Bearer pbt1.nope.nope"}).status_code == 401
        first = httpx.get(api, headers={"Authorization": f"Bearer {token}"})
        assert first.status_code == 200 and first.content == roster_file.read_bytes()
        again = httpx.get(
            api,
            headers={"Authorization": f"Bearer {token}", "If-None-Match": first.headers["ETag"]},
        )
        assert again.status_code == 304
        assert (
            httpx.get(
                f"{url}/api/v1/rosters/other-store", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 403
        )

        # With the downloaded roster the sensor recognises the consenting customers.
        before = len([e for e in event_rows(store) if e["sensor_id"] == "door-2"])
        agent.stdin.write(CAPTURE.read_bytes()[24:])  # the demo capture's records
        agent.stdin.close()
        assert agent.wait(timeout=60) == 0, (
            agent.stderr.read().decode()[-2000:] if agent.stderr else ""
        )
        summary = (
            json.loads(agent.stdout.read().decode().strip().splitlines()[-1])
            if agent.stdout
            else {}
        )
        assert summary["events"]["arrive"] == 3
        _wait(
            lambda: (
                len([e for e in event_rows(store) if e["sensor_id"] == "door-2"])
                >= before + sum(summary["events"].values())
            ),
            "the door-2 events at the bridge",
        )
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        service.stop()
        broker.stop()
