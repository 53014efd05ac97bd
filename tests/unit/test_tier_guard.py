"""The unit tier's guard (tests/unit/conftest.py) fails a unit test that starts an external program
or asks for another tier's fixture, naming the program or fixture, before either runs.

A copy of the guard runs in a pytest of its own (a Python child) over deliberately wrong unit
tests; the "programs" they start are stand-ins that would leave a mark if they ever ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

UNIT = Path(__file__).resolve().parent

WRONG_TESTS = """
import asyncio
import os
import subprocess
import sys

BIN = os.environ["GUARD_TEST_BIN"]


def test_starts_mosquitto():
    subprocess.run([f"{BIN}/mosquitto", "-c", "mosquitto.conf"], check=False)


def test_starts_initdb_through_asyncio():
    async def main():
        proc = await asyncio.create_subprocess_exec(f"{BIN}/initdb", "-D", "data")
        await proc.wait()

    asyncio.run(main())


def test_swallows_the_refusal_of_tshark():
    try:
        subprocess.run([f"{BIN}/tshark", "-r", "x.pcap"], check=False)
    except Exception:
        pass


def test_starts_chromium_through_a_shell():
    os.system(f"{BIN}/chromium --headless")


def test_finds_promtool_on_the_path():
    subprocess.run(["promtool", "check", "rules", "x.yml"], check=False)


def test_asks_for_a_database(db_location):
    pass


def test_python_and_git_are_fine():
    run = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
    assert run.stdout == "42\\n"
    subprocess.run(["git", "--version"], capture_output=True, check=True)
"""

# A stand-in for tests/conftest.py's db_location: it marks that it ran (it must not).
ROOT_CONFTEST = """
import os
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def db_location(request):
    Path(os.environ["GUARD_TEST_MARKS"], "db_location").touch()
    return request.param
"""


def run_wrong_tests(tmp_path: Path) -> tuple[dict[str, str], list[str], str]:
    """(test name -> failure message, '' when it passed), the programs that ran, pytest's output."""
    tree, bin_dir, marks = tmp_path / "tree", tmp_path / "bin", tmp_path / "marks"
    for d in (tree / "tests" / "unit", bin_dir, marks):
        d.mkdir(parents=True)
    (tree / "pytest.ini").write_text("[pytest]\n")
    (tree / "tests" / "conftest.py").write_text(ROOT_CONFTEST)
    (tree / "tests" / "unit" / "__init__.py").write_text("")
    shutil.copy(UNIT / "conftest.py", tree / "tests" / "unit" / "conftest.py")
    (tree / "tests" / "unit" / "test_wrong.py").write_text(WRONG_TESTS)
    for name in ("mosquitto", "initdb", "tshark", "chromium", "promtool"):
        program = bin_dir / name
        program.write_text(f"#!/bin/sh\ntouch '{marks}/{name}'\n")
        program.chmod(0o755)
    report = tmp_path / "report.xml"
    env = {
        **os.environ,
        "GUARD_TEST_BIN": str(bin_dir),
        "GUARD_TEST_MARKS": str(marks),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    args = ["-q", "-p", "no:cacheprovider", "-c", tree / "pytest.ini", "--rootdir", tree]
    args += [f"--junitxml={report}", tree / "tests" / "unit"]
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *map(str, args)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stdout + res.stderr  # 1: tests failed (not a usage error)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        problems = [p.get("message", "") for p in case if p.tag in ("failure", "error")]
        outcomes[case.get("name", "")] = " | ".join(problems)
    return outcomes, sorted(p.name for p in marks.iterdir()), res.stdout


def test_the_guard_fails_wrong_unit_tests_naming_the_program_before_it_runs(
    tmp_path: Path,
) -> None:
    outcomes, ran, output = run_wrong_tests(tmp_path)
    assert ran == [], f"the guard let {ran} run\n{output}"
    expected = {
        "test_starts_mosquitto": "external program 'mosquitto'",
        "test_starts_initdb_through_asyncio": "external program 'initdb'",
        "test_swallows_the_refusal_of_tshark": "external program 'tshark'",
        "test_starts_chromium_through_a_shell": f"external program 'sh' ({tmp_path}/bin/chromium",
        "test_finds_promtool_on_the_path": "external program 'promtool'",
        "test_asks_for_a_database[sqlite]": "asks for the fixture 'db_location'",
        "test_asks_for_a_database[postgres]": "asks for the fixture 'db_location'",
    }
    for name, needle in expected.items():
        assert needle in outcomes[name], f"{name}: {outcomes.get(name)!r}\n{output}"
        assert "move this test to tests/" in outcomes[name]
    assert "tests/db/" in outcomes["test_starts_initdb_through_asyncio"]
    assert "tests/integration/" in outcomes["test_starts_mosquitto"]
    assert outcomes["test_python_and_git_are_fine"] == "", output
    assert set(outcomes) == {*expected, "test_python_and_git_are_fine"}


def test_a_test_module_outside_the_tiers_is_named() -> None:
    from conftest import REPO_ROOT, outside_the_tiers  # tests/conftest.py

    tests = REPO_ROOT / "tests"
    for tier in ("unit", "db", "integration"):
        assert outside_the_tiers(tests / tier / "test_x.py") is None
    for stray in (tests / "test_x.py", tests / "helpers" / "test_x.py"):
        why = outside_the_tiers(stray)
        assert why is not None and why.startswith(str(stray.relative_to(REPO_ROOT)))
        assert "tests/unit/" in why and "tests/db/" in why and "tests/integration/" in why
