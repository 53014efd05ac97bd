#!/usr/bin/env bash
# Set up passby on a Debian machine: system packages (when root), then the venv at .venv/.
# Usage: scripts/setup.sh [demo|test]   (demo needs mosquitto; test needs everything)
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-test}"

case "$want" in
  demo) pkgs=(mosquitto) ; bins=(mosquitto) ;;
  test) pkgs=(mosquitto postgresql chromium tshark shellcheck systemd sqlite3 openssl prometheus) ; bins=(mosquitto initdb chromium tshark shellcheck systemd-analyze sqlite3 openssl promtool) ;;
  *) echo "setup.sh: unknown target '$want' (use demo or test)" >&2; exit 2 ;;
esac

have() {
  case "$1" in
    initdb) command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ;;
  esac
}

missing=()
for i in "${!bins[@]}"; do
  have "${bins[$i]}" || missing+=("${pkgs[$i]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

py="${PYTHON:-}"
if [ -z "$py" ]; then
  for c in python3.11 python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then py="$c"; break; fi
  done
fi
[ -n "$py" ] || { echo "setup: Python >= 3.11 is required" >&2; exit 1; }
if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  # Debian splits venv/ensurepip into python3-venv.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
  else
    echo "setup: Python's venv module is missing: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi

stamp=.venv/.passby-installed
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
