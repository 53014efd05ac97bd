"""The bridge's own secrets: roster-signing key and subject key, created once with mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["BridgeKeys"]


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


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
