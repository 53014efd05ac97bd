"""The bridge's own secrets: roster-signing key and subject key, created once with mode 0600."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["BridgeKeys"]


def _write_secret(path: Path, data: bytes) -> None:
    """Create the key file whole or not at all: written to a private temporary file, then
    hard-linked into place. Bridge workers starting together never read a half-written key;
    if another one got there first, its key is kept and ours dropped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


class BridgeKeys:
    """Keys under ``data_dir/keys``; generated on first use, never logged."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "keys"
        signing = self.dir / "roster-signing.key"
        subject = self.dir / "subject.key"
        if not signing.exists():
            key = Ed25519PrivateKey.generate()
            _write_secret(
                signing,
                key.private_bytes(
                    serialization.Encoding.Raw,
                    serialization.PrivateFormat.Raw,
                    serialization.NoEncryption(),
                ),
            )
        if not subject.exists():
            _write_secret(subject, secrets.token_bytes(32))
        self.signing_key = Ed25519PrivateKey.from_private_bytes(signing.read_bytes())
        self.subject_key = subject.read_bytes()

    def public_key_hex(self) -> str:
        return (
            self.signing_key.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex()
        )
