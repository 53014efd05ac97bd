"""The bridge imports from the edge agent only the wire contract.

The contract is what both sides must agree on: the MQTT topics and payloads
(``edge_agent/protocol.py``), the signed roster file with the MAC reading and the keyed hashes
behind it (``edge_agent/roster.py``), and the pairing bundle a sensor gets for its code
(``edge_agent/pairing.py``). Everything else of the edge (its settings, MQTT client, outbox,
capture) is the edge's own business; the bridge has its own. Only the ``cloud_bridge/dev/``
tools that play sensors may use more of the edge's code.

Read from the source (AST), so nothing is imported: every ``import``/``from ... import``
anywhere in a module (function bodies included) and ``importlib.import_module("...")`` /
``__import__("...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]

CONTRACT_MODULES = frozenset({"edge_agent.protocol", "edge_agent.roster", "edge_agent.pairing"})
BRIDGE = "cloud_bridge"
MAY_PLAY_SENSORS = ("cloud_bridge/dev/",)  # these may use any of the edge's code
EDGE = "edge_agent"


@dataclass(frozen=True)
class EdgeImport:
    path: str
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}"


def _package_of(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts if path.name == "__init__.py" else parts[:-1]


def imported_modules(source: str, path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every module an import in ``source`` loads."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(path, root)
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            # ``from pkg import name`` loads pkg.name when name is a submodule; a name that is
            # not a module is judged with its module, so ``from a.b import x`` -> ``a.b.x``.
            found += [(node.lineno, f"{base}.{alias.name}".strip(".")) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (
                    isinstance(node.func, ast.Name)
                    and node.func.id in {"import_module", "__import__"}
                )
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _allowed(module: str) -> bool:
    """An edge_agent import is allowed if it is (something inside) a contract module."""
    return any(module == m or module.startswith(m + ".") for m in CONTRACT_MODULES)


def edge_imports(root: Path, package: str, exempt: tuple[str, ...] = ()) -> list[EdgeImport]:
    """Imports of edge_agent outside the contract, in every module of ``package``."""
    bad: list[EdgeImport] = []
    for path in sorted((root / package).rglob("*.py")):
        shown = path.relative_to(root).as_posix()
        if shown.startswith(exempt):
            continue
        for line, module in imported_modules(path.read_text(encoding="utf-8"), path, root):
            if (module == EDGE or module.startswith(EDGE + ".")) and not _allowed(module):
                bad.append(EdgeImport(shown, line, module))
    return bad


def test_bridge_imports_only_the_wire_contract_from_the_edge() -> None:
    scanned = [p for p in (REPO_ROOT / BRIDGE).rglob("*.py") if "dev" not in p.parts]
    assert len(scanned) > 40, "the scan found too few bridge modules: is the path right?"
    bad = edge_imports(REPO_ROOT, BRIDGE, exempt=MAY_PLAY_SENSORS)
    assert not bad, (
        "cloud_bridge imports edge_agent beyond the wire contract "
        f"({', '.join(sorted(CONTRACT_MODULES))}):\n" + "\n".join(map(str, bad))
    )


@pytest.mark.parametrize("module", sorted(CONTRACT_MODULES))
def test_contract_modules_import_only_the_contract(module: str) -> None:
    """Importing a contract module must not pull the rest of the edge into the bridge."""
    rel = Path(*module.split(".")).with_suffix(".py")
    path = REPO_ROOT / rel
    assert path.is_file(), f"contract module {rel} does not exist"
    bad = [
        f"{rel}:{line}: imports {mod}"
        for line, mod in imported_modules(path.read_text(encoding="utf-8"), path, REPO_ROOT)
        if mod.startswith(EDGE + ".") and not _allowed(mod)
    ]
    package_init = REPO_ROOT / EDGE / "__init__.py"  # runs on every import of a contract module
    bad += [
        f"{EDGE}/__init__.py:{line}: imports {mod}"
        for line, mod in imported_modules(
            package_init.read_text(encoding="utf-8"), package_init, REPO_ROOT
        )
        if mod.startswith(EDGE)
    ]
    assert not bad, "\n".join(bad)


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_contract_names_have_one_home() -> None:
    """What a contract module exports is defined there only: the edge imports it too."""
    homes: dict[str, str] = {}
    for module in sorted(CONTRACT_MODULES):
        path = REPO_ROOT / Path(*module.split(".")).with_suffix(".py")
        exported = ast.literal_eval(
            next(
                n.value
                for n in ast.parse(path.read_text(encoding="utf-8")).body
                if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
            )
        )
        homes.update(dict.fromkeys(exported, module))
    twins = [
        f"{path.relative_to(REPO_ROOT)} defines {name} (home: {homes[name]})"
        for path in sorted((REPO_ROOT / EDGE).rglob("*.py"))
        if ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts) not in CONTRACT_MODULES
        for name in sorted(_top_level_names(path) & homes.keys())
    ]
    assert not twins, "\n".join(twins)


# The checker itself: it must catch what it claims to and let the contract pass.
CHECKER_CASES = [
    ("from edge_agent.protocol import topic", []),
    ("from edge_agent import protocol, roster", []),
    ("import edge_agent.pairing", []),
    ("from edge_agent.roster import parse_mac, subject_id", []),
    ("from edge_agent.config import MqttSettings", ["edge_agent.config.MqttSettings"]),
    ("from edge_agent import config", ["edge_agent.config"]),
    ("import edge_agent", ["edge_agent"]),
    ("import edge_agent.adapters.uplink as up", ["edge_agent.adapters.uplink"]),
    (
        "def f() -> None:\n    from edge_agent.core.frames import parse_mac\n",
        ["edge_agent.core.frames.parse_mac"],
    ),
    (
        "class C:\n    def m(self) -> None:\n        import edge_agent.config\n",
        ["edge_agent.config"],
    ),
    ("import importlib\nm = importlib.import_module('edge_agent.config')", ["edge_agent.config"]),
    ("m = __import__('edge_agent.adapters.enroll')", ["edge_agent.adapters.enroll"]),
    ("from edge_agent.protocolx import y", ["edge_agent.protocolx.y"]),
    ("import paho.mqtt.client\nfrom cloud_bridge.config import MqttSettings", []),
]


@pytest.mark.parametrize(("source", "expected"), CHECKER_CASES)
def test_checker(source: str, expected: list[str], tmp_path: Path) -> None:
    module = tmp_path / BRIDGE / "ingest" / "example.py"
    module.parent.mkdir(parents=True)
    module.write_text(source, encoding="utf-8")
    assert [b.module for b in edge_imports(tmp_path, BRIDGE)] == expected


def test_checker_resolves_relative_imports_and_exempts_dev(tmp_path: Path) -> None:
    # A relative import inside edge_agent's own tree resolves to edge_agent.*; the dev/ tools
    # that play sensors are exempt.
    (tmp_path / BRIDGE / "dev").mkdir(parents=True)
    (tmp_path / BRIDGE / "dev" / "sim.py").write_text("from edge_agent.config import X\n")
    (tmp_path / EDGE / "adapters").mkdir(parents=True)
    (tmp_path / EDGE / "adapters" / "x.py").write_text("from ..config import Y\n")
    assert edge_imports(tmp_path, BRIDGE, exempt=("cloud_bridge/dev/",)) == []
    assert [b.module for b in edge_imports(tmp_path, BRIDGE)] == ["edge_agent.config.X"]
    assert [b.module for b in edge_imports(tmp_path, EDGE)] == ["edge_agent.config.Y"]


def test_bridge_mqtt_settings_kept_their_keys() -> None:
    """The bridge's ``[mqtt]`` model (its own since the sides stopped sharing settings) accepts
    the keys, types, defaults and bounds the shared model had: a bridge.toml that loaded still
    loads, one refused is still refused. Should the sides diverge on purpose, change this."""
    from cloud_bridge.config import MqttSettings as BridgeMqtt
    from edge_agent.config import MqttSettings as EdgeMqtt

    def shape(model: type[BaseModel]) -> dict[str, object]:
        props = model.model_json_schema()["properties"]
        return {k: {a: v for a, v in p.items() if a != "description"} for k, p in props.items()}

    assert shape(BridgeMqtt) == shape(EdgeMqtt)
    assert BridgeMqtt.model_config.get("extra") == EdgeMqtt.model_config.get("extra") == "forbid"
