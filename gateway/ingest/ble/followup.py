"""GATT follow-up of a BLE advert: read the wearable's signed frame, submit it, write back a signed acknowledgement.

docs/PROTOCOL.md §15. A thin adapter: the frame goes to a ``submit`` callback (the gateway's authentication
pipeline, the same as for HTTPS), the acknowledgement is `gateway.protocol.ack`. The radio comes in as a bleak
client factory, normally ``BleakClient(address, backend=BumbleClient, bumble_radio=radio, timeout=timeout)`` on
the receiver that heard the advert::

    follow_up = GattFollowUp(client_factory, submit, ack_key)
    result = await follow_up.follow_up(address, device_id)      # FollowUpResult, never raises BleakError
    ...
    await follow_up.acknowledge_operator(device_id, incident_id, counter, address=latest_address)

Failures are values (`FollowUpResult.status`), never exceptions: the wearable walked away, refused an ack, or the
pipeline rejected its frame are all normal outcomes of a radio link.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import structlog
from bleak import BleakClient
from bleak.exc import BleakError
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.protocol.ack import GATT_ACK_UUID, GATT_FRAME_UUID, AckKind, GatewayAck, sign_ack
from gateway.protocol.signature import parse_signed_frame
from gateway.rejection import Rejection

__all__ = [
    "CONNECT_TIMEOUT_S",
    "FOLLOW_UP_DEADLINE_S",
    "MAX_ATTEMPTS",
    "ClientFactory",
    "FollowUpResult",
    "FollowUpStatus",
    "GattFollowUp",
    "PendingAck",
    "Submit",
]

# The constants live here rather than in const.py: they belong to the follow-up alone, and §15 quotes them.

#: One connection attempt. A wearable in a panic burst advertises every 20-50 ms, so a connection forms within a
#: few adverts; 3 s also covers one slow (2 s) heartbeat interval. Past that it is out of range or busy.
CONNECT_TIMEOUT_S: Final = 3.0
#: Whole follow-up, all attempts included. The wearer waits for "help is coming"; after 20 s the firmware falls
#: back to its other bearers (§11), and the next advert the gateway hears starts a new follow-up anyway.
FOLLOW_UP_DEADLINE_S: Final = 20.0
#: Connection attempts per follow-up: a wearable that refused or missed five connections in a row is leaving.
MAX_ATTEMPTS: Final = 5
#: Backoff between attempts: first delay, growth, cap (full jitter below it). Short, since a panic is urgent and
#: one receiver's radio is only busy with one connection attempt at a time.
#: Devices whose latest advertising address is remembered for retries (the oldest forgotten first).
ADDRESSES_REMEMBERED: Final = 100_000
BACKOFF_INITIAL_S: Final = 0.2
BACKOFF_FACTOR: Final = 2.0
BACKOFF_MAX_S: Final = 2.0

log = structlog.get_logger(__name__)

#: Makes an unconnected bleak client for (address, connect timeout in s) on the receiver that heard the advert.
ClientFactory = Callable[[str, float], BleakClient]
#: The gateway's pipeline: authenticate and record a signed frame; the incident id (UUID text), or None if rejected.
Submit = Callable[[bytes], Awaitable[str | None]]
#: Milliseconds since the Unix epoch; injected so tests control the acknowledgement's timestamp.
ClockMs = Callable[[], int]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class FollowUpStatus(enum.Enum):
    """How a follow-up ended."""

    #: Frame read and accepted, RECEIVED acknowledgement written and accepted by the wearable.
    ACKED = "acked"
    #: Frame read and accepted, but the acknowledgement could not be written (link lost, refused).
    READ = "read"
    #: Frame read but unusable: not a signed frame, another device's, or the pipeline rejected it.
    REJECTED = "rejected"
    #: No link, or it broke before the frame was read, within the attempts and the deadline.
    UNREACHABLE = "unreachable"
    #: Operator acknowledgement only: written and accepted.
    OPERATOR_ACKED = "operator-acked"


@dataclass(frozen=True, slots=True)
class FollowUpResult:
    """The outcome of one follow-up or operator acknowledgement.

    status: how it ended.
    address: the wearable's advertising address it went to.
    device_id: the device it was for.
    counter: the counter of the frame read (or acknowledged), if any.
    incident_id: the pipeline's incident for it, if any.
    attempts: connection attempts made.
    detail: why it ended so, for logs.
    operator_acks: pending operator acknowledgements delivered on this contact.
    """

    status: FollowUpStatus
    address: str
    device_id: str
    counter: int | None = None
    incident_id: str | None = None
    attempts: int = 0
    detail: str = ""
    operator_acks: int = 0


class PendingAck(NamedTuple):
    """An operator acknowledgement waiting for the next contact with its wearable."""

    #: The incident the operator took.
    incident_id: str
    #: The press (counter) it answers.
    counter: int


@dataclass(slots=True)
class _Contact:
    """What one connection achieved (mutable while the link lasts)."""

    counter: int | None = None
    incident_id: str | None = None
    status: FollowUpStatus = FollowUpStatus.UNREACHABLE
    detail: str = ""
    operator_acks: int = 0
    done: bool = field(default=False)


class GattFollowUp:
    """Connects to wearables whose adverts the gateway heard; holds operator acks until the next contact."""

    def __init__(
        self,
        client_factory: ClientFactory,
        submit: Submit,
        ack_key: ec.EllipticCurvePrivateKey,
        *,
        clock_ms: ClockMs = _wall_clock_ms,
        deadline_s: float = FOLLOW_UP_DEADLINE_S,
        max_attempts: int = MAX_ATTEMPTS,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        rng: random.Random | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._submit = submit
        self._ack_key = ack_key
        self._clock_ms = clock_ms
        self._deadline_s = deadline_s
        self._max_attempts = max_attempts
        self._connect_timeout_s = connect_timeout_s
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._pending: dict[str, list[PendingAck]] = {}
        #: Each device's latest advertising address (it rotates with the advert window): a retry goes there.
        self._addresses: OrderedDict[str, str] = OrderedDict()

    def note_address(self, device_id: str, address: str) -> None:
        """The device advertises from `address` now (its address rotates every advert window)."""
        self._addresses[device_id] = address
        self._addresses.move_to_end(device_id)
        if len(self._addresses) > ADDRESSES_REMEMBERED:
            self._addresses.popitem(last=False)

    def pending_operator_acks(self, device_id: str) -> tuple[PendingAck, ...]:
        """Operator acknowledgements not yet delivered to the device."""
        return tuple(self._pending.get(device_id, ()))

    async def follow_up(self, address: str, device_id: str) -> FollowUpResult:
        """Read the frame, submit it, write a RECEIVED ack (and any pending operator acks). Never raises BleakError."""
        return await self._contact(address, device_id, read_frame=True)

    async def acknowledge_operator(
        self, device_id: str, incident_id: str, counter: int, *, address: str | None = None
    ) -> FollowUpResult | None:
        """Queue an OPERATOR ack for the device's next contact; with its current address, try that contact now.

        Returns None when only queued, else the contact's result (OPERATOR_ACKED, or UNREACHABLE: still queued).
        """
        self._pending.setdefault(device_id, []).append(PendingAck(incident_id, counter))
        if address is None:
            return None
        return await self._contact(address, device_id, read_frame=False)

    async def deliver_operator_acks(self, address: str, device_id: str) -> FollowUpResult:
        """Contact the device only to deliver its pending operator acks (they stay pending if unreachable)."""
        return await self._contact(address, device_id, read_frame=False)

    async def _contact(self, address: str, device_id: str, *, read_frame: bool) -> FollowUpResult:
        contact = _Contact()
        attempts = 0
        delay = BACKOFF_INITIAL_S
        try:
            async with asyncio.timeout(self._deadline_s):
                while True:
                    attempts += 1
                    address = self._addresses.get(device_id, address)  # a press at a window change moves it
                    try:
                        await self._attempt(address, device_id, contact, read_frame=read_frame)
                        break
                    except (BleakError, TimeoutError) as error:
                        contact.detail = f"attempt {attempts}: {error}"
                        if contact.done or attempts >= self._max_attempts:
                            break  # a frame submitted is not re-read: its result stands
                        log.info("gatt follow-up retry", address=address, device_id=device_id, error=str(error))
                    await asyncio.sleep(self._rng.uniform(0, delay))
                    delay = min(delay * BACKOFF_FACTOR, BACKOFF_MAX_S)
        except TimeoutError:
            contact.detail = f"deadline of {self._deadline_s} s passed; {contact.detail}".rstrip("; ")
        result = FollowUpResult(
            contact.status,
            address,
            device_id,
            contact.counter,
            contact.incident_id,
            attempts,
            contact.detail,
            contact.operator_acks,
        )
        log.info(
            "gatt follow-up",
            address=address,
            device_id=device_id,
            status=result.status.value,
            attempts=attempts,
            alert_id=result.incident_id,
            detail=result.detail,
        )
        return result

    async def _attempt(self, address: str, device_id: str, contact: _Contact, *, read_frame: bool) -> None:
        """One connection. Raises BleakError/TimeoutError for a retry; sets contact.done once a frame was judged."""
        async with self._client_factory(address, self._connect_timeout_s) as client:
            if read_frame and not contact.done:
                data = bytes(await client.read_gatt_char(GATT_FRAME_UUID))
                contact.done = True
                signed = parse_signed_frame(data)
                if isinstance(signed, Rejection):
                    contact.status, contact.detail = FollowUpStatus.REJECTED, f"frame: {signed.detail}"
                    return
                contact.counter = signed.frame.counter
                if signed.frame.device_id != device_id:
                    contact.status = FollowUpStatus.REJECTED
                    contact.detail = f"frame of {signed.frame.device_id!r}, advert of {device_id!r}"
                    return
                try:
                    incident_id = await self._submit(data)
                except Exception as error:
                    contact.status, contact.detail = FollowUpStatus.REJECTED, f"submit failed: {error!r}"
                    return
                if incident_id is None:
                    contact.status, contact.detail = FollowUpStatus.REJECTED, "the pipeline rejected the frame"
                    return
                contact.incident_id = incident_id
                contact.status = FollowUpStatus.READ
                ack = GatewayAck(AckKind.RECEIVED, signed.frame.counter, incident_id, self._clock_ms())
                await client.write_gatt_char(GATT_ACK_UUID, sign_ack(ack, self._ack_key), response=True)
                contact.status, contact.detail = FollowUpStatus.ACKED, ""
            await self._deliver_operator_acks(client, device_id, contact)
            if not read_frame:
                contact.done = True

    async def _deliver_operator_acks(self, client: BleakClient, device_id: str, contact: _Contact) -> None:
        pending = self._pending.get(device_id)
        while pending:
            incident_id, counter = pending[0]
            ack = GatewayAck(AckKind.OPERATOR, counter, incident_id, self._clock_ms())
            try:
                await client.write_gatt_char(GATT_ACK_UUID, sign_ack(ack, self._ack_key), response=True)
            except BleakError as error:
                if not client.is_connected:
                    raise  # link lost: keep it pending, retry the contact
                contact.detail = f"operator ack for counter {counter} refused: {error}"  # stale: a newer press
                if contact.status is FollowUpStatus.UNREACHABLE:
                    contact.status = FollowUpStatus.REJECTED
            else:
                contact.operator_acks += 1
                if contact.status is FollowUpStatus.UNREACHABLE:
                    contact.status, contact.counter, contact.incident_id = (
                        FollowUpStatus.OPERATOR_ACKED,
                        counter,
                        incident_id,
                    )
            pending.pop(0)
        self._pending.pop(device_id, None)
