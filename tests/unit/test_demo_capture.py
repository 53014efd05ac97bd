"""The committed demo capture is what tests/helpers/gen_demo_capture.py makes, and tells its story."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import statistics
import struct
import sys
import tomllib
import zlib
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest
from scapy.layers.dot11 import Dot11, RadioTap
from scapy.utils import RawPcapReader, rdpcap

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "tests" / "helpers" / "gen_demo_capture.py"
CAPTURE = REPO_ROOT / "cloud_bridge" / "dev" / "demo" / "demo.pcap"
TENANT = REPO_ROOT / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
REGENERATE = f"run '.venv/bin/python {GENERATOR.relative_to(REPO_ROOT)}' and commit {CAPTURE.name}"

ENTER_DBM = -70
RT_FCS, RT_BAD_FCS = 0x10, 0x40


@functools.cache
def _generator() -> ModuleType:
    """tests/helpers/gen_demo_capture.py as a module (it is a script)."""
    spec = importlib.util.spec_from_file_location("gen_demo_capture", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tenant() -> dict:
    return tomllib.loads(TENANT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def enrolled(tenant: dict) -> dict[str, str]:
    """Scenario MAC by name: Carmen's phone uses her second enrolled MAC."""
    people = {c["name"]: c["macs"] for c in tenant["customers"]}
    return {
        "Anna": people["Anna"][0],
        "Boris": people["Boris"][0],
        "Carmen": people["Carmen"][1],
        "Dmitri": people["Dmitri"][0],
    }


@pytest.fixture(scope="module")
def packets():
    if not CAPTURE.is_file():
        pytest.fail(f"{CAPTURE} is missing: {REGENERATE}", pytrace=False)
    return rdpcap(str(CAPTURE))


@pytest.fixture(scope="module")
def client_frames(packets) -> list[tuple[float, str, int, bool, int]]:
    """(t from start, addr2, type, to_ds_only, first dBm) of management and data frames."""
    gen_start = _generator().START
    out = []
    for p in packets:
        if not p.haslayer(Dot11) or not p.haslayer(RadioTap):
            continue
        d = p[Dot11]
        if d.type not in (0, 2) or d.addr2 is None or p[RadioTap].dBm_AntSignal is None:
            continue
        ds = int(d.FCfield) & 0x03
        out.append(
            (
                float(p.time) - gen_start,
                d.addr2,
                d.type,
                d.type == 2 and ds == 1,
                p[RadioTap].dBm_AntSignal,
            )
        )
    return out


def test_committed_capture_is_what_the_generator_makes(tmp_path: Path) -> None:
    if not CAPTURE.is_file():
        pytest.fail(f"{CAPTURE} is missing: {REGENERATE}", pytrace=False)
    out = tmp_path / "demo.pcap"
    assert _generator().main(["--out", str(out), "--quiet"]) == 0
    assert _sha256(out) == _sha256(CAPTURE), (
        f"{CAPTURE.name} is stale or not reproducible: {REGENERATE}"
    )


def test_file_shape() -> None:
    gen = _generator()
    blob = CAPTURE.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", blob)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 127)
    assert len(blob) < 3_000_000
    times = [meta.sec + meta.usec / 1e6 for _, meta in RawPcapReader(str(CAPTURE))]
    assert 15_000 <= len(times) <= 40_000
    assert times == sorted(times)
    assert times[0] >= gen.START and times[-1] < gen.START + 480
    assert times[-1] - times[0] > 470  # about 8 minutes


def test_every_enrolled_phone_sends_to_ds_frames(client_frames, enrolled) -> None:
    to_ds = {mac for _, mac, _, tods, _ in client_frames if tods}
    for name, mac in enrolled.items():
        assert mac in to_ds, f"{name}'s {mac} never sends a ToDS frame"


def test_enrolled_phones_come_within_the_enter_threshold(client_frames, enrolled) -> None:
    for name, mac in enrolled.items():
        best = max(dbm for _, m, _, _, dbm in client_frames if m == mac)
        assert best >= ENTER_DBM, f"{name} never reaches {ENTER_DBM} dBm (best {best})"


def test_carmens_first_mac_is_never_heard(tenant) -> None:
    first = next(c for c in tenant["customers"] if c["name"] == "Carmen")["macs"][0]
    raw = bytes.fromhex(first.replace(":", ""))
    assert not any(raw in data for data, _ in RawPcapReader(str(CAPTURE)))


def test_stays_have_the_scenario_lengths(client_frames, enrolled) -> None:
    """Seconds during which the 15 s median of the enrolled MAC's RSSI is >= -70 dBm."""
    near: dict[str, int] = {}
    for name, mac in enrolled.items():
        readings = [(t, dbm) for t, m, _, _, dbm in client_frames if m == mac]
        near[name] = sum(
            1
            for s in range(480)
            if (w := [dbm for t, dbm in readings if s - 15 < t <= s])
            and statistics.median(w) >= ENTER_DBM
        )
    assert near["Anna"] >= 330, near  # ~6 min inside
    assert 30 <= near["Boris"] <= 75, near  # walks past, ~40 s near the window
    assert 90 <= near["Carmen"] <= 180, near  # ~2 min inside
    assert 70 <= near["Dmitri"] <= 150, near  # ~1.5 min inside


def test_probes_come_from_random_macs_never_enrolled(client_frames, enrolled) -> None:
    probes = {m for _, m, ftype, _, _ in client_frames if ftype == 0} - {
        m for _, m, _, tods, _ in client_frames if tods
    }
    assert not probes & set(enrolled.values())
    local = {m for m in probes if int(m[:2], 16) & 0x02}
    assert len(local) >= 50 and len(local) >= 0.9 * len(probes)


def test_unknown_devices_are_around(client_frames, enrolled, tenant) -> None:
    ap = tenant["store"]["ap_bssid"]
    unknown = {m for _, m, _, _, _ in client_frames} - set(enrolled.values()) - {ap}
    assert len(unknown) >= 30
    unknown_to_ds = {m for _, m, _, tods, _ in client_frames if tods} - set(enrolled.values())
    assert len(unknown_to_ds) >= 4  # non-enrolled phones and laptops on some Wi-Fi


def test_store_ap_beacons_and_answers(packets, enrolled, tenant) -> None:
    ap = tenant["store"]["ap_bssid"]
    beacons = [
        p
        for p in packets
        if p.haslayer(Dot11)
        and p[Dot11].type == 0
        and p[Dot11].subtype == 8
        and p[Dot11].addr2 == ap
    ]
    assert 400 <= len(beacons) <= 500  # thinned to about one per second
    from_ds_to = {
        p[Dot11].addr1
        for p in packets
        if p.haslayer(Dot11)
        and p[Dot11].type == 2
        and int(p[Dot11].FCfield) & 0x03 == 0x02
        and p[Dot11].addr2 == ap
    }
    assert set(enrolled.values()) <= from_ds_to


def test_radiotap_channel_and_first_signal_rule(packets) -> None:
    off_channel, ext, weaker = 0, 0, 0
    for p in packets:
        if not p.haslayer(RadioTap) or p[RadioTap].ChannelFrequency is None:
            continue
        rt = p[RadioTap]
        off_channel += rt.ChannelFrequency != 2437  # only the malformed records
        if rt.present and "Ext" in rt.present:
            ext += 1
            # Per-antenna (signal, antenna) pairs follow the combined signal.
            per_antenna = struct.unpack(f"<{len(rt.notdecoded) // 2 * 'bB'}", rt.notdecoded)
            weaker += all(s < rt.dBm_AntSignal for s in per_antenna[::2])
    assert off_channel <= 7
    assert ext >= 0.15 * len(packets)
    assert weaker == ext


def _rt_flags(data: bytes) -> tuple[int, int] | None:
    """(radiotap length, Flags byte) of a record with a sane radiotap header, else None."""
    if len(data) < 8 or data[0] != 0:
        return None
    it_len, first = struct.unpack_from("<HI", data, 2)
    if not 8 <= it_len <= len(data) or not first & 0x02:
        return None
    off, word = 4, first
    while word & 0x8000_0000:  # more present words follow
        off += 4
        if off + 4 > it_len:
            return None
        word = struct.unpack_from("<I", data, off)[0]
    off += 4
    if first & 0x01:  # TSFT comes first, 8-byte aligned
        off = (off + 7) // 8 * 8 + 8
    return (it_len, data[off]) if off < it_len else None


def test_fcs_is_valid_except_the_one_bad_frame() -> None:
    good = bad = 0
    for data, meta in RawPcapReader(str(CAPTURE)):
        head = _rt_flags(data)
        if head is None or not head[1] & RT_FCS or meta.wirelen > meta.caplen:
            continue
        it_len, flags = head
        if len(data) - it_len < 14:  # shortest frame (ACK) + FCS
            continue
        ok = zlib.crc32(data[it_len:-4]) == struct.unpack("<I", data[-4:])[0]
        if flags & RT_BAD_FCS:
            bad += 1
            assert not ok, "the bad-FCS frame's CRC matches"
        else:
            good += 1
            assert ok, f"a frame without the bad-FCS flag has a wrong CRC: {data.hex()}"
    assert bad == 1 and good > 15_000


def test_junk_is_there() -> None:
    records = list(RawPcapReader(str(CAPTURE)))
    rt_lens = [(d[0], struct.unpack_from("<H", d, 2)[0], len(d)) for d, _ in records if len(d) >= 4]
    assert any(ver != 0 for ver, _, _ in rt_lens)
    assert any(it_len > n for _, it_len, n in rt_lens)
    assert any(it_len < 8 for _, it_len, _ in rt_lens)
    assert any(meta.wirelen > meta.caplen for _, meta in records)


def test_generator_refuses_a_tenant_without_the_cast(tmp_path: Path) -> None:
    tenant = tmp_path / "tenant.toml"
    tenant.write_text(TENANT.read_text(encoding="utf-8").replace('"Boris"', '"Bob"'))
    assert (
        _generator().main(["--tenant", str(tenant), "--out", str(tmp_path / "x.pcap"), "--quiet"])
        == 1
    )


def test_readings_per_person_are_plausible(client_frames, enrolled) -> None:
    by: dict[str, list[int]] = defaultdict(list)
    names = {mac: name for name, mac in enrolled.items()}
    for _, mac, _, _, dbm in client_frames:
        if mac in names:
            by[names[mac]].append(dbm)
    for name, values in by.items():
        assert min(values) >= -100 and max(values) <= -20, name
        assert len(values) >= 30, f"{name}: only {len(values)} frames"
