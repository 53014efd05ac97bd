#!/usr/bin/env bash
# Online backup of the bridge's PostgreSQL database, with the bridge's keys.
#
#   backup-postgres.sh [--dbname NAME] [--keys-dir DIR] [--out DIR] [--keep N] [--no-keys]
#                      [--broker-dir DIR] [--certs-dir DIR] [--no-broker]
#
# pg_dump takes one consistent snapshot (a repeatable-read transaction) while the bridge keeps
# writing. The server and account come from the usual libpq settings (PGHOST, PGPORT, PGUSER,
# PGPASSWORD or ~/.pgpass); on the database host, run it as the postgres user or as the
# database owner. Output:
#
#   OUT/passby-pg-YYYYmmddTHHMMSSZ.tar.gz   db.dump (pg_dump custom format), keys/, broker/,
#                                           certs/, INFO, SHA256SUMS
#
# Defaults: --dbname passby, --keys-dir /var/lib/passby-bridge/keys, --out /var/backups/passby,
# --keep 14. Prints the archive path. The archive holds the data key: keep it private.
# broker/ and certs/ as in backup-sqlite.sh: the broker's password and ACL files (--broker-dir,
# default /etc/mosquitto/passby) and its CA and certificate (--certs-dir, default
# /etc/mosquitto/certs; ca.key optional); --no-broker leaves them out.
set -euo pipefail
umask 077

dbname=passby
keys_dir=/var/lib/passby-bridge/keys
out=/var/backups/passby
keep=14
keys=1
broker=1
broker_dir=/etc/mosquitto/passby
certs_dir=/etc/mosquitto/certs
die() { echo "backup-postgres.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dbname) dbname="${2:?}"; shift 2 ;;
    --keys-dir) keys_dir="${2:?}"; shift 2 ;;
    --out) out="${2:?}"; shift 2 ;;
    --keep) keep="${2:?}"; shift 2 ;;
    --no-keys) keys=0; shift ;;
    --broker-dir) broker_dir="${2:?}"; shift 2 ;;
    --certs-dir) certs_dir="${2:?}"; shift 2 ;;
    --no-broker) broker=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
case "$keep" in ''|*[!0-9]*|0) die "--keep must be a positive number" ;; esac
command -v pg_dump >/dev/null 2>&1 || die "pg_dump is missing: apt-get install postgresql-client"
if [ "$keys" = 1 ] && [ ! -d "$keys_dir" ]; then
  die "no keys directory $keys_dir (--no-keys backs up the database alone)"
fi

ca_key=no
if [ "$broker" = 1 ]; then
  for f in "$broker_dir/passby.passwd" "$broker_dir/passby.acl" "$certs_dir/ca.crt" "$certs_dir/broker.crt" "$certs_dir/broker.key"; do
    [ -r "$f" ] || die "cannot read $f (the broker's files; --broker-dir/--certs-dir say where, --no-broker leaves them out)"
  done
  if [ -r "$certs_dir/ca.key" ]; then ca_key=yes; else
    echo "$(basename "$0"): warning: no $certs_dir/ca.key: the CA key is not in this backup (kept offline?)" >&2
  fi
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
if [ "$broker" = 1 ]; then
  mkdir "$work/broker" "$work/certs"
  cp "$broker_dir/passby.passwd" "$broker_dir/passby.acl" "$work/broker/"
  cp "$certs_dir/ca.crt" "$certs_dir/broker.crt" "$certs_dir/broker.key" "$work/certs/"
  [ "$ca_key" = no ] || cp "$certs_dir/ca.key" "$work/certs/"
fi
cat >"$work/INFO" <<INFO
format=passby-pg-backup/1
created=$stamp
dbname=$dbname
server=$(psql -XAtq -d "$dbname" -c 'SHOW server_version' 2>/dev/null || echo unknown)
host=$(hostname)
keys=$([ "$keys" = 1 ] && echo yes || echo no)
broker=$([ "$broker" = 1 ] && echo yes || echo no)
ca_key=$ca_key
INFO
(cd "$work" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) >"$work.sums"
mv "$work.sums" "$work/SHA256SUMS"

archive="$out/passby-pg-$stamp.tar.gz"
tar -C "$work" -czf "$archive.part" .
mv "$archive.part" "$archive"
find "$out" -maxdepth 1 -name 'passby-pg-*.tar.gz' -printf '%f\n' | LC_ALL=C sort -r |
  tail -n "+$((keep + 1))" | while read -r old; do rm -f "$out/$old"; done
echo "$archive"
