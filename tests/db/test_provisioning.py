"""Sensor provisioning: hashed credentials, one-time pairing codes, broker files, enroll over HTTP."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from engine_helpers import bridge_location, database_setting, table_names
from typer.testing import CliRunner

from cloud_bridge.cli.main import app as bridge_app
from cloud_bridge.config import BridgeSettings, MqttSettings, ProvisioningSettings
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.sensors.provisioning import (
    PairingError,
    ProvisioningError,
    add_sensor,
    mosquitto_hash,
    mosquitto_verify,
    redeem,
    render_acl,
    revoke_sensor,
)
from cloud_bridge.service import WebServer
from cloud_bridge.storage.fleet import pairing_code_rows
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.web.app import create_app
from edge_agent.adapters.enroll import EnrollError, enroll
from edge_agent.config import EdgeSettings, load_settings

SITE_KEY = "00112233445566778899aabbccddeeff"


def _settings(tmp_path: Path, db_location: str | Path, **provisioning: object) -> BridgeSettings:
    return BridgeSettings(
        data_dir=tmp_path / "bridge",
        database=str(bridge_location(db_location, tmp_path / "bridge")),
        data_key="ab" * 32,
        public_url="http://127.0.0.1:1",
        mqtt=MqttSettings(host="broker.internal", username="bridge", password="bridge-secret"),
        provisioning=ProvisioningSettings(
            mqtt_host="mqtt.example.com",
            **provisioning,  # type: ignore[arg-type]
        ),
    )


@pytest.fixture()
def env(tmp_path: Path, db_location):
    settings = _settings(
        tmp_path,
        db_location,
        password_file=tmp_path / "mosquitto" / "passby.passwd",
        acl_file=tmp_path / "mosquitto" / "passby.acl",
    )
    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    for store_id in ("main-st", "a.b", "a"):
        store.upsert_store(
            {
                "id": store_id,
                "name": store_id,
                "timezone": "Europe/Moscow",
                "country": "RU",
                "sender_name": "Shop",
                "site_key": SITE_KEY,
            }
        )
    yield store, settings
    store.close()


def _all_text(store: BridgeStore) -> str:
    """Every value in every table, for 'is this secret stored anywhere' checks."""
    out = []
    for name in table_names(store):
        for row in store.db.execute(f"SELECT * FROM {name}"):
            out += [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row]
    return "\n".join(out)


def test_add_and_pair_once_stores_only_hashes(env) -> None:
    store, settings = env
    done = add_sensor(store, settings, "main-st", "door-1", channel=6)
    assert done.username == "main-st.door-1" and len(done.code) == 11
    cfg = redeem(store, settings, done.code.lower())  # case and dash do not matter
    assert (cfg.store_id, cfg.sensor_id, cfg.channel) == ("main-st", "door-1", 6)
    assert cfg.site_key == SITE_KEY and cfg.bridge_url == settings.public_url
    assert cfg.roster_public_key == BridgeKeys(settings.data_dir).public_key_hex()
    m = cfg.mqtt
    assert (m.host, m.port, m.tls, m.username) == ("mqtt.example.com", 8883, True, done.username)
    everything = _all_text(store)
    assert m.password not in everything and cfg.api_token not in everything
    assert cfg.api_token.split(".")[2] not in everything
    row = store.sensor_credentials()[0]
    assert mosquitto_verify(m.password, row["mqtt_password_hash"])
    assert store.sensor_by_token(cfg.api_token) == ("main-st", "door-1")
    for bad in (cfg.api_token[:-1] + "x", "pbt1.nope.nope", "", "Bearer x", cfg.api_token + "."):
        assert store.sensor_by_token(bad) is None
    with pytest.raises(PairingError) as again:
        redeem(store, settings, done.code)
    assert again.value.status == 410 and "already used" in str(again.value)
    with pytest.raises(PairingError) as unknown:
        redeem(store, settings, "AAAAA-AAAAA")
    assert unknown.value.status == 404


def test_code_expires(env) -> None:
    store, settings = env
    done = add_sensor(store, settings, "main-st", "door-1", now=time.time() - 4 * 86400)
    with pytest.raises(PairingError, match="expired"):
        redeem(store, settings, done.code)
    assert pairing_code_rows(store)[0]["sealed"] is None


def redeem_at_once(
    store: BridgeStore, settings: BridgeSettings, code: str, workers: int
) -> list[object]:
    """``workers`` threads, each with its own store (a bridge worker), redeem ``code`` at the
    same moment: the config, or the refusal's HTTP status, or another exception, each."""
    go = threading.Barrier(workers)
    outcomes: list[object] = []

    def worker() -> None:
        own = BridgeStore(store.location, data_key=settings.data_key_bytes())
        try:
            go.wait()
            try:
                outcomes.append(redeem(own, settings, code))
            except PairingError as exc:
                outcomes.append(exc.status)
            except Exception as exc:  # reported by the assertion
                outcomes.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_a_code_redeemed_by_racing_workers_pairs_once(env) -> None:
    """Bridge workers handed the same code at the same moment: one gets the credentials, the
    others are told it was used."""
    store, settings = env
    for n in range(3):
        done = add_sensor(store, settings, "main-st", f"door-{n}")
        outcomes = redeem_at_once(store, settings, done.code, 6)
        paired = [o for o in outcomes if not isinstance(o, (int, Exception))]
        assert len(paired) == 1 and outcomes.count(410) == 5, outcomes


def test_rotate_voids_old_code_and_credentials(env) -> None:
    store, settings = env
    first = add_sensor(store, settings, "main-st", "door-1")
    old = redeem(store, settings, first.code)
    with pytest.raises(ProvisioningError, match="--rotate"):
        add_sensor(store, settings, "main-st", "door-1")
    unused = add_sensor(store, settings, "main-st", "door-1", rotate=True)
    second = add_sensor(store, settings, "main-st", "door-1", rotate=True)
    with pytest.raises(PairingError, match="replaced"):
        redeem(store, settings, unused.code)
    new = redeem(store, settings, second.code)
    assert store.sensor_by_token(old.api_token) is None
    assert store.sensor_by_token(new.api_token) == ("main-st", "door-1")
    with pytest.raises(ProvisioningError, match="no sensor"):
        add_sensor(store, settings, "main-st", "door-9", rotate=True)


def test_unknown_store_bad_id_and_ambiguous_user_name_refused(env) -> None:
    store, settings = env
    with pytest.raises(ProvisioningError, match="unknown store"):
        add_sensor(store, settings, "nowhere", "door-1")
    with pytest.raises(ProvisioningError, match="does not match"):
        add_sensor(store, settings, "main-st", "door/1")
    add_sensor(store, settings, "a.b", "c")
    # store "a" + sensor "b.c" would also be broker user "a.b.c": refused, never shared
    with pytest.raises(ProvisioningError, match="already belongs to sensor a.b/c"):
        add_sensor(store, settings, "a", "b.c")
    assert add_sensor(store, settings, "main-st").sensor_id == "sensor-1"
    assert add_sensor(store, settings, "main-st").sensor_id == "sensor-2"


def test_broker_files_follow_the_sensor_list(env) -> None:
    store, settings = env
    p = settings.provisioning
    assert p.password_file is not None and p.acl_file is not None
    p.password_file.parent.mkdir(parents=True)
    p.password_file.write_text("admin:" + mosquitto_hash("admin-pw") + "\n")
    os.chmod(p.password_file, 0o600)
    add_sensor(store, settings, "main-st", "door-1")
    add_sensor(store, settings, "main-st", "door-2")
    users = dict(line.split(":", 1) for line in p.password_file.read_text().splitlines())
    assert set(users) == {"admin", "bridge", "main-st.door-1", "main-st.door-2"}
    assert mosquitto_verify("admin-pw", users["admin"])  # the admin's line is kept
    assert mosquitto_verify("bridge-secret", users["bridge"])  # from the bridge's settings
    assert stat.S_IMODE(p.password_file.stat().st_mode) == 0o600  # mode kept
    acl = p.acl_file.read_text()
    assert acl == render_acl("bridge", [("main-st", "door-1"), ("main-st", "door-2")])
    assert "user main-st.door-2\ntopic write passby/v1/main-st/door-2/status" in acl
    revoke_sensor(store, settings, "main-st", "door-1")
    users = dict(line.split(":", 1) for line in p.password_file.read_text().splitlines())
    assert set(users) == {"admin", "bridge", "main-st.door-2"}
    assert "door-1" not in p.acl_file.read_text()
    with pytest.raises(ProvisioningError):
        revoke_sensor(store, settings, "main-st", "door-1")


def test_sighup_reloads_broker(env, tmp_path: Path) -> None:
    store, settings = env
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import signal,sys,time\n"
         "signal.signal(signal.SIGHUP, lambda *a: sys.exit(7))\ntime.sleep(30)"]
    )  # fmt: skip
    try:
        pid_file = tmp_path / "mosquitto.pid"
        pid_file.write_text(f"{sleeper.pid}\n")
        time.sleep(0.3)  # let it install its handler
        settings.provisioning.broker_pid_file = pid_file
        done = add_sensor(store, settings, "main-st", "door-1")
        assert done.broker.reloaded_pid == sleeper.pid
        assert sleeper.wait(timeout=10) == 7
        pid_file.write_text("999999999\n")
        done = add_sensor(store, settings, "main-st", "door-2")
        assert done.broker.reloaded_pid is None and "reload it by hand" in done.broker.notes[0]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_enroll_over_http_writes_private_files_once(env, tmp_path: Path) -> None:
    store, settings = env
    web = WebServer(create_app(store, settings), "127.0.0.1", 0)
    web.start()
    try:
        settings.public_url = web.url
        first = add_sensor(store, settings, "main-st", "door-1", channel=11)
        out = tmp_path / "etc" / "passby"
        path, cfg = enroll(first.code, web.url, out)
        assert stat.S_IMODE(out.stat().st_mode) == 0o700
        for name in ("edge.toml", "site.key", "mqtt.password", "api.token"):
            assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
        text = path.read_text()
        assert cfg.mqtt.password not in text and cfg.api_token not in text and SITE_KEY not in text
        edge = load_settings(EdgeSettings, path)
        assert (edge.store_id, edge.sensor_id, edge.channel) == ("main-st", "door-1", 11)
        assert edge.site_key_bytes() == bytes.fromhex(SITE_KEY)
        assert edge.mqtt.password_value() == cfg.mqtt.password
        assert edge.mqtt.username == "main-st.door-1" and edge.mqtt.tls
        assert store.sensor_by_token(edge.api_token_value() or "") == ("main-st", "door-1")
        assert edge.bridge_url == web.url and edge.data_dir == out / "data"

        # A second enrolment into the same place is refused before the new code is spent.
        second = add_sensor(store, settings, "main-st", "door-1", rotate=True)
        with pytest.raises(EnrollError, match="already exists"):
            enroll(second.code, web.url, out)
        path2, cfg2 = enroll(second.code, web.url, out, force=True)
        assert cfg2.mqtt.password != cfg.mqtt.password
        with pytest.raises(EnrollError, match=r"\(410\).*already used"):
            enroll(second.code, web.url, tmp_path / "other")
        with pytest.raises(EnrollError, match=r"\(404\)"):
            enroll("ZZZZZ-ZZZZZ", web.url, tmp_path / "other")
        with pytest.raises(EnrollError, match="cannot reach the bridge"):
            enroll("ZZZZZ-ZZZZZ", "http://127.0.0.1:9", tmp_path / "other")
    finally:
        web.stop()


def test_cli_add_list_revoke(tmp_path: Path, db_location) -> None:
    # PASSBY_DATA_KEY (set for a PostgreSQL store) would win over the file's data_key
    data_key = os.environ.get("PASSBY_DATA_KEY") or secrets.token_hex(32)
    toml = tmp_path / "bridge.toml"
    location = bridge_location(db_location, tmp_path / "bridge")
    toml.write_text(
        f'data_dir = "{tmp_path / "bridge"}"\ndata_key = "{data_key}"\n'
        + database_setting(location)
        + 'public_url = "https://bridge.example"\n[provisioning]\nmqtt_host = "mqtt.example"\n'
    )
    store = BridgeStore(location, data_key=bytes.fromhex(data_key))
    store.upsert_store(
        {
            "id": "main-st",
            "name": "Main St",
            "timezone": "UTC",
            "country": "RU",
            "sender_name": "Shop",
            "site_key": SITE_KEY,
        }
    )
    store.close()
    runner = CliRunner()
    out = runner.invoke(bridge_app, ["sensors", "add", "--store", "main-st", "-c", str(toml)])
    assert out.exit_code == 0, out.output
    assert "pairing code: " in out.output and "broker user main-st.sensor-1" in out.output
    assert "edge-agent enroll " in out.output and "--bridge https://bridge.example" in out.output
    assert "main-st.sensor-1:$7$101$" in out.output  # no password_file configured: printed
    assert "topic read passby/v1/main-st/sensor-1/cmd/#" in out.output
    out = runner.invoke(bridge_app, ["sensors", "list", "-c", str(toml)], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "main-st.sensor-1" in out.output and "code open" in out.output
    again = ["sensors", "add", "--store", "main-st", "--sensor", "sensor-1", "-c", str(toml)]
    out = runner.invoke(bridge_app, again)
    assert out.exit_code == 2 and "--rotate" in out.output
    revoke = ["sensors", "revoke", "--store", "main-st", "--sensor", "sensor-1", "-c", str(toml)]
    assert runner.invoke(bridge_app, revoke).exit_code == 0
    out = runner.invoke(bridge_app, ["sensors", "list", "-c", str(toml)], env={"COLUMNS": "200"})
    assert "revoked" in out.output
