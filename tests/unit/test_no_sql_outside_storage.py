"""No SQL outside ``cloud_bridge/storage/``: every statement lives in a repository module there.

Read from the source (AST), so nothing is imported or executed. Two findings:

- a call of ``execute``, ``executemany``, ``executescript`` or ``query`` whose first argument
  is a string (a literal, an f-string or a ``+`` of them): SQL handed to a database handle;
- a string (literal, f-string or ``+`` of them, its literal parts joined) that reads as an SQL
  statement: ``SELECT ... FROM``, ``INSERT [OR ...] INTO``, ``UPDATE t SET``, ``DELETE FROM``,
  ``CREATE [UNIQUE] TABLE/INDEX/DATABASE/VIEW/TRIGGER``, ``DROP TABLE/INDEX``, ``ALTER TABLE``
  (upper case, as the project writes SQL; prose in lower case is not SQL).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "cloud_bridge").is_dir():
            return parent
    raise RuntimeError(f"no repository root above {here}")


REPO_ROOT = _repo_root()
STORAGE = "cloud_bridge/storage/"
SQL_CALLS = frozenset({"execute", "executemany", "executescript", "query"})
SQL_TEXT = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b"
    r"|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b"
    r"|\bUPDATE\s+[\w\"{}.]+\s+SET\b"
    r"|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|DATABASE|VIEW|TRIGGER)\b"
    r"|\bDROP\s+(?:TABLE|INDEX)\b"
    r"|\bALTER\s+TABLE\b"
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _literal_text(node: ast.expr) -> str | None:
    """The literal parts of a string expression joined (f-string holes as a space); None when
    ``node`` is not a string expression."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else " "
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal_text(node.left), _literal_text(node.right)
        if left is None and right is None:
            return None
        return (left or " ") + (right or " ")
    return None


def sql_findings(source: str, path: str) -> list[Finding]:
    """Every SQL call and SQL text in one module's source."""
    tree = ast.parse(source, path)
    found: list[Finding] = []
    inner: set[int] = set()  # string nodes inside a reported string expression
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_CALLS
            and node.args
            and _literal_text(node.args[0]) is not None
        ):
            found.append(Finding(path, node.lineno, f".{node.func.attr}() of a string"))
        if isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp) and id(node) not in inner:
            text = _literal_text(node)
            if text is not None and SQL_TEXT.search(text):
                found.append(Finding(path, node.lineno, f"SQL text {text[:60]!r}"))
                inner.update(id(n) for n in ast.walk(node))
    return sorted(set(found), key=lambda f: (f.line, f.what))


def scan(root: Path) -> list[Finding]:
    """Findings in every module of ``root``/cloud_bridge outside its storage package."""
    out: list[Finding] = []
    for file in sorted((root / "cloud_bridge").rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        if rel.startswith(STORAGE):
            continue
        out += sql_findings(file.read_text(encoding="utf-8"), rel)
    return out


def test_no_sql_outside_storage() -> None:
    findings = scan(REPO_ROOT)
    assert not findings, "SQL outside cloud_bridge/storage/ (move it into a repository):\n" + (
        "\n".join(map(str, findings))
    )


def test_the_scan_sees_every_module() -> None:
    """The scan reads the bridge's modules (a wrong root would find nothing and pass)."""
    modules = [p for p in (REPO_ROOT / "cloud_bridge").rglob("*.py") if STORAGE not in str(p)]
    assert len(modules) > 40
    assert (REPO_ROOT / STORAGE / "store.py").is_file()
    assert sql_findings((REPO_ROOT / STORAGE / "store.py").read_text(encoding="utf-8"), "store")


SQL_SAMPLES = [
    'store.query("SELECT 1")',
    'db.execute("DELETE FROM t")',
    'db.conn.executemany(f"INSERT INTO {table}(a) VALUES (?)", rows)',
    "conn.execute(f'CREATE DATABASE \"{name}\"')",
    'x = "SELECT a, b " "FROM t WHERE c=?"',
    'x = f"SELECT {cols} " f"FROM {table}"',
    'x = "SELECT a " + f"FROM {t}"',
    'x = "UPDATE sends SET state=?"',
    'x = "INSERT OR IGNORE INTO t(a) VALUES (?)"',
    'x = "CREATE UNIQUE INDEX i ON t(a)"',
    'x = "ALTER TABLE t ADD COLUMN b"',
    'x = "DROP TABLE t"',
    "live = \"c.erased IS NULL AND (SELECT k.status FROM consents k LIMIT 1)='active'\"",
]
NOT_SQL = [
    'log.info("select a store from the list")',
    '"""Insert or update one store from its validated definition."""',
    "f.query()",
    "cursor.execute(statement)",
    'x = "SELECT"',
    "names.update(a=1)",
]


@pytest.mark.parametrize("source", SQL_SAMPLES)
def test_the_scan_finds_sql(source: str) -> None:
    assert sql_findings(source, "sample.py"), source


@pytest.mark.parametrize("source", NOT_SQL)
def test_the_scan_leaves_other_text_alone(source: str) -> None:
    assert not sql_findings(source, "sample.py"), source
