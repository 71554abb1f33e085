"""Mixed fleets: BLE wearables on the fleet's air beside HTTPS ones, against a real gateway with its receivers."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Final

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console

from firmware_sim import Fleet, parse_scenario, run_scenario
from firmware_sim.cli import EXIT_USAGE, main
from firmware_sim.fleet import BLE_ACKNOWLEDGED, BleRecord, FleetAir, SignalRecord, fleet_uplinks
from firmware_sim.scenario import Scenario
from firmware_sim.wearable import Issuer
from gateway.config import BleSettings, ReceiverSettings
from gateway.identity.pki import PkiLayout, load_public_key
from tests.conftest import observe
from tests.firmware_sim.conftest import GatewayFactory, register

#: 4 devices, the last two on BLE; every device presses twice, 2 s apart (2 signals a second for 4 s).
MIXED: Final = """
name = "mixed-unit"
[fleet]
devices = 4
id_prefix = "mx-"
ble_share = 0.5
gps = true
[load]
rate = 2
duration_s = 4
deadline_s = 8
seed = 5
[events]
panic = 1
[ble]
receivers = { rx-a = [0.0, 0.0], rx-b = [10.0, 0.0] }
site = "sim"
area_m = 10
heartbeat_interval_ms = 200
"""
#: Bounded waits: a failure shows as a timeout, well inside the per-test budget.
WAIT_S: Final = 10.0


def ble_settings(air: FleetAir) -> BleSettings:
    """The gateway's receivers: the fleet air's receiver nodes, where the scenario put them."""
    receivers = [
        ReceiverSettings(
            name=r.name,
            transport=r.transport,
            site=r.position.site,
            floor=r.position.floor,
            x=r.position.x,
            y=r.position.y,
        )
        for r in air.receivers
    ]
    return BleSettings(receivers=receivers, restart_min_s=0.1, restart_max_s=0.5, key_refresh_s=30.0)


def mixed() -> Scenario:
    return parse_scenario(MIXED)


def any_public_key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


async def test_every_press_of_a_mixed_fleet_is_acknowledged_on_its_channel_and_raises_one_incident(
    gateway_factory: GatewayFactory, pki: PkiLayout, device_ca_issue: Issuer, tmp_path: Path
) -> None:
    scenario = mixed()
    fleet = Fleet.open(tmp_path, scenario.device_ids(), issue=device_ca_issue)
    fleet_public, ack_public = load_public_key(pki.fleet_public), load_public_key(pki.ack_public)
    async with (
        FleetAir(scenario, fleet, fleet_public, ack_public) as air,  # the air first: the gateway opens its receivers
        gateway_factory(ble=ble_settings(air)) as gateway,
        observe(gateway.settings.mqtt.topic_prefix) as obs,
    ):
        for wearable in fleet.wearables:
            await register(pki, wearable)
        names = [r.name for r in air.receivers]
        await obs.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in names), WAIT_S)
        async with fleet_uplinks(
            gateway.http_url, fleet, ca_file=pki.root_ca_cert, mtls=False, keep_alive=True
        ) as uplink_for:
            report = await run_scenario(scenario, fleet, uplink_for, air=air)
        await obs.wait_for(lambda o: len(o.states) >= len(report.records), WAIT_S)

    surprises = [(r.device_id, r.kind, r.label, r.detail) for r in report.records if not r.ok]
    assert report.ok, surprises
    https = [r for r in report.records if isinstance(r, SignalRecord)]
    ble = [r for r in report.records if isinstance(r, BleRecord)]
    assert {r.device_id for r in https} == set(scenario.https_device_ids())
    assert {r.device_id for r in ble} == set(scenario.ble_device_ids())
    assert len(https) == len(ble) == 4 and {r.kind for r in report.records} == {"panic"}
    assert all(r.result.status_code == 202 for r in https)
    assert all(r.label == BLE_ACKNOWLEDGED and r.latency_s is not None for r in ble)
    # BLE presses keep the open-loop timetable too (waiting for their GATT acknowledgements would lag by seconds).
    assert max(r.lag_s for r in report.records) < 0.4

    # One incident per press, each raised over its own channel.
    by_transport: dict[str, set[tuple[str, int]]] = {"https": set(), "ble": set()}
    for state in obs.states.values():
        by_transport[state["transport"]].add((state["device"]["id"], state["counter"]))
    assert len(obs.states) == len(report.records)
    assert {device for device, _ in by_transport["https"]} == set(scenario.https_device_ids())
    assert {device for device, _ in by_transport["ble"]} == set(scenario.ble_device_ids())
    assert len(by_transport["https"]) == len(by_transport["ble"]) == 4

    out = io.StringIO()
    report.render(Console(file=out, width=120, highlight=False))
    text = out.getvalue()
    for needle in ("by transport", "https", "ble", "help is coming", "panic (ble)"):
        assert needle in text, text


async def test_the_fleet_air_places_ble_wearables_in_the_area_reproducibly(tmp_path: Path, issue: Issuer) -> None:
    scenario = mixed()
    fleet = Fleet.open(tmp_path, scenario.device_ids(), issue=issue)
    public = any_public_key()  # the keys only matter once a gateway answers
    async with FleetAir(scenario, fleet, public, public) as air:
        assert [r.name for r in air.receivers] == ["rx-a", "rx-b"]
        assert all(t.startswith("tcp-client:127.0.0.1:") for t in air.transports)
        assert set(air.wearables) == set(air.positions) == set(scenario.ble_device_ids())
        for position in air.positions.values():
            assert position.site == "sim" and position.floor == 0
            assert 0 <= position.x <= 10 and 0 <= position.y <= 10
        assert all(ble.advert is not None for ble in air.wearables.values())  # advertising heartbeats already
        first = dict(air.positions)
    assert air.wearables == {}
    assert air.place(random.Random(scenario.seed)) == first  # same seed, same places
    assert air.place(random.Random(1)) != first


def test_a_fleet_air_needs_ble_wearables(tmp_path: Path, issue: Issuer) -> None:
    scenario = parse_scenario(MIXED.replace("ble_share = 0.5\n", "").split("[ble]")[0])
    fleet = Fleet.open(tmp_path, scenario.device_ids(), issue=issue)
    with pytest.raises(ValueError, match="no wearable is on BLE"):
        FleetAir(scenario, fleet, any_public_key(), any_public_key())


def test_the_fleet_command_needs_the_pki_for_ble_wearables(
    tmp_path: Path, issue: Issuer, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "mixed.toml"
    scenario.write_text(MIXED)
    Fleet.open(tmp_path / "fleet", mixed().device_ids(), issue=issue)
    argv = ["fleet", "--scenario", str(scenario), "--dir", str(tmp_path / "fleet"), "--url", "https://127.0.0.1:1"]
    assert main(argv) == EXIT_USAGE
    assert "BLE wearables need --ca-dir" in capsys.readouterr().err
