"""``cloud-bridge``: run the bridge, seed tenants, build rosters, run the demo."""

from __future__ import annotations

import logging
import math
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cloud_bridge import __version__
from cloud_bridge.cli.customers import customers_app, stores_app
from cloud_bridge.cli.engine import register as register_engine_commands
from cloud_bridge.config import BridgeSettings, ConfigError, load_settings

if TYPE_CHECKING:
    from cloud_bridge.ingest.commands import Outcome
    from cloud_bridge.sensors.provisioning import BrokerUpdate

app = typer.Typer(
    help="passby cloud bridge: ingests presence events from sensors, decides offers "
    "(consent, caps, sending hours) and sends SMS; serves the console.",
    no_args_is_help=True,
    add_completion=False,
)
roster_app = typer.Typer(
    help="Build and publish signed rosters of enrolled devices.", no_args_is_help=True
)
app.add_typer(roster_app, name="roster")
app.add_typer(customers_app, name="customers")
app.add_typer(stores_app, name="stores")
register_engine_commands(app)  # explain, campaigns, report, purchases (cli_engine.py)

log = logging.getLogger(__name__)

CONFIG_OPT = typer.Option(
    None, "--config", "-c", help="bridge TOML config file", envvar="PASSBY_BRIDGE_CONFIG"
)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request URL at INFO (a provider URL may carry a phone number): off.
    from cloud_bridge.delivery.providers import quiet_http_client_logs

    quiet_http_client_logs()


def _load(config: Path | None) -> BridgeSettings:
    try:
        return load_settings(BridgeSettings, config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _require_provider_choice(settings: BridgeSettings, config: Path | None) -> None:
    """A bridge that would quietly record SMS in the sandbox instead of sending them refuses to
    start: the provider must be named, even when it is the sandbox."""
    if "kind" in settings.provider.model_fields_set:
        if settings.provider.kind == "sandbox":
            log.warning("SMS provider is the sandbox: messages are recorded, none is sent")
        return
    where = f"in {config}" if config else "in the config file"
    typer.echo(
        f'error: no SMS provider chosen: set [provider] kind {where} to "twilio", "smsc" '
        'or "http" with its account settings (README: SMS providers), or to "sandbox" to send '
        "nothing (messages are only recorded: demos and tests). PASSBY_PROVIDER__KIND works too.",
        err=True,
    )
    raise typer.Exit(2)


@app.command()
def run(
    config: Path | None = CONFIG_OPT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
    worker_id: str | None = typer.Option(
        None,
        "--worker-id",
        help="run as one of several workers on a PostgreSQL store (MQTT client "
        "passby-bridge-<id>; default: the worker_id setting)",
    ),
    console: bool = typer.Option(
        True, "--console/--no-console", help="also serve the console and API (one worker is enough)"
    ),
) -> None:
    """Run MQTT ingest, the decision worker and the console until Ctrl-C or SIGTERM."""
    _logging(verbose)
    settings = _load(config)
    if worker_id is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", worker_id):
            raise typer.BadParameter(
                "letters, digits, '_', '.', '-' only (1-32)", param_hint="--worker-id"
            )
        settings = settings.model_copy(update={"worker_id": worker_id})
    _require_provider_choice(settings, config)
    from cloud_bridge.service import BridgeService

    service = BridgeService(settings, web=console)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    try:
        while not stop.is_set():
            stop.wait(1.0)
    finally:
        service.stop()


@app.command()
def seed(
    tenant: Path = typer.Argument(..., help="tenant TOML: store, customers, campaigns"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Load a tenant file (store, customers with devices and consent, campaigns)."""
    settings = _load(config)
    from cloud_bridge.sensors.keys import BridgeKeys
    from cloud_bridge.storage.store import BridgeStore
    from cloud_bridge.tenant import load_tenant
    from cloud_bridge.tenant import seed as do_seed

    try:
        t = load_tenant(tenant)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if t.sensor is not None:
        typer.echo(
            f"note: {tenant}: the [sensor] section is not used (add boxes with "
            f"`cloud-bridge sensors add --store {t.store.id}`); ignored",
            err=True,
        )
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    do_seed(store, BridgeKeys(settings.data_dir), t, time.time())
    typer.echo(
        f"seeded store {t.store.id}: {len(t.customers)} customers, {len(t.campaigns)} campaigns"
    )


@roster_app.command("build")
def roster_build(
    store_id: str = typer.Option(..., "--store", help="store id"),
    out: Path = typer.Option(..., "--out", help="where to write the signed roster"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Build a new signed roster version for a store's sensors."""
    settings = _load(config)
    from cloud_bridge.sensors.keys import BridgeKeys
    from cloud_bridge.sensors.rosters import RosterBuildError, build_store_roster, write_roster
    from cloud_bridge.storage.store import BridgeStore

    try:
        data, version = build_store_roster(
            BridgeStore(settings.database_path(), settings.data_key_bytes()),
            BridgeKeys(settings.data_dir),
            store_id,
            time.time(),
        )
    except RosterBuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    write_roster(out, data)
    typer.echo(f"roster v{version} for {store_id}: {out} ({len(data)} bytes)")


@roster_app.command("publish")
def roster_publish(
    store_id: str = typer.Option(..., "--store", help="store id"),
    config: Path | None = CONFIG_OPT,
    timeout: float = typer.Option(15.0, help="seconds to wait for the sensors' replies"),
) -> None:
    """Build the next roster version, serve it for download and announce it to the store's sensors."""
    settings = _load(config)
    from cloud_bridge.ingest.commands import CommandError
    from cloud_bridge.sensors.keys import BridgeKeys
    from cloud_bridge.sensors.roster_delivery import publish_roster
    from cloud_bridge.sensors.rosters import RosterBuildError
    from cloud_bridge.storage.store import BridgeStore

    try:
        pub = publish_roster(
            settings,
            BridgeStore(settings.database_path(), settings.data_key_bytes()),
            BridgeKeys(settings.data_dir),
            store_id,
            timeout=timeout,
        )
    except (RosterBuildError, CommandError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"roster v{pub.version} for {store_id}: {pub.size} bytes, sha256 {pub.sha256[:16]}..., {pub.url}"
    )
    _print_outcomes(pub.outcomes)
    if any(o.reply is None or not o.reply.ok for o in pub.outcomes):
        raise typer.Exit(1)


def _print_outcomes(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        if o.reply is None:
            typer.echo(f"  {o.store_id}/{o.sensor_id}: no reply (offline?)")
        else:
            extra = f" {o.reply.data}" if o.reply.data else ""
            typer.echo(
                f"  {o.store_id}/{o.sensor_id}: {'ok' if o.reply.ok else 'REFUSED'}: {o.reply.detail}{extra}"
            )


cmd_app = typer.Typer(
    help="Send a command to sensors over MQTT and show their replies.", no_args_is_help=True
)
app.add_typer(cmd_app, name="cmd")


def _targets(
    store_id: str, sensor_id: str | None, settings: BridgeSettings
) -> list[tuple[str, str]]:
    if sensor_id:
        return [(store_id, sensor_id)]
    from cloud_bridge.storage.fleet import sensors_of_store
    from cloud_bridge.storage.store import BridgeStore

    rows = sensors_of_store(BridgeStore(settings.database_path()), store_id)
    return [(r["store_id"], r["sensor_id"]) for r in rows]


@cmd_app.command("ping")
def cmd_ping(
    store_id: str = typer.Option(..., "--store", help="store id"),
    sensor_id: str | None = typer.Option(
        None, "--sensor", help="one sensor (default: every sensor of the store)"
    ),
    config: Path | None = CONFIG_OPT,
    timeout: float = typer.Option(10.0, help="seconds to wait for replies"),
) -> None:
    """Ask sensors if they are alive; prints uptime, versions and outbox depth."""
    settings = _load(config)
    from cloud_bridge.ingest.commands import CommandError, send_commands

    try:
        outcomes = send_commands(
            settings.commands_mqtt(), "ping", _targets(store_id, sensor_id, settings), {}, timeout
        )
    except CommandError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _print_outcomes(outcomes)
    if not outcomes or any(o.reply is None for o in outcomes):
        raise typer.Exit(1)


@cmd_app.command("config")
def cmd_config(
    store_id: str = typer.Option(..., "--store", help="store id"),
    sensor_id: str | None = typer.Option(
        None, "--sensor", help="one sensor (default: every sensor of the store)"
    ),
    set_: list[str] = typer.Option(
        ..., "--set", help="presence.enter_dbm=-65, presence.leave_dbm=-78, stats_interval_s=30 ..."
    ),
    config: Path | None = CONFIG_OPT,
    timeout: float = typer.Option(10.0, help="seconds to wait for replies"),
) -> None:
    """Change sensors' presence thresholds or stats interval; a bad change is refused by the sensor."""
    settings = _load(config)
    from cloud_bridge.ingest.commands import CommandError, send_commands

    presence: dict[str, float] = {}
    body: dict[str, float | dict[str, float]] = {"presence": presence}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            typer.echo(f"error: --set {item!r} is not KEY=VALUE", err=True)
            raise typer.Exit(2)
        try:
            number = float(value)
        except ValueError:
            typer.echo(f"error: --set {item!r}: {value!r} is not a number", err=True)
            raise typer.Exit(2) from None
        if key.startswith("presence."):
            presence[key.removeprefix("presence.")] = number
        elif key == "stats_interval_s":
            body["stats_interval_s"] = number
        else:
            typer.echo(
                f"error: {key!r} cannot be changed remotely (presence.* or stats_interval_s)",
                err=True,
            )
            raise typer.Exit(2)
    try:
        outcomes = send_commands(
            settings.commands_mqtt(),
            "config",
            _targets(store_id, sensor_id, settings),
            body,
            timeout,
        )
    except CommandError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _print_outcomes(outcomes)
    if not outcomes or any(o.reply is None or not o.reply.ok for o in outcomes):
        raise typer.Exit(1)


@roster_app.command("public-key")
def roster_public_key(config: Path | None = CONFIG_OPT) -> None:
    """Print the roster-signing public key (hex) that sensors verify rosters with."""
    from cloud_bridge.sensors.keys import BridgeKeys

    typer.echo(BridgeKeys(_load(config).data_dir).public_key_hex())


@app.command()
def demo(
    workdir: Path = typer.Option(Path("var/demo"), help="demo state directory (reset each run)"),
    keep_running: bool = typer.Option(
        None,
        "--keep-running/--exit",
        help="keep the console up until Ctrl-C (default: only when run in a terminal)",
    ),
    replays: int = typer.Option(1, help="replay the capture this many times", min=1, max=10),
) -> None:
    """Run the whole chain locally: Mosquitto, bridge, sandbox SMS, and a sensor replaying a capture."""
    logging.basicConfig(level=logging.WARNING)
    from cloud_bridge.dev.demo.run import run_demo

    keep = sys.stdin.isatty() if keep_running is None else keep_running
    raise typer.Exit(run_demo(workdir, keep, replays))


def _one_config(file: Path | None, config: Path | None) -> Path:
    """The file named as an argument or with -c (both CLIs take either); exactly one."""
    if file is not None and config is not None and file != config:
        typer.echo(f"error: two config files given ({file} and -c {config}): name one", err=True)
        raise typer.Exit(2)
    chosen = file or config
    if chosen is None:
        typer.echo("error: name the config file: validate-config FILE (or -c FILE)", err=True)
        raise typer.Exit(2)
    return chosen


@app.command("validate-config")
def validate_config(
    file: Path | None = typer.Argument(None, help="bridge TOML config file (or -c FILE)"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Check a bridge config file and say exactly which setting is wrong."""
    config = _one_config(file, config)
    settings = _load(config)
    typer.echo(f"{config}: OK (database {settings.database_path()})")
    if "kind" not in settings.provider.model_fields_set:
        typer.echo(
            "warning: no SMS provider chosen ([provider] kind): `cloud-bridge run` refuses to "
            "start until one is set",
            err=True,
        )
    if settings.provider.kind == "smsc":
        from cloud_bridge.delivery.inbound import smsc_callback_url

        # SMSC takes its handler URL from the account settings, not per message.
        typer.echo(f"SMSC handler URL (User settings): {smsc_callback_url(settings.public_url)}")


@app.command()
def version() -> None:
    """Print the bridge version."""
    typer.echo(__version__)


sensors_app = typer.Typer(
    help="Provision sensors: broker credentials, API token, one-time pairing code.",
    no_args_is_help=True,
)
app.add_typer(sensors_app, name="sensors")


def _broker_report(update: BrokerUpdate) -> None:
    for path in update.written:
        typer.echo(f"broker file updated: {path}")
    if update.reloaded_pid:
        typer.echo(f"Mosquitto (pid {update.reloaded_pid}) reloaded")
    for note in update.notes:
        typer.echo(f"note: {note}", err=True)


@sensors_app.command("add")
def sensors_add(
    store_id: str = typer.Option(..., "--store", help="store id (must exist)"),
    sensor_id: str | None = typer.Option(None, "--sensor", help="sensor id (default: sensor-N)"),
    channel: int | None = typer.Option(None, help="Wi-Fi channel of the store AP", min=1, max=196),
    rotate: bool = typer.Option(
        False, "--rotate", help="existing sensor: new credentials and a new pairing code"
    ),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Create a sensor with broker credentials and print its one-time pairing code."""
    from datetime import UTC, datetime

    from cloud_bridge.sensors.provisioning import ProvisioningError, add_sensor, sensor_acl_block
    from cloud_bridge.storage.fleet import password_hash_rows
    from cloud_bridge.storage.store import BridgeStore

    settings = _load(config)
    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    try:
        done = add_sensor(store, settings, store_id, sensor_id, channel=channel, rotate=rotate)
    except ProvisioningError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    until = datetime.fromtimestamp(done.expires, UTC).strftime("%Y-%m-%d %H:%M UTC")
    typer.echo(f"sensor {done.store_id}/{done.sensor_id}: broker user {done.username}")
    typer.echo(f"pairing code: {done.code}  (single use, valid until {until})")
    typer.echo(f"on the sensor: edge-agent enroll {done.code} --bridge {settings.public_url}")
    _broker_report(done.broker)
    p = settings.provisioning
    if p.password_file is None:
        row = password_hash_rows(store, done.username)[0]
        typer.echo("add this line to the Mosquitto password file, then reload Mosquitto:")
        typer.echo(f"{done.username}:{row['mqtt_password_hash']}")
    if p.acl_file is None:
        typer.echo("and this block to its ACL file:")
        typer.echo("\n".join(sensor_acl_block(done.store_id, done.sensor_id)))


@sensors_app.command("list")
def sensors_list(config: Path | None = CONFIG_OPT) -> None:
    """Provisioned sensors: broker user, pairing state, last seen."""
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.table import Table

    from cloud_bridge.storage.store import BridgeStore

    settings = _load(config)
    rows = BridgeStore(settings.database_path()).sensor_registry()
    now = time.time()

    def when(ts: float | None) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"

    table = Table(title=f"{len(rows)} provisioned sensor(s)")
    for column in ("store", "sensor", "broker user", "pairing", "state", "last seen"):
        table.add_column(column)
    for r in rows:
        if r["revoked"]:
            pairing = f"revoked {when(r['revoked'])}"
        elif r["code_used"] and r["code_used"] > 0:
            pairing = f"paired {when(r['code_used'])}"
        elif r["code_expires"] and r["code_expires"] > now and not r["code_used"]:
            pairing = f"code open until {when(r['code_expires'])}"
        else:
            pairing = "code expired: sensors add --rotate"
        table.add_row(
            r["store_id"],
            r["sensor_id"],
            r["mqtt_username"],
            pairing,
            r["state"] or "-",
            when(r["last_seen"]),
        )
    Console().print(table)


@sensors_app.command("revoke")
def sensors_revoke(
    store_id: str = typer.Option(..., "--store", help="store id"),
    sensor_id: str = typer.Option(..., "--sensor", help="sensor id"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Withdraw a sensor's broker account, API token and open pairing codes."""
    from cloud_bridge.sensors.provisioning import ProvisioningError, revoke_sensor
    from cloud_bridge.storage.store import BridgeStore

    settings = _load(config)
    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    try:
        update = revoke_sensor(store, settings, store_id, sensor_id)
    except ProvisioningError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"sensor {store_id}/{sensor_id} revoked")
    _broker_report(update)


@sensors_app.command("sync-broker")
def sensors_sync_broker(config: Path | None = CONFIG_OPT) -> None:
    """Rewrite the broker's password and ACL files from the store: the bridge's own account and
    every sensor's (a fresh install, or after a restore without the broker files)."""
    from cloud_bridge.sensors.provisioning import write_broker_files
    from cloud_bridge.storage.store import BridgeStore

    settings = _load(config)
    p = settings.provisioning
    if p.password_file is None or p.acl_file is None:
        typer.echo(
            "error: [provisioning] password_file and acl_file must be set in the config "
            "to write the broker's files",
            err=True,
        )
        raise typer.Exit(2)
    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    try:
        update = write_broker_files(store, settings)
    finally:
        store.close()
    _broker_report(update)


@app.command()
def simulate(
    credentials: Path = typer.Option(
        Path("sim-credentials.json"),
        "--credentials",
        help="simulated sensors' broker accounts (JSON, mode 0600; written by --provision)",
    ),
    provision: int | None = typer.Option(
        None,
        "--provision",
        help="provision N simulated sensors through the bridge's provisioning (accounts, "
        "Mosquitto password/ACL files), write --credentials, and exit",
        min=1,
    ),
    deprovision: bool = typer.Option(
        False, "--deprovision", help="revoke every sensor of the --store-prefix stores, and exit"
    ),
    store_prefix: str = typer.Option(
        "sim", "--store-prefix", help="simulated stores are PREFIX-0001, PREFIX-0002, ..."
    ),
    per_store: int = typer.Option(10, "--per-store", help="sensors per simulated store", min=1),
    sensors: int | None = typer.Option(
        None, "--sensors", help="simulate only the first N sensors of --credentials", min=1
    ),
    duration: float = typer.Option(
        60.0, "--duration", help="seconds of publishing; the run then drains and stops", min=0.1
    ),
    rate: float = typer.Option(0.2, "--rate", help="events per second per sensor", min=0.0),
    total_rate: float | None = typer.Option(
        None, "--total-rate", help="events per second over the whole fleet (overrides --rate)"
    ),
    stats_interval: float = typer.Option(
        60.0, "--stats-interval", help="seconds between each sensor's stats", min=0.1
    ),
    connect_rate: float = typer.Option(
        200.0, "--connect-rate", help="new broker connections per second (the login ramp)"
    ),
    processes: int = typer.Option(
        1, "--processes", help="worker processes, each one event loop", min=1, max=64
    ),
    host: str | None = typer.Option(
        None, "--host", help="broker host (default: from --credentials, i.e. provisioning)"
    ),
    port: int | None = typer.Option(None, "--port", help="broker port (default: as --host)"),
    tls: bool | None = typer.Option(
        None, "--tls/--no-tls", help="connect with TLS (default: as provisioning said)"
    ),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="CA bundle of the broker"),
    subjects_file: Path | None = typer.Option(
        None, "--subjects", help="subject ids to use, one per line (default: random unknown ones)"
    ),
    subjects_from_store: bool = typer.Option(
        False, "--subjects-from-store", help="use the subjects of the bridge's customers (-c)"
    ),
    known_subjects_ok: bool = typer.Option(
        False,
        "--known-subjects-ok",
        help="confirm that events for real customers' subjects may trigger real SMS through "
        "campaigns that cover the simulated stores",
    ),
    unknown_share: float = typer.Option(
        0.0,
        "--unknown-share",
        help="share of events with a random unknown subject when subjects are given",
        min=0.0,
        max=1.0,
    ),
    drain: float = typer.Option(
        15.0, "--drain", help="seconds to wait for outstanding PUBACKs after --duration", min=0.0
    ),
    summary_json: Path | None = typer.Option(
        None, "--summary-json", help="write the summary here as JSON"
    ),
    acked_ids: Path | None = typer.Option(
        None, "--acked-ids", help="write every acknowledged event id here, one per line"
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="afterwards, look up every acknowledged event in the bridge's store (-c) and "
        "report lost = acknowledged - stored",
    ),
    verify_timeout: float = typer.Option(
        120.0, "--verify-timeout", help="seconds --verify waits for the ingest to catch up"
    ),
    config: Path | None = CONFIG_OPT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    """Load-test a deployment: thousands of simulated sensors, each a real MQTT client with its own account, for a bounded time."""
    import dataclasses
    import json

    from cloud_bridge.dev import simulator as sim

    _logging(verbose)
    logging.getLogger("paho.mqtt").setLevel(logging.WARNING)

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(2)

    if provision is not None or deprovision or subjects_from_store or verify:
        settings = _load(config)
        from cloud_bridge.storage.store import BridgeStore

        store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    if provision is not None:
        from cloud_bridge.sensors.provisioning import ProvisioningError

        if not verbose:  # two lines per sensor otherwise
            logging.getLogger("cloud_bridge.sensors.provisioning").setLevel(logging.WARNING)

        try:
            creds, update = sim.provision_fleet(store, settings, provision, store_prefix, per_store)
        except (ProvisioningError, sim.SimulatorError) as exc:
            raise fail(str(exc)) from None
        sim.write_credentials(credentials, creds)
        typer.echo(
            f"provisioned {provision} simulated sensors in {math.ceil(provision / per_store)} "
            f"store(s) {store_prefix}-*; credentials in {credentials} (mode 0600)"
        )
        _broker_report(update)
        typer.echo(f"run them: cloud-bridge simulate --credentials {credentials} --duration 600")
        return
    if deprovision:
        n, update = sim.revoke_fleet(store, settings, store_prefix)
        typer.echo(f"revoked {n} simulated sensor(s) of {store_prefix}-*")
        _broker_report(update)
        return
    try:
        creds = sim.load_credentials(credentials)
        subjects: tuple[str, ...] = ()
        if subjects_file is not None:
            subjects = sim.load_subjects(subjects_file)
        if subjects_from_store:
            subjects += sim.subjects_from_store(store)
    except sim.SimulatorError as exc:
        raise fail(str(exc)) from None
    if subjects and not known_subjects_ok:
        raise fail(
            f"{len(subjects)} subject(s) given: events for enrolled customers go through the "
            "decisions like real ones and may send real SMS where a campaign covers the "
            "simulated stores (use the sandbox provider); add --known-subjects-ok to go ahead"
        )
    b = creds.broker
    broker = dataclasses.replace(
        b,
        host=host or b.host,
        port=port or b.port,
        tls=b.tls if tls is None else tls,
        ca_file=ca_file,
        ca_pem=None if ca_file else b.ca_pem,
    )
    plan = sim.SimulationPlan(
        sensors=creds.sensors[:sensors] if sensors else creds.sensors,
        broker=broker,
        duration_s=duration,
        rate_per_sensor=rate,
        total_rate=total_rate,
        stats_interval_s=stats_interval,
        connect_rate=connect_rate,
        processes=processes,
        subjects=subjects,
        unknown_share=unknown_share if subjects else 1.0,
        drain_s=drain,
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    typer.echo(
        f"simulating {len(plan.sensors)} sensors on {broker.host}:{broker.port}"
        f"{' (TLS)' if broker.tls else ''} for {duration:g} s at "
        f"{plan.per_sensor_rate * len(plan.sensors):g} events/s"
    )
    try:
        summary = sim.run_simulation(plan, stop)  # Ctrl-C: drain, say offline, summarise
    except sim.SimulatorError as exc:
        raise fail(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if acked_ids is not None:
        acked_ids.write_text("".join(f"{e}\n" for e in summary.acked_event_ids))
    lost: int | None = None
    if verify:
        typer.echo(f"looking up {summary.events_acked} acknowledged events in the store...")
        missing = sim.wait_stored(store, summary.acked_event_ids, verify_timeout)
        lost = len(missing)
    data = summary.to_dict()
    if lost is not None:
        data["stored"] = summary.events_acked - lost
        data["lost"] = lost
    if summary_json is not None:
        summary_json.write_text(json.dumps(data, indent=2) + "\n")
    _print_simulation(data)
    bad = summary.never_connected or summary.lost_at_broker or summary.errors or (lost or 0)
    if bad:
        raise typer.Exit(1)


def _print_simulation(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fleet simulation")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("sensors (connected / never / refused)",
         f"{data['sensors']} ({data['connected']} / {data['never_connected']} / {data['connect_refused']})"),
        ("connect errors / disconnects / reconnects",
         f"{data['connect_errors']} / {data['disconnects']} / {data['reconnects']}"),
        ("events published", str(data["events_published"])),
        ("events acknowledged", str(data["events_acked"])),
        ("refused / no subscriber / unacknowledged",
         f"{data['events_refused']} / {data['events_no_subscribers']} / {data['events_unacked']}"),
        ("skipped while offline", str(data["events_skipped_offline"])),
        ("status sent (acknowledged) / stats sent",
         f"{data['status_sent']} ({data['status_acked']}) / {data['stats_sent']}"),
        ("rate: target / achieved (events/s)", f"{data['target_rate']:g} / {data['achieved_rate']:g}"),
        ("publish -> PUBACK ms p50 / p99 / max",
         " / ".join(str(data["latency_ms"].get(k, "-")) for k in ("p50", "p99", "max"))),
        ("elapsed s (publishing window)", f"{data['elapsed_s']:.1f} ({data['publish_window_s']:.1f})"),
    ]  # fmt: skip
    if "lost" in data:
        rows.append(
            (
                "stored in the bridge / lost (not stored by --verify-timeout)",
                f"{data['stored']} / {data['lost']}",
            )
        )
    for reason, n in data["refused_reasons"].items():
        rows.append((f"refused: {reason}", str(n)))
    for error in data["errors"][:5]:
        rows.append(("error", error))
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


users_app = typer.Typer(
    help="Console users: admin, marketer, store owner (bound to stores).", no_args_is_help=True
)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    username: str = typer.Argument(..., help="login name"),
    role: str = typer.Option(..., "--role", help="admin, marketer or owner"),
    stores: list[str] = typer.Option([], "--store", help="store of an owner (repeat for more)"),
    phone: str | None = typer.Option(None, "--phone", help="own phone for test sends (E.164)"),
    password_file: Path | None = typer.Option(
        None,
        "--password-file",
        help="read the password from this file (default: prompt, or env PASSBY_USER_PASSWORD)",
    ),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Create a console user (argon2id password hash)."""
    import os

    from cloud_bridge.storage.store import BridgeStore
    from cloud_bridge.web.auth import AccountError, Accounts

    settings = _load(config)
    if password_file is not None:
        password = password_file.read_text().strip()
    else:
        password = os.environ.get("PASSBY_USER_PASSWORD") or typer.prompt(
            "password", hide_input=True, confirmation_prompt=True
        )
    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    try:
        Accounts(store, settings.web).add_user(username, role, password, time.time(), stores, phone)
    except AccountError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    store.audit(
        "cli",
        None,
        "user.add",
        username,
        f"role={role} stores={','.join(stores)}",
        None,
        time.time(),
    )
    typer.echo(f"user {username} ({role}{': ' + ', '.join(stores) if stores else ''}) added")


@users_app.command("list")
def users_list(config: Path | None = CONFIG_OPT) -> None:
    """Console users with role, stores and last login."""
    from datetime import UTC, datetime

    from cloud_bridge.storage.store import BridgeStore

    settings = _load(config)
    for u in BridgeStore(settings.database_path()).users():
        last = (
            datetime.fromtimestamp(u["last_login"], UTC).strftime("%Y-%m-%d %H:%M")
            if u["last_login"]
            else "-"
        )
        state = "disabled" if u["disabled"] else "active"
        stores = ",".join(u["stores"]) or "all"
        typer.echo(f"{u['username']}\t{u['role']}\t{stores}\t{state}\tlast login {last}")


@app.command()
def serve(
    host: str | None = typer.Option(None, "--host", help="listen address (default web.host)"),
    port: int | None = typer.Option(None, "--port", help="port (default web.port)"),
    config: Path | None = CONFIG_OPT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    """Serve only the console and the JSON API on the configured store (no MQTT, no sending)."""
    _logging(verbose)
    settings = _load(config)
    import uvicorn

    from cloud_bridge.storage.store import BridgeStore
    from cloud_bridge.web.app import create_app

    store = BridgeStore(settings.database_path(), data_key=settings.data_key_bytes())
    h, p = host or settings.web.host, settings.web.port if port is None else port
    typer.echo(f"console at http://{h}:{p}  (users: cloud-bridge users add NAME --role admin)")
    # proxy_headers off: the app applies web.trusted_proxies (uvicorn would trust loopback)
    uvicorn.run(
        create_app(store, settings), host=h, port=p, log_level="warning", proxy_headers=False
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
