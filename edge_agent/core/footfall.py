"""Anonymous footfall: unique devices per UTC hour, visitors vs passers-by, never keeping a MAC.

A pure core: no IO, no clock (time is passed in), no logging.

Identity. A device is known only as ``blake2b(mac, key=salt, digest_size=8)``, held in memory for
the current hour and dropped at the hour's end; the salt is given by the caller (daily from
``secrets.token_bytes(16)``), never written down, and forgotten on rotation. Neither MACs, hashes
nor the salt leave the object: ``snapshot`` returns counts only.

Definitions (PRODUCT.md: a visit is >= 2-5 minutes of dwell; passers-by = seen - visitors):

* ``unique``: distinct device hashes heard in the hour (any frame, any RSSI).
* ``visitors``: devices heard *near* (RSSI >= ``near_dbm``, or a frame with no RSSI, taken as
  nearby like presence does) at least twice, the last near frame ``visit_dwell_s`` or more after
  the first one, both within the hour. The dwell is first-to-last near frame, not continuous
  presence: a device near at 10:01 and again at 10:40 counts as a visitor. A visit that straddles
  the hour boundary counts only if it gathers the dwell within one hour (a slight undercount).
* ``passers_by`` = ``unique`` - ``visitors``.

Upper bound of people, not a count: phones probe from random MACs (Android 10+, iOS 14+) that
change per scan or per network, so one person is usually several devices, and a salt rotation
mid-hour makes every device new again. Rotate at an hour boundary (daily at 00:00 UTC) to avoid
that double count: counts so far are kept, identities are not, so the same MAC heard before and
after a rotation in the same hour is counted twice, and its dwell starts over.

Bounded memory: at most ``max_devices`` hashes per hour (about 100 bytes each); frames of devices
not yet known once the bound is hit are counted in ``untracked_frames`` and nowhere else, since
without keeping them we cannot tell whether they are new.
"""

from __future__ import annotations

import hashlib
import math
from typing import Final

__all__ = ["HOUR_S", "Footfall"]

HOUR_S: Final = 3600
_NOT_NEAR: Final = math.inf  # device heard, never near this hour
_VISITOR: Final = -math.inf  # device already counted as a visitor this hour
_ID_CACHE: Final = 4096  # recently heard transmitters whose hash is kept in memory
_SALT_MIN, _SALT_MAX = 16, 64  # blake2b keys are at most 64 bytes


def _hour_of(now: float) -> int:
    return math.floor(now / HOUR_S) * HOUR_S


class Footfall:
    """Counts all devices heard (enrolled or not) per UTC hour without storing who they are."""

    __slots__ = (
        "_salt",
        "_dwell",
        "_near",
        "_max",
        "_hour",
        "_first_near",
        "_unique",
        "_visitors",
        "_untracked",
        "_prev",
        "_next_hour",
        "_ids",
    )

    def __init__(
        self,
        salt: bytes,
        visit_dwell_s: float = 300.0,
        near_dbm: int = -70,
        max_devices: int = 200_000,
    ) -> None:
        if not math.isfinite(visit_dwell_s) or visit_dwell_s <= 0:
            raise ValueError(
                f"visit_dwell_s must be a finite number of seconds > 0, got {visit_dwell_s!r}"
            )
        if isinstance(max_devices, bool) or not isinstance(max_devices, int) or max_devices < 1:
            raise ValueError(f"max_devices must be an integer >= 1, got {max_devices!r}")
        if isinstance(near_dbm, bool) or not isinstance(near_dbm, int):
            raise ValueError(f"near_dbm must be an integer dBm, got {near_dbm!r}")
        self._salt = _checked_salt(salt)
        self._dwell = float(visit_dwell_s)
        self._near = near_dbm
        self._max = max_devices
        self._hour: int | None = None
        # hash -> time of first near frame this hour, or _NOT_NEAR / _VISITOR
        self._first_near: dict[int, float] = {}
        self._unique = 0
        self._visitors = 0
        self._untracked = 0
        self._prev = (0, 0)  # (unique, visitors) of the previous hour
        self._next_hour = -math.inf  # fast path: no roll needed while now < this
        # mac -> keyed hash for the transmitters heard a moment ago (memory only, bounded,
        # dropped with the salt): hashing every frame would cost a fifth of the hot path.
        self._ids: dict[bytes, int] = {}

    def __repr__(self) -> str:
        return f"<Footfall hour={self._hour} unique={self._unique} visitors={self._visitors}>"

    def observe(self, mac: bytes, dbm: int | None, now: float) -> None:
        """One frame from transmitter ``mac`` at ``now``; the MAC is hashed and not kept."""
        if now >= self._next_hour:
            self._roll(now)
        ids = self._ids
        h = ids.get(mac)
        if h is None:
            h = int.from_bytes(hashlib.blake2b(mac, key=self._salt, digest_size=8).digest(), "big")
            if len(ids) >= _ID_CACHE:
                ids.clear()
            ids[mac] = h
        near = dbm is None or dbm >= self._near
        devices = self._first_near
        first = devices.get(h)
        if first is None:
            if len(devices) >= self._max:
                self._untracked += 1
                return
            devices[h] = now if near else _NOT_NEAR
            self._unique += 1
            return
        if not near or first == _VISITOR:
            return
        if first == _NOT_NEAR:
            devices[h] = now
        elif now - first >= self._dwell:
            devices[h] = _VISITOR
            self._visitors += 1

    def rotate_salt(self, salt: bytes, now: float) -> None:
        """Switch to a new salt; the old one and every identity made with it are forgotten."""
        new = _checked_salt(salt)
        self._roll(now)
        self._salt = new
        self._ids = {}
        self._first_near = {}  # counts so far stay; identities do not

    def snapshot(self, now: float) -> dict[str, int]:
        """Counts of the hour that ``now`` falls in and of the hour before (ints only)."""
        self._roll(now)
        hour = self._hour if self._hour is not None else _hour_of(now)
        prev_unique, prev_visitors = self._prev
        return {
            "hour_start": hour,
            "unique": self._unique,
            "visitors": self._visitors,
            "passers_by": self._unique - self._visitors,
            "prev_hour_unique": prev_unique,
            "prev_hour_visitors": prev_visitors,
            "prev_hour_passers_by": prev_unique - prev_visitors,
            "untracked_frames": self._untracked,
        }

    def _roll(self, now: float) -> None:
        hour = _hour_of(now)
        if self._hour is None:
            self._hour = hour
            self._next_hour = hour + HOUR_S
            return
        if hour <= self._hour:
            return  # same hour, or time went backwards: keep counting into the current hour
        adjacent = hour - self._hour == HOUR_S
        self._prev = (self._unique, self._visitors) if adjacent else (0, 0)
        self._hour = hour
        self._next_hour = hour + HOUR_S
        self._first_near = {}
        self._unique = self._visitors = self._untracked = 0


def _checked_salt(salt: bytes) -> bytes:
    if not isinstance(salt, (bytes, bytearray)) or not _SALT_MIN <= len(salt) <= _SALT_MAX:
        raise ValueError(
            f"salt must be {_SALT_MIN}-{_SALT_MAX} random bytes (secrets.token_bytes(16)), "
            f"got {type(salt).__name__} of length {len(salt) if isinstance(salt, (bytes, bytearray)) else '?'}"
        )
    return bytes(salt)
