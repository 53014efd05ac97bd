"""``edge-agent``: the sensor box's command line (a thin wrapper over the library)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

import typer

from edge_agent import __version__
from edge_agent.config import ConfigError, EdgeSettings, load_settings
from edge_agent.roster import RosterError

app = typer.Typer(
    help="passby edge agent: recognises enrolled phones near the store by keyed hash and "
    "publishes presence events to the bridge over MQTT.",
    no_args_is_help=True,
    add_completion=False,
)

CONFIG_OPT = typer.Option(
    ..., "--config", "-c", help="edge TOML config file", envvar="PASSBY_EDGE_CONFIG"
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(config: Path) -> EdgeSettings:
    try:
        return load_settings(EdgeSettings, config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: Path = CONFIG_OPT,
    capture: str = typer.Option(
        ..., "--capture", "-r", help="pcap/pcapng file to replay, or '-' for a pcap stream on stdin"
    ),
    speed: float = typer.Option(
        0.0, help="replay speed: 0 = as fast as possible, 1 = as recorded, 10 = ten times faster"
    ),
    rebase: bool = typer.Option(
        True, help="shift capture timestamps so the first frame is now (replay looks live)"
    ),
    drain_timeout: float = typer.Option(
        30.0, help="seconds to wait at the end for the broker to acknowledge every event"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    """Run the detection chain over a capture and publish presence events."""
    _setup_logging(verbose)
    settings = _load(config)
    from edge_agent.agent import run_capture
    from edge_agent.pcapfile import CaptureFormatError, open_capture

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        reader = open_capture(capture)
    except (OSError, CaptureFormatError) as exc:
        typer.echo(f"error: cannot read capture {capture}: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        summary = run_capture(
            settings,
            reader,
            speed=speed,
            rebase=rebase,
            drain_timeout_s=drain_timeout,
            stop=stop,
            is_truncated=lambda: reader.truncated,
        )
    except (ConfigError, RosterError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(json.dumps(summary.__dict__, sort_keys=True))
    if not summary.delivered:
        typer.echo(
            f"warning: {summary.outbox_depth} event(s) not yet acknowledged by the broker; "
            "they stay in the outbox and are sent on the next run",
            err=True,
        )
        raise typer.Exit(3)


@app.command()
def inspect(
    capture: str = typer.Argument(..., help="pcap/pcapng file, or '-' for stdin"),
    jsonl: bool = typer.Option(False, "--jsonl", help="one JSON object per client frame"),
) -> None:
    """Print the client-originated frames of a local capture (operator diagnostics; shows MACs)."""
    from edge_agent.inspect import run as inspect_run

    raise typer.Exit(inspect_run(capture, jsonl))


@app.command()
def doctor(
    iface: str = typer.Option(..., "--iface", "-i", help="the monitor-mode Wi-Fi interface"),
    channel: int | None = typer.Option(None, help="the store AP's channel, to check we are on it"),
    listen: float = typer.Option(3.0, help="seconds to listen for frames"),
) -> None:
    """Check the capture interface (exists, monitor mode, driver, channel, permissions, frames)."""
    from rich.console import Console
    from rich.table import Table

    from edge_agent.doctor import diagnose, gather

    checks = diagnose(gather(iface, channel, listen))
    table = Table(title=f"edge-agent doctor: {iface}")
    for col in ("check", "result", "what we saw", "fix"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.message, c.fix)
    Console(width=160).print(table)
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


@app.command("validate-config")
def validate_config(config: Path = CONFIG_OPT) -> None:
    """Check an edge config file and say exactly which setting is wrong."""
    settings = _load(config)
    try:
        settings.site_key_bytes()
    except ConfigError as exc:
        typer.echo(f"error: {config}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{config}: OK (store {settings.store_id}, sensor {settings.sensor_id})")


@app.command()
def schema() -> None:
    """Print the JSON Schema of every MQTT payload the agent publishes."""
    from edge_agent.protocol import json_schemas

    typer.echo(json.dumps(json_schemas(), indent=2))


@app.command()
def version() -> None:
    """Print the agent version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
