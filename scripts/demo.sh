#!/usr/bin/env bash
# README command 1: set up (system packages when root, venv) and run the demo end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
exec .venv/bin/cloud-bridge demo "$@"
