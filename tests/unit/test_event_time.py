"""The pure decision: fresh within the clock skew, refused beyond it (event times through a store:
tests/db/test_event_time.py)."""

from __future__ import annotations

import math
from dataclasses import replace

from cloud_bridge.offers.decide import REASONS, Send, Skip, decide


def test_decide_fresh_within_the_skew_and_refused_beyond_it() -> None:
    from unit.test_decide import ANNA, CAMP, EV, NOON, STORE

    ahead = replace(EV, ts=NOON + 90)
    out = decide(ahead, STORE, ANNA, [CAMP], [], NOON)
    assert isinstance(out, Send), out
    fresh = next(c for c in out.trace if c.code == "fresh")
    assert fresh.ok and "90 s ahead of the bridge's clock, within the allowed 120 s" in fresh.words
    beyond = decide(replace(EV, ts=NOON + 121), STORE, ANNA, [CAMP], [], NOON)
    assert isinstance(beyond, Skip) and beyond.reason == "future_event", beyond
    assert "121 s ahead" in beyond.detail
    assert "future_event" in REASONS
    for bad in (math.inf, math.nan):
        out = decide(replace(EV, ts=bad), STORE, ANNA, [CAMP], [], NOON)
        assert isinstance(out, Skip) and out.reason == "future_event", out
