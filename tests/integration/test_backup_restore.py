"""Backups that restore: deploy/cloud's scripts against a running bridge and a real PostgreSQL.

SQLite: the bridge ingests events through Mosquitto and decides while backup-sqlite.sh copies
its store; restore-sqlite.sh puts the copy in a new directory; then the same events get the
same decisions from the original and the restored store (replays capped the same way,
duplicates dropped the same way). PostgreSQL: backup-postgres.sh / restore-postgres.sh and
postgresql/passby.sql against a throwaway PostgreSQL 15 cluster run as the postgres user.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cloud_bridge.config import BridgeSettings, load_settings
from cloud_bridge.delivery.providers import SandboxProvider
from cloud_bridge.dev.demo.run import prepare_site
from cloud_bridge.dev.mosquitto import LocalMosquitto, free_port
from cloud_bridge.ingest.consumer import IngestCounters, handle_message
from cloud_bridge.offers.worker import DecisionWorker
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.service import BridgeService
from cloud_bridge.storage.decisions import decision_rows
from cloud_bridge.storage.events import event_count, known_event_ids, progress
from cloud_bridge.storage.sends import send_rows
from cloud_bridge.storage.store import BridgeStore
from edge_agent.roster import subject_id

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLOUD = ROOT / "deploy" / "cloud"
TOPIC = "passby/v1/main-st/door-1/events"
CONSENTING = ("C-1001", "C-1002", "C-1003")  # Anna, Boris, Carmen
NO_CONSENT = "C-1004"  # Dmitri


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if not path:
        pytest.fail(f"{binary} is not installed: apt-get install {package}", pytrace=False)
    return path


def run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert res.returncode == 0, f"{args[0]} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res.stdout


def event(
    keys: BridgeKeys, crm_id: str, type_: str, ts: float, event_id: str | None = None
) -> tuple[str, bytes]:
    eid = event_id or uuid.uuid4().hex
    body = {
        "schema": "passby.event/1",
        "event_id": eid,
        "type": type_,
        "subject": subject_id(keys.subject_key, crm_id),
        "ts": ts,
        "first_seen": ts - 20,
        "last_seen": ts,
        "rssi": {"max": -58, "median": -63},
        "frames": 14,
        "dwell_s": 0 if type_ == "arrive" else 30,
    }
    return eid, json.dumps(body).encode()


def wait_for(what: str, check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}", pytrace=False)


def settled(db: BridgeStore, n_events: int) -> bool:
    row = progress(db)
    return row["n"] >= n_events and not row["pending"] and not row["unsent"]


def decisions_for(db_path: Path, keys: BridgeKeys, replay: list[tuple[str, bytes]], now: float):
    """Ingest ``replay`` into a store and decide: what happened to each event, in order."""
    store = BridgeStore(db_path)
    try:
        counters = IngestCounters()
        ingested = [handle_message(store, TOPIC, payload, now, counters) for _, payload in replay]
        DecisionWorker(store, SandboxProvider(store)).process_pending(now=now)
        outcome = []
        for (eid, _), kind in zip(replay, ingested, strict=True):
            rows = [d for d in decision_rows(store) if d["event_id"] == eid]
            outcome.append((kind, [(r["outcome"], r["reason"], r["campaign_id"]) for r in rows]))
        return outcome
    finally:
        store.close()


def test_sqlite_backup_while_the_bridge_runs_restores_to_the_same_decisions(
    tmp_path: Path,
) -> None:
    need("sqlite3", "sqlite3")
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    service = None
    publisher = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="door-1-test", protocol=mqtt.MQTTv5
    )
    try:
        site = prepare_site(tmp_path, broker.port, 0)
        data_dir = tmp_path / "bridge"
        keys = site.keys
        service = BridgeService(load_settings(BridgeSettings, site.bridge_toml), web=False)
        service.start()
        assert service.ingest.connected.wait(10), "bridge could not connect to Mosquitto"
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()

        # 1. Everyone arrives once: the three who consented get the offer, Dmitri does not.
        now = time.time()
        first = [event(keys, crm, "arrive", now) for crm in (*CONSENTING, NO_CONSENT)]
        for _, payload in first:
            publisher.publish(TOPIC, payload, qos=1).wait_for_publish(10)
        wait_for("the first arrivals to be decided", lambda: settled(site.db, len(first)))
        sends = send_rows(site.db)
        assert len(sends) == 3 and "failed" not in {r["state"] for r in sends}, sends

        # 2. The bridge keeps ingesting and deciding (leaves; Dmitri walking by) while we back up.
        stop = threading.Event()
        noise = {"n": 0}

        def keep_publishing() -> None:
            while not stop.is_set():
                crm, kind = (NO_CONSENT, "arrive") if noise["n"] % 2 else ("C-1001", "leave")
                publisher.publish(TOPIC, event(keys, crm, kind, time.time())[1], qos=1)
                noise["n"] += 1
                time.sleep(0.005)

        writer = threading.Thread(target=keep_publishing, daemon=True)
        writer.start()
        wait_for("the bridge to be busy", lambda: noise["n"] > 50)
        events_at_start = event_count(site.db)
        out = run(CLOUD / "backup-sqlite.sh", "--data-dir", data_dir, "--out", tmp_path / "backups",
                  "--no-broker")  # fmt: skip
        events_at_end = event_count(site.db)
        wait_for("more writes after the backup", lambda: noise["n"] > events_at_end + 50)
        stop.set()
        writer.join(5)
        assert events_at_end > events_at_start, (
            "the bridge must have been writing during the backup"
        )
        archive = Path(out.strip().splitlines()[-1])
        assert archive.is_file() and oct(archive.stat().st_mode & 0o777) == "0o600"
        wait_for("the noise to be decided", lambda: settled(site.db, events_at_end))
        service.stop()
        service = None

        # 3. Restore into a new place (nothing there yet; a second restore needs --force).
        restored = tmp_path / "restored"
        run(CLOUD / "restore-sqlite.sh", archive, "--data-dir", restored)
        again = subprocess.run(
            [str(CLOUD / "restore-sqlite.sh"), str(archive), "--data-dir", str(restored)],
            capture_output=True,
            text=True,
        )
        assert again.returncode != 0 and "--force" in again.stderr
        assert sorted(p.name for p in (restored / "keys").iterdir()) == sorted(
            p.name for p in (data_dir / "keys").iterdir()
        )
        conn = sqlite3.connect(restored / "bridge.db")
        n_restored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        assert events_at_start <= n_restored <= events_at_end + 1  # a snapshot from the window

        # 4. The same events, decided by the original and by the restored store.
        later = time.time()
        replay = [event(keys, crm, "arrive", later, f"{i:032x}") for i, crm in enumerate(
            (*CONSENTING, NO_CONSENT), start=1
        )]  # fmt: skip
        replay += first  # the very same messages again: duplicates
        site.db.close()
        original = decisions_for(data_dir / "bridge.db", keys, replay, later)
        from_backup = decisions_for(restored / "bridge.db", keys, replay, later)
        assert from_backup == original
        capped = [("event", [("skip", "campaign_cap", "fav-15")])] * 3
        assert original[:3] == capped, original[:3]  # one SMS per campaign per 30 days
        assert original[3][0] == "event" and original[3][1][0][1] == "no_sms_consent"
        # Duplicates are dropped: each still has only its first decision (sent; no consent).
        assert [kind for kind, _ in original[4:]] == ["duplicate"] * 4
        assert [d[0][1] for _, d in original[4:]] == ["sent"] * 3 + ["no_sms_consent"]
        assert all(len(d) == 1 for _, d in original[4:])
    finally:
        if service is not None:
            service.stop()
        publisher.loop_stop()
        publisher.disconnect()
        broker.stop()


# PostgreSQL ---------------------------------------------------------------------------------
def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql", pytrace=False)
    return found[-1].parent


@pytest.fixture()
def postgres():  # type: ignore[no-untyped-def]
    """A throwaway cluster owned by the postgres user (initdb refuses root), trust auth on a
    private unix socket only. Yields the libpq environment for it."""
    bindir = pg_bin()
    base = Path(tempfile.mkdtemp(prefix="passby-pg-"))  # under /tmp: postgres must reach it
    shutil.chown(base, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    conf = base / "90-passby.conf"
    shutil.copy(CLOUD / "postgresql" / "90-passby.conf", conf)
    port = str(free_port())
    try:
        run(*as_pg, bindir / "initdb", "-D", base / "data", "--auth=trust", "-U", "postgres",
            "-E", "UTF8", "--locale=C")  # fmt: skip
        with open(base / "data" / "postgresql.conf", "a") as fh:
            fh.write(f"\ninclude '{conf}'\n")
        run(*as_pg, bindir / "pg_ctl", "-D", base / "data", "-l", base / "log", "-w", "-o",
            f"-k {base} -p {port} -c listen_addresses=''", "start")  # fmt: skip
        env = {"PGHOST": str(base), "PGPORT": port, "PGUSER": "postgres",
               "PATH": f"{bindir}:{os.environ['PATH']}"}  # fmt: skip
        yield env
    finally:
        subprocess.run(
            [*as_pg, str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "fast", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


def psql(env: dict[str, str], sql: str, db: str = "postgres", user: str = "postgres") -> str:
    return run("psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", db, "-c", sql, env=env)


def test_postgres_backup_and_restore(postgres: dict[str, str], tmp_path: Path) -> None:
    env = postgres
    # The role and database script is idempotent and the settings file loads.
    for _ in range(2):
        run("psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", CLOUD / "postgresql/passby.sql", env=env)
    assert psql(env, "SELECT datname FROM pg_database WHERE datname='passby'").strip() == "passby"
    assert psql(env, "SHOW log_min_duration_statement").strip() == "500ms"

    psql(env, "CREATE TABLE customers (id int PRIMARY KEY, name text, phone text);"
         "CREATE TABLE sends (id serial PRIMARY KEY, customer_id int REFERENCES customers(id),"
         " body text, ts double precision)", db="passby", user="passby")  # fmt: skip
    psql(env, "INSERT INTO customers VALUES (1, 'Анна', '+79161234501'), (2, 'Boris', NULL);"
         "INSERT INTO sends (customer_id, body, ts) SELECT 1 + g % 2, 'Ձեր զեղչը ' || g, g"
         " FROM generate_series(1, 500) g", db="passby", user="passby")  # fmt: skip
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "data.key").write_text("ab" * 32 + "\n")
    (keys / "subject.key").write_bytes(os.urandom(32))

    broker, certs = tmp_path / "broker", tmp_path / "certs"
    broker.mkdir()
    (broker / "passby.passwd").write_text("bridge:$7$101$c2FsdA==$aGFzaA==\n")
    (broker / "passby.acl").write_text("user bridge\ntopic read passby/v1/#\n")
    run(CLOUD / "tls-setup.sh", "--name", "mqtt.example.com", "--out", certs)
    out = run(CLOUD / "backup-postgres.sh", "--dbname", "passby", "--keys-dir", keys,
              "--out", tmp_path / "backups", "--broker-dir", broker, "--certs-dir", certs,
              env=env)  # fmt: skip
    archive = Path(out.strip().splitlines()[-1])
    assert archive.name.startswith("passby-pg-") and archive.stat().st_mode & 0o077 == 0

    psql(env, "CREATE DATABASE restored OWNER passby")
    keys2 = tmp_path / "restored-keys"
    broker2, certs2 = tmp_path / "new" / "broker", tmp_path / "new" / "certs"
    run(CLOUD / "restore-postgres.sh", archive, "--dbname", "restored", "--keys-dir", keys2,
        "--broker-dir", broker2, "--certs-dir", certs2, env=env)  # fmt: skip
    for name in ("passby.passwd", "passby.acl"):
        assert (broker2 / name).read_bytes() == (broker / name).read_bytes(), name
    for name in ("ca.crt", "ca.key", "broker.crt", "broker.key"):
        assert (certs2 / name).read_bytes() == (certs / name).read_bytes(), name
    assert oct((certs2 / "ca.key").stat().st_mode & 0o777) == "0o600"
    query = "SELECT c.name, count(s.id), sum(s.ts) FROM customers c LEFT JOIN sends s ON s.customer_id=c.id GROUP BY 1 ORDER BY 1"
    assert psql(env, query, db="restored") == psql(env, query, db="passby")
    assert "Анна" in psql(env, query, db="restored")
    assert (keys2 / "data.key").read_bytes() == (keys / "data.key").read_bytes()
    assert oct((keys2 / "subject.key").stat().st_mode & 0o777) == "0o600"

    refused = subprocess.run(
        [str(CLOUD / "restore-postgres.sh"), str(archive), "--dbname", "restored",
         "--keys-dir", str(keys2), "--no-broker"],
        capture_output=True, text=True, env={**os.environ, **env},
    )  # fmt: skip
    assert refused.returncode != 0 and "not empty" in refused.stderr
    psql(env, "DELETE FROM sends WHERE id > 10", db="restored")
    (broker2 / "passby.acl").write_text("changed since\n")
    run(CLOUD / "restore-postgres.sh", archive, "--dbname", "restored", "--keys-dir", keys2,
        "--broker-dir", broker2, "--certs-dir", certs2, "--force", env=env)  # fmt: skip
    assert (broker2 / "passby.acl").read_bytes() == (broker / "passby.acl").read_bytes()
    aside = list((tmp_path / "new").glob("passby-broker.pre-restore-*/passby.acl"))
    assert [p.read_text() for p in aside] == ["changed since\n"]
    assert psql(env, query, db="restored") == psql(env, query, db="passby")
    assert any(p.name.startswith("restored-keys.pre-restore-") for p in tmp_path.iterdir())


# The broker's side: CA and key, password file and ACL ---------------------------------------
def _sensor_client(ca: Path, port: int, username: str, password: str) -> tuple[mqtt.Client, object]:
    """Connect over TLS verifying 'localhost' with ``ca``: (client, CONNACK reason or error)."""
    import ssl

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"{username}-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )  # fmt: skip
    client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    client.username_pw_set(username, password)
    done = threading.Event()
    result: list[object] = []
    client.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
    try:
        client.connect("localhost", port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:
        return client, exc
    client.loop_start()
    done.wait(10)
    return client, result[0] if result else "no CONNACK"


def _bridge_toml(path: Path, root: Path, port: int) -> Path:
    path.write_text(
        f'data_dir = "{root / "bridge"}"\npublic_url = "https://bridge.example.com"\n\n'
        f'[mqtt]\nhost = "localhost"\nport = {port}\ntls = true\n'
        f'ca_file = "{root / "certs" / "ca.crt"}"\nusername = "bridge"\n'
        f'password_file = "{root / "bridge-mqtt.password"}"\n\n'
        '[provider]\nkind = "sandbox"\n\n[web]\nhost = "127.0.0.1"\nport = 0\n\n'
        f'[provisioning]\npassword_file = "{root / "broker" / "passby.passwd"}"\n'
        f'acl_file = "{root / "broker" / "passby.acl"}"\nmqtt_host = "localhost"\n'
        f'mqtt_port = {port}\nmqtt_ca_file = "{root / "certs" / "ca.crt"}"\n'
    )
    return path


def _start_deploy_broker(root: Path, port: int) -> subprocess.Popen[bytes]:
    """deploy/mosquitto's config with its paths in ``root``, started as root so that Mosquitto
    drops to its own 'mosquitto' user: it must read the restored files as that user."""
    import re

    from cloud_bridge.dev.mosquitto import find_mosquitto

    conf = (ROOT / "deploy/mosquitto/passby.conf.example").read_text()
    conf = re.sub(
        r"^password_file .*", f"password_file {root}/broker/passby.passwd", conf, flags=re.M
    )
    conf = re.sub(r"^acl_file .*", f"acl_file {root}/broker/passby.acl", conf, flags=re.M)
    conf = conf.replace("/etc/mosquitto/certs", str(root / "certs"))
    conf = re.sub(r"^listener 8883$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    assert f"listener {port} 127.0.0.1" in conf
    main = root / "mosquitto.conf"
    main.write_text("persistence false\nlog_dest stderr\n" + conf)
    main.chmod(0o644)
    proc = subprocess.Popen(
        [find_mosquitto(), "-c", str(main)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    pytest.fail(f"Mosquitto did not start from {root}:\n{err[-2000:]}", pytrace=False)


def test_backup_restores_bridge_and_broker_into_an_empty_directory() -> None:
    """backup-sqlite.sh takes the broker's CA and key, password file and ACL with the store;
    restore-sqlite.sh puts all of it into empty directories; a real Mosquitto (running as its
    own user) and the bridge start from the restored files alone, and the sensor provisioned
    before the backup connects with the same credentials and is heard by the bridge."""
    import grp

    from cloud_bridge.sensors.provisioning import redeem

    need("sqlite3", "sqlite3")
    need("openssl", "openssl")
    assert os.geteuid() == 0, "this test checks the files' owners as root installs them"
    mosquitto_gid = grp.getgrnam("mosquitto").gr_gid
    base = Path(tempfile.mkdtemp(prefix="passby-restore-"))  # under /tmp: mosquitto reaches it
    base.chmod(0o755)
    old, new = base / "old", base / "new"
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    service = None
    clients: list[mqtt.Client] = []
    try:
        # 1. An installed server: certificates (tls-setup.sh), a store, a provisioned sensor.
        old.mkdir(mode=0o755)
        run(CLOUD / "tls-setup.sh", "--name", "mqtt.example.com", "--out", old / "certs",
            "--group", "mosquitto")  # fmt: skip
        site = prepare_site(old, 0, 0)
        site.db.close()
        (old / "bridge-mqtt.password").write_text("bridge-secret-" + uuid.uuid4().hex + "\n")
        (old / "broker").mkdir(mode=0o750)
        os.chown(old / "broker", 0, mosquitto_gid)
        toml = _bridge_toml(old / "bridge.toml", old, port)
        out = run(ROOT / ".venv/bin/cloud-bridge", "sensors", "add", "--store", "main-st",
                  "--sensor", "door-9", "-c", toml)  # fmt: skip
        code = next(
            line.split()[2] for line in out.splitlines() if line.startswith("pairing code:")
        )
        settings = load_settings(BridgeSettings, toml)
        store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
        paired = redeem(store, settings, code)
        store.close()
        username, password = paired.mqtt.username, paired.mqtt.password
        assert username == "main-st.door-9"
        ca_key_before = (old / "certs" / "ca.key").read_bytes()

        # 2. Back up, then the server is gone: nothing of it is used from here on.
        out = run(CLOUD / "backup-sqlite.sh", "--data-dir", old / "bridge",
                  "--broker-dir", old / "broker", "--certs-dir", old / "certs",
                  "--out", base / "backups")  # fmt: skip
        archive = Path(out.strip().splitlines()[-1])
        with __import__("tarfile").open(archive) as tar:
            names = set(tar.getnames())
        for member in ("./broker/passby.passwd", "./broker/passby.acl", "./certs/ca.key",
                       "./certs/ca.crt", "./certs/broker.crt", "./certs/broker.key"):  # fmt: skip
            assert member in names, f"{member} is not in the backup: {sorted(names)}"
        bridge_secret = (old / "bridge-mqtt.password").read_text()
        shutil.rmtree(old)

        # 3. Restore into empty directories (a new server: the installer made the broker dir).
        new.mkdir(mode=0o755)
        (new / "broker").mkdir(mode=0o750)
        os.chown(new / "broker", 0, mosquitto_gid)
        (new / "bridge-mqtt.password").write_text(bridge_secret)
        run(CLOUD / "restore-sqlite.sh", archive, "--data-dir", new / "bridge",
            "--broker-dir", new / "broker", "--certs-dir", new / "certs",
            "--broker-group", "mosquitto")  # fmt: skip
        assert (new / "certs" / "ca.key").read_bytes() == ca_key_before
        assert oct((new / "certs" / "ca.key").stat().st_mode & 0o777) == "0o600"
        key = (new / "certs" / "broker.key").stat()
        assert (key.st_gid, oct(key.st_mode & 0o777)) == (mosquitto_gid, "0o640")
        for f in ("passby.passwd", "passby.acl"):
            st = (new / "broker" / f).stat()
            assert (st.st_gid, oct(st.st_mode & 0o777)) == (mosquitto_gid, "0o640"), f
        again = subprocess.run(
            [str(CLOUD / "restore-sqlite.sh"), str(archive), "--data-dir", str(base / "other"),
             "--broker-dir", str(new / "broker"), "--certs-dir", str(new / "certs")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert again.returncode != 0 and "--force" in again.stderr, again.stderr

        # 4. The broker and the bridge start from the restored files alone.
        procs.append(_start_deploy_broker(new, port))
        settings = load_settings(BridgeSettings, _bridge_toml(new / "bridge.toml", new, port))
        service = BridgeService(settings, web=False)
        service.start()
        assert service.ingest.connected.wait(15), "the bridge could not log in to the broker"

        # 5. The same sensor credentials: connected, heard; a wrong password is refused.
        client, rc = _sensor_client(new / "certs" / "ca.crt", port, username, password)
        clients.append(client)
        assert getattr(rc, "is_failure", True) is False, f"sensor refused after restore: {rc}"
        eid, payload = event(site.keys, "C-1001", "arrive", time.time())
        topic = "passby/v1/main-st/door-9/events"
        client.publish(topic, payload, qos=1).wait_for_publish(10)
        restored_db = BridgeStore(new / "bridge" / "bridge.db")
        try:
            wait_for(
                "the restored bridge to store the sensor's event",
                lambda: bool(known_event_ids(restored_db, [eid])),
            )
        finally:
            restored_db.close()
        wrong, rc = _sensor_client(new / "certs" / "ca.crt", port, username, password[:-2] + "xx")
        clients.append(wrong)
        assert getattr(rc, "is_failure", False) is True, f"a wrong password got in: {rc}"

        # 6. Without the broker's files (a backup made with --no-broker): the store rebuilds them.
        procs.pop().terminate()
        for f in ("passby.passwd", "passby.acl"):
            (new / "broker" / f).unlink()
        out = run(ROOT / ".venv/bin/cloud-bridge", "sensors", "sync-broker", "-c",
                  new / "bridge.toml")  # fmt: skip
        assert "passby.passwd" in out and "passby.acl" in out, out
        procs.append(_start_deploy_broker(new, port))
        again, rc = _sensor_client(new / "certs" / "ca.crt", port, username, password)
        clients.append(again)
        assert getattr(rc, "is_failure", True) is False, f"sensor refused after sync-broker: {rc}"
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        if service is not None:
            service.stop()
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(base, ignore_errors=True)
