"""Advert ingest: BLE adverts heard by the receivers become authenticated signals on the same pipeline as HTTPS.

Per advert, cheapest first: `parse_advert` (foreign adverts stop at one substring search), the same bytes from
the same receiver again (an advert is repeated many times a second) stop at one dict lookup, the ephemeral id is
resolved in the `EphemeralIdTable`, `open_advert` checks the MAC, then the device's registration is checked
(`authenticate_advert`) and the signal goes to the group commit, which correlates it with every other observation
of the same press (other receivers, other gateways, HTTPS).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, NamedTuple, Self

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from tortoise.exceptions import BaseORMException

from gateway.core.authenticate import authenticate_advert
from gateway.core.ephemeral import EphemeralIdTable
from gateway.errors import StoreUnavailable
from gateway.ingest.pipeline import Overloaded, SignalPipeline
from gateway.observability import Metrics
from gateway.protocol.advert import AdvertSignal, gateway_advert_keys, open_advert, parse_advert, window_of
from gateway.rejection import Rejection, RejectReason
from gateway.store.incidents import Outcome
from gateway.store.models import Device
from gateway.store.registry import DeviceDirectory

log = structlog.get_logger(__name__)

TRANSPORT: Final = "ble"
#: Adverts remembered per (receiver, bytes): a wearable repeats one advert every 20-100 ms for seconds, and each
#: repeat must cost a dict lookup, not a commit. 4096 covers hundreds of wearables advertising at once.
RECENT_ADVERTS: Final = 4096
#: Presses whose RSSI readings are kept for location (the oldest are forgotten first), and readings kept per
#: receiver and press (a 20 ms burst makes 50 a second): averaging 60 readings of 4 dB shadowing leaves about
#: half a dB, what telling neighbouring rooms apart near a wall needs (bench.location). One byte a reading.
READING_PRESSES: Final = 4096
READINGS_PER_RECEIVER: Final = 60
#: Signals waiting for the directory or the commit at once; beyond it adverts are dropped (a repeat comes soon).
MAX_PENDING: Final = 1024
#: An unknown ephemeral id reloads the keys at most this often: a device registered a moment ago is heard
#: within a second or so, and a stranger's beacons cannot make the gateway hammer the database.
UNKNOWN_RELOAD_MIN_S: Final = 1.0


class AdvertObservation(NamedTuple):
    """One advert as one receiver heard it."""

    #: Name of the receiver (ReceiverSettings.name).
    receiver: str
    #: Received signal strength, dBm (None if the controller did not report it).
    rssi: int | None
    #: Gateway time of receipt (UTC).
    received_at: datetime
    #: The raw advertising data (AD structures).
    data: bytes
    #: The advertiser's BLE address (random and meaningless for our wearables; kept for diagnostics).
    address: str


class HeardAdvert(NamedTuple):
    """A device's authenticated advert as one receiver heard it (what the GATT follow-ups need to know)."""

    #: The device it opened as.
    device_id: str
    #: Name of the receiver that heard it.
    receiver: str
    #: Received signal strength, dBm (None if the controller did not report it).
    rssi: int | None
    #: The wearable's advertising address now (changes with the advert window).
    address: str
    #: The incident this advert just raised (its first commit), else None (a repeat, a duplicate, a heartbeat).
    new_incident: str | None


class AdvertResult(enum.StrEnum):
    """What became of one observation (the `result` label of panic_ble_adverts)."""

    FOREIGN = "foreign"
    REPEAT = "repeat"
    MALFORMED = "malformed"
    UNKNOWN_EID = "unknown-eid"
    BAD_SIGNATURE = "bad-signature"
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    DROPPED = "dropped"


class AdvertIngest:
    """Owns the ephemeral-id table (loaded from the registry, refreshed) and the tasks that submit signals.

    `observe` is the receivers' callback: synchronous, and cheap for everything that is not a new advert of ours.
    """

    def __init__(
        self,
        *,
        fleet_key: ec.EllipticCurvePrivateKey,
        directory: DeviceDirectory,
        pipeline: SignalPipeline,
        metrics: Metrics,
        key_refresh_s: float,
        service_uuid: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_heard: Callable[[HeardAdvert], None] | None = None,
    ) -> None:
        self._fleet_key = fleet_key
        self._directory = directory
        self._pipeline = pipeline
        self._metrics = metrics
        self._key_refresh_s = key_refresh_s
        self._service_uuid = service_uuid
        self._clock = clock
        self._on_heard = on_heard
        self._table = EphemeralIdTable()
        #: device id -> certificate fingerprint of the keys in the table (a re-registered device gets new keys).
        self._fingerprints: dict[str, str] = {}
        #: (receiver, advert bytes) -> the device it opened as.
        self._recent: OrderedDict[tuple[str, bytes], tuple[str, int]] = OrderedDict()
        #: RSSI readings of recent presses: (device, counter) -> receiver -> dBm, in arrival order. A burst repeats
        #: one advert every 20 ms: each repeat is another reading for location (one reading per receiver is a
        #: coin toss between neighbouring rooms), kept in memory only and bounded.
        self._readings: OrderedDict[tuple[str, int], dict[str, array[int]]] = OrderedDict()
        self._pending: set[asyncio.Task[None]] = set()
        self._reload_now = asyncio.Event()
        self._reloaded_at = 0.0
        self._refresher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._table.rotate(window_of(self._clock().timestamp()))
        await self.reload_keys()
        self._refresher = asyncio.create_task(self._refresh(), name="advert-keys-refresh")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = [t for t in (self._refresher, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def devices(self) -> int:
        """Devices whose advert keys are loaded."""
        return len(self._table)

    async def reload_keys(self) -> None:
        """Add the keys of devices registered since the last load; drop revoked and removed devices."""
        self._reloaded_at = time.monotonic()
        rows = await Device.filter(revoked_at=None).values_list("device_id", "cert_fingerprint")
        current = {str(device_id): str(fingerprint) for device_id, fingerprint in rows}
        for device_id in [d for d in self._fingerprints if d not in current]:
            self._table.remove(device_id)
            del self._fingerprints[device_id]
        new = [d for d, fp in current.items() if self._fingerprints.get(d) != fp]
        if new:
            for device_id, pem in await Device.filter(device_id__in=new).values_list("device_id", "cert_pem"):
                public_key = x509.load_pem_x509_certificate(str(pem).encode()).public_key()
                if not isinstance(public_key, ec.EllipticCurvePublicKey):
                    continue
                try:
                    keys = gateway_advert_keys(self._fleet_key, public_key, str(device_id))
                except ValueError as exc:  # another curve, or an id the advert protocol cannot carry
                    log.warning("device has no advert keys", device_id=device_id, error=str(exc))
                    continue
                self._table.add(keys)
                self._fingerprints[str(device_id)] = current[str(device_id)]
        self._metrics.ble_advert_keys.set(len(self._table))

    async def _refresh(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_now.wait(), self._key_refresh_s)
            self._reload_now.clear()
            try:
                await self.reload_keys()
            except (BaseORMException, OSError) as exc:
                log.warning("advert keys not reloaded", error=str(exc))

    def _count(self, receiver: str, result: AdvertResult) -> None:
        self._metrics.ble_adverts.labels(receiver, result.value).inc()

    def observe(self, obs: AdvertObservation) -> None:
        """Handle one advert heard by a receiver (the scanners' callback; never raises on bad input)."""
        parsed = parse_advert(obs.data, self._service_uuid)
        if parsed is None:
            self._count(obs.receiver, AdvertResult.FOREIGN)
            return
        if isinstance(parsed, Rejection):
            self._count(obs.receiver, AdvertResult.MALFORMED)
            return
        key = (obs.receiver, obs.data)
        known = self._recent.get(key)
        if known is not None:
            self._count(obs.receiver, AdvertResult.REPEAT)
            self._note_reading(known, obs)
            if self._on_heard is not None:
                self._on_heard(HeardAdvert(known[0], obs.receiver, obs.rssi, obs.address, None))
            return
        window = window_of(obs.received_at.timestamp())
        if window != self._table.window:
            self._table.rotate(window)
        opened: AdvertSignal | Rejection | None = None
        for match in self._table.candidates(parsed.eid):
            opened = open_advert(parsed, match.keys, match.window)
            if not isinstance(opened, Rejection):
                break
        if opened is None:
            self._count(obs.receiver, AdvertResult.UNKNOWN_EID)
            if time.monotonic() - self._reloaded_at >= UNKNOWN_RELOAD_MIN_S:
                self._reload_now.set()
            return
        if isinstance(opened, Rejection):
            bad_mac = opened.reason is RejectReason.BAD_SIGNATURE
            self._count(obs.receiver, AdvertResult.BAD_SIGNATURE if bad_mac else AdvertResult.MALFORMED)
            self._metrics.signals_rejected.labels(opened.reason.value, TRANSPORT).inc()
            log.warning("advert refused", reason=opened.reason.value, detail=opened.detail, receiver=obs.receiver)
            return
        if len(self._pending) >= MAX_PENDING:
            self._count(obs.receiver, AdvertResult.DROPPED)
            return
        self._recent[key] = (opened.device_id, opened.counter)
        if len(self._recent) > RECENT_ADVERTS:
            self._recent.popitem(last=False)
        self._note_reading((opened.device_id, opened.counter), obs)
        task = asyncio.create_task(self._submit(obs, opened, key), name=f"advert-{opened.device_id}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def readings(self, device_id: str, counter: int) -> dict[str, list[int]]:
        """Every RSSI reading this gateway's receivers took of one press (or heartbeat), by receiver."""
        found = self._readings.get((device_id, counter))
        return {} if found is None else {receiver: list(values) for receiver, values in found.items()}

    def _note_reading(self, press: tuple[str, int], obs: AdvertObservation) -> None:
        if obs.rssi is None:
            return
        by_receiver = self._readings.get(press)
        if by_receiver is None:
            by_receiver = self._readings[press] = {}
            if len(self._readings) > READING_PRESSES:
                self._readings.popitem(last=False)
        values = by_receiver.get(obs.receiver)
        if values is None:
            values = by_receiver[obs.receiver] = array("b")
        if len(values) < READINGS_PER_RECEIVER and -128 <= obs.rssi <= 127:
            values.append(obs.rssi)

    async def _submit(self, obs: AdvertObservation, opened: AdvertSignal, key: tuple[str, bytes]) -> None:
        started = time.perf_counter()
        try:
            creds = await self._directory.get(opened.device_id, obs.received_at)
            verdict = authenticate_advert(opened, creds, receiver=obs.receiver, rssi=obs.rssi, now=obs.received_at)
            if isinstance(verdict, Rejection):
                self._count(obs.receiver, AdvertResult.REJECTED)
                self._metrics.signals_rejected.labels(verdict.reason.value, TRANSPORT).inc()
                log.info("advert refused", reason=verdict.reason.value, device_id=opened.device_id)
                return
            outcome = await self._pipeline.submit(verdict)
        except (Overloaded, StoreUnavailable) as exc:
            # Not stored: forget it, so the next repeat of the advert is tried again.
            self._recent.pop(key, None)
            self._count(obs.receiver, AdvertResult.DROPPED)
            log.info("advert not stored, waiting for a repeat", device_id=opened.device_id, error=str(exc))
            return
        event = opened.event.name.lower()
        if outcome.rejection is not None:
            self._count(obs.receiver, AdvertResult.REJECTED)
            self._metrics.signals_rejected.labels(outcome.rejection.reason.value, TRANSPORT).inc()
            log.info("advert refused", reason=outcome.rejection.reason.value, device_id=opened.device_id)
            return
        self._count(
            obs.receiver, AdvertResult.ACCEPTED if outcome.outcome is Outcome.ACCEPTED else AdvertResult.DUPLICATE
        )
        self._metrics.signals_accepted.labels(event, TRANSPORT, outcome.outcome.value).inc()
        self._metrics.ingest_latency.labels(TRANSPORT).observe(time.perf_counter() - started)
        raised = outcome.incident_id if outcome.outcome is Outcome.ACCEPTED and opened.event.raises_incident else None
        if self._on_heard is not None:
            self._on_heard(HeardAdvert(opened.device_id, obs.receiver, obs.rssi, obs.address, raised))
        if raised is not None:
            log.info(
                "alert accepted",
                device_id=opened.device_id,
                alert_id=outcome.incident_id,
                kind=event,
                transport=TRANSPORT,
                receiver=obs.receiver,
                rssi=obs.rssi,
            )
