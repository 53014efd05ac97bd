"""One database object for SQLite and PostgreSQL over a SQLAlchemy Engine (Core, no ORM).

A transaction is the unit of work: ``with db.transaction() as tx:`` runs every statement of
the block on one connection and commits at the end (nested use joins it through a
savepoint). Statements are hand-written SQL through ``text()`` with named parameters, kept
as module-level constants by their callers so SQLAlchemy's statement caches work; where the
dialects differ, the helpers below build Core expressions (insert that skips only conflicts,
JSON access, two-argument max).

SQLite: one connection shared by the process's threads under a lock (as sqlite-utils had
it), WAL, foreign keys, ``secure_delete``, a 30 s busy timeout, and ``BEGIN IMMEDIATE`` so a
writer holds the write lock from its first statement. PostgreSQL: a pool of psycopg 3
connections, one per transaction; a Python bool is stored as 0/1 (the schema's INTEGER
columns) and a whole ``numeric`` (a sum of integers) reads as int, as SQLite gives them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.types.numeric import NumericLoader
from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Result,
    Table,
    create_engine,
    event,
    literal,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import Numeric

__all__ = [
    "Database",
    "greatest",
    "insert_skipping_conflicts",
    "is_postgres_url",
    "json_number",
    "safe_url",
]


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def safe_url(url: str) -> str:
    """The URL without its password (for error messages)."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def sqlalchemy_url(url: str) -> str:
    """A ``postgresql://`` URL for SQLAlchemy's psycopg 3 driver."""
    return "postgresql+psycopg://" + url.split("://", 1)[1]


class _BoolAsInt(Dumper):
    """SQLite stores booleans as 0/1 and the schema says INTEGER: keep it that way."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _Number(NumericLoader):
    """numeric (sum of integers, exact arithmetic) -> int when whole, else float, as SQLite."""

    def load(self, data: Any) -> Any:
        value = super().load(data)
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        return value


class Database:
    """The bridge's database: a SQLite file (or ``:memory:``) or a ``postgresql://`` URL."""

    def __init__(self, location: str | Path, pool_size: int = 10) -> None:
        self.postgres = is_postgres_url(location)
        self.location = str(location)
        self._tl = threading.local()
        self.engine: Engine
        if self.postgres:
            self.engine = create_engine(
                sqlalchemy_url(self.location),
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=30,
                connect_args={"connect_timeout": 15},
            )
            event.listen(self.engine, "connect", _configure_psycopg)
            self._lock: Any = _NoLock()
        else:
            memory = self.location == ":memory:"
            if not memory:
                Path(self.location).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                "sqlite://" if memory else f"sqlite:///{self.location}",
                poolclass=StaticPool,  # one connection, shared by the threads under _lock
                connect_args={"check_same_thread": False, "timeout": 30.0},
            )
            event.listen(self.engine, "connect", _configure_sqlite(wal=not memory))
            event.listen(self.engine, "begin", _begin_immediate)
            self._lock = threading.RLock()

    @property
    def where(self) -> str:
        """The database for messages (a PostgreSQL URL without its password)."""
        return safe_url(self.location) if self.postgres else self.location

    @property
    def in_transaction(self) -> bool:
        return getattr(self._tl, "conn", None) is not None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The unit of work: commits at the end, rolls back on an exception. Nested use joins
        the outer transaction through a savepoint (its own failure undoes only its part)."""
        held: Connection | None = getattr(self._tl, "conn", None)
        if held is not None:
            with held.begin_nested():
                yield held
            return
        with self._lock, self.engine.connect() as conn:
            self._tl.conn = conn
            try:
                with conn.begin():
                    yield conn
            finally:
                self._tl.conn = None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The unit of work's connection, or one for a single statement in autocommit mode
        (SQLite: no BEGIN IMMEDIATE, so a read does not take the write lock)."""
        held: Connection | None = getattr(self._tl, "conn", None)
        if held is not None:
            yield held
            return
        with self._lock, self.engine.connect() as conn:
            if self.postgres:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                yield conn.execution_options(**{_NO_BEGIN: True})

    def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        """Run one statement (in the current unit of work, if any); outside one, rows are read
        in full before its connection goes back to the pool."""
        outside = not self.in_transaction
        with self.connection() as conn:
            cursor = conn.execute(statement, params or {})
            if outside and cursor.returns_rows:
                return cursor.freeze()()
            return cursor

    def query(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The rows of a query as dicts."""
        with self.connection() as conn:
            return [dict(r) for r in conn.execute(statement, params or {}).mappings()]

    def close(self) -> None:
        self.engine.dispose()


class _NoLock:
    """PostgreSQL needs no process-wide lock: threads do not share a connection."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _configure_psycopg(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.adapters.register_dumper(bool, _BoolAsInt)
    dbapi_connection.adapters.register_loader("numeric", _Number)


def _configure_sqlite(wal: bool) -> Any:
    def configure(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling off: _begin_immediate says BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted or overwritten content (erased customers, plaintext moved by migration 2,
        # finished enrolments) is zeroed on disk, not left in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    return configure


_NO_BEGIN = "passby_autocommit"


def _begin_immediate(conn: Connection) -> None:
    """A SQLite writer takes the write lock at BEGIN, so two writers never deadlock halfway."""
    if not conn.get_execution_options().get(_NO_BEGIN):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# Where the dialects differ: Core expressions -------------------------------------------------
def insert_skipping_conflicts(table: Table, dialect_name: str) -> Any:
    """INSERT that skips a row only when it conflicts with a unique key (``ON CONFLICT DO
    NOTHING`` on both engines: SQLite's ``INSERT OR IGNORE`` would also skip NOT NULL and
    CHECK failures)."""
    module = postgresql if dialect_name == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing()


def json_number(column: ColumnElement[Any], *path: str) -> ColumnElement[Any]:
    """The number at ``path`` (one key per level) in a JSON text column, on either engine."""
    return _JsonNumber(column, path)


def greatest(a: Any, b: Any) -> ColumnElement[Any]:
    """The larger of two values (SQLite's two-argument max, PostgreSQL's greatest)."""
    return _Greatest(a, b)


class _JsonNumber(FunctionElement[Any]):
    inherit_cache = False
    type = Numeric()

    def __init__(self, column: ColumnElement[Any], path: tuple[str, ...]) -> None:
        self.path = path
        super().__init__(column)


@compiles(_JsonNumber, "sqlite")
def _json_number_sqlite(element: _JsonNumber, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    # '$."a"."b"': each key quoted, so a key with a dot in it stays one key.
    path = "$" + "".join('."' + key.replace('"', '""') + '"' for key in element.path)
    return (
        f"json_extract({compiler.process(column, **kw)}, {compiler.process(literal(path), **kw)})"
    )


@compiles(_JsonNumber, "postgresql")
def _json_number_pg(element: _JsonNumber, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    path = compiler.process(literal(list(element.path), postgresql.ARRAY(postgresql.TEXT)), **kw)
    return f"CAST(CAST({compiler.process(column, **kw)} AS json) #>> {path} AS NUMERIC)"


class _Greatest(FunctionElement[Any]):
    inherit_cache = True
    name = "greatest"


@compiles(_Greatest, "sqlite")
def _greatest_sqlite(element: _Greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(_Greatest, "postgresql")
def _greatest_pg(element: _Greatest, compiler: Any, **kw: Any) -> str:
    return f"greatest({compiler.process(element.clauses, **kw)})"
