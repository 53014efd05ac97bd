"""The agent's per-frame pipeline: a roster swap forgets subjects that left it, with no event."""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scapy.layers.dot11 import Dot11, RadioTap

from edge_agent.agent import Pipeline
from edge_agent.core.footfall import Footfall
from edge_agent.core.presence import PresenceConfig, PresenceEvent, PresenceTracker
from edge_agent.roster import build_roster, load_roster, mac_hash

SITE = bytes(range(16))
KEY = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
AP = "02:00:5e:10:00:01"
ANNA, BORIS = "da:a1:19:3c:4e:01", "6e:12:7a:90:b3:22"
S_ANNA, S_BORIS = "00000000000000a1", "00000000000000b2"


def roster(version: int, people: dict[str, str]):
    entries = [(mac_hash(SITE, bytes.fromhex(m.replace(":", ""))), s) for m, s in people.items()]
    return load_roster(build_roster(KEY, "s1", version, 1.0, entries), KEY.public_key(), SITE)


def frame(mac: str, dbm: int) -> bytes:
    return bytes(
        RadioTap(present="dBm_AntSignal", dBm_AntSignal=dbm)
        / Dot11(type=2, subtype=4, FCfield="to_DS", addr1=AP, addr2=mac, addr3=AP)
    )


def test_swap_forgets_removed_subjects_without_events() -> None:
    events: list[PresenceEvent] = []
    pipe = Pipeline(
        roster(1, {ANNA: S_ANNA, BORIS: S_BORIS}),
        PresenceTracker(PresenceConfig(absence_timeout_s=30)),
        Footfall(secrets.token_bytes(16)),
        events.append,
    )
    t = 1_700_000_000.0
    for i in range(5):
        pipe.feed(t + i, 127, frame(ANNA, -55))
        pipe.feed(t + i, 127, frame(BORIS, -55))
    assert sorted(e.subject for e in events if e.type == "arrive") == [S_ANNA, S_BORIS]
    events.clear()
    # Boris is erased: the next roster has only Anna.
    pipe.request_swap(roster(2, {ANNA: S_ANNA}))
    pipe.feed(t + 6, 127, frame(ANNA, -55))  # applied between frames
    assert pipe.roster.version == 2 and pipe.forgotten == 1
    assert pipe.tracker.tracked() == [S_ANNA]
    for i in range(7, 200):
        pipe.feed(t + i, 127, frame(BORIS, -50))  # Boris is a stranger now
    pipe.tick(t + 400)
    assert [e.subject for e in events] == [S_ANNA]  # Anna's leave; nothing about Boris ever
    assert events[0].type == "leave"


def test_reconfigure_applies_new_thresholds_between_frames() -> None:
    events: list[PresenceEvent] = []
    pipe = Pipeline(
        roster(1, {ANNA: S_ANNA}),
        PresenceTracker(),
        Footfall(secrets.token_bytes(16)),
        events.append,
    )
    t = 1_700_000_000.0
    for i in range(5):
        pipe.feed(t + i, 127, frame(ANNA, -74))
    assert not events  # -74 is below the default enter threshold (-70)
    pipe.request_reconfigure(PresenceConfig(enter_dbm=-76, leave_dbm=-85))
    for i in range(5, 10):
        pipe.feed(t + i, 127, frame(ANNA, -74))
    assert [e.type for e in events] == ["arrive"]


def test_implausible_rssi_is_no_rssi() -> None:
    events: list[PresenceEvent] = []
    pipe = Pipeline(
        roster(1, {ANNA: S_ANNA}),
        PresenceTracker(),
        Footfall(secrets.token_bytes(16)),
        events.append,
    )
    pipe.feed(1_700_000_000.0, 127, frame(ANNA, -90))
    pipe.feed(1_700_000_001.0, 127, frame(ANNA, 0))  # Prism's "unknown" 0 dBm: not "very close"
    pipe.feed(1_700_000_002.0, 127, frame(ANNA, -90))
    assert not events
