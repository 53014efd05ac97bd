"""Run inside a throw-away network namespace: capture on its loopback while injecting raw
radiotap frames, and print what the live capture (with its kernel BPF filter) delivered."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

from scapy.layers.dot11 import Dot11, Dot11Beacon, Dot11ProbeReq, RadioTap

from edge_agent.adapters.capture import LiveCapture
from edge_agent.core import frames

AP = "02:00:5e:10:00:01"
PHONE = "da:a1:19:3c:4e:01"


def main() -> None:
    bpf = sys.argv[1] == "bpf"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    cap = LiveCapture("lo", linktype=frames.LINKTYPE_RADIOTAP, bpf=bpf, poll_s=0.1)
    got: list[bytes] = []
    t = threading.Thread(
        target=lambda: [got.append(d) for _, _, d in cap if d is not None], daemon=True
    )
    t.start()
    kinds = {
        "probe": RadioTap(present="dBm_AntSignal", dBm_AntSignal=-61)
        / Dot11(
            type=0, subtype=4, addr1="ff:ff:ff:ff:ff:ff", addr2=PHONE, addr3="ff:ff:ff:ff:ff:ff"
        )
        / Dot11ProbeReq(),
        "beacon": RadioTap(present="dBm_AntSignal", dBm_AntSignal=-40)
        / Dot11(type=0, subtype=8, addr1="ff:ff:ff:ff:ff:ff", addr2=AP, addr3=AP)
        / Dot11Beacon(),
        "null_tods": RadioTap(present="dBm_AntSignal", dBm_AntSignal=-66)
        / Dot11(type=2, subtype=4, FCfield="to_DS", addr1=AP, addr2=PHONE, addr3=AP),
        "data_fromds": RadioTap(present="dBm_AntSignal", dBm_AntSignal=-45)
        / Dot11(type=2, subtype=0, FCfield="from_DS", addr1=PHONE, addr2=AP, addr3=AP),
    }
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("lo", 0))
    for _ in range(5):
        for pkt in kinds.values():
            tx.send(bytes(pkt))
    time.sleep(0.5)
    cap.close()
    t.join(2)
    parsed = [frames.parse(127, d) for d in got]
    print(
        json.dumps(
            {
                "filtered": cap.filtered,
                "received": len(got),
                "client": [[frames.format_mac(p[0]), p[1], p[2]] for p in parsed if p],
            }
        )
    )


if __name__ == "__main__":
    main()
