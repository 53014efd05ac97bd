"""``cloud-bridge customers`` (CRM import, erasure) and ``cloud-bridge stores`` (add, list, edit,
site key rotation)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cloud_bridge.config import BridgeSettings, ConfigError, load_settings

if TYPE_CHECKING:
    from cloud_bridge.customers.crm_import import ImportReport
    from cloud_bridge.storage.store import BridgeStore
    from cloud_bridge.tenant import StoreDef

__all__ = ["customers_app", "stores_app"]

customers_app = typer.Typer(
    help="Customers: CRM import with a row-by-row report, erasure on request.",
    no_args_is_help=True,
)
stores_app = typer.Typer(
    help="Stores: add, list and edit them; site key rotation.", no_args_is_help=True
)

CONFIG_OPT = typer.Option(
    None, "--config", "-c", help="bridge TOML config file", envvar="PASSBY_BRIDGE_CONFIG"
)


def _settings(config: Path | None) -> BridgeSettings:
    try:
        return load_settings(BridgeSettings, config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _store(settings: BridgeSettings) -> BridgeStore:
    from cloud_bridge.storage.store import BridgeStore

    return BridgeStore(settings.database_path(), settings.data_key_bytes())


def _print_report(report: ImportReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if report.problems:
        table = Table(title=f"Problems in {report.file}")
        for col in ("row", "field", "severity", "problem"):
            table.add_column(col)
        for p in report.problems:
            style = "red" if p.severity == "error" else "yellow"
            table.add_row(str(p.row), p.field, f"[{style}]{p.severity}[/]", p.problem)
        console.print(table)
    verb = "would apply" if report.dry_run else "applied"
    console.print(
        f"{report.rows} rows: {verb} {report.applied} ({report.created} new, "
        f"{report.updated} updated, {report.unchanged} unchanged), skipped {report.skipped} "
        f"({report.suppressed} suppressed); {report.devices_added} devices added, "
        f"{report.consents_recorded} consent records"
    )


@customers_app.command("import")
def customers_import(
    file: Path = typer.Argument(..., help="CSV or JSON file exported from the CRM"),
    fmt: str | None = typer.Option(
        None, "--format", help="csv or json (default: from the file name)"
    ),
    store_id: str | None = typer.Option(
        None,
        "--store",
        help="store whose country reads national phone numbers, and where "
        "the MACs were enrolled (default: the only store)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="run the import and roll it back: the report counts what a real run does; "
        "nothing changes",
    ),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Import customers (segments, consent evidence, MACs); report bad rows, apply good ones."""
    settings = _settings(config)
    from cloud_bridge.customers.crm_import import ImportFileError, import_customers
    from cloud_bridge.sensors.keys import BridgeKeys

    if fmt is not None and fmt not in ("csv", "json"):
        typer.echo("error: --format must be csv or json", err=True)
        raise typer.Exit(2)
    try:
        report = import_customers(
            _store(settings),
            BridgeKeys(settings.data_dir).subject_key,
            file,
            time.time(),
            fmt=fmt,
            store_id=store_id,
            device_ttl_days=settings.enrol.device_ttl_days,
            dry_run=dry_run,
        )
    except ImportFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        _print_report(report)
    if any(p.severity == "error" for p in report.problems):
        raise typer.Exit(1)


@customers_app.command("erase")
def customers_erase(
    crm_id: str = typer.Argument(..., help="the customer's CRM id"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Erase a customer on request: phone, name, MACs, segments; keep a hashed suppression entry."""
    settings = _settings(config)
    from cloud_bridge.customers.erasure import erase_customer

    if not erase_customer(_store(settings), crm_id, time.time()):
        typer.echo(f"error: no customer with CRM id {crm_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"erased {crm_id}: phone, name, devices, segments and consents removed; a suppression "
        "entry stops re-imports. Publish the store rosters so sensors forget the device "
        "(cloud-bridge roster publish --store ID)."
    )


@stores_app.command("rotate-site-key")
def stores_rotate_site_key(
    store_id: str = typer.Argument(..., help="store id"),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="where to write the new roster (default: the served copy, data_dir/rosters/STORE.bin)",
    ),
    key_out: Path | None = typer.Option(
        None, "--key-out", help="write the new site key (hex) to this file, mode 0600"
    ),
    config: Path | None = CONFIG_OPT,
) -> None:
    """New site key for a store: bump the roster version and rebuild the roster under the new key."""
    settings = _settings(config)
    from cloud_bridge.sensors.keys import BridgeKeys
    from cloud_bridge.sensors.roster_delivery import roster_path
    from cloud_bridge.sensors.rosters import (
        RosterBuildError,
        rotate_site_key,
        site_key_id,
        write_roster,
    )

    try:
        data, version, new_key = rotate_site_key(
            _store(settings), BridgeKeys(settings.data_dir), store_id, time.time()
        )
    except RosterBuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    target = out or roster_path(settings, store_id)
    write_roster(target, data)
    if key_out is not None:
        key_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = key_out.with_suffix(key_out.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_key + "\n")
        tmp.replace(key_out)
    typer.echo(
        f"store {store_id}: new site key {site_key_id(new_key)}; roster v{version} "
        f"({len(data)} bytes) at {target}" + (f"; key written to {key_out}" if key_out else "")
    )
    typer.echo(
        "Sensors match nothing until they have the new key: re-pair them "
        "(cloud-bridge sensors add, edge-agent enroll) or copy it to their site_key_file, "
        "then announce the roster (cloud-bridge roster publish --store ID)."
    )


# Each store field as the command line names it (every error names the option to change).
STORE_OPTIONS = {
    "id": "STORE_ID",
    "name": "--name",
    "timezone": "--timezone",
    "country": "--country",
    "sender_name": "--sender",
    "sending_hours": "--hours",
    "daily_budget": "--daily-budget",
}


def _store_def(fields: dict[str, object]) -> StoreDef:
    """The store as the tenant file would define it, validated by the same model; an error names
    the option, not the model's field."""
    from pydantic import ValidationError

    from cloud_bridge.tenant import StoreDef

    try:
        return StoreDef.model_validate(fields)
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "store"
            msg = err["msg"].removeprefix("Value error, ")
            typer.echo(f"error: {STORE_OPTIONS.get(field, field)}: {msg}", err=True)
        raise typer.Exit(2) from None


def _hours(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    start, sep, end = value.partition("-")
    if not sep:
        typer.echo(f"error: --hours: {value!r} is not START-END, e.g. 09:00-21:00", err=True)
        raise typer.Exit(2)
    return start.strip(), end.strip()


@stores_app.command("add")
def stores_add(
    store_id: str = typer.Argument(
        ..., help="store id (letters, digits, '_', '.', '-'; in MQTT topics)"
    ),
    name: str = typer.Option(..., "--name", help="display name, used in SMS texts"),
    timezone: str = typer.Option(..., "--timezone", help="IANA time zone, e.g. Europe/Moscow"),
    country: str = typer.Option(..., "--country", help="ISO country code, e.g. RU"),
    sender: str = typer.Option(..., "--sender", help="SMS sender: 1-11 characters with a letter"),
    hours: str | None = typer.Option(
        None, "--hours", help="sending hours, store local (09:00-21:00)"
    ),
    daily_budget: int | None = typer.Option(None, "--daily-budget", help="SMS per store-local day"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Add a store (validated like a tenant file's [store]; it gets its own site key)."""
    from cloud_bridge.tenant import save_store

    fields: dict[str, object] = {
        "id": store_id, "name": name, "timezone": timezone, "country": country,
        "sender_name": sender, "daily_budget": daily_budget,
    }  # fmt: skip
    span = _hours(hours)
    if span is not None:
        fields["sending_hours"] = span
    definition = _store_def(fields)
    store = _store(_settings(config))
    if store.store_info(store_id) is not None:
        typer.echo(
            f"error: store {store_id} exists: change it with `cloud-bridge stores edit`", err=True
        )
        raise typer.Exit(2)
    save_store(store, definition)
    typer.echo(
        f"store {store_id} added ({definition.timezone}, sending "
        f"{definition.sending_hours[0]}-{definition.sending_hours[1]}); "
        f"add a box: cloud-bridge sensors add --store {store_id}"
    )


@stores_app.command("edit")
def stores_edit(
    store_id: str = typer.Argument(..., help="store id"),
    name: str | None = typer.Option(None, "--name", help="display name"),
    timezone: str | None = typer.Option(None, "--timezone", help="IANA time zone"),
    country: str | None = typer.Option(None, "--country", help="ISO country code"),
    sender: str | None = typer.Option(None, "--sender", help="SMS sender"),
    hours: str | None = typer.Option(None, "--hours", help="sending hours, e.g. 09:00-21:00"),
    daily_budget: int | None = typer.Option(None, "--daily-budget", help="SMS per day"),
    no_budget: bool = typer.Option(False, "--no-budget", help="remove the daily budget"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Change a store's settings; what is not named stays as it is."""
    from cloud_bridge.tenant import save_store

    store = _store(_settings(config))
    rows = [r for r in store.store_rows() if r["id"] == store_id]
    if not rows:
        typer.echo(f"error: no store {store_id} (cloud-bridge stores list)", err=True)
        raise typer.Exit(2)
    now = rows[0]
    span = _hours(hours)
    changes = {
        "name": name, "timezone": timezone, "country": country, "sender_name": sender,
        "sending_hours": span, "daily_budget": daily_budget,
    }  # fmt: skip
    fields: dict[str, object] = {
        "id": store_id,
        "name": now["name"],
        "timezone": now["timezone"],
        "country": now["country"],
        "sender_name": now["sender_name"],
        "sending_hours": (now["send_start"], now["send_end"]),
        "daily_budget": None if no_budget else now["daily_budget"],
    }
    fields.update({k: v for k, v in changes.items() if v is not None})
    save_store(store, _store_def(fields))
    changed = sorted(STORE_OPTIONS[k] for k, v in changes.items() if v is not None)
    if no_budget:
        changed.append("--no-budget")
    typer.echo(f"store {store_id}: changed {', '.join(changed) or 'nothing'}")


@stores_app.command("list")
def stores_list(
    as_json: bool = typer.Option(False, "--json", help="one JSON list instead of a table"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Every store with its time zone, sender, sending hours and daily budget."""
    rows = _store(_settings(config)).store_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} store(s)")
    for col in ("id", "name", "time zone", "country", "sender", "hours", "daily budget"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"], r["name"], r["timezone"], r["country"], r["sender_name"],
            f"{r['send_start']}-{r['send_end']}",
            "-" if r["daily_budget"] is None else str(r["daily_budget"]),
        )  # fmt: skip
    Console().print(table)
