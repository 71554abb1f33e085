"""Virtual air: bumble controllers on one link, placed in sites and floors, hearing each other by path loss.

Each node is a bumble ``Controller`` on a shared ``LocalLink``. Exposed nodes listen for one host at a time on
127.0.0.1 (H4 over TCP, bumble's ``tcp-server`` wire format), so another process (the gateway) drives them as an HCI
radio with the bumble transport ``tcp-client:127.0.0.1:PORT``. (bumble's own tcp-server transport is not used: when
a host reconnects quickly, the old connection's late ``connection_lost`` detaches the new one, and the HCI parser is
shared across connections; a dropped host must also end its links, as a reset dongle does.)
In-process nodes give their controller to a bumble ``Device`` directly (``Device.with_hci(..., node.controller,
node.controller)``), which is how virtual wearables and background advertisers join.

What the air changes from bumble's LocalLink/Controller (which deliver everything to everyone at -50 dBm):
- an advertising PDU reaches a receiver only if it is in range, with the RSSI of a log-distance path-loss model;
- a connection request (CONNECT_IND) is heard only in range too, so no link forms out of range;
- a scan response carries the advertiser's own scan response data, and only for active scanners;
- Create Connection Cancel completes the pending connection with an error, as the spec says (bumble's controller
  leaves it pending forever, which hangs the host);
- a node that goes away drops its links on the peers' side after a supervision timeout, as a real radio does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from bumble import core, hci, ll
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import AdvertisingType, Device
from bumble.link import LocalLink
from bumble.transport.common import PacketParser

__all__ = [
    "AirController",
    "AirLink",
    "AirNode",
    "PathLossModel",
    "Position",
    "VirtualAir",
    "distance_m",
    "expected_rssi",
    "sample_rssi",
]

#: Only loopback: the virtual air is a test and demo fixture, never reachable from the network.
LOOPBACK: Final = "127.0.0.1"
#: RSSI is a signed byte in HCI reports; 127 means "not available", so real values are clamped below it.
RSSI_MIN_DBM: Final = -127
RSSI_MAX_DBM: Final = 20
#: Below 10 cm the far-field model is meaningless (and log10(0) undefined): clamp the distance.
MIN_DISTANCE_M: Final = 0.1
#: Time after which a peer notices that the other end of a link vanished. Real links use 0.1-32 s (a typical
#: phone default is 5 s, the spec's supervision timeout); the simulation keeps it short so tests stay fast.
DEFAULT_SUPERVISION_TIMEOUT_S: Final = 0.5
#: Background advertisers repeat every 100 ms, the rate of a typical beacon; enough to load a scanner.
DEFAULT_BACKGROUND_INTERVAL_MS: Final = 100.0

# Report event-type bits that mirror the advertiser's event properties (connectable, scannable, directed, legacy).
_EVENT_TYPE_FROM_PROPERTIES_MASK: Final = 0b1_0111
_SCANNABLE: Final = hci.HCI_LE_Extended_Advertising_Report_Event.EventType.SCANNABLE_ADVERTISING
_SCAN_RESPONSE: Final = hci.HCI_LE_Extended_Advertising_Report_Event.EventType.SCAN_RESPONSE
_PASSIVE_SCANNING: Final = 0


# --- sans-I/O: positions and path loss --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Position:
    """Where a radio is: site (a building, radio-isolated from others), floor, and x/y in metres."""

    site: str
    floor: int
    x: float
    y: float


@dataclasses.dataclass(frozen=True, slots=True)
class PathLossModel:
    """Log-distance path loss: rssi = tx_power_at_1m - 10 * exponent * log10(d) - floors * floor_loss + noise."""

    #: RSSI measured at 1 m (the "measured power" of iBeacon); -59 dBm is typical of a 0 dBm wearable.
    tx_power_at_1m_dbm: float = -59.0
    #: 2.0 is free space; 2.5-3.5 is an office with people; 2.7 is a common indoor fit.
    exponent: float = 2.7
    #: Standard deviation of log-normal shadowing (Gaussian in dB); 0 makes the air deterministic.
    noise_sigma_db: float = 0.0
    #: Beyond this distance (metres) nothing is heard, whatever the noise.
    range_m: float = 30.0
    #: Attenuation through each floor slab.
    floor_loss_db: float = 15.0
    #: Height of one floor, for the 3-D distance between floors.
    floor_height_m: float = 3.5


def distance_m(model: PathLossModel, a: Position, b: Position) -> float | None:
    """3-D distance between two positions, or None if they are on different sites (never in range)."""
    if a.site != b.site:
        return None
    dz = (a.floor - b.floor) * model.floor_height_m
    return math.sqrt((a.x - b.x) ** 2 + (a.y - b.y) ** 2 + dz**2)


def expected_rssi(model: PathLossModel, transmitter: Position, receiver: Position) -> float | None:
    """Mean RSSI (dBm) at `receiver`, or None if out of range."""
    distance = distance_m(model, transmitter, receiver)
    if distance is None or distance > model.range_m:
        return None
    floors = abs(transmitter.floor - receiver.floor)
    return (
        model.tx_power_at_1m_dbm
        - 10.0 * model.exponent * math.log10(max(distance, MIN_DISTANCE_M))
        - floors * model.floor_loss_db
    )


def sample_rssi(model: PathLossModel, transmitter: Position, receiver: Position, rng: random.Random) -> int | None:
    """One received RSSI (integer dBm, as HCI reports it) with shadowing noise from `rng`, or None if not heard."""
    mean = expected_rssi(model, transmitter, receiver)
    if mean is None:
        return None
    noisy = mean + (rng.gauss(0.0, model.noise_sigma_db) if model.noise_sigma_db > 0 else 0.0)
    return max(RSSI_MIN_DBM, min(RSSI_MAX_DBM, round(noisy)))


# --- the controllers and the link ---------------------------------------------------------------------------------


class Reception(NamedTuple):
    """How one advertising PDU arrives at one receiver."""

    rssi: int
    """RSSI at this receiver (dBm)."""
    scan_response: bytes | None
    """The advertiser's scan response data, or None if it is not scannable."""
    event_properties: int | None
    """The advertiser's extended advertising event properties, if it advertises with an advertising set."""


class AirController(Controller):
    """A bumble controller at a position, which reports what the air lets it hear."""

    def __init__(self, name: str, position: Position, link: AirLink, **kwargs: Any) -> None:
        self.position = position
        self._reception: Reception | None = None
        #: Set while a host has scanning enabled on this radio (a gateway receiver that listens).
        self.scanning = asyncio.Event()
        super().__init__(name, link=link, **kwargs)

    def receive_advertising_pdu(self, packet: ll.AdvertisingPdu, reception: Reception) -> None:
        self._reception = reception
        try:
            self.on_ll_advertising_pdu(packet)
        finally:
            self._reception = None

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        reception = self._reception
        if reception is not None and isinstance(packet, hci.HCI_LE_Advertising_Report_Event):
            legacy = [r for r in (self._legacy_report(r, reception) for r in packet.reports) if r is not None]
            if not legacy:
                return
            packet = hci.HCI_LE_Advertising_Report_Event(legacy)
        elif reception is not None and isinstance(packet, hci.HCI_LE_Extended_Advertising_Report_Event):
            extended = [r for r in (self._extended_report(r, reception) for r in packet.reports) if r is not None]
            if not extended:
                return
            packet = hci.HCI_LE_Extended_Advertising_Report_Event(extended)
        super().send_hci_packet(packet)

    @property
    def _scanning_actively(self) -> bool:
        return bool(self.le_scan_type != _PASSIVE_SCANNING)

    def _legacy_report(self, report: Any, reception: Reception) -> Any:
        if report.event_type == hci.HCI_LE_Advertising_Report_Event.EventType.SCAN_RSP:
            if not self._scanning_actively or reception.scan_response is None:
                return None
            return dataclasses.replace(report, data=reception.scan_response, rssi=reception.rssi)
        return dataclasses.replace(report, rssi=reception.rssi)

    def _extended_report(self, report: Any, reception: Reception) -> Any:
        if report.event_type & _SCAN_RESPONSE:
            if not self._scanning_actively or reception.scan_response is None:
                return None
            return dataclasses.replace(report, data=reception.scan_response, rssi=reception.rssi)
        event_type = report.event_type
        if reception.event_properties is not None:
            event_type = reception.event_properties & _EVENT_TYPE_FROM_PROPERTIES_MASK
        if not self._scanning_actively:
            event_type &= ~_SCANNABLE  # nobody will ask for the scan response: do not make the host wait for it
        return dataclasses.replace(
            report,
            event_type=event_type,
            rssi=reception.rssi,
            tx_power=hci.HCI_LE_Extended_Advertising_Report_Event.TX_POWER_INFORMATION_NOT_AVAILABLE,
        )

    def on_hci_le_set_scan_enable_command(self, command: Any) -> Any:
        result = super().on_hci_le_set_scan_enable_command(command)
        self._scanning_changed()
        return result

    def on_hci_le_set_extended_scan_enable_command(self, command: Any) -> Any:
        result = super().on_hci_le_set_extended_scan_enable_command(command)
        self._scanning_changed()
        return result

    def _scanning_changed(self) -> None:
        if self.le_scan_enable:
            self.scanning.set()
        else:
            self.scanning.clear()

    def on_hci_le_set_extended_scan_parameters_command(self, command: Any) -> Any:
        # bumble's controller forgets the scan type of extended scanning; we need it to tell passive from active.
        if command.scan_types:
            self.le_scan_type = command.scan_types[0]
        return super().on_hci_le_set_extended_scan_parameters_command(command)

    def on_hci_le_create_connection_cancel_command(self, command: Any) -> Any:
        result = super().on_hci_le_create_connection_cancel_command(command)
        pending = self.pending_le_connection
        if pending is not None:
            self.pending_le_connection = None
            failure = hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
            # After the Command Complete that the caller sends for this command, as the spec orders them.
            asyncio.get_running_loop().call_soon(self.send_hci_packet, failure)
        return result

    def on_hci_reset_command(self, command: Any) -> Any:
        # A new host on the same virtual radio (the gateway restarted) starts from a quiet controller.
        self.le_scan_enable = False
        self.scanning.clear()
        self.pending_le_connection = None
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        return super().on_hci_reset_command(command)

    def on_host_gone(self) -> None:
        """The host dropped (process died, cable pulled): a real controller resets and its links end."""
        self.le_scan_enable = False
        self.scanning.clear()
        self.pending_le_connection = None
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        on_air = self in self.link.controllers  # a node removed from the air just goes silent
        for connection in list(self.le_connections.values()):
            if on_air:
                with contextlib.suppress(core.InvalidArgumentError):
                    connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR))
            self.on_le_disconnected(connection, hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR)

    def scan_response_for(self, packet: ll.AdvertisingPdu) -> tuple[bytes | None, int | None]:
        """This controller's scan response and event properties for a PDU it sent."""
        if isinstance(packet, ll.AdvExtInd):
            for advertising_set in self.advertising_sets.values():
                parameters = advertising_set.parameters
                if advertising_set.address == packet.advertiser_address and parameters is not None:
                    properties = int(parameters.advertising_event_properties)
                    scannable = bool(properties & _SCANNABLE)
                    return (bytes(advertising_set.scan_response_data) if scannable else None), properties
            return None, None
        return bytes(self.le_legacy_advertiser.scan_response_data), None


class AirLink(LocalLink):
    """A LocalLink on which advertising and connection requests travel only as far as the path loss allows."""

    def __init__(self, model: PathLossModel, rng: random.Random) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # bumble's LocalLink.__init__ is unannotated
        self.model = model
        self.rng = rng
        #: Called with (sender, PDU) after each advertising PDU is on its way (see `VirtualAir.on_advert`).
        self.advert_watchers: list[Callable[[AirController, ll.AdvertisingPdu], None]] = []

    def send_advertising_pdu(self, sender_controller: Controller, packet: ll.AdvertisingPdu) -> None:
        if not isinstance(sender_controller, AirController):
            super().send_advertising_pdu(sender_controller, packet)
            return
        loop = asyncio.get_running_loop()
        scan_response, properties = sender_controller.scan_response_for(packet)
        for receiver in list(self.controllers):
            if receiver is sender_controller:
                continue
            if not isinstance(receiver, AirController):
                loop.call_soon(receiver.on_ll_advertising_pdu, packet)
                continue
            rssi = sample_rssi(self.model, sender_controller.position, receiver.position, self.rng)
            if rssi is not None:
                loop.call_soon(receiver.receive_advertising_pdu, packet, Reception(rssi, scan_response, properties))
        for watcher in list(self.advert_watchers):
            watcher(sender_controller, packet)


# --- nodes and the air --------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class AirNode:
    """One radio in the air."""

    name: str
    position: Position
    controller: AirController
    #: TCP port hosts connect to (None for in-process nodes).
    port: int | None = None
    server: _HciTcpServer | None = None
    #: A bumble Device the air runs on this node itself (background advertisers).
    device: Device | None = None

    @property
    def transport_spec(self) -> str:
        """What a host in another process opens to drive this radio."""
        if self.port is None:
            raise ValueError(f"node {self.name} is in-process; it has no transport")
        return f"tcp-client:{LOOPBACK}:{self.port}"


class VirtualAir:
    """An async context manager: the link, its nodes, their TCP servers; everything is closed on exit."""

    def __init__(
        self,
        model: PathLossModel | None = None,
        *,
        seed: int | None = None,
        supervision_timeout_s: float = DEFAULT_SUPERVISION_TIMEOUT_S,
    ) -> None:
        self.model = model or PathLossModel()
        self.link = AirLink(self.model, random.Random(seed))  # noqa: S311 - radio noise, not cryptography
        self.supervision_timeout_s = supervision_timeout_s
        self.nodes: dict[str, AirNode] = {}
        self._next_address = 1
        self._timers: set[asyncio.TimerHandle] = set()

    async def __aenter__(self) -> VirtualAir:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for name in list(self.nodes):
            await self.remove_node(name)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def on_advert(self, watcher: Callable[[AirNode, bytes], None]) -> Callable[[], None]:
        """Call `watcher(node, advertising data)` after each advert a node sends has reached the receivers in
        range (scripted faults: "walk away right after this advert"); returns the function that stops watching."""
        by_controller: dict[AirController, AirNode] = {}

        def watch(sender: AirController, packet: ll.AdvertisingPdu) -> None:
            data = getattr(packet, "data", None)
            if data is None:
                return
            node = by_controller.get(sender)
            if node is None:
                node = next((n for n in self.nodes.values() if n.controller is sender), None)
                if node is None:
                    return
                by_controller[sender] = node
            watcher(node, bytes(data))

        self.link.advert_watchers.append(watch)
        return lambda: self.link.advert_watchers.remove(watch)

    def ports(self) -> dict[str, int]:
        """Exposed nodes and their TCP ports."""
        return {name: node.port for name, node in self.nodes.items() if node.port is not None}

    async def add_node(self, name: str, position: Position, *, expose: bool = True, port: int = 0) -> AirNode:
        """Add a controller; exposed ones get a tcp-server transport on `port` (0: a free loopback port).

        Passing the port of a removed node brings "the same dongle" back, as a host that reopens it expects.
        """
        if name in self.nodes:
            raise ValueError(f"node {name} already exists")
        public_address = hci.Address(
            self._next_address.to_bytes(6, "little"), hci.Address.PUBLIC_DEVICE_ADDRESS
        )  # distinct per node: bumble's link finds controllers by address
        self._next_address += 1
        controller = AirController(name, position, self.link, public_address=public_address)
        server: _HciTcpServer | None = None
        bound: int | None = None
        if expose:
            server = _HciTcpServer(controller)
            bound = await server.start(port)
        node = AirNode(name, position, controller, bound, server)
        self.nodes[name] = node
        return node

    async def add_background_advertiser(
        self,
        name: str,
        position: Position,
        *,
        interval_ms: float = DEFAULT_BACKGROUND_INTERVAL_MS,
        manufacturer_data: bytes = b"\xff\xff" + b"background",
    ) -> AirNode:
        """Add a non-connectable beacon (not a wearable) that loads the air with adverts."""
        node = await self.add_node(name, position, expose=False)
        address = hci.Address.generate_static_address()
        device = Device.with_hci(name, address, node.controller, node.controller)
        node.device = device
        await device.power_on()
        await device.start_advertising(
            advertising_type=AdvertisingType.UNDIRECTED,
            advertising_data=bytes(AdvertisingData([(AdvertisingData.MANUFACTURER_SPECIFIC_DATA, manufacturer_data)])),
            advertising_interval_min=interval_ms,
            advertising_interval_max=interval_ms,
        )
        return node

    async def remove_node(self, name: str) -> None:
        """The radio goes away: off the link, its TCP server and client closed, its peers' links time out."""
        node = self.nodes.pop(name)
        controller = node.controller
        if node.device is not None:
            with contextlib.suppress(Exception):
                await node.device.stop_advertising()
        controller.le_legacy_advertiser.stop()
        for advertising_set in controller.advertising_sets.values():
            advertising_set.stop()
        self.link.remove_controller(controller)
        self._time_out_links_to(controller)
        if node.server is not None:
            await node.server.close()  # the host over TCP sees its transport drop, as with an unplugged dongle

    def _time_out_links_to(self, gone: Controller) -> None:
        addresses = {gone.public_address, gone.random_address}
        addresses.update(connection.self_address for connection in gone.le_connections.values())
        loop = asyncio.get_running_loop()
        for peer in self.link.controllers:
            for peer_address, connection in list(peer.le_connections.items()):
                if peer_address in addresses:
                    timer = loop.call_later(
                        self.supervision_timeout_s, self._supervision_timeout, peer, peer_address, connection
                    )
                    self._timers.add(timer)

    @staticmethod
    def _supervision_timeout(peer: Controller, peer_address: hci.Address, connection: Any) -> None:
        current = peer.le_connections.get(peer_address)
        if current is not None and current is connection:
            peer.on_le_disconnected(current, hci.HCI_CONNECTION_TIMEOUT_ERROR)


class _HostSink:
    """Where the controller's HCI packets go: the connected host's socket."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def on_packet(self, packet: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(packet)


class _HostConnection(asyncio.Protocol):
    """One host on a node's HCI port. A new host takes over from the previous one (which is closed), as when a
    restarted gateway reopens its dongle; the old connection's late `connection_lost` then changes nothing."""

    def __init__(self, server: _HciTcpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser: PacketParser | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        previous = self._server.active
        if previous is not None:
            self._server.active = None
            previous.close()
            self._server.controller.on_host_gone()
        self._transport = transport
        self._server.active = self
        self._parser = PacketParser(self._server.controller)  # a fresh parser: no bytes left from an older host
        self._server.controller.host = _HostSink(transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is not None:
            self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._server.active is self:
            self._server.active = None
            self._server.controller.host = None
            self._server.controller.on_host_gone()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _HciTcpServer:
    """H4 over TCP on a free loopback port, for one controller."""

    def __init__(self, controller: AirController) -> None:
        self.controller = controller
        self.active: _HostConnection | None = None
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HostConnection(self), LOOPBACK, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.active is not None:
            self.active.close()
        if self._server is not None:
            await self._server.wait_closed()
