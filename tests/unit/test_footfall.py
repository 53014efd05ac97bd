"""Anonymous footfall: hourly unique devices, visitors vs passers-by, salt rotation, bounds."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.footfall import Footfall

HOUR = 1_700_002_800  # an exact UTC hour boundary
assert HOUR % 3600 == 0


def mac(i: int) -> bytes:
    return bytes([0x02, 0, 0, 0, i >> 8, i & 0xFF])


def ff(**kw: int | float) -> Footfall:
    return Footfall(secrets.token_bytes(16), **kw)  # type: ignore[arg-type]


def test_unique_devices_per_hour() -> None:
    f = ff()
    for i in range(10):
        for k in range(5):  # each device heard several times
            f.observe(mac(i), -85, HOUR + 60 * k + i)
    snap = f.snapshot(HOUR + 1000)
    assert snap["hour_start"] == HOUR
    assert snap["unique"] == 10
    assert snap["visitors"] == 0
    assert snap["passers_by"] == 10


def test_visitors_vs_passers_by() -> None:
    f = ff(visit_dwell_s=300.0, near_dbm=-70)
    f.observe(mac(1), -60, HOUR + 10)  # near for 5 minutes: visitor
    f.observe(mac(1), -65, HOUR + 310)
    f.observe(mac(2), -60, HOUR + 10)  # near for 4 minutes: passer-by
    f.observe(mac(2), -60, HOUR + 250)
    f.observe(mac(3), -85, HOUR + 10)  # heard for 10 minutes but never near: passer-by
    f.observe(mac(3), -85, HOUR + 610)
    f.observe(mac(4), -85, HOUR + 10)  # far first, then near for 5 minutes: visitor
    f.observe(mac(4), -69, HOUR + 100)
    f.observe(mac(4), -69, HOUR + 400)
    f.observe(mac(5), None, HOUR + 10)  # no RSSI counts as nearby
    f.observe(mac(5), None, HOUR + 400)
    f.observe(mac(1), -60, HOUR + 900)  # a visitor is counted once
    snap = f.snapshot(HOUR + 1000)
    assert (snap["unique"], snap["visitors"], snap["passers_by"]) == (5, 3, 2)


def test_hour_rollover() -> None:
    f = ff()
    f.observe(mac(1), -60, HOUR + 10)
    f.observe(mac(1), -60, HOUR + 400)
    f.observe(mac(2), -90, HOUR + 3599)
    f.observe(mac(2), -90, HOUR + 3600)  # same device, next hour: counted again there
    f.observe(mac(3), -90, HOUR + 3700)
    snap = f.snapshot(HOUR + 3800)
    assert snap["hour_start"] == HOUR + 3600
    assert (snap["unique"], snap["visitors"]) == (2, 0)
    assert (snap["prev_hour_unique"], snap["prev_hour_visitors"], snap["prev_hour_passers_by"]) == (
        2,
        1,
        1,
    )
    # a silent hour in between: the hour before the current one had nobody
    snap = f.snapshot(HOUR + 3 * 3600 + 5)
    assert snap["hour_start"] == HOUR + 3 * 3600
    assert snap["unique"] == 0 and snap["prev_hour_unique"] == 0


def test_snapshot_alone_rolls_the_hour() -> None:
    f = ff()
    f.observe(mac(1), -60, HOUR + 10)
    snap = f.snapshot(HOUR + 3600 + 1)
    assert (snap["unique"], snap["prev_hour_unique"]) == (0, 1)


def test_time_going_backwards_stays_in_the_current_hour() -> None:
    f = ff()
    f.observe(mac(1), -60, HOUR + 3600 + 5)
    f.observe(mac(2), -60, HOUR + 3599)  # late frame from the previous hour
    snap = f.snapshot(HOUR + 3600 + 10)
    assert snap["hour_start"] == HOUR + 3600 and snap["unique"] == 2


def test_salt_rotation_forgets_identities() -> None:
    f = ff()
    f.observe(mac(1), -60, HOUR + 10)
    f.observe(mac(1), -60, HOUR + 20)
    f.rotate_salt(secrets.token_bytes(16), HOUR + 30)
    f.observe(mac(1), -60, HOUR + 40)
    # Mid-hour rotation: counts so far are kept, identities are not: the same MAC counts twice,
    # and its dwell starts over (10 s + 290 s would otherwise have made it a visitor).
    f.observe(mac(1), -60, HOUR + 310)
    snap = f.snapshot(HOUR + 320)
    assert (snap["unique"], snap["visitors"]) == (2, 0)


def test_rotation_at_day_boundary_starts_a_new_day() -> None:
    f = ff()
    midnight = 1_700_006_400  # 00:00 UTC
    assert midnight % 86400 == 0
    f.observe(mac(1), -60, midnight - 100)
    f.rotate_salt(secrets.token_bytes(16), midnight)
    f.observe(mac(1), -60, midnight + 5)
    snap = f.snapshot(midnight + 10)
    assert (snap["unique"], snap["prev_hour_unique"]) == (1, 1)


def test_bound_respected() -> None:
    f = ff(max_devices=50)
    for i in range(200):
        f.observe(mac(i), -80, HOUR + i)
    for i in range(50):  # known devices are still recognised once full
        f.observe(mac(i), -60, HOUR + 500 + i)
    snap = f.snapshot(HOUR + 1000)
    assert snap["unique"] == 50
    assert snap["untracked_frames"] == 150
    assert len(f._first_near) == 50
    f.observe(mac(199), -80, HOUR + 3600)  # a new hour starts empty
    assert f.snapshot(HOUR + 3601)["unique"] == 1


def test_snapshot_has_counts_only() -> None:
    f = ff()
    macs = [mac(i) for i in range(20)]
    for i, m in enumerate(macs):
        f.observe(m, -60, HOUR + i)
    snap = f.snapshot(HOUR + 100)
    assert all(isinstance(k, str) and type(v) is int for k, v in snap.items())
    text = repr(snap) + repr(f) + str(f)
    for m in macs:
        assert m.hex() not in text and m.hex(":") not in text
    assert not any(
        isinstance(getattr(f, name, None), bytes) and name != "_salt" for name in Footfall.__slots__
    )
    assert "salt" not in repr(f)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"salt": b"short"}, "salt"),
        ({"salt": b"x" * 65}, "salt"),
        ({"visit_dwell_s": 0}, "visit_dwell_s"),
        ({"max_devices": 0}, "max_devices"),
    ],
)
def test_validation(kwargs: dict[str, object], word: str) -> None:
    args: dict[str, object] = {"salt": secrets.token_bytes(16), **kwargs}
    with pytest.raises(ValueError, match=word):
        Footfall(**args)  # type: ignore[arg-type]
    f = ff()
    with pytest.raises(ValueError, match="salt"):
        f.rotate_salt(b"", HOUR)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.integers(0, 30), st.one_of(st.none(), st.integers(-95, -40)), st.floats(0, 400)
        ),
        max_size=200,
    ),
    bound=st.integers(1, 40),
)
def test_counts_match_a_reference_model(
    frames: list[tuple[int, int | None, float]], bound: int
) -> None:
    f = ff(max_devices=bound, visit_dwell_s=120.0, near_dbm=-70)
    seen: dict[
        int, list[float]
    ] = {}  # device -> near times (reference keeps what Footfall must not)
    for dev, dbm, dt in frames:  # all within one hour
        t = HOUR + dt
        f.observe(mac(dev), dbm, t)
        if dev not in seen and len(seen) >= bound:
            continue
        near = seen.setdefault(dev, [])
        if dbm is None or dbm >= -70:
            near.append(t)
    snap = f.snapshot(HOUR + 500)
    assert snap["unique"] == len(seen) <= bound
    # visitor: some near frame at least 120 s after the first near frame
    visitors = sum(1 for ts in seen.values() if ts and any(x - ts[0] >= 120 for x in ts))
    assert snap["visitors"] == visitors
    assert snap["passers_by"] == snap["unique"] - snap["visitors"] >= 0
