"""A wearable on BLE: a bumble peripheral that advertises per docs/PROTOCOL.md §14 and serves the §15 GATT service.

The radio is any bumble controller: an in-process one (a virtual-air node's ``controller``) or an HCI transport
spec (``usb:0`` for a real dongle, ``tcp-client:127.0.0.1:PORT`` for an exposed air node, ``serial:/dev/ttyACM0``)::

    node = await air.add_node("wearable-1", Position("hq", 0, 1.0, 2.0), expose=False)
    async with BleWearable(wearable, fleet_public, ack_public, controller=node.controller) as ble:
        await ble.press()
        await ble.wait_until(lambda w: w.display == DISPLAY_RECEIVED)

    async with BleWearable(wearable, fleet_public, ack_public, transport="usb:0") as ble: ...

Adverts: at rest the latest heartbeat at a slow interval; a press switches to a fast burst for a while, then back
to the slow interval (still carrying the press until a gateway acknowledges it). Each advert is ``encode_advert`` of
the current counter/event/battery for the current window, from a non-resolvable private address that changes with
the window (never the controller's public address). Time comes from the wearable's clock (injectable); `refresh`
applies the clock now, and a background task calls it every `TICK_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from typing import Final

import structlog
from bumble import att, gatt, hci
from bumble.controller import Controller
from bumble.device import AdvertisingType, Connection, Device
from bumble.transport import open_transport
from bumble.transport.common import Transport
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_sim.wearable import VirtualWearable
from gateway.protocol import AlertFrame, EventType
from gateway.protocol.ack import (
    GATT_ACK_UUID,
    GATT_FRAME_UUID,
    GATT_SERVICE_UUID,
    AckKind,
    GatewayAck,
    verify_ack,
)
from gateway.protocol.advert import device_advert_keys, encode_advert, window_of
from gateway.rejection import Rejection

__all__ = [
    "BURST_DURATION_S",
    "BURST_INTERVAL_MS",
    "DISPLAY_OPERATOR",
    "DISPLAY_RECEIVED",
    "HEARTBEAT_INTERVAL_MS",
    "HEARTBEAT_PERIOD_S",
    "AckOutcome",
    "BleWearable",
]

# Constants live here: they describe this simulated firmware's radio behaviour alone.

#: Advert interval at rest: a heartbeat every 2 s costs a coin cell little and still tells a gateway within a few
#: seconds that the wearer is around (the sim's value; real firmware would use 5-10 s).
HEARTBEAT_INTERVAL_MS: Final = 2000.0
#: Advert interval of a panic burst: 20 ms is the spec's minimum for connectable adverts; every receiver in range
#: hears the press within a few adverts even while scanning other channels.
BURST_INTERVAL_MS: Final = 20.0
#: How long a press is advertised at the burst rate before falling back to the slow rate (it is still advertised,
#: slowly, until acknowledged): long enough for several gateways to hear it and connect, short for the battery.
BURST_DURATION_S: Final = 30.0
#: A new heartbeat (fresh counter) this often, when no press is waiting for its acknowledgement.
HEARTBEAT_PERIOD_S: Final = 60.0
#: How often the background task applies the clock (window change, end of burst, heartbeat due): a window change
#: is seen within 1 s, well inside the "few seconds" of §14.5.
TICK_S: Final = 1.0

#: What the wearer sees once the gateway confirmed the press, and once an operator took it.
DISPLAY_RECEIVED: Final = "help is coming"
DISPLAY_OPERATOR: Final = "operator has it"

#: ATT errors a refused acknowledgement gets: a bad signature or layout (Write Request Rejected), or a valid ack
#: that answers another press than the latest one (Value Not Allowed).
ACK_REFUSED: Final = att.ErrorCode.WRITE_REQUEST_REJECTED
ACK_STALE: Final = att.ErrorCode.VALUE_NOT_ALLOWED

log = structlog.get_logger(__name__)


class AckOutcome(enum.Enum):
    """What the wearable did with a written acknowledgement."""

    ACCEPTED = "accepted"
    #: Not signed by the acknowledgement key, or malformed.
    REFUSED = "refused"
    #: Genuine, but for another press than the latest one.
    STALE = "stale"


class BleWearable:
    """A `VirtualWearable` as a BLE peripheral; an async context manager that owns its bumble device and task."""

    def __init__(
        self,
        wearable: VirtualWearable,
        fleet_public_key: ec.EllipticCurvePublicKey,
        ack_public_key: ec.EllipticCurvePublicKey,
        *,
        controller: Controller | None = None,
        transport: str | None = None,
        heartbeat_interval_ms: float = HEARTBEAT_INTERVAL_MS,
        burst_interval_ms: float = BURST_INTERVAL_MS,
        burst_duration_s: float = BURST_DURATION_S,
        heartbeat_period_s: float = HEARTBEAT_PERIOD_S,
    ) -> None:
        if (controller is None) == (transport is None):
            raise ValueError("give exactly one of controller= or transport=")
        self.wearable = wearable
        self._ack_public_key = ack_public_key
        self._keys = device_advert_keys(
            wearable._key,  # the firmware's own key: ECDH with the fleet key (§14.1)
            fleet_public_key,
            wearable.device_id,
        )
        self._controller = controller
        self._transport_spec = transport
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._burst_interval_ms = burst_interval_ms
        self._burst_duration_ms = int(burst_duration_s * 1000)
        self._heartbeat_period_ms = int(heartbeat_period_s * 1000)
        self._changed = asyncio.Condition()
        self._advertising_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: Refreshes started from bumble's (synchronous) disconnection callback, kept referenced until done.
        self._pending_refreshes: set[asyncio.Task[None]] = set()
        #: The signal the adverts carry: the latest heartbeat, or the latest press while it waits for its ack.
        self._current: AlertFrame | None = None
        self._last_heartbeat_ms = 0
        self._burst_until_ms = 0
        #: (window, address, interval, advert) now on the air; None when not advertising.
        self._on_air: tuple[int, hci.Address, float, bytes] | None = None
        self._window: int | None = None
        self._address: hci.Address | None = None
        #: The latest press and its signed frame (what GATT_FRAME_UUID reads).
        self.press_frame: AlertFrame | None = None
        self.signed_press: bytes = b""
        #: What the wearer sees: "" until a gateway acknowledges the latest press.
        self.display = ""
        #: Acknowledgements accepted for the latest press, and how many writes were refused (any reason).
        self.acks: list[GatewayAck] = []
        self.refused_acks = 0
        #: Advertising addresses used so far, in order (one per window).
        self.addresses: list[hci.Address] = []

    # --- lifecycle ------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> BleWearable:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Power on, take a first heartbeat, advertise it, and run the clock task."""
        self._window = window_of(self.wearable.clock() / 1000)
        self._address = hci.Address.generate_private_address()  # non-resolvable: top bits 00
        if self._controller is not None:
            device = Device.with_hci(self.wearable.device_id, self._address, self._controller, self._controller)
        else:
            self._transport = await open_transport(str(self._transport_spec))
            device = Device.with_hci(
                self.wearable.device_id, self._address, self._transport.source, self._transport.sink
            )
        device.add_service(self._gatt_service())
        device.on(Device.EVENT_CONNECTION, self._on_connection)
        self._device = device
        await device.power_on()
        self._take_heartbeat()
        await self.refresh()
        self._task = asyncio.create_task(self._tick(), name=f"ble-wearable-{self.wearable.device_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in list(self._pending_refreshes):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        device, self._device = self._device, None
        if device is not None:
            with contextlib.suppress(Exception):
                await device.stop_advertising()
            with contextlib.suppress(Exception):
                await device.power_off()
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()
        self._on_air = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.refresh()
            except (hci.HCI_Error, OSError) as error:  # e.g. the radio went away: keep the device alive
                log.warning("ble wearable refresh failed", device_id=self.wearable.device_id, error=str(error))

    # --- what the wearer does -------------------------------------------------------------------------------------

    async def press(self, event: EventType = EventType.PANIC) -> AlertFrame:
        """The wearer pressed: sign the frame (GATT), advertise its counter in a burst. Returns the frame."""
        frame = self.wearable.next_frame(event)
        self.signed_press = self.wearable.sign(frame)
        self.press_frame = self._current = frame
        self.display = ""
        self.acks = []
        self._burst_until_ms = self.wearable.clock() + self._burst_duration_ms
        await self.refresh()
        await self._notify()
        return frame

    async def heartbeat(self) -> AlertFrame:
        """Take a heartbeat now (a press waiting for its ack keeps being advertised instead)."""
        frame = self._take_heartbeat()
        await self.refresh()
        return frame

    def _take_heartbeat(self) -> AlertFrame:
        frame = self.wearable.next_frame(EventType.HEARTBEAT)
        self._last_heartbeat_ms = self.wearable.clock()
        if not self._press_pending:
            self._current = frame
        return frame

    @property
    def _press_pending(self) -> bool:
        return self.press_frame is not None and not self.acks

    # --- observable state -----------------------------------------------------------------------------------------

    @property
    def address(self) -> hci.Address | None:
        """The advertising address of the current window."""
        return self._address

    @property
    def advert(self) -> bytes | None:
        """The advertising data now on the air."""
        return self._on_air[3] if self._on_air is not None else None

    @property
    def advert_interval_ms(self) -> float | None:
        return self._on_air[2] if self._on_air is not None else None

    @property
    def bursting(self) -> bool:
        return self.wearable.clock() < self._burst_until_ms

    async def wait_until(self, predicate: Callable[[BleWearable], bool]) -> None:
        """Wait until `predicate(self)` holds (re-checked at each state change: ack, refusal, press, re-advert)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- adverts --------------------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Apply the clock: a due heartbeat, the end of a burst, a new window (new address); re-advertise if needed.

        While a gateway is connected nothing changes on the air: the link runs on the current address, so the
        new window's address and advert wait for the disconnection.
        """
        device = self._device
        if device is None:
            return
        now_ms = self.wearable.clock()
        if not self._press_pending and now_ms - self._last_heartbeat_ms >= self._heartbeat_period_ms:
            self._take_heartbeat()
        async with self._advertising_lock:
            if device.connections:
                return
            window = window_of(now_ms / 1000)
            if window != self._window or self._address is None:
                self._window = window
                self._address = hci.Address.generate_private_address()
            current = self._current
            if current is None:
                return
            interval = self._burst_interval_ms if now_ms < self._burst_until_ms else self._heartbeat_interval_ms
            advert = encode_advert(self._keys, current.counter, current.event, current.battery, window)
            wanted = (window, self._address, interval, advert)
            if self._on_air == wanted:
                return
            await device.stop_advertising()
            if self._on_air is None or self._on_air[1] != self._address:
                await device.send_sync_command(hci.HCI_LE_Set_Random_Address_Command(random_address=self._address))
                device.random_address = self._address
                self.addresses.append(self._address)
            await device.start_advertising(
                advertising_type=AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE,
                own_address_type=hci.OwnAddressType.RANDOM,
                advertising_data=advert,
                scan_response_data=b"",  # no name, no TX power: nothing that identifies the wearer (§14.5)
                advertising_interval_min=interval,
                advertising_interval_max=interval,
                auto_restart=True,
            )
            self._on_air = wanted
        await self._notify()

    def _on_connection(self, connection: Connection) -> None:
        connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: self._after_disconnection())

    def _after_disconnection(self) -> None:
        if self._device is not None:
            # What changed during the link (window, end of burst) goes on the air now.
            self._on_air = None
            task = asyncio.get_running_loop().create_task(self._refresh_quietly())
            self._pending_refreshes.add(task)
            task.add_done_callback(self._pending_refreshes.discard)

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(hci.HCI_Error, OSError):
            await self.refresh()

    # --- GATT -----------------------------------------------------------------------------------------------------

    def _gatt_service(self) -> gatt.Service:
        frame: gatt.Characteristic[bytes] = gatt.Characteristic(
            GATT_FRAME_UUID,
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.Permissions.READABLE,
            gatt.CharacteristicValue(read=self._read_frame),
        )
        ack: gatt.Characteristic[bytes] = gatt.Characteristic(
            GATT_ACK_UUID,
            gatt.Characteristic.Properties.WRITE,
            gatt.Characteristic.Permissions.WRITEABLE,
            gatt.CharacteristicValue(write=self._write_ack),
        )
        return gatt.Service(GATT_SERVICE_UUID, [frame, ack])

    def _read_frame(self, _connection: Connection) -> bytes:
        return self.signed_press

    async def _write_ack(self, _connection: Connection, value: bytes) -> None:
        outcome = self.accept_ack(bytes(value))
        await self._notify()
        if outcome is AckOutcome.REFUSED:
            raise att.ATT_Error(ACK_REFUSED, message="acknowledgement refused")
        if outcome is AckOutcome.STALE:
            raise att.ATT_Error(ACK_STALE, message="acknowledgement for another press")

    def accept_ack(self, data: bytes) -> AckOutcome:
        """Verify an acknowledgement and update what the wearer sees (the GATT write calls this)."""
        ack = verify_ack(data, self._ack_public_key)
        if isinstance(ack, Rejection):
            self.refused_acks += 1
            log.warning("acknowledgement refused", device_id=self.wearable.device_id, reason=ack.reason.value)
            return AckOutcome.REFUSED
        if self.press_frame is None or ack.counter != self.press_frame.counter:
            self.refused_acks += 1
            return AckOutcome.STALE
        self.acks.append(ack)
        if ack.kind is AckKind.OPERATOR:
            self.display = DISPLAY_OPERATOR
        elif self.display != DISPLAY_OPERATOR:  # an operator's word is not taken back by a late gateway ack
            self.display = DISPLAY_RECEIVED
        self._burst_until_ms = 0  # acknowledged: no need to keep shouting
        return AckOutcome.ACCEPTED
