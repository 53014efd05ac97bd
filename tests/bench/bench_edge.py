"""Edge hot path: frames/s of our parser (and of any per-frame stage plugged in after it),
against scapy's RadioTap dissection and a whole tshark process on the same frames.

The frame mix is built once in memory: every record of the shared captures plus generated
frames (radiotap laid out as Linux mac80211 writes it, with per-chain namespaces; simple
radiotap; PPI; Prism; plain 802.11) from many transmitters, repeated to at least FRAMES.

Stages: ``STAGES`` maps a name to a factory returning ``consume(records)``, which must do the
per-frame work for every ``(ts, linktype, data)`` record.  ``per_frame(feed)`` turns a
per-frame callable such as ``agent.Pipeline.feed(ts, linktype, data)`` into one, so a later
stage (roster lookup + presence) plugs in with one line.  ``frames_per_s`` is the last
stage's throughput (the most complete chain); ``parse_frames_per_s`` is the parser's alone.
"""

from __future__ import annotations

import os
import random
import resource
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from edge_agent.adapters.pcapfile import open_capture
from edge_agent.core import frames

Record = tuple[float, int, bytes]
Consume = Callable[[Iterable[Record]], None]

FRAMES = int(os.environ.get("PASSBY_BENCH_FRAMES", 1_000_000))
SCAPY_SAMPLE = 3000
# tshark decodes ~20k frames/s here: it gets whole cycles of the mix up to this many frames.
TSHARK_FRAMES = int(os.environ.get("PASSBY_BENCH_TSHARK_FRAMES", 200_000))
PCAPS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pcaps"


# -- the frame mix -------------------------------------------------------------------------


def shared_records() -> list[tuple[int, bytes]]:
    out = []
    for path in sorted(PCAPS.rglob("*")):
        if path.suffix in (".pcap", ".cap", ".pcapng"):
            with open_capture(str(path)) as reader:
                out += [(linktype, data) for _ts, linktype, data in reader]
    return out


def generated_records(n: int = 3000, seed: int = 7) -> list[tuple[int, bytes]]:
    """Frames from many transmitters under every radio header we read."""
    from test_frames import (  # tests/ is on sys.path (run.py puts it there)
        ANTENNA,
        DBM,
        F_FCS,
        avs,
        dot11,
        ppi,
        ppi_common,
        prism,
        radiotap,
        rt_fields,
        s8,
    )

    rng = random.Random(seed)
    aps = [bytes([0x00, 0x1A, 0x2B, 0, 0, i]) for i in range(8)]
    phones = [bytes([0x02 | rng.randrange(0, 256) & 0xFC]) + rng.randbytes(5) for _ in range(500)]
    ssid = b"\x00\x09shop-wifi\x01\x08\x82\x84\x8b\x96\x0c\x12\x18\x24"
    out = []
    for _ in range(n):
        ap, phone = rng.choice(aps), rng.choice(phones)
        kind = rng.random()
        if kind < 0.35:
            frame = dot11(0, 4, b"\xff" * 6, phone, b"\xff" * 6, body=ssid + rng.randbytes(40))
        elif kind < 0.5:
            frame = dot11(2, rng.choice([4, 12]), ap, phone, ap, ds=1, qos=False)
        elif kind < 0.6:
            frame = dot11(
                2, 8, ap, phone, ap, ds=1, qos=True, body=rng.randbytes(rng.randrange(60, 600))
            )
        elif kind < 0.85:
            frame = dot11(
                0, 8, b"\xff" * 6, ap, ap, body=rng.randbytes(12) + ssid + rng.randbytes(150)
            )
        else:
            frame = dot11(
                2, 8, phone, ap, ap, ds=2, qos=True, body=rng.randbytes(rng.randrange(60, 900))
            )
        dbm = rng.randrange(-92, -30)
        header = rng.random()
        if header < 0.45:  # Linux mac80211: combined signal, then one namespace per chain
            chains = [{DBM: s8(dbm + rng.randrange(-4, 5)), ANTENNA: bytes([c])} for c in range(2)]
            out.append(
                (127, radiotap(rt_fields(dbm, flags=F_FCS), *chains) + frame + rng.randbytes(4))
            )
        elif header < 0.75:
            out.append((127, radiotap(rt_fields(dbm, flags=0, tsft=False)) + frame))
        elif header < 0.85:
            out.append((192, ppi(ppi_common(dbm)) + frame))
        elif header < 0.9:
            out.append((119, prism(dbm) + frame))
        elif header < 0.92:
            out.append((119, avs(2, dbm) + frame))
        else:
            out.append((105, frame))
    return out


def frame_mix(total: int) -> tuple[list[Record], int]:
    """(records, length of one cycle of the mix), at least `total` records long."""
    base = shared_records() + generated_records()
    random.Random(1).shuffle(base)
    cycle = [(1_700_000_000 + i * 0.001, linktype, data) for i, (linktype, data) in enumerate(base)]
    repeats = -(-total // len(cycle))
    return cycle * repeats, len(cycle)


# -- stages --------------------------------------------------------------------------------


def parse_stage() -> Consume:
    parse, malformed = frames.parse, frames.MalformedFrame

    def consume(records: Iterable[Record]) -> None:
        for _ts, linktype, data in records:
            try:  # noqa: SIM105 - cheaper per frame than contextlib.suppress
                parse(linktype, data)
            except malformed:
                pass

    return consume


def per_frame(
    factory: Callable[[], Callable[[float, int, bytes], object]],
) -> Callable[[], Consume]:
    """Stage factory from a per-frame callable factory (e.g. lambda: Pipeline(...).feed)."""

    def make() -> Consume:
        feed = factory()

        def consume(records: Iterable[Record]) -> None:
            for ts, linktype, data in records:
                feed(ts, linktype, data)

        return consume

    return make


ROSTER_ENTRIES = int(os.environ.get("PASSBY_BENCH_ROSTER", 1_000_000))
ENROLLED_SHARE = 0.3  # share of the mix's distinct client transmitters that are enrolled


def pipeline_stage(records: Sequence[Record]) -> Callable[[], Consume]:
    """The agent's whole per-frame chain: parse + roster lookup (1 M entries) + presence +
    footfall, with a share of the mix's transmitters enrolled so presence really runs."""

    def make() -> Consume:
        import secrets

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from edge_agent.agent import Pipeline
        from edge_agent.core.footfall import Footfall
        from edge_agent.core.presence import PresenceTracker
        from edge_agent.roster import build_roster, load_roster, mac_hash

        site = secrets.token_bytes(16)
        tas = set()
        for _ts, linktype, data in records:
            try:
                parsed = frames.parse(linktype, data)
            except frames.MalformedFrame:
                continue
            if parsed:
                tas.add(parsed[0])
        rng = random.Random(3)
        enrolled = rng.sample(sorted(tas), int(len(tas) * ENROLLED_SHARE))
        entries = [(mac_hash(site, ta), f"{i + 1:016x}") for i, ta in enumerate(enrolled)]
        entries += [
            (rng.getrandbits(64), f"{i:016x}") for i in range(len(entries) + 1, ROSTER_ENTRIES + 1)
        ]
        key = Ed25519PrivateKey.generate()
        roster = load_roster(build_roster(key, "bench", 1, 1.0, entries), key.public_key(), site)
        events: list[object] = []
        pipe = Pipeline(roster, PresenceTracker(), Footfall(secrets.token_bytes(16)), events.append)
        STATS["pipeline"] = lambda: {
            "roster_entries": len(roster),
            "enrolled_transmitters": len(enrolled),
            "matched_frames": pipe.counters.matched,
            "presence_events": len(events),
        }

        def consume(recs: Iterable[Record]) -> None:
            feed = pipe.feed
            t0 = 1_700_000_000.0
            for i, (_ts, linktype, data) in enumerate(recs):
                feed(t0 + i * 0.001, linktype, data)  # 1 000 frames/s of capture time

        return consume

    return make


STATS: dict[str, Callable[[], dict[str, int]]] = {}

# Stages in chain order; the last one is the headline.
STAGES: dict[str, Callable[[], Consume]] = {"parse": parse_stage}


# -- baselines -------------------------------------------------------------------------------


def scapy_rate(records: Iterable[Record], sample: int) -> tuple[float, int]:
    from scapy.layers.dot11 import RadioTap

    chosen = [data for _ts, linktype, data in records if linktype == 127][:sample]
    start = time.perf_counter()
    for data in chosen:
        RadioTap(data)
    return len(chosen) / (time.perf_counter() - start), len(chosen)


def write_pcapng(path: Path, records: Iterable[Record]) -> int:
    """One interface per link type (a pcap holds a single one); returns the record count."""
    ifaces: dict[int, int] = {}
    count = 0

    def block(btype: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    with open(path, "wb") as out:
        out.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        for ts, linktype, data in records:
            if linktype not in ifaces:
                ifaces[linktype] = len(ifaces)
                out.write(block(1, struct.pack("<HHI", linktype, 0, 262144)))
            ticks = int(ts * 1_000_000)
            head = struct.pack(
                "<IIIII", ifaces[linktype], ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)
            )
            out.write(block(6, head + data))
            count += 1
    return count


def file_rates(records: Sequence[Record]) -> tuple[float, float | None, int]:
    """(ours: read + parse, tshark whole process) frames/s on one pcapng file of `records`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mix.pcapng"
        count = write_pcapng(path, records)
        start = time.perf_counter()
        with open_capture(str(path)) as reader:
            parse_stage()(reader)
        ours = count / (time.perf_counter() - start)
        return ours, _tshark(path, count), count


def _tshark(path: Path, count: int) -> float | None:
    command = ["tshark", "-n", "-r", str(path), "-Y", frames.TSHARK_FILTER, "-T", "fields"]
    for field in ("wlan.ta", "wlan.fc.type_subtype", "radiotap.dbm_antsignal"):
        command += ["-e", field]
    start = time.perf_counter()
    try:
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return count / (time.perf_counter() - start)


def measure(consume: Consume, records: Sequence[Record]) -> float:
    start = time.perf_counter()
    consume(records)
    return len(records) / (time.perf_counter() - start)


# -- report -------------------------------------------------------------------------------


def run() -> dict[str, float | int | None]:
    from rich.console import Console
    from rich.table import Table

    records, cycle = frame_mix(FRAMES)
    stages = {**STAGES, "pipeline": pipeline_stage(records[:cycle])}
    rates = {}
    for name, factory in stages.items():
        consume = factory()  # set-up (e.g. building a 1 M roster) is not timed
        rates[name] = measure(consume, records)
    parse_rate = rates["parse"]
    scapy, scapy_n = scapy_rate(records, SCAPY_SAMPLE)
    tshark_sample = records[: max(cycle, TSHARK_FRAMES // cycle * cycle)]
    file_ours, tshark, tshark_n = file_rates(tshark_sample)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    table = Table(title=f"edge hot path: {len(records):,} frames ({cycle:,} distinct, in memory)")
    table.add_column("what")
    table.add_column("frames", justify="right")
    table.add_column("frames/s", justify="right")
    table.add_column("vs parse", justify="right")
    for name, rate in rates.items():
        table.add_row(
            f"ours: {name}", f"{len(records):,}", f"{rate:,.0f}", f"{rate / parse_rate:.2f}x"
        )
    table.add_row(
        "ours: read pcapng + parse (file)",
        f"{tshark_n:,}",
        f"{file_ours:,.0f}",
        f"{file_ours / parse_rate:.2f}x",
    )
    table.add_row(
        "scapy RadioTap(bytes)", f"{scapy_n:,}", f"{scapy:,.0f}", f"{scapy / parse_rate:.4f}x"
    )
    table.add_row(
        "tshark -T fields (whole process)",
        f"{tshark_n:,}",
        "missing" if tshark is None else f"{tshark:,.0f}",
        "-" if tshark is None else f"{tshark / parse_rate:.4f}x",
    )
    table.caption = f"peak RSS {peak_rss_mb:.0f} MB (this process)"
    Console().print(table)

    for name, stats in STATS.items():
        Console().print(f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in stats().items()))
    headline = rates[list(stages)[-1]]
    return {
        "frames": len(records),
        "frames_per_s": round(headline),
        "parse_frames_per_s": round(parse_rate),
        "scapy_frames_per_s": round(scapy),
        "tshark_frames_per_s": None if tshark is None else round(tshark),
        "read_parse_frames_per_s": round(file_ours),
        "ratio_vs_scapy": round(headline / scapy, 1),
        "ratio_vs_tshark": None if tshark is None else round(headline / tshark, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        **{k: v for stats in STATS.values() for k, v in stats().items()},
    }
