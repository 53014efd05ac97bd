"""Roster: keyed hashes only, signature and version checks, compact lookups."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.roster import (
    Roster,
    RosterError,
    build_roster,
    key_id,
    load_roster,
    mac_hash,
    subject_id,
)

SITE = bytes(range(16))
SUBJECT_KEY = b"s" * 32
KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))


def _roster(macs: list[bytes], version: int = 1, store: str = "s1", key=KEY) -> bytes:
    entries = [(mac_hash(SITE, m), subject_id(SUBJECT_KEY, f"C{i}")) for i, m in enumerate(macs)]
    return build_roster(key, store, version, 1_700_000_000.0, entries)


MACS = [bytes([0x02, 0, 0, 0, i >> 8, i & 0xFF]) for i in range(50)]


def test_lookup_matches_enrolled_and_nothing_else() -> None:
    r = load_roster(_roster(MACS), KEY.public_key(), SITE, "s1")
    assert len(r) == 50 and r.version == 1
    for i, mac in enumerate(MACS):
        assert r.lookup(mac) == subject_id(SUBJECT_KEY, f"C{i}")
    assert r.lookup(b"\x02\x00\x00\x01\x00\x00") is None
    # memoised answers stay right
    assert r.lookup(MACS[7]) == subject_id(SUBJECT_KEY, "C7")


def test_file_holds_no_mac() -> None:
    data = _roster(MACS)
    for mac in MACS:
        assert mac not in data


def test_wrong_site_key_matches_nothing() -> None:
    r = load_roster(_roster(MACS), KEY.public_key(), b"x" * 16, "s1")
    assert all(r.lookup(m) is None for m in MACS)


def test_bad_signature_refused() -> None:
    data = bytearray(_roster(MACS))
    data[40] ^= 0x01
    with pytest.raises(RosterError, match="signature"):
        load_roster(bytes(data), KEY.public_key(), SITE, "s1")
    with pytest.raises(RosterError, match="signature"):
        load_roster(_roster(MACS)[:-10], KEY.public_key(), SITE, "s1")  # truncated


def test_other_signing_key_named_in_refusal() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(
        RosterError,
        match=f"signed by key {key_id(other.public_key())}, this sensor trusts key {key_id(KEY.public_key())}",
    ):
        load_roster(_roster(MACS, key=other), KEY.public_key(), SITE, "s1")


def test_older_or_same_version_refused() -> None:
    with pytest.raises(RosterError, match="not newer"):
        load_roster(_roster(MACS, version=3), KEY.public_key(), SITE, "s1", min_version=3)
    assert (
        load_roster(_roster(MACS, version=4), KEY.public_key(), SITE, "s1", min_version=3).version
        == 4
    )


def test_other_store_refused() -> None:
    with pytest.raises(RosterError, match="store"):
        load_roster(_roster(MACS, store="s2"), KEY.public_key(), SITE, "s1")


def test_garbage_refused_with_reason() -> None:
    with pytest.raises(RosterError, match="not a passby roster"):
        load_roster(b"hello", KEY.public_key(), SITE)


def test_empty_roster_matches_nothing() -> None:
    assert Roster.empty("s1").lookup(MACS[0]) is None


def test_million_entries_are_compact() -> None:
    entries = [(i * 0x9E3779B97F4A7C15 % (1 << 64), f"{i:016x}") for i in range(1_000_000)]
    r = load_roster(build_roster(KEY, "s1", 1, 1.0, entries), KEY.public_key(), SITE, "s1")
    assert len(r) == 1_000_000
    assert r.nbytes() <= 20 * 1024 * 1024


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=6, max_size=6), min_size=0, max_size=40, unique=True))
def test_property_every_enrolled_mac_found(macs: list[bytes]) -> None:
    r = load_roster(_roster(macs), KEY.public_key(), SITE, "s1")
    for i, m in enumerate(macs):
        assert r.lookup(m) == subject_id(SUBJECT_KEY, f"C{i}")
