"""A tiny sd_notify client: tell systemd we are ready, alive (watchdog) and what we are doing.

systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket path, ``@`` = abstract namespace) to a
``Type=notify`` service, and ``WATCHDOG_USEC`` (+ ``WATCHDOG_PID``) when ``WatchdogSec=`` is set.
We send newline-separated ``KEY=VALUE`` datagrams: ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``,
``STOPPING=1``. Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op returning
False. A failed send never raises: the watchdog noticing is the failure report.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["SdNotifier", "notify"]

log = logging.getLogger(__name__)


def _address(raw: str) -> str | bytes:
    # "@name" is Linux's abstract namespace: a leading NUL byte on the wire.
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one datagram (e.g. ``"READY=1\\nSTATUS=capturing"``); False if not under systemd."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not path or not state:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), _address(path))
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", path, exc)
        return False
    return True


class SdNotifier:
    """READY/STATUS/STOPPING and a rate-limited watchdog keep-alive for one service process."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = dict(os.environ if env is None else env)
        self.enabled = bool(self._env.get("NOTIFY_SOCKET"))
        self.watchdog_s = self._watchdog_interval()
        self._last_ping: float | None = None

    def _watchdog_interval(self) -> float | None:
        usec = self._env.get("WATCHDOG_USEC", "")
        pid = self._env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid != str(os.getpid()):
            return None  # the watchdog is meant for another process (e.g. our parent)
        return int(usec) / 1_000_000

    def _send(self, *fields: str) -> bool:
        return self.enabled and notify("\n".join(fields), self._env)

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished: systemd marks the unit active and starts watching the watchdog."""
        return self._send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """One line shown by ``systemctl status`` (never put a MAC, phone or name here)."""
        return self._send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self._send("STOPPING=1")

    def watchdog(self, now: float | None = None) -> bool:
        """Keep-alive; sent at most every half watchdog interval, so call it as often as you like."""
        if self.watchdog_s is None or not self.enabled:
            return False
        mono = time.monotonic() if now is None else now
        if self._last_ping is not None and mono - self._last_ping < self.watchdog_s / 2:
            return False
        self._last_ping = mono
        return self._send("WATCHDOG=1")
