"""`edge-agent inspect`: list the client-originated frames of a local capture (shows MACs).

Operator diagnostics on a file the operator already holds; the only place in the product
where a MAC address is printed.  Nothing is stored or sent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import TextIO

from edge_agent.adapters.pcapfile import CaptureFormatError, CaptureReader, open_capture
from edge_agent.core.frames import FrameStats, format_mac

__all__ = ["run"]

# Frame subtypes by tshark's wlan.fc.type_subtype, for the human table.
SUBTYPE_NAMES = {
    0x00: "assoc-req",
    0x02: "reassoc-req",
    0x04: "probe-req",
    0x0A: "disassoc",
    0x0B: "auth",
    0x0C: "deauth",
    0x0D: "action",
    0x20: "data",
    0x24: "null",
    0x28: "qos-data",
    0x2C: "qos-null",
}


@dataclass
class _Device:
    frames: int = 0
    first: float = 0.0
    last: float = 0.0
    dbm: list[int] = field(default_factory=list)
    subtypes: dict[int, int] = field(default_factory=dict)


def run(capture: str, jsonl: bool) -> int:
    """Read `capture` ('-' = stdin); 0 on success, 2 if it cannot be read as a capture."""
    try:
        reader = open_capture(capture)
    except (OSError, CaptureFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stats = FrameStats()
    try:
        with reader:
            if jsonl:
                _jsonl(reader, stats, sys.stdout)
            else:
                devices = _collect(reader, stats)
                _table(devices)
    except CaptureFormatError as exc:
        _summary(reader, stats)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not an error of ours.  Point
        # stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    _summary(reader, stats)
    return 0


def _jsonl(reader: CaptureReader, stats: FrameStats, out: TextIO) -> None:
    feed = stats.feed
    lines: list[str] = []
    for ts, linktype, data in reader:
        parsed = feed(linktype, data)
        if parsed is None:
            continue
        ta, subtype, dbm = parsed
        lines.append(json.dumps({"ts": ts, "ta": format_mac(ta), "subtype": subtype, "dbm": dbm}))
        if len(lines) >= 1024:
            out.write("\n".join(lines) + "\n")
            lines.clear()
    if lines:
        out.write("\n".join(lines) + "\n")
    out.flush()


def _collect(reader: CaptureReader, stats: FrameStats) -> dict[bytes, _Device]:
    devices: dict[bytes, _Device] = {}
    feed = stats.feed
    for ts, linktype, data in reader:
        parsed = feed(linktype, data)
        if parsed is None:
            continue
        ta, subtype, dbm = parsed
        dev = devices.get(ta)
        if dev is None:
            dev = devices[ta] = _Device(first=ts)
        dev.frames += 1
        dev.last = ts
        if dbm is not None:
            dev.dbm.append(dbm)
        dev.subtypes[subtype] = dev.subtypes.get(subtype, 0) + 1
    return devices


def _table(devices: dict[bytes, _Device]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(devices)} transmitter(s) of client-originated frames")
    for name in ("transmitter", "frames", "dBm min/med/max", "seen (s)", "frame kinds"):
        table.add_column(
            name, justify="left" if name in ("transmitter", "frame kinds") else "right"
        )
    for ta, dev in sorted(devices.items(), key=lambda item: -item[1].frames):
        rssi = f"{min(dev.dbm)}/{statistics.median_low(dev.dbm)}/{max(dev.dbm)}" if dev.dbm else "-"
        kinds = ", ".join(
            f"{SUBTYPE_NAMES.get(st, hex(st))}×{n}"
            for st, n in sorted(dev.subtypes.items(), key=lambda item: -item[1])
        )
        # Text cells: a MAC such as 1c:cd:e5:... must not be read as markup or an :emoji:.
        table.add_row(
            Text(format_mac(ta)), str(dev.frames), rssi, f"{dev.last - dev.first:.1f}", Text(kinds)
        )
    Console(emoji=False, markup=False).print(table)


def _summary(reader: CaptureReader, stats: FrameStats) -> None:
    summary = {
        "records": reader.records,
        "client": stats.client,
        "other": stats.other,
        "malformed": stats.malformed,
        "bad_fcs": stats.bad_fcs,
        "truncated": reader.truncated,
        "linktypes": sorted(reader.linktypes),
    }
    print("summary: " + json.dumps(summary), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_agent.inspect", description=__doc__)
    parser.add_argument("capture", help="pcap/pcapng file, or '-' for stdin")
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per client frame")
    args = parser.parse_args(argv)
    return run(args.capture, args.jsonl)


if __name__ == "__main__":
    raise SystemExit(main())
