"""A bleak backend on the bumble host stack: the gateway scans and connects through bleak's public API on any HCI.

Usage (the transport spec is a bumble transport name; it reaches the backend through bleak's ``**kwargs``, which
``BleakScanner``/``BleakClient`` pass unchanged to the backend's constructor)::

    scanner = BleakScanner(on_advert, backend=BumbleScanner, bumble_transport="tcp-client:127.0.0.1:9001")
    client = BleakClient(device, backend=BumbleClient, bumble_transport="usb:0", timeout=5)

On hardware only one host may own a controller, so the composition root normally opens one shared radio and
passes it to the scanner and every client (the backend then neither opens nor closes it)::

    async with BumbleRadio("usb:0") as radio:
        async with BleakScanner(on_advert, backend=BumbleScanner, bumble_radio=radio): ...
        async with BleakClient(device, backend=BumbleClient, bumble_radio=radio) as client: ...
        await radio.lost  # resolves if the HCI transport drops: restart the radio

Each advertisement reaches bleak's detection callback as ``BLEDevice`` (``details`` is the bumble
``hci.Address``, with its type) and ``AdvertisementData`` whose ``platform_data`` is ``(raw_ad_bytes, advertisement)``:
the raw AD structures as received (advert followed by scan response) and the bumble ``Advertisement``.

``bumble_prefilter=`` (a ``Callable[[bytes], bool]`` on those raw AD bytes) drops every advert it rejects before
any bleak object is built; when scanning passively it runs on the HCI report bytes themselves, so bumble does not
even parse a rejected report (a crowded air is mostly other vendors' beacons)::

    BleakScanner(on_advert, scanning_mode="passive", backend=BumbleScanner, bumble_radio=radio,
                 bumble_prefilter=lambda raw: b"\x16\x00\xfd" in raw)

Errors (all are bleak's, so callers catch ``BleakError``)::

    BleakError
     +-- BumbleTransportLostError      the HCI transport dropped (controller unplugged, TCP peer gone)
     +-- BumbleConnectTimeoutError     no connection in time (peer gone or out of range); also a TimeoutError
     +-- BleakGATTProtocolError        the peer answered an ATT request with an error (bleak's, with its code)
     +-- BleakBluetoothNotAvailableError  the radio could not be opened or powered on
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NamedTuple, TypeVar

import structlog
from bleak.args import SizedBuffer
from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakError,
    BleakGATTProtocolError,
)
from bumble import att, core, hci
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy
from bumble.transport import open_transport
from bumble.transport.common import Transport, TransportSink

from gateway.ingest.ble import const

__all__ = [
    "BumbleClient",
    "BumbleConnectTimeoutError",
    "BumbleRadio",
    "BumbleScanner",
    "BumbleTransportLostError",
    "ParsedAdvertisingData",
    "advertising_report_data",
    "parse_advertising_data",
]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

#: A predicate on an advert's raw AD bytes: False drops the advert before bleak (or bumble) sees it.
AdvertPrefilter = Callable[[bytes], bool]

# Bluetooth base UUID: 16- and 32-bit UUIDs are short forms of 0000xxxx-0000-1000-8000-00805f9b34fb.
_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"

# AD types (Core Supplement, Part A, 1) that bleak's AdvertisementData exposes.
_AD_UUID16_LISTS = (0x02, 0x03)
_AD_UUID32_LISTS = (0x04, 0x05)
_AD_UUID128_LISTS = (0x06, 0x07)
_AD_SHORT_NAME = 0x08
_AD_COMPLETE_NAME = 0x09
_AD_TX_POWER = 0x0A
_AD_SERVICE_DATA_16 = 0x16
_AD_SERVICE_DATA_32 = 0x20
_AD_SERVICE_DATA_128 = 0x21
_AD_MANUFACTURER = 0xFF

# HCI LE advertising report events (Core Vol 4, Part E, 7.7.65.2 and 7.7.65.13), read before bumble parses them:
# packet type, LE Meta event code, subevent codes, and the bytes of each report before its Data_Length (and after
# its data: the legacy report's RSSI).
_HCI_EVENT_PACKET = 0x04
_HCI_LE_META_EVENT = 0x3E
_LE_ADVERTISING_REPORT = 0x02
_LE_EXTENDED_ADVERTISING_REPORT = 0x0D
_LEGACY_REPORT_HEADER = 8  # event type, address type, address
_LEGACY_REPORT_TRAILER = 1  # RSSI
_EXTENDED_REPORT_HEADER = 23  # event type (2), address type, address, PHYs, SID, TX power, RSSI, interval, direct

# Characteristic property bits (Core Vol 3, Part G, 3.3.1.1) in bleak's names.
_PROPERTY_NAMES: tuple[tuple[int, CharacteristicPropertyName], ...] = (
    (0x01, "broadcast"),
    (0x02, "read"),
    (0x04, "write-without-response"),
    (0x08, "write"),
    (0x10, "notify"),
    (0x20, "indicate"),
    (0x40, "authenticated-signed-writes"),
    (0x80, "extended-properties"),
)


class BumbleTransportLostError(BleakError):
    """The HCI transport under the radio dropped; every connection on it is gone."""


class BumbleConnectTimeoutError(BleakError, TimeoutError):
    """No connection was established in time: the peer stopped advertising, left, or is out of range."""

    def __init__(self, address: str, timeout: float) -> None:
        super().__init__(f"no connection to {address} within {timeout:g} s")
        self.address = address
        self.timeout = timeout


# --- sans-I/O: advertising data ---------------------------------------------------------------------------------


class ParsedAdvertisingData(NamedTuple):
    """The fields of a chain of AD structures that bleak's ``AdvertisementData`` carries."""

    local_name: str | None
    """Complete local name, else the shortened one, else ``None``."""
    manufacturer_data: dict[int, bytes]
    """Company identifier -> bytes after it."""
    service_data: dict[str, bytes]
    """Normalised 128-bit service UUID string -> the raw bytes after the UUID."""
    service_uuids: list[str]
    """Advertised service UUIDs, normalised to 128-bit strings."""
    tx_power: int | None
    """TX Power Level AD (dBm), if present."""


def _uuid_from_le(data: bytes) -> str:
    """A little-endian 2-, 4- or 16-byte UUID as bleak's normalised 128-bit string."""
    if len(data) in (2, 4):
        return f"{int.from_bytes(data, 'little'):08x}{_BASE_UUID_TAIL}"
    return str(uuid.UUID(bytes=bytes(reversed(data))))


def parse_advertising_data(raw: bytes) -> ParsedAdvertisingData:
    """Parse AD structures; a malformed tail (as sent by a faulty or hostile advertiser) is ignored, never raised."""
    name: str | None = None
    short_name: str | None = None
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    service_uuids: list[str] = []
    tx_power: int | None = None
    offset = 0
    while offset < len(raw):
        length = raw[offset]
        if length == 0 or offset + 1 + length > len(raw):
            break  # zero padding or truncated structure: nothing more to read
        ad_type = raw[offset + 1]
        value = raw[offset + 2 : offset + 1 + length]
        offset += 1 + length
        if ad_type == _AD_COMPLETE_NAME:
            name = value.decode("utf-8", errors="replace")
        elif ad_type == _AD_SHORT_NAME:
            short_name = value.decode("utf-8", errors="replace")
        elif ad_type == _AD_TX_POWER and len(value) == 1:
            tx_power = int.from_bytes(value, "little", signed=True)
        elif ad_type == _AD_MANUFACTURER and len(value) >= 2:
            manufacturer[int.from_bytes(value[:2], "little")] = value[2:]
        elif ad_type in (_AD_SERVICE_DATA_16, _AD_SERVICE_DATA_32, _AD_SERVICE_DATA_128):
            size = {_AD_SERVICE_DATA_16: 2, _AD_SERVICE_DATA_32: 4, _AD_SERVICE_DATA_128: 16}[ad_type]
            if len(value) >= size:
                service_data[_uuid_from_le(value[:size])] = value[size:]
        else:
            for types, size in ((_AD_UUID16_LISTS, 2), (_AD_UUID32_LISTS, 4), (_AD_UUID128_LISTS, 16)):
                if ad_type in types:
                    service_uuids.extend(
                        _uuid_from_le(value[i : i + size]) for i in range(0, len(value) - size + 1, size)
                    )
    return ParsedAdvertisingData(name or short_name, manufacturer, service_data, service_uuids, tx_power)


def advertising_report_data(packet: bytes) -> list[bytes] | None:
    """The AD bytes of each report in an HCI LE (Extended) Advertising Report event, as received from the controller.

    None for any other packet, and for a malformed report event (bumble then parses and rejects it as usual).
    """
    if len(packet) < 5 or packet[0] != _HCI_EVENT_PACKET or packet[1] != _HCI_LE_META_EVENT:
        return None
    subevent = packet[3]
    if subevent == _LE_ADVERTISING_REPORT:
        header, trailer = _LEGACY_REPORT_HEADER, _LEGACY_REPORT_TRAILER
    elif subevent == _LE_EXTENDED_ADVERTISING_REPORT:
        header, trailer = _EXTENDED_REPORT_HEADER, 0
    else:
        return None
    end = min(len(packet), 3 + packet[2])
    offset = 5
    reports: list[bytes] = []
    for _ in range(packet[4]):
        length_at = offset + header
        if length_at >= end:
            return None
        data_end = length_at + 1 + packet[length_at]
        if data_end + trailer > end:
            return None
        reports.append(packet[length_at + 1 : data_end])
        offset = data_end + trailer
    return reports


def _bleak_uuid(value: core.UUID) -> str:
    return _uuid_from_le(value.to_bytes(force_128=True))


def _property_names(properties: int) -> list[CharacteristicPropertyName]:
    return [name for bit, name in _PROPERTY_NAMES if properties & bit]


# --- the radio: one bumble host on one HCI transport ------------------------------------------------------------


class BumbleRadio:
    """A bumble ``Device`` (host stack) on one HCI transport; an async context manager that owns both.

    ``lost`` resolves when the transport drops, so a supervisor can restart the radio instead of hanging.
    """

    def __init__(self, transport: str, *, name: str = "panic-gateway", address: str | None = None) -> None:
        self.transport_spec = transport
        self._name = name
        self._address = hci.Address(address) if address else hci.Address.generate_static_address()
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._lost: asyncio.Future[None] | None = None
        self._terminated: asyncio.Future[None] | None = None
        self._report_gate: _ReportGate | None = None
        #: bumble allows one LE connection attempt at a time per controller.
        self.connect_lock = asyncio.Lock()

    @property
    def device(self) -> Device:
        if self._device is None:
            raise BleakError(f"bumble radio on {self.transport_spec} is not started")
        return self._device

    @property
    def lost(self) -> asyncio.Future[None]:
        """Resolves when the HCI transport drops (never when the radio is closed normally)."""
        if self._lost is None:
            raise BleakError(f"bumble radio on {self.transport_spec} is not started")
        return self._lost

    @property
    def is_lost(self) -> bool:
        # The transport's own future is checked too: bumble flushes the host (ending connections) before the
        # callbacks of that future run, and a connection ended that way must already count as a transport loss.
        terminated = self._terminated is not None and self._terminated.done()
        return terminated or (self._lost is not None and self._lost.done() and not self._lost.cancelled())

    async def __aenter__(self) -> BumbleRadio:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        try:
            self._transport = await open_transport(self.transport_spec)
        except (OSError, core.BaseBumbleError, ValueError) as error:
            raise BleakBluetoothNotAvailableError(
                f"cannot open bumble transport {self.transport_spec}: {error}",
                BleakBluetoothNotAvailableReason.NO_BLUETOOTH,
            ) from error
        self._lost = asyncio.get_running_loop().create_future()
        self._terminated = getattr(self._transport.source, "terminated", None)
        if self._terminated is not None:
            self._terminated.add_done_callback(self._on_transport_terminated)
        self._device = Device.with_hci(self._name, self._address, self._transport.source, self._transport.sink)
        self._report_gate = _ReportGate(self._device.host)
        self._transport.source.set_packet_sink(self._report_gate)
        try:
            async with asyncio.timeout(const.POWER_ON_TIMEOUT_S):
                await self._device.power_on()
        except (TimeoutError, core.BaseBumbleError, hci.HCI_Error) as error:
            await self.close()
            raise BleakBluetoothNotAvailableError(
                f"controller on {self.transport_spec} did not power on: {error!r}",
                BleakBluetoothNotAvailableReason.POWERED_OFF,
            ) from error

    def filter_reports(self, prefilter: AdvertPrefilter | None) -> None:
        """Drop advertising reports whose AD bytes `prefilter` rejects before bumble parses them (None: keep all).

        Only for passive scanning, where each report is a whole advert: an active scan merges a scan response into
        the advert before it, so a report cannot be judged alone. One scanner per radio sets it.
        """
        if self._report_gate is None:
            raise BleakError(f"bumble radio on {self.transport_spec} is not started")
        if prefilter is not None and self._report_gate.prefilter is not None:
            raise BleakError(f"bumble radio on {self.transport_spec} already filters its reports")
        self._report_gate.prefilter = prefilter

    def _on_transport_terminated(self, _future: asyncio.Future[None]) -> None:
        if self._lost is not None and not self._lost.done():
            log.warning("bumble transport lost", transport=self.transport_spec)
            self._lost.set_result(None)

    async def close(self) -> None:
        device, transport = self._device, self._transport
        self._device = self._transport = None
        self._report_gate = None
        if device is not None and not self.is_lost:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(const.DISCONNECT_TIMEOUT_S):
                    await device.power_off()
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()
        if self._lost is not None and not self._lost.done():
            self._lost.cancel()  # closed on purpose: nobody should treat this as a loss

    async def command(self, awaitable: Awaitable[_T], what: str) -> _T:
        """Run a host command, bounded, failing at once if the transport is gone."""
        if self.is_lost:
            raise BumbleTransportLostError(f"{what}: transport {self.transport_spec} lost")
        try:
            async with asyncio.timeout(const.POWER_ON_TIMEOUT_S):
                return await awaitable
        except TimeoutError as error:
            raise BleakError(f"{what}: controller did not answer") from error
        except (core.BaseBumbleError, hci.HCI_Error) as error:
            raise BleakError(f"{what}: {error}") from error


class _ReportGate:
    """The host's packet sink in front of it: passes every HCI packet on but advertising reports nobody wants."""

    def __init__(self, host: TransportSink) -> None:
        self.host = host
        self.prefilter: AdvertPrefilter | None = None

    def on_packet(self, packet: bytes) -> None:
        prefilter = self.prefilter
        if prefilter is not None:
            reports = advertising_report_data(packet)
            if reports is not None and not any(prefilter(data) for data in reports):
                return  # a report that passes keeps the whole event; the scanner drops the others after bumble
        self.host.on_packet(packet)

    def on_transport_lost(self) -> None:
        on_transport_lost = getattr(self.host, "on_transport_lost", None)
        if on_transport_lost is not None:
            on_transport_lost()


class _RadioHandle:
    """The radio a backend uses: given (shared, not ours to close) or opened from a transport spec (ours)."""

    def __init__(self, kwargs: dict[str, Any], role: str) -> None:
        radio = kwargs.get(const.RADIO_KWARG)
        spec = kwargs.get(const.TRANSPORT_KWARG)
        if (radio is None) == (spec is None):
            raise BleakError(f"{role} needs exactly one of {const.RADIO_KWARG}= or {const.TRANSPORT_KWARG}=")
        if radio is not None and not isinstance(radio, BumbleRadio):
            raise BleakError(f"{const.RADIO_KWARG} must be a BumbleRadio, not {type(radio).__name__}")
        self._owned = radio is None
        self.radio: BumbleRadio = radio if radio is not None else BumbleRadio(str(spec))
        self._opened = False

    async def acquire(self) -> BumbleRadio:
        if self._owned and not self._opened:
            await self.radio.open()
            self._opened = True
        return self.radio

    async def release(self) -> None:
        if self._owned and self._opened:
            self._opened = False
            await self.radio.close()


# --- scanner ------------------------------------------------------------------------------------------------------


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend: scans with a bumble host; see the module docstring for the kwargs."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"],
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._active = scanning_mode == "active"
        self._handle = _RadioHandle(kwargs, "BumbleScanner")
        self._prefilter: AdvertPrefilter | None = kwargs.get(const.PREFILTER_KWARG)
        self._scanning = False

    async def start(self) -> None:
        radio = await self._handle.acquire()
        self.seen_devices = {}
        radio.device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        try:
            if self._prefilter is not None and not self._active:
                radio.filter_reports(self._prefilter)
            await radio.command(
                radio.device.start_scanning(
                    active=self._active,
                    scan_interval=const.SCAN_INTERVAL_MS,
                    scan_window=const.SCAN_WINDOW_MS,
                    filter_duplicates=False,  # every advert counts: RSSI per receiver feeds location
                ),
                "start scanning",
            )
        except BaseException:
            await self._teardown(radio)
            raise
        self._scanning = True

    async def stop(self) -> None:
        if not self._scanning:
            return
        self._scanning = False
        radio = self._handle.radio
        try:
            if not radio.is_lost:
                await radio.command(radio.device.stop_scanning(), "stop scanning")
        finally:
            await self._teardown(radio)

    async def _teardown(self, radio: BumbleRadio) -> None:
        with contextlib.suppress(BleakError):
            radio.device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        if self._prefilter is not None and not self._active:
            with contextlib.suppress(BleakError):
                radio.filter_reports(None)
        await self._handle.release()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        raw = b"".join(
            bytes([len(data) + 1, int(ad_type)]) + data for ad_type, data in advertisement.data.ad_structures
        )
        if self._prefilter is not None and not self._prefilter(raw):
            return
        parsed = parse_advertising_data(raw)
        if not self.is_allowed_uuid(parsed.service_uuids):
            return
        address = advertisement.address.to_string(with_type_qualifier=False)
        data = AdvertisementData(
            local_name=parsed.local_name,
            manufacturer_data=parsed.manufacturer_data,
            service_data=parsed.service_data,
            service_uuids=parsed.service_uuids,
            tx_power=parsed.tx_power,
            rssi=advertisement.rssi,
            platform_data=(raw, advertisement),
        )
        device = self.create_or_update_device(address, address, parsed.local_name, advertisement.address, data)
        self.call_detection_callbacks(device, data)


# --- client -------------------------------------------------------------------------------------------------------


class BumbleClient(BaseBleakClient):
    """bleak client backend: one LE connection and its GATT client on a bumble host.

    A string address is a random address unless suffixed ``/P`` (public); a ``BLEDevice`` from ``BumbleScanner``
    carries the exact address type in ``details``.
    """

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        details = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        self._peer_address = details if isinstance(details, hci.Address) else hci.Address(self.address)
        self._device_name = address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None
        self.address = self._peer_address.to_string(with_type_qualifier=False)
        self._handle = _RadioHandle(kwargs, "BumbleClient")
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        #: Resolves with the error that ends the link (disconnection, transport loss) or None when we close it.
        self._gone: asyncio.Future[BleakError | None] | None = None
        self._closing = False
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    @property
    def name(self) -> str:
        return self._device_name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else const.DEFAULT_ATT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._gone is not None and not self._gone.done()

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if pair:
            log.warning("pairing is not supported by the bumble backend; connecting without", address=self.address)
        if self.is_connected:
            return
        radio = await self._handle.acquire()
        try:
            connection = await self._connect_le(radio)
            self._connection = connection
            self._gone = asyncio.get_running_loop().create_future()
            connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
            radio.lost.add_done_callback(self._on_radio_lost)
            self._peer = Peer(connection)
            with contextlib.suppress(BleakGATTProtocolError):
                await self._gatt(self._peer.request_mtu(const.PREFERRED_ATT_MTU), "MTU exchange")
            self.services = await self._discover(self._peer)
        except BaseException:
            await self._abandon()
            raise

    async def _connect_le(self, radio: BumbleRadio) -> Connection:
        if radio.is_lost:
            raise BumbleTransportLostError(f"connect to {self.address}: transport {radio.transport_spec} lost")
        async with radio.connect_lock:
            try:
                # Outer bound: bumble waits for the controller's answer to Create Connection Cancel, which
                # some controllers never send.
                async with asyncio.timeout(self._timeout + const.CONNECT_CANCEL_GRACE_S):
                    connect = radio.device.connect(
                        self._peer_address, transport=core.PhysicalTransport.LE, timeout=self._timeout
                    )
                    return await _race(connect, radio.lost, f"connect to {self.address}")
            except (TimeoutError, core.TimeoutError) as error:
                raise BumbleConnectTimeoutError(self.address, self._timeout) from error
            except (core.BaseBumbleError, hci.HCI_Error) as error:
                raise BleakError(f"connect to {self.address} failed: {error}") from error

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service in await self._gatt(peer.discover_services(), "discover services"):
            bleak_service = BleakGATTService(service, service.handle, _bleak_uuid(service.uuid))
            collection.add_service(bleak_service)
            for characteristic in await self._gatt(service.discover_characteristics(), "discover characteristics"):
                bleak_characteristic = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    _bleak_uuid(characteristic.uuid),
                    _property_names(int(characteristic.properties)),
                    lambda: self.mtu_size - const.ATT_WRITE_HEADER_SIZE,
                    bleak_service,
                )
                collection.add_characteristic(bleak_characteristic)
                for descriptor in await self._gatt(characteristic.discover_descriptors(), "discover descriptors"):
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor, descriptor.handle, _bleak_uuid(descriptor.type), bleak_characteristic
                        )
                    )
        return collection

    async def _gatt(self, awaitable: Awaitable[_T], what: str) -> _T:
        """Run one GATT operation, bounded, failing as soon as the link or the transport goes."""
        if self._gone is None or self._gone.done():
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # never awaited: do not leave a "coroutine was never awaited" warning
            cause = self._gone.result() if self._gone is not None and self._gone.done() else None
            if isinstance(cause, BleakError):
                raise type(cause)(f"{what}: {cause}")
            raise BleakError(f"{what}: not connected to {self.address}")
        try:
            async with asyncio.timeout(const.GATT_OPERATION_TIMEOUT_S):
                return await _race(awaitable, self._gone, f"{what} on {self.address}")
        except TimeoutError as error:
            raise BleakError(f"{what} on {self.address}: no answer") from error
        except att.ATT_Error as error:
            raise BleakGATTProtocolError(error.error_code) from error
        except (core.BaseBumbleError, hci.HCI_Error) as error:
            raise BleakError(f"{what} on {self.address}: {error}") from error

    def _on_disconnection(self, reason: int) -> None:
        if self._handle.radio.is_lost:
            self._mark_gone(BumbleTransportLostError(f"HCI transport {self._handle.radio.transport_spec} lost"))
            return
        self._mark_gone(BleakError(f"disconnected by {self.address} or the link (HCI reason 0x{reason:02X})"))

    def _on_radio_lost(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            self._mark_gone(BumbleTransportLostError(f"HCI transport {self._handle.radio.transport_spec} lost"))

    def _mark_gone(self, error: BleakError) -> None:
        if self._gone is None or self._gone.done():
            return
        self._gone.set_result(error)
        if not self._closing and self._disconnected_callback is not None:
            log.info("peripheral link lost", address=self.address, reason=str(error))
            self._disconnected_callback()

    async def disconnect(self) -> None:
        self._closing = True
        try:
            connection, radio = self._connection, self._handle.radio
            if connection is not None and self.is_connected and not radio.is_lost:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(const.DISCONNECT_TIMEOUT_S):
                        await connection.disconnect()
        finally:
            await self._abandon()

    async def _abandon(self) -> None:
        """Forget the connection and release an owned radio, without talking to the peer."""
        self._closing = True
        connection, self._connection, self._peer = self._connection, None, None
        if connection is not None:
            connection.remove_listener(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        with contextlib.suppress(BleakError):
            self._handle.radio.lost.remove_done_callback(self._on_radio_lost)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        self._subscribers.clear()
        await self._handle.release()
        self._closing = False

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("pairing is not supported by the bumble backend")

    async def unpair(self) -> None:
        raise BleakError("pairing is not supported by the bumble backend")

    def _client(self) -> Peer:
        if self._peer is None:
            raise BleakError(f"not connected to {self.address}")
        return self._peer

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._client()
        return bytearray(await self._gatt(peer.gatt_client.read_value(characteristic.handle), "read"))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._client()
        return bytearray(await self._gatt(peer.gatt_client.read_value(descriptor.handle), "read descriptor"))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        peer = self._client()
        write = peer.gatt_client.write_value(characteristic.handle, bytes(data), with_response=response)
        await self._gatt(write, "write")

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        peer = self._client()
        write = peer.gatt_client.write_value(descriptor.handle, bytes(data), with_response=True)
        await self._gatt(write, "write descriptor")

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        self._client()
        proxy: CharacteristicProxy[bytes] = characteristic.obj

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        self._subscribers[characteristic.handle] = on_value
        await self._gatt(proxy.subscribe(on_value, prefer_notify=True), "subscribe")

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._client()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._gatt(proxy.unsubscribe(subscriber), "unsubscribe")


async def _race(awaitable: Awaitable[_T], abort: asyncio.Future[Any], what: str) -> _T:
    """Await `awaitable` unless `abort` resolves first (link or transport gone): then cancel it and raise."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait({task, abort}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.done() and not task.cancelled():
        return task.result()
    cause = abort.result() if abort.done() and not abort.cancelled() else None
    if isinstance(cause, BleakError):
        raise type(cause)(f"{what}: {cause}")
    raise BumbleTransportLostError(f"{what}: HCI transport lost")
