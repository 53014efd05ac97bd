"""hardware/README.md stays true: doctor's messages one to one, adapter lists, distances, diagrams."""

from __future__ import annotations

import ast
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent import doctor
from edge_agent.doctor import KNOWN_BAD, KNOWN_GOOD, Facts, diagnose

ROOT = Path(__file__).parents[2]
HW = ROOT / "hardware"
README = HW / "README.md"
DOCTOR_SRC = ROOT / "edge_agent" / "doctor.py"
SVG_NS = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class Template:
    """One line diagnose() can print, as regexes (formatted values become wildcards)."""

    name: str
    ok: bool
    message: re.Pattern[str]
    fix: re.Pattern[str]
    source: str  # where it came from, for failure messages


def _norm(text: str) -> str:
    # Markdown code spans are presentation: compare the words.
    return re.sub(r"\s+", " ", text.replace("`", "")).strip()


def _pieces(node: ast.expr, bad_reason: str | None) -> str:
    """A regex for a str constant or f-string; KNOWN_BAD[...] becomes ``bad_reason``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(_norm(node.value))
    if isinstance(node, ast.JoinedStr):
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(re.escape(part.value.replace("`", "")))
            elif (
                isinstance(part, ast.FormattedValue)
                and isinstance(part.value, ast.Subscript)
                and isinstance(part.value.value, ast.Name)
                and part.value.value.id == "KNOWN_BAD"
            ):
                assert bad_reason is not None
                out.append(re.escape(bad_reason))
            else:
                out.append("(.+?)")
        return re.sub(r"(\\ )+", r"\\ ", "".join(out))
    raise AssertionError(f"doctor.py line {node.lineno}: message is not a string literal")


def _uses_known_bad(node: ast.expr) -> bool:
    return any(
        isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "KNOWN_BAD"
        for n in ast.walk(node)
    )


def doctor_templates() -> list[Template]:
    """Every Check(...) in diagnose(); a KNOWN_BAD message becomes one template per bad driver."""
    tree = ast.parse(DOCTOR_SRC.read_text(encoding="utf-8"))
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "diagnose")
    out = []
    for call in ast.walk(func):
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Check"):
            continue
        args = list(call.args) + [kw.value for kw in call.keywords]
        name, ok, message = args[0], args[1], args[2]
        fix = args[3] if len(args) > 3 else ast.Constant("")
        assert isinstance(name, ast.Constant) and isinstance(ok, ast.Constant)
        reasons = list(KNOWN_BAD.values()) if _uses_known_bad(message) else [None]
        for reason in reasons:
            out.append(
                Template(
                    name.value,
                    ok.value,
                    re.compile(_pieces(message, reason)),
                    re.compile(_pieces(fix, reason)),
                    f"doctor.py:{call.lineno}" + (f" ({reason[:30]}...)" if reason else ""),
                )
            )
    return out


def markdown_table(text: str, heading: str) -> list[dict[str, str]]:
    """The first table after ``heading``, as dicts keyed by the header cells."""
    start = text.index(heading)
    lines = text[start:].splitlines()
    rows: list[list[str]] = []
    for line in lines[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    header, _sep, *body = rows
    return [dict(zip(header, r, strict=True)) for r in body]


def troubleshooting_rows() -> list[dict[str, str]]:
    return markdown_table(README.read_text(encoding="utf-8"), "### `edge-agent doctor` messages")


def _matches(t: Template, row: dict[str, str]) -> bool:
    return (
        row["check"] == t.name
        and row["result"] == ("ok" if t.ok else "FAIL")
        and t.message.fullmatch(_norm(row["doctor says"])) is not None
    )


def test_troubleshooting_table_matches_doctor_one_to_one() -> None:
    templates = doctor_templates()
    rows = troubleshooting_rows()
    assert len(templates) >= 15, "could not read diagnose()'s checks from doctor.py"
    problems = []
    for t in templates:
        hits = [r for r in rows if _matches(t, r)]
        if len(hits) != 1:
            problems.append(f"{t.source} {t.name}/{t.ok} {t.message.pattern!r}: {len(hits)} rows")
            continue
        fix = _norm(hits[0]["fix"])
        fix = "" if fix in ("–", "-") else fix
        if not t.fix.fullmatch(fix):
            problems.append(f"{t.source}: fix {fix!r} does not match {t.fix.pattern!r}")
    for r in rows:
        if not any(_matches(t, r) for t in templates):
            problems.append(f"table row matches no doctor check: {r['check']}: {r['doctor says']}")
    assert not problems, "hardware/README.md troubleshooting table vs doctor.py:\n" + "\n".join(
        problems
    )


SCENARIOS = [
    Facts("wlan-mon"),
    Facts("eth0", exists=True),
    Facts("wlan0", exists=True, wireless=True, driver="brcmfmac", monitor_supported=False),
    Facts("wlan1", exists=True, wireless=True, driver="rtl8xxxu", arphrd=1, raw_error="EACCES"),
    Facts("wlan1", exists=True, wireless=True, driver="r8188eu", arphrd=1, raw_error="EPERM"),
    Facts(
        "wlan-mon",
        exists=True,
        wireless=True,
        driver="mt76x2u",
        arphrd=803,
        channel=11,
        want_channel=6,
        can_raw=True,
        frames_seen=0,
        listen_s=3,
    ),
    Facts(
        "wlan-mon",
        exists=True,
        wireless=True,
        driver=None,
        arphrd=803,
        channel=6,
        want_channel=6,
        can_raw=True,
        frames_seen=420,
        listen_s=3,
    ),
]


def test_every_check_doctor_prints_has_a_template() -> None:
    """The AST reading above misses nothing diagnose() really says (and every row is reachable)."""
    templates = doctor_templates()
    seen = set()
    for facts in SCENARIOS:
        for c in diagnose(facts):
            hits = [
                t
                for t in templates
                if t.name == c.name
                and t.ok == c.ok
                and t.message.fullmatch(_norm(c.message))
                and t.fix.fullmatch(_norm(c.fix))
            ]
            assert len(hits) == 1, f"{c} matches {len(hits)} templates"
            seen.add(hits[0].source)
    assert seen == {t.source for t in templates}, "scenarios no longer reach every check"


def test_adapter_lists_match_doctor() -> None:
    text = README.read_text(encoding="utf-8")
    good = markdown_table(text, "### Wi-Fi adapters: what works")
    bad = markdown_table(text, "### Wi-Fi adapters: what to avoid, and why")
    good_drivers = {r["kernel driver"].strip("`") for r in good}
    assert good_drivers == set(KNOWN_GOOD), "the 'what works' table must list KNOWN_GOOD exactly"
    for driver, chip in KNOWN_GOOD.items():
        row = next(r for r in good if r["kernel driver"].strip("`") == driver)
        assert any(part.strip() in row["chip"] for part in chip.split("/")), (driver, chip)
    assert {r["driver"].strip("`") for r in bad} == set(KNOWN_BAD)
    for r in bad:
        assert KNOWN_BAD[r["driver"].strip("`")] in _norm(r["why not"])
    for chip in ("MT7612U", "MT7921AU", "AR9271", "RT5370"):
        assert chip in text


def test_distance_table_follows_the_path_loss_model() -> None:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"with RSSI\(1 m\) = −(\d+) dBm", text)
    assert m, "the distance table must state its RSSI(1 m)"
    rssi0 = -int(m.group(1))
    rows = markdown_table(text, "Distance at which a phone reads a given smoothed RSSI")
    assert len(rows) >= 4
    for row in rows:
        rssi = -int(re.search(r"−(\d+) dBm", row["smoothed RSSI"]).group(1))  # type: ignore[union-attr]
        for col, cell in row.items():
            if not col.startswith("n = "):
                continue
            n = float(col.removeprefix("n = "))
            want = 10 ** ((rssi0 - rssi) / (10 * n))
            got = float(cell.removesuffix(" m"))
            assert math.isclose(got, want, abs_tol=0.06), (rssi, n, got, want)


def test_defaults_quoted_in_the_guide_are_the_real_defaults() -> None:
    from edge_agent.config import PresenceSettings

    text = README.read_text(encoding="utf-8")
    p = PresenceSettings()
    assert f"enter −{-p.enter_dbm} dBm, leave −{-p.leave_dbm} dBm" in text
    assert f"{p.window_s:.0f} s window" in text


def test_calibration_steps_use_real_commands() -> None:
    from typer.main import get_command

    from edge_agent.cli import app

    text = README.read_text(encoding="utf-8")
    cli = get_command(app)
    for cmd in ("calibrate", "doctor"):
        assert f"edge-agent {cmd} --iface wlan-mon" in text
        params = {o for p in cli.commands[cmd].params for o in p.opts}  # type: ignore[attr-defined]
        for opt in re.findall(rf"edge-agent {cmd} ([^`]*)", text):
            for flag in re.findall(r"--[a-z-]+", opt):
                assert flag in params, f"{cmd} has no option {flag}"


@pytest.mark.parametrize("svg", sorted(HW.glob("*.svg")), ids=lambda p: p.name)
def test_svg_diagrams_are_wellformed_and_linked(svg: Path) -> None:
    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("viewBox"), "a viewBox keeps it scalable"
    title = root.find(f"{SVG_NS}title")
    assert title is not None and title.text, "a <title> for screen readers"
    assert root.find(f"{SVG_NS}desc") is not None
    assert not any(el.tag.endswith("script") for el in root.iter()), "no scripts in docs"
    for el in root.iter():
        for attr in ("href", "{http://www.w3.org/1999/xlink}href"):
            ref = el.get(attr)
            assert ref is None or ref.startswith("#"), f"external reference {ref}"
    assert f"({svg.name})" in README.read_text(encoding="utf-8"), "link it from the guide"


def test_there_are_diagrams() -> None:
    names = {p.name for p in HW.glob("*.svg")}
    assert {"placement-top.svg", "mounting-side.svg", "wiring.svg"} <= names


def test_doctor_points_at_this_guide() -> None:
    assert "hardware/README.md" in DOCTOR_SRC.read_text(encoding="utf-8")
    assert doctor.__doc__ and "hardware/README.md" in doctor.__doc__


def test_hysteresis_advice_is_the_calibrate_rule() -> None:
    """The guide's two mentions of the enter/leave gap say what `calibrate` does."""
    from edge_agent.calibrate import MIN_HYSTERESIS_DB

    text = README.read_text()
    said = re.findall(r"at least (\d+) dB below enter|keep ≥ (\d+) dB of\s+hysteresis", text)
    numbers = {int(a or b) for a, b in said}
    assert len(said) >= 2 and numbers == {MIN_HYSTERESIS_DB}, said
