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
    capture: str | None = typer.Option(
        None,
        "--capture",
        "-r",
        help="pcap/pcapng file to replay, or '-' for a pcap stream on stdin",
    ),
    iface: str | None = typer.Option(
        None,
        "--iface",
        "-i",
        help="live capture from this monitor-mode interface (kernel BPF filter)",
    ),
    hop: str | None = typer.Option(
        None,
        help="live only: channel hop plan, e.g. '1,6,11' (default: stay on the config's channel)",
    ),
    dwell: float = typer.Option(0.5, help="live only: seconds per channel when hopping"),
    linktype: int | None = typer.Option(
        None,
        help="live only: override the interface's link type (127 radiotap; for unusual drivers and tests)",
    ),
    speed: float = typer.Option(
        0.0, help="replay speed: 0 = as fast as possible, 1 = as recorded, 10 = ten times faster"
    ),
    rebase: bool = typer.Option(
        True,
        help="shift capture timestamps so the first frame is now (replay looks live); an event "
        "a fast replay would date ahead of now is dated now",
    ),
    drain_timeout: float = typer.Option(
        30.0, help="seconds to wait at the end for the broker to acknowledge every event"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    """Run the detection chain live on an interface, or over a capture, and publish presence events."""
    _setup_logging(verbose)
    settings = _load(config)
    from edge_agent.adapters.capture import CaptureError, ChannelHopper, LiveCapture
    from edge_agent.adapters.outbox import OutboxError
    from edge_agent.adapters.pcapfile import CaptureFormatError, CaptureReader, open_capture
    from edge_agent.agent import run_capture

    if (capture is None) == (iface is None):
        typer.echo("error: give exactly one of --capture or --iface", err=True)
        raise typer.Exit(2)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    hopper = None
    try:
        if iface is not None:
            plan = (
                [int(c) for c in hop.split(",")]
                if hop
                else ([settings.channel] if settings.channel else [])
            )
            reader: LiveCapture | CaptureReader = LiveCapture(iface, linktype=linktype, stop=stop)
            if plan:
                hopper = ChannelHopper(iface, plan, dwell_s=dwell, stop=stop)
                hopper.start()
            state, truncated = "up", lambda: False
            rebase = False
        else:
            replay = open_capture(capture or "-")
            reader = replay
            state, truncated = "replay", lambda: replay.truncated
    except (OSError, CaptureError, CaptureFormatError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        summary = run_capture(
            settings,
            reader,
            speed=speed,
            rebase=rebase,
            drain_timeout_s=drain_timeout,
            stop=stop,
            is_truncated=truncated,
            iface_state=state,
        )
    except (ConfigError, RosterError, CaptureError, OutboxError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        if hopper:
            hopper.close()
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
    from rich.markup import escape
    from rich.padding import Padding

    from edge_agent.doctor import diagnose, gather

    checks = diagnose(gather(iface, channel, listen))
    # One block per check, wrapped to the terminal (80 columns when it cannot tell): a table
    # of four columns wraps unreadably in an SSH window.
    out = Console(highlight=False)
    out.print(f"[bold]edge-agent doctor: {escape(iface)}[/]")
    for c in checks:
        mark = "[green]ok  [/]" if c.ok else "[red]FAIL[/]"
        out.print(f"{mark} [bold]{escape(c.name)}[/]: {escape(c.message)}")
        if not c.ok and c.fix:
            out.print(Padding(f"fix: {escape(c.fix)}", (0, 0, 0, 5)))
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


@app.command()
def calibrate(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="edge TOML config (needed for --subject)"
    ),
    iface: str | None = typer.Option(None, "--iface", "-i", help="live monitor-mode interface"),
    capture: str | None = typer.Option(None, "--capture", "-r", help="or a capture file to read"),
    subject: str | None = typer.Option(
        None,
        help="an enrolled customer's subject id (from the console); default: strongest devices, anonymously",
    ),
    top: int = typer.Option(5, help="devices to show in anonymous mode", min=1, max=50),
    seconds: float = typer.Option(
        0.0, help="stop after this many seconds (0 = until Ctrl-C / end of file)"
    ),
    jsonl: bool = typer.Option(
        False, "--jsonl", help="print one JSON line per second instead of a live table"
    ),
) -> None:
    """Show live smoothed RSSI to set the store's thresholds ("stand at the door, press Enter")."""
    import secrets as _secrets

    from edge_agent.adapters.capture import CaptureError, LiveCapture
    from edge_agent.adapters.pcapfile import CaptureFormatError, open_capture
    from edge_agent.calibrate import Calibrator, suggest_thresholds
    from edge_agent.core import frames

    if (iface is None) == (capture is None):
        typer.echo("error: give exactly one of --iface or --capture", err=True)
        raise typer.Exit(2)
    roster = None
    window = 15.0
    if subject is not None:
        if config is None:
            typer.echo("error: --subject needs --config (the roster and site key)", err=True)
            raise typer.Exit(2)
        settings = _load(config)
        from edge_agent.agent import load_roster_file

        roster = load_roster_file(settings)
        window = settings.presence.window_s
    try:
        source = LiveCapture(iface) if iface else open_capture(capture or "-")
    except (CaptureError, CaptureFormatError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    cal = Calibrator(_secrets.token_bytes(16), window_s=window, subject=subject)
    marks: list[float] = []
    interactive = not jsonl and sys.stdin.isatty()
    if interactive:

        def _enter() -> None:
            for _ in range(2):
                sys.stdin.readline()
                best = cal.readings(last[0], 1)
                if best and best[0].smoothed_dbm is not None:
                    marks.append(best[0].smoothed_dbm)

        threading.Thread(target=_enter, daemon=True).start()
        typer.echo(
            "Stand at the door with the phone and press Enter; then stand where offers "
            "should stop and press Enter again. Ctrl-C to quit."
        )
    last = [0.0]
    start = None
    next_print = 0.0
    try:
        for ts, linktype, data in source:
            start = ts if start is None else start
            last[0] = ts
            try:
                parsed = frames.parse(linktype, data) if data is not None else None
            except frames.MalformedFrame:
                continue
            if parsed is not None:
                ta, _st, dbm = parsed
                cal.feed(ta, roster.lookup(ta) if roster else None, dbm, ts)
            if ts >= next_print:
                next_print = ts + 1.0
                rows = cal.readings(ts, top)
                if jsonl:
                    typer.echo(
                        json.dumps(
                            {
                                "t": round(ts - start, 1),
                                "readings": [
                                    {
                                        "label": r.label,
                                        "dbm": None
                                        if r.smoothed_dbm is None
                                        else round(r.smoothed_dbm, 1),
                                        "frames": r.frames,
                                    }
                                    for r in rows
                                ],
                            }
                        )
                    )
                else:
                    shown = "  ".join(
                        f"{r.label}: {r.smoothed_dbm:.0f} dBm"
                        for r in rows
                        if r.smoothed_dbm is not None
                    )
                    typer.echo(f"{ts - start:7.1f}s  {shown or 'no signal yet'}")
            if len(marks) >= 2 or (seconds and ts - start >= seconds):
                break
    except KeyboardInterrupt:
        pass
    if marks:
        enter, leave = suggest_thresholds(marks[0], marks[1] if len(marks) > 1 else None)
        typer.echo(
            f"Suggested settings for edge.toml:\n[presence]\nenter_dbm = {enter}\nleave_dbm = {leave}"
        )


@app.command("validate-config")
def validate_config(
    file: Path | None = typer.Argument(None, help="edge TOML config file (or -c FILE)"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="edge TOML config file", envvar="PASSBY_EDGE_CONFIG"
    ),
) -> None:
    """Check an edge config file and say exactly which setting is wrong."""
    if file is not None and config is not None and file != config:
        typer.echo(f"error: two config files given ({file} and -c {config}): name one", err=True)
        raise typer.Exit(2)
    config = file or config
    if config is None:
        typer.echo("error: name the config file: validate-config FILE (or -c FILE)", err=True)
        raise typer.Exit(2)
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


# deploy/edge/install.sh puts the agent's unit here: then systemd, not a shell, runs the agent.
AGENT_UNIT = Path("/etc/systemd/system/passby-agent.service")


@app.command()
def enroll(
    code: str = typer.Argument(..., help="pairing code from 'cloud-bridge sensors add'"),
    bridge: str = typer.Option(
        ..., "--bridge", help="bridge base URL, e.g. https://bridge.example"
    ),
    out: Path = typer.Option(
        Path("/etc/passby"), "--out", help="directory for edge.toml and the secret files (0700)"
    ),
    ca_file: Path | None = typer.Option(
        None, "--ca-file", help="CA certificate of the bridge's HTTPS (private CA)"
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="outbox and roster directory (default: OUT/data)"
    ),
    force: bool = typer.Option(False, "--force", help="replace an existing edge.toml"),
) -> None:
    """Fetch this sensor's configuration and credentials with a one-time pairing code."""
    from edge_agent.adapters.enroll import EnrollError
    from edge_agent.adapters.enroll import enroll as do_enroll

    try:
        path, cfg = do_enroll(code, bridge, out, ca_file=ca_file, data_dir=data_dir, force=force)
    except EnrollError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"enrolled as {cfg.store_id}/{cfg.sensor_id}: wrote {path} and its secret files")
    if AGENT_UNIT.exists():  # an installed box: systemd runs the agent, not a shell
        typer.echo(
            "systemd runs the agent here (passby-agent.service); /opt/passby/lib/passby-enroll.sh "
            "starts it after pairing, or: sudo systemctl restart passby-agent"
        )
    else:
        typer.echo(f"start it with: edge-agent run -c {path} --iface <monitor interface>")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
