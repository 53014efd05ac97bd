"""Streaming pcap/pcapng reader yielding (timestamp, link type, frame bytes), stdin included.

Hand-written rather than scapy's reader, which costs tens of microseconds per record.
It reads in large chunks with ``read1`` where the stream has it, so a live pipe
(``tcpdump -U -w - | edge-agent run -``) is served as soon as records arrive, and it never
seeks.

* pcap: both byte orders, microsecond (0xa1b2c3d4) and nanosecond (0xa1b23c4d) magic, and
  the "modified" (Kuznetzov, 0xa1b2cd34) variant whose record headers are 8 bytes longer.
* pcapng: any number of sections (SHB in either byte order); interfaces (IDB) with their
  link type, ``if_tsresol`` and ``if_tsoffset``; Enhanced, Simple and obsolete Packet
  blocks; every other block is skipped.  A Simple Packet Block has no timestamp: it gets the
  previous record's (0.0 before any).

A file that ends inside a record ends the iteration cleanly with ``truncated`` set.  Input
that is not a capture at all, or a corrupt record/block header, raises
``CaptureFormatError`` saying what was wrong and at which byte offset.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO, Final

__all__ = ["CaptureFormatError", "CaptureReader", "open_capture"]

CHUNK: Final = 1 << 20
# Same ceiling as Wireshark's for a record: anything larger is a corrupt length field.
MAX_RECORD: Final = 262_144
MAX_BLOCK: Final = 16 * 1024 * 1024

_PCAP_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1e-6, 24),
    b"\xa1\xb2\xcd\x34": (">", 1e-6, 24),
}
_PCAPNG_SHB: Final = b"\x0a\x0d\x0d\x0a"
_BOM: Final = 0x1A2B3C4D

_SHB, _IDB, _OPB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6


class CaptureFormatError(ValueError):
    """The input is not a pcap/pcapng capture, or a record/block header is corrupt."""


class CaptureReader:
    """Iterate over (ts, linktype, data) of a pcap or pcapng stream.

    Attributes: ``records`` (yielded so far), ``truncated`` (the input ended inside a
    record), ``linktypes`` (link types the file declares), ``format`` ('pcap'/'pcapng').
    """

    def __init__(self, stream: BinaryIO, name: str = "<stream>") -> None:
        self.name = name
        self._stream = stream
        self.records = 0
        self.truncated = False
        self.linktypes: set[int] = set()
        read1 = getattr(stream, "read1", None)
        self._read: Callable[[int], bytes] = read1 if callable(read1) else stream.read
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of self._buf[0]
        self._eof = False
        head = self._peek(4)
        if len(head) < 4:
            raise CaptureFormatError(
                f"{name}: not a pcap or pcapng file: only {len(head)} byte(s) at byte offset 0"
            )
        if head in _PCAP_MAGICS:
            self.format = "pcap"
            self._iter = self._pcap(*_PCAP_MAGICS[head])
        elif head == _PCAPNG_SHB:
            self.format = "pcapng"
            self._iter = self._pcapng()
        else:
            raise CaptureFormatError(
                f"{name}: not a pcap or pcapng file: unknown magic 0x{head.hex()} at byte offset 0"
            )

    def __iter__(self) -> Iterator[tuple[float, int, bytes]]:
        return self._iter

    def close(self) -> None:
        """Close the underlying stream (not standard input)."""
        if self._stream is not sys.stdin.buffer:
            self._stream.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- buffer -----------------------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """Make `need` bytes available at self._pos; False at end of input."""
        while len(self._buf) - self._pos < need:
            if self._eof:
                return False
            chunk = self._read(max(CHUNK, need))
            if not chunk:
                self._eof = True
                return False
            self._base += self._pos
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
        return True

    def _peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[self._pos : self._pos + n]

    def _offset(self) -> int:
        return self._base + self._pos

    def _error(self, what: str, offset: int | None = None) -> CaptureFormatError:
        at = self._offset() if offset is None else offset
        return CaptureFormatError(f"{self.name}: {what} at byte offset {at}")

    # -- pcap -------------------------------------------------------------------------------

    def _pcap(self, order: str, scale: float, rec_len: int) -> Iterator[tuple[float, int, bytes]]:
        if not self._fill(24):
            raise self._error("truncated pcap file header")
        _snaplen, network = struct.unpack_from(order + "16xII", self._buf, self._pos)
        # The upper bits may carry FCS-length information; the link type is the low 16.
        linktype = network & 0xFFFF
        self.linktypes.add(linktype)
        self._pos += 24
        return self._pcap_records(order, scale, rec_len, linktype)

    def _pcap_records(
        self, order: str, scale: float, rec_len: int, linktype: int
    ) -> Iterator[tuple[float, int, bytes]]:
        unpack = struct.Struct(order + "IIII").unpack_from
        while True:
            if len(self._buf) - self._pos < rec_len and not self._fill(rec_len):
                self.truncated = len(self._buf) > self._pos
                return
            buf, pos = self._buf, self._pos
            sec, frac, incl, _orig = unpack(buf, pos)
            if incl > MAX_RECORD:
                raise self._error(f"pcap record claims {incl} captured bytes (corrupt header)")
            start = pos + rec_len
            if len(buf) - start < incl:
                if not self._fill(rec_len + incl):
                    self.truncated = True
                    return
                buf, pos = self._buf, self._pos
                start = pos + rec_len
            self._pos = start + incl
            self.records += 1
            yield sec + frac * scale, linktype, buf[start : start + incl]

    # -- pcapng -----------------------------------------------------------------------------

    def _pcapng(self) -> Iterator[tuple[float, int, bytes]]:
        if not self._fill(12):
            raise self._error("truncated pcapng section header")
        self._section_order()
        return self._pcapng_blocks()

    def _section_order(self) -> str:
        """Byte order of the section whose SHB starts at the current position."""
        buf, pos = self._buf, self._pos
        bom = buf[pos + 8 : pos + 12]
        if bom == b"\x4d\x3c\x2b\x1a":
            return "<"
        if bom == b"\x1a\x2b\x3c\x4d":
            return ">"
        raise self._error(f"pcapng section header with bad byte-order magic 0x{bom.hex()}")

    def _pcapng_blocks(self) -> Iterator[tuple[float, int, bytes]]:
        order = "<"
        head = struct.Struct(order + "II").unpack_from
        epb = struct.Struct(order + "IIIII").unpack_from
        # Per interface: (linktype, seconds per tick, offset seconds, snaplen).
        ifaces: list[tuple[int, float, float, int]] = []
        last_ts = 0.0
        while True:
            if len(self._buf) - self._pos < 12 and not self._fill(12):
                self.truncated = len(self._buf) > self._pos
                return
            buf, pos = self._buf, self._pos
            btype, blen = head(buf, pos)
            if btype == _SHB:  # same bytes in either order; it sets the order that follows
                order = self._section_order()
                head = struct.Struct(order + "II").unpack_from
                epb = struct.Struct(order + "IIIII").unpack_from
                ifaces = []
                btype, blen = head(buf, pos)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                raise self._error(f"pcapng block of type {btype:#x} with bad length {blen}")
            if len(buf) - pos < blen:
                if not self._fill(blen):
                    self.truncated = True
                    return
                buf, pos = self._buf, self._pos
            self._pos = pos + blen
            body = pos + 8
            if btype == _EPB:
                if blen < 32:
                    raise self._error("pcapng enhanced packet block too short", pos)
                iface, hi, lo, cap, _orig = epb(buf, body)
                if iface >= len(ifaces):
                    raise self._error(f"pcapng packet for undeclared interface {iface}", pos)
                if cap > blen - 32:
                    raise self._error(f"pcapng packet of {cap} bytes overruns its block", pos)
                linktype, tick, tsoff, _snap = ifaces[iface]
                last_ts = ((hi << 32) | lo) * tick + tsoff
                self.records += 1
                yield last_ts, linktype, buf[body + 20 : body + 20 + cap]
            elif btype == _SPB:
                if blen < 16:
                    raise self._error("pcapng simple packet block too short", pos)
                if not ifaces:
                    raise self._error("pcapng simple packet block before any interface", pos)
                orig = struct.unpack_from(order + "I", buf, body)[0]
                linktype, _tick, _off, snap = ifaces[0]
                cap = min(orig, blen - 16, snap or orig)
                self.records += 1
                yield last_ts, linktype, buf[body + 4 : body + 4 + cap]
            elif btype == _IDB:
                ifaces.append(self._interface(order, buf, pos, blen))
            elif btype == _OPB:
                if blen < 32:
                    raise self._error("pcapng packet block too short", pos)
                iface, _drops, hi, lo, cap, _orig = struct.unpack_from(order + "HHIIII", buf, body)
                if iface >= len(ifaces):
                    raise self._error(f"pcapng packet for undeclared interface {iface}", pos)
                if cap > blen - 32:
                    raise self._error(f"pcapng packet of {cap} bytes overruns its block", pos)
                linktype, tick, tsoff, _snap = ifaces[iface]
                last_ts = ((hi << 32) | lo) * tick + tsoff
                self.records += 1
                yield last_ts, linktype, buf[body + 20 : body + 20 + cap]

    def _interface(
        self, order: str, buf: bytes, pos: int, blen: int
    ) -> tuple[int, float, float, int]:
        if blen < 20:
            raise self._error("pcapng interface block too short", pos)
        linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
        tick, tsoff = 1e-6, 0.0
        opt, end = pos + 16, pos + blen - 4
        while opt + 4 <= end:
            code, length = struct.unpack_from(order + "HH", buf, opt)
            if code == 0:
                break
            value = opt + 4
            if value + length > end:
                raise self._error("pcapng interface option overruns its block", opt)
            if code == 9 and length >= 1:  # if_tsresol
                res = buf[value]
                tick = 2.0 ** -(res & 0x7F) if res & 0x80 else 10.0**-res
            elif code == 14 and length >= 8:  # if_tsoffset, seconds
                tsoff = float(struct.unpack_from(order + "q", buf, value)[0])
            opt = value + length + (-length % 4)
        self.linktypes.add(linktype)
        return linktype, tick, tsoff, snaplen


def open_capture(path: str) -> CaptureReader:
    """A CaptureReader on the file at `path`, or on standard input for '-'."""
    if path == "-":
        return CaptureReader(sys.stdin.buffer, "<stdin>")
    stream = open(path, "rb")  # noqa: SIM115 - the reader owns it until the process ends
    try:
        return CaptureReader(stream, path)
    except BaseException:
        stream.close()
        raise
