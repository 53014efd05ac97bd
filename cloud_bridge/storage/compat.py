"""SQLite-dialect SQL with ``?`` parameters, run in a unit of work of :class:`Database`.

Transitional (issue 15): ``BridgeStore`` and the modules that hand it SQL were written for
sqlite-utils' surface (``execute``, ``query``, ``db[table].insert/upsert``,
``conn.execute/executemany``). :class:`CompatSQL` offers that surface on the connection of
the current unit of work, so a statement not yet rewritten as ``text()`` with named
parameters and one that is run in the same transaction. On SQLite the SQL goes to sqlite3
as it is (``?`` is its own parameter style); on PostgreSQL it still goes through
``pgdb.translate``. Each statement moved to ``text()`` is one less to translate; when none
is left, this module and ``translate`` go.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from cloud_bridge.storage.db import Database
from cloud_bridge.storage.pgdb import Result, translate

__all__ = ["CompatSQL", "Cursor"]


class Cursor(Protocol):
    """What a statement gives back on either engine (sqlite3's cursor or ``pgdb.Result``)."""

    rowcount: int
    lastrowid: int | None

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class _Table:
    def __init__(self, db: CompatSQL, name: str) -> None:
        self.db = db
        self.name = name

    def insert(self, row: dict[str, Any]) -> Cursor:
        cols = list(row)
        return self.db.execute(
            f"INSERT INTO {self.name}({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
            list(row.values()),
        )

    def upsert(self, row: dict[str, Any], pk: str | Sequence[str]) -> Cursor:
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
    """``db.conn`` of sqlite-utils: the calls made on the raw connection."""

    def __init__(self, db: CompatSQL) -> None:
        self.db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(sql, params)

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, seq)

    def close(self) -> None:
        self.db.database.close()


class CompatSQL:
    """sqlite-utils' surface over a :class:`Database`, statement by statement."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.postgres = database.postgres
        self.conn = _Conn(self)
        self._identity: set[str] | None = None

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> Cursor:
        args = tuple(params or ())
        with self.database.connection() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            if not self.postgres:
                cursor: Cursor = raw.execute(sql, args)  # sqlite3's cursor
                return cursor
            query, table = translate(sql)
            returning = False
            identity = table is not None and table in self._identity_tables(raw)
            if identity and "RETURNING" not in query:
                query += " RETURNING id"
                returning = True
            with raw.cursor() as cur:
                cur.execute(query, args)
                return Result(cur, returning)

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        with self.database.connection() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            if not self.postgres:
                raw.executemany(sql, [tuple(p) for p in seq])
                return
            with raw.cursor() as cur:
                cur.executemany(translate(sql)[0], [tuple(p) for p in seq])

    def query(self, sql: str, params: Sequence[Any] | None = ()) -> Iterator[dict[str, Any]]:
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description] if cur.description else []
        for row in cur.fetchall():
            yield dict(zip(names, row, strict=True))

    def close(self) -> None:
        self.database.close()

    def __getitem__(self, table: str) -> _Table:
        return _Table(self, table)

    def _identity_tables(self, raw: Any) -> set[str]:
        if self._identity is None:
            with raw.cursor() as cur:
                cur.execute(
                    "SELECT table_name FROM information_schema.columns WHERE column_name='id' "
                    "AND is_identity='YES' AND table_schema=current_schema()"
                )
                self._identity = {r[0] for r in cur.fetchall()}
        return self._identity
