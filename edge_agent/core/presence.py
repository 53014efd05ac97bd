"""Presence of enrolled subjects near the store: smoothed RSSI, hysteresis and absence timeout.

A pure core in the style of h11: no IO, no clock, no logging. The caller feeds one matched frame
at a time with its capture time and gets back the events it caused; ``tick`` turns silence into
``leave`` events; ``flush`` ends the input. Everything that affects the state machine lives in the
tables right below.

States of a tracked subject::

    AWAY --strong--> NEAR --dwell--> VISITING
      ^                |                 |
      +-----weak-------+-------weak------+        (leave; the subject stays tracked)
    silent / evict / end: NEAR, VISITING -> GONE with a leave; AWAY -> GONE silently

Signals:

* ``STRONG``/``MID``/``WEAK``: the smoothed RSSI is at or above ``enter_dbm``, in the hysteresis
  band, or below ``leave_dbm``. Only crossing the *far* threshold changes state, so a signal
  flapping between the two thresholds never re-arrives.
* A subject that has **never** had an RSSI reading during its tracking (captures without a radio
  header, e.g. plain 802.11 link type) is treated as heard nearby: its first frame is ``STRONG``
  and it arrives at once; only the absence timeout can make it leave. A frame without RSSI from a
  subject that has had RSSI counts as a frame and refreshes ``last_seen`` but leaves the
  smoothed value alone.
* ``DWELL``: an arrived subject was last heard ``visit_dwell_s`` or more after it arrived (one
  ``visit`` per stay).
* ``SILENT``: no frame for ``absence_timeout_s`` (found by ``tick``, or by ``feed`` when a frame
  comes after the silence: that ends the old stay and starts a new one with a new ``arrive``).
* ``EVICT``: ``max_subjects`` are tracked and a new one is heard; the least recently fed subject is
  dropped, with a ``leave`` if it had arrived (better a slightly early leave than a stay that never
  ends on the bridge).
* ``END``: ``flush``, end of input.

Smoothing: the window keeps the subject's RSSI readings of the last ``window_s`` seconds (at most
``window_max_frames``, at least ``window_s / window_max_frames`` seconds apart, so a phone
streaming hundreds of frames a second costs O(1) per frame and a bounded array). The smoothed
value is a *trimmed mean*: sort, drop ``n // 4`` readings at each end, and always drop at least the
one reading that argues for a change of state (the strongest while away, the weakest once
arrived). Why not a plain median: a median of readings alternating -69/-81 jumps between the two
values with the parity of the window and would leave and re-arrive; the trimmed mean sits near
-75, inside the band. Why the extra trim: a single spike (-40 among -90s) can then never trigger
an arrive (the SMS trigger) on its own once there is anything to compare it with; with one reading
in the window there is nothing to compare, and that reading is taken as is.

Events: every event's ``ts`` is the subject's ``last_seen`` (the frame that caused it; for a
timeout, eviction or flush ``leave`` the last frame heard, i.e. the best estimate of when the
person left). ``dwell_s`` is from the arrive to the last frame heard while still near (0 for the
arrive), so a stay has a ``visit`` exactly when its ``leave`` has ``dwell_s >= visit_dwell_s``.
``rssi_max`` is over the stay (from its first frame, before the arrive too); ``rssi_median`` is the
median of the current window (``None`` if it holds no reading).

Time: per subject, a frame older than the subject's last frame (clock jitter, reordering) is taken
as happening at ``last_seen``, so per-subject times never go backwards and dwell is never negative.
A subject heard again after it was forgotten (evicted, timed out) is not remembered, so every new
stay starts no earlier than the latest frame of any forgotten subject (a high-water mark that only
matters with reordered input, and keeps one subject's events in time order across an eviction).
``tick`` walks subjects in feed order and stops at the first one still recent, so with reordered
input a timeout may be reported late by the amount of reordering.
"""

from __future__ import annotations

import enum
import math
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ARRIVE",
    "LEAVE",
    "TRANSITIONS",
    "VISIT",
    "PresenceConfig",
    "PresenceEvent",
    "PresenceTracker",
    "Signal",
    "State",
    "smooth",
]

ARRIVE: Final = "arrive"
VISIT: Final = "visit"
LEAVE: Final = "leave"


class State(enum.Enum):
    AWAY = "away"  # heard but not near: approaching, walking by, or left by weak signal
    NEAR = "near"  # arrived; dwell below visit_dwell_s so far
    VISITING = "visiting"  # arrived and dwelled visit_dwell_s; the visit was reported
    GONE = "gone"  # not tracked any more


class Signal(enum.Enum):
    STRONG = "strong"
    MID = "mid"
    WEAK = "weak"
    DWELL = "dwell"
    SILENT = "silent"
    EVICT = "evict"
    END = "end"


_A, _N, _V, _G = State.AWAY, State.NEAR, State.VISITING, State.GONE
_S = Signal

# (state, signal) -> (next state, event emitted or None). Complete over the live states.
TRANSITIONS: Final[dict[tuple[State, Signal], tuple[State, str | None]]] = {
    (_A, _S.STRONG): (_N, ARRIVE),
    (_A, _S.MID): (_A, None),
    (_A, _S.WEAK): (_A, None),
    (_A, _S.DWELL): (_A, None),
    (_A, _S.SILENT): (_G, None),
    (_A, _S.EVICT): (_G, None),
    (_A, _S.END): (_G, None),
    (_N, _S.STRONG): (_N, None),
    (_N, _S.MID): (_N, None),
    (_N, _S.WEAK): (_A, LEAVE),
    (_N, _S.DWELL): (_V, VISIT),
    (_N, _S.SILENT): (_G, LEAVE),
    (_N, _S.EVICT): (_G, LEAVE),
    (_N, _S.END): (_G, LEAVE),
    (_V, _S.STRONG): (_V, None),
    (_V, _S.MID): (_V, None),
    (_V, _S.WEAK): (_A, LEAVE),
    (_V, _S.DWELL): (_V, None),
    (_V, _S.SILENT): (_G, LEAVE),
    (_V, _S.EVICT): (_G, LEAVE),
    (_V, _S.END): (_G, LEAVE),
}

_DBM_MIN, _DBM_MAX = -128, 127  # radiotap antenna signal is a signed byte


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    """Thresholds of the presence state machine (defaults from DESIGN.md)."""

    enter_dbm: int = -70
    leave_dbm: int = -80
    absence_timeout_s: float = 90.0
    visit_dwell_s: float = 300.0
    window_s: float = 15.0
    max_subjects: int = 100_000
    window_max_frames: int = 30  # readings kept per subject, spaced >= window_s / this
    arrive_min_frames: int = 1  # frames in the stay before an arrive; 1 = as soon as near

    def __post_init__(self) -> None:
        for name in ("enter_dbm", "leave_dbm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not _DBM_MIN <= v <= _DBM_MAX:
                raise ValueError(
                    f"{name} must be an integer dBm in [{_DBM_MIN}, {_DBM_MAX}], got {v!r}"
                )
        if self.leave_dbm >= self.enter_dbm:
            raise ValueError(
                f"leave_dbm ({self.leave_dbm}) must be below enter_dbm ({self.enter_dbm}): "
                "the gap is the hysteresis band"
            )
        for name in ("absence_timeout_s", "visit_dwell_s", "window_s"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v <= 0
            ):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {v!r}")
        for name in ("max_subjects", "window_max_frames", "arrive_min_frames"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A subject arrived near the store, dwelled long enough to count as a visit, or left."""

    type: str  # "arrive" | "visit" | "leave"
    subject: str
    ts: float
    first_seen: float
    last_seen: float
    rssi_max: int | None
    rssi_median: int | None
    frames: int
    dwell_s: float


def smooth(readings: list[int] | array[int], arrived: bool) -> float | None:
    """Trimmed mean of RSSI readings; the reading that argues for a change of state never counts."""
    xs = sorted(readings)
    n = len(xs)
    if n == 0:
        return None
    k = n // 4
    lo = hi = k
    if n >= 2:
        if arrived:
            lo = max(lo, 1)  # once near, the weakest reading alone cannot make a leave
        else:
            hi = max(hi, 1)  # while away, the strongest reading alone cannot make an arrive
    core = xs[lo : n - hi]
    return sum(core) / len(core)


@dataclass(slots=True)
class _Subject:
    first_seen: float
    last_seen: float
    state: State = State.AWAY
    level: Signal = Signal.MID  # last smoothed level; re-applying a level is always a no-op
    frames: int = 0
    rssi_max: int | None = None
    had_rssi: bool = False
    arrived_at: float = 0.0
    near_until: float = 0.0  # last frame heard while near
    win_ts: array[float] = field(default_factory=lambda: array("d"))
    win_dbm: array[int] = field(default_factory=lambda: array("b"))


class PresenceTracker:
    """Turns matched frames (subject, dBm, time) into arrive / visit / leave events."""

    __slots__ = ("_config", "_floor", "_min_gap", "_subjects")

    def __init__(self, config: PresenceConfig = PresenceConfig()) -> None:
        self._config = config
        self._min_gap = config.window_s / config.window_max_frames
        # Feed order: the first entry is the least recently heard (eviction, timeouts).
        self._subjects: OrderedDict[str, _Subject] = OrderedDict()
        self._floor = -math.inf  # latest frame of any forgotten subject

    @property
    def config(self) -> PresenceConfig:
        return self._config

    def __len__(self) -> int:
        return len(self._subjects)

    def feed(self, subject: str, dbm: int | None, now: float) -> list[PresenceEvent]:
        """One frame heard from ``subject`` at ``now`` (``dbm`` None: no radio header)."""
        cfg = self._config
        subs = self._subjects
        out: list[PresenceEvent] = []
        s = subs.get(subject)
        if s is not None and now - s.last_seen >= cfg.absence_timeout_s:
            self._end(subject, s, Signal.SILENT, out)  # nobody ticked: end the old stay first
            s = None
        if s is None:
            if len(subs) >= cfg.max_subjects:
                oldest = next(iter(subs))
                self._end(oldest, subs[oldest], Signal.EVICT, out)
            start = now if now > self._floor else self._floor
            s = subs[subject] = _Subject(first_seen=start, last_seen=start)
        else:
            subs.move_to_end(subject)
        t = now if now > s.last_seen else s.last_seen
        if s.frames == 0:
            s.first_seen = t  # first frame of a stay (new subject, or after a weak-signal leave)
        s.last_seen = t
        s.frames += 1
        if dbm is not None:
            dbm = _DBM_MIN if dbm < _DBM_MIN else _DBM_MAX if dbm > _DBM_MAX else dbm
            if s.rssi_max is None or dbm > s.rssi_max:
                s.rssi_max = dbm
            s.had_rssi = True
        if self._window_add(s, dbm, t) or s.frames == 1:
            level = self._level(s)
            if level is not None:
                s.level = level
        level = s.level
        if level is Signal.STRONG and s.frames < cfg.arrive_min_frames:
            level = Signal.MID
        self._step(subject, s, level, out)
        if s.state is not State.AWAY:
            s.near_until = t
            if t - s.arrived_at >= cfg.visit_dwell_s:
                self._step(subject, s, Signal.DWELL, out)
        return out

    def tick(self, now: float) -> list[PresenceEvent]:
        """Subjects silent for ``absence_timeout_s`` at ``now``: leave (if arrived) and forget."""
        timeout = self._config.absence_timeout_s
        out: list[PresenceEvent] = []
        expired: list[str] = []
        for sid, s in self._subjects.items():
            if s.last_seen > now:
                continue  # heard "after" now (reordered input): not silent, look further
            if now - s.last_seen < timeout:
                break  # feed order ~ time order: everyone after this one is recent too
            expired.append(sid)
        for sid in expired:
            self._end(sid, self._subjects[sid], Signal.SILENT, out)
        return out

    def tracked(self) -> list[str]:
        """Subject ids tracked now (e.g. to check them against a new roster)."""
        return list(self._subjects)

    def forget(self, subjects: Iterable[str]) -> int:
        """Drop subjects at once, with no event: they left the roster (erasure, consent
        withdrawn), so nothing more about them may be reported. Returns how many were tracked."""
        n = 0
        for sid in subjects:
            s = self._subjects.pop(sid, None)
            if s is not None:
                n += 1
                if s.last_seen > self._floor:
                    self._floor = s.last_seen
        return n

    def reconfigure(self, config: PresenceConfig) -> None:
        """New thresholds from now on; subjects keep their state and their RSSI window."""
        self._config = config
        self._min_gap = config.window_s / config.window_max_frames

    def flush(self, now: float) -> list[PresenceEvent]:
        """End of input: a leave for every subject that has arrived; forget everyone."""
        del now  # leave times are each subject's last frame, not the end of input
        out: list[PresenceEvent] = []
        for sid, s in list(self._subjects.items()):
            self._end(sid, s, Signal.END, out)
        return out

    # -- internals -------------------------------------------------------------------------

    def _window_add(self, s: _Subject, dbm: int | None, t: float) -> bool:
        ts, db = s.win_ts, s.win_dbm
        cutoff = t - self._config.window_s
        n = 0
        while n < len(ts) and ts[n] < cutoff:
            n += 1
        if n:
            del ts[:n]
            del db[:n]
        if dbm is None or (ts and t - ts[-1] < self._min_gap):
            return n > 0
        if len(ts) >= self._config.window_max_frames:
            del ts[0]
            del db[0]
        ts.append(t)
        db.append(dbm)
        return True

    def _level(self, s: _Subject) -> Signal | None:
        value = smooth(s.win_dbm, arrived=s.state is not State.AWAY)
        if value is None:
            return None if s.had_rssi else Signal.STRONG  # never had RSSI: heard nearby
        cfg = self._config
        if value >= cfg.enter_dbm:
            return Signal.STRONG
        if value < cfg.leave_dbm:
            return Signal.WEAK
        return Signal.MID

    def _step(self, sid: str, s: _Subject, signal: Signal, out: list[PresenceEvent]) -> None:
        state, kind = TRANSITIONS[(s.state, signal)]
        if kind == ARRIVE:
            s.arrived_at = s.near_until = s.last_seen
        if kind is not None:
            out.append(self._event(kind, sid, s))
        s.state = state
        if kind == LEAVE and state is State.AWAY:
            # Still heard (weakly): stay tracked; the next frame starts a new stay.
            s.frames = 0
            s.rssi_max = None
            s.arrived_at = s.near_until = 0.0

    def _end(self, sid: str, s: _Subject, signal: Signal, out: list[PresenceEvent]) -> None:
        self._step(sid, s, signal, out)
        del self._subjects[sid]
        if s.last_seen > self._floor:
            self._floor = s.last_seen

    @staticmethod
    def _event(kind: str, sid: str, s: _Subject) -> PresenceEvent:
        db = sorted(s.win_dbm)
        n = len(db)
        median = (db[(n - 1) // 2] + db[n // 2]) // 2 if n else None
        dwell = 0.0 if kind == ARRIVE else max(0.0, s.near_until - s.arrived_at)
        return PresenceEvent(
            type=kind,
            subject=sid,
            ts=s.last_seen,
            first_seen=s.first_seen,
            last_seen=s.last_seen,
            rssi_max=s.rssi_max,
            rssi_median=median,
            frames=s.frames,
            dwell_s=dwell,
        )
