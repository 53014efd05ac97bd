"""Under systemd (Type=notify, WatchdogSec=) the agent reports READY, keeps the watchdog fed
from its frame loop, shows a status line without personal data, and says STOPPING."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_bridge.dev.demo.run import CAPTURE, prepare_site
from cloud_bridge.dev.mosquitto import LocalMosquitto

pytestmark = pytest.mark.integration


def test_agent_speaks_sd_notify(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    # Something must be subscribed (the bridge): events nobody receives stay in the outbox.
    sub = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bridge-stand-in", protocol=mqtt.MQTTv5
    )
    sub.connect(broker.host, broker.port)
    sub.subscribe("passby/v1/+/+/events", qos=1)
    sub.loop_start()
    try:
        site = prepare_site(tmp_path, broker.port, 0)
        path = tmp_path / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.2)
        env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "run",
                "-c",
                str(site.edge_toml),
                "--capture",
                str(CAPTURE),
            ],
            capture_output=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        got = []
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                break
        joined = "\n".join(got)
        assert got[0].startswith("READY=1") and "roster v1" in got[0]
        assert "WATCHDOG=1" in joined
        assert got[-1] == "STOPPING=1"
        for c in site.tenant.customers:
            assert c.name not in joined and c.phone not in joined
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
