"""The BLE wearable on the virtual air: §14 adverts the gateway's keys open, rotation per window, panic burst."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bumble import hci
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_sim.air import PathLossModel, Position, VirtualAir
from firmware_sim.ble_wearable import BleWearable
from firmware_sim.faults import unregistered_wearable
from gateway.ingest.ble import BumbleScanner
from gateway.protocol import EventType
from gateway.protocol.advert import (
    ADVERT_WINDOW_S,
    AdvertSignal,
    ParsedAdvert,
    gateway_advert_keys,
    open_advert,
    parse_advert,
    window_of,
)

MODEL: Final = PathLossModel(noise_sigma_db=0.0, range_m=30.0)
#: Each await on the air is bounded: a failure shows as a timeout, never a hung run.
STEP_TIMEOUT_S: Final = 5.0
#: 2026-01-01T00:00:00Z, at a window boundary's start plus a little.
T0_MS: Final = 1_767_225_600_000
FAST_HEARTBEAT_MS: Final = 100.0


class FakeClock:
    """A settable clock in ms (the wearable's injected clock)."""

    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class Keys:
    fleet: ec.EllipticCurvePrivateKey
    ack: ec.EllipticCurvePrivateKey


@pytest.fixture
def keys() -> Keys:
    return Keys(ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
async def air() -> AsyncIterator[VirtualAir]:
    async with VirtualAir(MODEL, seed=1) as air:
        yield air


Heard = tuple[BLEDevice, AdvertisementData]


async def collect(
    transport: str, predicate: Callable[[list[Heard]], bool], *, timeout: float = STEP_TIMEOUT_S
) -> list[Heard]:
    """Scan until the adverts heard so far satisfy `predicate` (only adverts of our service kept)."""
    heard: list[Heard] = []
    enough = asyncio.Event()

    def on_advert(device: BLEDevice, advert: AdvertisementData) -> None:
        raw, _ = advert.platform_data
        if parse_advert(raw) is not None:
            heard.append((device, advert))
            if predicate(heard):
                enough.set()

    async with BleakScanner(on_advert, backend=BumbleScanner, bumble_transport=transport):
        async with asyncio.timeout(timeout):
            await enough.wait()
    return heard


def open_heard(heard: Heard, keys: Keys, ble: BleWearable, window: int) -> AdvertSignal:
    raw, _ = heard[1].platform_data
    parsed = parse_advert(raw)
    assert isinstance(parsed, ParsedAdvert), parsed
    device_keys = gateway_advert_keys(keys.fleet, ble.wearable.public_key, ble.wearable.device_id)
    assert parsed.eid == device_keys.ephemeral_id(window)
    signal = open_advert(parsed, device_keys, window)
    assert isinstance(signal, AdvertSignal), signal
    return signal


async def start_wearable(air: VirtualAir, keys: Keys, clock: FakeClock, **kwargs: float) -> tuple[BleWearable, str]:
    node = await air.add_node("wearable", Position("hq", 0, 0.0, 0.0), expose=False)
    receiver = await air.add_node("receiver", Position("hq", 0, 3.0, 0.0))
    wearable = unregistered_wearable("w-ble-1", clock=clock)
    ble = BleWearable(wearable, keys.fleet.public_key(), keys.ack.public_key(), controller=node.controller, **kwargs)
    await ble.start()
    return ble, receiver.transport_spec


async def test_adverts_open_with_the_gateway_keys_and_rotate_per_window(air: VirtualAir, keys: Keys) -> None:
    clock = FakeClock()
    ble, transport = await start_wearable(
        air, keys, clock, heartbeat_interval_ms=FAST_HEARTBEAT_MS, heartbeat_period_s=7200.0
    )
    try:
        window = window_of(clock() / 1000)
        first = (await collect(transport, lambda h: len(h) >= 1))[0]
        signal = open_heard(first, keys, ble, window)
        assert (signal.device_id, signal.counter, signal.event) == ("w-ble-1", 1, EventType.HEARTBEAT)
        first_address = first[0].address
        assert isinstance(first[0].details, hci.Address)
        assert first[0].details.address_type == hci.Address.RANDOM_DEVICE_ADDRESS
        assert first[0].details.address_bytes[5] >> 6 == 0b00  # non-resolvable private, never public/static
        assert first[0].details == ble.address

        clock.now_ms += ADVERT_WINDOW_S * 1000
        await ble.refresh()
        second = (await collect(transport, lambda h: h[-1][0].address != first_address))[-1]
        next_signal = open_heard(second, keys, ble, window + 1)
        assert next_signal.counter == signal.counter  # same content, new window: unlinkable bytes
        assert second[0].address != first_address
        raw1, raw2 = first[1].platform_data[0], second[1].platform_data[0]
        assert raw1[8:16] != raw2[8:16]  # the ephemeral id rotated with the address
        assert len(ble.addresses) == 2
    finally:
        await ble.stop()


async def test_press_switches_to_a_burst_the_gateway_hears(air: VirtualAir, keys: Keys) -> None:
    clock = FakeClock()
    ble, transport = await start_wearable(air, keys, clock)  # default, slow heartbeat interval (2 s)
    try:
        window = window_of(clock() / 1000)
        frame = await ble.press()
        assert ble.bursting and ble.advert_interval_ms == 20.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        heard = await collect(transport, lambda h: len(h) >= 10)
        elapsed = loop.time() - started
        assert elapsed < 2.0  # ten adverts well within one slow interval: the burst rate
        signal = open_heard(heard[-1], keys, ble, window)
        assert (signal.counter, signal.event) == (frame.counter, EventType.PANIC)

        clock.now_ms += 31_000  # past the burst: back to the slow rate, still carrying the press
        await ble.refresh()
        assert not ble.bursting and ble.advert_interval_ms == 2000.0
        assert ble.advert == heard[-1][1].platform_data[0]
    finally:
        await ble.stop()


def test_needs_exactly_one_radio(keys: Keys) -> None:
    wearable = unregistered_wearable("w-ble-2", clock=FakeClock())
    with pytest.raises(ValueError, match="exactly one"):
        BleWearable(wearable, keys.fleet.public_key(), keys.ack.public_key())
