"""The fleet simulator's plans and files: a bad one says what is wrong (the runs against a real
Mosquitto are in tests/integration/test_simulator.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_bridge.dev import simulator as sim


def test_bad_plans_and_files_say_what_is_wrong(tmp_path: Path) -> None:
    one = (sim.SimSensor("s", "a", "s.a", "p" * 20),)
    with pytest.raises(sim.SimulatorError, match="not 16 hex digits"):
        sim.SimulationPlan(sensors=one, subjects=("aa:bb:cc:dd:ee:ff",)).check()
    with pytest.raises(sim.SimulatorError, match="no sensors"):
        sim.SimulationPlan(sensors=()).check()
    subjects = tmp_path / "subjects.txt"
    subjects.write_text("# known\n00000000000000aa\n\n+79161234567\n")
    with pytest.raises(sim.SimulatorError, match=r"subjects.txt:4: .* not a subject id"):
        sim.load_subjects(subjects)
    other = tmp_path / "other.json"
    other.write_text('{"schema": "something-else"}')
    with pytest.raises(sim.SimulatorError, match="not a simulator credentials file"):
        sim.load_credentials(other)
