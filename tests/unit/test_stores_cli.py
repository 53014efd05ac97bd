"""`cloud-bridge stores add|list|edit`: a store without a hand-written tenant file, validated by the
same rules, every error naming the option to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud_bridge.cli.main import app
from cloud_bridge.storage.stores import site_key_rows

runner = CliRunner()


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


def bridge(cfg: Path, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [*args, "-c", str(cfg)])


def test_add_list_and_edit_a_store(cfg: Path) -> None:
    out = bridge(cfg, "stores", "add", "north", "--name", "North St.", "--timezone", "Asia/Yerevan",
                 "--country", "AM", "--sender", "NorthSt", "--hours", "10:00-20:00")  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "store north added" in out.output and "sensors add --store north" in out.output
    listed = json.loads(bridge(cfg, "stores", "list", "--json").output)
    assert listed == [
        {"id": "north", "name": "North St.", "timezone": "Asia/Yerevan", "country": "AM",
         "sender_name": "NorthSt", "send_start": "10:00", "send_end": "20:00", "daily_budget": None}
    ]  # fmt: skip
    out = bridge(cfg, "stores", "edit", "north", "--daily-budget", "50", "--hours", "09:00-21:00")
    assert out.exit_code == 0 and "--daily-budget" in out.output and "--hours" in out.output
    row = json.loads(bridge(cfg, "stores", "list", "--json").output)[0]
    assert (row["daily_budget"], row["send_start"], row["name"]) == (50, "09:00", "North St.")
    assert bridge(cfg, "stores", "edit", "north", "--no-budget").exit_code == 0
    assert json.loads(bridge(cfg, "stores", "list", "--json").output)[0]["daily_budget"] is None
    table = bridge(cfg, "stores", "list").output
    assert "north" in table and "NorthSt" in table and "1 store(s)" in table


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--timezone", "Mars/Base"], "--timezone: unknown time zone 'Mars/Base'"),
        (["--country", "Armenia"], "--country:"),
        (["--sender", "x" * 12], "--sender:"),
        (["--hours", "21:00-09:00"], "--hours: sending hours must start before they end"),
        (["--hours", "nine"], "--hours: 'nine' is not START-END"),
        (["--daily-budget", "-1"], "--daily-budget:"),
    ],
)
def test_bad_fields_name_the_option_and_store_nothing(
    cfg: Path, args: list[str], words: str
) -> None:
    base = {"--name": "N", "--timezone": "Europe/Moscow", "--country": "RU", "--sender": "Shop"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [x for pair in base.items() for x in pair]
    out = bridge(cfg, "stores", "add", "s1", *flat)
    assert out.exit_code == 2 and words in out.output, out.output
    assert json.loads(bridge(cfg, "stores", "list", "--json").output) == []


def test_add_refuses_an_existing_store_and_edit_an_unknown_one(cfg: Path) -> None:
    args = ["--name", "N", "--timezone", "Europe/Moscow", "--country", "RU", "--sender", "Shop"]
    assert bridge(cfg, "stores", "add", "s1", *args).exit_code == 0
    again = bridge(cfg, "stores", "add", "s1", *args)
    assert again.exit_code == 2 and "store s1 exists" in again.output
    missing = bridge(cfg, "stores", "edit", "nope", "--name", "X")
    assert missing.exit_code == 2 and "no store nope" in missing.output
    bad_id = bridge(cfg, "stores", "add", "bad id", *args)
    assert bad_id.exit_code == 2 and "STORE_ID:" in bad_id.output


def test_edit_keeps_the_site_key(cfg: Path) -> None:
    from cloud_bridge.config import BridgeSettings, load_settings
    from cloud_bridge.storage.store import BridgeStore

    args = ["--name", "N", "--timezone", "Europe/Moscow", "--country", "RU", "--sender", "Shop"]
    assert bridge(cfg, "stores", "add", "s1", *args).exit_code == 0
    settings = load_settings(BridgeSettings, cfg)
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    key = site_key_rows(store, "s1")[0]["site_key"]
    store.close()
    assert bridge(cfg, "stores", "edit", "s1", "--name", "Renamed").exit_code == 0
    store = BridgeStore(settings.database_path(), settings.data_key_bytes())
    try:
        assert site_key_rows(store, "s1")[0]["site_key"] == key
    finally:
        store.close()
