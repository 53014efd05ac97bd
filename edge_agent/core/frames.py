"""Hand-written 802.11 frame parser: transmitter, type/subtype and dBm of client-originated frames.

Pure (no IO) and on the per-frame hot path, so it trades elegance for speed: precompiled
``struct`` unpackers, a precomputed radiotap field-layout table, no per-frame objects beyond
the result tuple.

Results
-------
``parse(linktype, buf)`` returns ``(ta, type_subtype, dbm)`` for a client-originated frame,
``None`` for any other well-formed frame (bad-FCS frames included) and raises
``MalformedFrame`` for anything truncated or inconsistent; it never raises anything else.

``classify(linktype, buf)`` (= ``parse(linktype, buf, BAD_FCS)``) is the same but returns the
sentinel ``BAD_FCS`` instead of ``None`` for a frame its radio header marks as failing the
FCS check, so callers can count those apart.  ``FrameStats.feed`` does that and keeps the
counters ``frames``, ``client``, ``other``, ``malformed`` and ``bad_fcs``.

Client-originated (the one definition used downstream)
------------------------------------------------------
* a management frame (type 0) of subtype assoc req (0), reassoc req (2), probe req (4),
  disassoc (10), auth (11), deauth (12) or action (13) whose transmitter addr2 differs from
  the BSSID addr3; or
* a data frame (type 2) of any subtype (null and QoS null included) with ToDS=1, FromDS=0;
* never a group-addressed transmitter (I/G bit of the first octet set);
* never a frame whose radio header says the FCS is bad.

``type_subtype`` is ``(type << 4) | subtype``, as tshark's ``wlan.fc.type_subtype``.
The equivalent tshark display filter is ``TSHARK_FILTER`` (tests/integration/
test_tshark_parity.py checks it frame by frame, and lists where tshark reads a malformed
header differently).  ``wlan.ta`` must exist (tshark 4's ``!=`` is true when a side is
absent) and ``!(wlan.ta[0] & 1)`` drops group transmitters.

Well-formed means: the radio header is consistent and the 802.11 header is complete up to
and including Sequence Control (24 bytes; +6 for a four-address data frame, +2 QoS Control
for QoS data subtypes).  The HT Control field is not required (tshark reports the addresses
without it too); control and extension frames need 10 bytes.  The FCS, when the radio header
says one is present, is stripped first.  A protocol version other than 0 is malformed.

Signal (``dbm``) per link type
------------------------------
* 127 radiotap: the dBm antenna signal (bit 5) of the first, default namespace, i.e. the
  combined signal.  Per-chain values in later radiotap namespaces are not used.  Flags
  (bit 1: FCS present 0x10, bad FCS 0x40) are read from the default namespace too.  Later
  bitmaps (bit 31 chaining, radiotap/vendor namespace switches via bits 29/30) are walked
  only to find where the field data starts; ``it_len`` says where the 802.11 frame starts.
  A header with the 0-length-PSDU field (bit 26) carries no frame: ``None``.
* 192 PPI: the first 802.11-common field (type 2, 20 bytes): antenna signal, where -128
  ("invalid" per the PPI spec) and 0 mean absent, as tshark has it; its flags give FCS
  present (0x1) and FCS invalid (0x4).  A PPI header whose DLT is not 105 is not 802.11.
* 119 Prism: what tshark reports as dBm: the *RSSI* item (DID 0x00040044 / 0x00004041,
  status 0) truncated to int8.  The Prism "signal" item is raw driver units, never dBm.
  A DLT 119 record starting with the AVS magic is an AVS header (as 163): dBm only if its
  ssi_type is 2 (dBm).  A record with neither Prism message code is plain 802.11.
* 105 plain 802.11: no signal.

Any other link type is not 802.11 and yields ``None``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, overload

__all__ = [
    "BAD_FCS",
    "LINKTYPE_IEEE802_11",
    "LINKTYPE_IEEE802_11_AVS",
    "LINKTYPE_PPI",
    "LINKTYPE_PRISM",
    "LINKTYPE_RADIOTAP",
    "FrameStats",
    "MalformedFrame",
    "Parsed",
    "TSHARK_FILTER",
    "classify",
    "format_mac",
    "parse",
]

TSHARK_FILTER: Final = (
    "(((wlan.fc.type == 0 && wlan.fc.type_subtype in {0,2,4,10,11,12,13})"
    " && wlan.ta != wlan.bssid) || (wlan.fc.type == 2 && wlan.fc.ds == 1))"
    " && wlan.ta && !(wlan.ta[0] & 1)"
    " && !(radiotap.flags.badfcs == 1) && !(ppi.80211-common.flags.fcs-invalid == 1)"
)

LINKTYPE_IEEE802_11: Final = 105
LINKTYPE_PRISM: Final = 119
LINKTYPE_RADIOTAP: Final = 127
LINKTYPE_IEEE802_11_AVS: Final = 163
LINKTYPE_PPI: Final = 192

Parsed = tuple[bytes, int, int | None]


class MalformedFrame(ValueError):
    """The frame is truncated or inconsistent; the message says what was wrong."""


class _BadFcs:
    """Type of the BAD_FCS sentinel."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BAD_FCS"


BAD_FCS: Final = _BadFcs()

# int8 view of a byte, by table lookup (faster than arithmetic per frame).
_S8: Final = tuple(range(128)) + tuple(range(-128, 0))

# Management subtypes a client sends: assoc req 0, reassoc req 2, probe req 4, disassoc 10,
# auth 11, deauth 12, action 13, as a bit mask indexed by subtype.
_CLIENT_MGMT: Final = sum(1 << s for s in (0, 2, 4, 10, 11, 12, 13))

_RT_HDR: Final = struct.Struct("<BxHI").unpack_from
_U32: Final = struct.Struct("<I").unpack_from
_PPI_HDR: Final = struct.Struct("<BBHI").unpack_from
_PPI_FIELD: Final = struct.Struct("<HH").unpack_from
_PPI_COMMON: Final = struct.Struct("<8xH8xb").unpack_from  # flags, dBm antenna signal
_BE32: Final = struct.Struct(">I").unpack_from
_LE32: Final = struct.Struct("<I").unpack_from
_AVS: Final = struct.Struct(">4xI36xIi").unpack_from  # length, ssi_type, ssi_signal
_PRISM_ITEMS_LE: Final = struct.Struct("<" + "IHxxI" * 10).unpack_from
_PRISM_ITEMS_BE: Final = struct.Struct(">" + "IHxxI" * 10).unpack_from

_AVS_MAGICS: Final = (0x80211001, 0x80211002)
_AVS_MIN_LEN: Final = 64  # version 1 header; v2 only appends fields we do not read
_PRISM_CODES: Final = (0x44, 0x41)
_PRISM_LEN: Final = 144
_PRISM_RSSI: Final = (0x00040044, 0x00004041)

_RT_BAD_FCS: Final = 0x40
_RT_FCS: Final = 0x10
_RT_ZERO_LEN_PSDU: Final = 1 << 26
_RT_EXT: Final = 1 << 31

# radiotap (alignment, size) of fields 0..5: TSFT, Flags, Rate, Channel, FHSS, dBm signal.
# Nothing after bit 5 is ever read, so no later field needs walking.
_RT_FIELDS: Final = ((8, 8), (1, 1), (1, 1), (2, 4), (2, 2), (1, 1))


def _rt_layout(mask: int, base: int) -> tuple[int, int, int]:
    """(Flags offset, dBm offset, end), relative to the field data, for present bits `mask`.

    `base` is the data start modulo 8: alignment is relative to the header start, and the
    data starts after 1..n four-byte bitmaps.
    """
    cur = base
    flags_at = dbm_at = -1
    for bit, (align, size) in enumerate(_RT_FIELDS):
        if mask >> bit & 1:
            cur += -cur % align
            if bit == 1:
                flags_at = cur - base
            elif bit == 5:
                dbm_at = cur - base
            cur += size
    return flags_at, dbm_at, cur - base


# Indexed by (present & 0x3f) | (data_start & 4) << 4.
_RT_LAYOUT: Final = tuple(_rt_layout(i & 0x3F, (i >> 4) & 4) for i in range(128))


@overload
def parse(linktype: int, buf: bytes) -> Parsed | None: ...


@overload
def parse(linktype: int, buf: bytes, bad_fcs: _BadFcs) -> Parsed | _BadFcs | None: ...


def parse(linktype: int, buf: bytes, bad_fcs: _BadFcs | None = None) -> Parsed | _BadFcs | None:
    """(ta, type_subtype, dbm) of a client-originated frame, None for any other frame.

    Raises MalformedFrame (only) for truncated or inconsistent input.  A frame whose radio
    header says the FCS is bad gives `bad_fcs` (None; classify() passes BAD_FCS): one
    function rather than a wrapper, as every call here is on the per-frame path.
    """
    try:
        dbm: int | None = None
        end = len(buf)
        if linktype == 127:
            if end < 8:
                raise MalformedFrame("radiotap header shorter than 8 bytes")
            version, off, present = _RT_HDR(buf, 0)
            if version:
                raise MalformedFrame(f"radiotap version {version}, only 0 is defined")
            if off < 8 or off > end:
                raise MalformedFrame(f"radiotap length {off} outside 8..{end}")
            data = 8
            word = present
            while word & _RT_EXT:
                if data + 4 > off:
                    raise MalformedFrame("radiotap present bitmaps run past the header")
                word = _U32(buf, data)[0]
                data += 4
            flags = 0
            if present & 0x3F:
                flags_at, dbm_at, fields_end = _RT_LAYOUT[(present & 0x3F) | (data & 4) << 4]
                if data + fields_end > off:
                    raise MalformedFrame("radiotap fields run past the header")
                if flags_at >= 0:
                    flags = buf[data + flags_at]
                if dbm_at >= 0:
                    dbm = _S8[buf[data + dbm_at]]
            if present & _RT_ZERO_LEN_PSDU:
                return None  # a PHY report with no frame after it
            if flags & _RT_BAD_FCS:
                return bad_fcs
            if flags & _RT_FCS:
                end -= 4
        elif linktype == 105:
            off = 0
        elif linktype == 192:
            off, dbm, fcs_flags = _ppi(buf, end)
            if off < 0:
                return None  # PPI around something other than 802.11
            if fcs_flags & 4:
                return bad_fcs
            if fcs_flags & 1:
                end -= 4
        elif linktype == 119 or linktype == 163:
            off, dbm = _prism_or_avs(buf, end, linktype == 163)
        else:
            return None

        # 802.11 MAC header.
        size = end - off
        if size < 2:
            raise MalformedFrame("802.11 frame shorter than its frame control")
        fc0 = buf[off]
        if fc0 & 3:
            raise MalformedFrame(f"802.11 protocol version {fc0 & 3}")
        ftype = fc0 & 0x0C
        if ftype == 0:  # management
            if size < 24:
                raise MalformedFrame("802.11 management header truncated")
            subtype = fc0 >> 4
            if not _CLIENT_MGMT >> subtype & 1 or buf[off + 10] & 1:
                return None
            ta = buf[off + 10 : off + 16]
            if ta == buf[off + 16 : off + 22]:
                return None  # sent by the AP itself
            return ta, subtype, dbm
        if ftype == 8:  # data
            ds = buf[off + 1] & 3
            need = 30 if ds == 3 else 24
            if fc0 & 0x80:
                need += 2  # QoS Control
            if size < need:
                raise MalformedFrame("802.11 data header truncated")
            if ds != 1 or buf[off + 10] & 1:
                return None
            return buf[off + 10 : off + 16], 0x20 | fc0 >> 4, dbm
        if size < 10:
            raise MalformedFrame("802.11 header truncated")
        return None  # control (4) or extension (12)
    except (struct.error, IndexError):
        raise MalformedFrame("frame truncated") from None


def classify(linktype: int, buf: bytes) -> Parsed | _BadFcs | None:
    """Like parse(), but BAD_FCS instead of None for a frame that failed the FCS check."""
    return parse(linktype, buf, BAD_FCS)


def _ppi(buf: bytes, end: int) -> tuple[int, int | None, int]:
    """(802.11 offset or -1 if not 802.11, dBm, 802.11-common flags) of a PPI record."""
    if end < 8:
        raise MalformedFrame("PPI header shorter than 8 bytes")
    version, pflags, length, dlt = _PPI_HDR(buf, 0)
    if version:
        raise MalformedFrame(f"PPI version {version}, only 0 is defined")
    if length < 8 or length > end:
        raise MalformedFrame(f"PPI length {length} outside 8..{end}")
    dbm: int | None = None
    cflags = 0
    seen = False
    pos = 8
    while pos < length:
        if pos + 4 > length:
            raise MalformedFrame("PPI field header runs past the PPI header")
        ftype, flen = _PPI_FIELD(buf, pos)
        pos += 4
        if pos + flen > length:
            raise MalformedFrame("PPI field runs past the PPI header")
        if ftype == 2 and not seen:
            if flen != 20:
                raise MalformedFrame(f"PPI 802.11-common field of {flen} bytes, not 20")
            seen = True
            cflags, signal = _PPI_COMMON(buf, pos)
            if signal != -128 and signal != 0:
                dbm = signal
        pos += flen
        if pflags & 1:
            pos += -pos % 4
    if dlt != 105:
        return -1, None, 0
    return length, dbm, cflags


def _prism_or_avs(buf: bytes, end: int, avs_only: bool) -> tuple[int, int | None]:
    """(802.11 offset, dBm) of a Prism (DLT 119) or AVS (DLT 119/163) record."""
    if end < 4:
        raise MalformedFrame("radio header shorter than 4 bytes")
    code = _BE32(buf, 0)[0]
    if code in _AVS_MAGICS:
        if end < _AVS_MIN_LEN:
            raise MalformedFrame("AVS header truncated")
        length, ssi_type, signal = _AVS(buf, 0)
        if length < _AVS_MIN_LEN or length > end:
            raise MalformedFrame(f"AVS length {length} outside {_AVS_MIN_LEN}..{end}")
        return length, (_S8[signal & 0xFF] if ssi_type == 2 else None)
    if avs_only:
        raise MalformedFrame(f"AVS magic expected, found {code:#010x}")
    if code in _PRISM_CODES:
        unpack = _PRISM_ITEMS_BE
    elif _LE32(buf, 0)[0] in _PRISM_CODES:
        unpack = _PRISM_ITEMS_LE
    else:
        return 0, None  # no radio header on this record, as tshark reads it
    if end < _PRISM_LEN:
        raise MalformedFrame("Prism header truncated")
    items = unpack(buf, 24)
    dbm: int | None = None
    for i in range(0, 30, 3):
        if items[i] in _PRISM_RSSI and items[i + 1] == 0:
            dbm = _S8[items[i + 2] & 0xFF]
    return _PRISM_LEN, dbm


@dataclass(slots=True)
class FrameStats:
    """Counters over parsed frames; feed() returns what parse() would."""

    frames: int = 0
    client: int = 0
    other: int = 0
    malformed: int = 0
    bad_fcs: int = 0

    def feed(self, linktype: int, buf: bytes) -> Parsed | None:
        self.frames += 1
        try:
            result = parse(linktype, buf, BAD_FCS)
        except MalformedFrame:
            self.malformed += 1
            return None
        if isinstance(result, tuple):
            self.client += 1
            return result
        if result is None:
            self.other += 1
        else:
            self.bad_fcs += 1
        return None


def format_mac(ta: bytes) -> str:
    """'aa:bb:cc:dd:ee:ff' for six raw bytes."""
    if len(ta) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(ta)}")
    return ta.hex(":")
