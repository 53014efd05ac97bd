"""Frame parser: hand-built frames per link type, edge cases, and fuzzing of real frames.

The builders at the top (dot11, radiotap, ppi, prism, avs) are also used by the tshark
parity test and the benchmark.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.adapters.pcapfile import open_capture
from edge_agent.core import frames
from edge_agent.core.frames import (
    BAD_FCS,
    FrameStats,
    MalformedFrame,
    classify,
    format_mac,
    parse,
)
from edge_agent.roster import parse_mac

PCAPS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pcaps"

# -- builders -------------------------------------------------------------------------------

CLIENT = bytes.fromhex("02aabbccdd01")
CLIENT2 = bytes.fromhex("3c22fb000002")
AP = bytes.fromhex("00c0ffee0001")
BCAST = b"\xff" * 6
GROUP = bytes.fromhex("0300005e0001")

# radiotap (alignment, size) by field bit, as radiotap.org defines them.
RT_FIELDS = {
    0: (8, 8), 1: (1, 1), 2: (1, 1), 3: (2, 4), 4: (2, 2), 5: (1, 1), 6: (1, 1), 7: (2, 2),
    8: (2, 2), 9: (2, 2), 10: (1, 1), 11: (1, 1), 12: (1, 1), 13: (1, 1), 14: (2, 2),
    15: (2, 2), 16: (1, 1), 17: (1, 1), 18: (4, 8), 19: (1, 3), 20: (4, 8), 21: (2, 12),
    22: (8, 12), 23: (2, 12), 24: (2, 12), 25: (2, 6), 26: (1, 1), 27: (2, 4),
}  # fmt: skip
TSFT, FLAGS, RATE, CHANNEL, FHSS, DBM, ANTENNA, RX_FLAGS, MCS, VHT = (
    0,
    1,
    2,
    3,
    4,
    5,
    11,
    14,
    19,
    21,
)
F_FCS, F_BADFCS = 0x10, 0x40


def dot11(
    ftype: int,
    subtype: int,
    a1: bytes = BCAST,
    a2: bytes | None = CLIENT,
    a3: bytes | None = BCAST,
    *,
    ds: int = 0,
    flags: int = 0,
    a4: bytes | None = None,
    qos: bool = False,
    htc: bool = False,
    body: bytes = b"",
) -> bytes:
    """An 802.11 frame: FC, duration, addresses, sequence control, [addr4], [QoS], [HTC]."""
    fc = bytes([(subtype << 4) | (ftype << 2), ds | flags | (0x80 if htc else 0)])
    out = fc + b"\x00\x00" + a1
    if a2 is not None:
        out += a2
    if a3 is not None:
        out += a3 + b"\x10\x00"
    if a4 is not None:
        out += a4
    if qos:
        out += b"\x00\x00"
    if htc:
        out += b"\x00\x00\x00\x00"
    return out + body


def probe_req(ta: bytes = CLIENT) -> bytes:
    return dot11(0, 4, BCAST, ta, BCAST, body=b"\x00\x00\x01\x04\x02\x04\x0b\x16")


def null_to_ds(ta: bytes = CLIENT, bssid: bytes = AP, qos: bool = False) -> bytes:
    return dot11(2, 12 if qos else 4, bssid, ta, bssid, ds=1, qos=qos)


def vendor_ns(oui: bytes = b"\x00\x11\x22", sub: int = 0, data: bytes = b"\xab\xcd\xef") -> tuple:
    return ("vendor", oui, sub, data)


def radiotap(
    *namespaces: dict[int, bytes] | tuple,
    version: int = 0,
    it_len: int | None = None,
    last_word_ext: bool = False,
) -> bytes:
    """A radiotap header: the first namespace is the default; each further dict is a radiotap
    namespace reached through bit 29, each vendor_ns() a vendor namespace through bit 30.
    Field data is placed with radiotap alignment (relative to the header start)."""
    spaces = list(namespaces) or [{}]
    words: list[int] = []
    for i, space in enumerate(spaces):
        word = 0 if isinstance(space, tuple) else sum(1 << bit for bit in space)
        if i + 1 < len(spaces):
            word |= (1 << 30 if isinstance(spaces[i + 1], tuple) else 1 << 29) | 1 << 31
        words.append(word)
    if last_word_ext:  # an extra, empty bitmap word in the same namespace (bits 32..63)
        words[-1] |= 1 << 31
        words.append(0)
    data = bytearray(4 + 4 * len(words))
    for space in spaces:
        if isinstance(space, tuple):
            _, oui, sub, payload = space
            data += b"\x00" * (-len(data) % 2)
            data += oui + bytes([sub]) + struct.pack("<H", len(payload)) + payload
            continue
        for bit in sorted(space):
            align, size = RT_FIELDS[bit]
            data += b"\x00" * (-len(data) % align)
            assert len(space[bit]) == size, f"radiotap field {bit} is {size} bytes"
            data += space[bit]
    length = len(data) if it_len is None else it_len
    struct.pack_into("<BBH", data, 0, version, 0, length)
    for i, word in enumerate(words):
        struct.pack_into("<I", data, 4 + 4 * i, word)
    return bytes(data)


def s8(dbm: int) -> bytes:
    return struct.pack("<b", dbm)


def rt_fields(dbm: int | None = -50, flags: int | None = 0, tsft: bool = True) -> dict[int, bytes]:
    """A typical default namespace: TSFT, Flags, Rate, Channel, dBm signal, antenna."""
    fields = {RATE: b"\x02", CHANNEL: struct.pack("<HH", 2437, 0x00A0), ANTENNA: b"\x01"}
    if tsft:
        fields[TSFT] = struct.pack("<Q", 123456789)
    if flags is not None:
        fields[FLAGS] = bytes([flags])
    if dbm is not None:
        fields[DBM] = s8(dbm)
    return fields


def ppi_common(dbm: int = -40, flags: int = 0, length: int = 20) -> bytes:
    body = struct.pack("<QHHHHBBbb", 1, flags, 2, 2412, 0x00A0, 0, 0, dbm, -95)
    return struct.pack("<HH", 2, length) + body[:length]


def ppi(
    *fields: bytes, dlt: int = 105, version: int = 0, align: bool = False, length: int | None = None
) -> bytes:
    body = b""
    for field in fields:
        body += field
        if align:
            body += b"\x00" * (-(8 + len(body)) % 4)
    total = 8 + len(body) if length is None else length
    return struct.pack("<BBHI", version, 1 if align else 0, total, dlt) + body


def prism(
    rssi: int = -40, *, status: int = 0, order: str = "<", code: int = 0x44, signal: int = 57
) -> bytes:
    """A 144-byte Prism header; DIDs of the message-code-0x44 family unless code is 0x41."""
    if code == 0x41:
        dids = [((i + 1) << 12) | 0x041 for i in range(10)]
    else:
        dids = [((i + 1) << 16) | 0x0044 for i in range(10)]
    values = [1, 2, 6, rssi & 0xFFFFFFFF, 0, signal, 0, 2, 0, 100]
    out = struct.pack(order + "II16s", code, 144, b"wlan0")
    for i, (did, value) in enumerate(zip(dids, values, strict=True)):
        out += struct.pack(order + "IHHI", did, status if i == 3 else 0, 4, value)
    return out


def avs(
    ssi_type: int = 2, signal: int = -40, *, version: int = 0x80211001, length: int = 64
) -> bytes:
    head = struct.pack(
        ">IIQQIIIIIIiiII", version, length, 0, 0, 4, 6, 20, 0, 0, ssi_type, signal, -95, 0, 0
    )
    return (head + b"\x00" * 64)[: max(length, 64)]


def real_frames(limit_per_file: int = 400) -> list[tuple[int, bytes]]:
    """(linktype, frame) from every shared capture, malformed ones included."""
    out: list[tuple[int, bytes]] = []
    for path in sorted(PCAPS.rglob("*")):
        if path.suffix not in (".pcap", ".cap", ".pcapng"):
            continue
        with open_capture(str(path)) as reader:
            for i, (_ts, linktype, data) in enumerate(reader):
                if i >= limit_per_file:
                    break
                out.append((linktype, data))
    return out


# -- client-originated frames ----------------------------------------------------------------


@pytest.mark.parametrize("subtype", [0, 2, 4, 10, 11, 12, 13])
def test_client_management_subtypes(subtype: int) -> None:
    frame = dot11(0, subtype, AP, CLIENT, AP)
    assert parse(127, radiotap(rt_fields(dbm=-61)) + frame) == (CLIENT, subtype, -61)
    assert parse(105, frame) == (CLIENT, subtype, None)


@pytest.mark.parametrize(
    "subtype",
    [1, 3, 5, 8, 9, 14, 15],  # assoc/reassoc/probe resp, beacon, ATIM, action no-ack, reserved
)
def test_other_management_subtypes_are_not_client(subtype: int) -> None:
    assert parse(105, dot11(0, subtype, CLIENT, AP, AP)) is None
    assert parse(105, dot11(0, subtype, BCAST, CLIENT, AP)) is None


@pytest.mark.parametrize("subtype", [10, 11, 12, 13])
def test_ap_originated_management_is_not_client(subtype: int) -> None:
    # Deauth/disassoc/auth/action sent by the AP: transmitter == BSSID.
    assert parse(105, dot11(0, subtype, CLIENT, AP, AP)) is None


@pytest.mark.parametrize(
    ("subtype", "qos", "expected"),
    [(0, False, 0x20), (4, False, 0x24), (8, True, 0x28), (12, True, 0x2C), (1, False, 0x21)],
)
def test_data_to_ds_is_client(subtype: int, qos: bool, expected: int) -> None:
    frame = dot11(2, subtype, AP, CLIENT, AP, ds=1, qos=qos)
    assert parse(127, radiotap(rt_fields(dbm=-70)) + frame) == (CLIENT, expected, -70)


@pytest.mark.parametrize(("ds", "a4"), [(0, None), (2, None), (3, CLIENT2)])
def test_data_not_to_ds_is_not_client(ds: int, a4: bytes | None) -> None:
    # IBSS (ds 0), from the AP (FromDS), and WDS/mesh four-address frames.
    assert parse(105, dot11(2, 0, CLIENT2, CLIENT, AP, ds=ds, a4=a4)) is None
    assert parse(105, dot11(2, 12, CLIENT2, CLIENT, AP, ds=ds, a4=a4, qos=True)) is None


def test_group_transmitter_is_never_client() -> None:
    assert parse(105, probe_req(GROUP)) is None
    assert parse(105, null_to_ds(GROUP)) is None
    assert parse(105, dot11(0, 11, AP, GROUP, AP)) is None


@pytest.mark.parametrize(
    "frame",
    [
        dot11(1, 11, AP, CLIENT, None),  # RTS
        dot11(1, 10, AP, CLIENT, None),  # PS-Poll
        dot11(1, 13, CLIENT, None, None),  # ACK
        dot11(1, 12, CLIENT, None, None),  # CTS
        dot11(3, 0, BCAST, None, None, body=b"\x00" * 20),  # extension (DMG beacon)
    ],
)
def test_control_and_extension_frames_are_not_client(frame: bytes) -> None:
    assert parse(105, frame) is None


def test_flags_do_not_change_addresses() -> None:
    protected_retry = dot11(2, 8, AP, CLIENT, AP, ds=1, flags=0x40 | 0x08 | 0x10, qos=True)
    assert parse(105, protected_retry) == (CLIENT, 0x28, None)


def test_ht_control_field_is_not_required() -> None:
    # Order bit set: +HTC after QoS Control.  tshark reports the addresses without it; so do we.
    full = dot11(2, 8, AP, CLIENT, AP, ds=1, qos=True, htc=True)
    assert parse(105, full) == (CLIENT, 0x28, None)
    assert parse(105, full[:26]) == (CLIENT, 0x28, None)
    mgmt = dot11(0, 4, BCAST, CLIENT, BCAST, htc=True)
    assert parse(105, mgmt[:24]) == (CLIENT, 4, None)


# -- radiotap ----------------------------------------------------------------------------------


def test_radiotap_minimal_header_and_no_signal() -> None:
    assert parse(127, radiotap({}) + probe_req()) == (CLIENT, 4, None)
    assert parse(127, radiotap({FLAGS: b"\x00"}) + probe_req()) == (CLIENT, 4, None)


@pytest.mark.parametrize("words", [1, 2, 3])
def test_radiotap_tsft_alignment_after_extended_bitmaps(words: int) -> None:
    # Field data starts at 8, 12 or 16: TSFT must be padded to a multiple of 8 from the header start.
    spaces: list[dict[int, bytes]] = [rt_fields(dbm=-42)] + [{DBM: s8(-90)}] * (words - 1)
    header = radiotap(*spaces)
    assert parse(127, header + probe_req()) == (CLIENT, 4, -42)


@pytest.mark.parametrize(
    "fields",
    [
        {DBM: s8(-33)},
        {TSFT: b"\x01" * 8, DBM: s8(-33)},
        {RATE: b"\x02", FHSS: b"\x01\x02", DBM: s8(-33)},  # FHSS aligned to 2 after an odd offset
        {FLAGS: b"\x00", RATE: b"\x02", CHANNEL: b"\x6c\x09\xa0\x00", DBM: s8(-33)},
        {FLAGS: b"\x00", CHANNEL: b"\x6c\x09\xa0\x00", FHSS: b"\x00\x00", DBM: s8(-33)},
        {TSFT: b"\x01" * 8, FLAGS: b"\x00", RATE: b"\x02", CHANNEL: b"\x6c\x09\xa0\x00",
         FHSS: b"\x00\x00", DBM: s8(-33), 6: s8(-95), MCS: b"\x07\x00\x07", VHT: b"\x00" * 12},
    ],
)  # fmt: skip
def test_radiotap_field_layouts(fields: dict[int, bytes]) -> None:
    assert parse(127, radiotap(fields) + probe_req()) == (CLIENT, 4, -33)


def test_radiotap_signal_is_the_default_namespace_one() -> None:
    # Linux mac80211 layout: combined signal first, then one radiotap namespace per chain.
    header = radiotap(
        rt_fields(dbm=-48), {DBM: s8(-51), ANTENNA: b"\x00"}, {DBM: s8(-46), ANTENNA: b"\x01"}
    )
    assert parse(127, header + probe_req()) == (CLIENT, 4, -48)


def test_radiotap_per_chain_signal_only_is_no_signal() -> None:
    # No combined signal in the default namespace: per-chain values are not used.
    header = radiotap(rt_fields(dbm=None), {DBM: s8(-51), ANTENNA: b"\x00"})
    assert parse(127, header + probe_req()) == (CLIENT, 4, None)


def test_radiotap_vendor_namespaces_are_skipped() -> None:
    header = radiotap(rt_fields(dbm=-44), vendor_ns(), {DBM: s8(-80)}, vendor_ns(data=b"\x00" * 7))
    assert parse(127, header + probe_req()) == (CLIENT, 4, -44)
    # A vendor-namespace bit in the only bitmap (bit 30 without 31), as some drivers write it.
    lone = bytearray(radiotap({FLAGS: b"\x00", DBM: s8(-45)}))
    struct.pack_into("<I", lone, 4, (1 << FLAGS) | (1 << DBM) | (1 << 30))
    assert parse(127, bytes(lone) + probe_req()) == (CLIENT, 4, -45)


def test_radiotap_extended_bitmap_in_the_same_namespace() -> None:
    header = radiotap(rt_fields(dbm=-39), last_word_ext=True)
    assert parse(127, header + probe_req()) == (CLIENT, 4, -39)


def test_radiotap_fcs_present_is_stripped() -> None:
    frame = probe_req()[:24]  # header only, so the FCS decides whether it is complete
    header = radiotap(rt_fields(flags=F_FCS))
    assert parse(127, header + frame + b"\xde\xad\xbe\xef") == (CLIENT, 4, -50)
    with pytest.raises(MalformedFrame):
        parse(127, header + frame)  # without the FCS bytes the header is 4 bytes short
    assert parse(127, radiotap(rt_fields(flags=0)) + frame) == (CLIENT, 4, -50)


def test_radiotap_bad_fcs_is_dropped_and_counted() -> None:
    frame = radiotap(rt_fields(flags=F_FCS | F_BADFCS)) + probe_req() + b"\x00" * 4
    assert parse(127, frame) is None
    assert classify(127, frame) is BAD_FCS
    stats = FrameStats()
    assert stats.feed(127, frame) is None
    assert (stats.frames, stats.bad_fcs, stats.client, stats.other) == (1, 1, 0, 0)


def test_radiotap_zero_length_psdu_carries_no_frame() -> None:
    header = radiotap({DBM: s8(-60), 26: b"\x00"})
    assert parse(127, header + probe_req()) is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00\x00\x08", "shorter than 8"),
        (struct.pack("<BBHI", 0, 0, 7, 0) + probe_req(), "length 7"),
        (struct.pack("<BBHI", 0, 0, 200, 0) + probe_req(), "length 200"),
        (radiotap({DBM: s8(-40)}, version=1) + probe_req(), "version 1"),
        (struct.pack("<BBHI", 0, 0, 8, 1 << 31) + probe_req(), "bitmaps run past"),
        (radiotap({DBM: s8(-40)}, it_len=8) + probe_req(), "fields run past"),
        (radiotap({TSFT: b"\x00" * 8}, it_len=12) + probe_req(), "fields run past"),
        (radiotap({}) + b"\x40", "shorter than its frame control"),
        (radiotap({}) + bytes([0x41]) + probe_req()[1:], "protocol version 1"),
        (radiotap({}) + probe_req()[:23], "management header truncated"),
        (radiotap({}) + null_to_ds()[:23], "data header truncated"),
        (radiotap({}) + null_to_ds(qos=True)[:25], "data header truncated"),
        (
            radiotap({}) + dot11(2, 0, AP, CLIENT, AP, ds=3, a4=CLIENT2)[:29],
            "data header truncated",
        ),
        (radiotap({}) + dot11(1, 13, CLIENT, None, None)[:9], "header truncated"),
        (radiotap({FLAGS: bytes([F_FCS])}) + b"\x40\x00\x00\x00", "shorter than its frame control"),
    ],
)
def test_malformed_radiotap_and_802_11(frame: bytes, reason: str) -> None:
    with pytest.raises(MalformedFrame, match=reason):
        parse(127, frame)
    stats = FrameStats()
    stats.feed(127, frame)
    assert stats.malformed == 1


def test_plain_802_11_has_no_signal() -> None:
    assert parse(105, probe_req()) == (CLIENT, 4, None)
    assert parse(105, null_to_ds()) == (CLIENT, 0x24, None)
    with pytest.raises(MalformedFrame):
        parse(105, b"")


# -- PPI ---------------------------------------------------------------------------------------


def test_ppi_common_signal() -> None:
    assert parse(192, ppi(ppi_common(-40)) + probe_req()) == (CLIENT, 4, -40)
    assert parse(192, ppi() + probe_req()) == (CLIENT, 4, None)


@pytest.mark.parametrize("dbm", [-128, 0])
def test_ppi_signal_markers_mean_absent(dbm: int) -> None:
    assert parse(192, ppi(ppi_common(dbm)) + probe_req()) == (CLIENT, 4, None)


def test_ppi_fcs_flags() -> None:
    frame = probe_req()[:24] + b"\x00\x00\x00\x00"
    assert parse(192, ppi(ppi_common(-40, flags=1)) + frame) == (CLIENT, 4, -40)
    with pytest.raises(MalformedFrame):
        parse(192, ppi(ppi_common(-40, flags=1)) + frame[:24])
    assert classify(192, ppi(ppi_common(-40, flags=1 | 4)) + frame) is BAD_FCS
    assert classify(192, ppi(ppi_common(-40, flags=4)) + frame) is BAD_FCS


def test_ppi_other_fields_and_alignment() -> None:
    odd = struct.pack("<HH", 30002, 3) + b"\x01\x02\x03"  # geotag-like field of odd length
    assert parse(192, ppi(odd, ppi_common(-33), align=True) + probe_req()) == (CLIENT, 4, -33)
    assert parse(192, ppi(odd, ppi_common(-33)) + probe_req()) == (CLIENT, 4, -33)
    first_wins = ppi(ppi_common(-20), ppi_common(-30))
    assert parse(192, first_wins + probe_req()) == (CLIENT, 4, -20)


def test_ppi_not_802_11() -> None:
    assert parse(192, ppi(ppi_common(-40), dlt=1) + b"\x00" * 60) is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00\x00\x08\x00", "shorter than 8"),
        (ppi(ppi_common(), version=1) + probe_req(), "version 1"),
        (ppi(ppi_common(), length=6) + probe_req(), "length 6"),
        (ppi(ppi_common(), length=400) + probe_req(), "length 400"),
        (ppi(ppi_common(length=10)) + probe_req(), "10 bytes, not 20"),
        (ppi(ppi_common(), length=30) + probe_req(), "runs past"),
        (ppi(ppi_common()) + probe_req()[:20], "management header truncated"),
    ],
)
def test_malformed_ppi(frame: bytes, reason: str) -> None:
    with pytest.raises(MalformedFrame, match=reason):
        parse(192, frame)


# -- Prism and AVS -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("code", [0x44, 0x41])
def test_prism_rssi_item_is_the_reported_dbm(order: str, code: int) -> None:
    assert parse(119, prism(-40, order=order, code=code) + probe_req()) == (CLIENT, 4, -40)


def test_prism_signal_item_is_not_dbm_and_absent_rssi_is_none() -> None:
    # signal=57 is raw driver units; RSSI with status 1 ("not supplied") gives no dBm at all.
    assert parse(119, prism(-40, status=1, signal=57) + probe_req()) == (CLIENT, 4, None)


def test_prism_rssi_is_truncated_to_int8_like_tshark() -> None:
    assert parse(119, prism(200) + probe_req()) == (CLIENT, 4, -56)
    assert parse(119, prism(-300) + probe_req()) == (CLIENT, 4, -44)


def test_dlt_119_without_prism_header_is_plain_802_11() -> None:
    assert parse(119, probe_req()) == (CLIENT, 4, None)


def test_prism_truncated() -> None:
    with pytest.raises(MalformedFrame, match="Prism header truncated"):
        parse(119, prism()[:100])
    with pytest.raises(MalformedFrame):
        parse(119, b"\x44\x00")


@pytest.mark.parametrize("linktype", [119, 163])
@pytest.mark.parametrize(("ssi_type", "expected"), [(0, None), (1, None), (2, -40), (3, None)])
def test_avs_signal_only_when_dbm(linktype: int, ssi_type: int, expected: int | None) -> None:
    assert parse(linktype, avs(ssi_type, -40) + probe_req()) == (CLIENT, 4, expected)


def test_avs_v2_and_bad_length() -> None:
    assert parse(119, avs(2, -41, version=0x80211002, length=80) + probe_req()) == (CLIENT, 4, -41)
    with pytest.raises(MalformedFrame, match="AVS length"):
        parse(119, avs(2, -40, length=40) + probe_req())
    with pytest.raises(MalformedFrame, match="AVS magic"):
        parse(163, prism() + probe_req())


def test_unknown_linktype_is_not_802_11() -> None:
    assert parse(1, b"\xff" * 60) is None
    assert parse(1, b"") is None


# -- MAC helpers and counters --------------------------------------------------------------------


def test_format_and_parse_mac() -> None:
    assert format_mac(CLIENT) == "02:aa:bb:cc:dd:01"
    for text in ("02:aa:bb:cc:dd:01", "02-AA-BB-CC-DD-01", "02aabbccdd01", " 02:AA:bb:cc:dd:01 "):
        assert parse_mac(text) == CLIENT
    for bad in (
        "",
        "02:aa:bb:cc:dd",
        "02:aa:bb:cc:dd:0g",
        "2:aa:bb:cc:dd:01:0",
        "02aabbccdd0",
        "zz" * 6,
    ):
        with pytest.raises(ValueError):
            parse_mac(bad)
    with pytest.raises(ValueError):
        format_mac(b"\x00" * 5)


def test_frame_stats_counts_every_outcome() -> None:
    stats = FrameStats()
    assert stats.feed(105, probe_req()) == (CLIENT, 4, None)
    assert stats.feed(105, dot11(0, 8, BCAST, AP, AP)) is None
    assert stats.feed(105, b"\x40") is None
    assert stats.feed(127, radiotap({FLAGS: bytes([F_BADFCS])}) + probe_req()) is None
    assert (stats.frames, stats.client, stats.other, stats.malformed, stats.bad_fcs) == (
        4,
        1,
        1,
        1,
        1,
    )


def test_frames_module_is_pure() -> None:
    tree = ast.parse(Path(frames.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"__future__", "struct", "typing", "dataclasses"}


# -- real captures ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((PCAPS / "malformed").iterdir()), ids=lambda p: p.name)
def test_malformed_captures_never_raise(path: Path) -> None:
    stats = FrameStats()
    with open_capture(str(path)) as reader:
        for _ts, linktype, data in reader:
            stats.feed(linktype, data)
    assert stats.frames == reader.records > 0


def test_malformed_capture_verdicts() -> None:
    """What each fuzzed file is to us (tshark agrees none holds a client frame)."""
    verdicts = {}
    for path in sorted((PCAPS / "malformed").iterdir()):
        stats = FrameStats()
        with open_capture(str(path)) as reader:
            for _ts, linktype, data in reader:
                stats.feed(linktype, data)
        verdicts[path.name] = (stats.client, stats.malformed)
    assert verdicts == {
        "aircrack__floatingpoint_exception.pcap": (0, 0),
        "aircrack__wpaclean_crash.pcap": (0, 1),  # 57 bytes: no room for the 144-byte Prism header
        "tcpdump__ieee802.11_meshhdr-oobr.pcap": (0, 1),  # radiotap version 48
        "tcpdump__ieee802.11_parse_elements_oobr.pcap": (0, 0),  # header fine, elements cut
        "tcpdump__ieee802.11_rates_oobr.pcap": (0, 1),  # radiotap version 48
    }


REAL = real_frames()


def _only_malformed(linktype: int, data: bytes) -> None:
    try:
        result = parse(linktype, data)
    except MalformedFrame:
        return
    if result is not None:
        ta, subtype, dbm = result
        assert isinstance(ta, bytes) and len(ta) == 6 and not ta[0] & 1
        assert subtype in (0, 2, 4, 10, 11, 12, 13) or 0x20 <= subtype <= 0x2F
        assert dbm is None or -128 <= dbm <= 127


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REAL), st.integers(min_value=0, max_value=400))
def test_truncated_real_frames_only_raise_malformed(frame: tuple[int, bytes], cut: int) -> None:
    linktype, data = frame
    _only_malformed(linktype, data[:cut])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(REAL),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=200), st.integers(0, 7)),
        min_size=1,
        max_size=6,
    ),
)
def test_bit_flipped_real_frames_only_raise_malformed(
    frame: tuple[int, bytes], flips: list[tuple[int, int]]
) -> None:
    linktype, data = frame
    mutated = bytearray(data)
    for index, bit in flips:
        if mutated:
            mutated[index % len(mutated)] ^= 1 << bit
    _only_malformed(linktype, bytes(mutated))


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from([105, 119, 127, 163, 192]), st.binary(max_size=300))
def test_random_bytes_only_raise_malformed(linktype: int, data: bytes) -> None:
    _only_malformed(linktype, data)


def test_real_frames_round_trip_through_another_link_type() -> None:
    """A radiotap frame re-wrapped as PPI or Prism gives the same transmitter and subtype."""
    checked = 0
    for linktype, data in REAL:
        if linktype != 127:
            continue
        try:
            result = parse(127, data)
        except MalformedFrame:
            continue
        if result is None:
            continue
        it_len = struct.unpack_from("<H", data, 2)[0]
        fcs = classify(127, radiotap({}) + data[it_len:])  # no FCS flag: may keep 4 extra bytes
        assert fcs is not BAD_FCS
        ta, subtype, _dbm = result
        dot = data[it_len:]
        assert parse(192, ppi(ppi_common(-40)) + dot)[:2] == (ta, subtype)  # type: ignore[index]
        assert parse(119, prism(-41) + dot)[:2] == (ta, subtype)  # type: ignore[index]
        assert parse(105, dot)[:2] == (ta, subtype)  # type: ignore[index]
        checked += 1
    assert checked > 100
