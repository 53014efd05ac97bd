"""Capture reader: pcap and pcapng variants, truncation, non-seekable streams, bad input."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dot11 import Dot11, Dot11ProbeReq, RadioTap
from scapy.utils import PcapNgWriter, RawPcapReader

from edge_agent.adapters.pcapfile import CaptureFormatError, CaptureReader, open_capture

PCAPS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pcaps"
FRAMES = [bytes([i]) * (20 + i) for i in range(1, 8)]
TIMES = [1_700_000_000 + i * 0.25 for i in range(len(FRAMES))]


def pcap_bytes(
    frames: list[bytes],
    times: list[float],
    *,
    order: str = "<",
    nanos: bool = False,
    linktype: int = 127,
    modified: bool = False,
) -> bytes:
    magic = 0xA1B2CD34 if modified else 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    scale = 1_000_000_000 if nanos else 1_000_000
    for frame, ts in zip(frames, times, strict=True):
        ticks = round(ts * scale)
        out += struct.pack(
            order + "IIII", ticks // scale, ticks % scale, len(frame), len(frame) + 3
        )
        if modified:
            out += b"\x00" * 8
        out += frame
    return out


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(
    order: str, linktype: int, tsresol: int | None = None, tsoffset: int | None = None
) -> bytes:
    opts = option(order, 2, b"wlan0mon")
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    opts += struct.pack(order + "HH", 0, 0)
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, 262144) + opts)


def epb(order: str, iface: int, ticks: int, frame: bytes, comment: bytes = b"") -> bytes:
    body = struct.pack(
        order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
    )
    body += frame + b"\x00" * (-len(frame) % 4)
    if comment:
        body += option(order, 1, comment) + struct.pack(order + "HH", 0, 0)
    return block(order, 6, body)


def read_all(data: bytes) -> tuple[CaptureReader, list[tuple[float, int, bytes]]]:
    reader = CaptureReader(io.BytesIO(data))
    return reader, list(reader)


class Trickle(io.RawIOBase):
    """A non-seekable stream that hands out at most `step` bytes per read (like a slow pipe)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(len(b), self._step, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


# -- pcap --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_variants(order: str, nanos: bool) -> None:
    reader, records = read_all(pcap_bytes(FRAMES, TIMES, order=order, nanos=nanos, linktype=105))
    assert [r[2] for r in records] == FRAMES
    assert [r[1] for r in records] == [105] * len(FRAMES)
    assert [r[0] for r in records] == pytest.approx(TIMES, abs=1e-6)
    assert (reader.records, reader.truncated, reader.linktypes, reader.format) == (
        len(FRAMES), False, {105}, "pcap",
    )  # fmt: skip


def test_pcap_nanosecond_precision() -> None:
    _, records = read_all(pcap_bytes([b"x" * 30], [1.123456789], nanos=True))
    assert records[0][0] == pytest.approx(1.123456789, abs=1e-12)


def test_modified_pcap_records() -> None:
    _, records = read_all(pcap_bytes(FRAMES, TIMES, modified=True))
    assert [r[2] for r in records] == FRAMES


def test_pcap_linktype_upper_bits_ignored() -> None:
    data = bytearray(pcap_bytes(FRAMES[:1], TIMES[:1]))
    struct.pack_into("<I", data, 20, 127 | 0x1 << 28)  # FCS-length bits in the link type field
    reader, records = read_all(bytes(data))
    assert records[0][1] == 127 and reader.linktypes == {127}


@pytest.mark.parametrize("cut", [1, 8, 15, 16, 17, 27, 30, 42])
def test_pcap_truncated_last_record_ends_cleanly(cut: int) -> None:
    # The last record is a 16-byte header and 27 bytes of data: cut inside either.
    reader, records = read_all(pcap_bytes(FRAMES, TIMES)[:-cut])
    assert [r[2] for r in records] == FRAMES[:-1]
    assert reader.truncated


def test_pcap_header_only_is_an_empty_capture() -> None:
    reader, records = read_all(pcap_bytes([], []))
    assert records == [] and not reader.truncated and reader.linktypes == {127}


def test_pcap_corrupt_record_length_says_where() -> None:
    data = bytearray(pcap_bytes(FRAMES, TIMES))
    second = 24 + 16 + len(FRAMES[0])
    struct.pack_into("<I", data, second + 8, 0x7FFFFFFF)
    reader = CaptureReader(io.BytesIO(bytes(data)), "x.pcap")
    it = iter(reader)
    assert next(it)[2] == FRAMES[0]
    with pytest.raises(
        CaptureFormatError, match=f"x.pcap: .*2147483647 .* at byte offset {second}"
    ):
        next(it)


# -- pcapng ------------------------------------------------------------------------------------


def test_pcapng_sections_interfaces_resolutions_and_blocks() -> None:
    le, be = "<", ">"
    data = (
        shb(le)
        + idb(le, 127)  # microseconds by default
        + idb(le, 105, tsresol=9)  # nanoseconds
        + block(le, 4, b"\x00" * 8)  # name resolution block: skipped
        + epb(le, 0, 1_700_000_000_250_000, FRAMES[0], comment=b"hello")
        + epb(le, 1, 1_700_000_000_500_000_001, FRAMES[1])
        + block(le, 5, struct.pack(le + "III", 0, 0, 0))  # interface statistics: skipped
        + block(le, 3, struct.pack(le + "I", len(FRAMES[2])) + FRAMES[2])  # simple packet block
        + block(le, 0x40000BAD, b"custom")  # custom block: skipped
        + shb(be)  # a new big-endian section resets the interfaces
        + idb(be, 192, tsresol=0x80 | 10, tsoffset=100)  # 2^-10 s ticks, +100 s
        + epb(be, 0, 1024 * 5, FRAMES[3])
        + block(
            be,
            2,
            struct.pack(be + "HHIIII", 0, 0, 0, 2048, len(FRAMES[4]), len(FRAMES[4])) + FRAMES[4],
        )
    )
    reader, records = read_all(data)
    assert [r[2] for r in records] == FRAMES[:5]
    assert [r[1] for r in records] == [127, 105, 127, 192, 192]
    assert [r[0] for r in records] == pytest.approx(
        [1_700_000_000.25, 1_700_000_000.500000001, 1_700_000_000.500000001, 105.0, 102.0]
    )
    assert reader.linktypes == {105, 127, 192} and reader.format == "pcapng"
    assert not reader.truncated


def test_pcapng_from_scapy_writer(tmp_path: Path) -> None:
    path = tmp_path / "scapy.pcapng"
    writer = PcapNgWriter(str(path))
    packets = []
    for i in range(5):
        pkt = (
            RadioTap()
            / Dot11(
                addr1="ff:ff:ff:ff:ff:ff", addr2=f"02:00:00:00:00:0{i}", addr3="ff:ff:ff:ff:ff:ff"
            )
            / Dot11ProbeReq()
        )
        pkt.time = 1_600_000_000 + i
        packets.append(bytes(pkt))
        writer.write(pkt)
    writer.close()
    with open_capture(str(path)) as reader:
        records = list(reader)
    assert [r[2] for r in records] == packets
    assert [r[0] for r in records] == [1_600_000_000 + i for i in range(5)]
    assert reader.linktypes == {127}


@pytest.mark.parametrize("cut", [1, 4, 12, 20, 40])
def test_pcapng_truncated_last_block_ends_cleanly(cut: int) -> None:
    data = shb("<") + idb("<", 127) + epb("<", 0, 0, FRAMES[0]) + epb("<", 0, 0, FRAMES[6])
    reader, records = read_all(data[:-cut])
    assert [r[2] for r in records] == FRAMES[:1]
    assert reader.truncated


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (shb("<") + epb("<", 0, 0, FRAMES[0]), "undeclared interface 0 at byte offset 28"),
        (shb("<") + struct.pack("<II", 6, 13) + b"\x00" * 20, "bad length 13 at byte offset 28"),
        (shb("<")[:8] + b"\x00\x00\x00\x00" + shb("<")[12:], "bad byte-order magic"),
    ],
)
def test_pcapng_corrupt_blocks(data: bytes, message: str) -> None:
    with pytest.raises(CaptureFormatError, match=message):
        list(CaptureReader(io.BytesIO(data)))


# -- streams and errors --------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 3, 7, 64, 100_000])
def test_non_seekable_trickling_stream(step: int) -> None:
    pcap = pcap_bytes(FRAMES, TIMES)
    ng = shb("<") + idb("<", 105) + b"".join(epb("<", 0, i, f) for i, f in enumerate(FRAMES))
    for data in (pcap, ng):
        stream = io.BufferedReader(Trickle(data, step), buffer_size=max(step, 8))
        assert [r[2] for r in CaptureReader(stream)] == FRAMES
        raw_only = Trickle(data, step)  # no read1: the reader falls back to read()
        assert [r[2] for r in CaptureReader(raw_only)] == FRAMES  # type: ignore[arg-type]


def test_stdin_dash_reads_a_pipe() -> None:
    path = PCAPS / "aircrack__zn2i.pcap"
    code = (
        "from edge_agent.adapters.pcapfile import open_capture\n"
        "r = open_capture('-')\n"
        "print(sum(len(d) for _, _, d in r), r.records, r.truncated, sorted(r.linktypes))\n"
    )
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
        out = subprocess.run(
            [sys.executable, "-c", code], stdin=cat.stdout, capture_output=True, text=True,
            check=True, cwd=Path(__file__).parents[2],
        ).stdout.split()  # fmt: skip
    with RawPcapReader(str(path)) as ref:
        expected = [bytes(d) for d, _meta in ref]
    assert out == [str(sum(map(len, expected))), str(len(expected)), "False", "[127]"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "only 0 byte"),
        (b"\xd4\xc3", "only 2 byte"),
        (b"# passby README\n", "unknown magic 0x23207061 at byte offset 0"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header at byte offset 0"),
        (b"\x0a\x0d\x0d\x0a\x00", "truncated pcapng section header at byte offset 0"),
    ],
)
def test_not_a_capture(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    with pytest.raises(CaptureFormatError, match=f"input.bin: .*{message}") as excinfo:
        open_capture(str(path))
    assert "pcap" in str(excinfo.value)


def test_missing_file_is_an_os_error() -> None:
    with pytest.raises(FileNotFoundError):
        open_capture("/nonexistent/capture.pcap")


# -- real captures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PCAPS.rglob("*") if p.suffix in (".pcap", ".cap")),
    ids=lambda p: p.name,
)
def test_real_captures_match_scapy(path: Path) -> None:
    with RawPcapReader(str(path)) as ref:
        expected = [(meta.sec + meta.usec * 1e-6, bytes(data)) for data, meta in ref]
    with open_capture(str(path)) as reader:
        records = list(reader)
    assert [r[2] for r in records] == [e[1] for e in expected]
    assert [r[0] for r in records] == pytest.approx([e[0] for e in expected], abs=1e-6)
    assert not reader.truncated
    assert os.path.getsize(path) >= 24


# -- robustness ----------------------------------------------------------------------------------

REAL_PCAP = (PCAPS / "aircrack__zn2i.pcap").read_bytes()
REAL_NG = shb("<") + idb("<", 127) + b"".join(epb("<", 0, i, f) for i, f in enumerate(FRAMES))


@pytest.mark.parametrize("data", [REAL_PCAP, REAL_NG], ids=["pcap", "pcapng"])
def test_every_cut_point_ends_cleanly(data: bytes) -> None:
    _, full = read_all(data)
    for cut in range(24 if data is REAL_PCAP else 28, len(data)):
        reader, records = read_all(data[:cut])
        assert records == full[: len(records)]
        assert reader.truncated == (cut not in _record_ends(data))


def _record_ends(data: bytes) -> set[int]:
    """Offsets at which a record (pcap) or block (pcapng) ends."""
    ends = set()
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        pos = 0
        while pos < len(data):
            pos += struct.unpack_from("<I", data, pos + 4)[0]
            ends.add(pos)
    else:
        pos = 24
        ends.add(pos)
        while pos < len(data):
            pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
            ends.add(pos)
    return ends


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([REAL_PCAP, REAL_NG]), st.lists(st.integers(0, 10_000), min_size=1, max_size=8)
)
def test_corrupted_captures_raise_only_capture_format_error(
    data: bytes, positions: list[int]
) -> None:
    mutated = bytearray(data)
    for position in positions:
        mutated[position % len(mutated)] ^= 0xFF
    try:
        reader = CaptureReader(io.BytesIO(bytes(mutated)))
        for _ts, _linktype, frame in reader:
            assert isinstance(frame, bytes)
    except CaptureFormatError as exc:
        assert "byte offset" in str(exc)


# -- edge-agent inspect ----------------------------------------------------------------------------


def test_inspect_table_summary_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent import inspect as inspect_cmd

    path = PCAPS / "aircrack__test1.pcap"
    assert inspect_cmd.run(str(path), jsonl=False) == 0
    out, err = capsys.readouterr()
    assert "1c:cd:e5:57:56:2a" in out and "7 transmitter(s)" in out  # not read as an :emoji:
    summary = json.loads(err.split("summary: ", 1)[1])
    assert summary == {
        "records": 192, "client": 53, "other": 139, "malformed": 0, "bad_fcs": 0,
        "truncated": False, "linktypes": [127],
    }  # fmt: skip

    cut = tmp_path / "cut.pcap"
    cut.write_bytes(path.read_bytes()[:-5])
    assert inspect_cmd.run(str(cut), jsonl=True) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 52  # the record cut short was a client frame
    assert json.loads(err.split("summary: ", 1)[1])["truncated"] is True

    assert inspect_cmd.run(str(PCAPS / "README.md"), jsonl=True) == 2
    out, err = capsys.readouterr()
    assert out == "" and "not a pcap or pcapng file" in err and "byte offset 0" in err
    assert inspect_cmd.run(str(tmp_path / "missing.pcap"), jsonl=False) == 2
    assert "No such file" in capsys.readouterr().err


def test_inspect_module_entry_point_reads_stdin() -> None:
    data = (PCAPS / "zeek__radiotap.pcap").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.inspect", "-", "--jsonl"],
        input=data, capture_output=True, check=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 1 and set(lines[0]) == {"ts", "ta", "subtype", "dbm"}
    assert b'"records": 3' in proc.stderr
