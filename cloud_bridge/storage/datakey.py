"""The bridge's data key: AES-GCM for MACs at rest, keyed lookup hashes for dedupe and search.

One 32-byte master key, from ``PASSBY_DATA_KEY`` (64 hex digits) or ``data_dir/keys/data.key``
(hex, created with mode 0600 on first use). Purpose keys are derived from it with HKDF-SHA256,
so the AES key, the lookup-hash key and the code-hash key are independent. ``key_id`` (first 16
hex of an HMAC over a fixed label) lets the store notice a database opened with the wrong key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["DataKeyError", "DataCipher", "load_data_key", "ENV_VAR", "KEY_FILE"]

ENV_VAR = "PASSBY_DATA_KEY"
KEY_FILE = "data.key"
_NONCE = 12
_MAC_AAD = b"passby.mac/1"


class DataKeyError(ValueError):
    """The data key is missing, malformed, or not the key this database was written with."""


def _parse(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise DataKeyError(f"{where} is not hex") from None
    if len(key) != 32:
        raise DataKeyError(f"{where} must be 32 bytes (64 hex digits), got {len(key)} bytes")
    return key


def load_data_key(keys_dir: Path, env: dict[str, str] | None = None) -> bytes:
    """The master data key: the environment wins, else the key file (created on first use)."""
    environ = os.environ if env is None else env
    if environ.get(ENV_VAR):
        return _parse(environ[ENV_VAR], ENV_VAR)
    path = keys_dir / KEY_FILE
    if not path.exists():
        # whole or not at all (a temporary file linked into place): processes starting
        # together never read a half-written key, and the first one's key wins
        keys_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=keys_dir, prefix=f".{KEY_FILE}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: theirs
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return _parse(path.read_text(encoding="ascii"), str(path))


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)


class DataCipher:
    """MAC encryption and keyed lookup hashes; holds only derived keys."""

    __slots__ = ("_aes", "_lookup", "_code", "key_id")

    def __init__(self, master: bytes) -> None:
        if len(master) != 32:
            raise DataKeyError("the data key must be 32 bytes")
        self._aes = AESGCM(_derive(master, b"passby aes-gcm mac/1"))
        self._lookup = _derive(master, b"passby lookup hmac/1")
        self._code = _derive(master, b"passby code hmac/1")
        self.key_id = hmac.new(master, b"passby key id/1", hashlib.sha256).hexdigest()[:16]

    # MACs -------------------------------------------------------------------------------
    def encrypt_mac(self, mac: bytes) -> bytes:
        """nonce(12) + AES-GCM ciphertext+tag of the 6 raw bytes."""
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aes.encrypt(nonce, mac, _MAC_AAD)

    def decrypt_mac(self, blob: bytes) -> bytes:
        try:
            return self._aes.decrypt(blob[:_NONCE], blob[_NONCE:], _MAC_AAD)
        except InvalidTag:
            raise DataKeyError("a stored MAC does not decrypt: wrong data key?") from None

    def mac_lookup(self, mac: bytes) -> str:
        """Keyed hash of a MAC, the same for every spelling of it (input is the raw bytes)."""
        return self.lookup("mac", mac.hex())

    # other identifiers ------------------------------------------------------------------
    def lookup(self, kind: str, value: str) -> str:
        """Keyed hash of an identifier (``phone`` E.164, ``crm`` id, ``mac`` hex, ``ip``)."""
        msg = kind.encode() + b"\0" + value.encode("utf-8")
        return hmac.new(self._lookup, msg, hashlib.sha256).hexdigest()

    def code_hash(self, enrolment_id: str, code: str) -> str:
        """A one-time code is stored only as this keyed hash, bound to its enrolment."""
        msg = enrolment_id.encode() + b"\0" + code.encode()
        return hmac.new(self._code, msg, hashlib.sha256).hexdigest()

    # opaque tokens (e.g. the device in a portal form) ----------------------------------
    def seal(self, data: bytes, purpose: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aes.encrypt(nonce, data, b"passby.seal/1 " + purpose)

    def unseal(self, blob: bytes, purpose: bytes) -> bytes:
        try:
            return self._aes.decrypt(blob[:_NONCE], blob[_NONCE:], b"passby.seal/1 " + purpose)
        except (InvalidTag, ValueError):
            raise DataKeyError("token does not open under this key") from None
