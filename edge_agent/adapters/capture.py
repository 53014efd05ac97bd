"""Capture sources: a live monitor-mode interface (AF_PACKET + kernel BPF) or a capture file/stream.

Live capture reads raw frames from an ``AF_PACKET`` socket with a classic BPF program attached
in the kernel, so frames that cannot come from a client (beacons, AP-to-client data, ACKs...)
never reach Python. The filter is compiled by libpcap (through scapy's binding) for the
interface's link type. scapy is used only here, at set-up: never per frame.
"""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from edge_agent.core import frames

__all__ = [
    "CLIENT_FILTER",
    "ARPHRD_TO_LINKTYPE",
    "CaptureError",
    "LiveCapture",
    "ChannelHopper",
    "iface_linktype",
    "channel_to_freq",
]

log = logging.getLogger(__name__)

# libpcap expression for "client-originated" frames (see frames.py for the exact rule; the
# parser still applies it fully, including the BSSID and group-address checks BPF cannot do).
# Byte 0 of frame control is subtype<<4 | type<<2 | version: 0x00 assoc req, 0x20 reassoc req,
# 0x40 probe req, 0xa0 disassoc, 0xb0 auth, 0xc0 deauth, 0xd0 action; data frames have type 2
# (bits 0x0c == 0x08) and ToDS=1, FromDS=0 in byte 1.
CLIENT_FILTER = (
    "wlan[0] = 0x00 or wlan[0] = 0x20 or wlan[0] = 0x40 or wlan[0] = 0xa0 or wlan[0] = 0xb0 "
    "or wlan[0] = 0xc0 or wlan[0] = 0xd0 or (wlan[0] & 0x0c = 0x08 and wlan[1] & 0x03 = 0x01)"
)

# Linux ARPHRD_* of a capture interface -> pcap link type.
ARPHRD_TO_LINKTYPE = {
    801: frames.LINKTYPE_IEEE802_11,  # ARPHRD_IEEE80211
    802: frames.LINKTYPE_PRISM,  # ARPHRD_IEEE80211_PRISM
    803: frames.LINKTYPE_RADIOTAP,  # ARPHRD_IEEE80211_RADIOTAP (monitor mode)
}
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SNAPLEN = 4096


class CaptureError(OSError):
    """A live capture that cannot start; the message says why and what to do."""


def iface_linktype(iface: str, sys_class_net: Path = Path("/sys/class/net")) -> int:
    """The pcap link type of an interface, from its ARPHRD type; CaptureError if not 802.11."""
    path = sys_class_net / iface / "type"
    try:
        arphrd = int(path.read_text().strip())
    except FileNotFoundError:
        raise CaptureError(f"interface {iface!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise CaptureError(f"cannot read {path}: {exc}") from None
    if arphrd not in ARPHRD_TO_LINKTYPE:
        raise CaptureError(
            f"interface {iface!r} is not in monitor mode (ARPHRD type {arphrd}, want 803 radiotap);"
            f" run: iw dev {iface} set type monitor (with the interface down)"
        )
    return ARPHRD_TO_LINKTYPE[arphrd]


def channel_to_freq(channel: int) -> int:
    """802.11 channel number -> centre frequency in MHz (2.4 and 5 GHz bands)."""
    if channel == 14:
        return 2484
    if 1 <= channel <= 13:
        return 2407 + 5 * channel
    if 32 <= channel <= 196:
        return 5000 + 5 * channel
    raise ValueError(f"channel {channel} is not a 2.4/5 GHz channel")


def _bpf_program(linktype: int) -> bytes | None:
    """Compile CLIENT_FILTER for a link type; returns the kernel ``sock_fprog`` bytes."""
    from scapy.arch.common import compile_filter  # libpcap's compiler, at set-up only

    try:
        prog = compile_filter(CLIENT_FILTER, linktype=linktype)
    except Exception as exc:  # scapy raises several types for a missing libpcap
        log.warning("kernel BPF filter unavailable (%s); filtering in user space only", exc)
        return None
    import ctypes

    insns = ctypes.string_at(prog.bf_insns, prog.bf_len * 8)
    return insns


class LiveCapture:
    """Iterates ``(ts, linktype, frame)`` from a live interface until ``stop`` is set."""

    def __init__(
        self,
        iface: str,
        linktype: int | None = None,
        bpf: bool = True,
        stop: threading.Event | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.iface = iface
        self.linktype = linktype if linktype is not None else iface_linktype(iface)
        self.stop = stop or threading.Event()
        self.truncated = False
        self.records = 0
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise CaptureError(
                "opening a raw packet socket needs CAP_NET_RAW: run as root or grant the "
                "capability (the systemd unit sets AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN)"
            ) from None
        self.filtered = False
        if bpf:
            self._attach_filter()
        try:
            self.sock.bind((iface, ETH_P_ALL))
        except OSError as exc:
            self.sock.close()
            raise CaptureError(f"cannot capture on {iface!r}: {exc.strerror}") from None
        self.sock.settimeout(poll_s)

    def _attach_filter(self) -> None:
        import ctypes

        insns = _bpf_program(self.linktype)
        if insns is None:
            return
        buf = ctypes.create_string_buffer(insns)
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        fprog = struct.pack("HL", len(insns) // 8, ctypes.addressof(buf))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self.filtered = True

    def kernel_stats(self) -> tuple[int, int]:
        """(packets, drops) the kernel counted since the last call."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        return packets, drops

    def __iter__(self) -> Iterator[tuple[float, int, bytes | None]]:
        """Frames as they arrive; ``(now, linktype, None)`` after ``poll_s`` of silence so the
        caller's clock (presence timeouts, stats) keeps running on a quiet channel."""
        recvfrom = self.sock.recvfrom
        linktype = self.linktype
        now = time.time
        while not self.stop.is_set():
            try:
                data, addr = recvfrom(SNAPLEN)
            except TimeoutError:
                yield now(), linktype, None
                continue
            except OSError as exc:
                raise CaptureError(f"capture on {self.iface!r} failed: {exc.strerror}") from None
            if addr[2] == PACKET_OUTGOING:
                continue  # frames this host transmits (injection) are not observations
            self.records += 1
            yield now(), linktype, data

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=5, check=False)


class ChannelHopper:
    """Keeps the interface on the store AP's channel, or hops a plan with a dwell per channel."""

    def __init__(
        self,
        iface: str,
        channels: Sequence[int],
        dwell_s: float = 0.5,
        runner: Runner = _run,
        stop: threading.Event | None = None,
    ) -> None:
        if not channels:
            raise ValueError("a channel plan needs at least one channel")
        for ch in channels:
            channel_to_freq(ch)  # validates
        self.iface = iface
        self.channels = list(channels)
        self.dwell_s = dwell_s
        self.runner = runner
        self.stop = stop or threading.Event()
        self.current: int | None = None
        self.errors = 0
        self._thread: threading.Thread | None = None

    def set_channel(self, channel: int) -> bool:
        res = self.runner(["iw", "dev", self.iface, "set", "channel", str(channel)])
        if res.returncode != 0:
            self.errors += 1
            log.error("cannot set %s to channel %s: %s", self.iface, channel, res.stderr.strip())
            return False
        self.current = channel
        return True

    def start(self) -> None:
        self.set_channel(self.channels[0])
        if len(self.channels) > 1:
            self._thread = threading.Thread(target=self._hop, name="channel-hop", daemon=True)
            self._thread.start()

    def _hop(self) -> None:
        i = 0
        while not self.stop.wait(self.dwell_s):
            i = (i + 1) % len(self.channels)
            self.set_channel(self.channels[i])

    def close(self) -> None:
        self.stop.set()
        if self._thread:
            self._thread.join(timeout=2)
