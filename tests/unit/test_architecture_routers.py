"""Routers are modules: no HTTP route of the bridge is defined inside a function body (no
closure factories), and every ``APIRouter`` is made at module level. Reads the source (AST),
starts nothing."""

from __future__ import annotations

import ast
from pathlib import Path

BRIDGE = Path(__file__).parents[2] / "cloud_bridge"
# Decorators of FastAPI/Starlette apps and routers that register a route.
ROUTE_METHODS = frozenset(
    {
        "get",
        "post",
        "put",
        "patch",
        "delete",
        "head",
        "options",
        "trace",
        "api_route",
        "route",
        "websocket",
        "websocket_route",
    }
)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _is_route_decorator(node: ast.expr) -> bool:
    """``@x.get(...)``, ``@x.post(...)``, ``@x.api_route(...)``..."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ROUTE_METHODS
    )


def _is_router_call(node: ast.AST) -> bool:
    """``APIRouter(...)`` or ``fastapi.APIRouter(...)``."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Name) and f.id == "APIRouter") or (
        isinstance(f, ast.Attribute) and f.attr == "APIRouter"
    )


def _nested(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, what) for each route or router made inside a function body."""
    found: list[tuple[int, str]] = []

    def walk(node: ast.AST, inside: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if inside is not None and any(map(_is_route_decorator, child.decorator_list)):
                    found.append((child.lineno, f"route {child.name}() inside {inside}()"))
                walk(child, child.name)
            elif isinstance(child, ast.Lambda):
                walk(child, inside or "lambda")
            else:
                if inside is not None and _is_router_call(child):
                    found.append((child.lineno, f"APIRouter() inside {inside}()"))
                walk(child, inside)

    walk(tree, None)
    return found


def nested_routes(root: Path = BRIDGE) -> list[str]:
    """``path:line: what`` for every route or router defined inside a function under root."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        out += [f"{path.relative_to(root.parent)}:{n}: {what}" for n, what in _nested(tree)]
    return out


def test_no_route_or_router_is_defined_inside_a_function() -> None:
    found = nested_routes()
    assert not found, (
        "routes belong to a module-level `router = APIRouter(...)` whose functions take what "
        "they need from cloud_bridge.web.dependencies:\n" + "\n".join(found)
    )


def test_the_check_finds_a_closure_factory() -> None:
    """The scan itself: the old shape (a factory returning a router of closures) is caught,
    the new one (module-level router and functions) is not."""
    factory = ast.parse(
        "def make(store):\n"
        "    r = APIRouter()\n"
        "    @r.get('/x')\n"
        "    async def x():\n"
        "        return store\n"
        "    return r\n"
        "def create_app():\n"
        "    app = FastAPI()\n"
        "    @app.post('/y', status_code=201)\n"
        "    def y():\n"
        "        pass\n"
    )
    assert _nested(factory) == [
        (2, "APIRouter() inside make()"),
        (4, "route x() inside make()"),
        (10, "route y() inside create_app()"),
    ]
    module = ast.parse(
        "router = APIRouter(prefix='/api')\n"
        "@router.get('/x')\n"
        "def x(store: Store):\n"
        "    def helper():\n"
        "        return {'a': 1}.get('a')\n"
        "    return helper()\n"
    )
    assert _nested(module) == []
