"""Both CLIs describe every subcommand; bad configs get messages naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from cloud_bridge.cli.main import app as bridge_app
from edge_agent.cli import app as edge_app

ROOT = Path(__file__).parents[2]


def _commands(app) -> dict[str, object]:
    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        out[name] = cmd
        for sub, subcmd in getattr(cmd, "commands", {}).items():
            out[f"{name} {sub}"] = subcmd
    return out


@pytest.mark.parametrize(
    "module,app", [("edge_agent.cli", edge_app), ("cloud_bridge.cli.main", bridge_app)]
)
def test_help_lists_and_describes_every_subcommand(module: str, app) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    for name, cmd in _commands(app).items():
        assert name.split()[0] in out.stdout
        assert cmd.help and len(cmd.help.strip()) > 10, f"{name} has no description"


def test_readme_mentions_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in _commands(edge_app):
        if name != "version":
            assert f"edge-agent {name}" in readme or name in ("schema",), name
    for name in _commands(bridge_app):
        if name not in ("version", "validate-config", "roster public-key"):
            assert f"cloud-bridge {name}" in readme, name


def _validate(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "validate-config", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_edge_config_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        'store_id = "s 1"\nsensor_id = "d1"\nroster_public_key = "00"\n[presence]\nfoo = 1\n'
    )
    out = _validate(cfg)
    assert out.returncode == 2
    assert "store_id" in out.stderr
    assert "presence.foo" in out.stderr
    assert str(cfg) in out.stderr
    # enter below leave breaks hysteresis: refused, naming both settings
    cfg.write_text(
        'store_id = "s1"\nsensor_id = "d1"\nroster_public_key = "00"\n[presence]\nenter_dbm = -90\n'
    )
    out = _validate(cfg)
    assert out.returncode == 2
    assert "leave_dbm (-80) must be below enter_dbm (-90)" in out.stderr


def test_bad_toml_syntax_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text("[mqtt\nport = 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "cloud_bridge.cli.main", "validate-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "not valid TOML" in out.stderr and "line 1" in out.stderr


@pytest.mark.parametrize("module", ["edge_agent.cli", "cloud_bridge.cli.main"])
def test_validate_config_takes_the_file_either_way(tmp_path: Path, module: str) -> None:
    """`validate-config FILE` and `validate-config -c FILE` mean the same on both CLIs."""
    cfg = tmp_path / "x.toml"
    cfg.write_text("[mqtt]\nport = 0\n")  # wrong on both sides: the error must name the file
    runs = [
        subprocess.run(
            [sys.executable, "-m", module, "validate-config", *form],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for form in ([str(cfg)], ["-c", str(cfg)])
    ]
    assert runs[0].returncode == runs[1].returncode == 2
    assert str(cfg) in runs[0].stderr and runs[0].stderr == runs[1].stderr
    none = subprocess.run(
        [sys.executable, "-m", module, "validate-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert none.returncode == 2 and "name the config file" in none.stderr


def test_run_refuses_without_an_explicit_provider(tmp_path: Path) -> None:
    """A production bridge must not quietly record SMS in the sandbox: `run` names the setting."""
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[mqtt]\nport = 1\n')
    out = subprocess.run(
        [sys.executable, "-m", "cloud_bridge.cli.main", "run", "-c", str(cfg), "--no-console"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no SMS provider chosen" in out.stderr and "[provider] kind" in out.stderr
    assert str(cfg) in out.stderr
    # Nothing was started or created on the way to the refusal.
    assert not (tmp_path / "data").exists()
    # validate-config accepts the file (it is valid) but says the bridge will not run on it.
    checked = subprocess.run(
        [sys.executable, "-m", "cloud_bridge.cli.main", "validate-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0 and "no SMS provider chosen" in checked.stderr


def test_seed_takes_a_tenant_file_without_a_sensor_section(tmp_path: Path) -> None:
    """The tenant file is a bulk import of a store, its customers and campaigns; boxes are added
    with `sensors add`, so no [sensor] section is demanded (an old one is ignored, with a note)."""
    from cloud_bridge.cli.main import app as bridge

    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    tenant = tmp_path / "t.toml"
    tenant.write_text(
        '[store]\nid = "north"\nname = "North"\ntimezone = "Europe/Moscow"\ncountry = "RU"\n'
        'sender_name = "North"\n'
    )
    out = CliRunner().invoke(bridge, ["seed", str(tenant), "-c", str(cfg)])
    assert out.exit_code == 0, out.output
    assert "seeded store north" in out.output
    tenant.write_text(tenant.read_text() + '\n[sensor]\nid = "door-1"\n')
    out = CliRunner().invoke(bridge, ["seed", str(tenant), "-c", str(cfg)])
    assert out.exit_code == 0 and "[sensor] section is not used" in out.output
