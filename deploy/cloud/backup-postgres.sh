#!/usr/bin/env bash
# Online backup of the bridge's PostgreSQL database, with the bridge's keys.
#
#   backup-postgres.sh [--dbname NAME] [--keys-dir DIR] [--out DIR] [--keep N] [--no-keys]
#
# pg_dump takes one consistent snapshot (a repeatable-read transaction) while the bridge keeps
# writing. The server and account come from the usual libpq settings (PGHOST, PGPORT, PGUSER,
# PGPASSWORD or ~/.pgpass); on the database host, run it as the postgres user or as the
# database owner. Output:
#
#   OUT/passby-pg-YYYYmmddTHHMMSSZ.tar.gz   db.dump (pg_dump custom format), keys/, INFO, SHA256SUMS
#
# Defaults: --dbname passby, --keys-dir /var/lib/passby-bridge/keys, --out /var/backups/passby,
# --keep 14. Prints the archive path. The archive holds the data key: keep it private.
set -euo pipefail
umask 077

dbname=passby
keys_dir=/var/lib/passby-bridge/keys
out=/var/backups/passby
keep=14
keys=1
die() { echo "backup-postgres.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dbname) dbname="${2:?}"; shift 2 ;;
    --keys-dir) keys_dir="${2:?}"; shift 2 ;;
    --out) out="${2:?}"; shift 2 ;;
    --keep) keep="${2:?}"; shift 2 ;;
    --no-keys) keys=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
case "$keep" in ''|*[!0-9]*|0) die "--keep must be a positive number" ;; esac
command -v pg_dump >/dev/null 2>&1 || die "pg_dump is missing: apt-get install postgresql-client"
if [ "$keys" = 1 ] && [ ! -d "$keys_dir" ]; then
  die "no keys directory $keys_dir (--no-keys backs up the database alone)"
fi

mkdir -p "$out"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
work="$(mktemp -d "$out/.passby-pg.XXXXXX")"
trap 'rm -rf "$work" "$work.sums"' EXIT

pg_dump --format=custom --no-owner --no-privileges --file "$work/db.dump" "$dbname"
pg_restore --list "$work/db.dump" >/dev/null || die "the dump cannot be read back"
if [ "$keys" = 1 ]; then
  cp -R "$keys_dir" "$work/keys"
fi
cat >"$work/INFO" <<INFO
format=passby-pg-backup/1
created=$stamp
dbname=$dbname
server=$(psql -XAtq -d "$dbname" -c 'SHOW server_version' 2>/dev/null || echo unknown)
host=$(hostname)
keys=$([ "$keys" = 1 ] && echo yes || echo no)
INFO
(cd "$work" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) >"$work.sums"
mv "$work.sums" "$work/SHA256SUMS"

archive="$out/passby-pg-$stamp.tar.gz"
tar -C "$work" -czf "$archive.part" .
mv "$archive.part" "$archive"
find "$out" -maxdepth 1 -name 'passby-pg-*.tar.gz' -printf '%f\n' | LC_ALL=C sort -r |
  tail -n "+$((keep + 1))" | while read -r old; do rm -f "$out/$old"; done
echo "$archive"
