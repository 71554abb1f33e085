"""Scenario files: the example parses, and every mistake is reported clearly, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim import FaultKind, ScenarioError, load_scenario, parse_scenario
from firmware_sim.ble_wearable import BURST_INTERVAL_MS, HEARTBEAT_INTERVAL_MS
from firmware_sim.fleet import Fleet, run_scenario
from firmware_sim.wearable import Issuer
from gateway.protocol import EventType

SCENARIOS = Path(__file__).parents[2] / "firmware-sim" / "scenarios"
EXAMPLE = SCENARIOS / "example.toml"

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
    assert (scenario.ble_share, scenario.ble, scenario.ble_devices) == (0.0, None, 0)
    assert scenario.https_device_ids() == scenario.device_ids() and scenario.ble_device_ids() == []


def test_event_names_accept_dashes_and_underscores_and_ids_widen_for_big_fleets() -> None:
    scenario = parse_scenario(
        MINIMAL.replace("devices = 3", "devices = 12000") + "[events]\nlow-battery = 0.5\nlow_battery = 0.5\n"
    )
    assert [e for e, _ in scenario.events] == [EventType.LOW_BATTERY, EventType.LOW_BATTERY]
    assert scenario.device_ids()[-1] == "sim-11999" and scenario.device_ids()[0] == "sim-00000"


def test_the_mixed_scenario_puts_the_last_wearables_on_the_in_process_air() -> None:
    scenario = load_scenario(SCENARIOS / "mixed.toml")
    assert (scenario.devices, scenario.ble_share, scenario.ble_devices) == (20, 0.3, 6)
    assert scenario.ble_device_ids() == [f"mix-{i:04d}" for i in range(14, 20)]
    assert scenario.https_device_ids() == [f"mix-{i:04d}" for i in range(14)]
    ble = scenario.ble
    assert ble is not None and ble.in_process
    assert ble.receivers == (("hall-west", 0.0, 0.0), ("hall-east", 20.0, 0.0))
    assert (ble.site, ble.area_m, ble.burst_interval_ms, ble.heartbeat_interval_ms) == ("sim", 20.0, 20.0, 2000.0)


BLE_MINIMAL = MINIMAL.replace("devices = 3", "devices = 4\nble_share = 0.5")


def test_ble_defaults_and_transports_one_per_wearable() -> None:
    scenario = parse_scenario(BLE_MINIMAL + "[ble]\nreceivers = { rx = [1, 2.5] }\n")
    assert scenario.ble is not None
    assert (scenario.ble.receivers, scenario.ble.transports) == ((("rx", 1.0, 2.5),), ())
    assert (scenario.ble.burst_interval_ms, scenario.ble.heartbeat_interval_ms) == (
        BURST_INTERVAL_MS,
        HEARTBEAT_INTERVAL_MS,
    )
    external = parse_scenario(BLE_MINIMAL + '[ble]\ntransports = ["tcp-client:127.0.0.1:9101", "usb:0"]\n')
    assert external.ble is not None and not external.ble.in_process
    assert external.ble.transports == ("tcp-client:127.0.0.1:9101", "usb:0")
    everyone = parse_scenario(BLE_MINIMAL.replace("0.5", "1") + "[ble]\nreceivers = { rx = [0, 0] }\n")
    assert everyone.https_device_ids() == [] and len(everyone.ble_device_ids()) == 4


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (BLE_MINIMAL, "ble: is required when fleet.ble_share puts wearables on BLE"),
        (BLE_MINIMAL.replace("0.5", "1.5"), "fleet.ble_share: is a share of the devices: 0..1, not 1.5"),
        (BLE_MINIMAL.replace("0.5", "0.1"), "fleet.ble_share: 0.1 of 4 devices is no device"),
        (BLE_MINIMAL.replace("0.5", "'half'"), "fleet.ble_share: must be a number >= 0, not 'half'"),
        (MINIMAL + "[ble]\nreceivers = { rx = [0, 0] }\n", "ble: is given but no wearable is on BLE"),
        (BLE_MINIMAL + "[ble]\nradios = 2\n", "ble.radios: unknown setting"),
        (BLE_MINIMAL + "[ble]\n", "ble.receivers: at least one is needed"),
        (BLE_MINIMAL + "[ble]\nreceivers = { 'a b' = [0, 0] }\n", "ble.receivers.a b: names are 1-64 characters"),
        (BLE_MINIMAL + "[ble]\nreceivers = { rx = [0] }\n", "ble.receivers.rx: must be [x, y] in metres"),
        (BLE_MINIMAL + "[ble]\nreceivers = [1, 2]\n", "ble.receivers: must be a table of name = [x, y]"),
        (BLE_MINIMAL + "[ble]\ntransports = ['usb:0']\n", "ble.transports: has 1 transport(s) for 2 BLE"),
        (BLE_MINIMAL + "[ble]\ntransports = ['dongle']\n", "ble.transports: must be a list of bumble transport"),
        (
            BLE_MINIMAL + "[ble]\ntransports = ['usb:0', 'usb:1']\nreceivers = { rx = [0, 0] }\n",
            "ble.receivers: are the in-process air's nodes: not used with ble.transports",
        ),
        (BLE_MINIMAL + "[ble]\nreceivers = { rx = [0, 0] }\narea_m = 0\n", "ble.area_m: must be > 0"),
        (
            BLE_MINIMAL + "[ble]\nreceivers = { rx = [0, 0] }\nburst_interval_ms = 5\n",
            "ble.burst_interval_ms: must be >= 20, not 5",
        ),
        (BLE_MINIMAL + "[ble]\nreceivers = { rx = [0, 0] }\nsite = ''\n", "ble.site: must be a non-empty string"),
        ("ble = 1\n" + BLE_MINIMAL, "ble: must be a table"),
    ],
)
def test_ble_problems_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, source="s.toml")
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


async def test_a_fleet_run_refuses_ble_wearables_rather_than_sending_them_over_https(
    tmp_path: Path, issue: Issuer
) -> None:
    scenario = parse_scenario(BLE_MINIMAL + "[ble]\nreceivers = { rx = [0, 0] }\n")
    fleet = Fleet.open(tmp_path, scenario.device_ids(), issue=issue)
    with pytest.raises(ScenarioError, match="cannot put wearables on BLE yet") as caught:
        await run_scenario(scenario, fleet, lambda wearable: pytest.fail("nothing may be sent"))
    assert caught.value.problems == ["fleet.ble_share: 2 BLE wearable(s); use 0 for an HTTPS-only run"]


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
