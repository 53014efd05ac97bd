# shellcheck shell=bash disable=SC2154  # work, broker, broker_dir, certs_dir, broker_group: the caller's
# The broker's files in a passby backup (passby.passwd and passby.acl under broker/, the CA and
# broker certificate under certs/): restored by restore-sqlite.sh and restore-postgres.sh, which
# source this file after unpacking the archive into $work. They set: work, broker (1 unless
# --no-broker), broker_dir, certs_dir, broker_group.

# Has the archive the broker's files, and are they wanted?
has_broker=0
if [ "$broker" = 1 ] && [ -d "$work/broker" ]; then has_broker=1; fi
broker_targets() {  # prints "archive-file target" pairs
  local f
  for f in "$work"/broker/*; do [ ! -e "$f" ] || echo "$f $broker_dir/${f##*/}"; done
  for f in "$work"/certs/*; do [ ! -e "$f" ] || echo "$f $certs_dir/${f##*/}"; done
}
broker_occupied() {
  local src dest
  [ "$has_broker" = 1 ] || return 1
  while read -r src dest; do [ ! -e "$dest" ] || return 0; done < <(broker_targets)
  return 1
}
restore_broker() {  # restore_broker ASIDE_DIR: existing files are moved there, never deleted
  local src dest mode
  [ "$has_broker" = 1 ] || return 0
  if [ ! -d "$certs_dir" ]; then  # Mosquitto (its own user) must reach the certificates
    mkdir -p "$certs_dir"
    chmod 0755 "$certs_dir"
  fi
  if [ ! -d "$broker_dir" ]; then  # as install.sh makes it: group-readable for the broker
    mkdir -p "$broker_dir"
    chmod 2750 "$broker_dir"
    if [ "$(id -u)" = 0 ] && getent group "$broker_group" >/dev/null; then chgrp "$broker_group" "$broker_dir"; fi
  fi
  while read -r src dest; do
    if [ -e "$dest" ]; then mkdir -p "$1"; mv "$dest" "$1/"; fi
    case "${dest##*/}" in
      ca.crt|broker.crt) mode=0644 ;;
      ca.key) mode=0600 ;;
      *) mode=0640 ;;
    esac
    cp "$src" "$dest"
    chmod "$mode" "$dest"
    if [ "$(id -u)" = 0 ]; then
      case "${dest##*/}" in
        passby.passwd|passby.acl) chown --reference="$broker_dir" "$dest" ;;
        broker.key) chown root "$dest"; ! getent group "$broker_group" >/dev/null || chgrp "$broker_group" "$dest" ;;
        *) chown root:root "$dest" ;;
      esac
    fi
  done < <(broker_targets)
  echo "$(basename "$0"): restored the broker's password and ACL files into $broker_dir and its CA and certificate into $certs_dir; restart Mosquitto (systemctl restart mosquitto)"
}
