"""Event time against the bridge's clock (pure): the allowed skew and how to say it.

No IO and no clock: the caller passes the bridge's ``now``. A sensor stamps its events with
its own clock; the bridge trusts that clock only within ``max_skew_s`` ahead of its own (an
event "from the future" cannot be fresh, and an offer must never outlive the bridge's idea of
now). A time that is not a finite positive number is no time at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

__all__ = ["DEFAULT_MAX_SKEW_S", "EVENT_TIME_FIELDS", "finite", "span_words", "future_problem"]

DEFAULT_MAX_SKEW_S: Final = 120.0
EVENT_TIME_FIELDS: Final = ("ts", "first_seen", "last_seen")

_HOUR = 3600.0
_DAY = 86400.0
_YEAR = 365.25 * _DAY


def finite(value: float) -> bool:
    """Whether a time is a number at all (not NaN, not infinite)."""
    return math.isfinite(value)


def span_words(seconds: float) -> str:
    """A length of time for people: ``45 s``, ``1.5 h``, ``2.0 days``, ``31,630 years``."""
    s = abs(seconds)
    if s < _HOUR:
        return f"{s:.0f} s"
    if s < _DAY:
        return f"{s / _HOUR:.1f} h"
    if s < _YEAR:
        return f"{s / _DAY:.1f} days"
    return f"{s / _YEAR:,.0f} years"


def future_problem(
    times: Iterable[tuple[str, float]], now: float, max_skew_s: float = DEFAULT_MAX_SKEW_S
) -> str | None:
    """Why these (name, epoch seconds) times cannot be taken at the bridge's ``now``, or None:
    a time that is not finite, or that lies more than ``max_skew_s`` ahead of ``now``."""
    for name, value in times:
        if not finite(value):
            return f"{name} is not a finite time ({value})"
        ahead = value - now
        if ahead > max_skew_s:
            return (
                f"{name} is {span_words(ahead)} ahead of the bridge's clock (at most "
                f"{max_skew_s:.0f} s allowed): the sensor's clock is wrong; check time sync on "
                "the box (timedatectl)"
            )
    return None
