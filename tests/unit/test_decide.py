"""Offer policy: consent first, then freshness, campaign, hours, caps; a reason for every skip."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from cloud_bridge.offers.decide import (
    REASONS,
    Campaign,
    Customer,
    Event,
    Send,
    Skip,
    StoreInfo,
    decide,
    within_hours,
)

STORE = StoreInfo("main-st", "Main St.", "Europe/Moscow", "RU", "MainSt")
ANNA = Customer(1, "C-1", "Anna Petrova", "+79160000001", "espresso beans", True, True)
CAMP = Campaign(
    "fav", "Fav", "arrive", "{{ first_name }}: {{ favourite_product }} -15% at {{ store_name }}"
)
# 12:00 Moscow = 09:00 UTC
NOON = datetime(2026, 3, 14, 12, 0, tzinfo=ZoneInfo("Europe/Moscow")).timestamp()
EV = Event("e1", "arrive", "main-st", "0123456789abcdef", NOON - 5)


def test_send_with_personal_text() -> None:
    out = decide(EV, STORE, ANNA, [CAMP], [], NOON)
    assert isinstance(out, Send)
    assert out.text == "Anna: espresso beans -15% at Main St."
    assert out.sender == "MainSt"


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"customer": None}, "unknown_subject"),
        ({"store": None}, "unknown_store"),
        ({"customer": Customer(1, "C-1", "A", "+7", None, False, True)}, "no_sms_consent"),
        ({"customer": Customer(1, "C-1", "A", "+7", None, True, False)}, "no_recognition_consent"),
        ({"campaigns": []}, "no_campaign"),
        ({"campaigns": [Campaign("v", "V", "visit", "x")]}, "no_campaign"),
        ({"campaigns": [Campaign("p", "P", "arrive", "x", status="paused")]}, "no_campaign"),
        ({"campaigns": [Campaign("o", "O", "arrive", "x", stores=("other",))]}, "no_campaign"),
        ({"now": NOON + 3600}, "stale_event"),
        ({"history": [("fav", NOON - 86400)]}, "campaign_cap"),
        (
            {"history": [("a", NOON - 1), ("b", NOON - 2), ("c", NOON - 3), ("d", NOON - 4)]},
            "overall_cap",
        ),
        ({"campaigns": [Campaign("t", "T", "arrive", "{{ nickname }}")]}, "template_error"),
    ],
)
def test_skip_reasons(kwargs: dict, reason: str) -> None:
    args = {"store": STORE, "customer": ANNA, "campaigns": [CAMP], "history": [], "now": NOON}
    args.update(kwargs)
    out = decide(
        EV, args["store"], args["customer"], args["campaigns"], args["history"], args["now"]
    )
    assert isinstance(out, Skip)
    assert out.reason == reason
    assert reason in REASONS


def test_cap_window_expires_after_30_days() -> None:
    out = decide(EV, STORE, ANNA, [CAMP], [("fav", NOON - 31 * 86400)], NOON)
    assert isinstance(out, Send)


def test_capped_campaign_falls_through_to_next() -> None:
    other = Campaign("b", "B", "arrive", "second offer", priority=-1)
    out = decide(EV, STORE, ANNA, [CAMP, other], [("fav", NOON - 60)], NOON)
    assert isinstance(out, Send) and out.campaign.id == "b"


def test_quiet_hours_in_store_time_zone() -> None:
    night = datetime(2026, 3, 14, 22, 30, tzinfo=ZoneInfo("Europe/Moscow")).timestamp()
    ev = Event("e2", "arrive", "main-st", "0123456789abcdef", night)
    out = decide(ev, STORE, ANNA, [CAMP], [], night)
    assert isinstance(out, Skip) and out.reason == "quiet_hours"
    # 22:30 in Moscow is 14:30 in New York: inside a New York store's hours
    ny = StoreInfo("ny", "NY", "America/New_York", "US", "NYC")
    assert within_hours(ny, night)


def test_hours_edges() -> None:
    nine = datetime(2026, 3, 14, 9, 0, tzinfo=ZoneInfo("Europe/Moscow")).timestamp()
    assert within_hours(STORE, nine)
    assert not within_hours(STORE, nine - 1)
    assert not within_hours(STORE, nine + 12 * 3600)  # 21:00 is closed
    allday = StoreInfo("a", "A", "Europe/Moscow", "RU", "A", "00:00", "24:00")
    assert within_hours(allday, nine - 1)
