"""bleak's public API over the bumble backend, on real bumble controllers in the virtual air over loopback TCP."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bumble import gatt, hci
from bumble.core import AdvertisingData
from bumble.device import Connection, Device

from firmware_sim.air import PathLossModel, Position, VirtualAir, expected_rssi
from gateway.ingest.ble import (
    BumbleClient,
    BumbleConnectTimeoutError,
    BumbleRadio,
    BumbleScanner,
    BumbleTransportLostError,
    parse_advertising_data,
)
from gateway.ingest.ble.bumble_backend import advertising_report_data

MODEL = PathLossModel(tx_power_at_1m_dbm=-59.0, exponent=2.0, noise_sigma_db=0.0, range_m=30.0)
WEARABLE_ADDRESS = "F0:00:00:00:00:01"
SERVICE_UUID16 = 0xFEAA
SERVICE_UUID = f"0000{SERVICE_UUID16:04x}-0000-1000-8000-00805f9b34fb"
PAYLOAD = bytes(range(20))
GATT_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
RECORD_UUID = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
ACK_UUID = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
STATUS_UUID = "6e400004-b5a3-f393-e0a9-e50e24dcca9e"
RECORD = b"signed alert record"
#: Each await on the air is bounded: a failure shows as a timeout, never a hung run.
STEP_TIMEOUT_S = 5.0


@dataclass
class Wearable:
    device: Device
    status: gatt.Characteristic[bytes]
    acks: list[bytes] = field(default_factory=list)
    ack_received: asyncio.Event = field(default_factory=asyncio.Event)


async def start_wearable(air: VirtualAir, position: Position) -> Wearable:
    node = await air.add_node("wearable", position, expose=False)
    device = Device.with_hci("wearable", hci.Address(WEARABLE_ADDRESS), node.controller, node.controller)
    status = gatt.Characteristic(STATUS_UUID, gatt.Characteristic.Properties.NOTIFY, "READABLE", b"")
    wearable = Wearable(device, status)

    def on_ack(_connection: Connection, value: bytes) -> None:
        wearable.acks.append(bytes(value))
        wearable.ack_received.set()

    device.add_service(
        gatt.Service(
            GATT_SERVICE,
            [
                gatt.Characteristic(RECORD_UUID, gatt.Characteristic.Properties.READ, "READABLE", RECORD),
                gatt.Characteristic(
                    ACK_UUID, gatt.Characteristic.Properties.WRITE, "WRITEABLE", gatt.CharacteristicValue(write=on_ack)
                ),
                status,
            ],
        )
    )
    await device.power_on()
    advert = AdvertisingData(
        [
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.SERVICE_DATA_16_BIT_UUID, struct.pack("<H", SERVICE_UUID16) + PAYLOAD),
        ]
    )
    scan_response = AdvertisingData([(AdvertisingData.COMPLETE_LOCAL_NAME, b"panic-wearable")])
    await device.start_advertising(
        advertising_data=bytes(advert),
        scan_response_data=bytes(scan_response),
        advertising_interval_min=20,
        advertising_interval_max=20,
        auto_restart=True,
    )
    return wearable


@pytest.fixture
async def air() -> AsyncIterator[VirtualAir]:
    async with VirtualAir(MODEL, seed=1) as air:
        yield air


async def first_advert(transport: str, mode: str = "active") -> tuple[BLEDevice, AdvertisementData]:
    found: asyncio.Queue[tuple[BLEDevice, AdvertisementData]] = asyncio.Queue()

    def on_advert(device: BLEDevice, advert: AdvertisementData) -> None:
        if device.address == WEARABLE_ADDRESS:
            found.put_nowait((device, advert))

    async with BleakScanner(on_advert, scanning_mode=mode, backend=BumbleScanner, bumble_transport=transport):  # type: ignore[arg-type]
        async with asyncio.timeout(STEP_TIMEOUT_S):
            return await found.get()


async def test_scanner_hears_service_data_with_rssi_by_distance(air: VirtualAir) -> None:
    await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    near = await air.add_node("near", Position("hq", 0, 2.0, 0.0))
    far = await air.add_node("far", Position("hq", 0, 20.0, 0.0))

    (near_device, near_advert), (_, far_advert) = await asyncio.gather(
        first_advert(near.transport_spec), first_advert(far.transport_spec, mode="passive")
    )

    assert near_advert.service_data == {SERVICE_UUID: PAYLOAD}
    assert far_advert.service_data == {SERVICE_UUID: PAYLOAD}
    assert near_advert.rssi == round(expected_rssi(MODEL, Position("hq", 0, 0, 0), near.position) or 0)
    assert far_advert.rssi == round(expected_rssi(MODEL, Position("hq", 0, 0, 0), far.position) or 0)
    assert near_advert.rssi > far_advert.rssi
    assert near_advert.local_name == "panic-wearable"  # active scan: the scan response is merged
    assert far_advert.local_name is None  # passive scan: no scan request, no scan response
    raw, _bumble_advertisement = near_advert.platform_data
    assert parse_advertising_data(raw).service_data == {SERVICE_UUID: PAYLOAD}
    assert isinstance(near_device.details, hci.Address)


async def test_out_of_range_receiver_hears_nothing_of_the_wearable(air: VirtualAir) -> None:
    await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    away = await air.add_node("away", Position("hq", 0, 100.0, 0.0))
    await air.add_background_advertiser("beacon", Position("hq", 0, 101.0, 0.0), interval_ms=20)
    heard: list[str] = []
    beacon_adverts = asyncio.Event()

    def on_advert(device: BLEDevice, advert: AdvertisementData) -> None:
        heard.append(device.address)
        if heard.count(device.address) >= 10 and device.address != WEARABLE_ADDRESS:
            beacon_adverts.set()

    # The beacon's 10 adverts prove the receiver is scanning while the wearable advertised about as often.
    async with BleakScanner(on_advert, backend=BumbleScanner, bumble_transport=away.transport_spec):
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await beacon_adverts.wait()
    assert WEARABLE_ADDRESS not in heard


def ours(raw: bytes) -> bool:
    """The prefilter the gateway's receivers use, for the wearable's UUID."""
    return bytes([0x16]) + struct.pack("<H", SERVICE_UUID16) in raw


@pytest.mark.parametrize("mode", ["passive", "active"])
async def test_prefilter_drops_foreign_adverts_and_keeps_ours(air: VirtualAir, mode: str) -> None:
    await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    await air.add_background_advertiser("beacon", Position("hq", 0, 1.0, 0.0), interval_ms=20)
    gateway = await air.add_node("gateway", Position("hq", 0, 2.0, 0.0))
    heard: list[tuple[BLEDevice, AdvertisementData]] = []
    enough = asyncio.Event()

    def on_advert(device: BLEDevice, advert: AdvertisementData) -> None:
        heard.append((device, advert))
        if len(heard) >= 10:
            enough.set()

    async with BleakScanner(
        on_advert,
        scanning_mode=mode,  # type: ignore[arg-type]
        backend=BumbleScanner,
        bumble_transport=gateway.transport_spec,
        bumble_prefilter=ours,
    ):
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await enough.wait()  # the beacon advertised as often as the wearable meanwhile

    assert {device.address for device, _ in heard} == {WEARABLE_ADDRESS}
    for _, advert in heard:  # ours arrive exactly as without a prefilter
        assert advert.service_data == {SERVICE_UUID: PAYLOAD}
        assert advert.local_name == ("panic-wearable" if mode == "active" else None)
        raw, _bumble_advertisement = advert.platform_data
        assert ours(raw)


async def test_one_prefilter_per_radio(air: VirtualAir) -> None:
    gateway = await air.add_node("gateway", Position("hq", 0, 0.0, 0.0))
    async with BumbleRadio(gateway.transport_spec) as radio:
        radio.filter_reports(ours)
        with pytest.raises(BleakError, match="already filters"):
            radio.filter_reports(ours)
        radio.filter_reports(None)
        radio.filter_reports(ours)


def _legacy_report(data: bytes) -> hci.HCI_LE_Advertising_Report_Event.Report:
    return hci.HCI_LE_Advertising_Report_Event.Report(
        event_type=hci.HCI_LE_Advertising_Report_Event.EventType.ADV_NONCONN_IND,
        address_type=hci.Address.RANDOM_DEVICE_ADDRESS,
        address=hci.Address("C0:00:00:00:00:01"),
        data=data,
        rssi=-60,
    )


def _extended_report(data: bytes) -> hci.HCI_LE_Extended_Advertising_Report_Event.Report:
    return hci.HCI_LE_Extended_Advertising_Report_Event.Report(
        event_type=0x10,
        address_type=hci.Address.RANDOM_DEVICE_ADDRESS,
        address=hci.Address("C0:00:00:00:00:02"),
        primary_phy=1,
        secondary_phy=0,
        advertising_sid=0,
        tx_power=0x7F,
        rssi=-70,
        periodic_advertising_interval=0,
        direct_address_type=0,
        direct_address=hci.Address.ANY,
        data=data,
    )


def test_advertising_report_data_reads_every_report_as_received() -> None:
    first, second = b"\x02\x01\x06\x04\xff\x59\x00\xab", b"\x05\x16\xaa\xfe\x01\x02\x00"  # padding kept
    legacy = bytes(hci.HCI_LE_Advertising_Report_Event([_legacy_report(first), _legacy_report(second)]))
    extended = bytes(hci.HCI_LE_Extended_Advertising_Report_Event([_extended_report(first), _extended_report(b"")]))
    assert advertising_report_data(legacy) == [first, second]
    assert advertising_report_data(extended) == [first, b""]


def test_advertising_report_data_leaves_other_and_malformed_packets_to_bumble() -> None:
    legacy = bytes(hci.HCI_LE_Advertising_Report_Event([_legacy_report(b"\x02\x01\x06")]))
    assert advertising_report_data(bytes(hci.HCI_Reset_Command())) is None
    assert advertising_report_data(bytes([0x04, 0x0E, 0x04, 0x01, 0x03, 0x0C, 0x00])) is None  # Command Complete
    for cut in range(len(legacy)):
        assert advertising_report_data(legacy[:cut]) is None  # truncated: bumble decides what it is


async def test_client_reads_writes_and_disconnects(air: VirtualAir) -> None:
    wearable = await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    gateway = await air.add_node("gateway", Position("hq", 0, 3.0, 0.0))
    device, _ = await first_advert(gateway.transport_spec)

    async with BleakClient(device, backend=BumbleClient, bumble_transport=gateway.transport_spec, timeout=5) as client:
        assert client.is_connected
        assert client.services.get_characteristic(RECORD_UUID) is not None
        assert await client.read_gatt_char(RECORD_UUID) == RECORD
        await client.write_gatt_char(ACK_UUID, b"help is coming", response=True)
        assert wearable.acks == [b"help is coming"]  # a write with response returns after the peer handled it
    assert not client.is_connected
    assert not wearable.device.connections

    # The same radio port serves a second session: the backend closed the first one cleanly.
    async with BleakClient(WEARABLE_ADDRESS, backend=BumbleClient, bumble_transport=gateway.transport_spec) as again:
        assert await again.read_gatt_char(RECORD_UUID) == RECORD


async def test_client_receives_notifications(air: VirtualAir) -> None:
    wearable = await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    gateway = await air.add_node("gateway", Position("hq", 0, 3.0, 0.0))
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async with BleakClient(WEARABLE_ADDRESS, backend=BumbleClient, bumble_transport=gateway.transport_spec) as client:
        await client.start_notify(STATUS_UUID, lambda _char, data: received.put_nowait(bytes(data)))
        await wearable.device.notify_subscribers(wearable.status, b"battery low")
        async with asyncio.timeout(STEP_TIMEOUT_S):
            assert await received.get() == b"battery low"
        await client.stop_notify(STATUS_UUID)


async def test_connecting_to_a_stopped_peripheral_fails_fast(air: VirtualAir) -> None:
    await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    gateway = await air.add_node("gateway", Position("hq", 0, 3.0, 0.0))
    await air.remove_node("wearable")

    client = BleakClient(WEARABLE_ADDRESS, backend=BumbleClient, bumble_transport=gateway.transport_spec, timeout=1)
    started = time.monotonic()
    with pytest.raises(BumbleConnectTimeoutError) as raised:
        await client.connect()
    assert isinstance(raised.value, BleakError)
    assert time.monotonic() - started < STEP_TIMEOUT_S
    assert not client.is_connected

    # The controller is usable afterwards: the cancelled connection did not stay pending.
    await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    async with BleakClient(WEARABLE_ADDRESS, backend=BumbleClient, bumble_transport=gateway.transport_spec) as client:
        assert await client.read_gatt_char(RECORD_UUID) == RECORD


async def test_peripheral_gone_mid_connection_surfaces_as_disconnect(air: VirtualAir) -> None:
    await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    gateway = await air.add_node("gateway", Position("hq", 0, 3.0, 0.0))
    lost = asyncio.Event()

    async with BleakClient(
        WEARABLE_ADDRESS,
        lambda _client: lost.set(),
        backend=BumbleClient,
        bumble_transport=gateway.transport_spec,
    ) as client:
        await air.remove_node("wearable")  # battery pulled: the link times out on the gateway's side
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await lost.wait()
        assert not client.is_connected
        with pytest.raises(BleakError):
            await client.read_gatt_char(RECORD_UUID)


async def test_transport_drop_surfaces_as_disconnect_not_hang(air: VirtualAir) -> None:
    await start_wearable(air, Position("hq", 0, 0.0, 0.0))
    gateway = await air.add_node("gateway", Position("hq", 0, 3.0, 0.0))
    lost = asyncio.Event()

    async with BleakClient(
        WEARABLE_ADDRESS,
        lambda _client: lost.set(),
        backend=BumbleClient,
        bumble_transport=gateway.transport_spec,
    ) as client:
        await air.remove_node("gateway")  # the radio's TCP link (a USB dongle, in the field) goes away
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await lost.wait()
        with pytest.raises(BumbleTransportLostError):
            await client.read_gatt_char(RECORD_UUID)


async def test_unreachable_transport_is_a_bleak_error() -> None:
    async with VirtualAir(MODEL) as air:
        node = await air.add_node("gone", Position("hq", 0, 0.0, 0.0))
        spec = node.transport_spec
        await air.remove_node("gone")
    with pytest.raises(BleakError):
        async with BleakScanner(lambda _d, _a: None, backend=BumbleScanner, bumble_transport=spec):
            pass


def test_backend_needs_a_radio() -> None:
    with pytest.raises(BleakError, match="bumble_transport"):
        BleakScanner(lambda _d, _a: None, backend=BumbleScanner)


def test_parse_advertising_data_fields() -> None:
    raw = (
        bytes([2, 0x01, 0x06])
        + bytes([5, 0x16]) + struct.pack("<H", 0xFEAA) + b"\x01\x02"
        + bytes([4, 0xFF, 0x59, 0x00, 0xAB])
        + bytes([3, 0x09]) + b"hi"
        + bytes([2, 0x0A, 0xF8])
        + bytes([3, 0x03]) + struct.pack("<H", 0x180D)
    )  # fmt: skip
    parsed = parse_advertising_data(raw)
    assert parsed.service_data == {SERVICE_UUID: b"\x01\x02"}
    assert parsed.manufacturer_data == {0x0059: b"\xab"}
    assert parsed.local_name == "hi"
    assert parsed.tx_power == -8
    assert parsed.service_uuids == ["0000180d-0000-1000-8000-00805f9b34fb"]


@pytest.mark.parametrize("raw", [b"", b"\x00\x00\x00", b"\x05\x16\xaa", b"\xff", b"\x02\xff\x01", b"\x03\x21\x01\x02"])
def test_parse_advertising_data_ignores_garbage(raw: bytes) -> None:
    parsed = parse_advertising_data(raw)
    assert parsed.service_data == {}
    assert parsed.manufacturer_data == {}
