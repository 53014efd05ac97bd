"""storage/db.py on both engines: the unit of work, and the three bugs SQL rewriting had.

``pgdb.translate`` rewrote SQLite SQL for PostgreSQL with regular expressions. Three of its
bugs, reproduced in issue 15, must be impossible with SQLAlchemy (``text()`` with named
parameters, and Core expressions where the dialects differ):

1. a ``--`` comment holding an apostrophe before a quoted string left a ``?`` untranslated;
2. ``json_extract(j, '$.a.b')`` became ``->>'a.b'``, a key literally named "a.b";
3. ``INSERT OR IGNORE`` became ``ON CONFLICT DO NOTHING``, but SQLite's OR IGNORE also skips
   NOT NULL and CHECK failures: an insert must skip only conflicts, on both engines.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, column, select, table, text
from sqlalchemy.exc import IntegrityError

from cloud_bridge.storage.db import Database, greatest, insert_skipping_conflicts, json_number

meta = MetaData()
things = Table(
    "things",
    meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("doc", Text),
)
CREATE = text("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL, doc TEXT)")
INSERT = text("INSERT INTO things(id, name, doc) VALUES (:id, :name, :doc)")
COUNT = text("SELECT count(*) FROM things")


@pytest.fixture()
def db(db_location: str | Path) -> Iterator[Database]:
    database = Database(db_location)
    with database.transaction() as tx:
        tx.execute(CREATE)
    yield database
    database.close()


def test_a_comment_with_an_apostrophe_does_not_hide_a_parameter(db: Database) -> None:
    db.execute(INSERT, {"id": 1, "name": "q", "doc": None})
    db.execute(INSERT, {"id": 2, "name": "other", "doc": None})
    rows = db.query(
        text("SELECT id -- don't\nFROM things WHERE id = :id AND name = 'q'"), {"id": 1}
    )
    assert rows == [{"id": 1}]


def test_json_path_walks_nested_keys_and_a_dotted_key_is_one_key(db: Database) -> None:
    db.execute(INSERT, {"id": 1, "name": "n", "doc": '{"a": {"b": 7}, "a.b": 99}'})
    t = table("things", column("doc"))
    assert db.execute(select(json_number(t.c.doc, "a", "b"))).scalar() == 7
    assert db.execute(select(json_number(t.c.doc, "a.b"))).scalar() == 99
    assert db.execute(select(json_number(t.c.doc, "missing"))).scalar() is None


def test_insert_skips_conflicts_only(db: Database) -> None:
    db.execute(INSERT, {"id": 1, "name": "first", "doc": None})
    insert = insert_skipping_conflicts(things, db.engine.dialect.name)
    db.execute(insert.values(id=1, name="again", doc=None))  # a conflict: skipped
    assert db.query(text("SELECT name FROM things")) == [{"name": "first"}]
    with pytest.raises(IntegrityError):  # NOT NULL: an error on both engines, never skipped
        db.execute(insert.values(id=2, name=None, doc=None))
    assert db.execute(COUNT).scalar() == 1


def test_greatest_of_two(db: Database) -> None:
    assert db.execute(select(greatest(3, 5))).scalar() == 5


def test_a_unit_of_work_commits_or_rolls_back_as_one(db: Database) -> None:
    with db.transaction() as tx:
        tx.execute(INSERT, {"id": 1, "name": "kept", "doc": None})
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute(INSERT, {"id": 2, "name": "lost", "doc": None})
        raise RuntimeError("the unit of work fails")
    assert db.query(text("SELECT id FROM things")) == [{"id": 1}]


def test_a_nested_unit_joins_through_a_savepoint(db: Database) -> None:
    with db.transaction() as outer:
        outer.execute(INSERT, {"id": 1, "name": "outer", "doc": None})
        with pytest.raises(IntegrityError), db.transaction() as inner:
            inner.execute(INSERT, {"id": 1, "name": "duplicate", "doc": None})
        with db.transaction() as inner:
            assert inner is outer
            inner.execute(INSERT, {"id": 2, "name": "inner", "doc": None})
    assert db.execute(COUNT).scalar() == 2


def test_booleans_are_stored_as_integers(db: Database) -> None:
    """The schema's flags are INTEGER columns on both engines (0/1)."""
    db.execute(text("CREATE TABLE flags (v INTEGER NOT NULL)"))
    db.execute(text("INSERT INTO flags(v) VALUES (:v)"), {"v": True})
    assert db.query(text("SELECT v, v + 1 AS w FROM flags")) == [{"v": 1, "w": 2}]


def test_threads_get_one_unit_of_work_each(db: Database) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                with db.transaction() as tx:
                    tx.execute(INSERT, {"id": n * 100 + i, "name": "t", "doc": None})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert db.execute(COUNT).scalar() == 80


def test_sqlite_keeps_its_pragmas(tmp_path: Path) -> None:
    db = Database(tmp_path / "bridge.db")
    try:
        assert db.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert db.execute(text("PRAGMA secure_delete")).scalar() == 1
    finally:
        db.close()
