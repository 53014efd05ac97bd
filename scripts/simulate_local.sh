#!/usr/bin/env bash
# Fleet load test on this machine: a private Mosquitto that admits only provisioned accounts,
# the bridge ('cloud-bridge run', SQLite, sandbox SMS, no console) and SENSORS simulated sensors
# publishing for DURATION_S seconds; then every acknowledged event is looked up in the store.
#
#   scripts/simulate_local.sh [SENSORS=2000] [DURATION_S=600] [RATE_PER_SENSOR=0.2] [WORKDIR]
#
# Extra 'cloud-bridge simulate' options can follow in SIM_ARGS (e.g. SIM_ARGS="--processes 2").
# WORKERS=N runs N bridge workers on a private PostgreSQL cluster (python -m cloud_bridge.dev.pgserver)
# instead of one bridge on SQLite: the scale-out set-up of deploy/cloud/SCALE.md.
# Everything lives in WORKDIR (default var/simulate, wiped first): bridge.toml, the database,
# mosquitto.conf and its log, bridge.log, sim-credentials.json (0600), summary.json, acked.txt.
# Exit status: that of 'cloud-bridge simulate' (1 when a sensor never connected, an event went
# unacknowledged or an acknowledged event is not in the store).
set -euo pipefail

SENSORS=${1:-2000}
DURATION=${2:-600}
RATE=${3:-0.2}
WORK=${4:-var/simulate}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.venv/bin"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

rm -rf "$WORK"
mkdir -p "$WORK/mosquitto"
WORK=$(cd "$WORK" && pwd)
PORT=$("$BIN/python" -c 'from cloud_bridge.dev.mosquitto import free_port; print(free_port())')
BRIDGE_PASSWORD=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
ulimit -n "$(ulimit -Hn)"  # one descriptor per connection, in the broker and the simulator

WORKERS=${WORKERS:-1}
pids=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

DATABASE=""
if [ "$WORKERS" -gt 1 ]; then
  "$BIN/python" -m cloud_bridge.dev.pgserver passby >"$WORK/postgres.url" 2>"$WORK/postgres.log" &
  pids+=($!)
  for _ in $(seq 300); do [ -s "$WORK/postgres.url" ] && break; sleep 0.1; done
  [ -s "$WORK/postgres.url" ] || { echo "PostgreSQL did not start:"; cat "$WORK/postgres.log"; exit 2; }
  DATABASE="database = \"$(cat "$WORK/postgres.url")\""
fi

cat >"$WORK/bridge.toml" <<EOF
data_dir = "$WORK/bridge"
$DATABASE
[mqtt]
host = "127.0.0.1"
port = $PORT
username = "bridge"
password = "$BRIDGE_PASSWORD"
[provisioning]
password_file = "$WORK/mosquitto/passby.passwd"
acl_file = "$WORK/mosquitto/passby.acl"
mqtt_host = "127.0.0.1"
mqtt_port = $PORT
mqtt_tls = false
[provider]
kind = "sandbox"
EOF

{
  echo "listener $PORT 127.0.0.1"
  echo "allow_anonymous false"
  echo "password_file $WORK/mosquitto/passby.passwd"
  echo "acl_file $WORK/mosquitto/passby.acl"
  echo "persistence true"
  echo "persistence_location $WORK/mosquitto/"
  echo "log_dest file $WORK/mosquitto/mosquitto.log"
  echo "max_queued_messages 100000"
  echo "set_tcp_nodelay true"
  if [ "$(id -u)" = 0 ]; then echo "user root"; fi
} >"$WORK/mosquitto/mosquitto.conf"

"$BIN/cloud-bridge" simulate --provision "$SENSORS" -c "$WORK/bridge.toml" \
  --credentials "$WORK/sim-credentials.json"

"$MOSQUITTO" -c "$WORK/mosquitto/mosquitto.conf" &
pids+=($!)
for w in $(seq "$WORKERS"); do
  log="$WORK/bridge-$w.log"
  "$BIN/cloud-bridge" run --no-console --worker-id "$w" -c "$WORK/bridge.toml" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    grep -q "bridge connected" "$log" && break
    sleep 0.1
  done
  grep -q "bridge connected" "$log" || { echo "bridge worker $w did not connect:"; tail "$log"; exit 2; }
done

status=0
# shellcheck disable=SC2086
"$BIN/cloud-bridge" simulate --credentials "$WORK/sim-credentials.json" -c "$WORK/bridge.toml" \
  --duration "$DURATION" --rate "$RATE" --stats-interval 60 --connect-rate 200 \
  --summary-json "$WORK/summary.json" --acked-ids "$WORK/acked.txt" \
  --verify --verify-timeout 300 ${SIM_ARGS:-} || status=$?

"$BIN/python" - "$WORK" <<'EOF'
import json, sys
from cloud_bridge.config import BridgeSettings, load_settings
from cloud_bridge.storage.store import BridgeStore
work = sys.argv[1]
s = json.load(open(f"{work}/summary.json"))
settings = load_settings(BridgeSettings, f"{work}/bridge.toml")
db = BridgeStore(settings.database_path(), settings.data_key_bytes())
stored = db.query("SELECT count(*) AS n FROM events WHERE store_id LIKE 'sim-%'")[0]["n"]
decided = db.query("SELECT count(DISTINCT event_id) AS n FROM decisions")[0]["n"]
print(json.dumps({
    "published": s["events_published"], "acked": s["events_acked"],
    "stored_acked": s.get("stored"), "lost": s.get("lost"),
    "stored_total": stored, "decided": decided,
    "achieved_rate": s["achieved_rate"], "latency_ms": s["latency_ms"],
    "connected": s["connected"], "disconnects": s["disconnects"],
}, indent=1))
EOF
exit $status
