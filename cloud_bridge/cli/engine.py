"""Offer-engine commands: ``explain``, ``campaigns load/list/status``, ``report``,
``purchases import``. Registered on the ``cloud-bridge`` app by ``cloud_bridge.cli.main``."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import typer

from cloud_bridge.config import BridgeSettings, ConfigError, load_settings

if TYPE_CHECKING:
    from cloud_bridge.offers.decide import Check
    from cloud_bridge.storage.store import BridgeStore

__all__ = ["register", "campaigns_app", "purchases_app"]

CONFIG_OPT = typer.Option(
    None, "--config", "-c", help="bridge TOML config file", envvar="PASSBY_BRIDGE_CONFIG"
)

campaigns_app = typer.Typer(
    help="Campaigns: load TOML files (validated, every problem names its field), list, status.",
    no_args_is_help=True,
)
purchases_app = typer.Typer(
    help="CRM purchases (customer, store, time, amount) for revenue in reports.",
    no_args_is_help=True,
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


# -- explain --------------------------------------------------------------------------------


def _at(ts: float | None, tz: str | None) -> str:
    if ts is None:
        return "-"
    zone = ZoneInfo(tz) if tz else UTC
    local = datetime.fromtimestamp(ts, zone)
    utc = datetime.fromtimestamp(ts, UTC)
    if tz:
        return f"{local:%Y-%m-%d %H:%M:%S} {tz} ({utc:%H:%M:%S} UTC)"
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC"


def _chain(checks: list[Check] | list[list[Any]], indent: str = "  ") -> list[str]:
    from cloud_bridge.offers.decide import REASONS

    out = []
    for item in checks:
        code, ok, words, campaign = (list(item) + [None])[:4]
        mark = "✓" if ok else "✗"
        where = (
            f"campaign {campaign}: " if campaign and not str(words).startswith("campaign") else ""
        )
        line = f"{indent}{mark} {where}{words}"
        if not ok and code in REASONS:
            line += f"  [{code}: {REASONS[code]}]"
        out.append(line)
    return out


# How a decision to send reads by its reason (what became of its SMS); the rest: NOT SENT.
_SEND_WORDS = {
    "sent": "SENT",
    "delivered": "SENT",
    "undelivered": "SENT",
    "reserved": "SENDING",
    "unknown": "UNKNOWN",
}


def _outcome_words(row: dict[str, Any]) -> str:
    from cloud_bridge.offers.decide import REASONS

    reason = row["reason"]
    plain = REASONS.get(reason, reason)
    if row["outcome"] == "send":
        variant = f" variant {row['variant']}" if row.get("variant") else ""
        state = f" (SMS {row['send_state']})" if row.get("send_state") else ""
        head = _SEND_WORDS.get(reason, "NOT SENT")
        why = f" - {row['send_error']}" if row.get("send_error") and head == "NOT SENT" else ""
        return f"{head} {row['campaign_id']}{variant}{state}: {plain}{why}"
    if row["outcome"] == "holdout":
        return f"HOLDOUT {row['campaign_id']}: {plain}"
    return f"skipped ({reason}): {plain}" + (f" - {row['detail']}" if row.get("detail") else "")


def _explain_event(store: BridgeStore, event_id: str) -> int:
    ev = store.event_row(event_id)
    if ev is None:
        typer.echo(f"error: no event {event_id!r}", err=True)
        return 1
    info = {r["id"]: r for r in store.store_rows()}.get(ev["store_id"])
    tz = info["timezone"] if info else None
    payload: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        payload = json.loads(ev["payload"] or "{}")
    rssi = payload.get("rssi") or {}
    typer.echo(
        f"Event {ev['event_id']}: {ev['type']} at store {ev['store_id']}"
        + (f" ({info['name']})" if info else " (unknown store)")
        + f", sensor {ev['sensor_id']}"
    )
    typer.echo(f"  seen {_at(ev['ts'], tz)}; received {_at(ev['received'], tz)}")
    if rssi:
        typer.echo(
            f"  signal median {rssi.get('median')} dBm, max {rssi.get('max')} dBm; "
            f"{payload.get('dwell_s', 0):.0f} s near the store"
        )
    decisions = store.decisions_of_event(event_id)
    if not decisions:
        state = ev["state"]
        why = (
            "leave events are recorded for reports and never trigger an offer"
            if ev["type"] == "leave"
            else f"not decided yet (event state {state})"
        )
        typer.echo(f"No decision: {why}.")
        return 0
    for d in decisions:
        who = f"customer {d['crm_id']}" if d.get("crm_id") else "no known customer"
        typer.echo(f"Decision at {_at(d['ts'], tz)} for {who}:")
        typer.echo(f"  {_outcome_words(d)}")
        if d.get("segment"):
            typer.echo(f"  segment: {d['segment']}")
        if d.get("checks"):
            typer.echo("  Chain of checks:")
            for line in _chain(json.loads(d["checks"]), "    "):
                typer.echo(line)
    return 0


def _explain_customer(store: BridgeStore, settings: BridgeSettings, crm_id: str) -> int:
    from cloud_bridge.delivery.providers import SandboxProvider
    from cloud_bridge.offers.decide import Event, Send, segment_of
    from cloud_bridge.offers.worker import DecisionWorker, customer_of, policy_from_settings

    row = store.customer_row(crm_id)
    if row is None:
        from cloud_bridge.customers.erasure import suppressed

        if suppressed(store, None, crm_id):
            typer.echo(f"Customer {crm_id} was erased on request: nothing is sent to them.")
            return 0
        typer.echo(f"error: no customer {crm_id!r}", err=True)
        return 1
    now = time.time()
    policy = policy_from_settings(settings.policy)
    customer = customer_of(store.engine_customer(row["subject"], now, now - 400 * 86400))
    assert customer is not None
    consents = {c["kind"]: c for c in store.consents_of(row["id"])}
    typer.echo(f"Customer {crm_id}: segment {segment_of(customer, now, policy)}")
    for kind, label in (("sms", "marketing SMS"), ("recognition", "phone recognition")):
        c = consents.get(kind)
        state = f"{c['status']} since {_at(c['ts'], None)}" if c else "never given"
        typer.echo(f"  consent to {label}: {state}")
    typer.echo(
        f"  CRM: visits {customer.visits if customer.visits is not None else '-'}, "
        f"loyalty tier {customer.loyalty_tier or '-'}, first purchase "
        f"{customer.first_purchase or '-'}; visits seen by sensors (400 days): "
        f"{len(customer.visit_times)}"
    )
    sends, holdouts = store.engine_history(row["id"], now - policy.overall_days * 86400)
    typer.echo(
        f"  {len(sends)} SMS in the last {policy.overall_days} days "
        f"(cap {policy.overall_cap} across campaigns)"
        + (f"; {len(holdouts)} holdout exposure(s)" if holdouts else "")
    )
    rows = store.decisions_of_customer(row["id"], 20)
    stores = {r["id"]: r for r in store.store_rows()}
    typer.echo(f"Last {len(rows)} decision(s), newest first:")
    for d in rows:
        tz = stores.get(d.get("event_store") or "", {}).get("timezone")
        typer.echo(
            f"  {_at(d['ts'], tz)} {d.get('event_type') or '?'} at {d.get('event_store') or '?'}: "
            f"{_outcome_words(d)}"
        )
    seen = [d["event_store"] for d in rows if d.get("event_store")]
    targets = list(dict.fromkeys(seen))[:3] or list(stores)[:3]
    worker = DecisionWorker(store, SandboxProvider(store), policy)
    for sid in targets:
        event = Event("what-if", "arrive", sid, row["subject"], now, -50.0, -50.0, 0.0)
        outcome = worker.what_if(event, now)
        verdict = (
            f"would SEND {outcome.campaign.id} variant {outcome.variant.id}: {outcome.text!r}"
            if isinstance(outcome, Send)
            else f"would skip ({outcome.reason})"
        )
        typer.echo(f"If {crm_id} arrived at {sid} now (signal -50 dBm): {verdict}")
        for line in _chain(list(outcome.trace), "    "):
            typer.echo(line)
    return 0


def explain(
    event_id: str | None = typer.Argument(None, help="event id (hex) to explain"),
    customer: str | None = typer.Option(
        None, "--customer", help="CRM id: recent decisions and what would happen now"
    ),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Explain decisions in plain words: the chain of checks of an event, or a customer's.

    For --customer: consents, caps, recent decisions and what an arrival now would get."""
    if (event_id is None) == (customer is None):
        typer.echo("error: give an EVENT_ID or --customer CRM_ID", err=True)
        raise typer.Exit(2)
    settings = _settings(config)
    store = _store(settings)
    code = (
        _explain_event(store, event_id)
        if event_id is not None
        else _explain_customer(store, settings, customer or "")
    )
    raise typer.Exit(code)


# -- campaigns ------------------------------------------------------------------------------


@campaigns_app.command("load")
def campaigns_load(
    file: Path = typer.Argument(..., help="campaign TOML: one campaign or [[campaigns]]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate only"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Validate and save the campaigns of a TOML file (all or nothing).

    Exit status 2 with every problem named by its field."""
    from cloud_bridge.offers.campaigns import (
        CampaignError,
        read_campaign_file,
        save_campaigns,
        validate_campaigns,
    )

    settings = _settings(config)
    store = _store(settings)
    try:
        raw, prefix = read_campaign_file(file)
        defs = validate_campaigns(raw, store, settings, prefix=prefix)
    except CampaignError as exc:
        typer.echo(f"error: {file}: {len(exc.problems)} problem(s)", err=True)
        for p in exc.problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(f"{file}: {len(defs)} campaign(s) valid (not saved)")
        return
    saved = save_campaigns(store, defs, f"file:{file.name}", time.time())
    for (cid, new), d in zip(saved, defs, strict=True):
        typer.echo(
            f"{'added' if new else 'updated'} {cid} ({d.status}, {d.trigger.type}, "
            f"{len(d.variants)} variant(s), holdout {d.holdout_pct:g}%)"
        )


@campaigns_app.command("list")
def campaigns_list(
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Campaigns with status, trigger, stores, audience, caps, holdout, budget and sends."""
    from rich.console import Console
    from rich.table import Table

    from cloud_bridge.offers.campaigns import row_to_dict

    store = _store(_settings(config))
    rows = store.campaign_rows()
    sends = store.campaign_send_counts([r["id"] for r in rows])
    if as_json:
        out = []
        for r in rows:
            d = row_to_dict(r)
            d["sends"], d["paused_reason"] = sends.get(r["id"], 0), r.get("paused_reason")
            out.append(d)
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    t = Table(title=f"{len(rows)} campaign(s)")
    for col in ("id", "status", "trigger", "stores", "audience", "cap", "holdout", "budget"):
        t.add_column(col)
    t.add_column("sends", justify="right")
    for r in rows:
        d = row_to_dict(r)
        aud = d["audience"]
        audience = ", ".join(aud.get("segments") or ["everyone"])
        if aud.get("rules"):
            audience += f" + {len(aud['rules'])} rule(s)"
        status = d["status"] + (f" ({r['paused_reason']})" if r.get("paused_reason") else "")
        t.add_row(
            d["id"],
            status,
            d["trigger"]["type"],
            ", ".join(d["stores"]) or "all",
            audience,
            f"{d['caps']['count']}/{d['caps']['days']}d",
            f"{d['holdout_pct']:g}%",
            str(d["budget"] or "-"),
            str(sends.get(r["id"], 0)),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(t)


@campaigns_app.command("status")
def campaigns_status(
    campaign_id: str = typer.Argument(..., help="campaign id"),
    status: str = typer.Argument(..., help="draft, active, paused or ended"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Set a campaign's status (e.g. resume one the opt-out guard paused)."""
    if status not in ("draft", "active", "paused", "ended"):
        typer.echo("error: status must be draft, active, paused or ended", err=True)
        raise typer.Exit(2)
    store = _store(_settings(config))
    if not store.set_campaign_status(campaign_id, status, time.time()):
        typer.echo(f"error: no campaign {campaign_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{campaign_id}: {status}")


# -- report and purchases -------------------------------------------------------------------


def report(
    days: int | None = typer.Option(
        None, "--days", help="return window, days (default policy.return_days)", min=1
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of tables"),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Returns and lift (95% CI) per campaign, variant and store; stores ranked by conversion.

    Sends, returns, return rate, holdout return rate, lift; revenue from imported purchases."""
    from cloud_bridge.reports.figures import build_report, print_report

    settings = _settings(config)
    store = _store(settings)
    rep = build_report(store, time.time(), days or settings.policy.return_days)
    if as_json:
        typer.echo(json.dumps(rep.as_dict(), indent=2))
        return
    print_report(rep)
    stats = store.engine_stats()
    if stats["paused_by_guard"]:
        typer.echo(f"note: {stats['paused_by_guard']} campaign(s) paused by the opt-out guard")


@purchases_app.command("import")
def purchases_import(
    file: Path = typer.Argument(..., help="CSV or JSON: crm_id, store_id, time, amount, ..."),
    fmt: str | None = typer.Option(None, "--format", help="csv or json (default: by suffix)"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="run the import and roll it back: counts what a real run adds"
    ),
    config: Path | None = CONFIG_OPT,
) -> None:
    """Import CRM purchases for revenue: crm_id, store_id, time, amount[, currency, order_id].

    Rows are checked one by one; re-importing changes nothing."""
    from cloud_bridge.csv_input import ImportFileError
    from cloud_bridge.reports.figures import import_purchases

    store = _store(_settings(config))
    try:
        rep = import_purchases(store, file, time.time(), fmt, dry_run)
    except ImportFileError as exc:  # names the file itself
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    for line, f, problem in rep.problems:
        typer.echo(f"  row {line}: {f}: {problem}", err=True)
    verb = "would add" if dry_run else "added"
    typer.echo(
        f"{file}: {rep.rows} row(s): {verb} {rep.added}, already known {rep.known}, "
        f"{len(rep.problems)} bad"
    )
    if rep.problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the engine's commands to the ``cloud-bridge`` app."""
    app.command("explain")(explain)
    app.command("report")(report)
    app.add_typer(campaigns_app, name="campaigns")
    app.add_typer(purchases_app, name="purchases")
