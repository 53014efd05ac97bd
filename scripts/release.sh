#!/usr/bin/env bash
# Build a passby release: the wheel, the box's signed agent release and a signed bundle with
# the deploy files, for admins who install from it (copied to the server or the box).
#
#   scripts/release.sh --key release-signing.key [--out dist] [--update-url URL]
#                      [--wheelhouse DIR | --no-deps]
#
#   --key FILE         Ed25519 release signing key (make one: deploy/edge/passby_update.py keygen
#                      --out FILE; keep it off the build machine when you can). Boxes pin its
#                      public key; passby-update refuses releases signed by any other.
#   --out DIR          where to write (default dist/)
#   --update-url URL   https URL where you will publish each box release (the newest
#                      passby-edge-X.Y.Z.tar): boxes installed from this bundle check it nightly.
#                      Without it, boxes paired with a bridge ask the bridge
#                      (BRIDGE/releases/passby-edge-latest.tar, which the cloud installer fills).
#   --wheelhouse DIR   the dependency wheels for the box (cp311, aarch64) are taken from DIR
#                      instead of downloaded from PyPI (offline builds)
#   --no-deps          the box release holds only passby's own wheel (tests; a box then cannot
#                      install it offline)
#
# Writes, in OUT:
#   passby-X.Y.Z-py3-none-any.whl   the wheel (bridge: pip install 'passby-X.Y.Z-py3-none-any.whl[bridge]')
#   passby-edge-X.Y.Z.tar           the box's signed agent release (passby_update.py's format)
#   passby-X.Y.Z.tar.gz             the bundle: passby-X.Y.Z/ with the two above, deploy/,
#                                   hardware/, README.md, pyproject.toml, release-signing.pub and
#                                   BUNDLE.json (every file's SHA-256) + BUNDLE.sig (Ed25519 over
#                                   BUNDLE.json), checked by
#                                   passby_update.py verify-bundle passby-X.Y.Z --pubkey HEX
set -euo pipefail
umask 022

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/dist"
key=""
update_url=""
wheelhouse=""
deps=1
die() { echo "release.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --key) key="${2:?--key needs a file}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --update-url) update_url="${2:?--update-url needs a URL}"; shift 2 ;;
    --wheelhouse) wheelhouse="${2:?--wheelhouse needs a directory}"; shift 2 ;;
    --no-deps) deps=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[ -n "$key" ] || die "give the release signing key with --key (passby_update.py keygen --out FILE makes one)"
[ -r "$key" ] || die "cannot read the signing key $key"
case "$update_url" in ''|https://*) ;; *) die "--update-url must be an https:// URL" ;; esac
[ -z "$wheelhouse" ] || [ -d "$wheelhouse" ] || die "no wheelhouse directory $wheelhouse"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
"$py" -c 'import setuptools, cryptography' 2>/dev/null ||
  die "$py lacks setuptools or cryptography (scripts/setup.sh makes .venv with both)"
updater="$root/deploy/edge/passby_update.py"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -n 1)"
protocol="$(sed -n 's/^PROTOCOL_VERSION = \([0-9]*\)/\1/p' "$root/edge_agent/protocol.py")"
if [ -z "$version" ] || [ -z "$protocol" ]; then die "cannot read the version or the protocol version"; fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. The wheel, from the files git tracks (nothing local or generated slips in).
mkdir "$work/src" "$work/wheels"
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
  (cd "$root" && tar --null -T - -cf -) | tar -x -C "$work/src"
"$py" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/wheels" "$work/src" >/dev/null
wheel="$work/wheels/passby-$version-py3-none-any.whl"
[ -f "$wheel" ] || die "the build made no $wheel"
echo "release: built $(basename "$wheel")"

# 2. The box's agent release: passby's wheel and its dependencies for the Pi (offline install).
if [ "$deps" = 1 ]; then
  src=(--platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform linux_aarch64
    --python-version 3.11 --implementation cp --only-binary=:all: --find-links "$work/wheels")
  if [ -n "$wheelhouse" ]; then src+=(--no-index --find-links "$wheelhouse"); fi
  "$py" -m pip download --quiet --dest "$work/wheels" "${src[@]}" "passby[edge]==$version"
fi
"$py" "$updater" build --version "$version" --protocol "$protocol" --key "$key" \
  --out "$out/passby-edge-$version.tar" "$work/wheels"/*.whl
cp "$wheel" "$out/"

# 3. The bundle: what an admin copies to a server or a box, signed as a whole.
name="passby-$version"
b="$work/$name"
mkdir -p "$b"
cp "$wheel" "$out/passby-edge-$version.tar" "$b/"
(cd "$work/src" && cp -R deploy hardware README.md pyproject.toml "$b/")
"$py" - "$key" "$b/release-signing.pub" <<'PY'
import sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519
raw = bytes.fromhex(Path(sys.argv[1]).read_text().strip())
pub = ed25519.Ed25519PrivateKey.from_private_bytes(raw).public_key()
Path(sys.argv[2]).write_text(pub.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw).hex() + "\n")
PY
"$py" "$updater" sign-bundle "$b" --key "$key" --version "$version" --protocol "$protocol" \
  ${update_url:+--update-url "$update_url"}
tar -C "$work" --owner=0 --group=0 --numeric-owner -czf "$out/$name.tar.gz.part" "$name"
mv "$out/$name.tar.gz.part" "$out/$name.tar.gz"
echo "release: $out/$name.tar.gz (bundle), $out/passby-edge-$version.tar (box), $out/$(basename "$wheel")"
echo "release: public key $(cat "$b/release-signing.pub")"
