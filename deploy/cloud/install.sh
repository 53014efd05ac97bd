#!/usr/bin/env bash
# Install the passby cloud side on one Debian 12 server: Mosquitto with TLS and per-sensor
# ACLs, the bridge (console + API on 127.0.0.1:8080), nightly backups, optionally PostgreSQL.
#
#   sudo deploy/cloud/install.sh --domain mqtt.example.com --provider twilio --provider-account ACxxx \
#        --provider-secret-file /root/twilio.token [--public-url https://bridge.example.com] [--postgres [--workers N]]
#
# Run it from an unpacked signed release bundle (scripts/release.sh: passby-X.Y.Z/): the bundle
# is verified (BUNDLE.sig, against --release-key HEX or the bundle's release-signing.pub), the
# bridge is installed from its wheel, and its box release is put where the bridge serves it
# (STATE/releases/, GET /releases/passby-edge-latest.tar: the boxes' nightly update). From a
# git checkout it installs the checkout.
#
# Options:
#   --domain NAME       DNS name sensors use for the broker (goes into the TLS certificate)
#   --public-url URL    HTTPS URL of the console/API (nginx in front, see nginx-passby.conf);
#                       default https://DOMAIN
#   --postgres          also install PostgreSQL 15 with a passby role and database, and its backup;
#                       the bridge.toml written uses it (peer authentication over the local socket)
#   --workers N         run N bridge workers on that database (needs --postgres; default 1):
#                       passby-bridge.service is worker 1 (with the console), N > 1 adds
#                       passby-bridge-worker@2..N.service (see SCALE.md)
#   --provider KIND     the SMS provider: twilio, smsc (SMSC.ru), http (a generic gateway; finish
#                       its [provider.http] section by hand) or sandbox (records messages, sends
#                       none: trials only). Required when bridge.toml is new: the bridge refuses
#                       to start without a provider, so that it never quietly sends nothing.
#   --provider-account ID  twilio: the Account SID (AC...); smsc: the login; http: the send URL
#   --provider-secret-file FILE  twilio: the auth token; smsc: the password; http: the bearer
#                       token. Copied to /etc/passby/provider.secret (0640 root:passby); a secret
#                       never goes on the command line or into bridge.toml
#   --release-key HEX   the release public key the bundle must be signed with (default: the
#                       bundle's release-signing.pub; compare it with the one published)
#   --dry-run           print every step and command; change nothing (no root needed)
#   --destdir DIR       write files under DIR and print, not run, system commands (packaging, tests)
#   -h, --help
#
# Layout: /opt/passby/{releases/VERSION/venv,current,lib}, /etc/passby (bridge.toml, secrets;
# root:passby 2750), /var/lib/passby-bridge (database, keys), /var/backups/passby (0700),
# /etc/mosquitto/conf.d/passby.conf, /etc/mosquitto/certs, /etc/mosquitto/passby (password and
# ACL files that `cloud-bridge sensors add` maintains).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

PREFIX=/opt/passby
ETC=/etc/passby
STATE=/var/lib/passby-bridge
BACKUPS=/var/backups/passby
AUTH=/etc/mosquitto/passby
SERVICE_USER=passby
PACKAGES=(mosquitto mosquitto-clients sqlite3 openssl python3 python3-venv python3-cryptography ca-certificates)
UNITS=(passby-bridge.service passby-bridge-worker@.service passby-mosquitto-reload.path
  passby-mosquitto-reload.service passby-backup.service passby-backup.timer passby-backup-postgres.service passby-backup-postgres.timer)
ENABLE=(passby-mosquitto-reload.path passby-backup.timer passby-bridge.service)
HELPERS=(backup-sqlite.sh restore-sqlite.sh backup-postgres.sh restore-postgres.sh broker-files.bash tls-setup.sh)
TOTAL=11
MAX_WORKERS=64
# The store install.sh --postgres makes: database passby, OS user passby = role passby (peer).
PG_DATABASE="postgresql:///passby?host=/var/run/postgresql"

dry=0
destdir=""
domain=""
public_url=""
postgres=0
workers=1
release_key=""
provider=""
provider_account=""
provider_secret_file=""

die() { echo "install.sh: error: $*" >&2; exit 1; }
warn() { echo "install.sh: warning: $*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --domain) domain="${2:?--domain needs a DNS name}"; shift 2 ;;
    --public-url) public_url="${2:?--public-url needs a URL}"; shift 2 ;;
    --postgres) postgres=1; shift ;;
    --workers) workers="${2:?--workers needs a number}"; shift 2 ;;
    --release-key) release_key="${2:?--release-key needs a hex key}"; shift 2 ;;
    --provider) provider="${2:?--provider needs twilio, smsc, http or sandbox}"; shift 2 ;;
    --provider-account) provider_account="${2:?--provider-account needs a value}"; shift 2 ;;
    --provider-secret-file) provider_secret_file="${2:?--provider-secret-file needs a file}"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[ -n "$domain" ] || die "--domain is required: the broker's DNS name, which sensors connect to"
[[ "$domain" =~ ^[A-Za-z0-9.-]+$ ]] || die "--domain '$domain' is not a DNS name"
public_url="${public_url:-https://$domain}"
[[ "$public_url" =~ ^https?://[A-Za-z0-9.:-]+(/.*)?$ ]] || die "--public-url '$public_url' is not an http(s) URL"
if ! [[ "$workers" =~ ^[1-9][0-9]{0,3}$ ]] || [ "$workers" -gt "$MAX_WORKERS" ]; then
  die "--workers '$workers' is not a number from 1 to $MAX_WORKERS"
fi
[ "$workers" = 1 ] || [ "$postgres" = 1 ] ||
  die "--workers $workers needs --postgres: several workers share one PostgreSQL database (a SQLite store has a single bridge process)"
[ "$postgres" = 0 ] || { PACKAGES+=(postgresql); ENABLE+=(passby-backup-postgres.timer); }
WORKER_UNITS=()
for ((n = 2; n <= workers; n++)); do WORKER_UNITS+=("passby-bridge-worker@$n.service"); done
[ -z "$destdir" ] || destdir="$(mkdir -p "$destdir" && cd "$destdir" && pwd)"
case "$provider" in
  "") [ -e "$destdir/etc/passby/bridge.toml" ] ||
    die "--provider is required for a new bridge.toml: twilio, smsc, http, or sandbox (sends nothing); the bridge refuses to start without one" ;;
  sandbox)
    [ -z "$provider_account$provider_secret_file" ] || die "--provider sandbox takes no account or secret"
    warn "--provider sandbox: messages are recorded in the database, no SMS is sent" ;;
  twilio | smsc | http)
    [ -n "$provider_account" ] || die "--provider $provider needs --provider-account ($(
      case "$provider" in twilio) echo "the Account SID, AC..." ;; smsc) echo "the SMSC.ru login" ;; http) echo "the gateway's send URL" ;; esac))"
    [ -n "$provider_secret_file" ] || die "--provider $provider needs --provider-secret-file (a file holding the $(
      case "$provider" in twilio) echo "auth token" ;; smsc) echo "password" ;; http) echo "bearer token" ;; esac))"
    { [ -r "$provider_secret_file" ] && [ -s "$provider_secret_file" ]; } ||
      die "--provider-secret-file '$provider_secret_file' is not a readable, non-empty file"
    case "$provider" in
      twilio) [[ "$provider_account" =~ ^AC[0-9a-fA-F]{32}$ ]] || die "--provider-account '$provider_account' is not a Twilio Account SID (AC and 32 hex digits)" ;;
      smsc) [[ "$provider_account" =~ ^[A-Za-z0-9_.@-]{1,64}$ ]] || die "--provider-account '$provider_account' is not an SMSC.ru login" ;;
      http) [[ "$provider_account" =~ ^https?://[^[:space:]\"]+$ ]] || die "--provider-account '$provider_account' is not an http(s) URL" ;;
    esac ;;
  *) die "--provider '$provider' is not one of twilio, smsc, http, sandbox" ;;
esac

# --- how each action happens (same helpers as deploy/edge/install.sh) ---------------------
pretend() { [ "$dry" = 1 ] || [ -n "$destdir" ]; }
step_no=0
step() { step_no=$((step_no + 1)); printf '==> [%d/%d] %s\n' "$step_no" "$TOTAL" "$*"; }
secret=""
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
run() {
  if pretend; then echo "    would run: $(show "$@")"; else echo "    + $(show "$@")"; "$@"; fi
}
put() {
  local src="$1" dest="$2" mode="$3" group="${4:-root}"
  if [ "$dry" = 1 ]; then echo "    would install: $dest (mode $mode, root:$group) from ${src#"$repo"/}"; return; fi
  install -D -m "$mode" "$src" "$destdir$dest"
  if [ -n "$destdir" ]; then echo "    installed: $destdir$dest"; else chgrp "$group" "$dest"; echo "    installed: $dest"; fi
}
write() {
  local dest="$1" mode="$2" group="$3" tmp
  tmp="$(mktemp)"; cat >"$tmp"
  if [ "$dry" = 1 ]; then
    echo "    would write: $dest (mode $mode, root:$group):"
    if [ -n "$secret" ] && grep -qF "$secret" "$tmp"; then echo "      | ***"; else sed 's/^/      | /' "$tmp"; fi
    rm -f "$tmp"; return
  fi
  put "$tmp" "$dest" "$mode" "$group"; rm -f "$tmp"
}
dir() {
  if [ "$dry" = 1 ]; then echo "    would create: $1/ (mode $2, $3)"; return; fi
  install -d -m "$2" "$destdir$1"
  if [ -z "$destdir" ]; then chown "$3" "$1"; fi
}
exists() { [ -e "$destdir$1" ]; }
# The [provider] section of a new bridge.toml: the kind, the account, and the secret's file.
provider_section() {
  printf '\n# The SMS provider (install.sh --provider); the secret lives in %s.\n[provider]\nkind = "%s"\n' \
    "$ETC/provider.secret" "$provider"
  case "$provider" in
    twilio) printf '\n[provider.twilio]\naccount_sid = "%s"\nauth_token_file = "%s"\n' "$provider_account" "$ETC/provider.secret" ;;
    smsc) printf '\n[provider.smsc]\nlogin = "%s"\npassword_file = "%s"\n' "$provider_account" "$ETC/provider.secret" ;;
    http) printf '\n[provider.http]\nurl = "%s"\ntoken_file = "%s"\n' "$provider_account" "$ETC/provider.secret" ;;
  esac
}

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml" | head -n 1)"
bridge="$PREFIX/current/venv/bin/cloud-bridge"
# A signed release bundle (scripts/release.sh) instead of a checkout.
bundle=""
bundle_field() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$repo/BUNDLE.json" | head -n 1; }
if [ -f "$repo/BUNDLE.json" ]; then
  bundle="$repo"
  version="$(bundle_field version)"
  protocol="$(bundle_field protocol)"
  box_release="$repo/$(bundle_field box_release)"
  wheel="$repo/passby-$version-py3-none-any.whl"
  [ -n "$release_key" ] || release_key="$(tr -d '[:space:]' <"$repo/release-signing.pub")"
  source_spec="${wheel}[bridge]"
else
  protocol="$(sed -n 's/^PROTOCOL_VERSION = \([0-9]*\)/\1/p' "$repo/edge_agent/protocol.py")"
  source_spec="${repo}[bridge]"
fi

# --- 1 ------------------------------------------------------------------------------------
step "preflight: Debian 12, run as root"
if ! pretend && [ "$(id -u)" != 0 ]; then die "run as root (sudo), or try --dry-run"; fi
# shellcheck source=/dev/null
codename="$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)"
[ "$codename" = bookworm ] || warn "this is '${codename:-unknown}', not Debian bookworm: package names may differ"
echo "    broker: $domain:8883 (TLS); console/API: $public_url -> 127.0.0.1:8080"
if [ -n "$bundle" ]; then
  echo "    software: signed bundle $bundle (passby $version); release key $release_key"
  echo "    compare the key with the one your release author published before you go on"
else
  echo "    software: passby $version from the checkout $repo"
fi
if [ "$postgres" = 1 ] && [ -r "$destdir$ETC/bridge.toml" ] &&
  ! grep -Eq '^database = "postgres(ql)?://' "$destdir$ETC/bridge.toml"; then
  # The installer keeps an existing bridge.toml: the bridge would go on using its SQLite store.
  [ "$workers" = 1 ] ||
    die "$ETC/bridge.toml (kept as it is) has no database = \"postgresql://...\": move the data to PostgreSQL first (SCALE.md), or leave out --workers"
  warn "$ETC/bridge.toml is kept and does not use PostgreSQL; to switch: database = \"$PG_DATABASE\" (move the data first)"
fi
if [ "$workers" -gt 1 ]; then
  echo "    bridge workers: $workers (passby-bridge.service with the console, ${WORKER_UNITS[*]})"
fi

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
dir "$BACKUPS" 0700 "$SERVICE_USER:$SERVICE_USER"
# setgid: files provisioning writes here belong to group mosquitto, which must read them.
dir "$AUTH" 2750 "$SERVICE_USER:mosquitto"
dir "$PREFIX" 0755 root:root
dir "$PREFIX/lib" 0755 root:root
dir "$PREFIX/releases" 0755 root:root

# --- 4 ------------------------------------------------------------------------------------
step "bridge software: passby $version into $PREFIX/releases/$version/venv"
if [ -n "$bundle" ]; then
  # python3-cryptography comes with the packages of step 2.
  run python3 "$here/../edge/passby_update.py" verify-bundle "$bundle" --pubkey "$release_key"
fi
venv="$PREFIX/releases/$version/venv"
run python3 -m venv "$venv"
run "$venv/bin/python" -m pip install --quiet --upgrade pip
run "$venv/bin/python" -m pip install --quiet "$source_spec"
printf '{"name": "passby", "version": "%s", "protocol": %s, "source": "%s"}\n' "$version" \
  "$protocol" "$repo" | write "$PREFIX/releases/$version/release.json" 0644 root
if [ -n "$bundle" ]; then
  # The boxes' nightly update source: GET /releases/passby-edge-latest.tar serves the newest.
  dir "$STATE/releases" 0755 "$SERVICE_USER:$SERVICE_USER"
  put "$box_release" "$STATE/releases/$(basename "$box_release")" 0644
fi
run ln -sfn "releases/$version" "$PREFIX/current"

# --- 5 ------------------------------------------------------------------------------------
step "helper scripts: ${HELPERS[*]}"
for h in "${HELPERS[@]}"; do
  put "$here/$h" "$PREFIX/lib/$h" 0755
done
put "$here/README.md" "$PREFIX/share/deploy/cloud/README.md" 0644
if [ -f "$here/SCALE.md" ]; then put "$here/SCALE.md" "$PREFIX/share/deploy/cloud/SCALE.md" 0644; fi

# --- 6 ------------------------------------------------------------------------------------
step "configuration: $ETC/bridge.toml and the bridge's broker account"
if exists "$ETC/bridge.toml"; then
  echo "    keeping the existing $ETC/bridge.toml"
  # Since issue 14 the bridge believes X-Forwarded-For only from web.trusted_proxies.
  grep -Eq '^[[:space:]]*trusted_proxies[[:space:]]*=' "$destdir$ETC/bridge.toml" ||
    warn "$ETC/bridge.toml has no web.trusted_proxies: behind nginx add trusted_proxies = [\"127.0.0.1\", \"::1\"] under [web], or every client counts as 127.0.0.1"
else
  # With --postgres the example's commented database line becomes the local database's URL.
  database="s|^# database = \"postgresql://.*|&|"
  [ "$postgres" = 0 ] || database="s|^# database = \"postgresql://.*|database = \"$PG_DATABASE\"|"
  grep -q '^# database = "postgresql://' "$here/bridge.toml.example" ||
    die "bridge.toml.example has no '# database = \"postgresql://...\"' line to set"
  # Each further worker's broker account gets the bridge's rights in the generated ACL.
  accounts="s|^# bridge_accounts = .*|&|"
  [ "$workers" = 1 ] || accounts="s|^# bridge_accounts = .*|bridge_accounts = [$(
    for ((n = 2; n <= workers; n++)); do printf '"bridge-%d"%s' "$n" "$([ "$n" = "$workers" ] || echo ', ')"; done
  )]|"
  grep -q '^# bridge_accounts = ' "$here/bridge.toml.example" ||
    die "bridge.toml.example has no '# bridge_accounts = ...' line to set"
  {
    sed -e "s|^public_url = .*|public_url = \"$public_url\"|" -e "s|^mqtt_host = .*|mqtt_host = \"$domain\"|" \
      -e "$database" -e "$accounts" "$here/bridge.toml.example"
    provider_section
  } | write "$ETC/bridge.toml" 0640 "$SERVICE_USER"
fi
if [ -n "$provider" ] && [ "$provider" != sandbox ]; then
  if [ "$dry" = 1 ]; then
    echo "    would write: $ETC/provider.secret (mode 0640, root:$SERVICE_USER) from $provider_secret_file"
  else
    write "$ETC/provider.secret" 0640 "$SERVICE_USER" <"$provider_secret_file"
  fi
fi
if exists "$ETC/bridge.toml" && ! grep -Eq '^[[:space:]]*kind[[:space:]]*=' "$destdir$ETC/bridge.toml"; then
  warn "$ETC/bridge.toml has no [provider] kind: the bridge refuses to start until one is chosen (install.sh --provider, or README: SMS providers)"
fi
if exists "$ETC/bridge-mqtt.password"; then
  echo "    keeping the existing bridge broker password"
else
  password="$(openssl rand -hex 24)"
  secret="$password"
  printf '%s\n' "$password" | write "$ETC/bridge-mqtt.password" 0640 "$SERVICE_USER"
  run touch "$AUTH/passby.passwd"
  run mosquitto_passwd -b "$AUTH/passby.passwd" bridge "$password"
fi
# Mosquitto ties a client id to its account (use_username_as_clientid), so worker N logs in as
# bridge-N (passby-bridge-worker@.service sets it), with the bridge's password.
if [ "$workers" -gt 1 ]; then
  if [ -z "${password:-}" ]; then
    if exists "$ETC/bridge-mqtt.password"; then password="$(head -n 1 "$destdir$ETC/bridge-mqtt.password")"; else password="(kept)"; fi
    secret="$password"
  fi
  for ((n = 2; n <= workers; n++)); do
    run mosquitto_passwd -b "$AUTH/passby.passwd" "bridge-$n" "$password"
  done
fi
if ! exists "$AUTH/passby.acl"; then
  # Provisioning rewrites the whole file with every sensor's block; this is the bridge's part
  # (one account per worker).
  {
    echo "# passby Mosquitto ACL: generated by 'cloud-bridge sensors'; edits are overwritten."
    for ((n = 1; n <= workers; n++)); do
      account=bridge
      [ "$n" = 1 ] || account="bridge-$n"
      printf '%s\n' "" "user $account" "topic read passby/v1/#" "topic write passby/v1/+/+/cmd/#" \
        "topic write passby/v1/+/+/receipts" "topic write passby/v1/_bridge/hello"
    done
  } | write "$AUTH/passby.acl" 0640 mosquitto
fi
run chown -R "$SERVICE_USER:mosquitto" "$AUTH"

# --- 7 ------------------------------------------------------------------------------------
step "TLS: private CA and broker certificate for $domain in /etc/mosquitto/certs"
run "$PREFIX/lib/tls-setup.sh" --name "$domain" --out /etc/mosquitto/certs --group mosquitto

# --- 8 ------------------------------------------------------------------------------------
step "Mosquitto: deploy/mosquitto/passby.conf.example as /etc/mosquitto/conf.d/passby.conf"
# Same file, with the password and ACL files in $AUTH, which the unprivileged bridge may write.
sed -e "s|^password_file .*|password_file $AUTH/passby.passwd|" -e "s|^acl_file .*|acl_file $AUTH/passby.acl|" \
  "$repo/deploy/mosquitto/passby.conf.example" | write /etc/mosquitto/conf.d/passby.conf 0644 root
run systemctl restart mosquitto.service

# --- 9 ------------------------------------------------------------------------------------
if [ "$postgres" = 1 ]; then
  step "PostgreSQL: role and database 'passby' (peer authentication over the local socket)"
  put "$here/postgresql/90-passby.conf" /etc/postgresql/15/main/conf.d/90-passby.conf 0644
  # A world-readable copy: the postgres user may not be able to read this checkout.
  put "$here/postgresql/passby.sql" "$PREFIX/share/deploy/cloud/passby.sql" 0644
  run systemctl restart postgresql.service
  run runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -f "$PREFIX/share/deploy/cloud/passby.sql"
else
  step "PostgreSQL: skipped (SQLite store; --postgres to add it)"
fi

# --- 10 -----------------------------------------------------------------------------------
step "check: cloud-bridge validate-config"
run "$bridge" validate-config "$ETC/bridge.toml"

# --- 11 -----------------------------------------------------------------------------------
step "systemd units: ${UNITS[*]}"
for unit in "${UNITS[@]}"; do
  put "$here/systemd/$unit" "/etc/systemd/system/$unit" 0644
done
run systemctl daemon-reload
run systemctl enable --now "${ENABLE[@]}"
# An upgrade: a bridge that was running moves to the release just installed (and its workers).
run systemctl try-restart passby-bridge.service
if [ "${#WORKER_UNITS[@]}" -gt 0 ]; then
  # After passby-bridge.service has started (it creates the keys in $STATE/keys on first run).
  run systemctl enable --now "${WORKER_UNITS[@]}"
fi
store=sqlite
[ "$postgres" = 0 ] || store=postgres
cat <<NEXT
    next:
      1. HTTPS for the console and rosters: deploy/cloud/nginx-passby.conf + certbot (README)
      2. add a store's sensor:   sudo -u $SERVICE_USER $bridge sensors add --store STORE -c $ETC/bridge.toml
         then on the Pi:         sudo passby-X.Y.Z/deploy/edge/install.sh --enroll CODE --bridge $public_url
                                 (the same release bundle, or a checkout: deploy/edge/README.md)
      3. backups:                systemctl list-timers 'passby-*'; restore with $PREFIX/lib/restore-$store.sh
NEXT
if [ "$workers" -gt 1 ]; then
  echo "      4. workers:                systemctl status 'passby-bridge*'; they restart with passby-bridge.service"
fi
