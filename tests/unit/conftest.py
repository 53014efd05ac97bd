"""The unit tier starts no external program, and so it enforces that itself.

A test under tests/unit/ fails, naming the program, when it (or a fixture it uses) starts anything
but this Python interpreter, a program of this virtualenv (our own ``cloud-bridge``/``edge-agent``,
ruff, mypy) or one of ``ALLOWED_PROGRAMS``: no PostgreSQL (initdb, pg_ctl, postgres), Mosquitto,
Chromium, tshark, shell scripts or system tools (systemd-analyze, shellcheck, promtool, openssl).
A unit test that asks for a fixture of the other tiers (``FIXTURES_OF_OTHER_TIERS``) fails before
that fixture starts anything. Such a test belongs in tests/db/ (both engines) or
tests/integration/ (real components).

The guard wraps ``subprocess.Popen`` (which ``subprocess.run`` and asyncio's subprocesses use),
``os.system`` and ``os.posix_spawn[p]`` in this process; a Python child it allows is not watched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
# Programs outside the virtualenv a unit test may start: they read files, they serve nothing.
ALLOWED_PROGRAMS = frozenset({"git", "cat"})
FIXTURES_OF_OTHER_TIERS = {
    "db_location": "tests/db/ (it runs the test on SQLite and on a PostgreSQL it starts)",
    "postgres_cluster": "tests/db/ (it starts PostgreSQL)",
    "mosquitto": "tests/integration/ (it starts Mosquitto)",
    "mosquitto_factory": "tests/integration/ (it starts Mosquitto)",
}
POSTGRES_PROGRAMS = frozenset({"postgres", "initdb", "pg_ctl", "pg_ctlcluster", "psql", "pg_dump"})


class ExternalProgramRefused(Exception):
    """Raised where a unit test would start an external program (the test also fails)."""


_active: list[str] = []  # the node id of the unit test running now, if any
_refused: list[str] = []  # what the running unit test was refused


def in_unit_tier(item: pytest.Item) -> bool:
    return HERE in Path(item.path).resolve().parents


def allowed(program: str) -> bool:
    path = Path(program)
    if path.name in ALLOWED_PROGRAMS or path.name.startswith("python"):
        return True
    if path.parent == Path("."):  # a bare name: where PATH finds it, as exec would
        path = Path(shutil.which(program) or program)
    return path.parent == VENV_BIN or path.resolve() == Path(sys.executable).resolve()


def refusal(program: str, command: str) -> str:
    name = Path(program).name
    home = "tests/db/" if name in POSTGRES_PROGRAMS else "tests/integration/"
    return (
        f"unit test started the external program {name!r} ({command[:200]}): tests/unit/ starts no "
        f"external program; move this test to {home}"
    )


def check(program: str | os.PathLike[str], command: str) -> None:
    """Refuse ``program`` while a unit test runs: record it, then raise."""
    __tracebackhide__ = True
    if not _active or allowed(os.fsdecode(program)):
        return
    message = refusal(os.fsdecode(program), command)
    _refused.append(message)
    raise ExternalProgramRefused(message)


def _command(args: Any) -> tuple[str, str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        return text.split()[0] if text.split() else text, text
    argv = [os.fsdecode(a) for a in args]
    return (argv[0] if argv else ""), " ".join(argv)


_real_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]
_real_system = os.system
_real_posix_spawn = os.posix_spawn
_real_posix_spawnp = os.posix_spawnp


def _execute_child(self: subprocess.Popen[Any], args: Any, executable: Any, *rest: Any) -> Any:
    __tracebackhide__ = True
    shell = rest[7]  # (preexec_fn, close_fds, pass_fds, cwd, env, startupinfo, flags, shell, ...)
    program, command = _command(args)
    check("/bin/sh" if shell else (os.fsdecode(executable) if executable else program), command)
    return _real_execute_child(self, args, executable, *rest)


def _system(command: str) -> int:
    check("/bin/sh", command)
    return _real_system(command)


def _spawner(real: Callable[..., int]) -> Callable[..., int]:
    def spawn(path: str | os.PathLike[str], argv: Sequence[str], *args: Any, **kw: Any) -> int:
        check(path, " ".join(os.fsdecode(a) for a in argv))
        return real(path, argv, *args, **kw)

    return spawn


def _install() -> None:
    if getattr(subprocess.Popen._execute_child, "_unit_guard", False):  # type: ignore[attr-defined]
        return
    _execute_child._unit_guard = True  # type: ignore[attr-defined]
    subprocess.Popen._execute_child = _execute_child  # type: ignore[attr-defined]
    os.system = _system
    os.posix_spawn = _spawner(_real_posix_spawn)
    os.posix_spawnp = _spawner(_real_posix_spawnp)


_install()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """Watch a unit test from its fixtures' setup to their teardown."""
    if not in_unit_tier(item):
        yield
        return
    _active.append(item.nodeid)
    _refused.clear()
    try:
        yield
    finally:
        _active.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, None, None]:
    """A refusal the test failed with is reported once (not again at teardown)."""
    yield
    if call.excinfo is not None and call.excinfo.errisinstance(ExternalProgramRefused):
        _refused.clear()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A unit test asking for another tier's fixture fails before the fixture starts anything."""
    if not in_unit_tier(item):
        return
    wanted = [name for name in getattr(item, "fixturenames", ()) if name in FIXTURES_OF_OTHER_TIERS]
    if wanted:
        name = wanted[0]
        pytest.fail(
            f"unit test asks for the fixture {name!r}: tests/unit/ starts no external program; "
            f"move this test to {FIXTURES_OF_OTHER_TIERS[name]}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_external_program() -> Iterator[None]:
    """Fail the test even when the refusal was swallowed (caught, or raised in a thread)."""
    yield
    if _refused:
        refused = list(dict.fromkeys(_refused))
        _refused.clear()
        pytest.fail("; ".join(refused), pytrace=False)
