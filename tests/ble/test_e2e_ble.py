"""BLE end to end: a bumble wearable presses, two receivers hear it, the gateway follows up over GATT, MQTT acks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import pytest
from cryptography import x509

from firmware_sim.air import AirNode, PathLossModel, Position, VirtualAir
from firmware_sim.ble_wearable import DISPLAY_OPERATOR, DISPLAY_RECEIVED, BleWearable
from firmware_sim.wearable import VirtualWearable
from gateway.app import RunningGateway
from gateway.config import BleSettings
from gateway.identity.pki import PkiLayout, load_public_key
from gateway.protocol import GpsFix
from gateway.store.models import Device as DeviceRow
from gateway.store.models import Incident, IncidentEvent, Observation
from tests.ble.test_receivers import ble_settings, eventually
from tests.conftest import GatewayFactory, Observer, Wearable, enroll, observe

MODEL: Final = PathLossModel(tx_power_at_1m_dbm=-59.0, exponent=2.0, noise_sigma_db=0.0, range_m=30.0)
WEARER_AT: Final = Position("hq", 0, 0.0, 0.0)
GPS: Final = GpsFix(lat=48.8583701, lon=2.2944813, accuracy_m=8, fix_age_s=3)
#: Every wait is bounded well inside the per-test budget: a failure shows as a timeout, never a hung run.
WAIT_S: Final = 8.0


@pytest.fixture
async def air() -> AsyncIterator[VirtualAir]:
    async with VirtualAir(MODEL, seed=1) as air:
        await air.add_node("near", Position("hq", 0, 2.0, 0.0))
        await air.add_node("far", Position("hq", 0, 8.0, 0.0))
        yield air


def settings(air: VirtualAir, **follow_up: float) -> BleSettings:
    return ble_settings(air, "near", "far").model_copy(update=follow_up)


async def ble_wearable(pki: PkiLayout, wearable: Wearable, air: VirtualAir) -> BleWearable:
    """The enrolled device as BLE firmware provisioned with the gateways' fleet and ack public keys."""
    row = await DeviceRow.get(device_id=wearable.device_id)
    certificate = x509.load_pem_x509_certificate(row.cert_pem.encode())
    firmware = VirtualWearable(wearable.device_id, wearable.key, certificate, device_dir=None, gps=GPS)
    node = await air.add_node("wearable", WEARER_AT, expose=False)
    return BleWearable(
        firmware,
        load_public_key(pki.fleet_public),
        load_public_key(pki.ack_public),
        controller=node.controller,
        heartbeat_interval_ms=200.0,
    )


async def receivers_up(obs: Observer) -> None:
    await obs.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ("near", "far")), WAIT_S)


async def wearable_shows(ble: BleWearable, predicate: Callable[[BleWearable], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        await ble.wait_until(predicate)


def events_of(obs: Observer, alert_id: str) -> list[str]:
    return [e["type"] for e in obs.events if e["alert_id"] == alert_id]


def only_state(obs: Observer) -> tuple[str, dict[str, Any]]:
    ((alert_id, state),) = obs.states.items()
    return alert_id, state


async def test_press_is_followed_up_over_gatt_and_the_operator_ack_reaches_the_wearer(
    air: VirtualAir, pki: PkiLayout, gateway_factory: GatewayFactory
) -> None:
    async with gateway_factory(ble=settings(air)) as gw, observe(gw.settings.mqtt.topic_prefix) as obs:
        await receivers_up(obs)
        wearable = await enroll(pki)
        async with await ble_wearable(pki, wearable, air) as ble:
            frame = await ble.press()

            # One incident, raised by the advert, with the GPS fix of the frame read over GATT.
            await obs.wait_for(lambda o: any(s["location"] is not None for s in o.states.values()), WAIT_S)
            alert_id, state = only_state(obs)
            assert (state["device"]["id"], state["counter"], state["transport"]) == (
                wearable.device_id,
                frame.counter,
                "ble",
            )
            lon, lat = state["location"]["geometry"]["coordinates"]
            assert (round(lat, 5), round(lon, 5)) == (round(GPS.lat, 5), round(GPS.lon, 5))
            assert state["location"]["properties"]["accuracy_m"] == GPS.accuracy_m
            await wearable_shows(ble, lambda w: w.display == DISPLAY_RECEIVED)
            (received,) = ble.acks
            assert (received.counter, received.incident_id) == (frame.counter, alert_id)
            gatt = await Observation.filter(incident_id=alert_id, transport="ble-gatt").count()
            assert gatt == 1  # the frame read over GATT is the same press, not a second incident

            # The command center takes it: acknowledged on MQTT, and the wearer sees it.
            await obs.ack(alert_id, operator="op-7")
            await obs.wait_for(lambda o: o.states[alert_id]["state"] == "acknowledged", WAIT_S)
            await wearable_shows(ble, lambda w: w.display == DISPLAY_OPERATOR)
            assert [a.kind.name for a in ble.acks] == ["RECEIVED", "OPERATOR"]
            assert all(a.incident_id == alert_id for a in ble.acks)
        assert await Incident.all().count() == 1
        assert "followup-failed" not in events_of(obs, alert_id)
        assert events_of(obs, alert_id)[:2] == ["raised", "located"]
        assert_gatt_metric(gw, "duplicate", 1)


def assert_gatt_metric(gw: RunningGateway, outcome: str, expected: float) -> None:
    labels = {"event": "panic", "transport": "ble-gatt", "outcome": outcome}
    assert gw.metrics.registry.get_sample_value("panic_signals_accepted_total", labels) == expected


def heard_heartbeat(wearable: Wearable) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await Observation.filter(device_id=wearable.device_id, event="heartbeat").exists()

    return probe


def vanish_after_first_advert_unlike(air: VirtualAir, name: str, unlike: bytes) -> None:
    """Take the node off the air as soon as it has sent one advert whose data differs from `unlike`.

    The receivers still get that advert (the air calls its watchers after sending); nothing the node does after it
    reaches anyone, so the gateway's GATT follow-up cannot win a race against the removal.
    """
    removal: list[asyncio.Task[None]] = []

    def vanish(node: AirNode, data: bytes) -> None:
        if node.name == name and not removal and data != unlike:
            stop_watching()
            removal.append(asyncio.get_running_loop().create_task(air.remove_node(name)))

    stop_watching = air.on_advert(vanish)


async def test_a_wearable_gone_after_its_advert_leaves_the_incident_standing_with_the_failure(
    air: VirtualAir, pki: PkiLayout, gateway_factory: GatewayFactory
) -> None:
    ble_section = settings(air, follow_up_deadline_s=3.0, follow_up_connect_timeout_s=0.5)
    async with gateway_factory(ble=ble_section) as gw, observe(gw.settings.mqtt.topic_prefix) as obs:
        await receivers_up(obs)
        wearable = await enroll(pki)
        async with await ble_wearable(pki, wearable, air) as ble:
            heartbeat = ble.advert
            assert heartbeat is not None
            await eventually(heard_heartbeat(wearable))  # its advert keys are loaded: one panic advert is enough
            vanish_after_first_advert_unlike(air, "wearable", heartbeat)
            await ble.press()  # its first panic advert is also its last: it walks out of range
            await obs.wait_for(lambda o: len(o.states) == 1, WAIT_S)
            alert_id, _ = only_state(obs)

            await obs.wait_for(lambda o: "followup-failed" in events_of(o, alert_id), WAIT_S)
            assert "wearable" not in air.nodes
            assert ble.display == "" and ble.acks == []
        assert obs.states[alert_id]["state"] == "raised"
        assert obs.states[alert_id]["location"] is None
        (failed,) = [e for e in obs.events if e["type"] == "followup-failed"]
        assert failed["detail"]["reason"].startswith("unreachable")
        logged = await IncidentEvent.filter(incident_id=alert_id).order_by("id").values_list("type", flat=True)
        assert list(logged) == ["raised", "followup-failed"]
        assert await Incident.all().count() == 1
        assert await Observation.filter(incident_id=alert_id, transport="ble-gatt").count() == 0
