"""PostgreSQL behind the same small database surface the store uses on SQLite.

``BridgeStore`` talks to its database through a few calls of sqlite-utils (``execute``,
``query``, ``db[table].insert/upsert``, ``conn.execute/executemany``). ``PgDatabase`` offers
those calls on a psycopg 3 connection pool, and :func:`translate` rewrites the store's SQL
(written once, in SQLite's dialect) for PostgreSQL: ``?`` placeholders, ``INSERT OR IGNORE``,
``group_concat``, ``total``, ``json_extract``, two-argument ``max``/``min``, ``CAST(… AS
INTEGER)`` (SQLite truncates, PostgreSQL rounds), ``LIKE`` (case-insensitive in SQLite) and,
in DDL, the column types (``INTEGER PRIMARY KEY`` becomes an identity column, ``REAL`` double
precision, ``BLOB`` bytea, ``COLLATE NOCASE`` an ICU case-insensitive collation). So the
schema and its migrations are the same text on both engines.

Threads: each thread inside ``transaction()`` holds one pooled connection for the whole
transaction (nested use becomes a savepoint); outside a transaction every statement borrows a
connection in autocommit mode. Results are read in full before the connection goes back.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.types.numeric import NumericLoader
from psycopg_pool import ConnectionPool

__all__ = [
    "PgDatabase",
    "translate",
    "is_postgres_url",
    "safe_url",
    "INTEGRITY_ERRORS",
    "MIGRATION_LOCK",
]

INTEGRITY_ERRORS: tuple[type[Exception], ...] = (psycopg.IntegrityError,)
# Advisory lock key held while the schema is created or migrated (one session at a time).
MIGRATION_LOCK = 7310301


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


# SQL translation ------------------------------------------------------------------------
_STRING = re.compile(r"'(?:[^']|'')*'")


def _outside_quotes(sql: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(index, character, parenthesis depth after it) of each character outside string literals."""
    depth, quote = 0, False
    for i in range(start, len(sql)):
        ch = sql[i]
        if ch == "'":
            quote = not quote
            continue
        if quote:
            continue
        depth += (ch == "(") - (ch == ")")
        yield i, ch, depth


def _split_args(inner: str) -> list[str]:
    """Top-level comma split of a function's argument text."""
    args, start = [], 0
    for i, ch, depth in _outside_quotes(inner):
        if ch == "," and depth == 0:
            args.append(inner[start:i].strip())
            start = i + 1
    args.append(inner[start:].strip())
    return args


def _matching(sql: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at ``open_at``."""
    for i, ch, depth in _outside_quotes(sql, open_at):
        if ch == ")" and depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses in SQL: {sql[:120]}")


_FUNCS = re.compile(r"\b(group_concat|total|json_extract|max|min|cast)\s*\(", re.IGNORECASE)


def _rewrite_functions(sql: str) -> str:
    out, pos = [], 0
    while True:
        m = _FUNCS.search(sql, pos)
        if m is None:
            out.append(sql[pos:])
            return "".join(out)
        open_at = m.end() - 1
        close = _matching(sql, open_at)
        name = m.group(1).lower()
        inner = _rewrite_functions(sql[open_at + 1 : close])
        args = _split_args(inner)
        if name == "group_concat":
            sep = args[1] if len(args) > 1 else "','"
            new = f"string_agg(CAST({args[0]} AS TEXT), {sep})"
        elif name == "total":
            new = f"coalesce(sum({args[0]}), 0)"
        elif name == "json_extract":
            path = args[1].strip("'")
            if not path.startswith("$."):
                raise ValueError(f"json_extract path {args[1]} is not supported on PostgreSQL")
            new = f"CAST(CAST({args[0]} AS json)->>'{path[2:]}' AS NUMERIC)"
        elif name in ("max", "min"):
            fn = {"max": "greatest", "min": "least"}[name] if len(args) > 1 else name
            new = f"{fn}({inner})"
        else:  # cast
            cm = re.fullmatch(r"(.*)\s+AS\s+(\w+(?:\s+\w+)?)", inner, re.IGNORECASE | re.DOTALL)
            if cm and cm.group(2).upper() == "INTEGER":
                new = f"CAST(trunc(CAST({cm.group(1)} AS NUMERIC)) AS BIGINT)"
            elif cm and cm.group(2).upper() == "REAL":
                new = f"CAST({cm.group(1)} AS DOUBLE PRECISION)"
            else:
                new = f"CAST({inner})"
        out.append(sql[pos : m.start()])
        out.append(new)
        pos = close + 1


_DDL_TYPES = [
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?", re.I),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    (re.compile(r"\bCOLLATE\s+NOCASE\b", re.I), 'COLLATE "nocase"'),
]  # fmt: skip
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.I)
_INSERT_INTO = re.compile(r"^\s*INSERT\s+(?:OR\s+IGNORE\s+)?INTO\s+(\w+)", re.I)


@lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, str | None]:
    """SQLite-dialect SQL -> (PostgreSQL SQL with %s placeholders, table an INSERT goes into)."""
    head = sql.lstrip()[:12].upper()
    ddl = head.startswith(("CREATE", "ALTER"))
    # Work on the text outside string literals only.
    parts: list[str] = []
    literals: list[str] = []
    pos = 0
    for m in _STRING.finditer(sql):
        parts.append(sql[pos : m.start()])
        literals.append(m.group(0))
        pos = m.end()
    parts.append(sql[pos:])
    marker = "\x00{}\x00"
    code = "".join(p + (marker.format(i) if i < len(literals) else "") for i, p in enumerate(parts))
    code = code.replace("%", "%%").replace("?", "%s")
    if ddl and not re.match(r"\s*CREATE\s+VIEW", code, re.I):
        if not re.match(r"\s*CREATE\s+(UNIQUE\s+)?INDEX", code, re.I):
            for pattern, repl in _DDL_TYPES:
                code = pattern.sub(repl, code)
    else:
        code = re.sub(r"\bLIKE\b", "ILIKE", code)
        code = _rewrite_functions_outside(code, literals)
    table = None
    m = _INSERT_INTO.match(code)
    if m:
        table = m.group(1)
    if _OR_IGNORE.match(code):
        code = _OR_IGNORE.sub("INSERT INTO", code, count=1).rstrip().rstrip(";")
        ret = re.search(r"\sRETURNING\s", code, re.I)
        if ret:  # the conflict clause goes before RETURNING
            code = f"{code[: ret.start()]} ON CONFLICT DO NOTHING{code[ret.start() :]}"
        else:
            code += " ON CONFLICT DO NOTHING"
    for i, lit in enumerate(literals):
        code = code.replace(marker.format(i), lit.replace("%", "%%"), 1)
    return code, table


def _rewrite_functions_outside(code: str, literals: list[str]) -> str:
    # literals are markers here, so parentheses and commas inside strings cannot mislead us;
    # json_extract's path is needed verbatim, so put that literal back first.
    def restore(text: str) -> str:
        return re.sub(
            r"\x00(\d+)\x00", lambda m: literals[int(m.group(1))].replace("%", "%%"), text
        )

    if "json_extract" in code.lower():
        code = restore(code)
    return _rewrite_functions(code)


# psycopg adaptation ---------------------------------------------------------------------
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
            if value == value.to_integral_value():
                return int(value)
            return float(value)
        return value


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_dumper(bool, _BoolAsInt)
    conn.adapters.register_loader("numeric", _Number)


class Result:
    """What a sqlite3 cursor offers the store, read in full."""

    def __init__(self, cur: psycopg.Cursor[Any], returning_id: bool) -> None:
        # Column names straight from the result (cursor.description builds a Column object
        # per column and statement: a measurable share of a worker's CPU).
        res = cur.pgresult
        self.rowcount = cur.rowcount
        self.names: list[str] = []
        self._rows: list[tuple[Any, ...]] = []
        if res is not None and res.status == psycopg.pq.ExecStatus.TUPLES_OK:
            self.names = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
            self._rows = cur.fetchall()
        self.lastrowid: int | None = None
        if returning_id:
            self.lastrowid = self._rows[0][0] if self._rows else None
            self._rows = []
            self.names = []
        self._pos = 0

    @property
    def description(self) -> list[tuple[str]] | None:
        """As sqlite3's: one tuple per column, the name first; None when no rows can come."""
        return [(n,) for n in self.names] if self.names else None

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._pos :]
        self._pos = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class _Table:
    def __init__(self, db: PgDatabase, name: str) -> None:
        self.db = db
        self.name = name

    def insert(self, row: dict[str, Any]) -> Result:
        cols = list(row)
        return self.db.execute(
            f"INSERT INTO {self.name}({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
            list(row.values()),
        )

    def upsert(self, row: dict[str, Any], pk: str | Sequence[str]) -> Result:
        keys = [pk] if isinstance(pk, str) else list(pk)
        cols = list(row)
        rest = [c for c in cols if c not in keys]
        action = (
            "DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in rest)
            if rest
            else "DO NOTHING"
        )
        return self.db.execute(
            f"INSERT INTO {self.name}({', '.join(cols)}) VALUES ({','.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(keys)}) {action}",
            list(row.values()),
        )


class _Conn:
    """``db.conn`` of sqlite-utils: the calls the store makes on the raw connection."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        return self.db.execute(sql, params)

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        query, _ = translate(sql)
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.executemany(query, [_params(p) for p in seq])

    def close(self) -> None:
        self.db.close()


def _params(params: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(params or ())


_RENAME = re.compile(r"\s*ALTER\s+TABLE\s+(\w+)\s+RENAME\s+TO\s+(\w+)\s*$", re.I)


class PgDatabase:
    """A psycopg 3 pool with the sqlite-utils surface BridgeStore uses."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            name="passby-store",
        )
        try:
            self.pool.open(wait=True, timeout=15)
        except psycopg.pool.PoolTimeout as exc:  # type: ignore[attr-defined]
            self.pool.close()
            raise psycopg.OperationalError(
                f"PostgreSQL at {safe_url(url)} did not accept a connection within 15 s"
            ) from exc
        self._tl = threading.local()
        self.conn = _Conn(self)
        self._identity: set[str] | None = None

    # connections and transactions ----------------------------------------------------------
    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        held = getattr(self._tl, "conn", None)
        if held is not None:
            yield held
            return
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[PgDatabase]:
        held = getattr(self._tl, "conn", None)
        if held is not None:
            with held.transaction():  # a savepoint
                yield self
            return
        with self.pool.connection() as conn:
            self._tl.conn = conn
            try:
                with conn.transaction():
                    yield self
            finally:
                self._tl.conn = None

    @property
    def in_transaction(self) -> bool:
        return getattr(self._tl, "conn", None) is not None

    # statements -----------------------------------------------------------------------------
    def identity_tables(self) -> set[str]:
        if self._identity is None:
            with self.connection() as conn:
                rows = conn.execute(
                    "SELECT table_name FROM information_schema.columns WHERE column_name='id' "
                    "AND is_identity='YES' AND table_schema=current_schema()"
                ).fetchall()
            self._identity = {r[0] for r in rows}
        return self._identity

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> Result:
        query, table = translate(sql)
        returning = False
        if table is not None and table in self.identity_tables() and "RETURNING" not in query:
            query += " RETURNING id"
            returning = True
        with self.connection() as conn:
            cur = conn.execute(query, _params(params))
            result = Result(cur, returning)
        if query.lstrip()[:6].upper() in ("CREATE", "ALTER ", "DROP T"):
            self._identity = None
            rename = _RENAME.match(sql)
            if rename:
                self._rename_dependents(rename.group(1), rename.group(2))
        return result

    def query(self, sql: str, params: Sequence[Any] | None = ()) -> Iterator[dict[str, Any]]:
        result = self.execute(sql, params)
        names = result.names
        for row in result.fetchall():
            yield dict(zip(names, row, strict=True))

    def _rename_dependents(self, old: str, new: str) -> None:
        """PostgreSQL index and sequence names are schema-wide: after ``ALTER TABLE old RENAME
        TO new`` rename old_* ones so that a new table called ``old`` can be created."""
        with self.connection() as conn:
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname=current_schema() "
                "AND tablename=%s",
                (new,),
            ).fetchall():
                if name.startswith(old + "_"):
                    conn.execute(f'ALTER INDEX "{name}" RENAME TO "{new}{name[len(old) :]}"')
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_depend d ON d.objid=c.oid "
                "JOIN pg_class t ON t.oid=d.refobjid WHERE c.relkind='S' AND t.relname=%s",
                (new,),
            ).fetchall():
                if name.startswith(old + "_"):
                    conn.execute(f'ALTER SEQUENCE "{name}" RENAME TO "{new}{name[len(old) :]}"')

    def __getitem__(self, table: str) -> _Table:
        return _Table(self, table)

    def prepare_schema(self) -> None:
        """What the translated DDL needs before the first migration. Under the migrations'
        advisory lock: ``IF NOT EXISTS`` does not stop two sessions creating it at once."""
        with self.transaction(), self.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE COLLATION IF NOT EXISTS nocase "
                "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
            )

    def close(self) -> None:
        self.pool.close()


def safe_url(url: str) -> str:
    """The URL without its password (for error messages)."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
