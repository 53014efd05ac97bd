"""Run inside a throw-away network namespace: Mosquitto on the namespace's loopback, the agent
capturing live on ``lo`` (kernel BPF), injected frames of an enrolled phone walking in, and a
subscriber that prints the presence events the agent published."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scapy.layers.dot11 import Dot11, Dot11Beacon, RadioTap

from cloud_bridge.dev.mosquitto import LocalMosquitto
from edge_agent.roster import build_roster, mac_hash, subject_id

AP = "02:00:5e:10:00:01"
PHONE = "da:a1:19:3c:4e:01"
STRANGER = "7a:11:22:33:44:55"


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp())
    broker = LocalMosquitto(work / "mosquitto")
    broker.start()
    site = bytes(range(16))
    key = Ed25519PrivateKey.generate()
    subject = subject_id(b"k" * 32, "C-1")
    (work / "edge").mkdir()
    (work / "edge" / "roster.bin").write_bytes(
        build_roster(
            key,
            "s1",
            1,
            time.time(),
            [(mac_hash(site, bytes.fromhex(PHONE.replace(":", ""))), subject)],
        )
    )
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )
    (work / "edge.toml").write_text(
        f'store_id = "s1"\nsensor_id = "d1"\ndata_dir = "{work / "edge"}"\nsite_key = "{site.hex()}"\n'
        f'roster_public_key = "{pub}"\n[mqtt]\nport = {broker.port}\n[presence]\nabsence_timeout_s = 2\n'
    )
    events: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spy", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: events.append(json.loads(m.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("passby/v1/s1/d1/events", qos=1)
    sub.loop_start()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "run",
            "-c",
            str(work / "edge.toml"),
            "--iface",
            "lo",
            "--linktype",
            "127",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.0)  # agent connected and capturing
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("lo", 0))
    for _ in range(30):
        for dbm, ta in ((-50, PHONE), (-45, STRANGER)):
            frame = RadioTap(present="dBm_AntSignal", dBm_AntSignal=dbm) / Dot11(
                type=2, subtype=4, FCfield="to_DS", addr1=AP, addr2=ta, addr3=AP
            )
            tx.send(bytes(frame))
        beacon = (
            RadioTap(present="dBm_AntSignal", dBm_AntSignal=-30)
            / Dot11(type=0, subtype=8, addr1="ff:ff:ff:ff:ff:ff", addr2=AP, addr3=AP)
            / Dot11Beacon()
        )
        tx.send(bytes(beacon))
        time.sleep(0.02)
    time.sleep(4.0)  # silence: absence timeout (2 s) -> leave, via the live heartbeats
    agent.terminate()
    out, err = agent.communicate(timeout=30)
    sub.loop_stop()
    broker.stop()
    summary = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    print(
        json.dumps(
            {
                "events": events,
                "summary": summary,
                "rc": agent.returncode,
                "subject": subject,
                "stderr": err.decode()[-1500:],
            }
        )
    )


if __name__ == "__main__":
    main()
