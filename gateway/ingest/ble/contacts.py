"""GATT contacts with wearables: follow up each new BLE press, and deliver operator acks when next heard.

The advert ingest reports every authenticated advert (`heard`). A press that raised a new incident gets a GATT
follow-up in the background, through the radio of the receiver that heard the wearable loudest: its signed frame
is authenticated and committed like an HTTPS one (transport ``ble-gatt``), its GPS fix lands on the incident, and
the wearable gets a RECEIVED ack. No press waits for it: if it fails, the incident stands from the advert alone
and records ``followup-failed``. An operator's acknowledgement is queued for the device and written at its next
contact, started as soon as any receiver hears the device again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, NamedTuple, Self

import structlog
from bleak import BleakClient
from bleak.exc import BleakError
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.authenticate import AuthRules
from gateway.errors import StoreUnavailable
from gateway.ingest.ble.adverts import HeardAdvert
from gateway.ingest.ble.bumble_backend import BumbleClient, BumbleRadio
from gateway.ingest.ble.followup import (
    CONNECT_TIMEOUT_S,
    FOLLOW_UP_DEADLINE_S,
    FollowUpResult,
    FollowUpStatus,
    GattFollowUp,
)
from gateway.ingest.frames import accept_signed_frame
from gateway.ingest.pipeline import Overloaded, SignalPipeline
from gateway.observability import Metrics
from gateway.rejection import Rejection
from gateway.store.incidents import IncidentStore, OutboxItem
from gateway.store.registry import DeviceDirectory

log = structlog.get_logger(__name__)

#: Transport of frames read over GATT (observations, signals, metrics).
GATT_TRANSPORT: Final = "ble-gatt"
#: Connections at once: each holds a receiver's radio (one connection attempt at a time per radio) and a link
#: slot in its controller; four covers a few simultaneous presses without starving the scanners.
MAX_CONCURRENT_CONTACTS: Final = 4
#: Contacts waiting for a slot, beyond which new ones are dropped (a press still stands from its advert).
MAX_WAITING_CONTACTS: Final = 256
#: The loudest receiver of an address is re-chosen from adverts heard within this long: the wearer may move,
#: and a burst is heard by every receiver in range within a few 20 ms adverts.
ROUTE_FRESH_S: Final = 2.0
#: Addresses remembered for routing: one per wearable per advert window; beyond it the oldest is forgotten.
MAX_ROUTES: Final = 4096

#: The open radio of a receiver by name (None when it is down).
RadioOf = Callable[[str], BumbleRadio | None]
#: Hands committed outbox items to the publisher.
Publish = Callable[[Sequence[OutboxItem]], None]


class _Route(NamedTuple):
    receiver: str
    rssi: int | None
    at: float


class GattContacts:
    """Owns the follow-up tasks; an async context manager whose exit cancels and awaits them."""

    def __init__(
        self,
        *,
        ack_key: ec.EllipticCurvePrivateKey,
        radio_of: RadioOf,
        receivers: Callable[[], Iterable[str]],
        directory: DeviceDirectory,
        pipeline: SignalPipeline,
        store: IncidentStore,
        publish: Publish,
        rules: AuthRules,
        metrics: Metrics,
        deadline_s: float = FOLLOW_UP_DEADLINE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self._radio_of = radio_of
        self._receivers = receivers
        self._directory = directory
        self._pipeline = pipeline
        self._store = store
        self._publish = publish
        self._rules = rules
        self._metrics = metrics
        self._deadline_s = deadline_s
        self._gatt = GattFollowUp(
            self._client, self._submit, ack_key, deadline_s=deadline_s, connect_timeout_s=connect_timeout_s
        )
        self._routes: OrderedDict[str, _Route] = OrderedDict()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CONTACTS)
        #: Running contact per key: an incident id (follow-up) or a device id (operator acks).
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- inputs ---------------------------------------------------------------------------------------------------

    def heard(self, advert: HeardAdvert) -> None:
        """The advert ingest's callback: route, follow up a new press, deliver pending operator acks."""
        self._note_route(advert)
        if not self._open:
            return
        if advert.new_incident is not None:
            self._start(advert.new_incident, self._follow_up(advert, advert.new_incident))
        elif advert.device_id not in self._tasks and self._gatt.pending_operator_acks(advert.device_id):
            self._start(advert.device_id, self._deliver(advert))

    async def acknowledge_operator(self, device_id: str, incident_id: str, counter: int) -> None:
        """Queue an OPERATOR ack: it is written when any receiver next hears the device."""
        await self._gatt.acknowledge_operator(device_id, incident_id, counter)

    # --- contacts -------------------------------------------------------------------------------------------------

    def _start(self, key: str, contact: Coroutine[Any, Any, None]) -> None:
        if key in self._tasks or len(self._tasks) >= MAX_CONCURRENT_CONTACTS + MAX_WAITING_CONTACTS:
            contact.close()  # never awaited: one contact per key, and a bounded backlog
            return
        task = asyncio.create_task(contact, name=f"gatt-contact-{key}")
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

    async def _follow_up(self, advert: HeardAdvert, incident_id: str) -> None:
        try:
            async with asyncio.timeout(self._deadline_s):
                await self._slots.acquire()
        except TimeoutError:
            await self._record_failure(incident_id, "no free connection slot within the deadline")
            return
        try:
            result = await self._gatt.follow_up(advert.address, advert.device_id)
        finally:
            self._slots.release()
        if result.status not in (FollowUpStatus.ACKED, FollowUpStatus.READ) or result.incident_id != incident_id:
            await self._record_failure(incident_id, _failure(result))

    async def _deliver(self, advert: HeardAdvert) -> None:
        async with self._slots:
            await self._gatt.deliver_operator_acks(advert.address, advert.device_id)

    async def _record_failure(self, incident_id: str, reason: str) -> None:
        log.warning("gatt follow-up failed; the incident stands from its advert", alert_id=incident_id, reason=reason)
        try:
            self._publish(await self._store.record_follow_up(incident_id, datetime.now(UTC), failure=reason))
        except StoreUnavailable as exc:
            log.error("follow-up failure not recorded", alert_id=incident_id, error=str(exc))

    async def _submit(self, data: bytes) -> str | None:
        """GattFollowUp's submit: the same authentication and commit as HTTPS; a new GPS fix lands on the incident."""
        now = datetime.now(UTC)
        try:
            accepted = await accept_signed_frame(
                data,
                transport=GATT_TRANSPORT,
                directory=self._directory,
                pipeline=self._pipeline,
                rules=self._rules,
                metrics=self._metrics,
                now=now,
            )
        except (Overloaded, StoreUnavailable) as exc:
            log.info("gatt frame not stored", error=str(exc))
            return None
        if isinstance(accepted, Rejection):
            return None
        incident_id = accepted.outcome.incident_id
        gps = accepted.signed.frame.gps
        if incident_id is not None and gps is not None:
            try:
                self._publish(await self._store.record_follow_up(incident_id, now, gps=gps))
            except StoreUnavailable as exc:  # the press is stored; only its location waits
                log.error("gps of gatt frame not stored", alert_id=incident_id, error=str(exc))
        return incident_id

    # --- radio routing --------------------------------------------------------------------------------------------

    def _note_route(self, advert: HeardAdvert) -> None:
        self._gatt.note_address(advert.device_id, advert.address)
        now = time.monotonic()
        route = self._routes.get(advert.address)
        if (
            route is None
            or route.receiver == advert.receiver
            or now - route.at > ROUTE_FRESH_S
            or (advert.rssi is not None and (route.rssi is None or advert.rssi > route.rssi))
        ):
            self._routes[advert.address] = _Route(advert.receiver, advert.rssi, now)
            self._routes.move_to_end(advert.address)
            if len(self._routes) > MAX_ROUTES:
                self._routes.popitem(last=False)

    def _client(self, address: str, timeout: float) -> BleakClient:
        """A client on the loudest receiver that is up (any other that is up if it is down)."""
        route = self._routes.get(address)
        names = [route.receiver] if route is not None else []
        names += [n for n in self._receivers() if n not in names]
        for name in names:
            radio = self._radio_of(name)
            if radio is not None:
                return BleakClient(address, backend=BumbleClient, bumble_radio=radio, timeout=timeout)
        raise BleakError(f"no BLE receiver is up to connect to {address}")


def _failure(result: FollowUpResult) -> str:
    detail = f": {result.detail}" if result.detail else ""
    return f"{result.status.value} after {result.attempts} attempt(s){detail}"
