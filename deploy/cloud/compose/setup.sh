#!/usr/bin/env bash
# Prepare deploy/cloud/ for `docker compose up`: broker certificate, secrets, bridge.toml and the
# reverse proxy's site name. Run once, as root (the secrets are handed to uid 10001, the bridge
# image's passby user), from anywhere:
#
#   sudo deploy/cloud/compose/setup.sh --domain mqtt.example.com --public-host bridge.example.com
#                                      [--out DIR] [--force]
#
#   --domain NAME       the broker's DNS name sensors connect to (also in the certificate)
#   --public-host NAME  the console/API's HTTPS name (Caddy gets its certificate from Let's
#                       Encrypt; the DNS record must point here and ports 80/443 be open)
#   --out DIR           where to write (default: deploy/cloud, next to docker-compose.yml)
#   --force             rewrite bridge.toml and compose.env (certificates and secrets are kept)
#
# Writes, in DIR:
#   certs/      tls-setup.sh --name DOMAIN --name mosquitto --group 1883: the private CA, and
#               the broker certificate for DOMAIN (sensors) and 'mosquitto' (the bridge inside
#               compose), key readable by gid 1883 (the eclipse-mosquitto image's user)
#   secrets/    bridge-mqtt.password (the bridge's broker account), postgres.password and
#               bridge.pgpass (libpq password file), random; owned by uid 10001 where the bridge
#               reads them
#   bridge.toml the bridge's settings for compose (PostgreSQL, broker 'mosquitto' over TLS)
#   compose.env PASSBY_PUBLIC_HOST for Caddy (docker compose --env-file compose.env up -d)
set -euo pipefail
umask 077

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cloud="$(cd "$here/.." && pwd)"
out="$cloud"
domain=""
public_host=""
force=0
BRIDGE_UID=10001
MOSQUITTO_GID=1883
die() { echo "setup.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --domain) domain="${2:?--domain needs a DNS name}"; shift 2 ;;
    --public-host) public_host="${2:?--public-host needs a DNS name}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
name_re='^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$'
[[ "$domain" =~ $name_re ]] || die "--domain: give the broker's DNS name, e.g. mqtt.example.com"
[[ "$public_host" =~ $name_re ]] || die "--public-host: give the console's DNS name, e.g. bridge.example.com"
[ "$(id -u)" = 0 ] || die "run as root (sudo): the secrets are handed to uid $BRIDGE_UID"
mkdir -p "$out/secrets"
chmod 0755 "$out"
chmod 0711 "$out/secrets"

"$here/../tls-setup.sh" --name "$domain" --name mosquitto --out "$out/certs" --group "$MOSQUITTO_GID"

secret() {  # secret FILE OWNER: a random secret, made once
  local f="$out/secrets/$1"
  [ -s "$f" ] || openssl rand -hex 24 >"$f"
  chown "$2" "$f"
  chmod 0400 "$f"
}
secret bridge-mqtt.password "$BRIDGE_UID:$BRIDGE_UID"
secret postgres.password 0:0
if [ ! -s "$out/secrets/bridge.pgpass" ] || [ "$force" = 1 ]; then
  # host:port:database:user:password, for libpq (PGPASSFILE) in the bridge and the backup job
  printf 'postgres:5432:passby:passby:%s\n' "$(cat "$out/secrets/postgres.password")" >"$out/secrets/bridge.pgpass"
fi
chown "$BRIDGE_UID:$BRIDGE_UID" "$out/secrets/bridge.pgpass"
chmod 0400 "$out/secrets/bridge.pgpass"

if [ -e "$out/bridge.toml" ] && [ "$force" = 0 ]; then
  echo "setup: keeping $out/bridge.toml (--force rewrites it)"
else
  sed -e "s/@PUBLIC_HOST@/$public_host/g" -e "s/@DOMAIN@/$domain/g" "$here/bridge.toml.in" >"$out/bridge.toml"
  chmod 0644 "$out/bridge.toml"
  echo "setup: wrote $out/bridge.toml"
fi
if [ -e "$out/compose.env" ] && [ "$force" = 0 ]; then
  echo "setup: keeping $out/compose.env"
else
  printf 'PASSBY_PUBLIC_HOST=%s\n' "$public_host" >"$out/compose.env"
  chmod 0644 "$out/compose.env"
fi
mkdir -p "$out/backups"
chmod 0700 "$out/backups"
echo "setup: done. Next: docker compose --env-file compose.env up -d --build"
