#!/bin/bash
# The compose 'backup' service (postgres image, as root): backup-postgres.sh now and then every
# PASSBY_BACKUP_EVERY_S seconds (default one day), with the bridge's keys, the broker CA and
# key, and the broker's password and ACL files, into /backups (./backups on the host).
set -euo pipefail
every="${PASSBY_BACKUP_EVERY_S:-86400}"
keep="${PASSBY_BACKUP_KEEP:-14}"
while :; do
  /opt/passby/lib/backup-postgres.sh --dbname passby --keys-dir /var/lib/passby-bridge/keys \
    --broker-dir /etc/mosquitto/passby --certs-dir /etc/mosquitto/certs \
    --out /backups --keep "$keep" || echo "backup: FAILED (exit $?); next try in ${every}s" >&2
  sleep "$every"
done
