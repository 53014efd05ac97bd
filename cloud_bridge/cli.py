"""``cloud-bridge``: run the bridge, seed tenants, build rosters, run the demo."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path

import typer

from cloud_bridge import __version__
from cloud_bridge.config import BridgeSettings, ConfigError, load_settings

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

CONFIG_OPT = typer.Option(
    None, "--config", "-c", help="bridge TOML config file", envvar="PASSBY_BRIDGE_CONFIG"
)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(config: Path | None) -> BridgeSettings:
    try:
        return load_settings(BridgeSettings, config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: Path | None = CONFIG_OPT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    """Run MQTT ingest, the decision worker and the console until Ctrl-C or SIGTERM."""
    _logging(verbose)
    settings = _load(config)
    from cloud_bridge.service import BridgeService

    service = BridgeService(settings)
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
    tenant: Path = typer.Argument(..., help="tenant TOML: store, sensor, customers, campaigns"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Load a tenant file (store, customers with devices and consent, campaigns)."""
    settings = _load(config)
    from cloud_bridge.keys import BridgeKeys
    from cloud_bridge.store import BridgeStore
    from cloud_bridge.tenant import load_tenant
    from cloud_bridge.tenant import seed as do_seed

    try:
        t = load_tenant(tenant)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    store = BridgeStore(settings.database_path())
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
    from cloud_bridge.keys import BridgeKeys
    from cloud_bridge.rosters import RosterBuildError, build_store_roster, write_roster
    from cloud_bridge.store import BridgeStore

    try:
        data, version = build_store_roster(
            BridgeStore(settings.database_path()),
            BridgeKeys(settings.data_dir),
            store_id,
            time.time(),
        )
    except RosterBuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    write_roster(out, data)
    typer.echo(f"roster v{version} for {store_id}: {out} ({len(data)} bytes)")


@roster_app.command("public-key")
def roster_public_key(config: Path | None = CONFIG_OPT) -> None:
    """Print the roster-signing public key (hex) that sensors verify rosters with."""
    from cloud_bridge.keys import BridgeKeys

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
    from cloud_bridge.demo.run import run_demo

    keep = sys.stdin.isatty() if keep_running is None else keep_running
    raise typer.Exit(run_demo(workdir, keep, replays))


@app.command("validate-config")
def validate_config(config: Path = typer.Argument(..., help="bridge TOML config file")) -> None:
    """Check a bridge config file and say exactly which setting is wrong."""
    settings = _load(config)
    typer.echo(f"{config}: OK (database {settings.database_path()})")


@app.command()
def version() -> None:
    """Print the bridge version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
