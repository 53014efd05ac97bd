#!/usr/bin/env python3
"""Signed agent releases for the sensor box: build, verify, install with health check and rollback.

A release is one tar file (optionally gzipped)::

    manifest.json   {"format": "passby-release/1", "name": "passby", "version": "0.2.0",
                     "protocol": 1, "requirement": "passby[edge]==0.2.0", "created": "...Z",
                     "files": {"wheels/passby-0.2.0-py3-none-any.whl": "<sha256 hex>", ...}}
    manifest.sig    Ed25519 signature over the exact bytes of manifest.json (64 bytes)
    wheels/*.whl    the agent and every dependency for the box (cp311, aarch64), so the box
                    installs offline with ``pip --no-index``

Before anything is written outside the download cache we check: the signature against the
pinned public key (``/etc/passby/release-signing.pub``, hex), the format, a version strictly
newer than the installed one (no downgrade unless asked), the protocol version (the bridge
must be upgraded first when it changes), every file's SHA-256, and that the tar holds nothing
else (no links, no paths outside ``wheels/``).

Install: a new venv in ``PREFIX/releases/VERSION``, ``pip --no-index`` from the verified wheels,
a smoke test (``edge-agent version`` prints VERSION), an atomic switch of the ``PREFIX/current``
symlink, a restart of the service, and a health check (``systemctl is-active``: the agent is
``Type=notify``, so it is active only after it said READY). If it does not become active, the
symlink goes back to the previous release and that is restarted. Two releases are kept.

Every install writes ``PREFIX/update-status.json`` (mode 0644: the agent reports it in its
stats, so a failed update shows on the console's fleet page): ``result`` ``ok`` or ``failed``,
the ``version`` tried, the ``current`` one, a short ``error`` and the time. A release that did
not become healthy is remembered in ``PREFIX/failed-releases.json`` and not installed again
(it is still downloaded and verified, then skipped) until a newer version is published, or
with ``--retry-failed``.

Needs only the standard library and ``cryptography`` (Debian: python3-cryptography), so the
system ``python3`` runs it even when the installed agent is broken.

    passby_update.py keygen --out release-signing.key          # prints the public key (hex)
    passby_update.py build --version 0.2.0 --key release-signing.key --out passby-edge-0.2.0.tar WHEEL...
    passby_update.py verify passby-edge-0.2.0.tar --pubkey-file /etc/passby/release-signing.pub
    passby_update.py install passby-edge-0.2.0.tar|https://... --pubkey-file ... [--restart passby-agent.service]
    passby_update.py rollback [--restart passby-agent.service]
    passby_update.py status

A release *bundle* (scripts/release.sh) is a directory ``passby-X.Y.Z/`` for admins: the wheel,
the box release above, the deploy files, ``release-signing.pub``, and ``BUNDLE.json`` (format
``passby-bundle/1``: version, protocol, the box release's name, an optional update URL, every
file's SHA-256) with ``BUNDLE.sig``, an Ed25519 signature over its exact bytes by the same key::

    passby_update.py sign-bundle DIR --key release-signing.key --version 0.2.0 --protocol 1 [--update-url URL]
    passby_update.py verify-bundle DIR [--pubkey HEX | --pubkey-file FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "passby-release/1"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
WHEEL_NAME = re.compile(r"^wheels/[A-Za-z0-9_.+-]+\.whl$")
VERSION = re.compile(r"^\d+(\.\d+){0,3}$")
MAX_MANIFEST = 1 << 20
MAX_RELEASE = 512 << 20
DEFAULT_PREFIX = Path("/opt/passby")
DEFAULT_PUBKEY = Path("/etc/passby/release-signing.pub")
KEEP = 2
STATUS_FILE = "update-status.json"
FAILED_FILE = "failed-releases.json"
MAX_ERROR = 300


class ReleaseError(Exception):
    """A release that must not be installed, or an install that failed; the message says why."""


# keys ---------------------------------------------------------------------------------------
def _ed25519():  # type: ignore[no-untyped-def]
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ReleaseError(
            "the Python 'cryptography' package is missing: apt-get install python3-cryptography"
        ) from None
    return ed25519


def load_public_key(text: str):  # type: ignore[no-untyped-def]
    """An Ed25519 public key from 64 hex digits (surrounding whitespace ignored)."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise ReleaseError("release public key is not hex") from None
    if len(raw) != 32:
        raise ReleaseError(f"release public key must be 32 bytes (64 hex digits), got {len(raw)}")
    return _ed25519().Ed25519PublicKey.from_public_bytes(raw)


def keygen(out: Path) -> str:
    """Write a new private key (hex, mode 0600, never overwritten); return the public key hex."""
    ed = _ed25519()
    from cryptography.hazmat.primitives import serialization as ser

    key = ed.Ed25519PrivateKey.generate()
    raw = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(raw.hex() + "\n")
    return key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw).hex()


def _private_key(path: Path):  # type: ignore[no-untyped-def]
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"cannot read private key {path}: {exc}") from None
    return _ed25519().Ed25519PrivateKey.from_private_bytes(raw)


# versions -----------------------------------------------------------------------------------
def parse_version(v: str) -> tuple[int, ...]:
    if not isinstance(v, str) or not VERSION.match(v):
        raise ReleaseError(f"version {v!r} is not N[.N[.N[.N]]]")
    return tuple(int(p) for p in v.split("."))


# build --------------------------------------------------------------------------------------
def build(
    version: str, protocol: int, key: Path, wheels: list[Path], out: Path, requirement: str = ""
) -> dict[str, Any]:
    """Write a signed release tar; returns its manifest."""
    parse_version(version)
    if not any(w.name.startswith(f"passby-{version}-") for w in wheels):
        raise ReleaseError(f"no passby-{version}-*.whl among the wheels")
    files = {}
    for w in wheels:
        name = f"wheels/{w.name}"
        if not WHEEL_NAME.match(name):
            raise ReleaseError(f"bad wheel file name {w.name!r}")
        files[name] = hashlib.sha256(w.read_bytes()).hexdigest()
    manifest = {
        "format": FORMAT,
        "name": "passby",
        "version": version,
        "protocol": protocol,
        "requirement": requirement or f"passby[edge]=={version}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    sig = _private_key(key).sign(body)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, data in ((MANIFEST, body), (SIGNATURE, sig)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        for w in wheels:
            tar.add(w, arcname=f"wheels/{w.name}", recursive=False)
    os.replace(tmp, out)
    return manifest


# verify -------------------------------------------------------------------------------------
@dataclass
class Release:
    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    out: dict[str, tarfile.TarInfo] = {}
    total = 0
    for m in tar.getmembers():
        if not m.isfile():
            raise ReleaseError(f"release member {m.name!r} is not a regular file")
        if m.name not in (MANIFEST, SIGNATURE) and not WHEEL_NAME.match(m.name):
            raise ReleaseError(f"unexpected release member {m.name!r}")
        if m.name in out:
            raise ReleaseError(f"release member {m.name!r} appears twice")
        total += m.size
        if total > MAX_RELEASE:
            raise ReleaseError("release is larger than 512 MB")
        out[m.name] = m
    for need in (MANIFEST, SIGNATURE):
        if need not in out:
            raise ReleaseError(f"release has no {need}")
    if out[MANIFEST].size > MAX_MANIFEST:
        raise ReleaseError("manifest.json is too large")
    return out


def _read(tar: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(m)
    assert fh is not None  # regular files only, checked in _members
    return fh.read()


def _sha256(tar: tarfile.TarFile, m: tarfile.TarInfo) -> str:
    fh = tar.extractfile(m)
    assert fh is not None
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def verify(path: Path, public_key_hex: str) -> Release:
    """Check signature, format and every file; ReleaseError says what is wrong."""
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as exc:
        raise ReleaseError(f"{path}: not a release tar: {exc}") from None
    with tar:
        members = _members(tar)
        body = _read(tar, members[MANIFEST])
        sig = _read(tar, members[SIGNATURE])
        from cryptography.exceptions import InvalidSignature

        try:
            load_public_key(public_key_hex).verify(sig, body)
        except InvalidSignature:
            raise ReleaseError(
                f"{path}: bad signature: manifest.json was not signed by the pinned release key"
            ) from None
        try:
            manifest = json.loads(body)
        except ValueError as exc:
            raise ReleaseError(f"{path}: manifest.json is not JSON: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise ReleaseError(f"{path}: unknown release format {manifest.get('format')!r}")
        parse_version(manifest.get("version"))
        if not isinstance(manifest.get("protocol"), int):
            raise ReleaseError(f"{path}: manifest has no protocol version")
        want = re.compile(rf"^passby(\[[a-z,]+\])?=={re.escape(manifest['version'])}$")
        if not want.match(str(manifest.get("requirement", ""))):
            raise ReleaseError(f"{path}: requirement must be passby[...]=={manifest['version']}")
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise ReleaseError(f"{path}: manifest lists no files")
        present = set(members) - {MANIFEST, SIGNATURE}
        if present != set(files):
            extra, missing = sorted(present - set(files)), sorted(set(files) - present)
            raise ReleaseError(f"{path}: files not as signed: extra {extra}, missing {missing}")
        for name, digest in files.items():
            if _sha256(tar, members[name]) != digest:
                raise ReleaseError(f"{path}: {name} does not match its signed SHA-256")
    return Release(path, manifest)


# bundles ------------------------------------------------------------------------------------
BUNDLE_FORMAT = "passby-bundle/1"
BUNDLE, BUNDLE_SIG = "BUNDLE.json", "BUNDLE.sig"


def _bundle_files(directory: Path) -> dict[str, Path]:
    """Every file under ``directory`` but the manifest and its signature; links refused."""
    out: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink():
            raise ReleaseError(f"{directory}: {rel} is a symbolic link")
        if path.is_dir():
            continue
        if not path.is_file():
            raise ReleaseError(f"{directory}: {rel} is not a regular file")
        if rel not in (BUNDLE, BUNDLE_SIG):
            out[rel] = path
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sign_bundle(
    directory: Path, key: Path, version: str, protocol: int, update_url: str = ""
) -> dict[str, Any]:
    """Write BUNDLE.json and BUNDLE.sig for the files in ``directory``; returns the manifest."""
    parse_version(version)
    box = f"passby-edge-{version}.tar"
    if not (directory / box).is_file():
        raise ReleaseError(f"{directory}: no box release {box}")
    if update_url and not update_url.startswith("https://"):
        raise ReleaseError("the update URL must be https://")
    files = {rel: _file_sha256(p) for rel, p in _bundle_files(directory).items()}
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "name": "passby",
        "version": version,
        "protocol": protocol,
        "box_release": box,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    if update_url:
        manifest["update_url"] = update_url
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    (directory / BUNDLE).write_bytes(body)
    (directory / BUNDLE_SIG).write_bytes(_private_key(key).sign(body))
    return manifest


def verify_bundle(directory: Path, public_key_hex: str) -> dict[str, Any]:
    """Check a bundle's signature, that it holds exactly the signed files, and its box release
    (verify()); returns the manifest. ReleaseError says what is wrong."""
    try:
        body = (directory / BUNDLE).read_bytes()
        sig = (directory / BUNDLE_SIG).read_bytes()
    except OSError as exc:
        raise ReleaseError(f"{directory}: not a release bundle: {exc}") from None
    from cryptography.exceptions import InvalidSignature

    try:
        load_public_key(public_key_hex).verify(sig, body)
    except InvalidSignature:
        raise ReleaseError(
            f"{directory}: bad signature: BUNDLE.json was not signed by the release key"
        ) from None
    manifest = json.loads(body)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ReleaseError(f"{directory}: unknown bundle format {manifest.get('format')!r}")
    parse_version(manifest.get("version"))
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ReleaseError(f"{directory}: BUNDLE.json lists no files")
    present = _bundle_files(directory)
    if set(present) != set(files):
        extra, missing = sorted(set(present) - set(files)), sorted(set(files) - set(present))
        raise ReleaseError(f"{directory}: files not as signed: extra {extra}, missing {missing}")
    for rel, digest in files.items():
        if _file_sha256(present[rel]) != digest:
            raise ReleaseError(f"{directory}: {rel} does not match its signed SHA-256")
    box = verify(directory / str(manifest.get("box_release")), public_key_hex)
    if box.version != manifest["version"]:
        raise ReleaseError(
            f"{directory}: box release {box.version} in bundle {manifest['version']}"
        )
    return dict(manifest)


# install ------------------------------------------------------------------------------------
def fetch(source: str, cache: Path) -> Path:
    """A local path as is; an https URL downloaded into ``cache``."""
    if "://" not in source:
        return Path(source)
    if not source.startswith("https://"):
        raise ReleaseError(f"refusing {source}: only https:// URLs or local files")
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / "download.tar"
    tmp = cache / "download.tar.part"
    with urllib.request.urlopen(source, timeout=60) as resp, open(tmp, "wb") as fh:  # noqa: S310
        size = 0
        for chunk in iter(lambda: resp.read(1 << 20), b""):
            size += len(chunk)
            if size > MAX_RELEASE:
                raise ReleaseError(f"{source}: larger than 512 MB")
            fh.write(chunk)
    os.replace(tmp, dest)
    return dest


def installed(prefix: Path) -> dict[str, Any] | None:
    """release.json of the current release, or None on a fresh box."""
    try:
        return dict(json.loads((prefix / "current" / "release.json").read_text()))
    except (OSError, ValueError):
        return None


def _switch(prefix: Path, version: str) -> None:
    """Point PREFIX/current at releases/VERSION atomically (rename over the old symlink)."""
    tmp = prefix / "current.new"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(f"releases/{version}", tmp)
    os.replace(tmp, prefix / "current")


def _run(cmd: list[str], what: str, timeout: float = 900) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReleaseError(f"{what} failed: {exc}") from None
    if res.returncode != 0:
        raise ReleaseError(
            f"{what} failed ({res.returncode}): {(res.stderr or res.stdout)[-2000:]}"
        )
    return res.stdout


def _healthy(systemctl: str, unit: str, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        state = subprocess.run(
            [systemctl, "is-active", unit], capture_output=True, text=True, check=False
        ).stdout.strip()
        if state == "active":
            return True
        if state in ("failed", "inactive") or time.monotonic() > deadline:
            return False
        time.sleep(1.0)


def _prune(prefix: Path, keep: list[str]) -> None:
    for d in (prefix / "releases").iterdir():
        if d.name not in keep and d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)


def _build_release(release: Release, dest: Path, python: str, log: Callable[[str], None]) -> None:
    """Unpack the verified wheels, make the venv, pip install offline, smoke test."""
    new = release.version
    wheels = dest / "wheels"
    wheels.mkdir(parents=True)
    with tarfile.open(release.path, "r:*") as tar:
        for name, digest in release.manifest["files"].items():
            data = _read(tar, tar.getmember(name))
            if hashlib.sha256(data).hexdigest() != digest:  # the file changed since verify
                raise ReleaseError(f"{name} changed while installing")
            (dest / name).write_bytes(data)
    log(f"installing passby {new} into {dest}")
    _run([python, "-m", "venv", str(dest / "venv")], "creating the venv")
    _run(
        [
            str(dest / "venv" / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-cache-dir",
            "--find-links",
            str(wheels),
            release.manifest["requirement"],
        ],
        "pip install",
    )
    said = _run([str(dest / "venv" / "bin" / "edge-agent"), "version"], "smoke test").strip()
    if said != new:
        raise ReleaseError(f"smoke test: edge-agent version says {said!r}, expected {new!r}")
    meta = {k: v for k, v in release.manifest.items() if k != "files"}
    meta["installed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (dest / "release.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(wheels)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_status(prefix: Path = DEFAULT_PREFIX) -> dict[str, Any]:
    """The last install's outcome (PREFIX/update-status.json), {} if none yet."""
    return _read_json(prefix / STATUS_FILE)


def _report(prefix: Path, result: str, version: str | None, error: str = "") -> None:
    now = installed(prefix)
    status = {
        "result": result,
        "version": version,
        "current": now.get("version") if now else None,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if error:
        status["error"] = error if len(error) <= MAX_ERROR else error[: MAX_ERROR - 3] + "..."
    try:
        prefix.mkdir(parents=True, exist_ok=True)
        _write_json(prefix / STATUS_FILE, status)
    except OSError:
        pass  # reporting must never hide the install's own outcome


def install(
    source: str,
    public_key_hex: str,
    prefix: Path = DEFAULT_PREFIX,
    *,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
    **kw: Any,
) -> str:
    """Verify and install a release (see ``_install``) and record the outcome in
    PREFIX/update-status.json; a release that failed its health check before is skipped unless
    ``retry_failed``. Returns the version now current."""
    tried: list[str] = []
    try:
        version = _install(
            source, public_key_hex, prefix, log=log, retry_failed=retry_failed, tried=tried, **kw
        )
    except ReleaseError as exc:
        _report(prefix, "failed", tried[0] if tried else None, str(exc))
        raise
    if tried and tried[0] == "skipped":
        return version
    _report(prefix, "ok", version)
    return version


def _install(
    source: str,
    public_key_hex: str,
    prefix: Path = DEFAULT_PREFIX,
    *,
    retry_failed: bool = False,
    tried: list[str] | None = None,
    python: str = "/usr/bin/python3",
    restart: str | None = None,
    systemctl: str = "systemctl",
    health_s: float = 90.0,
    allow_downgrade: bool = False,
    allow_protocol_change: bool = False,
    log: Callable[[str], None] = print,
) -> str:
    """Verify and install a release; returns the version now current."""
    tried = [] if tried is None else tried
    release = verify(fetch(source, prefix / "cache"), public_key_hex)
    new = release.version
    tried.append(new)
    old = installed(prefix)
    failed = _read_json(prefix / FAILED_FILE).get(new)
    if (
        isinstance(failed, dict)
        and failed.get("created") == release.manifest.get("created")
        and not retry_failed
        and (old is None or parse_version(new) > parse_version(str(old.get("version"))))
    ):
        log(
            f"passby {new} failed its health check on {failed.get('ts')}: not trying it again "
            "until a newer release is published (--retry-failed to force)"
        )
        tried[:] = ["skipped"]
        return str(old.get("version")) if old else new
    if old is not None:
        was = str(old.get("version"))
        if parse_version(new) == parse_version(was):
            log(f"passby {new} is already installed")
            return new
        if parse_version(new) < parse_version(was) and not allow_downgrade:
            raise ReleaseError(f"refusing to downgrade {was} -> {new} (use --allow-downgrade)")
        if old.get("protocol") not in (None, release.manifest["protocol"]) and not (
            allow_protocol_change
        ):
            raise ReleaseError(
                f"release {new} speaks protocol v{release.manifest['protocol']}, the installed "
                f"agent v{old['protocol']}: upgrade the bridge first, then pass "
                "--allow-protocol-change"
            )
    dest = prefix / "releases" / new
    if dest.exists():
        shutil.rmtree(dest)  # a half-finished earlier attempt (never the current one: same version)
    try:
        _build_release(release, dest, python, log)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # never leave a half-made release behind
        raise
    previous = os.readlink(prefix / "current").split("/")[-1] if old is not None else None
    _switch(prefix, new)
    log(f"passby {new} is current" + (f" (was {previous})" if previous else ""))
    if restart:
        subprocess.run([systemctl, "restart", restart], check=False)
        if not _healthy(systemctl, restart, health_s):
            if previous is None:
                raise ReleaseError(f"{restart} did not become active with {new}")
            _switch(prefix, previous)
            subprocess.run([systemctl, "restart", restart], check=False)
            shutil.rmtree(dest, ignore_errors=True)
            error = f"{restart} did not become active with {new}; rolled back to {previous}"
            memo = _read_json(prefix / FAILED_FILE)
            memo[new] = {
                "created": release.manifest.get("created"),
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "error": error,
            }
            _write_json(prefix / FAILED_FILE, memo)
            raise ReleaseError(error)
    _prune(prefix, [new, previous] if previous else [new])
    return new


def rollback(
    prefix: Path = DEFAULT_PREFIX, restart: str | None = None, systemctl: str = "systemctl"
) -> str:
    """Switch back to the other kept release."""
    current = os.readlink(prefix / "current").split("/")[-1]
    others = sorted(
        (
            d.name
            for d in (prefix / "releases").iterdir()
            if d.name != current and (d / "release.json").exists()  # complete installs only
        ),
        key=lambda v: parse_version(v) if VERSION.match(v) else (0,),
    )
    if not others:
        raise ReleaseError("no other release to roll back to")
    _switch(prefix, others[-1])
    if restart:
        subprocess.run([systemctl, "restart", restart], check=False)
    return others[-1]


# command line -------------------------------------------------------------------------------
def _pubkey(args: argparse.Namespace) -> str:
    if args.pubkey:
        return str(args.pubkey)
    try:
        return Path(args.pubkey_file).read_text()
    except OSError as exc:
        raise ReleaseError(
            f"cannot read the release public key {args.pubkey_file}: {exc}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="make a release signing key; prints the public key")
    k.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("build", help="make a signed release tar from wheels")
    b.add_argument("--version", required=True)
    b.add_argument(
        "--protocol", type=int, required=True, help="edge_agent.protocol.PROTOCOL_VERSION"
    )
    b.add_argument("--key", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--requirement", default="")
    b.add_argument("wheels", type=Path, nargs="+")
    for name in ("verify", "install"):
        s = sub.add_parser(name)
        s.add_argument("release", help="release tar, or an https:// URL (install)")
        g = s.add_mutually_exclusive_group()
        g.add_argument("--pubkey", help="release public key, hex")
        g.add_argument("--pubkey-file", type=Path, default=DEFAULT_PUBKEY)
        if name == "install":
            s.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX)
            s.add_argument("--python", default="/usr/bin/python3", help="creates the venv")
            s.add_argument("--restart", help="systemd unit to restart and health-check")
            s.add_argument("--systemctl", default="systemctl")
            s.add_argument("--health-timeout", type=float, default=90.0)
            s.add_argument("--allow-downgrade", action="store_true")
            s.add_argument("--allow-protocol-change", action="store_true")
            s.add_argument(
                "--retry-failed",
                action="store_true",
                help="install a release even if it failed its health check before",
            )
    sb = sub.add_parser("sign-bundle", help="sign a release bundle directory (scripts/release.sh)")
    sb.add_argument("bundle", type=Path)
    sb.add_argument("--key", type=Path, required=True)
    sb.add_argument("--version", required=True)
    sb.add_argument("--protocol", type=int, required=True)
    sb.add_argument("--update-url", default="")
    vb = sub.add_parser("verify-bundle", help="check a release bundle directory")
    vb.add_argument("bundle", type=Path)
    gb = vb.add_mutually_exclusive_group()
    gb.add_argument("--pubkey", help="release public key, hex")
    gb.add_argument("--pubkey-file", type=Path, default=DEFAULT_PUBKEY)
    r = sub.add_parser("rollback", help="switch back to the previous release")
    r.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX)
    r.add_argument("--restart")
    r.add_argument("--systemctl", default="systemctl")
    st = sub.add_parser("status", help="print the installed release and the last update")
    st.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX)
    args = p.parse_args(argv)
    try:
        if args.cmd == "keygen":
            print(keygen(args.out))
        elif args.cmd == "build":
            m = build(
                args.version, args.protocol, args.key, args.wheels, args.out, args.requirement
            )
            print(f"{args.out}: passby {m['version']}, {len(m['files'])} file(s), signed")
        elif args.cmd == "verify":
            rel = verify(Path(args.release), _pubkey(args))
            print(
                f"{args.release}: OK, passby {rel.version} (protocol v{rel.manifest['protocol']})"
            )
        elif args.cmd == "install":
            install(
                args.release,
                _pubkey(args),
                args.prefix,
                python=args.python,
                restart=args.restart,
                systemctl=args.systemctl,
                health_s=args.health_timeout,
                allow_downgrade=args.allow_downgrade,
                allow_protocol_change=args.allow_protocol_change,
                retry_failed=args.retry_failed,
            )
        elif args.cmd == "sign-bundle":
            m = sign_bundle(args.bundle, args.key, args.version, args.protocol, args.update_url)
            print(f"{args.bundle}: passby {m['version']}, {len(m['files'])} file(s), signed")
        elif args.cmd == "verify-bundle":
            m = verify_bundle(args.bundle, _pubkey(args))
            print(f"{args.bundle}: OK, passby {m['version']} (protocol v{m['protocol']})")
        elif args.cmd == "rollback":
            print(f"rolled back to {rollback(args.prefix, args.restart, args.systemctl)}")
        elif args.cmd == "status":
            print(
                json.dumps(
                    {
                        "installed": installed(args.prefix),
                        "last_update": update_status(args.prefix),
                    },
                    indent=2,
                    sort_keys=True,
                )
            )
    except ReleaseError as exc:
        print(f"passby-update: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
