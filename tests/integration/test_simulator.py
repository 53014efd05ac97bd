"""Fleet simulator against a real Mosquitto (password + ACL files from provisioning) and the real
ingest storing into a bridge store on SQLite: 2 000 sensors, each with its own account, and no
acknowledged event missing from the store; refused logins are counted; runs end by themselves."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud_bridge.cli.main import app as bridge_app
from cloud_bridge.config import BridgeSettings, MqttSettings, ProvisioningSettings
from cloud_bridge.dev import simulator as sim
from cloud_bridge.dev.mosquitto import BrokerError, LocalMosquitto, free_port
from cloud_bridge.ingest.consumer import Ingest
from cloud_bridge.storage.events import event_rows
from cloud_bridge.storage.fleet import sensor_rows, sensor_stat_rows
from cloud_bridge.storage.store import BridgeStore
from integration.brokers import make_test_pki, start_secure_broker

FLEET = 2000
BRIDGE_PASSWORD = "bridge-secret-for-simulator-tests"
KNOWN = tuple(f"{i:016x}" for i in range(1, 6))  # subject ids, as a roster would carry them


@dataclass
class Deployment:
    broker: LocalMosquitto
    store: BridgeStore
    settings: BridgeSettings
    ingest: Ingest
    creds: sim.FleetCredentials


def _settings(root: Path, port: int) -> BridgeSettings:
    return BridgeSettings(
        data_dir=root / "bridge",
        data_key="5a" * 32,
        mqtt=MqttSettings(host="127.0.0.1", port=port, username="bridge", password=BRIDGE_PASSWORD),
        provisioning=ProvisioningSettings(
            password_file=root / "mosquitto" / "passby.passwd",
            acl_file=root / "mosquitto" / "passby.acl",
            mqtt_host="127.0.0.1",
            mqtt_port=port,
            mqtt_tls=False,
        ),
    )


def _secured(root: Path, port: int) -> LocalMosquitto:
    """Mosquitto on ``port`` that admits only the accounts in provisioning's files."""
    d = root / "mosquitto"
    conf = f"allow_anonymous false\npassword_file {d}/passby.passwd\nacl_file {d}/passby.acl\n"
    try:
        broker = LocalMosquitto(d, port=port, extra_config=conf)
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"Mosquitto did not start: {exc}", pytrace=False)
    return broker


def _start_ingest(settings: BridgeSettings, store: BridgeStore, broker: LocalMosquitto) -> Ingest:
    ingest = Ingest(settings.mqtt, store, lambda *_: None, client_id="passby-bridge-simtest")
    ingest.start()
    if not ingest.connected.wait(10):
        ingest.stop()
        pytest.fail(f"the bridge ingest did not connect. {broker.log_tail()}", pytrace=False)
    return ingest


def _wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("fleet")
    port = free_port()
    settings = _settings(root, port)
    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    creds, update = sim.provision_fleet(store, settings, FLEET, "sim", per_store=10)
    assert len(update.written) == 2  # password and ACL files, once for the whole fleet
    broker = _secured(root, port)
    ingest = _start_ingest(settings, store, broker)
    try:
        yield Deployment(broker, store, settings, ingest, creds)
    finally:
        ingest.stop()
        broker.stop()
        store.close()


def test_2000_sensors_with_own_accounts_lose_no_acknowledged_event(
    deployment: Deployment,
) -> None:
    d = deployment
    status_before, stats_rows_before = d.ingest.counters.status, _count_stats(d.store)
    plan = sim.SimulationPlan(
        sensors=d.creds.sensors,
        broker=d.creds.broker,
        duration_s=22.0,
        rate_per_sensor=0.1,  # 200 events/s over the fleet once all are in
        stats_interval_s=8.0,
        connect_rate=400.0,  # the 2 000 logins take 5 s
        subjects=KNOWN,
        unknown_share=0.5,
        drain_s=10.0,
        seed=7,
    )
    s = sim.run_simulation(plan)

    assert (s.connected, s.never_connected, s.connect_refused) == (FLEET, 0, 0), s.errors
    assert (s.connect_errors, s.disconnects, s.errors) == (0, 0, [])
    assert s.events_published > 0.7 * 200 * 22 and s.achieved_rate > 0.7 * 200
    assert s.events_acked == s.events_published and s.events_unacked == 0
    assert s.status_sent == s.status_acked == 2 * FLEET  # online birth + offline goodbye
    assert s.stats_sent >= FLEET
    assert 22.0 <= s.elapsed_s < 22.0 + 10.0 + sim.LEAVE_S + sim.CLOSE_S + 2
    assert s.latency_ms["p99"] < 2000
    ids = s.acked_event_ids
    assert len(ids) == len(set(ids)) == s.events_acked
    assert s.acked_ids_sha256 == sim.ids_digest(ids)

    # Every acknowledged event is in the bridge's store, exactly once, under the sensor whose
    # account published it; nothing else arrived from the simulated stores.
    assert sim.wait_stored(d.store, ids, timeout_s=30) == []
    rows = [e for e in event_rows(d.store) if e["store_id"].startswith("sim-")]
    assert len(rows) == len(ids)
    senders = {(r["store_id"], r["sensor_id"]) for r in rows}
    assert senders == {(x.store_id, x.sensor_id) for x in d.creds.sensors}
    subjects = {r["subject"] for r in rows}
    assert set(KNOWN) <= subjects and len(subjects - set(KNOWN)) > 100  # plus unknown ones
    assert d.ingest.counters.dead_letters == 0

    # The broker saw each sensor log in with its own user name and client id.
    logins = set(
        re.findall(r"as (passby-sim-\S+) \(.*?u'([^']+)'\)", d.broker.log_path.read_text())
    )
    assert logins == {(x.client_id, x.username) for x in d.creds.sensors}

    # Statuses and stats reached the sensors table: all offline now, each with its stats.
    assert _wait(lambda: d.ingest.counters.status - status_before >= 2 * FLEET)
    fleet = [s for s in sensor_rows(d.store) if s["store_id"].startswith("sim-")]
    assert len(fleet) == FLEET
    assert {(r["state"], r["agent_version"]) for r in fleet} == {("offline", sim.AGENT_VERSION)}
    assert all(json.loads(r["last_stats"])["iface_state"] == "simulated" for r in fleet)
    assert _count_stats(d.store) - stats_rows_before >= FLEET


def _count_stats(store: BridgeStore) -> int:
    return len(sensor_stat_rows(store))


def test_wrong_password_and_unknown_user_are_refused_and_counted(
    deployment: Deployment,
) -> None:
    d = deployment
    good = d.creds.sensors[:3]
    wrong = replace(d.creds.sensors[3], password="not-" + d.creds.sensors[3].password)
    stranger = sim.SimSensor("sim-9999", "sensor-1", "sim-9999.sensor-1", "x" * 43)
    before = time.time()
    s = sim.run_simulation(
        sim.SimulationPlan(
            sensors=(*good, wrong, stranger),
            broker=d.creds.broker,
            duration_s=3.0,
            rate_per_sensor=2.0,
            drain_s=5.0,
        )
    )
    assert (s.connected, s.connect_refused, s.never_connected) == (3, 2, 2)
    assert sum(s.refused_reasons.values()) == 2
    assert all("not authori" in r.lower() or "password" in r.lower() for r in s.refused_reasons)
    assert s.events_acked == s.events_published > 0
    assert 3.0 <= s.elapsed_s < 3.0 + 5.0 + sim.LEAVE_S + sim.CLOSE_S + 1
    assert sim.wait_stored(d.store, s.acked_event_ids, timeout_s=15) == []
    refused_events = [
        e
        for e in event_rows(d.store)
        if e["received"] >= before
        and (e["store_id"], e["sensor_id"]) == (wrong.store_id, wrong.sensor_id)
    ]
    assert len(refused_events) == 0


def test_several_processes_share_the_fleet(deployment: Deployment) -> None:
    d = deployment
    s = sim.run_simulation(
        sim.SimulationPlan(
            sensors=d.creds.sensors[100:140],
            broker=d.creds.broker,
            duration_s=3.0,
            total_rate=40.0,
            processes=2,
            drain_s=5.0,
        )
    )
    assert (s.connected, s.processes, s.errors) == (40, 2, [])
    assert s.events_acked == s.events_published > 40
    assert sim.wait_stored(d.store, s.acked_event_ids, timeout_s=15) == []


def test_tls_with_the_shipped_broker_config_and_the_ca_from_pairing(tmp_path: Path) -> None:
    """deploy/mosquitto's TLS configuration; the simulated sensors trust the CA that pairing
    handed them (PEM in the credentials file), share one TLS context, and all get through."""
    pki = make_test_pki(tmp_path / "pki")
    d = tmp_path / "mosquitto"
    d.mkdir()
    broker = start_secure_broker(d, d / "passby.passwd", d / "passby.acl", pki)
    settings = BridgeSettings(
        data_dir=tmp_path / "bridge",
        data_key="7c" * 32,
        mqtt=MqttSettings(
            port=broker.port,
            tls=True,
            ca_file=pki.ca_file,
            username="bridge",
            password=BRIDGE_PASSWORD,
        ),
        provisioning=ProvisioningSettings(
            password_file=broker.password_file,
            acl_file=broker.acl_file,
            broker_pid_file=broker.pid_file,
            mqtt_host="127.0.0.1",
            mqtt_port=broker.port,
            mqtt_ca_file=pki.ca_file,
        ),
    )
    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    try:
        creds, update = sim.provision_fleet(store, settings, 40, "tls", per_store=20)
        assert broker.proc is not None and update.reloaded_pid == broker.proc.pid
        assert _wait(lambda: "Reloading config" in broker.log_path.read_text(), 10)
        assert creds.broker.tls and creds.broker.ca_pem == pki.ca_file.read_text()
        ingest = _start_ingest(settings, store, broker)
        try:
            s = sim.run_simulation(
                sim.SimulationPlan(
                    sensors=creds.sensors, broker=creds.broker, duration_s=3.0, rate_per_sensor=2
                )
            )
            missing = sim.wait_stored(store, s.acked_event_ids, timeout_s=15)
            untrusted = replace(creds.broker, ca_pem=pki.other_ca_file.read_text())
            impostor = sim.run_simulation(
                sim.SimulationPlan(sensors=creds.sensors[:2], broker=untrusted, duration_s=1.0)
            )
        finally:
            ingest.stop()
    finally:
        broker.stop()
        store.close()
    assert (s.connected, s.connect_errors, s.errors) == (40, 0, [])
    assert s.events_acked == s.events_published > 40 and missing == []
    # A broker whose certificate the given CA did not sign: no connection, counted and said why.
    assert (impostor.connected, impostor.never_connected) == (0, 2)
    assert impostor.connect_errors >= 2 and "CERTIFICATE_VERIFY_FAILED" in impostor.errors[0]


def test_run_ends_by_itself_when_the_broker_stops_answering(tmp_path: Path) -> None:
    """A broker that freezes: events stay unanswered, yet the run stops at duration + drain."""
    try:
        broker = LocalMosquitto(tmp_path / "frozen")  # anonymous: any user name is let in
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"Mosquitto did not start: {exc}", pytrace=False)
    assert broker.proc is not None
    sensors = tuple(sim.SimSensor("frz", f"s{i}", f"frz.s{i}", "p" * 20) for i in range(20))
    plan = sim.SimulationPlan(
        sensors=sensors,
        broker=sim.BrokerTarget(port=broker.port),
        duration_s=4.0,
        rate_per_sensor=2.0,
        drain_s=2.0,
    )
    out: list[sim.SimulationSummary] = []
    runner = threading.Thread(target=lambda: out.append(sim.run_simulation(plan)))
    try:
        runner.start()
        time.sleep(2.0)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        runner.join(timeout=4.0 + 2.0 + sim.LEAVE_S + sim.CLOSE_S + 5)
        assert not runner.is_alive(), "the simulation did not stop by itself"
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
        broker.stop()
    s = out[0]
    assert s.connected == 20 and s.events_unacked > 0
    # No bridge was subscribed: the broker answered 0x10 "no matching subscribers" before it
    # froze. That is a success code in MQTT v5, but the event is gone: not acknowledged here.
    assert s.events_no_subscribers > 0 and s.events_acked == 0 and s.acked_event_ids == []
    assert s.lost_at_broker == s.events_no_subscribers + s.events_unacked == s.events_published
    assert s.elapsed_s < 4.0 + 2.0 + sim.LEAVE_S + sim.CLOSE_S + 1


def test_cli_provisions_runs_verifies_and_revokes(tmp_path: Path) -> None:
    port = free_port()
    d = tmp_path / "mosquitto"
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "bridge"}"\ndata_key = "{"6b" * 32}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nusername = "bridge"\n'
        f'password = "{BRIDGE_PASSWORD}"\n'
        f'[provisioning]\npassword_file = "{d}/passby.passwd"\nacl_file = "{d}/passby.acl"\n'
        f'mqtt_host = "127.0.0.1"\nmqtt_port = {port}\nmqtt_tls = false\n'
    )
    creds = tmp_path / "creds.json"
    runner = CliRunner()
    base = ["simulate", "--credentials", str(creds), "-c", str(cfg)]
    out = runner.invoke(bridge_app, [*base, "--provision", "5", "--store-prefix", "cli"])
    assert out.exit_code == 0, out.output
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    loaded = sim.load_credentials(creds)
    users = {x.username for x in loaded.sensors}
    assert users == {f"cli-{i // 10 + 1:04d}.sensor-{i % 10 + 1}" for i in range(5)}
    passwd = (d / "passby.passwd").read_text()
    assert all(f"{u}:$7$" in passwd for u in users) and "bridge:$7$" in passwd
    assert loaded.sensors[0].password not in passwd  # only hashes on the broker side

    settings = _settings(tmp_path, port)
    store = BridgeStore(tmp_path / "bridge" / "bridge.db", data_key=bytes.fromhex("6b" * 32))
    broker = _secured(tmp_path, port)
    ingest = _start_ingest(settings, store, broker)
    summary, ids = tmp_path / "summary.json", tmp_path / "acked.txt"
    try:
        known = tmp_path / "subjects.txt"
        known.write_text("\n".join(KNOWN) + "\n")
        refused = runner.invoke(bridge_app, [*base, "--subjects", str(known), "--duration", "1"])
        assert refused.exit_code == 2 and "--known-subjects-ok" in refused.output
        out = runner.invoke(
            bridge_app,
            [*base, "--duration", "2", "--rate", "2", "--summary-json", str(summary)]
            + ["--acked-ids", str(ids), "--verify", "--verify-timeout", "20"],
        )
    finally:
        ingest.stop()
        broker.stop()
        store.close()
    assert out.exit_code == 0, out.output
    data = json.loads(summary.read_text())
    assert data["connected"] == 5 and data["events_acked"] == data["events_published"] > 5
    assert data["stored"] == data["events_acked"] and data["lost"] == 0
    assert len(ids.read_text().split()) == data["events_acked"]
    assert "password" not in summary.read_text() and "fleet simulation" in out.output

    out = runner.invoke(bridge_app, [*base, "--deprovision", "--store-prefix", "cli"])
    assert out.exit_code == 0 and "revoked 5" in out.output, out.output
    assert "cli-" not in (d / "passby.acl").read_text()
