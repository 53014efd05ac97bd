#!/usr/bin/env bash
# Install the passby sensor box on Raspberry Pi OS Bookworm (arm64), from a signed release bundle
# (scripts/release.sh: passby-X.Y.Z/), a signed release or a checkout, and enroll it with the
# pairing code from the console. One command, in the unpacked bundle:
#
#   sudo passby-X.Y.Z/deploy/edge/install.sh --enroll CODE --bridge https://bridge.example.com [--channel 6] [--country RU]
#
# From a bundle the installer verifies it (BUNDLE.sig), installs its signed box release, pins the
# release key (the bundle's release-signing.pub, unless one is pinned already or given) and sets
# the update source (the bundle's update URL, else BRIDGE/releases/passby-edge-latest.tar), so
# passby-update.timer installs newer releases by itself.
#
# Options:
#   --enroll CODE       pairing code (console, or `cloud-bridge sensors add`); the last step
#   --bridge URL        the bridge's HTTPS URL the pairing code is redeemed at (with --enroll)
#   --bridge-ca FILE    CA certificate of the bridge's HTTPS, if it is a private CA
#   --channel N         the store AP's channel (default: the one enrollment brings)
#   --country CC        regulatory country for iw (channels 12-13 and 5 GHz need it)
#   --force             re-pair a box that is paired already (a new code after "re-pair" or --rotate)
#   --release FILE      install this signed release (passby-edge-X.Y.Z.tar) instead of the checkout
#   --release-key HEX   Ed25519 public key that signs releases (stored in /etc/passby/release-signing.pub)
#   --update-url URL    https URL of the latest release for the nightly passby-update.timer
#   --dry-run           print every step and command; change nothing (no root needed)
#   --destdir DIR       write files under DIR and print, not run, system commands (packaging, tests)
#   -h, --help
#
# Layout: /opt/passby/{releases/VERSION/venv,current -> releases/VERSION,lib}, /etc/passby
# (config, root:passby 2750: setgid, so files written there stay group passby), /var/lib/passby (outbox, roster; the agent's only writable path).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

PREFIX=/opt/passby
ETC=/etc/passby
STATE=/var/lib/passby
SERVICE_USER=passby
IFACE=wlan-mon
PACKAGES=(iw wireless-regdb rfkill libpcap0.8 python3 python3-venv python3-cryptography
  ca-certificates tcpdump firmware-misc-nonfree firmware-atheros)
UNITS=(passby-monitor.service passby-agent.service passby-agent.path passby-update.service passby-update.timer)
ENABLE=(passby-monitor.service passby-agent.service passby-agent.path passby-update.timer)
TOTAL=11

dry=0
destdir=""
enroll=""
bridge=""
bridge_ca=""
channel=""
country=""
release=""
release_key=""
update_url=""
force=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
warn() { echo "install.sh: warning: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --enroll) enroll="${2:?--enroll needs a code}"; shift 2 ;;
    --bridge) bridge="${2:?--bridge needs a URL}"; shift 2 ;;
    --bridge-ca) bridge_ca="${2:?--bridge-ca needs a file}"; shift 2 ;;
    --channel) channel="${2:?--channel needs a number}"; shift 2 ;;
    --country) country="${2:?--country needs a code}"; shift 2 ;;
    --release) release="${2:?--release needs a file}"; shift 2 ;;
    --release-key) release_key="${2:?--release-key needs a hex key}"; shift 2 ;;
    --update-url) update_url="${2:?--update-url needs a URL}"; shift 2 ;;
    --force) force=--force; shift ;;
    --dry-run) dry=1; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

# --- a signed bundle (scripts/release.sh): its release, its key, an update source -----------
bundle=""
bundle_field() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" "$repo/BUNDLE.json" | head -n 1; }
if [ -f "$repo/BUNDLE.json" ]; then
  bundle="$repo"
  [ -n "$release" ] || release="$repo/$(bundle_field box_release)"
  if [ -z "$release_key" ]; then
    if [ -r "$ETC/release-signing.pub" ]; then
      release_key="$(tr -d '[:space:]' <"$ETC/release-signing.pub")"
    else
      release_key="$(tr -d '[:space:]' <"$repo/release-signing.pub")"
      key_from_bundle=1
    fi
  fi
  if [ -z "$update_url" ]; then
    update_url="$(bundle_field update_url)"
    case "$update_url$bridge" in
      https://*) [ -n "$update_url" ] || update_url="${bridge%/}/releases/passby-edge-latest.tar" ;;
    esac
  fi
fi

case "$channel" in ''|[0-9]|[0-9][0-9]|1[0-9][0-9]) ;; *) die "--channel '$channel' is not a channel number" ;; esac
case "$country" in ''|[A-Z][A-Z]) ;; *) die "--country '$country' is not a two-letter country code" ;; esac
if [ -n "$release" ] && [ -z "$release_key" ] && [ ! -r "$ETC/release-signing.pub" ]; then
  die "--release needs --release-key (the public key that signs releases)"
fi
case "$update_url" in ''|https://*) ;; *) die "--update-url must be an https:// URL" ;; esac
if [ -n "$enroll" ] && [ -z "$bridge" ]; then die "--enroll needs --bridge URL (where the pairing code is redeemed)"; fi
case "$bridge" in ''|https://*|http://*) ;; *) die "--bridge must be an http(s):// URL" ;; esac
[ -z "$destdir" ] || destdir="$(mkdir -p "$destdir" && cd "$destdir" && pwd)"

# --- how each action happens: for real, printed (--dry-run), or into DESTDIR (--destdir) ------
pretend() { [ "$dry" = 1 ] || [ -n "$destdir" ]; }
step_no=0
step() { step_no=$((step_no + 1)); printf '==> [%d/%d] %s\n' "$step_no" "$TOTAL" "$*"; }
secret=""  # shown as *** (the pairing code is a one-time secret)
show() {
  local out="" a
  for a in "$@"; do
    if [ -n "$secret" ] && [ "$a" = "$secret" ]; then
      out+=" ***"
    elif [[ "$a" =~ ^[A-Za-z0-9_./=:+,@%^-]+$ ]] || [[ "$a" =~ ^[A-Za-z0-9_./-]+\[[a-z,]+\]$ ]]; then
      out+=" $a"
    else
      out+=" $(printf '%q' "$a")"
    fi
  done
  printf '%s' "${out# }"
}
# run CMD...: a system command (packages, users, systemctl, udevadm, the agent itself).
run() {
  if pretend; then echo "    would run: $(show "$@")"; else echo "    + $(show "$@")"; "$@"; fi
}
# put SRC DEST MODE [GROUP]: install a file.
put() {
  local src="$1" dest="$2" mode="$3" group="${4:-root}"
  if [ "$dry" = 1 ]; then echo "    would install: $dest (mode $mode, root:$group) from ${src#"$repo"/}"; return; fi
  install -D -m "$mode" "$src" "$destdir$dest"
  if [ -n "$destdir" ]; then echo "    installed: $destdir$dest"; else chgrp "$group" "$dest"; echo "    installed: $dest"; fi
}
# write DEST MODE GROUP: a file whose content comes from stdin.
write() {
  local dest="$1" mode="$2" group="$3" tmp
  tmp="$(mktemp)"; cat >"$tmp"
  if [ "$dry" = 1 ]; then echo "    would write: $dest (mode $mode, root:$group):"; sed 's/^/      | /' "$tmp"; rm -f "$tmp"; return; fi
  put "$tmp" "$dest" "$mode" "$group"; rm -f "$tmp"
}
# dir PATH MODE OWNER:GROUP
dir() {
  if [ "$dry" = 1 ]; then echo "    would create: $1/ (mode $2, $3)"; return; fi
  install -d -m "$2" "$destdir$1"
  if [ -z "$destdir" ]; then chown "$3" "$1"; fi
}

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml" | head -n 1)"
agent="$PREFIX/current/venv/bin/edge-agent"

# --- 1 ------------------------------------------------------------------------------------
step "preflight: Raspberry Pi OS Bookworm on arm64, run as root"
if ! pretend && [ "$(id -u)" != 0 ]; then die "run as root (sudo), or try --dry-run"; fi
# shellcheck source=/dev/null
codename="$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)"
arch="$(uname -m)"
[ "$codename" = bookworm ] || warn "this is '${codename:-unknown}', not Debian/Raspberry Pi OS bookworm: package names may differ"
case "$arch" in aarch64|arm64) ;; *) warn "this is $arch, not arm64: fine for testing, the box is a Raspberry Pi" ;; esac
if [ -n "$bundle" ]; then echo "    agent: signed bundle $bundle ($(basename "$release"))"
elif [ -n "$release" ]; then echo "    agent: signed release $release"; else echo "    agent: passby $version from $repo"; fi
if [ "${key_from_bundle:-0}" = 1 ]; then
  echo "    release key (pinned from the bundle): $release_key"
  echo "    compare it with the key your release author published before you go on"
fi
if [ -n "$update_url" ]; then echo "    updates: nightly from $update_url"
else warn "no update source (--update-url, or an https --bridge): passby-update.timer stays idle"; fi
[ -n "$enroll" ] || warn "no --enroll CODE: the box will wait for 'edge-agent enroll CODE' (see the end)"

# --- 2 ------------------------------------------------------------------------------------
step "system packages: ${PACKAGES[*]}"
run env DEBIAN_FRONTEND=noninteractive apt-get update -q
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"

# --- 3 ------------------------------------------------------------------------------------
step "service user '$SERVICE_USER' and directories"
if id "$SERVICE_USER" >/dev/null 2>&1; then
  echo "    user $SERVICE_USER exists"
else
  run useradd --system --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi
dir "$ETC" 2750 "root:$SERVICE_USER"
dir "$STATE" 0750 "$SERVICE_USER:$SERVICE_USER"
dir "$PREFIX" 0755 root:root
dir "$PREFIX/lib" 0755 root:root
dir "$PREFIX/releases" 0755 root:root
dir "$PREFIX/share" 0755 root:root

# --- 4 ------------------------------------------------------------------------------------
step "helper scripts and settings"
put "$here/monitor-setup.sh" "$PREFIX/lib/monitor-setup.sh" 0755
put "$here/passby_update.py" "$PREFIX/lib/passby_update.py" 0755
put "$here/passby-enroll.sh" "$PREFIX/lib/passby-enroll.sh" 0755
put "$repo/hardware/README.md" "$PREFIX/share/hardware/README.md" 0644
put "$here/README.md" "$PREFIX/share/deploy/edge/README.md" 0644
if [ -n "$channel" ] || [ -n "$country" ] || [ ! -e "$destdir$ETC/monitor.env" ]; then
  sed -e "s/^PASSBY_CHANNEL=.*/PASSBY_CHANNEL=$channel/" -e "s/^PASSBY_COUNTRY=.*/PASSBY_COUNTRY=$country/" \
    "$here/monitor.env.example" | write "$ETC/monitor.env" 0640 "$SERVICE_USER"
fi
if [ -n "$release_key" ]; then
  echo "$release_key" | write "$ETC/release-signing.pub" 0644 root
fi
if [ -n "$update_url" ]; then
  echo "PASSBY_UPDATE_URL=$update_url" | write "$ETC/update.env" 0644 root
fi

# --- 5 ------------------------------------------------------------------------------------
if [ -n "$release" ]; then
  step "agent software: verify and install the signed release"
  key_args=(--pubkey-file "$ETC/release-signing.pub")
  [ -z "$release_key" ] || key_args=(--pubkey "$release_key")
  [ -z "$bundle" ] || run python3 "$PREFIX/lib/passby_update.py" verify-bundle "$bundle" "${key_args[@]}"
  run python3 "$PREFIX/lib/passby_update.py" install "$release" "${key_args[@]}" --prefix "$PREFIX"
else
  step "agent software: passby $version into $PREFIX/releases/$version/venv"
  venv="$PREFIX/releases/$version/venv"
  run python3 -m venv "$venv"
  run "$venv/bin/python" -m pip install --quiet --upgrade pip
  run "$venv/bin/python" -m pip install --quiet "${repo}[edge]"
  printf '{"name": "passby", "version": "%s", "protocol": %s, "source": "%s"}\n' "$version" \
    "$(sed -n 's/^PROTOCOL_VERSION = \([0-9]*\)/\1/p' "$repo/edge_agent/protocol.py")" "$repo" |
    write "$PREFIX/releases/$version/release.json" 0644 root
  run ln -sfn "releases/$version" "$PREFIX/current"
fi

# --- 6 ------------------------------------------------------------------------------------
step "udev rule: the monitor adapter becomes '$IFACE'; NetworkManager leaves it alone"
put "$here/udev/70-passby-wlan-mon.rules" /etc/udev/rules.d/70-passby-wlan-mon.rules 0644
put "$here/networkmanager/90-passby-unmanaged.conf" /etc/NetworkManager/conf.d/90-passby-unmanaged.conf 0644
run udevadm control --reload-rules
run udevadm trigger --subsystem-match=net --action=add
if ! pretend && systemctl is-active --quiet NetworkManager; then run systemctl reload NetworkManager; fi

# --- 7 ------------------------------------------------------------------------------------
step "log rotation: journald keeps at most 64 MB, one month"
put "$here/journald/90-passby.conf" /etc/systemd/journald.conf.d/90-passby.conf 0644
run systemctl restart systemd-journald

# --- 8 ------------------------------------------------------------------------------------
step "systemd units: ${UNITS[*]}"
for unit in "${UNITS[@]}"; do
  put "$here/systemd/$unit" "/etc/systemd/system/$unit" 0644
done
run systemctl daemon-reload
run systemctl enable "${ENABLE[@]}"

# --- 9 ------------------------------------------------------------------------------------
step "monitor mode on $IFACE"
if pretend || [ -e "/sys/class/net/$IFACE" ]; then
  run systemctl restart passby-monitor.service
else
  warn "no $IFACE yet: plug in the USB Wi-Fi adapter (or replug it); passby-monitor starts by itself"
fi

# --- 10 -----------------------------------------------------------------------------------
step "check: edge-agent doctor"
doctor=("$agent" doctor --iface "$IFACE")
[ -z "$channel" ] || doctor+=(--channel "$channel")
if ! run "${doctor[@]}"; then
  warn "doctor found a problem: each line and its fix is in $PREFIX/share/hardware/README.md (Troubleshooting)"
fi

# --- 11 -----------------------------------------------------------------------------------
step "enroll: passby-enroll.sh (stops passby-agent.path, runs edge-agent enroll, sets the permissions, starts the agent)"
enroll_cmd=("$PREFIX/lib/passby-enroll.sh" CODE --bridge "${bridge:-URL}")
[ -z "$bridge_ca" ] || enroll_cmd+=(--ca-file "$bridge_ca")
[ -z "$force" ] || enroll_cmd+=(--force)
if [ -n "$enroll" ]; then
  secret="$enroll"
  enroll_cmd[1]="$enroll"
  run "${enroll_cmd[@]}"
else
  echo "    not enrolled yet. When you have the code from the console, run:"
  echo "      sudo $(show "${enroll_cmd[@]}")"
  echo "    (it runs $agent enroll CODE ... and then starts the agent)"
fi
