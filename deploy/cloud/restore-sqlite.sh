#!/usr/bin/env bash
# Restore a backup-sqlite.sh archive into the bridge's data directory.
#
#   restore-sqlite.sh ARCHIVE [--data-dir DIR] [--db FILE] [--force]
#                     [--broker-dir DIR] [--certs-dir DIR] [--broker-group G] [--no-broker]
#
# Stop the bridge first (systemctl stop passby-bridge). Nothing is touched until the archive's
# checksums and the database's integrity check pass. An existing database (with its -wal and
# -shm files) and keys are never deleted: with --force they are moved to
# DATA_DIR/pre-restore-STAMP/; without it the restore refuses. The restored files get the data
# directory's owner. A backup from an older bridge is migrated forward when the bridge starts.
# The broker's files in the archive go back too: passby.passwd and passby.acl into --broker-dir
# (default /etc/mosquitto/passby; as root they get that directory's owner), ca.crt, ca.key,
# broker.crt, broker.key into --certs-dir (default /etc/mosquitto/certs; broker.key group
# --broker-group, default mosquitto); existing ones are moved aside the same way.
set -euo pipefail
umask 077

data_dir=/var/lib/passby-bridge
db=""
force=0
broker=1
broker_dir=/etc/mosquitto/passby
certs_dir=/etc/mosquitto/certs
broker_group=mosquitto
archive=""
die() { echo "restore-sqlite.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir="${2:?}"; shift 2 ;;
    --db) db="${2:?}"; shift 2 ;;
    --force) force=1; shift ;;
    --broker-dir) broker_dir="${2:?}"; shift 2 ;;
    --certs-dir) certs_dir="${2:?}"; shift 2 ;;
    --broker-group) broker_group="${2:?}"; shift 2 ;;
    --no-broker) broker=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$archive" ] || die "one archive at a time"; archive="$1"; shift ;;
  esac
done
[ -n "$archive" ] || die "which archive? (see --help)"
[ -f "$archive" ] || die "no archive at $archive"
db="${db:-$data_dir/bridge.db}"
command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 is missing: apt-get install sqlite3"
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet passby-bridge.service 2>/dev/null; then
  die "passby-bridge is running: systemctl stop passby-bridge first"
fi

mkdir -p "$data_dir"
work="$(mktemp -d "$data_dir/.restore.XXXXXX")"
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$archive" --no-same-owner
if [ ! -f "$work/SHA256SUMS" ] || [ ! -f "$work/INFO" ]; then die "$archive is not a passby SQLite backup"; fi
grep -qx 'format=passby-sqlite-backup/1' "$work/INFO" || die "$archive: unknown backup format"
(cd "$work" && sha256sum --quiet --strict -c SHA256SUMS) || die "$archive: checksums do not match"
check="$(sqlite3 -bail "$work/bridge.db" "PRAGMA integrity_check")"
[ "$check" = ok ] || die "$archive: the database failed the integrity check: $check"

# The broker's files (broker/, certs/ in the archive), if it has them and --no-broker is not given.
# shellcheck source-path=SCRIPTDIR source=broker-files.bash
. "$(dirname "${BASH_SOURCE[0]}")/broker-files.bash"

occupied=0
for f in "$db" "$db-wal" "$db-shm"; do [ ! -e "$f" ] || occupied=1; done
if [ -d "$work/keys" ] && [ -n "$(ls -A "$data_dir/keys" 2>/dev/null)" ]; then occupied=1; fi
if broker_occupied; then occupied=1; fi
aside="$data_dir/pre-restore-$(date -u +%Y%m%dT%H%M%SZ)"
if [ "$occupied" = 1 ]; then
  [ "$force" = 1 ] || die "$db, $data_dir/keys or the broker's files already exist: --force moves them aside first"
  mkdir -p "$aside"
  for f in "$db" "$db-wal" "$db-shm"; do [ ! -e "$f" ] || mv "$f" "$aside/"; done
  if [ -d "$work/keys" ] && [ -d "$data_dir/keys" ]; then mv "$data_dir/keys" "$aside/keys"; fi
  echo "restore-sqlite: the previous database, keys and broker files are in $aside"
fi

mkdir -p "$(dirname "$db")"
mv "$work/bridge.db" "$db"
if [ -d "$work/keys" ]; then
  mv "$work/keys" "$data_dir/keys"
  chmod 0700 "$data_dir/keys"
  chmod 0600 "$data_dir/keys"/*
fi
if [ "$(id -u)" = 0 ]; then
  chown --reference="$data_dir" "$db"
  [ ! -d "$data_dir/keys" ] || chown -R --reference="$data_dir" "$data_dir/keys"
fi
restore_broker "$aside/broker"
if [ "$has_broker" = 0 ]; then
  echo "$(basename "$0"): note: no broker files restored; write the password and ACL files from the restored store with 'cloud-bridge sensors sync-broker -c /etc/passby/bridge.toml' and keep the broker's certificates (or make new ones with tls-setup.sh: sensors then need re-pairing if the CA changes)"
fi
sed -n 's/^\(created\|schema_version\|keys\|broker\|ca_key\)=/  \1: /p' "$work/INFO"
echo "restore-sqlite: restored $db; start the bridge: systemctl start passby-bridge"
