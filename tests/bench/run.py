"""Run one benchmark: `python tests/bench/run.py NAME` prints its table, then one JSON line.

A benchmark is tests/bench/bench_NAME.py with ``run() -> dict``: it prints its own table and
returns the headline figures, which this script prints as the LAST line of its output (one
JSON object), so CI can ``tail -n 1`` it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def load(name: str) -> Any:
    path = HERE / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=names, help="benchmark to run")
    args = parser.parse_args(argv)
    # Run from anywhere: the repository root, tests/ and its helpers/ (scale, delivery and console
    # helpers, fake providers) and tests/unit/ (test_frames' frame builders) must import.
    for path in (
        str(REPO),
        str(REPO / "tests"),
        str(REPO / "tests" / "helpers"),
        str(REPO / "tests" / "unit"),
    ):
        if path not in sys.path:
            sys.path.insert(0, path)
    figures = load(args.name).run()
    sys.stdout.flush()
    print(json.dumps(figures, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
