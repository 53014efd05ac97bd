#!/usr/bin/env bash
# Make the private CA and the broker certificate Mosquitto's TLS listener (8883) uses, in the
# files deploy/mosquitto/passby.conf.example names: ca.crt, broker.crt, broker.key.
#
#   tls-setup.sh --name mqtt.example.com [--name ALT ...] [--ip 203.0.113.7 ...] [--out DIR]
#                [--group mosquitto] [--days 825] [--renew]
#
# The CA (ca.key, ca.crt: EC P-256, 10 years) is made once and never overwritten; keep ca.key
# offline if you can. The broker key and certificate (EC P-256, SAN = every --name and --ip plus
# localhost and 127.0.0.1 for a bridge on the same host) are made when missing, or again with
# --renew. Sensors get ca.crt when they pair ([provisioning] mqtt_ca_file) and verify the broker
# with it. With a public CA (Let's Encrypt) instead, see deploy/cloud/README.md (certbot).
set -euo pipefail
umask 077

out=/etc/mosquitto/certs
group=""
days=825
renew=0
names=()
ips=()
die() { echo "tls-setup.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --name) names+=("${2:?--name needs a DNS name}"); shift 2 ;;
    --ip) ips+=("${2:?--ip needs an address}"); shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --group) group="${2:?--group needs a group}"; shift 2 ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --renew) renew=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[ "${#names[@]}" -gt 0 ] || die "give the broker's DNS name with --name (what sensors connect to)"
command -v openssl >/dev/null 2>&1 || die "openssl is missing: apt-get install openssl"
mkdir -p "$out"

san="DNS:localhost,IP:127.0.0.1"
for n in "${names[@]}"; do san+=",DNS:$n"; done
for i in "${ips[@]}"; do san+=",IP:$i"; done

if [ ! -s "$out/ca.key" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days 3650 -subj "/O=passby/CN=passby broker CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt"
  echo "tls-setup: new CA $out/ca.crt"
else
  echo "tls-setup: keeping the existing CA $out/ca.crt"
fi

if [ ! -s "$out/broker.crt" ] || [ "$renew" = 1 ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/broker.key"
  openssl req -new -key "$work/broker.key" -subj "/O=passby/CN=${names[0]}" -out "$work/broker.csr"
  cat >"$work/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=$san
EXT
  openssl x509 -req -in "$work/broker.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -CAserial "$out/ca.srl" -sha256 -days "$days" -extfile "$work/ext.cnf" \
    -out "$work/broker.crt" 2>/dev/null
  openssl verify -CAfile "$out/ca.crt" "$work/broker.crt" >/dev/null
  mv "$work/broker.key" "$out/broker.key"
  mv "$work/broker.crt" "$out/broker.crt"
  echo "tls-setup: broker certificate $out/broker.crt for $san, valid $days days"
else
  echo "tls-setup: keeping the existing broker certificate (--renew to make a new one)"
fi

chmod 0644 "$out/ca.crt" "$out/broker.crt"
chmod 0600 "$out/ca.key"
if [ -n "$group" ]; then
  # Mosquitto drops to its own user: it must read the broker key, nothing else secret.
  chgrp "$group" "$out/broker.key"
  chmod 0640 "$out/broker.key"
  chmod 0755 "$out"
fi
openssl x509 -in "$out/broker.crt" -noout -subject -enddate
