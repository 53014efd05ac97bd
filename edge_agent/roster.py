"""Roster: the enrolled devices as keyed hashes, signed by the bridge, looked up per frame.

A roster never holds a MAC. Each entry maps ``blake2b(mac, key=site_key, digest_size=8)`` to a
pseudonymous subject id (a 64-bit keyed hash of the CRM id made with a key only the bridge has).
Without the site key the hashes cannot be tested against MACs; without the bridge's subject key
the subjects cannot be linked to customers.

File format (``passby.roster/1``)::

    b"PBROSTER1\\n"  header JSON (one line, UTF-8) b"\\n"  body  signature(64)

The header holds ``format``, ``store_id``, ``version`` (strictly increasing per store),
``created`` (epoch seconds), ``count`` and ``key_id`` (first 16 hex of the SHA-256 of the
signing public key, so a sensor names the key it expected when a roster is refused).

``body`` is ``count`` sorted big-endian pairs ``(mac_hash u64, subject u64)``; the Ed25519
signature covers everything before it. Sorted 64-bit arrays keep 1 M entries in 16 MB and a
lookup is a C-level binary search; a small memo answers the MACs seen a moment ago.
"""

from __future__ import annotations

import hashlib
import json
import operator
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FORMAT",
    "RosterError",
    "RosterHeader",
    "Roster",
    "parse_mac",
    "mac_hash",
    "subject_id",
    "build_roster",
    "load_roster",
    "key_id",
]

FORMAT = "passby.roster/1"
MAGIC = b"PBROSTER1\n"
SIG_LEN = 64
_LITTLE_ENDIAN = array("Q", [1]).tobytes()[0] == 1
MEMO_LIMIT = 4096  # recently seen MACs; a busy channel has a few hundred distinct transmitters


class RosterError(ValueError):
    """A roster file that is malformed, unsigned, signed by another key, or for another store."""


def parse_mac(s: str) -> bytes:
    """Six raw bytes from 'aa:bb:cc:dd:ee:ff' (also '-' separated, or 12 bare hex digits).

    The one reading of a written MAC that both sides apply before ``mac_hash``."""
    text = s.strip().lower()
    parts = text.replace("-", ":").split(":")
    if len(parts) == 6 and all(len(p) == 2 for p in parts):
        text = "".join(parts)
    if len(text) != 12 or not all(c in "0123456789abcdef" for c in text):
        raise ValueError(f"not a MAC address: {s!r}")
    return bytes.fromhex(text)


def mac_hash(site_key: bytes, mac: bytes) -> int:
    """The 64-bit keyed hash of a 6-byte MAC under a store's site key."""
    return int.from_bytes(hashlib.blake2b(mac, key=site_key, digest_size=8).digest(), "big")


def subject_id(subject_key: bytes, crm_id: str) -> str:
    """The pseudonymous subject id of a customer: 16 hex chars, meaningless without the key."""
    return hashlib.blake2b(crm_id.encode("utf-8"), key=subject_key, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class RosterHeader:
    format: str
    store_id: str
    version: int
    created: float
    count: int
    key_id: str


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short id of a signing key (first 16 hex of SHA-256 of the raw public key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Roster:
    """Sorted keyed-hash -> subject table with a memo of recently seen MACs."""

    __slots__ = ("header", "_site_key", "_keys", "_subjects", "_memo")

    def __init__(
        self, header: RosterHeader, site_key: bytes, keys: array[int], subjects: array[int]
    ) -> None:
        if len(keys) != len(subjects):
            raise RosterError("roster keys and subjects differ in length")
        self.header = header
        self._site_key = site_key
        self._keys = keys
        self._subjects = subjects
        self._memo: dict[bytes, str | None] = {}

    @classmethod
    def empty(cls, store_id: str = "", site_key: bytes = b"\0" * 16) -> Roster:
        header = RosterHeader(FORMAT, store_id, 0, 0.0, 0, "")
        return cls(header, site_key, array("Q"), array("Q"))

    @property
    def version(self) -> int:
        return self.header.version

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, mac: bytes) -> str | None:
        """Subject id of an enrolled MAC, or None. Unknown MACs are forgotten, never stored."""
        memo = self._memo
        if mac in memo:
            return memo[mac]
        key = mac_hash(self._site_key, mac)
        keys = self._keys
        i = bisect_left(keys, key)
        subject = f"{self._subjects[i]:016x}" if i < len(keys) and keys[i] == key else None
        if len(memo) >= MEMO_LIMIT:
            memo.clear()  # cheaper than LRU bookkeeping on the hot path; refills in a moment
        memo[mac] = subject
        return subject

    def missing_subjects(self, subjects: Iterable[str]) -> set[str]:
        """Which of these subject ids this roster does not contain (one pass over the table)."""
        wanted = {int(sid, 16): sid for sid in subjects}
        if not wanted:
            return set()
        present = {v for v in self._subjects if v in wanted}
        return {sid for v, sid in wanted.items() if v not in present}

    def nbytes(self) -> int:
        """Approximate memory held by the table itself."""
        return self._keys.itemsize * len(self._keys) * 2


def build_roster(
    private_key: Ed25519PrivateKey,
    store_id: str,
    version: int,
    created: float,
    entries: list[tuple[int, str]],
) -> bytes:
    """Serialise and sign a roster from (mac_hash, subject_id) pairs."""
    pairs = sorted({(k, int(s, 16)) for k, s in entries})
    if len({k for k, _ in pairs}) != len(pairs):
        raise RosterError("one device hash maps to two subjects")
    header = {
        "format": FORMAT,
        "store_id": store_id,
        "version": version,
        "created": created,
        "count": len(pairs),
        "key_id": key_id(private_key.public_key()),
    }
    body = array("Q")
    for k, s in pairs:
        body.append(k)
        body.append(s)
    if _LITTLE_ENDIAN:
        body.byteswap()  # the file is big-endian whatever the host
    signed = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body.tobytes()
    return signed + private_key.sign(signed)


def _header_from(raw: dict[str, Any]) -> RosterHeader:
    try:
        header = RosterHeader(
            format=str(raw["format"]),
            store_id=str(raw["store_id"]),
            version=int(raw["version"]),
            created=float(raw["created"]),
            count=int(raw["count"]),
            key_id=str(raw["key_id"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RosterError(f"roster header is incomplete or mistyped: {exc}") from None
    if header.format != FORMAT:
        raise RosterError(f"roster format {header.format!r} is not {FORMAT!r}")
    if header.version < 1:
        raise RosterError(f"roster version {header.version} must be >= 1")
    return header


def load_roster(
    data: bytes,
    public_key: Ed25519PublicKey,
    site_key: bytes,
    store_id: str | None = None,
    min_version: int = 0,
) -> Roster:
    """Verify and load a roster; refuse a bad signature, another store, or a version not newer
    than ``min_version`` (pass the loaded version to refuse rollbacks)."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + SIG_LEN + 2:
        raise RosterError("not a passby roster file (bad magic or too short)")
    # Views, not copies: a 1 M-entry file is 16 MB and a Pi has little memory to spare.
    end = len(data) - SIG_LEN
    view = memoryview(data)
    signed, signature = view[:end], bytes(view[end:])
    nl = data.find(b"\n", len(MAGIC), end)
    if nl < 0:
        raise RosterError("roster header line is not terminated")
    try:
        raw = json.loads(bytes(view[len(MAGIC) : nl]))
    except ValueError as exc:
        raise RosterError(f"roster header is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RosterError("roster header is not a JSON object")
    header = _header_from(raw)
    expected = key_id(public_key)
    if header.key_id != expected:
        raise RosterError(
            f"roster is signed by key {header.key_id}, this sensor trusts key {expected}"
        )
    try:
        public_key.verify(signature, signed)
    except InvalidSignature:
        raise RosterError("roster signature does not verify (tampered or truncated file)") from None
    if store_id is not None and header.store_id != store_id:
        raise RosterError(
            f"roster is for store {header.store_id!r}, this sensor is in {store_id!r}"
        )
    if header.version <= min_version:
        raise RosterError(
            f"roster version {header.version} is not newer than the loaded version {min_version}"
        )
    body = view[nl + 1 : end]
    if len(body) != header.count * 16:
        raise RosterError(f"roster body has {len(body)} bytes, header says {header.count} entries")
    words = body.cast("Q")  # (hash, subject) pairs, still in file (big-endian) byte order
    keys = array("Q")
    keys.frombytes(words[0::2].tobytes())
    subjects = array("Q", words[1::2])  # no temporary copy: keeps the load peak low
    if _LITTLE_ENDIAN:
        keys.byteswap()
        subjects.byteswap()
    # Strictly increasing, checked at C speed (map/all) rather than a Python-level loop.
    if not all(map(operator.lt, keys, islice(keys, 1, None))):
        raise RosterError("roster entries are not strictly sorted")
    return Roster(header, site_key, keys, subjects)
