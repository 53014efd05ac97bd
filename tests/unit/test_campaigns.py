"""Campaign files without a store: validation names the field; the README documents every reason
(the store and API tests are in tests/db/test_campaigns.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_bridge.offers.campaigns import CampaignError, validate_campaigns
from cloud_bridge.storage.store import BridgeStore


def problems(raw: list, store: BridgeStore | None = None, prefix: str = "") -> list[str]:
    with pytest.raises(CampaignError) as exc:
        validate_campaigns(raw, store, prefix=prefix)
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize(
    "change,needle",
    [
        (
            {"variants": [{"id": "A", "template": "{{ nickname }}"}]},
            "variants[0].template: template error: 'nickname' is undefined",
        ),
        (
            {"variants": [{"id": "A", "template": "{{ first_name "}]},
            "variants[0].template: template error",
        ),
        (
            {"variants": [{"id": "A", "template": "{{ favourite_product[0] }}"}]},
            "variants[0].template",
        ),
        ({"variants": [{"id": "A", "template": "{{ ''.__class__ }}"}]}, "variants[0].template"),
        ({"variants": []}, "variants: List should have at least 1 item"),
        (
            {"variants": [{"id": "A", "template": "a"}, {"id": "A", "template": "b"}]},
            "variant ids must be unique",
        ),
        ({"trigger": {"type": "leave"}}, "trigger.type"),
        ({"trigger": {"type": "arrive", "min_rssi": 5}}, "trigger.min_rssi"),
        ({"trigger": {"type": "arrive", "min_dwell_s": -1}}, "trigger.min_dwell_s"),
        ({"audience": {"segments": ["vip"]}}, "audience.segments[0]"),
        (
            {"audience": {"rules": [{"field": "loyalty_tier", "op": "gte", "value": 3}]}},
            "audience.rules[0]: op 'gte' does not apply to loyalty_tier",
        ),
        (
            {"audience": {"rules": [{"field": "visits", "op": "gte", "value": ["x"]}]}},
            "audience.rules[0]: visits gte needs a number",
        ),
        (
            {"audience": {"rules": [{"field": "visits_in_days", "op": "gte", "value": 2}]}},
            "days is required for visits_in_days",
        ),
        (
            {"audience": {"rules": [{"field": "age", "op": "gte", "value": 2}]}},
            "audience.rules[0].field",
        ),
        (
            {"schedule": {"start_date": "2026-03-10", "end_date": "2026-03-01"}},
            "schedule: Value error, end_date is before start_date".replace("Value error, ", ""),
        ),
        ({"schedule": {"hours": ["25:00", "10:00"]}}, "schedule.hours: '25:00' is not HH:MM"),
        (
            {"schedule": {"hours": ["20:00", "10:00"]}},
            "schedule.hours: hours must start before they end",
        ),
        (
            {"schedule": {"weekdays": ["mon", "mon"]}},
            "schedule.weekdays: a weekday is listed twice",
        ),
        ({"schedule": {"weekdays": ["funday"]}}, "schedule.weekdays[0]"),
        ({"caps": {"count": 0}}, "caps.count"),
        ({"holdout_pct": 80}, "holdout_pct"),
        ({"budget": 0}, "budget"),
        ({"status": "live"}, "status"),
        ({"id": "has space"}, "id"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_validation_names_the_field(change: dict, needle: str) -> None:
    raw = {"id": "x", "name": "X", "template": "hi {{ first_name }}", **change}
    if "variants" in change:
        raw.pop("template")
    found = problems([raw], prefix="campaigns")
    assert any(needle in p for p in found), found
    assert all(p.startswith("campaigns[0]") for p in found), found


README = Path(__file__).parents[2] / "README.md"


def test_readme_documents_every_reason() -> None:
    from cloud_bridge.offers.decide import REASONS

    text = README.read_text(encoding="utf-8")
    for code, words in REASONS.items():
        assert f"| `{code}` | {words} |" in text, code
