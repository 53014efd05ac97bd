"""The thin chain, real at every hop: capture -> agent -> Mosquitto -> bridge -> sandbox SMS."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud_bridge.config import BridgeSettings, load_settings
from cloud_bridge.dev.demo.run import CAPTURE, TENANT, agent_command, prepare_site
from cloud_bridge.dev.demo.run import wait_processed as demo_wait_processed
from cloud_bridge.dev.mosquitto import LocalMosquitto
from cloud_bridge.service import BridgeService
from cloud_bridge.storage.customers import customer_by_crm_id, customer_rows
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.events import event_count, event_rows
from cloud_bridge.storage.sends import sandbox_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant

pytestmark = pytest.mark.integration

CONSENTING = {"+79161234501": "Anna", "+79161234502": "Boris", "+79161234503": "Carmen"}
NO_CONSENT = "+79161234504"


@pytest.fixture()
def chain(tmp_path: Path):
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    site = prepare_site(tmp_path, broker.port, 0)
    store, bridge_toml, edge_toml = site.db, site.bridge_toml, site.edge_toml
    service = BridgeService(load_settings(BridgeSettings, bridge_toml), web=False)
    service.start()
    assert service.ingest.connected.wait(10), "bridge could not connect to Mosquitto"
    yield store, edge_toml, service
    service.stop()
    store.close()
    broker.stop()


def replay(edge_toml: Path) -> dict:
    """Run the real agent CLI as a separate process, as the demo does."""
    proc = subprocess.run(
        agent_command(edge_toml),
        capture_output=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def wait_processed(store: BridgeStore, n: int, timeout: float = 30.0) -> None:
    if demo_wait_processed(store, n, timeout):
        return
    pytest.fail(f"bridge processed {event_count(store)} of {n} events")


def test_chain_sends_one_personal_sms_per_consenting_customer(chain) -> None:
    store, edge_toml, _ = chain
    summary = replay(edge_toml)
    assert summary["delivered"] and summary["outbox_depth"] == 0
    assert summary["frames"] > 1000 and summary["matched"] > 0
    published = sum(summary["events"].values())
    wait_processed(store, published)

    msgs = sandbox_rows(store)
    by_phone: dict[str, list[str]] = {}
    for m in msgs:
        by_phone.setdefault(m["to_phone"], []).append(m["body"])
        assert m["sender"] == "MainStCafe"
    assert set(by_phone) == set(CONSENTING), by_phone
    favourites = {"Anna": "espresso beans", "Boris": "almond croissants", "Carmen": "green tea"}
    for phone, name in CONSENTING.items():
        assert len(by_phone[phone]) == 1
        assert by_phone[phone][0].startswith(
            f"{name}, 15% off {favourites[name]} today at Main St. Coffee"
        )
        # The alphanumeric sender cannot take a STOP reply: a one-click opt-out link instead.
        assert re.search(r" Opt out: http://127\.0\.0\.1:\d+/o/[A-Za-z0-9]{8}$", by_phone[phone][0])
    assert NO_CONSENT not in by_phone

    # Unknown devices produce nothing: every stored event belongs to an enrolled customer.
    subjects = {r["subject"] for r in event_rows(store)}
    known = {r["subject"] for r in customer_rows(store)}
    assert subjects <= known
    reasons = {r["reason"] for r in decision_rows(store)}
    assert "unknown_subject" not in reasons
    # Dmitri walked in too, but without consent his device is not in the roster: the sensor
    # never recognised him, so nothing about him reached the bridge.
    dmitri = customer_by_crm_id(store, "C-1004")
    assert dmitri is not None
    assert dmitri["subject"] not in subjects
    assert not [d for d in decision_rows(store) if d["customer_id"] == dmitri["id"]]

    # Replaying the same capture again sends nothing new: the frequency cap holds.
    before = event_count(store)
    summary2 = replay(edge_toml)
    wait_processed(store, before + sum(summary2["events"].values()))
    assert event_count(store) > before  # new events arrived
    assert len(sandbox_rows(store)) == 3
    last_sms = max(m["ts"] for m in sandbox_rows(store))
    received = {e["event_id"]: e["received"] for e in event_rows(store)}
    second = [
        d
        for d in decision_rows(store)
        if d["event_id"] in received and received[d["event_id"]] > last_sms
    ]
    assert second and {r["reason"] for r in second} <= {"campaign_cap", "no_campaign"}
    assert "campaign_cap" in {r["reason"] for r in second}


def _notations(mac: str) -> list[str]:
    """A MAC in every common spelling: colons, dashes, bare hex, Cisco dotted."""
    h = mac.replace(":", "").lower()
    forms = [mac.lower(), mac.lower().replace(":", "-"), h, f"{h[0:4]}.{h[4:8]}.{h[8:12]}"]
    return forms + [f.upper() for f in forms]


def test_no_pii_on_the_wire_in_logs_or_on_edge_disk(chain, tmp_path: Path) -> None:
    """Every MQTT payload (subscribed to '#'), every log line of both sides and every file the
    agent wrote: none holds a demo MAC (any notation), phone number or customer name."""
    import logging

    import paho.mqtt.client as mqtt

    store, edge_toml, service = chain
    seen: list[bytes] = []
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pii-spy", protocol=mqtt.MQTTv5)
    spy.on_message = lambda c, u, m: seen.append(m.topic.encode() + b" " + m.payload)
    spy.connect(service.settings.mqtt.host, service.settings.mqtt.port)
    spy.subscribe("#", qos=1)
    spy.loop_start()
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "run",
                "--config",
                str(edge_toml),
                "--capture",
                str(CAPTURE),
                "--verbose",
            ],
            capture_output=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        wait_processed(
            store, sum(json.loads(proc.stdout.decode().splitlines()[-1])["events"].values())
        )
        time.sleep(0.5)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        spy.loop_stop()
        spy.disconnect()
    assert any(b"/events " in p for p in seen), "the spy saw no event: the test would be vacuous"
    assert any("edge_agent" in line for line in proc.stderr.decode().splitlines())
    assert records, "no bridge log line was captured"

    tenant = load_tenant(TENANT)
    text_needles = []
    byte_needles = []
    for c in tenant.customers:
        text_needles += [c.phone, c.phone.lstrip("+"), c.name]
        for mac in c.macs:
            text_needles += _notations(mac)
            byte_needles.append(bytes.fromhex(mac.replace(":", "")))
    haystacks = {
        "mqtt": b"\n".join(seen),
        "agent log": proc.stderr,
        "agent stdout": proc.stdout,
        "bridge log": "\n".join(records).encode(),
    }
    for f in (tmp_path / "edge").rglob("*"):
        if f.is_file() and f.name != "site.key":
            haystacks[f"edge file {f.name}"] = f.read_bytes()
    for where, blob in haystacks.items():
        for needle in text_needles:
            assert needle.encode() not in blob, f"{needle!r} found in {where}"
        if where.startswith("edge file") or where == "mqtt":
            for raw in byte_needles:
                assert raw not in blob, f"a raw MAC found in {where}"
