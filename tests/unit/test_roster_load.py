"""The roster load path (views, no copies, C-speed order check) reads exactly what was written
and still refuses files that are signed but malformed."""

from __future__ import annotations

import json
from array import array

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.roster import FORMAT, MAGIC, RosterError, build_roster, key_id, load_roster

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SITE = b"k" * 16


def signed_file(pairs: list[tuple[int, int]], count: int | None = None) -> bytes:
    """A correctly signed file with whatever body we like (the bridge would never write these)."""
    header = {
        "format": FORMAT,
        "store_id": "s1",
        "version": 1,
        "created": 1.0,
        "count": len(pairs) if count is None else count,
        "key_id": key_id(KEY.public_key()),
    }
    body = array("Q", [v for pair in pairs for v in pair])
    if array("Q", [1]).tobytes()[0] == 1:  # the file is big-endian
        body.byteswap()
    signed = MAGIC + json.dumps(header).encode() + b"\n" + body.tobytes()
    return signed + KEY.sign(signed)


def test_unsorted_or_duplicate_entries_are_refused() -> None:
    with pytest.raises(RosterError, match="strictly sorted"):
        load_roster(signed_file([(5, 1), (3, 2)]), KEY.public_key(), SITE, "s1")
    with pytest.raises(RosterError, match="strictly sorted"):
        load_roster(signed_file([(5, 1), (5, 2)]), KEY.public_key(), SITE, "s1")
    assert len(load_roster(signed_file([(3, 1), (5, 2)]), KEY.public_key(), SITE, "s1")) == 2


def test_count_mismatch_is_refused() -> None:
    with pytest.raises(RosterError, match="header says 3 entries"):
        load_roster(signed_file([(3, 1), (5, 2)], count=3), KEY.public_key(), SITE, "s1")


def test_header_newline_must_be_before_the_signature() -> None:
    data = MAGIC + b'{"format"' + b"x" * 70  # no newline before the last 64 bytes
    with pytest.raises(RosterError, match="not terminated"):
        load_roster(data, KEY.public_key(), SITE, "s1")


def test_accepts_a_bytearray() -> None:
    data = bytearray(signed_file([(3, 1), (5, 2)]))
    assert len(load_roster(data, KEY.public_key(), SITE, "s1")) == 2  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), max_size=60))
def test_loaded_table_is_exactly_what_was_built(table: dict[int, int]) -> None:
    entries = [(k, f"{v:016x}") for k, v in table.items()]
    roster = load_roster(build_roster(KEY, "s1", 1, 1.0, entries), KEY.public_key(), SITE, "s1")
    assert list(roster._keys) == sorted(table)
    assert list(roster._subjects) == [table[k] for k in sorted(table)]
