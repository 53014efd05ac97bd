"""deploy/ read as files: systemd units' sandboxing, udev, journald and NetworkManager drop-ins,
config examples, the compose file, docs that name real sources and commands; signed agent
updates and sd_notify in this process. (tests/integration/test_deploy.py runs the scripts,
installers, shellcheck, systemd-analyze and a real Mosquitto.)"""

from __future__ import annotations

import io
import os
import re
import socket
import stat
import sys
import tarfile
import time
import tomllib
from pathlib import Path

import pytest
from deploy_helpers import (
    CLOUD,
    EDGE,
    PG_DATABASE,
    ROOT,
    _compose,
    _mounts,
    one,
    parse_unit,
    release,
    sh,
    upd,
    values,
)

from edge_agent.adapters.sdnotify import SdNotifier, notify
from edge_agent.doctor import KNOWN_GOOD

CAPS = {"CAP_NET_RAW", "CAP_NET_ADMIN"}


def test_agent_unit_sandbox() -> None:
    u = parse_unit(EDGE / "systemd/passby-agent.service")
    assert set(one(u, "Service", "AmbientCapabilities").split()) == CAPS
    assert set(one(u, "Service", "CapabilityBoundingSet").split()) == CAPS
    assert one(u, "Service", "NoNewPrivileges") == "yes"
    assert one(u, "Service", "ProtectSystem") == "strict"
    assert one(u, "Service", "ReadWritePaths") == "/var/lib/passby"
    assert "PASSBY_DATA_DIR=/var/lib/passby" in one(u, "Service", "Environment").split()
    assert one(u, "Service", "User") == "passby"
    assert re.fullmatch(r"\d+[KMG]", one(u, "Service", "MemoryMax"))
    assert one(u, "Service", "Restart") in ("always", "on-failure")
    assert one(u, "Service", "Type") == "notify"
    assert int(one(u, "Service", "WatchdogSec")) >= 30
    assert "--iface wlan-mon" in one(u, "Service", "ExecStart")
    assert "passby-monitor.service" in one(u, "Unit", "Requires")
    assert "AF_PACKET" in one(u, "Service", "RestrictAddressFamilies")


def test_bridge_unit_sandbox() -> None:
    u = parse_unit(CLOUD / "systemd/passby-bridge.service")
    assert one(u, "Service", "CapabilityBoundingSet") == ""
    assert one(u, "Service", "NoNewPrivileges") == "yes"
    assert one(u, "Service", "ProtectSystem") == "strict"
    assert one(u, "Service", "User") == "passby"
    rw = one(u, "Service", "ReadWritePaths").split()
    assert rw == ["/var/lib/passby-bridge", "-/etc/mosquitto/passby"]
    assert re.fullmatch(r"\d+[KMG]", one(u, "Service", "MemoryMax"))


def test_bridge_worker_unit_is_the_bridge_unit_without_console() -> None:
    """Same user, environment (so the same data_dir/keys/data.key) and sandbox as the main unit;
    runs `cloud-bridge run --no-console --worker-id <instance>`; follows passby-bridge.service."""
    from typer.main import get_command

    from cloud_bridge.cli.main import app as bridge_app

    main = parse_unit(CLOUD / "systemd/passby-bridge.service")
    worker = parse_unit(CLOUD / "systemd/passby-bridge-worker@.service")
    exec_main, exec_worker = one(main, "Service", "ExecStart"), one(worker, "Service", "ExecStart")
    assert exec_worker == exec_main + " --no-console --worker-id %i"
    run = get_command(bridge_app).commands["run"]  # type: ignore[attr-defined]
    run_opts = {o for p in run.params for o in (*p.opts, *p.secondary_opts)}
    assert {"--config", "--no-console", "--worker-id"} <= run_opts
    own = {"ExecStart", "ReadWritePaths", "SyslogIdentifier"}
    same = [(k, v) for k, v in main["Service"] if k not in own]
    account = ("Environment", "PASSBY_MQTT__USERNAME=bridge-%i")  # one account per worker
    assert account in worker["Service"]
    assert [(k, v) for k, v in worker["Service"] if k not in own and (k, v) != account] == same
    assert one(worker, "Service", "ReadWritePaths") == "/var/lib/passby-bridge"  # no provisioning
    assert one(worker, "Service", "SyslogIdentifier") == "passby-bridge-%i"
    after = one(worker, "Unit", "After").split()
    assert {"postgresql.service", "mosquitto.service", "passby-bridge.service"} <= set(after)
    assert {"postgresql.service", "mosquitto.service"} <= set(one(worker, "Unit", "Wants").split())
    assert "passby-bridge.service" not in one(worker, "Unit", "Wants").split()
    assert not values(worker, "Unit", "Requires") and not values(worker, "Unit", "BindsTo")
    # stop/restart of the main unit (an upgrade) reaches the workers; starting it starts them
    assert one(worker, "Unit", "PartOf") == "passby-bridge.service"
    assert one(worker, "Install", "WantedBy") == "passby-bridge.service"


def test_doctor_fixes_name_what_the_installer_makes() -> None:
    from edge_agent.doctor import Facts, diagnose

    def fix(facts: Facts, name: str) -> str:
        return next(c.fix for c in diagnose(facts) if c.name == name)

    rule = (EDGE / "udev/70-passby-wlan-mon.rules").read_text()
    assert "the udev rule names it wlan-mon" in fix(Facts("wlan-mon"), "interface")
    assert 'NAME="wlan-mon"' in rule
    mon = Facts("wlan-mon", exists=True, wireless=True, arphrd=1, raw_error="EPERM")
    assert "the passby-monitor service does this" in fix(mon, "monitor-mode")
    assert (EDGE / "systemd/passby-monitor.service").exists()
    caps = re.findall(r"CAP_[A-Z_]+", fix(mon, "permissions"))
    assert set(caps) == CAPS


def test_udev_rule_names_exactly_the_known_good_adapters() -> None:
    rule = (EDGE / "udev/70-passby-wlan-mon.rules").read_text()
    drivers = re.search(r'DRIVERS=="([^"]+)"', rule)
    assert drivers, "the rule must match by USB driver"
    assert set(drivers.group(1).split("|")) == set(KNOWN_GOOD)
    rules = "\n".join(line for line in rule.splitlines() if not line.startswith("#"))
    assert "brcmfmac" not in rules  # the built-in Wi-Fi stays the uplink
    assert 'ENV{SYSTEMD_WANTS}+="passby-monitor.service"' in rule
    assert 'ENV{NM_UNMANAGED}="1"' in rule


def test_journald_dropin_uses_real_keys() -> None:
    """Each key of our drop-in is one systemd's own journald.conf documents (commented)."""
    stock = Path("/etc/systemd/journald.conf")
    if not stock.exists():
        pytest.fail("/etc/systemd/journald.conf missing: apt-get install systemd", pytrace=False)
    known = set(re.findall(r"^#?([A-Za-z]+)=", stock.read_text(), re.M))
    ours = parse_unit(EDGE / "journald/90-passby.conf")
    keys = {k for k, _ in ours["Journal"]}
    assert keys and keys <= known, keys - known
    assert dict(ours["Journal"])["SystemMaxUse"] == "64M"


def test_networkmanager_leaves_the_monitor_adapter_alone() -> None:
    text = (EDGE / "networkmanager/90-passby-unmanaged.conf").read_text()
    assert "unmanaged-devices=interface-name:wlan-mon" in text


def test_bridge_config_example_documents_scaling_settings(tmp_path: Path) -> None:
    """The commented database, worker_id and orphan_after_s lines are real settings with valid
    values: uncommented, the example still validates."""
    from cloud_bridge.config import BridgeSettings, load_settings

    text = (CLOUD / "bridge.toml.example").read_text()
    keys = ("database", "worker_id", "orphan_after_s")
    for key in keys:
        assert len(re.findall(rf"^# {key} = ", text, re.M)) == 1, key
        assert key in BridgeSettings.model_fields
    assert f'# database = "{PG_DATABASE}"' in text
    live = re.sub(rf"^# ({'|'.join(keys)}) = ", r"\1 = ", text, flags=re.M)
    (tmp_path / "bridge.toml").write_text(live)
    s = load_settings(BridgeSettings, tmp_path / "bridge.toml")
    assert s.database_path() == PG_DATABASE
    defaults = BridgeSettings.model_fields
    assert s.worker_id == defaults["worker_id"].default
    assert s.orphan_after_s == defaults["orphan_after_s"].default


def test_bridge_config_example_validates() -> None:
    from cloud_bridge.config import BridgeSettings, load_settings

    s = load_settings(BridgeSettings, CLOUD / "bridge.toml.example")
    assert str(s.data_dir) == "/var/lib/passby-bridge"
    assert s.mqtt.tls and s.mqtt.port == 8883 and s.web.host == "127.0.0.1"
    unit = parse_unit(CLOUD / "systemd/passby-bridge.service")
    assert f"PASSBY_DATA_DIR={s.data_dir}" in one(unit, "Service", "Environment").split()
    backup = parse_unit(CLOUD / "systemd/passby-backup.service")
    assert f"--data-dir {s.data_dir}" in one(backup, "Service", "ExecStart")


def test_compose_file_points_at_real_files() -> None:
    compose = _compose()
    made = {"./certs", "./certs/ca.crt", "./bridge.toml", "./backups"}  # compose/setup.sh
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if not src.startswith("."):
                assert src in compose["volumes"], f"{name}: undeclared volume {src}"
            elif src not in made:
                assert (CLOUD / src).exists(), f"docker-compose.yml ({name}) mounts missing {src}"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert (CLOUD / "Dockerfile").exists()


def test_docs_install_from_real_sources_and_agree_on_the_broker_files() -> None:
    """No placeholder clone URL or package index; the broker's password/ACL paths are the same
    in the Mosquitto config, both bridge configs and both READMEs; no pid file advised where
    the bridge runs unprivileged."""

    docs = [ROOT / "README.md", *ROOT.glob("deploy/**/*.md"), *ROOT.glob("hardware/**/*.md")]
    for doc in docs:
        text = doc.read_text()
        assert "example.invalid" not in text, f"{doc.relative_to(ROOT)}: placeholder host"
        assert not re.search(r"pip install '?passby\[[a-z,]+\]==", text), (
            f"{doc.relative_to(ROOT)}: installs passby from an index that does not have it"
        )
    conf = (ROOT / "deploy/mosquitto/passby.conf.example").read_text()
    paths = (
        re.search(r"^password_file (\S+)$", conf, re.M).group(1),  # type: ignore[union-attr]
        re.search(r"^acl_file (\S+)$", conf, re.M).group(1),  # type: ignore[union-attr]
    )
    for toml in (CLOUD / "bridge.toml.example", CLOUD / "compose/bridge.toml.in"):
        p = tomllib.loads(toml.read_text())["provisioning"]
        assert (p["password_file"], p["acl_file"]) == paths, toml.name
        assert "broker_pid_file" not in p, toml.name
    mosq = (ROOT / "deploy/mosquitto/README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", mosq, re.S).group(1)  # type: ignore[union-attr]
    p = tomllib.loads(block)["provisioning"]
    assert (p["password_file"], p["acl_file"]) == paths
    assert "broker_pid_file" not in p
    cloud = (CLOUD / "README.md").read_text()
    assert all(path in cloud or path.rsplit("/", 1)[0] in cloud for path in paths)


def test_docs_agree_that_no_provider_takes_an_idempotency_key() -> None:
    """README says no provider takes one and the adapters send none (Twilio's POST has no
    Idempotency-Key header or field): SCALE.md must not claim the opposite."""
    import inspect

    from cloud_bridge.delivery.providers import SmscProvider, TwilioProvider

    for cls in (TwilioProvider, SmscProvider):
        assert "idempot" not in inspect.getsource(cls.submit).lower(), cls.__name__
    assert "None of the SMS providers takes an idempotency key" in (ROOT / "README.md").read_text()
    scale = (CLOUD / "SCALE.md").read_text()
    assert "gets our idempotency key" not in scale
    assert "No provider takes an idempotency key" in scale


def test_compose_backup_job_takes_database_keys_and_broker_files() -> None:
    compose = _compose()
    svc = compose["services"]["backup"]
    loop = (CLOUD / "compose/backup-loop.sh").read_text()
    mounts = _mounts(svc)
    assert svc["environment"]["PGHOST"] == "postgres"
    for opt, source in (("--keys-dir", "bridge-data"), ("--broker-dir", "broker-auth"),
                        ("--certs-dir", "./certs"), ("--out", "./backups")):  # fmt: skip
        path = re.search(rf"{opt} (\S+)", loop)
        assert path, f"backup-loop.sh passes no {opt}"
        where = next(p for p in mounts if path.group(1).startswith(p))
        assert mounts[where][0] == source, (opt, mounts[where])
    script = re.search(r"(/opt/passby/lib/backup-postgres.sh)", loop)
    assert script and mounts[script.group(1)][0] == "./backup-postgres.sh"


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "release-signing.key"
    return key, upd.keygen(key)


def test_release_signing_roundtrip_and_key_file_mode(tmp_path: Path, keys) -> None:
    key, pub = keys
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(pub) == 64
    rel = upd.verify(release(tmp_path, key, "1.2.3"), pub)
    assert rel.version == "1.2.3" and rel.manifest["protocol"] == 1
    with pytest.raises(FileExistsError):
        upd.keygen(key)  # never overwrites a signing key


def _rewrite(src: Path, dest: Path, change) -> Path:  # type: ignore[no-untyped-def]
    """Copy a release tar member by member through ``change(name, data) -> [(info, data)]``."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()  # type: ignore[union-attr]
            for info, payload in change(m, data):
                tout.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return dest


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _same(m: tarfile.TarInfo, data: bytes):  # type: ignore[no-untyped-def]
    return [(m, data)]


def _flip_wheel(m: tarfile.TarInfo, data: bytes):  # type: ignore[no-untyped-def]
    if m.name.endswith(".whl"):
        data = data[:-1] + bytes([data[-1] ^ 1])
    return [(m, data)]


def _extra(m: tarfile.TarInfo, data: bytes):  # type: ignore[no-untyped-def]
    out = [(m, data)]
    if m.name == "manifest.sig":
        out.append((_info("wheels/evil-1.0-py3-none-any.whl", 3), b"bad"))
    return out


def _edit_manifest(m: tarfile.TarInfo, data: bytes):  # type: ignore[no-untyped-def]
    if m.name == "manifest.json":
        data = data.replace(b'"1.0.0"', b'"1.0.1"')
        m = _info(m.name, len(data))
    return [(m, data)]


def _traversal(m: tarfile.TarInfo, data: bytes):  # type: ignore[no-untyped-def]
    return (
        [(m, data), (_info("../../etc/cron.d/x", 1), b"x")]
        if m.name == "manifest.sig"
        else [(m, data)]
    )


def _symlink(m: tarfile.TarInfo, data: bytes):  # type: ignore[no-untyped-def]
    if m.name.endswith(".whl"):
        link = tarfile.TarInfo(m.name)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return [(link, None)]
    return [(m, data)]


def _no_sig(m: tarfile.TarInfo, data: bytes):  # type: ignore[no-untyped-def]
    return [] if m.name == "manifest.sig" else [(m, data)]


@pytest.mark.parametrize(
    "change,needle",
    [
        (_flip_wheel, "does not match its signed SHA-256"),
        (_extra, "files not as signed"),
        (_edit_manifest, "bad signature"),
        (_traversal, "unexpected release member"),
        (_symlink, "not a regular file"),
        (_no_sig, "no manifest.sig"),
    ],
)
def test_tampered_releases_are_refused(tmp_path: Path, keys, change, needle: str) -> None:
    key, pub = keys
    good = release(tmp_path, key, "1.0.0")
    bad = _rewrite(good, tmp_path / "bad.tar", change)
    with pytest.raises(upd.ReleaseError, match=needle):
        upd.verify(bad, pub)
    upd.verify(_rewrite(good, tmp_path / "copy.tar", _same), pub)  # the copying itself is fine


def test_release_signed_by_another_key_is_refused(tmp_path: Path, keys) -> None:
    key, _ = keys
    _, other_pub = upd.keygen(tmp_path / "other.key"), None
    other_pub = upd.keygen(tmp_path / "third.key")
    res = sh(sys.executable, EDGE / "passby_update.py", "verify", release(tmp_path, key, "1.0.0"),
             "--pubkey", other_pub)  # fmt: skip
    assert res.returncode == 1 and "bad signature" in res.stderr


def _listener(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s


def test_sd_notify_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with _listener(path) as s:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
        n = SdNotifier(env)
        assert n.enabled and n.watchdog_s == 4.0
        assert n.ready("capturing on wlan-mon")
        assert s.recv(1024) == b"READY=1\nSTATUS=capturing on wlan-mon"
        assert n.watchdog(now=100.0)
        assert s.recv(1024) == b"WATCHDOG=1"
        assert not n.watchdog(now=101.0)  # rate limited to half the interval
        assert n.watchdog(now=102.5)
        assert s.recv(1024) == b"WATCHDOG=1"
        assert n.status("120 frames/s") and s.recv(1024) == b"STATUS=120 frames/s"
        assert n.stopping() and s.recv(1024) == b"STOPPING=1"


def test_sd_notify_abstract_socket() -> None:
    name = f"passby-test-{os.getpid()}-{time.monotonic_ns()}"
    with _listener("\0" + name) as s:
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(64) == b"READY=1"


def test_sd_notify_outside_systemd_is_a_quiet_no_op(tmp_path: Path) -> None:
    n = SdNotifier({})
    assert not n.enabled and n.watchdog_s is None
    assert not n.ready() and not n.watchdog() and not n.status("x")
    gone = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not gone.ready()  # logged at debug, never raised
    other = SdNotifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None  # the watchdog is for another process


GUIDES = [
    ROOT / "hardware/README.md",
    ROOT / "deploy/edge/README.md",
    ROOT / "deploy/cloud/README.md",
]


def _guide_texts() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    out = [("README.md (user sections)", readme[readme.index("## Deploy and hardware") :])]
    return out + [(p.relative_to(ROOT).as_posix(), p.read_text()) for p in GUIDES]


def test_guides_use_real_commands_and_options() -> None:
    """Every `edge-agent ...` / `cloud-bridge ...` in the user guides exists with its options."""
    from typer.main import get_command

    from cloud_bridge.cli.main import app as bridge_app
    from edge_agent.cli import app as edge_app

    apps = {"edge-agent": get_command(edge_app), "cloud-bridge": get_command(bridge_app)}
    problems, seen = [], 0
    for where, text in _guide_texts():
        for m in re.finditer(r"\b(edge-agent|cloud-bridge) ([^`\n|]*)", text):
            group = apps[m.group(1)]
            tokens = [t.strip("[]") for t in m.group(2).split()]
            if not tokens or not re.fullmatch(r"[a-z][a-z-]*", tokens[0]):
                continue  # prose such as "edge-agent doctor's messages"
            cmd, path = group, [m.group(1)]
            while tokens and hasattr(cmd, "commands") and re.fullmatch(r"[a-z][a-z-]*", tokens[0]):
                name = tokens.pop(0)
                if name not in cmd.commands:  # type: ignore[attr-defined]
                    problems.append(f"{where}: {' '.join(path)} has no command {name!r}")
                    break
                cmd = cmd.commands[name]  # type: ignore[attr-defined]
                path.append(name)
            else:
                opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
                for t in tokens:
                    if t in ("&&", "#", ";", "\\") or t.startswith("#"):
                        break
                    flag = t.split("=")[0]
                    if flag.startswith("--") and flag not in opts:
                        problems.append(f"{where}: `{' '.join(path)}` has no option {flag}")
                seen += 1
    assert seen >= 15, "found too few commands in the guides: is the pattern still right?"
    assert not problems, "\n".join(problems)


def test_enroll_on_an_installed_box_does_not_say_run_it_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `edge-agent enroll` on a box the installer set up, systemd runs the agent: the
    message says so instead of advising `edge-agent run`; elsewhere (a laptop) it still does."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import edge_agent.adapters.enroll
    import edge_agent.cli as cli

    cfg = SimpleNamespace(store_id="main-st", sensor_id="door-1")
    monkeypatch.setattr(
        edge_agent.adapters.enroll, "enroll", lambda *a, **k: (tmp_path / "edge.toml", cfg)
    )
    installed_at = cli.AGENT_UNIT
    unit = tmp_path / "passby-agent.service"
    monkeypatch.setattr(cli, "AGENT_UNIT", unit)
    args = ["enroll", "K7QX-93FD", "--bridge", "https://b.example", "--out", str(tmp_path)]
    laptop = CliRunner().invoke(cli.app, args)
    assert laptop.exit_code == 0 and "edge-agent run" in laptop.output
    unit.write_text("[Service]\n")
    box = CliRunner().invoke(cli.app, args)
    assert box.exit_code == 0, box.output
    assert "edge-agent run" not in box.output and "passby-agent" in box.output
    shipped = EDGE / "systemd" / unit.name
    assert shipped.is_file() and str(installed_at) == "/etc/systemd/system/" + shipped.name
