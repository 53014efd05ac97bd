"""The pure cores do no IO: no IO imports, no clock, file, console or randomness calls.

Read from the source (AST), so nothing is imported or executed. Project modules a pure
module imports are checked the same way (transitively), and so are the package
``__init__`` files that importing them runs. Code under ``if TYPE_CHECKING:`` or
``if __name__ == "__main__":`` is exempt (it never runs on import). ``datetime`` is allowed for its types and arithmetic; asking
it for the current time is not: time is an argument.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("edge_agent", "cloud_bridge")

PURE_MODULES = (
    "edge_agent/core/frames.py",
    "edge_agent/core/presence.py",
    "edge_agent/core/footfall.py",
    "edge_agent/roster.py",
    "edge_agent/protocol.py",
    "edge_agent/pairing.py",
    "cloud_bridge/offers/decide.py",
    "cloud_bridge/offers/policy.py",
    "cloud_bridge/clock.py",
    "cloud_bridge/ingest/fleet.py",
    "cloud_bridge/delivery/sms_encoding.py",
)

# Imported module (its top-level name) -> why a pure core may not import it.
FORBIDDEN_IMPORTS: dict[str, str] = {
    "socket": "network IO",
    "ssl": "network IO",
    "select": "IO multiplexing",
    "selectors": "IO multiplexing",
    "os": "environment and file system",
    "sys": "process state, stdin/stdout",
    "io": "streams",
    "time": "the wall clock: take `now` as an argument",
    "sqlite3": "database",
    "sqlite_utils": "database",
    "psycopg": "database",
    "paho": "MQTT",
    "httpx": "HTTP",
    "requests": "HTTP",
    "urllib": "HTTP and files",
    "http": "HTTP",
    "fastapi": "web",
    "uvicorn": "web server",
    "subprocess": "processes",
    "multiprocessing": "processes",
    "signal": "process signals",
    "threading": "threads",
    "concurrent": "threads and processes",
    "asyncio": "event loop",
    "logging": "log output: return effects and let the adapter log",
    "pathlib": "file system",
    "shutil": "file system",
    "tempfile": "file system",
    "glob": "file system",
    "random": "nondeterminism: pass randomness (or a seed) in",
    "secrets": "nondeterminism: pass randomness in",
    "scapy": "capture and dissection belong to the capture adapter",
    "importlib": "dynamic imports would hide IO from this test",
    "ctypes": "native code",
}

# Builtins a pure core may not call.
FORBIDDEN_BUILTIN_CALLS: dict[str, str] = {
    "open": "file IO",
    "input": "console IO",
    "print": "console IO",
    "breakpoint": "debugger",
    "__import__": "dynamic import",
    "exec": "dynamic code",
    "eval": "dynamic code",
}

# Names (dotted as written) a pure core may not call or even reference, e.g. as a
# ``default_factory``.
FORBIDDEN_NAMES: dict[str, str] = {
    "time.time": "the wall clock: take `now` as an argument",
    "time.time_ns": "the wall clock",
    "time.monotonic": "the clock",
    "time.perf_counter": "the clock",
    "time.sleep": "blocking",
    "uuid.uuid1": "clock and MAC based id: pass ids in",
    "uuid.uuid4": "random id: pass ids in",
    "uuid1": "clock and MAC based id: pass ids in",
    "uuid4": "random id: pass ids in",
}

# ``datetime``/``date`` methods that read the clock, however the class was imported.
CLOCK_METHODS = {"now", "utcnow", "today"}
CLOCK_CLASSES = {"datetime", "date"}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what} ({self.why})"


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and _dotted(test.left) == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _exempt_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes under ``if TYPE_CHECKING:`` or ``if __name__ == "__main__":``.

    Neither runs when the module is imported as a library.
    """
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (_dotted(node.test) or "").endswith("TYPE_CHECKING") or _is_main_guard(node.test)
        ):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def _resolve(module: str | None, level: int, name: str | None, path: Path) -> list[str]:
    """Module names an import statement loads (absolute, dotted)."""
    if level:
        package = path.relative_to(REPO_ROOT).with_suffix("").parts[:-1]
        if path.name == "__init__.py":
            package = path.relative_to(REPO_ROOT).parts[:-1]
        base = list(package[: len(package) - (level - 1)])
        module = ".".join(base + ([module] if module else []))
    mods = [module] if module else []
    if name is not None and module:
        mods.append(f"{module}.{name}")  # ``from pkg import submodule``
    return mods


def _project_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = REPO_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def check_source(source: str, path: Path) -> tuple[list[Violation], set[str]]:
    """Violations in one module, and the project modules it imports."""
    shown = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
    tree = ast.parse(source, filename=str(path))
    skip = _exempt_nodes(tree)
    clock_classes = CLOCK_CLASSES | {
        alias.asname
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "datetime"
        for alias in node.names
        if alias.name in CLOCK_CLASSES and alias.asname
    }
    found: list[Violation] = []
    imported: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                modules += _resolve(node.module, node.level, alias.name, path)
        reported: set[str] = set()
        for mod in modules:
            top = mod.split(".")[0]
            if top in FORBIDDEN_IMPORTS and top not in reported:
                reported.add(top)
                found.append(Violation(shown, node.lineno, f"import {mod}", FORBIDDEN_IMPORTS[top]))
            elif top in PROJECT_PACKAGES:
                imported.add(mod)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_BUILTIN_CALLS
        ):
            found.append(
                Violation(
                    shown, node.lineno, f"{node.func.id}()", FORBIDDEN_BUILTIN_CALLS[node.func.id]
                )
            )
        if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
            name = _dotted(node)
            if name in FORBIDDEN_NAMES:
                found.append(Violation(shown, node.lineno, name, FORBIDDEN_NAMES[name]))
            elif (
                name
                and isinstance(node, ast.Attribute)
                and node.attr in CLOCK_METHODS
                and name.split(".")[-2] in clock_classes
            ):
                found.append(
                    Violation(
                        shown, node.lineno, name, "reads the clock: take `now` as an argument"
                    )
                )
    return found, imported


def check_module(rel: str) -> list[Violation]:
    """Check ``rel`` and, transitively, every project module importing it would run."""
    todo, seen, found = [REPO_ROOT / rel], set(), []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        violations, imported = check_source(path.read_text(encoding="utf-8"), path)
        found += violations
        for mod in sorted(imported):
            parts = mod.split(".")
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py too.
            for i in range(1, len(parts) + 1):
                target = _project_file(".".join(parts[:i]))
                if target is not None and target not in seen:
                    todo.append(target)
    return sorted(found, key=lambda v: (v.path, v.line))


@pytest.mark.parametrize("rel", PURE_MODULES)
def test_pure_module_does_no_io(rel: str) -> None:
    if not (REPO_ROOT / rel).is_file():
        pytest.fail(
            f"pure core {rel} does not exist (yet?). If it moved, update "
            f"PURE_MODULES in {Path(__file__).name} and the mypy strict list.",
            pytrace=False,
        )
    violations = check_module(rel)
    assert not violations, "IO in a pure core:\n" + "\n".join(map(str, violations))


def _strict_patterns() -> tuple[list[str], list[str]]:
    """(module patterns of pyproject's ``strict = true`` overrides, mypy plugins)."""
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mypy = config["tool"]["mypy"]
    strict = [m for o in mypy["overrides"] if o.get("strict") for m in o["module"]]
    return strict, mypy.get("plugins", [])


def _covered(module: str, patterns: list[str]) -> bool:
    """Does a mypy override pattern (``a.b`` exact, ``a.*`` a and everything below) match?"""
    return any(
        module == p or (p.endswith(".*") and (module + ".").startswith(p.removesuffix("*")))
        for p in patterns
    )


def test_pure_modules_are_the_strict_mypy_set() -> None:
    """Every pure core, and every module of the edge agent and of the bridge, is in a
    ``strict = true`` override, type-checked with the pydantic plugin (tests/test_quality.py runs
    mypy on that set)."""
    strict, plugins = _strict_patterns()
    assert "pydantic.mypy" in plugins
    pure = [p.removesuffix(".py").replace("/", ".") for p in PURE_MODULES]
    assert [m for m in pure if not _covered(m, strict)] == []
    for package, at_least in (("edge_agent", 20), ("cloud_bridge", 60)):
        modules = [
            ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
            for p in sorted((REPO_ROOT / package).rglob("*.py"))
        ]
        assert len(modules) > at_least, modules
        assert [m for m in modules if not _covered(m, strict)] == []


@pytest.mark.parametrize(
    ("module", "patterns", "covered"),
    [
        ("edge_agent.core.frames", ["edge_agent.*"], True),
        ("edge_agent", ["edge_agent.*"], True),
        ("edge_agent.core.frames", ["edge_agent.core.frames"], True),
        ("edge_agent.core.frames", ["edge_agent.core"], False),
        ("edge_agent_x.y", ["edge_agent.*"], False),
        ("cloud_bridge.clock", ["edge_agent.*", "cloud_bridge.offers.decide"], False),
    ],
)
def test_strict_pattern_matching(module: str, patterns: list[str], covered: bool) -> None:
    assert _covered(module, patterns) is covered


# The checker itself: it must catch what it claims to and let the allowed things pass.
CHECKER_CASES = [
    ("import os", ["import os"]),
    ("import os.path as p", ["import os.path"]),
    ("from time import monotonic", ["import time"]),
    ("import logging\nlog = logging.getLogger(__name__)", ["import logging"]),
    ("from paho.mqtt import client", ["import paho.mqtt"]),
    ("x = open('f')", ["open()"]),
    ("print(1)", ["print()"]),
    ("import datetime\nt = datetime.datetime.now()", ["datetime.datetime.now"]),
    ("from datetime import date\nd = date.today()", ["date.today"]),
    ("from datetime import datetime as dt\nt = dt.utcnow().isoformat()", ["dt.utcnow"]),
    ("from uuid import uuid4\ni = uuid4()", ["uuid4"]),
    ("from datetime import datetime\nf = Field(default_factory=datetime.now)", ["datetime.now"]),
    ("import time\nt = time.time()", ["import time", "time.time"]),
    (
        "from datetime import datetime, time as dtime\nx = datetime.fromtimestamp(1.0)\n"
        "y = dtime(9, 0)",
        [],
    ),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pathlib import Path", []),
    ("from uuid import UUID\nimport hashlib\nimport struct\nimport json", []),
    ("def f(now: float) -> float:\n    return now + 1", []),
    ("import json\nif __name__ == '__main__':\n    print(json.dumps({}))", []),
]


@pytest.mark.parametrize(("source", "expected"), CHECKER_CASES)
def test_checker(source: str, expected: list[str]) -> None:
    violations, _ = check_source(source, REPO_ROOT / "edge_agent" / "example.py")
    assert [v.what for v in violations] == expected


def test_checker_follows_project_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "edge_agent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "pure.py").write_text("from edge_agent.helper import f\nfrom . import other\n")
    (pkg / "helper.py").write_text("import socket\n")
    (pkg / "other.py").write_text("import time\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    found = {(v.path, v.what) for v in check_module("edge_agent/pure.py")}
    assert found == {
        ("edge_agent/helper.py", "import socket"),
        ("edge_agent/other.py", "import time"),
    }
