#!/usr/bin/env bash
# Restore a backup-postgres.sh archive into a PostgreSQL database.
#
#   restore-postgres.sh ARCHIVE [--dbname NAME] [--keys-dir DIR] [--force]
#                       [--broker-dir DIR] [--certs-dir DIR] [--broker-group G] [--no-broker]
#
# Stop the bridge first. The database must exist (createdb -O passby passby) and be empty;
# with --force its passby objects are dropped and replaced (pg_restore --clean). The restore
# runs in one transaction: it either completes or changes nothing. Keys are restored into
# --keys-dir (default /var/lib/passby-bridge/keys); existing keys are moved aside, never deleted.
# libpq settings (PGHOST, PGPORT, PGUSER, ...) select the server, as for backup-postgres.sh.
# The broker's files in the archive go back as with restore-sqlite.sh (--broker-dir, --certs-dir,
# --broker-group); existing ones need --force and are moved aside.
set -euo pipefail
umask 077

dbname=passby
keys_dir=/var/lib/passby-bridge/keys
force=0
broker=1
broker_dir=/etc/mosquitto/passby
certs_dir=/etc/mosquitto/certs
broker_group=mosquitto
archive=""
die() { echo "restore-postgres.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dbname) dbname="${2:?}"; shift 2 ;;
    --keys-dir) keys_dir="${2:?}"; shift 2 ;;
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
command -v pg_restore >/dev/null 2>&1 || die "pg_restore is missing: apt-get install postgresql-client"
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet passby-bridge.service 2>/dev/null; then
  die "passby-bridge is running: systemctl stop passby-bridge first"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$archive" --no-same-owner
if [ ! -f "$work/SHA256SUMS" ] || [ ! -f "$work/INFO" ]; then die "$archive is not a passby PostgreSQL backup"; fi
grep -qx 'format=passby-pg-backup/1' "$work/INFO" || die "$archive: unknown backup format"
(cd "$work" && sha256sum --quiet --strict -c SHA256SUMS) || die "$archive: checksums do not match"
pg_restore --list "$work/db.dump" >/dev/null || die "$archive: the dump cannot be read"

# The broker's files (broker/, certs/ in the archive), if it has them and --no-broker is not given.
# shellcheck source-path=SCRIPTDIR source=broker-files.bash
. "$(dirname "${BASH_SOURCE[0]}")/broker-files.bash"
if broker_occupied && [ "$force" = 0 ]; then
  die "the broker's files already exist in $broker_dir or $certs_dir: --force moves them aside first"
fi
stamp="$(date -u +%Y%m%dT%H%M%SZ)"

tables="$(psql -XAtq -v ON_ERROR_STOP=1 -d "$dbname" -c \
  "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")" ||
  die "cannot connect to database $dbname (does it exist? createdb -O passby $dbname)"
clean=()
if [ "$tables" != 0 ]; then
  [ "$force" = 1 ] || die "database $dbname is not empty ($tables tables): --force replaces its contents"
  clean=(--clean --if-exists)
fi
pg_restore --no-owner --no-privileges --single-transaction --exit-on-error "${clean[@]}" \
  --dbname "$dbname" "$work/db.dump"

if [ -d "$work/keys" ]; then
  if [ -n "$(ls -A "$keys_dir" 2>/dev/null)" ]; then
    aside="$keys_dir.pre-restore-$(date -u +%Y%m%dT%H%M%SZ)"
    mv "$keys_dir" "$aside"
    echo "restore-postgres: the previous keys are in $aside"
  fi
  mkdir -p "$(dirname "$keys_dir")"
  mv "$work/keys" "$keys_dir"
  chmod 0700 "$keys_dir"
  chmod 0600 "$keys_dir"/*
  if [ "$(id -u)" = 0 ]; then chown -R --reference="$(dirname "$keys_dir")" "$keys_dir"; fi
fi
restore_broker "$(dirname "$certs_dir")/passby-broker.pre-restore-$stamp"
if [ "$has_broker" = 0 ]; then
  echo "$(basename "$0"): note: no broker files restored; write the password and ACL files from the restored store with 'cloud-bridge sensors sync-broker -c /etc/passby/bridge.toml' and keep the broker's certificates (or make new ones with tls-setup.sh: sensors then need re-pairing if the CA changes)"
fi
sed -n 's/^\(created\|dbname\|server\|keys\|broker\|ca_key\)=/  \1: /p' "$work/INFO"
echo "restore-postgres: restored into $dbname; start the bridge: systemctl start passby-bridge"
