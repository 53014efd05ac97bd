"""Commands to a running agent through a real Mosquitto: ping and config changes, answered on
reply/{name} with the request id; the agent reads a live pcap stream on stdin meanwhile."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud_bridge.config import BridgeSettings, load_settings
from cloud_bridge.dev.demo.run import prepare_site
from cloud_bridge.dev.mosquitto import LocalMosquitto
from cloud_bridge.ingest.commands import send_commands
from cloud_bridge.service import BridgeService
from cloud_bridge.storage.fleet import sensor_rows

pytestmark = pytest.mark.integration
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 127)


@pytest.fixture()
def live_agent(tmp_path: Path):
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    site = prepare_site(tmp_path, broker.port, 0)
    store, bridge_toml, edge_toml = site.db, site.bridge_toml, site.edge_toml
    settings = load_settings(BridgeSettings, bridge_toml)
    service = BridgeService(settings, web=False)
    service.start()
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(edge_toml), "--capture", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert agent.stdin is not None
    agent.stdin.write(PCAP_HEADER)
    agent.stdin.flush()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = [s for s in sensor_rows(store) if s["sensor_id"] == "door-1"]
        if rows and rows[0]["state"] == "online":
            break
        time.sleep(0.1)
    else:
        agent.kill()
        pytest.fail("the agent never came online: " + agent.communicate()[1].decode()[-2000:])
    yield settings, agent, tmp_path
    if agent.poll() is None:
        agent.kill()
        agent.wait()
    service.stop()
    store.close()
    broker.stop()


def test_ping_and_config_through_the_broker(live_agent) -> None:
    settings, agent, tmp = live_agent
    target = [("main-st", "door-1")]
    [ping] = send_commands(settings.mqtt, "ping", target, {}, timeout=10)
    assert ping.reply is not None and ping.reply.ok
    assert ping.reply.data["roster_version"] == 1 and ping.reply.data["outbox_depth"] == 0

    [bad] = send_commands(
        settings.mqtt, "config", target, {"presence": {"enter_dbm": -95}}, timeout=10
    )
    assert bad.reply is not None and not bad.reply.ok
    assert "must be below enter_dbm" in bad.reply.detail

    [good] = send_commands(
        settings.mqtt,
        "config",
        target,
        {"presence": {"enter_dbm": -66}, "stats_interval_s": 20},
        timeout=10,
    )
    assert good.reply is not None and good.reply.ok, good.reply
    assert good.reply.data["presence"]["enter_dbm"] == -66
    assert '"enter_dbm": -66' in (tmp / "edge" / "remote-config.json").read_text()

    [nobody] = send_commands(settings.mqtt, "ping", [("main-st", "door-9")], {}, timeout=1)
    assert nobody.reply is None  # no such sensor: no answer, and the caller is told

    assert agent.stdin is not None
    agent.stdin.close()  # end of the stream: the agent drains and exits
    assert agent.wait(timeout=30) == 0, agent.stderr.read().decode()[-2000:] if agent.stderr else ""
