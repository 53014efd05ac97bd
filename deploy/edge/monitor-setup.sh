#!/bin/sh
# Put the passby monitor adapter into monitor mode on the store AP's channel.
# Run by passby-monitor.service (oneshot) whenever the adapter appears; safe to run by hand.
# Settings (from /etc/passby/monitor.env via the unit, or the environment):
#   PASSBY_IFACE    interface the udev rule named (default wlan-mon)
#   PASSBY_CHANNEL  store AP channel; empty = `channel` from PASSBY_EDGE_CONFIG (edge.toml)
#   PASSBY_COUNTRY  regulatory country for `iw reg set` (channels 12-13, 5 GHz); empty = keep
set -eu

iface="${PASSBY_IFACE:-wlan-mon}"
channel="${PASSBY_CHANNEL:-}"
country="${PASSBY_COUNTRY:-}"
config="${PASSBY_EDGE_CONFIG:-/etc/passby/edge.toml}"

log() { echo "passby-monitor: $*"; }

if [ -z "$channel" ] && [ -r "$config" ]; then
  # The top-level `channel = N` of edge.toml (written by `edge-agent enroll`).
  channel=$(sed -n 's/^[[:space:]]*channel[[:space:]]*=[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$config" | head -n 1)
fi
case "$channel" in
  ''|*[!0-9]*) [ -z "$channel" ] || { log "PASSBY_CHANNEL '$channel' is not a number"; exit 2; } ;;
esac

if [ ! -e "/sys/class/net/$iface" ]; then
  log "interface $iface does not exist: plug in the USB Wi-Fi adapter (see hardware/README.md)"
  exit 1
fi

if command -v rfkill >/dev/null 2>&1; then
  # Raspberry Pi OS soft-blocks Wi-Fi until a country is set; a blocked radio hears nothing.
  rfkill unblock wifi || log "rfkill unblock failed (continuing)"
fi
if [ -n "$country" ]; then
  iw reg set "$country"
fi

ip link set dev "$iface" down
iw dev "$iface" set type monitor
ip link set dev "$iface" up
if [ -n "$channel" ]; then
  iw dev "$iface" set channel "$channel"
  log "$iface in monitor mode on channel $channel"
else
  log "$iface in monitor mode; no channel configured (set PASSBY_CHANNEL or enroll)"
fi
