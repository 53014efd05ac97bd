"""Run the whole chain on one machine: Mosquitto, the bridge, and the agent replaying a capture.

Every process it starts is stopped on exit or Ctrl-C. State lives under ``var/demo/`` and is
reset at each run so the demo always tells the same story.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import httpx
from rich.console import Console
from rich.table import Table

from cloud_bridge.dev.mosquitto import LocalMosquitto, free_port
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.sensors.rosters import build_store_roster, write_roster
from cloud_bridge.storage.events import event_count, progress
from cloud_bridge.storage.overview import demo_decisions
from cloud_bridge.storage.sends import sandbox_messages
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import site_key_rows
from cloud_bridge.tenant import Tenant, load_tenant, seed
from cloud_bridge.web.app import mask_phone

__all__ = ["DEMO_DIR", "run_demo"]

DEMO_DIR = Path(__file__).parent
TENANT = DEMO_DIR / "tenant.toml"
CAPTURE = DEMO_DIR / "demo.pcap"
DEMO_SENSOR = "door-1"  # the box the demo plays (the capture was made at its door)


class DemoError(RuntimeError):
    pass


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    fh = open(log, "wb")  # noqa: SIM115 - handed to the child for its lifetime
    return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(
                f"the bridge exited early (code {proc.returncode}); see {log}:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise DemoError(f"the bridge console did not answer at {url} within {timeout:.0f} s; see {log}")


def write_configs(
    workdir: Path,
    broker_port: int,
    web_port: int,
    store_id: str,
    sensor_id: str,
    site_key_hex: str,
    public_key_hex: str,
) -> tuple[Path, Path]:
    bridge_toml = workdir / "bridge.toml"
    # Opt-out links in the SMS texts point at this bridge's console port.
    public = f'public_url = "http://127.0.0.1:{web_port}"\n' if web_port else ""
    bridge_toml.write_text(
        f'data_dir = "{workdir / "bridge"}"\n{public}\n[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n\n'
        f'[provider]\nkind = "sandbox"\n\n[web]\nhost = "127.0.0.1"\nport = {web_port}\n'
    )
    edge_dir = workdir / "edge"
    edge_dir.mkdir(parents=True, exist_ok=True)
    key_file = edge_dir / "site.key"
    key_file.write_text(site_key_hex + "\n")
    key_file.chmod(0o600)
    edge_toml = workdir / "edge.toml"
    edge_toml.write_text(
        f'store_id = "{store_id}"\nsensor_id = "{sensor_id}"\ndata_dir = "{edge_dir}"\n'
        f'site_key_file = "{key_file}"\nroster_public_key = "{public_key_hex}"\nchannel = 6\n'
        f'stats_interval_s = 5\n\n[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
    )
    return bridge_toml, edge_toml


@dataclass
class DemoSite:
    """The demo tenant seeded into a bridge store, its roster on the sensor, both configs."""

    db: BridgeStore
    keys: BridgeKeys
    tenant: Tenant
    bridge_toml: Path
    edge_toml: Path
    roster_version: int


def prepare_site(workdir: Path, broker_port: int, web_port: int) -> DemoSite:
    """Seed the demo tenant, sign its roster, hand it to the sensor, write both configs."""
    tenant = load_tenant(TENANT)
    db = BridgeStore(workdir / "bridge" / "bridge.db")
    keys = BridgeKeys(workdir / "bridge")
    now = time.time()
    seed(db, keys, tenant, now)
    roster, version = build_store_roster(db, keys, tenant.store.id, now)
    site_key = site_key_rows(db, tenant.store.id)[0]["site_key"]
    bridge_toml, edge_toml = write_configs(
        workdir,
        broker_port,
        web_port,
        tenant.store.id,
        DEMO_SENSOR,
        site_key,
        keys.public_key_hex(),
    )
    write_roster(workdir / "edge" / "roster.bin", roster)
    return DemoSite(db, keys, tenant, bridge_toml, edge_toml, version)


def demo_users(db: BridgeStore, store_id: str) -> str:
    """One console user per role, named after it (the owner bound to the demo store); returns
    their shared password."""
    from cloud_bridge.web.auth import Accounts

    password = secrets.token_urlsafe(9)
    accounts, now = Accounts(db), time.time()
    for role, stores in (("admin", []), ("marketer", []), ("owner", [store_id])):
        accounts.add_user(role, role, password, now, stores)
    return password


def agent_command(edge_toml: Path, capture: Path = CAPTURE) -> list[str]:
    """The sensor agent replaying a capture, as its own process (the demo and the tests)."""
    return [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "run",
        "--config",
        str(edge_toml),
        "--capture",
        str(capture),
    ]


def wait_processed(db: BridgeStore, expected: int, timeout: float = 30.0) -> bool:
    """Until the bridge holds ``expected`` events, all decided and no send still under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = progress(db)
        if row["n"] >= expected and not row["pending"] and not row["unsent"]:
            return True
        time.sleep(0.1)
    return False


class AgentSummary(TypedDict):
    """The fields of the agent's last stdout line (edge_agent.agent.RunSummary) the demo reads."""

    frames: int
    client: int
    matched: int
    malformed: int
    events: dict[str, int]


def report(console: Console, db: BridgeStore, summary: AgentSummary, url: str) -> None:
    console.rule("[bold]What happened")
    console.print(
        f"Sensor read [bold]{summary['frames']}[/] frames: {summary['client']} client frames, "
        f"{summary['matched']} from enrolled devices, {summary['malformed']} malformed (skipped). "
        f"Unknown devices were dropped at once."
    )
    ev = summary["events"]
    console.print(
        f"Presence events published: arrive {ev.get('arrive', 0)}, visit {ev.get('visit', 0)}, "
        f"leave {ev.get('leave', 0)}"
    )
    t = Table(title="Decisions (one per arrive/visit event)")
    for col in ("event", "customer", "outcome", "reason"):
        t.add_column(col)
    rows = demo_decisions(db)
    for r in rows:
        style = "green" if r["outcome"] == "send" else "yellow"
        t.add_row(
            r["type"],
            r["name"] or "unknown",
            f"[{style}]{r['outcome']}[/]",
            f"{r['reason']} ({r['detail']})",
        )
    console.print(t)
    t = Table(title="SMS in the sandbox provider")
    for col in ("to", "from", "text"):
        t.add_column(col)
    for m in sandbox_messages(db):
        t.add_row(mask_phone(m["to_phone"]), m["sender"], m["body"])
    console.print(t)
    console.print(f"Console: [link={url}]{url}[/link]")


def run_demo(workdir: Path, keep_running: bool, replays: int = 1) -> int:
    console = Console()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    tenant = load_tenant(TENANT)
    procs: list[subprocess.Popen[bytes]] = []
    broker = LocalMosquitto(workdir / "mosquitto")
    try:
        with console.status("starting Mosquitto"):
            broker.start()
        console.print(f"Mosquitto {broker.host}:{broker.port} (config {broker.config_path})")
        web_port = free_port()
        site = prepare_site(workdir, broker.port, web_port)
        db, bridge_toml, edge_toml, version = (
            site.db,
            site.bridge_toml,
            site.edge_toml,
            site.roster_version,
        )
        console.print(
            f"Seeded store {tenant.store.id!r}: {len(tenant.customers)} customers, "
            f"{len(tenant.campaigns)} campaign(s); roster v{version} delivered to the sensor"
        )
        url = f"http://127.0.0.1:{web_port}"
        password = demo_users(db, tenant.store.id)
        bridge_log = workdir / "bridge.log"
        bridge = _spawn(
            [sys.executable, "-m", "cloud_bridge.cli.main", "run", "--config", str(bridge_toml)],
            bridge_log,
        )
        procs.append(bridge)
        with console.status("starting the bridge"):
            _wait_http(url + "/healthz", bridge, bridge_log)
        console.print(f"Bridge running, console at {url}")
        total: AgentSummary | None = None
        for i in range(replays):
            agent_log = workdir / f"agent-{i + 1}.log"
            before = event_count(db)
            with console.status(f"sensor replaying {CAPTURE.name}"), open(agent_log, "wb") as err:
                agent = subprocess.run(
                    agent_command(edge_toml),
                    stdout=subprocess.PIPE,
                    stderr=err,
                    timeout=300,
                )
            if agent.returncode != 0:
                raise DemoError(
                    f"the agent failed (code {agent.returncode}); see {agent_log}:\n"
                    + agent_log.read_text(errors="replace")[-2000:]
                )
            summary: AgentSummary = json.loads(agent.stdout.decode().strip().splitlines()[-1])
            total = summary
            expected = before + sum(summary["events"].values())
            if not wait_processed(db, expected):
                raise DemoError(f"the bridge did not process {expected} events within 30 s")
        if total is None:
            raise DemoError("no replay ran (replays must be at least 1)")
        report(console, db, total, url)
        console.print(
            f"Log in as [bold]admin[/], [bold]marketer[/] or [bold]owner[/] (store "
            f"{tenant.store.id}) with the password [bold]{password}[/]"
        )
        if keep_running:
            console.print("Press Ctrl-C to stop Mosquitto, the bridge and the console.")
            try:
                while bridge.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        return 0
    except DemoError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    finally:
        for p in procs:
            _stop(p)
        broker.stop()
        if keep_running:
            console.print("stopped every process the demo started")


def main() -> None:  # pragma: no cover - `cloud-bridge demo` is the entry point
    sys.exit(run_demo(Path(os.environ.get("PASSBY_DEMO_DIR", "var/demo")), sys.stdin.isatty()))
