"""tshark parity: our client-originated frames equal tshark's, frame by frame.

For every capture under ../shared/data/pcaps (malformed/ included) and for captures
generated here (scapy-built radiotap frames of many kinds, FCS and bad FCS, extended
bitmaps and namespaces, pcapng, PPI, Prism, AVS, plain 802.11, and a seeded random mix),
tshark is run with ``frames.TSHARK_FILTER`` and the (transmitter, type_subtype, dBm)
sequence it prints must equal ours.

Which tshark field is "dBm" follows the link type (``frame.protocols`` says which header
tshark saw), matching the definitions in edge_agent/core/frames.py:

* radiotap: the first ``radiotap.dbm_antsignal``; the default namespace comes first, so
  this is the combined signal whenever the header has one (see D3 for when it has not);
* PPI: ``ppi.80211-common.dbm.antsignal``, with -128 and 0 meaning absent (as tshark's own
  ``wlan_radio.signal_dbm`` treats them);
* Prism and AVS: ``wlan_radio.signal_dbm``, i.e. Prism's RSSI item or AVS's ssi_signal when
  its ssi_type is dBm, truncated to int8 by tshark;
* plain 802.11: none.

Where tshark and our definition disagree, ``test_documented_divergences`` pins both
verdicts frame by frame with the reason; none of those frames is in a shared capture.

tshark is required: without it these tests fail, they are never skipped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.dot11 import (
    Dot11,
    Dot11Action,
    Dot11AssoReq,
    Dot11AssoResp,
    Dot11Auth,
    Dot11Beacon,
    Dot11Deauth,
    Dot11Disas,
    Dot11Elt,
    Dot11FCS,
    Dot11ProbeReq,
    Dot11ProbeResp,
    Dot11QoS,
    Dot11ReassoReq,
    RadioTap,
)
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter

from edge_agent import inspect as inspect_cmd
from edge_agent.adapters.pcapfile import open_capture
from edge_agent.core.frames import TSHARK_FILTER, FrameStats, format_mac

sys.path.insert(0, str(Path(__file__).parents[1]))
from unit.test_frames import (  # noqa: E402 - shared frame builders
    ANTENNA,
    AP,
    BCAST,
    CLIENT,
    CLIENT2,
    DBM,
    F_BADFCS,
    F_FCS,
    FHSS,
    FLAGS,
    GROUP,
    RATE,
    avs,
    dot11,
    ppi,
    ppi_common,
    prism,
    probe_req,
    radiotap,
    rt_fields,
    s8,
    vendor_ns,
)

pytestmark = pytest.mark.integration

PCAPS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pcaps"
SHARED = sorted(p for p in PCAPS.rglob("*") if p.suffix in (".pcap", ".cap", ".pcapng"))

# Client frames per shared capture (tshark and we agree; pinned so a vacuous pass shows).
SHARED_CLIENT_FRAMES = {
    "aircrack__80211ad_beacon.pcap": 0,
    "aircrack__n-02.cap": 34,
    "aircrack__test1.pcap": 53,
    "aircrack__wpa.cap": 3,
    "aircrack__wpa2-psk-linksys.cap": 211,
    "aircrack__wpa3-psk.pcap": 6,
    "aircrack__zn2i.pcap": 7,
    "ppd__OppoFindX3Neo-A.pcap": 682,
    "ppd__iPhone12Pro-C.pcap": 154,
    "ppd__iPhone7-F.pcap": 322,
    "pyrit__wpa2psk-2WIRE972.pcap": 1,
    "tcpdump__ieee802.11_exthdr.pcap": 10,
    "tcpdump__ieee802.11_htc.pcap": 1,
    "tcpdump__ieee802.11_meshid.pcap": 1,
    "tcpdump__ieee802.11_rx-stbc.pcap": 0,
    "wifite2__handshake_not_exists.cap": 34,
    "zeek__radiotap.pcap": 1,
    "zeek__wlanmon.pcap": 1,
    "aircrack__floatingpoint_exception.pcap": 0,
    "aircrack__wpaclean_crash.pcap": 0,
    "tcpdump__ieee802.11_meshhdr-oobr.pcap": 0,
    "tcpdump__ieee802.11_parse_elements_oobr.pcap": 0,
    "tcpdump__ieee802.11_rates_oobr.pcap": 0,
}

FIELDS = (
    "frame.number",
    "frame.protocols",
    "wlan.ta",
    "wlan.fc.type_subtype",
    "radiotap.dbm_antsignal",
    "ppi.80211-common.dbm.antsignal",
    "wlan_radio.signal_dbm",
)

Row = tuple[str, int, int | None]


@pytest.fixture(scope="session")
def tshark(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    path = shutil.which("tshark") or (
        "/usr/bin/tshark" if os.access("/usr/bin/tshark", os.X_OK) else None
    )
    if path is None:
        pytest.fail(
            "tshark is not installed (Debian package 'tshark'): the parity test needs it "
            "as the independent decoder and is never skipped"
        )
    # An empty configuration directory: no personal preference (say, "assume packets have
    # FCS") can change what tshark decodes.
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(tmp_path_factory.mktemp("wireshark-config"))}
    return path, env


def tshark_clients(tshark: tuple[str, dict[str, str]], path: Path) -> dict[int, Row]:
    """Frame number -> (ta, type_subtype, dBm) of the frames tshark's filter selects."""
    exe, env = tshark
    command = [
        exe,
        "-n",
        "-r",
        str(path),
        "-Y",
        TSHARK_FILTER,
        "-T",
        "fields",
        "-E",
        "occurrence=f",
    ]
    for field in FIELDS:
        command += ["-e", field]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"tshark failed on {path}: {proc.stderr}"
    rows: dict[int, Row] = {}
    for line in proc.stdout.splitlines():
        number, protocols, ta, subtype, radiotap_dbm, ppi_dbm, radio_dbm = line.split("\t")
        rows[int(number)] = (
            ta,
            int(subtype, 16),
            _tshark_dbm(protocols, radiotap_dbm, ppi_dbm, radio_dbm),
        )
    return rows


def _tshark_dbm(protocols: str, radiotap_dbm: str, ppi_dbm: str, radio_dbm: str) -> int | None:
    outer = protocols.split(":")[0]
    if outer == "radiotap":
        value = radiotap_dbm
    elif outer == "ppi":
        value = "" if ppi_dbm in ("-128", "0") else ppi_dbm
    elif outer in ("prism", "wlancap"):
        value = radio_dbm
    else:
        value = ""
    return int(value) if value else None


def our_clients(path: Path) -> dict[int, Row]:
    rows: dict[int, Row] = {}
    stats = FrameStats()
    with open_capture(str(path)) as reader:
        for number, (_ts, linktype, data) in enumerate(reader, start=1):
            parsed = stats.feed(linktype, data)
            if parsed is not None:
                rows[number] = (format_mac(parsed[0]), parsed[1], parsed[2])
    return rows


def assert_same(ours: dict[int, Row], theirs: dict[int, Row], what: str) -> None:
    diff = {
        n: (ours.get(n), theirs.get(n))
        for n in sorted(ours.keys() | theirs.keys())
        if ours.get(n) != theirs.get(n)
    }
    assert not diff, f"{what}: frame -> (ours, tshark) differ: {dict(list(diff.items())[:10])}"
    assert Counter(ours.values()) == Counter(theirs.values())


# -- shared captures, through `edge-agent inspect --jsonl` ------------------------------------


@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.name)
def test_shared_capture_matches_tshark(
    path: Path, tshark: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert inspect_cmd.run(str(path), jsonl=True) == 0
    out, err = capsys.readouterr()
    ours = [json.loads(line) for line in out.splitlines()]
    theirs = list(tshark_clients(tshark, path).values())
    assert [(o["ta"], o["subtype"], o["dbm"]) for o in ours] == theirs
    assert Counter((o["ta"], o["subtype"], o["dbm"]) for o in ours) == Counter(theirs)
    assert len(theirs) == SHARED_CLIENT_FRAMES[path.name]
    summary = json.loads(err.split("summary: ", 1)[1])
    assert summary["client"] == len(ours) and not summary["truncated"]


def test_every_shared_capture_is_covered() -> None:
    assert sorted(p.name for p in SHARED) == sorted(SHARED_CLIENT_FRAMES)


# -- generated captures -----------------------------------------------------------------------


def write_pcap(path: Path, linktype: int, frames: list[bytes]) -> Path:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)
    for i, frame in enumerate(frames):
        out += struct.pack("<IIII", 1_700_000_000 + i, i, len(frame), len(frame)) + frame
    path.write_bytes(out)
    return path


def mac(raw: bytes) -> str:
    return format_mac(raw)


def scapy_radiotap_packets() -> list[Packet]:
    """Client and AP frames of many kinds under scapy-built radiotap headers."""
    c, c2, ap, b, g = mac(CLIENT), mac(CLIENT2), mac(AP), mac(BCAST), mac(GROUP)
    ssid = Dot11Elt(ID=0, info=b"shop-wifi")

    def rt(dbm: int = -55, flags: str | int = 0, **extra: object) -> RadioTap:
        return RadioTap(
            present="TSFT+Flags+Rate+Channel+dBm_AntSignal+Antenna",
            mac_timestamp=123,
            Flags=flags,
            Rate=2,
            ChannelFrequency=2437,
            ChannelFlags="2GHz+CCK",
            dBm_AntSignal=dbm,
            Antenna=1,
            **extra,
        )

    def mgmt(sub: int, a1: str, a2: str, a3: str) -> Dot11:
        return Dot11(type=0, subtype=sub, addr1=a1, addr2=a2, addr3=a3)

    def data(sub: int, ds: int, a1: str, a2: str, a3: str) -> Dot11:
        return Dot11(type=2, subtype=sub, FCfield=ds, addr1=a1, addr2=a2, addr3=a3)

    return [
        rt(-40) / mgmt(4, b, c, b) / Dot11ProbeReq() / ssid,
        rt(-41) / mgmt(4, b, c2, b) / Dot11ProbeReq() / ssid,
        rt(-42) / mgmt(11, ap, c, ap) / Dot11Auth(algo=0, seqnum=1),
        rt(-43) / mgmt(0, ap, c, ap) / Dot11AssoReq() / ssid,
        rt(-44) / mgmt(2, ap, c, ap) / Dot11ReassoReq(current_AP=ap) / ssid,
        rt(-45) / mgmt(10, ap, c, ap) / Dot11Disas(),
        rt(-46) / mgmt(12, ap, c, ap) / Dot11Deauth(reason=3),
        rt(-47) / mgmt(13, ap, c, ap) / Dot11Action(category=4) / Raw(b"\x00"),
        rt(-48) / data(4, 1, ap, c, ap),  # null to the DS
        rt(-49) / data(12, 1, ap, c, ap) / Dot11QoS(),  # QoS null
        rt(-50) / data(8, 1, ap, c, ap) / Dot11QoS() / Raw(b"\xaa\xaa\x03\x00\x00\x00\x08\x00"),
        rt(-51) / data(0, 1, ap, c, ap) / Raw(b"\xaa\xaa\x03\x00\x00\x00\x88\x8e"),
        # AP-originated and other frames that are not client frames.
        rt(-30) / mgmt(8, b, ap, ap) / Dot11Beacon() / ssid,
        rt(-31) / mgmt(5, c, ap, ap) / Dot11ProbeResp() / ssid,
        rt(-32) / mgmt(1, c, ap, ap) / Dot11AssoResp(),
        rt(-33) / mgmt(12, c, ap, ap) / Dot11Deauth(reason=7),  # deauth from the AP
        rt(-34) / data(0, 2, c, ap, ap) / Raw(b"\xaa\xaa\x03\x00\x00\x00\x08\x00"),  # FromDS
        rt(-35) / Dot11(type=2, subtype=0, FCfield=3, addr1=ap, addr2=c, addr3=ap, addr4=c2),  # WDS
        rt(-36) / mgmt(4, b, g, b) / Dot11ProbeReq(),  # group transmitter
        rt(-37) / Dot11(type=1, subtype=11, addr1=ap, addr2=c),  # RTS
        rt(-38) / Dot11(type=1, subtype=13, addr1=c),  # ACK
        # FCS present (scapy computes it), and a bad FCS.
        rt(-52, flags="FCS")
        / Dot11FCS(type=0, subtype=4, addr1=b, addr2=c, addr3=b)
        / Dot11ProbeReq()
        / ssid,
        rt(-53, flags="FCS") / Dot11FCS(type=2, subtype=4, FCfield=1, addr1=ap, addr2=c2, addr3=ap),
        rt(-54, flags="FCS+badFCS")
        / Dot11FCS(type=0, subtype=4, addr1=b, addr2=c, addr3=b)
        / Dot11ProbeReq(),
        rt(-55, flags="badFCS") / mgmt(4, b, c2, b) / Dot11ProbeReq(),
        RadioTap(present="Flags", Flags=0) / mgmt(4, b, c, b) / Dot11ProbeReq(),  # no signal
    ]


def builder_radiotap_frames() -> list[bytes]:
    """Radiotap layouts scapy does not build: namespaces, vendor data, odd alignments."""
    body = probe_req()
    null = dot11(2, 4, AP, CLIENT2, AP, ds=1)
    return [
        radiotap(rt_fields(-48), {DBM: s8(-51), ANTENNA: b"\x00"}, {DBM: s8(-46), ANTENNA: b"\x01"})
        + body,
        radiotap(rt_fields(-47, flags=F_FCS), {DBM: s8(-50), ANTENNA: b"\x00"})
        + null
        + b"\x01\x02\x03\x04",
        radiotap(rt_fields(-44), vendor_ns(), {DBM: s8(-80)}, vendor_ns(data=b"\x00" * 7)) + body,
        radiotap(rt_fields(-39), last_word_ext=True) + body,
        radiotap({RATE: b"\x02", FHSS: b"\x01\x02", DBM: s8(-33)}) + body,
        radiotap({FLAGS: b"\x00", DBM: s8(-60), 26: b"\x00"}) + body,  # 0-length PSDU: no frame
        radiotap(rt_fields(-58, flags=F_BADFCS), {DBM: s8(-60)}) + body,
        radiotap(rt_fields(None)) + body,
        radiotap(rt_fields(-20)) + dot11(2, 8, AP, CLIENT, AP, ds=1, qos=True, htc=True)[:26],
        radiotap(rt_fields(-21)) + body[:24],
        radiotap(rt_fields(-22)) + body[:23],  # truncated: neither reports it
        radiotap(rt_fields(-23)) + dot11(2, 12, AP, CLIENT, AP, ds=1, qos=True)[:25],
    ]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("parity")
    packets = scapy_radiotap_packets()
    raw = [bytes(p) for p in packets] + builder_radiotap_frames()
    files = {"radiotap.pcap": write_pcap(tmp / "radiotap.pcap", 127, raw)}
    writer = PcapNgWriter(str(tmp / "radiotap.pcapng"))
    for i, frame in enumerate(raw):
        pkt = RadioTap(frame)
        pkt.time = 1_700_000_000 + i
        writer.write(pkt)
    writer.close()
    files["radiotap.pcapng"] = tmp / "radiotap.pcapng"

    # The 802.11 frames alone, without FCS, to wrap in the other radio headers.
    dot = [frame[struct.unpack_from("<H", frame, 2)[0] :] for frame in raw[: len(packets)]]
    dot = [d for d, p in zip(dot, packets, strict=True) if not int(p.Flags) & (F_FCS | F_BADFCS)]
    files["plain.pcap"] = write_pcap(tmp / "plain.pcap", 105, dot)
    files["ppi.pcap"] = write_pcap(
        tmp / "ppi.pcap",
        192,
        [ppi(ppi_common(-40 - i % 50)) + f for i, f in enumerate(dot)]
        + [
            ppi(ppi_common(-128)) + dot[0],
            ppi(ppi_common(0)) + dot[0],
            ppi(ppi_common(-41, flags=1)) + dot[0] + b"\x00" * 4,
            ppi(ppi_common(-42, flags=5)) + dot[0] + b"\x00" * 4,  # FCS invalid
            ppi(struct.pack("<HH", 6, 4) + b"\x01\x02\x03\x04", ppi_common(-43)) + dot[1],
            ppi() + dot[2],
        ],
    )
    files["prism.pcap"] = write_pcap(
        tmp / "prism.pcap",
        119,
        [
            prism(-30 - i % 60, order="<>"[i % 2], code=(0x44, 0x41)[i % 3 == 0]) + f
            for i, f in enumerate(dot)
        ]
        + [
            prism(-40, status=1) + dot[0],
            prism(200) + dot[0],
            avs(2, -45) + dot[1],
            avs(1, 600) + dot[1],
            avs(2, -46, version=0x80211002, length=80) + dot[1],
            dot[2],  # DLT 119 record without a radio header
        ],
    )
    files["avs.pcap"] = write_pcap(
        tmp / "avs.pcap", 163, [avs(2, -30 - i) + f for i, f in enumerate(dot)]
    )
    files["random.pcap"] = write_pcap(
        tmp / "random.pcap", 127, random_radiotap_frames(random.Random(20240607), 3000)
    )
    return files


def random_radiotap_frames(rng: random.Random, n: int) -> list[bytes]:
    """Well-formed radiotap headers around random 802.11 headers, some cut short."""
    stations = [CLIENT, CLIENT2, AP, GROUP, BCAST, bytes.fromhex("a4c3f0001122")]
    out = []
    for _ in range(n):
        ftype = rng.choice([0, 0, 0, 1, 2, 2, 3])
        subtype = rng.randrange(16)
        ds = rng.randrange(4)
        a1, a2, a3, a4 = (rng.choice(stations) for _ in range(4))
        frame = dot11(
            ftype, subtype, a1, a2, a3, ds=ds, a4=a4 if ds == 3 else None, qos=bool(ftype == 2 and subtype & 8),
            flags=rng.choice([0, 0, 0x08, 0x40, 0x10]), htc=rng.random() < 0.1, body=rng.randbytes(rng.randrange(40)),
        )  # fmt: skip
        flags = rng.choice([0, 0, 0, F_FCS, F_FCS | F_BADFCS, F_BADFCS, 0x02])
        if rng.random() < 0.25:
            # With an FCS, cut only after the longest header (32 bytes): a header cut short
            # in front of an FCS is divergence D10.
            shortest = 32 if flags & F_FCS else 0
            if len(frame) >= shortest:
                frame = frame[: rng.randrange(shortest, len(frame) + 1)]
        if flags & F_FCS:
            frame += rng.randbytes(4)
        default = rt_fields(
            rng.choice([None, rng.randrange(-95, -20)]), flags=flags, tsft=rng.random() < 0.5
        )
        if rng.random() < 0.2:
            del default[FLAGS]
            if flags & F_FCS:
                frame = frame[:-4]
        spaces: list[dict[int, bytes] | tuple] = [default]
        for _ in range(rng.choice([0, 0, 1, 2])):
            chain = {ANTENNA: bytes([rng.randrange(4)])}
            if DBM in default:  # per-chain signal without a combined one is divergence D3
                chain[DBM] = s8(rng.randrange(-95, -20))
            spaces.append(rng.choice([chain, vendor_ns()]))
        out.append(radiotap(*spaces) + frame)
    return out


@pytest.mark.parametrize(
    "name",
    [
        "radiotap.pcap",
        "radiotap.pcapng",
        "plain.pcap",
        "ppi.pcap",
        "prism.pcap",
        "avs.pcap",
        "random.pcap",
    ],
)
def test_generated_capture_matches_tshark(
    name: str, generated: dict[str, Path], tshark: tuple[str, dict[str, str]]
) -> None:
    path = generated[name]
    ours, theirs = our_clients(path), tshark_clients(tshark, path)
    assert_same(ours, theirs, name)
    assert len(ours) >= 10, f"{name}: too few client frames for a meaningful comparison"


def test_generated_radiotap_kinds(
    generated: dict[str, Path], tshark: tuple[str, dict[str, str]]
) -> None:
    """The scapy-built frames give exactly the expected client frames (not just agreement)."""
    theirs = tshark_clients(tshark, generated["radiotap.pcap"])
    c, c2 = mac(CLIENT), mac(CLIENT2)
    expected = {
        1: (c, 4, -40), 2: (c2, 4, -41), 3: (c, 11, -42), 4: (c, 0, -43), 5: (c, 2, -44),
        6: (c, 10, -45), 7: (c, 12, -46), 8: (c, 13, -47), 9: (c, 0x24, -48), 10: (c, 0x2C, -49),
        11: (c, 0x28, -50), 12: (c, 0x20, -51), 22: (c, 4, -52), 23: (c2, 0x24, -53), 26: (c, 4, None),
        # builder frames: namespaces, vendor data, FHSS alignment, +HTC cut, header-only
        27: (c, 4, -48), 28: (c2, 0x24, -47), 29: (c, 4, -44), 30: (c, 4, -39), 31: (c, 4, -33),
        34: (c, 4, None), 35: (c, 0x28, -20), 36: (c, 4, -21),
    }  # fmt: skip
    assert theirs == expected


# -- where tshark reads differently --------------------------------------------------------


DIVERGENCES: list[tuple[int, bytes, Row | None, Row | str, str]] = [
    # (linktype, frame, tshark's row or None, our row or "malformed", why)
    (
        127,
        radiotap({DBM: s8(-40)}, it_len=8)[:8] + probe_req(),  # dBm claimed, not there
        (mac(CLIENT), 4, None),
        "malformed",
        "D1 radiotap fields run past it_len: tshark flags 'Radiotap data goes past the end of "
        "the radiotap header' yet still decodes the 802.11 frame at it_len; a header that "
        "contradicts itself is malformed to us and nothing in it is trusted",
    ),
    (
        127,
        radiotap({DBM: s8(-40)}, version=1) + probe_req(),
        (mac(CLIENT), 4, None),
        "malformed",
        "D2 radiotap version 1: tshark ignores the version, skips it_len bytes and decodes no "
        "field; only version 0 exists, so anything else is corruption to us (both shared "
        "fuzzed captures with radiotap version 48 are malformed to us and non-client to tshark)",
    ),
    (
        127,
        radiotap(rt_fields(None), {DBM: s8(-51), ANTENNA: b"\x00"}) + probe_req(),
        (mac(CLIENT), 4, -51),
        (mac(CLIENT), 4, None),
        "D3 no combined signal in the default namespace, only a per-chain one in a later "
        "radiotap namespace: tshark's first radiotap.dbm_antsignal is that chain's; our dBm is "
        "the default namespace's (combined) signal only, by definition",
    ),
    (
        127,
        radiotap({FLAGS: b"\x00", DBM: s8(-40)}, {FLAGS: bytes([F_BADFCS])}) + probe_req(),
        None,
        (mac(CLIENT), 4, -40),
        "D4 bad-FCS flag only in a later radiotap namespace's Flags: tshark's filter matches any "
        "occurrence; we read Flags from the default namespace, where radiotap and every Linux "
        "driver put them (the default namespace here says the FCS is fine)",
    ),
    (
        192,
        ppi(ppi_common(-40), version=1) + probe_req(),
        (mac(CLIENT), 4, -40),
        "malformed",
        "D5 PPI version 1: tshark ignores the version; only version 0 exists",
    ),
    (
        192,
        ppi(length=6) + probe_req(),
        (mac(CLIENT), 4, None),
        "malformed",
        "D6 PPI header length 6 (< 8): tshark decodes 802.11 right after the 8 fixed bytes",
    ),
    (
        192,
        ppi(ppi_common(-40, length=10)) + probe_req(),
        (mac(CLIENT), 4, None),
        "malformed",
        "D7 PPI 802.11-common field of 10 bytes instead of 20: tshark notes 'Invalid length' "
        "and ignores the field",
    ),
    (
        192,
        ppi(struct.pack("<HH", 6, 3) + b"\x01\x02\x03", ppi_common(-33), align=True) + probe_req(),
        None,
        (mac(CLIENT), 4, -33),
        "D8 PPI with the 32-bit alignment flag and an odd-length field: tshark does not count "
        "the pad bytes against the header length, walks one 'field' into the 802.11 frame and "
        "loses it; we honour the header length, as libpcap/tcpdump do",
    ),
    (
        119,
        avs(2, -40, length=40)[:40] + probe_req(),
        (mac(CLIENT), 4, None),
        "malformed",
        "D9 AVS header length 40 (< 64): tshark reads the AVS fields out of the 802.11 frame "
        "and still decodes 802.11 at byte 40",
    ),
]


DIVERGENCES.append(
    (
        127,
        radiotap(rt_fields(-59, flags=F_FCS)) + probe_req()[:22] + b"\x5c\x94\x17\x4f",
        (mac(CLIENT), 4, -59),
        "malformed",
        "D10 management header cut after addr3 (22 bytes) followed by a 4-byte FCS: tshark "
        "reads the FCS bytes as Sequence Control and reports the frame; to us the header ends "
        "where the FCS begins, so it is 2 bytes short",
    )
)


def test_documented_divergences(tmp_path: Path, tshark: tuple[str, dict[str, str]]) -> None:
    """Each case pins tshark's verdict and ours, so a change on either side is noticed."""
    for i, (linktype, frame, tshark_row, our_row, why) in enumerate(DIVERGENCES):
        path = write_pcap(tmp_path / f"d{i}.pcap", linktype, [frame])
        theirs = tshark_clients(tshark, path).get(1)
        stats = FrameStats()
        parsed = stats.feed(linktype, frame)
        ours: Row | str | None = (
            "malformed" if stats.malformed else parsed and (mac(parsed[0]), parsed[1], parsed[2])
        )
        assert (theirs, ours) == (tshark_row, our_row), why
