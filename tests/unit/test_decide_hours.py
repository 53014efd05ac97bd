"""Sending hours in the store's own time zone, across DST changes, with countries' legal
minimums; outside them the offer is dropped (quiet_hours), never deferred."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from cloud_bridge.offers.decide import (
    Campaign,
    Customer,
    Event,
    Skip,
    StoreInfo,
    decide,
    local_day_start,
    sending_window,
    within_hours,
)

ANNA = Customer(1, "C-1", "Anna", "+10000000001", "beans", True, True)
CAMP = Campaign("c", "C", "arrive", "hi {{ first_name }}")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def store(tz: str, country: str, start: str = "09:00", end: str = "21:00") -> StoreInfo:
    return StoreInfo("s", "S", tz, country, "S", start, end)


# (zone, country, UTC instant, expected local HH:MM, inside 09:00-21:00?)
DST_CASES = [
    # New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT (UTC-5 -> UTC-4)
    ("America/New_York", "US", utc(2026, 3, 7, 13, 30), "08:30", False),  # the day before: EST
    ("America/New_York", "US", utc(2026, 3, 8, 13, 30), "09:30", True),  # the DST day: EDT
    ("America/New_York", "US", utc(2026, 3, 8, 13, 0), "09:00", True),
    ("America/New_York", "US", utc(2026, 3, 8, 12, 59), "08:59", False),
    ("America/New_York", "US", utc(2026, 3, 9, 0, 59), "20:59", True),
    ("America/New_York", "US", utc(2026, 3, 9, 1, 0), "21:00", False),
    # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST
    ("America/New_York", "US", utc(2026, 10, 31, 13, 30), "09:30", True),
    ("America/New_York", "US", utc(2026, 11, 1, 13, 30), "08:30", False),
    ("America/New_York", "US", utc(2026, 11, 1, 14, 0), "09:00", True),
    ("America/New_York", "US", utc(2026, 11, 2, 1, 59), "20:59", True),
    ("America/New_York", "US", utc(2026, 11, 2, 2, 0), "21:00", False),
    # Moscow: last spring forward 2010-03-28 (MSK +3 -> MSD +4), last fall back 2010-10-31,
    # permanent +4 from 2011, back to +3 on 2014-10-26; no DST since.
    ("Europe/Moscow", "RU", utc(2010, 3, 27, 5, 30), "08:30", False),
    ("Europe/Moscow", "RU", utc(2010, 3, 28, 5, 30), "09:30", True),
    ("Europe/Moscow", "RU", utc(2010, 10, 30, 5, 30), "09:30", True),
    ("Europe/Moscow", "RU", utc(2010, 10, 31, 5, 30), "08:30", False),
    ("Europe/Moscow", "RU", utc(2014, 10, 25, 5, 30), "09:30", True),
    ("Europe/Moscow", "RU", utc(2014, 10, 26, 5, 30), "08:30", False),
    ("Europe/Moscow", "RU", utc(2026, 3, 29, 6, 0), "09:00", True),  # EU DST day: no change
    ("Europe/Moscow", "RU", utc(2026, 10, 25, 17, 59), "20:59", True),
    ("Europe/Moscow", "RU", utc(2026, 10, 25, 18, 0), "21:00", False),
    # Yerevan: last DST 2011 (spring forward 2011-03-27 +4 -> +5, back 2011-10-30); none since
    ("Asia/Yerevan", "AM", utc(2011, 3, 26, 4, 30), "08:30", False),
    ("Asia/Yerevan", "AM", utc(2011, 3, 27, 4, 30), "09:30", True),
    ("Asia/Yerevan", "AM", utc(2011, 10, 29, 4, 30), "09:30", True),
    ("Asia/Yerevan", "AM", utc(2011, 10, 30, 4, 30), "08:30", False),
    ("Asia/Yerevan", "AM", utc(2026, 3, 29, 5, 0), "09:00", True),  # no DST any more
    ("Asia/Yerevan", "AM", utc(2026, 3, 29, 4, 59), "08:59", False),
]


@pytest.mark.parametrize("tz,country,now,local,inside", DST_CASES)
def test_sending_hours_across_dst(
    tz: str, country: str, now: float, local: str, inside: bool
) -> None:
    s = store(tz, country)
    assert f"{datetime.fromtimestamp(now, ZoneInfo(tz)):%H:%M}" == local
    assert within_hours(s, now) is inside
    ev = Event("e", "arrive", "s", "0123456789abcdef", now)
    out = decide(ev, s, ANNA, [CAMP], [], now)
    if inside:
        assert not isinstance(out, Skip), out
    else:
        assert isinstance(out, Skip) and out.reason == "quiet_hours"
        assert local in out.detail and tz in out.detail


def test_us_minimum_narrows_wide_store_hours() -> None:
    wide = store("America/New_York", "US", "00:00", "24:00")
    assert sending_window(wide)[:2] == (8 * 60, 21 * 60)
    assert "US legal 08:00-21:00" in sending_window(wide)[2]
    assert not within_hours(wide, utc(2026, 3, 8, 11, 59))  # 07:59 EDT
    assert within_hours(wide, utc(2026, 3, 8, 12, 0))  # 08:00 EDT
    assert not within_hours(wide, utc(2026, 3, 9, 1, 0))  # 21:00 EDT
    # narrower store hours stay as they are
    assert sending_window(store("America/New_York", "US", "10:00", "18:00"))[:2] == (600, 1080)
    # no legal minimum on record for RU: the demo's all-day hours hold
    assert sending_window(store("Europe/Moscow", "RU", "00:00", "24:00"))[:2] == (0, 1440)


def test_outside_hours_dropped_not_deferred() -> None:
    s = store("America/New_York", "US")
    night = utc(2026, 3, 8, 3, 0)  # 23:00 EST the evening before
    ev = Event("e", "arrive", "s", "0123456789abcdef", night)
    out = decide(ev, s, ANNA, [CAMP], [], night)
    assert isinstance(out, Skip) and out.reason == "quiet_hours"
    # the same event decided later (inside hours) is stale: there is no deferral
    later = utc(2026, 3, 8, 14, 0)
    out = decide(ev, s, ANNA, [CAMP], [], later)
    assert isinstance(out, Skip) and out.reason == "stale_event"


@pytest.mark.parametrize(
    "tz,now,midnight_utc",
    [
        ("America/New_York", utc(2026, 3, 8, 16, 0), utc(2026, 3, 8, 5, 0)),  # EST midnight
        ("America/New_York", utc(2026, 11, 1, 16, 0), utc(2026, 11, 1, 4, 0)),  # EDT midnight
        ("Europe/Moscow", utc(2026, 3, 29, 9, 0), utc(2026, 3, 28, 21, 0)),
        ("Asia/Yerevan", utc(2026, 3, 29, 9, 0), utc(2026, 3, 28, 20, 0)),
    ],
)
def test_store_day_starts_at_local_midnight(tz: str, now: float, midnight_utc: float) -> None:
    assert local_day_start(store(tz, "US"), now) == midnight_utc
