#!/usr/bin/env bash
# Online backup of the bridge's SQLite store, with the keys it cannot be read without.
#
#   backup-sqlite.sh [--data-dir DIR] [--db FILE] [--out DIR] [--keep N] [--no-keys]
#                    [--broker-dir DIR] [--certs-dir DIR] [--no-broker]
#
# Safe while the bridge runs: `VACUUM INTO` copies one consistent read transaction (WAL mode:
# writers carry on, nothing is locked for long), the copy must pass `PRAGMA integrity_check`,
# and it is packed with the bridge's keys/ (data.key encrypts the MACs; subject.key and
# roster-signing.key keep subjects and rosters stable) into one archive:
#
#   OUT/passby-sqlite-YYYYmmddTHHMMSSZ.tar.gz   bridge.db, keys/, broker/, certs/, INFO, SHA256SUMS
#                                               (mode 0600)
#
# Defaults: --data-dir /var/lib/passby-bridge, --db DATA_DIR/bridge.db, --out /var/backups/passby,
# --keep 14 (older archives of this kind are deleted). Prints the archive's path.
# The broker's side goes in too, so a restore needs nothing else: broker/ = passby.passwd and
# passby.acl from --broker-dir (default /etc/mosquitto/passby), certs/ = ca.crt, ca.key,
# broker.crt, broker.key from --certs-dir (default /etc/mosquitto/certs; ca.key may be missing
# if you keep it offline). --no-broker leaves them out (a broker on another host).
# The archive holds the data key: keep OUT private and copy it off-site encrypted. If the key
# comes from PASSBY_DATA_KEY / data_key instead of keys/data.key, back that up separately.
set -euo pipefail
umask 077

data_dir=/var/lib/passby-bridge
db=""
out=/var/backups/passby
keep=14
keys=1
broker=1
broker_dir=/etc/mosquitto/passby
certs_dir=/etc/mosquitto/certs
die() { echo "backup-sqlite.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir="${2:?}"; shift 2 ;;
    --db) db="${2:?}"; shift 2 ;;
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
db="${db:-$data_dir/bridge.db}"
case "$keep" in ''|*[!0-9]*|0) die "--keep must be a positive number" ;; esac
command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 is missing: apt-get install sqlite3"
[ -f "$db" ] || die "no database at $db"
if [ "$keys" = 1 ] && [ ! -d "$data_dir/keys" ]; then
  die "no keys directory $data_dir/keys (--no-keys backs up the database alone)"
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
work="$(mktemp -d "$out/.passby-sqlite.XXXXXX")"
trap 'rm -rf "$work" "$work.sums"' EXIT

target="$work/bridge.db"
quoted="${target//\'/\'\'}"
sqlite3 -bail -cmd ".timeout 60000" "$db" "VACUUM INTO '$quoted'" >/dev/null
check="$(sqlite3 -bail "$target" "PRAGMA integrity_check")"
[ "$check" = ok ] || die "the snapshot failed the integrity check: $check"
schema="$(sqlite3 -bail "$target" "SELECT coalesce(max(version), 0) FROM schema_migrations")"

if [ "$keys" = 1 ]; then
  cp -R "$data_dir/keys" "$work/keys"
fi
if [ "$broker" = 1 ]; then
  mkdir "$work/broker" "$work/certs"
  cp "$broker_dir/passby.passwd" "$broker_dir/passby.acl" "$work/broker/"
  cp "$certs_dir/ca.crt" "$certs_dir/broker.crt" "$certs_dir/broker.key" "$work/certs/"
  [ "$ca_key" = no ] || cp "$certs_dir/ca.key" "$work/certs/"
fi
cat >"$work/INFO" <<INFO
format=passby-sqlite-backup/1
created=$stamp
schema_version=$schema
source=$db
host=$(hostname)
keys=$([ "$keys" = 1 ] && echo yes || echo no)
broker=$([ "$broker" = 1 ] && echo yes || echo no)
ca_key=$ca_key
INFO
(cd "$work" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) >"$work.sums"
mv "$work.sums" "$work/SHA256SUMS"

archive="$out/passby-sqlite-$stamp.tar.gz"
tar -C "$work" -czf "$archive.part" .
mv "$archive.part" "$archive"
find "$out" -maxdepth 1 -name 'passby-sqlite-*.tar.gz' -printf '%f\n' | LC_ALL=C sort -r |
  tail -n "+$((keep + 1))" | while read -r old; do rm -f "$out/$old"; done
echo "$archive"
