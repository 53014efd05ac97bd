"""Generate the demo capture ``cloud_bridge/dev/demo/demo.pcap`` from the demo tenant, reproducibly.

Usage::

    .venv/bin/python tests/helpers/gen_demo_capture.py [--out PATH] [--tenant PATH] [--quiet]

The output is byte-identical on every run (fixed seed, one random stream per
device, integer microsecond timestamps, little-endian pcap header);
``tests/unit/test_demo_capture.py`` regenerates it and compares the sha256 with the
committed file, so after changing this script, run it and commit the new pcap.

What the sensor hears
=====================
Classic pcap, link type 127 (radiotap), microsecond timestamps, one radio fixed
on channel 6 (2437 MHz), 8 minutes from 2026-03-14T10:00:00Z. The sensor box
``door-1`` sits just inside the door at (0, 0); the store is y > 0 (counter at
about (4, 5)), the near pavement is y = -4..-6, the far pavement y = -16.

Signal model: mean RSSI = -40 dBm - 10 * 2.8 * log10(distance in m) - wall or
floor loss, plus Gaussian noise (sigma 4 dB) and, for 2 % of frames, an outlier
(mostly a 10-20 dB fade, sometimes a 10-20 dB spike). Frames below -92 dBm are
not captured. So -70 dBm is about 12 m and -80 dBm about 27 m from the box.

Radiotap: every frame has Flags (FCS at end, so every frame ends with a CRC-32),
Rate, Channel (2437, CCK or OFDM + 2 GHz) and dBm antenna signal. About a
quarter of the frames look like a two-chain NIC: TSFT, then an extended present
bitmap (radiotap namespace) carrying one or two per-antenna dBm signals and
antenna indices after the combined one. With one extra bitmap word the TSFT
needs 4 bytes of alignment padding. The per-antenna values are weaker than the
combined value, so a parser must use the *first* dBm antenna signal.

The store AP (``ap_bssid``, SSID ``ap_ssid``) beacons; only every 10th beacon
is kept (one per 1.024 s instead of one per 102.4 ms) to keep the file small.
It answers probes, authenticates and associates phones, sends protected
FromDS data and group-addressed data, and ACKs. Two other APs are on the same
channel: an office upstairs (beacons, data to its two desktops, 4-address WDS
frames to its repeater) and a weak one far away with a hidden SSID.

The people (enrolled per-network MACs from the tenant file)
===========================================================
Every phone scans: bursts of 1-3 probe requests, each burst from a fresh random
locally administered MAC, as Android 10+/iOS 14+ do. Those never match. Once a
phone is near enough to the store AP (mean >= -75 dBm) it joins the store
Wi-Fi with its enrolled MAC: authentication, association request, the EAPOL
4-way handshake, an ADDBA action frame, then null or QoS-null frames to the AP
(ToDS, power-save bit toggling) every 2-5 s and protected QoS-data bursts
every 6-20 s, which the AP answers FromDS. Payloads are short random bytes
(the parser reads headers only), so data frames stay small.

=========  ==========================  ===========================================
who        MAC                         what happens (seconds from the start)
=========  ==========================  ===========================================
Anna       her enrolled MAC            walks along the pavement from the west from
                                       t=10, enters at about t=70, stays near the
                                       counter and the window seat (-55..-65 dBm)
                                       until about t=417 (~6 min: arrive, then
                                       visit), leaves east: out of range by t~470.
Boris      his enrolled MAC            walks past on the near pavement from t=100,
                                       stops 25 s at the shop window (about 6 m,
                                       peak mean about -62 dBm), walks on east: about
                                       40 s above -70 dBm; never enters.
Carmen     her SECOND enrolled MAC     comes from the east at t=190, inside from
                                       about t=250 to t=367 (~2 min), leaves west.
Dmitri     his enrolled MAC            (no SMS consent) crosses from the far
                                       pavement at t=240, inside from about t=307
                                       to t=402 (~1.5 min), leaves east.
=========  ==========================  ===========================================

Everyone else (30 devices, none enrolled): 18 passers-by on both pavements
(three of them on bikes), 3 people lingering outside (bus stop, bench), 4
non-enrolled customers inside (two join the store Wi-Fi with their own MACs,
two only probe), the barista's phone and a customer's laptop inside all the
time (both on the store Wi-Fi; the laptop makes most of the data traffic and
probes with its universal MAC), two office desktops upstairs on the office AP,
and a smart TV next door that probes with its universal MAC.

Junk the parser must survive (counted, never raised): one frame with the
radiotap bad-FCS flag (a corrupted copy of one of Anna's null frames: a bit
flipped in the duration field, so its CRC no longer matches) and seven
malformed records: radiotap length beyond the record, radiotap length below
8, radiotap version 1, an extended present bitmap that never ends, an empty
802.11 part, a data frame cut by the snap length inside addr2 (caplen <
wirelen), and a probe request cut inside addr2. Plus one well-formed frame of
type 3 (extension), which is never a client frame.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import struct
import sys
import tomllib
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scapy.layers.dot11 import (
    Dot11,
    Dot11AssoReq,
    Dot11AssoResp,
    Dot11Auth,
    Dot11Beacon,
    Dot11Elt,
    Dot11EltDSSSet,
    Dot11EltRates,
    Dot11ProbeReq,
    Dot11ProbeResp,
    Dot11QoS,
    RadioTap,
    RadioTapExtendedPresenceMask,
)
from scapy.packet import Raw
from scapy.utils import PcapWriter

REPO = Path(__file__).resolve().parents[2]
TENANT = REPO / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
OUT = REPO / "cloud_bridge" / "dev" / "demo" / "demo.pcap"

SEED = 20260314
START = int(datetime(2026, 3, 14, 10, 0, tzinfo=UTC).timestamp())
DURATION_S = 480.0
CHANNEL = 6
CHANNEL_MHZ = 2437
LINKTYPE_RADIOTAP = 127
TSF_BASE_US = 7_318_554_112  # the capture NIC's TSF counter at START (any value works)

# Radio model (see the module docstring).
REF_DBM = -40.0
PATH_LOSS_N = 2.8
NOISE_SIGMA_DB = 4.0
OUTLIER_P = 0.02
SENSITIVITY_DBM = -92
JOIN_DBM = -75.0  # a phone joins its saved network above this mean level...
DROP_DBM = -88.0  # ...and silently drops off below this one
EXT_RADIOTAP_P = 0.25  # share of frames with per-antenna signals in an extended bitmap

# Radiotap flags.
RT_FCS = 0x10
RT_BAD_FCS = 0x40
# Frame control flags byte.
TO_DS, FROM_DS, RETRY, PWR_MGT, PROTECTED = 0x01, 0x02, 0x08, 0x10, 0x40

BROADCAST = "ff:ff:ff:ff:ff:ff"
TSFT_OFFSET = 16  # in the extended radiotap headers below
SEQ_OFFSET = 22  # sequence control in 3- and 4-address management and data frames
RATES_IE = [0x82, 0x84, 0x8B, 0x96, 0x0C, 0x12, 0x18, 0x24]
EXT_RATES_IE = bytes([0x30, 0x48, 0x60, 0x6C])
RSN_IE = bytes.fromhex("0100000fac040100000fac040100000fac020c00")
HT_CAP_IE = struct.pack("<HB", 0x01EF, 0x17) + b"\xff\xff" + bytes(21)  # 26 bytes

Point = tuple[float, float]
Waypoints = tuple[tuple[float, float, float], ...]  # (t_s, x_m, y_m) waypoints


class ScenarioError(RuntimeError):
    """The tenant file does not hold the people this scenario needs."""


@dataclass(frozen=True)
class AccessPoint:
    name: str
    bssid: str
    ssid: str
    pos: Point
    extra_loss_db: float = 0.0
    hidden: bool = False
    gateway: str = "02:00:5e:10:00:fe"  # addr3 of data frames (the router behind the AP)


@dataclass(frozen=True)
class Station:
    """A phone, laptop or other client and how it moves and talks."""

    name: str
    path: Waypoints
    mac: str | None = None  # the MAC it uses on its network; None: never joins one
    bssid: str | None = None
    probe_every: tuple[float, float] | None = (20.0, 90.0)
    probe_mac: str | None = None  # None: a fresh random MAC per scan
    null_every: tuple[float, float] = (2.0, 5.0)
    data_every: tuple[float, float] = (6.0, 20.0)
    burst: tuple[int, int] = (2, 8)
    size: tuple[int, int] = (24, 140)
    extra_loss_db: float = 0.0
    always_joined: bool = False
    enrolled: bool = False


@dataclass(order=True)
class Frame:
    t_us: int
    n: int
    kind: str = field(compare=False)
    body: bytes = field(compare=False)  # 802.11 frame without FCS
    rssi: int = field(compare=False)
    rate: float = field(compare=False)
    tx: str | None = field(compare=False, default=None)  # gets a sequence number when set


class Capture:
    """Collects frames from all simulated transmitters; writes them in time order."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.raw: list[tuple[int, str, bytes, int]] = []  # (t_us, kind, record, wirelen)

    def add(
        self, t: float, kind: str, body: bytes, rssi: int | None, rate: float, tx: str | None = None
    ) -> None:
        if rssi is None or not 0.0 <= t < DURATION_S:
            return  # too weak to be captured, or outside the capture window
        self.frames.append(Frame(round(t * 1e6), len(self.frames), kind, body, rssi, rate, tx))

    def add_raw(self, t: float, kind: str, record: bytes, wirelen: int | None = None) -> None:
        self.raw.append((round(t * 1e6), kind, record, wirelen or len(record)))


# ---------------------------------------------------------------- geometry and radio


def route(t0: float, start: Point, *legs: Point | float, speed: float = 1.3) -> Waypoints:
    """Waypoints for a walk: a leg is a point to walk to, or a number of seconds to stay."""
    t, (x, y) = t0, start
    out = [(t, x, y)]
    for leg in legs:
        if isinstance(leg, tuple):
            t += math.dist((x, y), leg) / speed
            x, y = leg
        else:
            t += float(leg)
        out.append((t, x, y))
    return tuple(out)


def position(path: Waypoints, t: float) -> Point:
    if t <= path[0][0]:
        return path[0][1], path[0][2]
    for (t0, x0, y0), (t1, x1, y1) in zip(path, path[1:], strict=False):
        if t <= t1:
            f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
            return x0 + f * (x1 - x0), y0 + f * (y1 - y0)
    return path[-1][1], path[-1][2]


def mean_dbm(pos: Point, extra_loss_db: float = 0.0) -> float:
    d = max(math.hypot(*pos), 1.0)
    return REF_DBM - 10.0 * PATH_LOSS_N * math.log10(d) - extra_loss_db


def observe(rng: random.Random, mean: float) -> int | None:
    """One frame's RSSI as the sensor measures it, or None when it is not captured."""
    v = mean + rng.gauss(0.0, NOISE_SIGMA_DB)
    if rng.random() < OUTLIER_P:
        v += (1 if rng.random() < 0.3 else -1) * rng.uniform(10.0, 20.0)
    rssi = round(v)
    return None if rssi < SENSITIVITY_DBM else min(rssi, -20)


def fmt_mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def random_la_mac(rng: random.Random, avoid: set[str]) -> str:
    """A random locally administered unicast MAC, as phones use for scanning."""
    while True:
        b = bytearray(rng.getrandbits(8) for _ in range(6))
        b[0] = (b[0] & 0xFC) | 0x02
        mac = fmt_mac(bytes(b))
        if mac not in avoid:
            return mac


def is_group(mac: str) -> bool:
    return bool(int(mac[:2], 16) & 0x01)


# ---------------------------------------------------------------- 802.11 frames


def mgmt(subtype: int, a1: str, a2: str, a3: str, fc: int = 0) -> Dot11:
    return Dot11(
        type=0,
        subtype=subtype,
        FCfield=fc,
        ID=0 if is_group(a1) else 314,
        addr1=a1,
        addr2=a2,
        addr3=a3,
    )


def beacon_body(ap: AccessPoint) -> bytes:
    ssid = b"" if ap.hidden else ap.ssid.encode()
    pkt = (
        mgmt(8, BROADCAST, ap.bssid, ap.bssid)
        / Dot11Beacon(timestamp=0, beacon_interval=100, cap=0x0431)
        / Dot11Elt(ID=0, info=ssid)
        / Dot11EltRates(rates=RATES_IE)
        / Dot11EltDSSSet(channel=CHANNEL)
        / Dot11Elt(ID=5, info=b"\x00\x01\x00\x00")
        / Dot11Elt(ID=50, info=EXT_RATES_IE)
        / Dot11Elt(ID=48, info=RSN_IE)
        / Dot11Elt(ID=45, info=HT_CAP_IE)
    )
    return bytes(pkt)


def probe_req(src: str) -> bytes:
    pkt = (
        mgmt(4, BROADCAST, src, BROADCAST)
        / Dot11ProbeReq()
        / Dot11Elt(ID=0, info=b"")
        / Dot11EltRates(rates=RATES_IE)
        / Dot11Elt(ID=50, info=EXT_RATES_IE)
        / Dot11Elt(ID=45, info=HT_CAP_IE)
    )
    return bytes(pkt)


def probe_resp(ap: AccessPoint, dst: str, tsf: int) -> bytes:
    pkt = (
        mgmt(5, dst, ap.bssid, ap.bssid)
        / Dot11ProbeResp(timestamp=tsf, beacon_interval=100, cap=0x0431)
        / Dot11Elt(ID=0, info=ap.ssid.encode())
        / Dot11EltRates(rates=RATES_IE)
        / Dot11EltDSSSet(channel=CHANNEL)
        / Dot11Elt(ID=48, info=RSN_IE)
    )
    return bytes(pkt)


def auth(src: str, dst: str, bssid: str, seqnum: int) -> bytes:
    return bytes(mgmt(11, dst, src, bssid) / Dot11Auth(algo=0, seqnum=seqnum, status=0))


def assoc_req(sta: str, ap: AccessPoint) -> bytes:
    pkt = (
        mgmt(0, ap.bssid, sta, ap.bssid)
        / Dot11AssoReq(cap=0x0431, listen_interval=10)
        / Dot11Elt(ID=0, info=ap.ssid.encode())
        / Dot11EltRates(rates=RATES_IE)
        / Dot11Elt(ID=48, info=RSN_IE)
        / Dot11Elt(ID=45, info=HT_CAP_IE)
    )
    return bytes(pkt)


def assoc_resp(sta: str, ap: AccessPoint, aid: int) -> bytes:
    pkt = (
        mgmt(1, sta, ap.bssid, ap.bssid)
        / Dot11AssoResp(cap=0x0431, status=0, AID=0xC000 | aid)
        / Dot11EltRates(rates=RATES_IE)
    )
    return bytes(pkt)


def addba_req(sta: str, bssid: str) -> bytes:
    # Block Ack category (3), ADDBA request (0), dialog token, parameters, timeout, SSN.
    action = bytes([3, 0, 1]) + struct.pack("<HHH", 0x1002, 0, 0x0010)
    return bytes(mgmt(13, bssid, sta, bssid) / Raw(action))


def data(
    a1: str, a2: str, a3: str, fc: int, payload: bytes, qos: bool = True, a4: str | None = None
) -> bytes:
    return data_header(a1, a2, a3, fc, qos, a4) + payload


@functools.cache
def data_header(a1: str, a2: str, a3: str, fc: int, qos: bool, a4: str | None) -> bytes:
    # Cached: scapy builds about 1 k frames/s, and the header repeats per (addresses, flags).
    hdr = Dot11(
        type=2,
        subtype=8 if qos else 0,
        FCfield=fc,
        ID=0 if is_group(a1) else 314,
        addr1=a1,
        addr2=a2,
        addr3=a3,
        **({"addr4": a4} if a4 else {}),
    )
    return bytes(hdr / Dot11QoS(TID=0) if qos else hdr)


@functools.cache
def null(sta: str, bssid: str, qos: bool, pwr_mgt: bool) -> bytes:
    fc = TO_DS | (PWR_MGT if pwr_mgt else 0)
    hdr = Dot11(
        type=2, subtype=12 if qos else 4, FCfield=fc, ID=314, addr1=bssid, addr2=sta, addr3=bssid
    )
    return bytes(hdr / Dot11QoS(TID=0) if qos else hdr)


@functools.cache
def ack(ra: str) -> bytes:
    return bytes(Dot11(type=1, subtype=13, ID=0, addr1=ra))


def eapol(rng: random.Random, size: int) -> bytes:
    # LLC/SNAP + EAPOL ethertype, then key-frame bytes (content is irrelevant here).
    return bytes.fromhex("aaaa03000000888e") + rng.randbytes(size)


def ccmp_payload(rng: random.Random, lo: int, hi: int) -> bytes:
    # CCMP header + ciphertext + MIC: opaque bytes, as the sensor sees them.
    return rng.randbytes(8 + rng.randint(lo, hi) + 8)


# ---------------------------------------------------------------- behaviour


class Sim:
    """Runs every transmitter and drops what it sends into a Capture."""

    def __init__(self, store_ap: AccessPoint, aps: list[AccessPoint], avoid: set[str]) -> None:
        self.cap = Capture()
        self.store_ap = store_ap
        self.aps = {ap.bssid: ap for ap in aps}
        self.avoid = avoid
        self.aid = 0

    def ap_rssi(self, rng: random.Random, ap: AccessPoint) -> int | None:
        return observe(rng, mean_dbm(ap.pos, ap.extra_loss_db))

    def unicast(
        self,
        rng: random.Random,
        t: float,
        kind: str,
        body: bytes,
        tx: str,
        rssi: int | None,
        rate: float,
        ack_rssi: int | None,
        ra: str,
    ) -> float:
        """A unicast frame and its ACK from the receiver; returns the time after both."""
        self.cap.add(t, kind, body, rssi, rate, tx=tx)
        airtime = (len(body) + 4) * 8 / (rate * 1e6)
        t_ack = t + airtime + 16e-6
        self.cap.add(t_ack, "ack", ack(tx), ack_rssi, 24.0 if rate >= 6 else 1.0)
        return t_ack + 60e-6 + rng.uniform(0, 400e-6)

    def beacons(self, ap: AccessPoint, every_s: float) -> None:
        rng = random.Random(f"{SEED}/beacon/{ap.name}")
        template = bytearray(beacon_body(ap))
        t = rng.uniform(0.0, every_s)
        while t < DURATION_S:
            tsf = TSF_BASE_US + round(t * 1e6)
            template[24:32] = struct.pack("<Q", tsf)
            self.cap.add(
                t,
                "beacon" if ap is self.store_ap else "beacon_other_ap",
                bytes(template),
                self.ap_rssi(rng, ap),
                1.0,
                tx=ap.bssid,
            )
            t += every_s

    def group_data(self, ap: AccessPoint, every: tuple[float, float]) -> None:
        rng = random.Random(f"{SEED}/group/{ap.name}")
        t = rng.uniform(*every)
        while t < DURATION_S:
            dst = rng.choice((BROADCAST, "33:33:00:00:00:01", "01:00:5e:00:00:fb"))
            body = data(
                dst,
                ap.bssid,
                ap.gateway,
                FROM_DS | PROTECTED,
                ccmp_payload(rng, 40, 120),
                qos=False,
            )
            self.cap.add(t, "data_from_ds_group", body, self.ap_rssi(rng, ap), 1.0, tx=ap.bssid)
            t += rng.uniform(*every)

    def wds(self, ap: AccessPoint, repeater: str, every: tuple[float, float]) -> None:
        rng = random.Random(f"{SEED}/wds/{ap.name}")
        t = rng.uniform(*every)
        while t < DURATION_S:
            src = rng.choice(("00:1d:7e:55:20:11", "00:1d:7e:55:20:12"))
            body = data(
                repeater,
                ap.bssid,
                ap.gateway,
                TO_DS | FROM_DS | PROTECTED,
                ccmp_payload(rng, 40, 200),
                a4=src,
            )
            t = self.unicast(
                rng,
                t,
                "data_wds",
                body,
                ap.bssid,
                self.ap_rssi(rng, ap),
                54.0,
                observe(rng, mean_dbm((-14.0, 14.0), 14.0)),
                repeater,
            )
            t += rng.uniform(*every)

    def station(self, st: Station) -> None:
        rng = random.Random(f"{SEED}/station/{st.name}")
        t_end = min(DURATION_S, st.path[-1][0])
        ap = self.aps.get(st.bssid) if st.bssid else None
        inf = math.inf
        joined = st.always_joined and ap is not None
        timers = {
            "probe": st.path[0][0] + rng.uniform(0, st.probe_every[1]) if st.probe_every else inf,
            "null": st.path[0][0] + rng.uniform(*st.null_every) if joined else inf,
            "data": st.path[0][0] + rng.uniform(0, st.data_every[1]) if joined else inf,
            "check": st.path[0][0] if ap and not st.always_joined else inf,
        }
        pwr = False
        while True:
            what, t = min(timers.items(), key=lambda kv: kv[1])
            if t >= t_end:
                return
            mean = mean_dbm(position(st.path, t), st.extra_loss_db)
            if what == "check":
                timers["check"] = t + 1.0
                if not joined and mean >= JOIN_DBM and ap is not None:
                    t_done = self.join(rng, st, ap, t, mean)
                    joined = True
                    timers["null"] = t_done + rng.uniform(*st.null_every)
                    timers["data"] = t_done + rng.uniform(0.2, 1.0)  # DHCP, DNS, portal check
                elif joined and mean < DROP_DBM:
                    joined = False
                    timers["null"] = timers["data"] = inf
            elif what == "probe":
                self.scan(rng, st, t, mean)
                timers["probe"] = t + rng.uniform(*st.probe_every)  # type: ignore[misc]
            elif what == "null" and ap is not None:
                pwr = not pwr
                body = null(st.mac or "", ap.bssid, qos=rng.random() < 0.4, pwr_mgt=pwr)
                kind = "qos_null_to_ds" if body[0] == 0xC8 else "null_to_ds"
                self.unicast(
                    rng,
                    t,
                    kind,
                    body,
                    st.mac or "",
                    observe(rng, mean),
                    24.0,
                    self.ap_rssi(rng, ap),
                    ap.bssid,
                )
                timers["null"] = t + rng.uniform(*st.null_every)
            elif what == "data" and ap is not None:
                self.exchange(rng, st, ap, t, mean)
                timers["data"] = t + rng.uniform(*st.data_every)

    def scan(self, rng: random.Random, st: Station, t: float, mean: float) -> None:
        src = st.probe_mac or random_la_mac(rng, self.avoid)
        for _ in range(rng.randint(1, 3)):
            self.cap.add(t, "probe_req", probe_req(src), observe(rng, mean), 1.0, tx=src)
            # The store AP answers wildcard probes it hears.
            if mean >= -85 and rng.random() < 0.8:
                t_r = t + rng.uniform(0.001, 0.004)
                tsf = TSF_BASE_US + round(t_r * 1e6)
                self.unicast(
                    rng,
                    t_r,
                    "probe_resp",
                    probe_resp(self.store_ap, src, tsf),
                    self.store_ap.bssid,
                    self.ap_rssi(rng, self.store_ap),
                    1.0,
                    observe(rng, mean),
                    src,
                )
            t += rng.uniform(0.01, 0.03)

    def join(
        self, rng: random.Random, st: Station, ap: AccessPoint, t: float, mean: float
    ) -> float:
        sta = st.mac or ""
        self.aid += 1
        steps = [
            ("auth_req", auth(sta, ap.bssid, ap.bssid, 1), sta, True),
            ("auth_resp", auth(ap.bssid, sta, ap.bssid, 2), ap.bssid, False),
            ("assoc_req", assoc_req(sta, ap), sta, True),
            ("assoc_resp", assoc_resp(sta, ap, self.aid), ap.bssid, False),
            (
                "eapol_from_ds",
                data(sta, ap.bssid, ap.bssid, FROM_DS, eapol(rng, 95), False),
                ap.bssid,
                False,
            ),
            (
                "eapol_to_ds",
                data(ap.bssid, sta, ap.bssid, TO_DS, eapol(rng, 117), False),
                sta,
                True,
            ),
            (
                "eapol_from_ds",
                data(sta, ap.bssid, ap.bssid, FROM_DS, eapol(rng, 151), False),
                ap.bssid,
                False,
            ),
            ("eapol_to_ds", data(ap.bssid, sta, ap.bssid, TO_DS, eapol(rng, 95), False), sta, True),
            ("action", addba_req(sta, ap.bssid), sta, True),
        ]
        for kind, body, tx, from_sta in steps:
            sta_rssi, ap_rssi = observe(rng, mean), self.ap_rssi(rng, ap)
            ra = ap.bssid if from_sta else sta
            rate = 1.0 if kind.startswith(("auth", "assoc")) else 24.0
            t = self.unicast(
                rng,
                t,
                kind,
                body,
                tx,
                sta_rssi if from_sta else ap_rssi,
                rate,
                ap_rssi if from_sta else sta_rssi,
                ra,
            )
            t += rng.uniform(0.0005, 0.003)
        return t

    def exchange(
        self, rng: random.Random, st: Station, ap: AccessPoint, t: float, mean: float
    ) -> None:
        sta = st.mac or ""
        for _ in range(rng.randint(*st.burst)):
            rate = rng.choice((24.0, 36.0, 48.0, 54.0))
            if rng.random() < 0.5:
                body = data(
                    ap.bssid, sta, ap.gateway, TO_DS | PROTECTED, ccmp_payload(rng, *st.size)
                )
                t = self.unicast(
                    rng,
                    t,
                    "data_to_ds",
                    body,
                    sta,
                    observe(rng, mean),
                    rate,
                    self.ap_rssi(rng, ap),
                    ap.bssid,
                )
            else:
                body = data(
                    sta, ap.bssid, ap.gateway, FROM_DS | PROTECTED, ccmp_payload(rng, *st.size)
                )
                t = self.unicast(
                    rng,
                    t,
                    "data_from_ds",
                    body,
                    ap.bssid,
                    self.ap_rssi(rng, ap),
                    rate,
                    observe(rng, mean),
                    sta,
                )
            t += rng.uniform(0.0002, 0.02)


# ---------------------------------------------------------------- the scenario


def load_people(tenant_path: Path) -> dict[str, str]:
    """The enrolled MAC each person's phone uses in this scenario, by name."""
    with tenant_path.open("rb") as fh:
        tenant = tomllib.load(fh)
    wanted = {"Anna": 0, "Boris": 0, "Carmen": 1, "Dmitri": 0}  # Carmen uses her second MAC
    macs = {c["name"]: c["macs"] for c in tenant.get("customers", [])}
    out = {}
    for name, idx in wanted.items():
        if name not in macs or len(macs[name]) <= idx:
            raise ScenarioError(
                f"{tenant_path}: the scenario needs customer {name!r} with at "
                f"least {idx + 1} enrolled MAC(s)"
            )
        out[name] = macs[name][idx].lower()
    return out


def store_of(tenant_path: Path) -> AccessPoint:
    with tenant_path.open("rb") as fh:
        store = tomllib.load(fh)["store"]
    if int(store.get("channel", CHANNEL)) != CHANNEL:
        raise ScenarioError(f"{tenant_path}: the demo capture is on channel {CHANNEL}")
    return AccessPoint("store", store["ap_bssid"].lower(), store["ap_ssid"], (4.0, 2.0))


def people(macs: dict[str, str], ap: str) -> list[Station]:
    """The four enrolled customers' walks (see the table in the module docstring)."""
    walks = {
        "Anna": route(
            10.0,
            (-70.0, -4.0),
            (-1.0, -4.0),
            (0.0, -1.0),
            (4.0, 5.0),
            40.0,
            (3.0, 4.0),
            90.0,
            (2.0, 3.5),
            120.0,
            (4.0, 5.0),
            40.0,
            (3.0, 4.0),
            38.0,
            (0.0, -1.0),
            (1.0, -4.0),
            (70.0, -4.0),
        ),
        "Boris": route(100.0, (-90.0, -5.5), (2.0, -5.5), 25.0, (90.0, -5.5)),
        "Carmen": route(
            190.0,
            (75.0, -4.0),
            (1.0, -4.0),
            (0.0, -1.0),
            (4.0, 5.0),
            50.0,
            (3.0, 4.0),
            45.0,
            (0.0, -1.0),
            (-1.0, -4.0),
            (-75.0, -4.0),
        ),
        "Dmitri": route(
            240.0,
            (-75.0, -16.0),
            (-5.0, -16.0),
            (-1.0, -4.0),
            (0.0, -1.0),
            (4.0, 5.0),
            81.0,
            (0.0, -1.0),
            (1.0, -4.0),
            (70.0, -4.0),
        ),
    }
    return [
        Station(name, path, mac=macs[name], bssid=ap, probe_every=(25.0, 80.0), enrolled=True)
        for name, path in walks.items()
    ]


def crowd(ap: str, office: str, avoid: set[str]) -> list[Station]:
    """The 30 devices nobody enrolled."""
    rng = random.Random(f"{SEED}/crowd")
    out: list[Station] = []
    for i in range(18):  # passers-by, both pavements, both directions
        bike = i % 6 == 5
        y = rng.choice((-4.0, -4.5, -5.0, -6.0, -15.0, -16.0, -17.0))
        sign = rng.choice((-1.0, 1.0))
        speed = rng.uniform(4.0, 5.5) if bike else rng.uniform(0.9, 1.6)
        t0 = rng.uniform(-60.0, 440.0)
        quiet = rng.random() < 0.3  # screen off: scans rarely
        out.append(
            Station(
                f"passer-{i:02d}",
                route(t0, (-90.0 * sign, y), (90.0 * sign, y), speed=speed),
                probe_every=(90.0, 240.0) if quiet else (15.0, 60.0),
            )
        )
    for i, (spot, wait) in enumerate(
        (((14.0, -15.0), 260.0), ((16.0, -15.5), 170.0), ((-7.0, -5.0), 130.0))
    ):
        t0 = rng.uniform(0.0, 200.0)
        side = rng.choice((-80.0, 80.0))
        out.append(
            Station(
                f"lingerer-{i}",
                route(t0, (side, spot[1]), spot, wait, (-side, spot[1])),
                probe_every=(20.0, 70.0),
            )
        )
    for i in range(4):  # customers who never enrolled; two use the guest Wi-Fi
        t0 = rng.uniform(0.0, 250.0)
        side = rng.choice((-70.0, 70.0))
        seat = (rng.uniform(-3.0, 7.0), rng.uniform(2.0, 8.0))
        wifi = i < 2
        out.append(
            Station(
                f"customer-{i}",
                route(
                    t0,
                    (side, -4.0),
                    (0.0, -4.0),
                    (0.0, -1.0),
                    seat,
                    rng.uniform(120.0, 420.0),
                    (0.0, -1.0),
                    (0.0, -4.0),
                    (-side, -4.0),
                ),
                mac=random_la_mac(rng, avoid) if wifi else None,
                bssid=ap if wifi else None,
                probe_every=(30.0, 90.0),
            )
        )
    out.append(
        Station(
            "barista",
            route(-1.0, (5.0, 7.0), 200.0, (6.0, 9.0), 60.0, (5.0, 7.0), 300.0),
            mac=random_la_mac(rng, avoid),
            bssid=ap,
            always_joined=True,
            probe_every=(120.0, 300.0),
            data_every=(10.0, 40.0),
        )
    )
    out.append(
        Station(
            "laptop",
            route(-1.0, (2.0, 6.0), 600.0),
            mac="3c:22:fb:41:9a:07",
            bssid=ap,
            always_joined=True,
            probe_every=(100.0, 160.0),
            probe_mac="3c:22:fb:41:9a:07",
            null_every=(3.0, 8.0),
            data_every=(0.3, 1.6),
            burst=(4, 16),
            size=(24, 120),
        )
    )
    for i, spot in enumerate(((-3.0, 12.0), (-9.0, 14.0))):
        mac = f"00:1d:7e:55:20:{0x11 + i:02x}"
        out.append(
            Station(
                f"office-{i}",
                route(-1.0, spot, 600.0),
                mac=mac,
                bssid=office,
                always_joined=True,
                probe_every=None,
                extra_loss_db=12.0,
                null_every=(8.0, 20.0),
                data_every=(1.5, 6.0),
                burst=(2, 8),
            )
        )
    out.append(
        Station(
            "smart-tv",
            route(-1.0, (-15.0, 20.0), 600.0),
            probe_mac="a8:23:fe:0c:61:d2",
            probe_every=(50.0, 70.0),
            extra_loss_db=15.0,
        )
    )
    return out


def junk(cap: Capture, anna: str, bssid: str) -> None:
    """The bad-FCS frame and the malformed records (see the module docstring)."""

    def rt(flags: int = RT_FCS, signal: int = -61) -> bytes:
        return bytes(
            RadioTap(
                present="Flags+Rate+Channel+dBm_AntSignal",
                Flags=flags,
                Rate=24,
                ChannelFrequency=CHANNEL_MHZ,
                ChannelFlags="OFDM+2GHz",
                dBm_AntSignal=signal,
            )
        )

    good = bytearray(null(anna, bssid, qos=False, pwr_mgt=False))
    good[SEQ_OFFSET : SEQ_OFFSET + 2] = struct.pack("<H", 0x0A20)
    fcs = struct.pack("<I", zlib.crc32(bytes(good)))
    bad = bytearray(good)
    bad[3] ^= 0x04  # one flipped bit in the duration field: the CRC no longer matches
    cap.add_raw(200.000137, "bad_fcs", rt(RT_FCS | RT_BAD_FCS, -58) + bytes(bad) + fcs)

    probe = probe_req("6a:3f:10:c2:95:e1")
    qos_data = data(bssid, "5e:77:d0:41:0b:9a", "02:00:5e:10:00:fe", TO_DS | PROTECTED, bytes(60))
    records = [
        (31.5, "malformed_rt_len_overrun", struct.pack("<BBHI", 0, 0, 200, 0x2E) + bytes(22), None),
        (64.2, "malformed_rt_len_short", struct.pack("<BBHI", 0, 0, 4, 0) + probe, None),
        (118.9, "malformed_rt_version", struct.pack("<BBHI", 1, 0, 8, 0) + probe, None),
        (
            177.3,
            "malformed_rt_ext_runaway",
            struct.pack("<BBH", 0, 0, 24) + struct.pack("<I", 0x8000_0000) * 5,
            None,
        ),
        (233.7, "malformed_dot11_empty", rt(), None),
        (
            289.4,
            "malformed_dot11_cut_in_addr2",
            rt() + qos_data[:14],
            len(rt()) + len(qos_data) + 4,
        ),
        (341.0, "malformed_probe_cut_in_addr2", rt(0) + probe[:13], None),
        (402.6, "extension_type3", rt(0) + bytes([0x0C, 0x00]) + bytes(22), None),
    ]
    for t, kind, record, wirelen in records:
        cap.add_raw(t, kind, record, wirelen)


def radiotap(rng: random.Random, f: Frame, flags: int) -> bytes:
    if rng.random() >= EXT_RADIOTAP_P:
        return radiotap_plain(flags, f.rate, f.rssi)
    # A two-chain NIC: TSFT, the combined signal first, then per-antenna signal + antenna index
    # in the radiotap namespace of the next present word(s). Antennas hear less than the sum.
    n_ant = rng.choice((1, 2))
    ants = tuple(max(f.rssi - rng.randint(1, 7), -127) for _ in range(n_ant))
    hdr = bytearray(radiotap_ext(flags, f.rate, f.rssi, ants))
    hdr[TSFT_OFFSET : TSFT_OFFSET + 8] = struct.pack("<Q", TSF_BASE_US + f.t_us)
    return bytes(hdr)


@functools.cache
def radiotap_plain(flags: int, rate: float, rssi: int) -> bytes:
    return bytes(
        RadioTap(
            present="Flags+Rate+Channel+dBm_AntSignal",
            Flags=flags,
            Rate=rate,
            ChannelFrequency=CHANNEL_MHZ,
            ChannelFlags=channel_flags(rate),
            dBm_AntSignal=rssi,
        )
    )


@functools.cache
def radiotap_ext(flags: int, rate: float, rssi: int, ants: tuple[int, ...]) -> bytes:
    """Radiotap with TSFT = 0 (patched per frame) and len(ants) per-antenna signals."""
    ant = (1 << 5) | (1 << 11)  # dBm_AntSignal + Antenna
    words = [
        RadioTapExtendedPresenceMask(present=ant | (1 << 29) | (1 << 31), index=i + 1)
        for i in range(len(ants) - 1)
    ]
    words.append(RadioTapExtendedPresenceMask(present=ant, index=len(ants)))
    extra = b"".join(struct.pack("<bB", sig, i) for i, sig in enumerate(ants))
    hdr = bytes(
        RadioTap(
            present="TSFT+Flags+Rate+Channel+dBm_AntSignal+RadiotapNS+Ext",
            Ext=words,
            mac_timestamp=0,
            Flags=flags,
            Rate=rate,
            ChannelFrequency=CHANNEL_MHZ,
            ChannelFlags=channel_flags(rate),
            dBm_AntSignal=rssi,
            notdecoded=extra,
        )
    )
    # 8-byte fixed part + one word per extra namespace, padded to 8 for TSFT: always 16.
    if hdr[TSFT_OFFSET : TSFT_OFFSET + 8] != bytes(8):
        raise ScenarioError(f"unexpected radiotap layout: {hdr.hex()}")
    return hdr


def channel_flags(rate: float) -> str:
    return "CCK+2GHz" if rate < 6 else "OFDM+2GHz"


def simulate(tenant_path: Path) -> Capture:
    store_ap = store_of(tenant_path)
    macs = load_people(tenant_path)
    office = AccessPoint(
        "office",
        "00:1d:7e:31:4c:08",
        "Hollis-Office",
        (-6.0, 10.0),
        12.0,
        gateway="00:1d:7e:31:4c:01",
    )
    far = AccessPoint("far", "04:f0:21:7a:13:5e", "", (40.0, 35.0), 6.0, hidden=True)
    avoid = {m.lower() for m in macs.values()} | {store_ap.bssid, office.bssid, far.bssid}
    sim = Sim(store_ap, [store_ap, office, far], avoid)
    sim.beacons(store_ap, 1.024)
    sim.beacons(office, 2.048)
    sim.beacons(far, 2.048)
    sim.group_data(store_ap, (2.0, 8.0))
    sim.group_data(office, (4.0, 12.0))
    sim.wds(office, "00:1d:7e:31:4c:0a", (4.0, 10.0))
    stations = people(macs, store_ap.bssid) + crowd(store_ap.bssid, office.bssid, avoid)
    for st in stations:
        sim.station(st)
    junk(sim.cap, macs["Anna"], store_ap.bssid)
    return sim.cap


def write(cap: Capture, out: Path) -> Counter[str]:
    """Write all records in time order; returns the count per kind."""
    rng = random.Random(f"{SEED}/radiotap")
    seq: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    records: list[tuple[int, int, str, bytes, int]] = []
    for f in sorted(cap.frames):
        body = bytearray(f.body)
        if f.tx is not None:
            body[SEQ_OFFSET : SEQ_OFFSET + 2] = struct.pack("<H", (seq[f.tx] % 4096) << 4)
            seq[f.tx] += 1
        body += struct.pack("<I", zlib.crc32(body))
        record = radiotap(rng, f, RT_FCS) + bytes(body)
        records.append((f.t_us, 0, f.kind, record, len(record)))
    records += [(t, 1, kind, rec, wl) for t, kind, rec, wl in cap.raw]
    records.sort(key=lambda r: (r[0], r[1]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = PcapWriter(str(tmp), linktype=LINKTYPE_RADIOTAP, endianness="<", snaplen=65535)
    try:
        writer.write_header(None)
        for t_us, _, kind, record, wirelen in records:
            writer.write_packet(
                record, sec=START + t_us // 1_000_000, usec=t_us % 1_000_000, wirelen=wirelen
            )
            kinds[kind] += 1
    finally:
        writer.close()
    os.replace(tmp, out)
    return kinds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"output pcap (default: {OUT})")
    ap.add_argument("--tenant", type=Path, default=TENANT, help="tenant TOML with the people")
    ap.add_argument("--quiet", action="store_true", help="print nothing")
    args = ap.parse_args(argv)
    try:
        kinds = write(simulate(args.tenant), args.out)
    except (ScenarioError, OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        print(f"gen_demo_capture: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        for kind, n in sorted(kinds.items()):
            print(f"{kind:32} {n:6}")
        print(
            f"{'total':32} {sum(kinds.values()):6}  ->  {args.out} "
            f"({args.out.stat().st_size} bytes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
