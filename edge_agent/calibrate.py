"""Calibration (pure): live smoothed RSSI of one enrolled subject, or of the strongest devices anonymously.

The store owner stands at the door with an enrolled phone (or any phone, anonymously), reads
the smoothed value and sets ``enter_dbm``; then where an offer should stop, for ``leave_dbm``.
Anonymous labels are short keyed hashes under a per-run salt: they tell devices apart on the
screen and mean nothing afterwards. No MAC is ever shown or kept.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass

from edge_agent.core.presence import smooth

__all__ = ["MIN_HYSTERESIS_DB", "Reading", "Calibrator", "suggest_thresholds"]

MAX_DEVICES = 5000  # anonymous mode: devices tracked at once (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class Reading:
    label: str
    smoothed_dbm: float | None
    frames: int
    last_seen: float


class _Track:
    __slots__ = ("window", "frames", "last_seen")

    def __init__(self) -> None:
        self.window: deque[tuple[float, int]] = deque()
        self.frames = 0
        self.last_seen = 0.0


class Calibrator:
    """Feed (label source, dBm, time); ``readings(now)`` gives the smoothed values to show."""

    def __init__(self, salt: bytes, window_s: float = 15.0, subject: str | None = None) -> None:
        self.salt = salt
        self.window_s = window_s
        self.subject = subject
        self._tracks: dict[str, _Track] = {}

    def label(self, mac: bytes) -> str:
        return hashlib.blake2b(mac, key=self.salt, digest_size=3).hexdigest()

    def feed(self, mac: bytes, subject: str | None, dbm: int | None, now: float) -> None:
        if dbm is None:
            return
        if self.subject is not None:
            if subject != self.subject:
                return
            key = subject
        else:
            key = self.label(mac)
        track = self._tracks.get(key)
        if track is None:
            if len(self._tracks) >= MAX_DEVICES:
                oldest = min(self._tracks, key=lambda k: self._tracks[k].last_seen)
                del self._tracks[oldest]
            track = self._tracks[key] = _Track()
        track.window.append((now, dbm))
        track.frames += 1
        track.last_seen = now
        while track.window and track.window[0][0] < now - self.window_s:
            track.window.popleft()

    def readings(self, now: float, top: int = 5) -> list[Reading]:
        """Strongest first; devices silent for a whole window are left out."""
        out = []
        for key, t in self._tracks.items():
            recent = [d for ts, d in t.window if ts >= now - self.window_s]
            if not recent:
                continue
            out.append(Reading(key, smooth(recent, arrived=False), t.frames, t.last_seen))
        out.sort(key=lambda r: -(r.smoothed_dbm if r.smoothed_dbm is not None else -999))
        return out[:top]


MIN_HYSTERESIS_DB = 5


def suggest_thresholds(at_door_dbm: float, stop_dbm: float | None = None) -> tuple[int, int]:
    """(enter_dbm, leave_dbm) from the value read at the door and, optionally, where to stop.

    Without a stop reading, leave is 10 dB below enter (the default gap of −70/−80). Leave is
    always at least MIN_HYSTERESIS_DB below enter: single frames scatter by 4–8 dB, and a
    narrower gap makes arrive and leave flap even after smoothing.
    """
    enter = round(at_door_dbm)
    leave = round(stop_dbm) if stop_dbm is not None else enter - 10
    return enter, min(leave, enter - MIN_HYSTERESIS_DB)
