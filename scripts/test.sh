#!/usr/bin/env bash
# README command 2: set up (system packages when root, the venv), then run the whole test suite:
# tests/unit, tests/db and tests/integration (the benchmarks in tests/bench are run by hand).
# Usage: scripts/test.sh [pytest args...]   e.g. scripts/test.sh -x -k presence, scripts/test.sh tests/unit
# Exit status: pytest's; a run that collected or ran no test is a failure (5), never a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test

rc=0
.venv/bin/python -m pytest "$@" </dev/null || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: no test ran (none collected, or all deselected/skipped): failing" >&2
fi
exit "$rc"
