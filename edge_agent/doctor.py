"""``edge-agent doctor``: is the capture interface able to see the store's phones? Says how to fix it.

Facts are gathered from sysfs, ``iw`` and a short live capture; ``diagnose`` turns them into
checks. Every message here matches a row of the troubleshooting table in hardware/README.md.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Facts", "Check", "KNOWN_GOOD", "KNOWN_BAD", "gather", "diagnose"]

# Drivers with solid monitor mode (radiotap, dBm signal, channel set by iw), by kernel module.
KNOWN_GOOD: dict[str, str] = {
    "mt76x2u": "MediaTek MT7612U",
    "mt7921u": "MediaTek MT7921AU",
    "mt76x0u": "MediaTek MT7610U",
    "ath9k_htc": "Atheros AR9271",
    "rt2800usb": "Ralink RT5370 / RT3070",
    "mt7601u": "MediaTek MT7601U",
}
# Drivers that look like they work but do not (or only with patched firmware).
KNOWN_BAD: dict[str, str] = {
    "brcmfmac": "the Raspberry Pi's built-in Broadcom Wi-Fi has no monitor mode without "
    "patched firmware (nexmon); use a USB adapter from the known-good list",
    "rtl8xxxu": "Realtek rtl8xxxu drops most frames in monitor mode and reports no dBm signal",
    "r8188eu": "Realtek RTL8188EU staging driver has no usable monitor mode",
}


@dataclass
class Facts:
    iface: str
    exists: bool = False
    wireless: bool = False
    arphrd: int | None = None
    driver: str | None = None
    monitor_supported: bool | None = None
    channel: int | None = None
    can_raw: bool = False
    raw_error: str = ""
    frames_seen: int | None = None
    listen_s: float = 0.0
    want_channel: int | None = None


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str
    fix: str = ""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _iw(*args: str) -> str:
    try:
        res = subprocess.run(["iw", *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout if res.returncode == 0 else ""


def gather(
    iface: str,
    want_channel: int | None,
    listen_s: float = 3.0,
    sys_class_net: Path = Path("/sys/class/net"),
) -> Facts:
    """Look at the interface without changing anything."""
    f = Facts(iface=iface, want_channel=want_channel, listen_s=listen_s)
    base = sys_class_net / iface
    f.exists = base.exists()
    if not f.exists:
        return f
    t = _read(base / "type")
    f.arphrd = int(t) if t and t.isdigit() else None
    f.wireless = (base / "phy80211").exists() or (base / "wireless").exists()
    drv = base / "device" / "driver"
    f.driver = os.path.basename(os.readlink(drv)) if drv.is_symlink() else None
    if f.wireless:
        phy = _read(base / "phy80211" / "name")
        info = _iw("phy", phy, "info") if phy else ""
        if info:
            modes = info.split("Supported interface modes:", 1)[-1].split("Band", 1)[0]
            f.monitor_supported = "* monitor" in modes
        m = re.search(r"channel (\d+)", _iw("dev", iface, "info"))
        f.channel = int(m.group(1)) if m else None
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.close()
        f.can_raw = True
    except PermissionError as exc:
        f.raw_error = exc.strerror or "permission denied"
    except OSError as exc:
        f.raw_error = exc.strerror or str(exc)
    if f.can_raw and f.arphrd == 803 and listen_s > 0:
        f.frames_seen = _count_frames(iface, listen_s)
    return f


def _count_frames(iface: str, seconds: float) -> int:
    from edge_agent.adapters.capture import LiveCapture

    stop = threading.Event()
    cap = LiveCapture(iface, bpf=False, stop=stop, poll_s=0.2)
    n = 0
    deadline = time.monotonic() + seconds
    for _ts, _lt, data in cap:
        if data is not None:
            n += 1
        if time.monotonic() > deadline:
            break
    cap.close()
    return n


def diagnose(f: Facts) -> list[Check]:
    """Turn facts into checks, in the order a person would fix them; stop at the first blocker."""
    checks: list[Check] = []
    if not f.exists:
        checks.append(
            Check(
                "interface",
                False,
                f"interface {f.iface} does not exist",
                "plug in the USB Wi-Fi adapter and check `ip link`; the udev rule "
                "names it wlan-mon",
            )
        )
        return checks
    checks.append(Check("interface", True, f"interface {f.iface} exists"))
    if not f.wireless:
        checks.append(
            Check(
                "wireless",
                False,
                f"{f.iface} is not a Wi-Fi interface",
                "pass the monitor adapter's interface, e.g. --iface wlan1",
            )
        )
        return checks
    checks.append(Check("wireless", True, f"{f.iface} is a Wi-Fi interface"))
    if f.driver in KNOWN_BAD:
        checks.append(
            Check(
                "driver",
                False,
                f"driver {f.driver}: {KNOWN_BAD[f.driver]}",
                "use an adapter from hardware/README.md (e.g. MT7612U, AR9271)",
            )
        )
    elif f.driver in KNOWN_GOOD:
        checks.append(
            Check("driver", True, f"driver {f.driver} ({KNOWN_GOOD[f.driver]}) is known good")
        )
    else:
        checks.append(
            Check(
                "driver",
                True,
                f"driver {f.driver or 'unknown'} is not on the tested list; it may work",
                "prefer an adapter from hardware/README.md",
            )
        )
    if f.monitor_supported is False:
        checks.append(
            Check(
                "monitor-capable",
                False,
                f"{f.iface}'s chip cannot do monitor mode",
                "use an adapter from hardware/README.md",
            )
        )
        return checks
    if f.arphrd != 803:
        checks.append(
            Check(
                "monitor-mode",
                False,
                f"{f.iface} is not in monitor mode",
                f"ip link set {f.iface} down && iw dev {f.iface} set type monitor && "
                f"ip link set {f.iface} up (the passby-monitor service does this)",
            )
        )
    else:
        checks.append(Check("monitor-mode", True, f"{f.iface} is in monitor mode (radiotap)"))
    if f.want_channel is not None:
        if f.channel == f.want_channel:
            checks.append(Check("channel", True, f"listening on channel {f.channel}"))
        else:
            checks.append(
                Check(
                    "channel",
                    False,
                    f"listening on channel {f.channel or 'unknown'}, the store AP is on {f.want_channel}",
                    f"iw dev {f.iface} set channel {f.want_channel}",
                )
            )
    if not f.can_raw:
        checks.append(
            Check(
                "permissions",
                False,
                f"cannot open a raw socket: {f.raw_error}",
                "run as root or give the agent CAP_NET_RAW and CAP_NET_ADMIN",
            )
        )
        return checks
    checks.append(Check("permissions", True, "raw capture allowed (CAP_NET_RAW)"))
    if f.frames_seen is not None:
        if f.frames_seen == 0:
            checks.append(
                Check(
                    "frames",
                    False,
                    f"no frames in {f.listen_s:.0f} s on the channel",
                    "check the antenna and the channel; move the box nearer the entrance",
                )
            )
        else:
            checks.append(
                Check(
                    "frames",
                    True,
                    f"{f.frames_seen} frames in {f.listen_s:.0f} s "
                    f"({f.frames_seen / max(f.listen_s, 0.001):.0f}/s)",
                )
            )
    return checks
