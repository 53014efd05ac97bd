#!/usr/bin/env bash
# Pair this box with the bridge (or re-pair it after `sensors add --rotate` / "Re-pair" in the
# console), in the order that lets the agent start at once:
#
#   sudo /opt/passby/lib/passby-enroll.sh CODE --bridge https://bridge.example.com [--ca-file FILE] [--force]
#
#   --bridge URL     the bridge's URL the pairing code is redeemed at
#   --ca-file FILE   CA certificate of the bridge's HTTPS, if it is a private CA
#   --force          replace this box's existing pairing (re-pair with a new code)
#
# 1. stop passby-agent.path and the agent, so the new edge.toml does not start the agent before
#    its files are readable; 2. edge-agent enroll (writes /etc/passby/edge.toml and the secrets,
#    root-only); 3. give the passby group read access to /etc/passby (2750, files 0640);
#    4. start passby-agent.path and the agent. PASSBY_ETC, PASSBY_STATE, PASSBY_AGENT,
#    PASSBY_SYSTEMCTL and PASSBY_GROUP exist for the tests.
set -euo pipefail

ETC="${PASSBY_ETC:-/etc/passby}"
STATE="${PASSBY_STATE:-/var/lib/passby}"
AGENT="${PASSBY_AGENT:-/opt/passby/current/venv/bin/edge-agent}"
SYSTEMCTL="${PASSBY_SYSTEMCTL:-systemctl}"
GROUP="${PASSBY_GROUP:-passby}"
code=""
bridge=""
extra=()
die() { echo "passby-enroll.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bridge) bridge="${2:?--bridge needs a URL}"; shift 2 ;;
    --ca-file) extra+=(--ca-file "${2:?--ca-file needs a file}"); shift 2 ;;
    --force) extra+=(--force); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$code" ] || die "one pairing code only"; code="$1"; shift ;;
  esac
done
[ -n "$code" ] || die "give the pairing code from the console (see --help)"
[ -n "$bridge" ] || die "give the bridge's URL with --bridge"
[ "$(id -u)" = 0 ] || die "run as root (sudo)"
[ -x "$AGENT" ] || die "no agent at $AGENT: install the box first (deploy/edge/install.sh)"

"$SYSTEMCTL" stop passby-agent.path passby-agent.service || true
"$AGENT" enroll "$code" --bridge "$bridge" --out "$ETC" --data-dir "$STATE" "${extra[@]}"
chgrp -R "$GROUP" "$ETC"
chmod 2750 "$ETC"
find "$ETC" -mindepth 1 -type d -exec chmod 2750 {} +
find "$ETC" -type f -exec chmod g+r,g-w,o-rwx {} +
"$SYSTEMCTL" start passby-agent.path
"$SYSTEMCTL" restart passby-agent.service
echo "passby-enroll: paired; the agent is starting ('systemctl status passby-agent'; the console shows the box online)"
