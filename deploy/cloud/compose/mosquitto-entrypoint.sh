#!/bin/sh
# Entry point of the compose 'mosquitto' service (eclipse-mosquitto image, busybox sh).
# The reference config (deploy/mosquitto/passby.conf.example) names
# /etc/mosquitto/passby/passby.passwd and .acl: here that directory is the shared broker-auth
# volume the bridge rewrites (read-only here: the bridge's user owns it). The bridge cannot
# signal this container, so this script watches both files and sends Mosquitto SIGHUP (re-read
# them) when either changes, as passby-mosquitto-reload.path does on a Debian host.
# PASSBY_AUTH_DIR and PASSBY_POLL_S exist for the tests.
set -eu
auth="${PASSBY_AUTH_DIR:-/etc/mosquitto/passby}"
poll="${PASSBY_POLL_S:-5}"
for f in passby.passwd passby.acl; do
  if [ ! -e "$auth/$f" ]; then
    echo "passby: no $auth/$f: the broker-accounts service writes it (cloud-bridge sensors sync-broker)" >&2
    exit 1
  fi
done
stamp() { cat "$auth/passby.passwd" "$auth/passby.acl" 2>/dev/null | cksum; }
"$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
seen="$(stamp)"
while kill -0 "$pid" 2>/dev/null; do
  sleep "$poll" &
  wait $! || true
  now="$(stamp)"
  if [ "$now" != "$seen" ]; then
    seen="$now"
    echo "passby: broker password/ACL changed; reloading mosquitto"
    kill -HUP "$pid" 2>/dev/null || true
  fi
done
wait "$pid"
