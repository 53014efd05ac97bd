"""Shared test setup: repository paths, the shared reference data, the store on both engines,
every test module in a tier, and a run-something guard."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Reference material that lives next to the repository (not in it): design notes and
# third-party captures under data/pcaps. Tests that need it use the fixtures below.
SHARED_DATA = REPO_ROOT.parent / "shared"
SHARED_PCAPS = SHARED_DATA / "data" / "pcaps"
DEMO_DIR = REPO_ROOT / "cloud_bridge" / "dev" / "demo"


def require(path: Path, what: str) -> Path:
    """``path`` if it exists, else fail the test saying what is missing and where."""
    if not path.exists():
        pytest.fail(
            f"{what} not found at {path} (expected next to the repository, "
            f"at {REPO_ROOT.parent}/shared)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require(SHARED_DATA, "the shared reference data directory")


@pytest.fixture(scope="session")
def shared_pcaps() -> Path:
    return require(SHARED_PCAPS, "the shared reference captures")


# The store on both engines ---------------------------------------------------------------
# ``db_location`` is a SQLite file in the test's tmp_path or a fresh database in a PostgreSQL
# cluster this session starts (initdb/pg_ctl from Debian's postgresql, loopback only). A test
# that takes it runs once per engine: [sqlite] and [postgres].
_pg_names = itertools.count(1)
PG_DATA_KEY = "5e" * 32


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[object]:
    from cloud_bridge.dev.pgserver import LocalPostgres, PostgresError

    pg = LocalPostgres(settings={"fsync": "off", "synchronous_commit": "off"})
    try:
        pg.start()
    except PostgresError as exc:
        pg.stop()
        pytest.fail(f"PostgreSQL did not start: {exc}", pytrace=False)
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_location(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "bridge.db"
    pg = request.getfixturevalue("postgres_cluster")
    # A PostgreSQL store keeps no key files: its data key comes from the environment.
    monkeypatch.setenv("PASSBY_DATA_KEY", PG_DATA_KEY)
    return pg.create_database(f"t{next(_pg_names)}")  # type: ignore[attr-defined,no-any-return]


# Every test module lives in a tier -------------------------------------------------------
TESTS = REPO_ROOT / "tests"
TIERS = ("unit", "db", "integration")  # tests/bench/ holds benchmarks (bench_*.py), not tests


def outside_the_tiers(path: Path) -> str | None:
    """Why the test module at ``path`` is in no tier (its tier's rules would not apply), or None."""
    parts = path.resolve().relative_to(TESTS).parts
    if len(parts) > 1 and parts[0] in TIERS:
        return None
    return (
        f"{path.resolve().relative_to(REPO_ROOT)} is in no test tier: move it to tests/unit/ "
        "(no external process), tests/db/ (takes db_location) or tests/integration/ (real "
        "Mosquitto, PostgreSQL, Chromium, tshark, installers)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if TESTS in Path(item.path).resolve().parents and (why := outside_the_tiers(item.path)):
        pytest.fail(why, pytrace=False)


def tier_of(item: pytest.Item) -> int:
    parts = Path(item.path).resolve().parts
    return next((i for i, tier in enumerate(TIERS) if tier in parts), len(TIERS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit tests first (the fastest failures first), then db, then integration. A session
    fixture of another tier (the PostgreSQL cluster) is then stopped in a db or integration
    test's teardown, never in a unit test's, where the unit tier's guard would refuse pg_ctl."""
    items.sort(key=tier_of)  # stable: the order within a tier stays pytest's


# A run where nothing executed (everything skipped or deselected) is not a pass.
_ran = 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _ran
    if report.when == "call" or (report.when == "setup" and report.failed):
        _ran += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.option.collectonly or exitstatus != pytest.ExitCode.OK or _ran:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line("no test ran (all skipped or deselected): exit status 5", red=True)
    session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
