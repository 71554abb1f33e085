"""BLE adverts end to end: bumble wearables in the virtual air, a real gateway's receivers, MQTT and the database."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from bumble import hci
from bumble.device import AdvertisingType, Device
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_sim.air import PathLossModel, Position, VirtualAir
from gateway.app import RunningGateway
from gateway.config import BleSettings, ReceiverSettings
from gateway.identity.pki import PkiLayout, load_public_key
from gateway.protocol import EventType
from gateway.protocol.advert import AdvertKeys, device_advert_keys, encode_advert, window_of
from gateway.store.models import Device as DeviceRow
from gateway.store.models import Incident, Observation
from tests.conftest import GatewayFactory, Wearable, enroll, http_client, observe, post_frame

MODEL = PathLossModel(tx_power_at_1m_dbm=-59.0, exponent=2.0, noise_sigma_db=0.0, range_m=30.0)
WEARER_AT = Position("hq", 0, 0.0, 0.0)
#: Each wait is bounded: a failure shows as a timeout, never a hung run.
WAIT_S = 10.0


@pytest.fixture
async def air() -> AsyncIterator[VirtualAir]:
    async with VirtualAir(MODEL, seed=1) as air:
        yield air


async def advertise(air: VirtualAir, name: str, data: bytes, position: Position = WEARER_AT) -> None:
    """A bumble peripheral on the air broadcasting `data` every 20 ms (stop it with air.remove_node(name))."""
    node = await air.add_node(name, position, expose=False)
    device = Device.with_hci(name, hci.Address.generate_static_address(), node.controller, node.controller)
    node.device = device
    await device.power_on()
    await device.start_advertising(
        advertising_type=AdvertisingType.UNDIRECTED,
        advertising_data=data,
        advertising_interval_min=20,
        advertising_interval_max=20,
    )


def ble_settings(air: VirtualAir, *names: str) -> BleSettings:
    receivers = []
    for name in names:
        node = air.nodes[name]
        receivers.append(
            ReceiverSettings(
                name=name,
                transport=node.transport_spec,
                site=node.position.site,
                floor=node.position.floor,
                x=node.position.x,
                y=node.position.y,
            )
        )
    return BleSettings(receivers=receivers, restart_min_s=0.1, restart_max_s=0.5, key_refresh_s=30.0)


def advert_keys(pki: PkiLayout, wearable: Wearable) -> AdvertKeys:
    return device_advert_keys(wearable.key, load_public_key(pki.fleet_public), wearable.device_id)


def now_window() -> int:
    return window_of(time.time())


async def eventually(probe: Callable[[], Awaitable[bool] | bool], timeout: float = WAIT_S) -> None:
    """Poll until `probe` is true (it may be a coroutine function)."""
    async with asyncio.timeout(timeout):
        while True:
            result = probe()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


def adverts_counted(gw: RunningGateway, result: str) -> float:
    total = 0.0
    for receiver in gw.settings.ble.receivers:
        labels = {"receiver": receiver.name, "result": result}
        total += gw.metrics.registry.get_sample_value("panic_ble_adverts_total", labels) or 0.0
    return total


def observed(**where: object) -> Callable[[int], Callable[[], Awaitable[bool]]]:
    def at_least(n: int) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return await Observation.filter(**where).count() >= n

        return probe

    return at_least


async def test_panic_heard_by_three_receivers_is_one_incident_with_three_observations(
    air: VirtualAir, pki: PkiLayout, gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    for name, x in (("near", 2.0), ("mid", 6.0), ("far", 15.0)):
        await air.add_node(name, Position("hq", 0, x, 0.0))
    async with (
        gateway_factory(ble=ble_settings(air, "near", "mid", "far")) as gw,
        observe(gw.settings.mqtt.topic_prefix) as obs,
    ):
        wearable = await enroll(pki)  # registered while the gateway runs: its keys load on the unknown id
        await obs.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ("near", "mid", "far")))
        counter = 7
        keys = advert_keys(pki, wearable)
        await advertise(air, "wearable", encode_advert(keys, counter, EventType.PANIC, 64, now_window()))

        await obs.wait_for(lambda o: len(o.states) == 1)
        ((alert_id, state),) = obs.states.items()
        assert state["device"]["id"] == wearable.device_id
        assert (state["transport"], state["counter"], state["battery"]) == ("ble", counter, 64)
        await eventually(observed(incident_id=alert_id)(3))
        await air.remove_node("wearable")

        observations = await gw.store.observations(incident_id=alert_id)
        assert len(observations) == 3  # one per receiver, however often each heard the advert
        by_rssi = sorted(observations, key=lambda o: o.rssi or -999, reverse=True)
        assert [o.receiver for o in by_rssi] == ["near", "mid", "far"]
        assert {o.transport for o in observations} == {"ble"}
        assert {o.gateway_id for o in observations} == {gw.settings.gateway_id}
        assert await Incident.all().count() == 1
        assert obs.state_messages[alert_id] == 1  # three receivers, one state publish
        assert [e["type"] for e in obs.events] == ["raised"]
        device = await DeviceRow.get(device_id=wearable.device_id)
        assert device.nearest_receiver == "near"

        # The wearable sends the same press over HTTPS too: the same incident, answered as a duplicate.
        async with http_client(client_ssl) as session:
            status, body, _ = await post_frame(session, gw, wearable.frame(EventType.PANIC, counter=counter))
            assert (status, body["status"], body["incident_id"]) == (202, "duplicate", alert_id)
            # Another event under the same counter is still a replay.
            status, body, _ = await post_frame(session, gw, wearable.frame(EventType.CANCEL, counter=counter))
            assert (status, body["reason"]) == (409, "replayed")
        assert await Incident.all().count() == 1
        https = [o for o in await gw.store.observations(incident_id=alert_id) if o.transport == "https"]
        assert len(https) == 1
        assert https[0].receiver is None


async def test_heartbeat_updates_the_device_and_garbage_creates_nothing(
    air: VirtualAir, pki: PkiLayout, gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    await air.add_node("near", Position("hq", 0, 2.0, 0.0))
    await air.add_node("far", Position("hq", 0, 10.0, 0.0))
    async with (
        gateway_factory(ble=ble_settings(air, "near", "far")) as gw,
        observe(gw.settings.mqtt.topic_prefix) as obs,
    ):
        wearable = await enroll(pki)
        keys = advert_keys(pki, wearable)
        window = now_window()
        genuine = encode_advert(keys, 5, EventType.PANIC, 50, window)
        forged = genuine[:-1] + bytes((genuine[-1] ^ 0x01,))  # the tag no longer verifies
        stranger = Wearable("wb-stranger", ec.generate_private_key(ec.SECP256R1()))
        unknown = encode_advert(advert_keys(pki, stranger), 1, EventType.PANIC, 50, window)
        expired = encode_advert(keys, 6, EventType.PANIC, 50, window - 2)  # recorded long ago, replayed now
        for name, data in (("forger", forged), ("stranger", unknown), ("replayer", expired)):
            await advertise(air, name, data)
        await advertise(air, "wearable", encode_advert(keys, 1, EventType.HEARTBEAT, 42, window))

        async def device_updated() -> bool:
            device = await DeviceRow.get(device_id=wearable.device_id)
            return device.battery == 42 and device.nearest_receiver == "near" and device.last_seen_at is not None

        await eventually(device_updated)
        await eventually(observed(device_id=wearable.device_id)(2))
        await eventually(lambda: adverts_counted(gw, "bad-signature") > 0 and adverts_counted(gw, "unknown-eid") > 0)
        for name in ("forger", "stranger", "replayer", "wearable"):
            await air.remove_node(name)

        assert await Incident.all().count() == 0
        assert obs.states == {}
        observations = await gw.store.observations(device_id=wearable.device_id)
        assert {(o.counter, o.event, o.incident_id) for o in observations} == {(1, "heartbeat", None)}
        assert sorted(o.receiver or "" for o in observations) == ["far", "near"]
        async with http_client(client_ssl) as session, session.get(f"{gw.http_url}/metrics") as response:
            text = await response.text()
        assert 'panic_ble_adverts_total{receiver="near",result="bad-signature"}' in text
        assert 'result="unknown-eid"' in text


async def test_a_receiver_that_loses_its_transport_is_reported_down_and_restarted(
    air: VirtualAir, pki: PkiLayout, gateway_factory: GatewayFactory
) -> None:
    await air.add_node("lobby", Position("hq", 0, 2.0, 0.0))
    stairs = await air.add_node("stairs", Position("hq", 0, 4.0, 0.0))
    async with (
        gateway_factory(ble=ble_settings(air, "lobby", "stairs")) as gw,
        observe(gw.settings.mqtt.topic_prefix) as obs,
    ):
        wearable = await enroll(pki)
        await obs.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ("lobby", "stairs")))

        await air.remove_node("stairs")  # the dongle is unplugged
        await obs.wait_for(lambda o: o.status["stairs"]["status"] == "down")
        assert obs.status["stairs"]["receiver"] == "stairs"
        assert obs.status["stairs"]["error"]
        assert obs.status["lobby"]["status"] == "up"
        assert gw.metrics.registry.get_sample_value("panic_ble_receiver_up", {"receiver": "stairs"}) == 0

        # The others keep working.
        keys = advert_keys(pki, wearable)
        await advertise(air, "wearable", encode_advert(keys, 1, EventType.PANIC, 80, now_window()))
        await obs.wait_for(lambda o: len(o.states) == 1)
        await air.remove_node("wearable")
        (alert_id,) = obs.states
        assert [o.receiver for o in await gw.store.observations(incident_id=alert_id)] == ["lobby"]

        # Plugged back in: the receiver reopens it on its own.
        await air.add_node("stairs", stairs.position, port=stairs.port or 0)
        await obs.wait_for(lambda o: o.status["stairs"]["status"] == "up")
        assert gw.metrics.registry.get_sample_value("panic_ble_receiver_up", {"receiver": "stairs"}) == 1
        await advertise(air, "wearable", encode_advert(keys, 2, EventType.PANIC, 80, now_window()))
        await obs.wait_for(lambda o: len(o.states) == 2)
        second = next(a for a in obs.states if a != alert_id)
        await eventually(observed(incident_id=second)(2))
