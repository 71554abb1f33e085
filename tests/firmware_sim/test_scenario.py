"""Scenario files: the example parses, and every mistake is reported clearly, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim import FaultKind, ScenarioError, load_scenario, parse_scenario
from gateway.protocol import EventType

EXAMPLE = Path(__file__).parents[2] / "firmware-sim" / "scenarios" / "example.toml"

MINIMAL = """
[fleet]
devices = 3
[load]
rate = 2
duration_s = 5
"""


def test_the_example_scenario_parses() -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.devices == 20 and scenario.id_prefix == "sim-"
    assert scenario.rate_per_s == 10.0 and scenario.duration_s == 30 and scenario.signals == 300
    assert dict(scenario.events) == {EventType.PANIC: 0.1, EventType.HEARTBEAT: 0.9}
    assert dict(scenario.faults) == {
        FaultKind.BAD_SIGNATURE: 0.01,
        FaultKind.REPLAYED: 0.01,
        FaultKind.DUPLICATE: 0.01,
    }
    assert scenario.keep_alive is False and scenario.gps is True and scenario.seed == 1
    assert scenario.device_ids()[:2] == ["sim-0000", "sim-0001"]


def test_a_minimal_scenario_gets_defaults() -> None:
    scenario = parse_scenario(MINIMAL)
    assert scenario.events == ((EventType.HEARTBEAT, 1.0),)
    assert scenario.faults == ()
    assert (scenario.keep_alive, scenario.gps, scenario.seed, scenario.deadline_s) == (True, False, None, 30.0)
    assert scenario.name == "scenario" and scenario.signals == 10


def test_event_names_accept_dashes_and_underscores_and_ids_widen_for_big_fleets() -> None:
    scenario = parse_scenario(
        MINIMAL.replace("devices = 3", "devices = 12000") + "[events]\nlow-battery = 0.5\nlow_battery = 0.5\n"
    )
    assert [e for e, _ in scenario.events] == [EventType.LOW_BATTERY, EventType.LOW_BATTERY]
    assert scenario.device_ids()[-1] == "sim-11999" and scenario.device_ids()[0] == "sim-00000"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[load]\nrate = 1\nduration_s = 1\n", "fleet.devices: is required"),
        (MINIMAL.replace("devices = 3", "devices = 0"), "fleet.devices: must be a whole number >= 1, not 0"),
        (MINIMAL.replace("rate = 2", "rate = -1"), "load.rate: must be > 0, not -1"),
        (MINIMAL.replace("rate = 2", 'rate = "fast"'), "load.rate: must be a number > 0, not 'fast'"),
        (MINIMAL.replace("duration_s = 5", ""), "load.duration_s: is required"),
        (MINIMAL.replace("rate = 2", "rate = 0.01"), "load: rate x duration_s starts 0.05 signals"),
        (MINIMAL + "seed = 1.5\n", "load.seed: must be a whole number"),
        (MINIMAL.replace("devices = 3", "devices = 3\nkeep_alive = 1"), "fleet.keep_alive: must be true or false"),
        (MINIMAL.replace("devices = 3", "devices = 3\nid_prefix = 'a b'"), "fleet.id_prefix: 'a b' plus 4 digits"),
        (MINIMAL.replace("devices = 3", "devices = 3\nid_prefix = '" + "x" * 29 + "'"), "fleet.id_prefix"),
        (MINIMAL.replace("devices = 3", "devices = 3\ngps_center = [91, 0]"), "fleet.gps_center: must be"),
        (MINIMAL.replace("devices = 3", "devices = 3\nspeed = 1"), "fleet.speed: unknown setting"),
        (MINIMAL + "[events]\npanic = 0.5\nheartbeat = 0.4\n", "events: the fractions must add up to 1, not 0.9"),
        (MINIMAL + "[events]\nexplode = 1\n", "events.explode: unknown event (known: panic, cancel"),
        (MINIMAL + "[faults]\nmeltdown = 0.1\n", "faults.meltdown: unknown fault"),
        (MINIMAL + "[faults]\nrevoked = 0.1\n", "faults.revoked: needs the device revoked on the gateway"),
        (MINIMAL + "[faults]\ngarbage = 0.7\ntruncated = 0.6\n", "faults: the probabilities add up to 1.3"),
        (MINIMAL + "[faults]\ngarbage = 2\n", "faults.garbage: is a probability: 0..1, not 2"),
        ("fleet = 3\n[load]\nrate = 1\nduration_s = 1\n", "fleet: must be a table"),
        ("rate = 3\n" + MINIMAL, "rate: unknown section or setting"),
    ],
)
def test_scenario_problems_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, source="s.toml")
    assert any(p.startswith(problem) or problem in p for p in caught.value.problems), caught.value.problems
    assert str(caught.value).startswith("s.toml: ")


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("[fleet]\ndevices = -1\n[load]\nrate = 0\nduration_s = 0\n", source="s.toml")
    assert len(caught.value.problems) == 3
    assert "s.toml: 3 problem(s); fleet.devices" in str(caught.value)


def test_unreadable_and_invalid_toml_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing.toml: cannot read the scenario"):
        load_scenario(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[fleet\ndevices = 1\n")
    with pytest.raises(ScenarioError, match=r"broken.toml: not valid TOML: .*line 1"):
        load_scenario(broken)
