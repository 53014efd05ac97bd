"""Presence state machine: table cases and properties over random frame sequences."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edge_agent.core.presence import (
    TRANSITIONS,
    PresenceConfig,
    PresenceEvent,
    PresenceTracker,
    Signal,
    State,
    smooth,
)

T0 = 1_700_000_000.0
S = "0123456789abcdef"


def walk(
    tr: PresenceTracker,
    dbms: Iterable[int | None],
    start: float = T0,
    step: float = 1.0,
    subject: str = S,
    tick: bool = True,
) -> list[PresenceEvent]:
    """Feed one frame per ``step`` seconds, ticking after each like the agent does."""
    out: list[PresenceEvent] = []
    t = start
    for dbm in dbms:
        out += tr.feed(subject, dbm, t)
        if tick:
            out += tr.tick(t)
        t += step
    return out


def types(events: Iterable[PresenceEvent]) -> list[str]:
    return [e.type for e in events]


# -- table cases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dbms", "expected"),
    [
        ("walk-by at -85 never arrives", [-85] * 60, []),
        ("walk-in arrives once", [-88, -84, -80, -76, -72] + [-62] * 60, ["arrive"]),
        ("one -40 spike among -90s does not arrive", [-90] * 10 + [-40] + [-90] * 10, []),
        ("flapping -69/-81 arrives once", [-69, -81] * 60, ["arrive"]),
        ("flapping -81/-69 never leaves once in", [-65] * 3 + [-81, -69] * 60, ["arrive"]),
        ("in the band never arrives", [-75, -72, -78, -71, -79] * 12, []),
        ("leave by weak signal", [-60] * 20 + [-90] * 30, ["arrive", "leave"]),
        (
            "out and back in is a new stay",
            [-60] * 20 + [-90] * 30 + [-60] * 20,
            ["arrive", "leave", "arrive"],
        ),
        ("no RSSI ever: arrives on the first frame", [None] * 5, ["arrive"]),
    ],
)
def test_table(name: str, dbms: list[int | None], expected: list[str]) -> None:
    assert types(walk(PresenceTracker(), dbms)) == expected, name


def test_long_stay_yields_exactly_one_visit() -> None:
    tr = PresenceTracker()
    events = walk(tr, [-60] * 1200, step=1.0)  # 20 minutes
    assert types(events) == ["arrive", "visit"]
    arrive, visit = events
    assert visit.ts - arrive.ts == pytest.approx(300.0)
    assert visit.dwell_s == pytest.approx(300.0)
    leave = tr.flush(T0 + 2000)
    assert types(leave) == ["leave"]
    assert leave[0].dwell_s == pytest.approx(1199.0)
    assert leave[0].frames == 1200
    assert leave[0].ts == leave[0].last_seen == T0 + 1199


def test_leave_after_absence_timeout_via_tick() -> None:
    tr = PresenceTracker()
    events = walk(tr, [-60] * 10)
    assert types(events) == ["arrive"]
    last = T0 + 9
    assert tr.tick(last + 89.9) == []
    (leave,) = tr.tick(last + 90)
    assert leave.type == "leave"
    assert leave.ts == leave.last_seen == last  # the last time the person was heard
    assert leave.first_seen == T0
    assert leave.dwell_s == pytest.approx(9.0)
    assert leave.frames == 10
    assert leave.rssi_max == -60 and leave.rssi_median == -60
    assert len(tr) == 0


def test_frame_after_silence_starts_a_new_stay_even_without_tick() -> None:
    tr = PresenceTracker()
    walk(tr, [-60] * 5, tick=False)
    events = tr.feed(S, -60, T0 + 4 + 90)
    assert types(events) == ["leave", "arrive"]
    assert events[0].ts == T0 + 4
    assert events[1].first_seen == T0 + 94 and events[1].frames == 1


def test_visit_needs_frames_while_near_and_leave_dwell_matches() -> None:
    tr = PresenceTracker(PresenceConfig(visit_dwell_s=60.0))
    # near for 50 s, silent 80 s (still within the timeout), heard again at 130 s: dwell 130 s
    events = walk(tr, [-60] * 50)
    events += tr.tick(T0 + 120)
    events += tr.feed(S, -60, T0 + 130)
    assert types(events) == ["arrive", "visit"]
    assert events[1].dwell_s == pytest.approx(130.0)


def test_short_stay_has_no_visit() -> None:
    tr = PresenceTracker()
    events = walk(tr, [-60] * 200) + tr.flush(T0 + 500)
    assert types(events) == ["arrive", "leave"]
    assert events[-1].dwell_s < 300


def test_arrive_event_fields() -> None:
    tr = PresenceTracker()
    events = walk(tr, [-85, -84, -60, -60, -60, -60])
    (arrive,) = events
    assert arrive.subject == S
    assert arrive.dwell_s == 0.0
    assert arrive.first_seen == T0  # the stay starts with the first frame heard, before arrive
    assert arrive.ts == arrive.last_seen > arrive.first_seen
    assert arrive.rssi_max == -60
    # away, the strongest reading is trimmed: the third frame alone is not enough, the fifth is
    assert arrive.ts == T0 + 4
    assert arrive.frames == 5


def test_none_frames_refresh_but_do_not_move_rssi() -> None:
    tr = PresenceTracker()
    events = walk(tr, [-60] * 5 + [None] * 60)  # None frames keep the subject present
    assert types(events) == ["arrive"]
    assert tr.tick(T0 + 64 + 89) == []
    (leave,) = tr.tick(T0 + 64 + 90)
    assert leave.frames == 65 and leave.rssi_max == -60
    # a weak subject's None frames do not make it arrive
    tr2 = PresenceTracker()
    assert walk(tr2, [-90] * 5 + [None] * 30) == []


def test_time_going_backwards_is_clamped() -> None:
    tr = PresenceTracker()
    events = tr.feed(S, -60, T0 + 10)
    events += tr.feed(S, -60, T0 + 5)  # reordered frame
    events += tr.feed(S, -60, T0 + 9)
    events += tr.flush(T0 + 20)
    assert types(events) == ["arrive", "leave"]
    assert all(e.dwell_s >= 0 and e.first_seen <= e.last_seen for e in events)
    assert events[-1].ts == T0 + 10


def test_eviction_leaves_least_recently_heard() -> None:
    tr = PresenceTracker(PresenceConfig(max_subjects=2))
    events = tr.feed("a", -60, T0) + tr.feed("b", -60, T0 + 1) + tr.feed("a", -60, T0 + 2)
    events += tr.feed("c", -90, T0 + 3)  # b is the least recently heard
    assert [(e.type, e.subject) for e in events] == [
        ("arrive", "a"),
        ("arrive", "b"),
        ("leave", "b"),
    ]
    assert len(tr) == 2
    assert [(e.type, e.subject) for e in tr.flush(T0 + 4)] == [("leave", "a")]  # c never arrived


def test_window_is_bounded_for_streaming_phones() -> None:
    cfg = PresenceConfig()
    tr = PresenceTracker(cfg)
    for i in range(5000):  # 1000 frames per second
        tr.feed(S, -60 - (i % 7), T0 + i / 1000)
    sub = tr._subjects[S]
    assert len(sub.win_dbm) <= cfg.window_max_frames


def test_arrive_min_frames() -> None:
    tr = PresenceTracker(PresenceConfig(arrive_min_frames=3))
    assert types(walk(tr, [-60] * 3)) == ["arrive"]
    assert tr.flush(T0 + 3)[0].frames == 3
    tr = PresenceTracker(PresenceConfig(arrive_min_frames=3))
    assert types(walk(tr, [-60, -60])) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"enter_dbm": -80, "leave_dbm": -80}, "leave_dbm"),
        ({"enter_dbm": -90, "leave_dbm": -80}, "leave_dbm"),
        ({"enter_dbm": 200}, "enter_dbm"),
        ({"absence_timeout_s": 0}, "absence_timeout_s"),
        ({"visit_dwell_s": -1}, "visit_dwell_s"),
        ({"window_s": float("nan")}, "window_s"),
        ({"max_subjects": 0}, "max_subjects"),
        ({"window_max_frames": 0}, "window_max_frames"),
        ({"arrive_min_frames": 0}, "arrive_min_frames"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PresenceConfig(**kwargs)  # type: ignore[arg-type]


def test_transition_table_is_complete() -> None:
    live = [s for s in State if s is not State.GONE]
    assert set(TRANSITIONS) == {(s, g) for s in live for g in Signal}


@pytest.mark.parametrize(
    ("readings", "arrived", "expected"),
    [
        ([], False, None),
        ([-60], False, -60),
        ([-90, -40], False, -90),  # away: the strongest reading alone never counts
        ([-90, -40], True, -40),  # near: the weakest reading alone never counts
        ([-90, -90, -40], False, -90),
        ([-69, -81, -69, -81], True, -75),
    ],
)
def test_smooth(readings: list[int], arrived: bool, expected: float | None) -> None:
    assert smooth(readings, arrived) == expected


# -- properties ------------------------------------------------------------------------------

SUBJECTS = ["a", "b", "c", "d"]
DBMS = st.one_of(st.none(), st.sampled_from([-95, -85, -81, -79, -75, -71, -69, -60, -40]))
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("feed"),
            st.sampled_from(SUBJECTS),
            DBMS,
            st.floats(min_value=-3.0, max_value=40.0),
        ),
        st.tuples(
            st.just("tick"), st.just(""), st.none(), st.floats(min_value=0.0, max_value=120.0)
        ),
    ),
    max_size=250,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, max_subjects=st.integers(1, 5), visit=st.sampled_from([20.0, 60.0, 300.0]))
@example(  # an evicted subject heard again with an earlier timestamp keeps its events in order
    ops=[("feed", "a", None, 0.0), ("feed", "b", None, -1.0), ("feed", "a", None, 0.0)],
    max_subjects=1,
    visit=20.0,
)
def test_properties(
    ops: list[tuple[str, str, int | None, float]], max_subjects: int, visit: float
) -> None:
    cfg = PresenceConfig(
        max_subjects=max_subjects, visit_dwell_s=visit, absence_timeout_s=60.0, window_s=10.0
    )
    tr = PresenceTracker(cfg)
    now = T0
    events: list[PresenceEvent] = []
    for op, subject, dbm, dt in ops:
        now += dt  # dt < 0: clock jitter / reordered frames
        if op == "feed":
            events += tr.feed(subject, dbm, now)
        else:
            events += tr.tick(now)
        assert len(tr) <= max_subjects
    events += tr.flush(now + 1)
    assert len(tr) == 0

    for subject in SUBJECTS:
        mine = [e for e in events if e.subject == subject]
        # strict arrive [visit] leave cycles, starting with arrive, all closed by flush
        arrived = False
        visited = False
        arrive_ts = 0.0
        for e in mine:
            assert e.dwell_s >= 0
            assert e.first_seen <= e.last_seen
            assert e.ts == e.last_seen
            assert e.frames >= 1
            if e.type == "arrive":
                assert not arrived, "arrive twice in one stay"
                arrived, visited, arrive_ts = True, False, e.ts
                assert e.dwell_s == 0
            elif e.type == "visit":
                assert arrived, "visit outside a stay"
                assert not visited, "two visits in one stay"
                assert e.dwell_s >= visit and e.ts >= arrive_ts
                visited = True
            else:
                assert e.type == "leave"
                assert arrived, "leave without an arrive"
                assert e.ts >= arrive_ts
                assert visited == (e.dwell_s >= visit)  # a visit exactly when dwell reached it
                arrived = False
        assert not arrived
        stamps = [e.ts for e in mine]
        assert stamps == sorted(stamps), "events not time-ordered for one subject"


@settings(max_examples=200, deadline=None)
@given(
    dbms=st.lists(st.sampled_from([-69, -81, -75, -72, -78]), min_size=1, max_size=200),
    first=st.sampled_from([-69, -60]),
)
def test_flapping_inside_hysteresis_never_rearrives(dbms: list[int], first: int) -> None:
    # Once near, readings no weaker than -81 with a -69/-75 partner can never sustain < -80.
    mixed = [first] + [d if i % 2 else -69 for i, d in enumerate(dbms)]
    events = walk(PresenceTracker(), mixed)
    assert types(events).count("arrive") == 1
    assert "leave" not in types(events)
