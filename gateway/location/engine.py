"""Locates every new incident, never holding it up: the alert goes out at once; fused locations follow as updates.

A press is located a moment after it was stored (BLE receivers in range report it within a few advert intervals)
and again while the wearable's burst goes on: each pass gathers what the database has for the press (the frame's
GPS fix and cells, every receiver's observations), fuses it (gateway.location.fusion) against the site map and
the cell database, and stores the estimate when it tells responders something new (IncidentStore.record_location:
a "located" event and a new state on MQTT; SMS and calls read the place text from then on).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self

import structlog
from tortoise.exceptions import BaseORMException

from gateway.config import ReceiverSettings
from gateway.core.authenticate import AuthenticatedSignal
from gateway.core.incident import AlertState
from gateway.errors import StoreUnavailable
from gateway.location.cells import cell_key
from gateway.location.fusion import FusionInput, fuse, last_known
from gateway.location.model import (
    BleObservation,
    CellObservation,
    Estimate,
    LocalPoint,
    LocationSource,
    Place,
    ReceiverSite,
)
from gateway.location.sites import EMPTY_SITE_MAP, SiteMap, SiteMapError, parse_site_map
from gateway.observability import Metrics
from gateway.protocol import GpsFix
from gateway.protocol.frame import decode_frame
from gateway.rejection import Rejection
from gateway.store.incidents import BLE_TRANSPORT, IncidentStore, OutboxItem
from gateway.store.locations import CellDatabase, current_site_map_document
from gateway.store.models import CellTower, Device, Incident, Observation, Signal

log = structlog.get_logger(__name__)

#: Seconds after the press is stored when it is located: the first pass once the receivers in range have
#: reported it (a panic burst advertises every 20 ms), then while the burst goes on and the GATT follow-up
#: may add a GPS fix.
PASSES_S: Final = (0.3, 1.5, 5.0)
#: Radius of "near this receiver" when a device was last heard by it (a BLE receiver hears a few rooms far).
RECEIVER_RADIUS_M: Final = 10.0
#: How often the site map is re-read (a `panic-gateway sites load` reaches running gateways this fast).
SITE_MAP_REFRESH_S: Final = 5.0


class SiteMapCache:
    """The newest site map in the database and the receivers placed in it."""

    def __init__(self, receivers: Sequence[ReceiverSettings]) -> None:
        self.site_map: SiteMap = EMPTY_SITE_MAP
        self.version = 0
        #: Whether the cell database has any cell (checked at each refresh).
        self.cells_known = False
        self._settings = tuple(receivers)
        self.receivers: dict[str, ReceiverSite] = self._place_receivers()

    @property
    def useful(self) -> bool:
        """Whether fusion can say more than a frame's own GPS fix: a site map, receivers or cells to use."""
        return bool(self.site_map.sites or self.receivers or self.cells_known)

    async def refresh(self) -> None:
        self.cells_known = await CellTower.exists()
        version, document = await current_site_map_document()
        if document is None or version == self.version:
            return
        try:
            self.site_map = parse_site_map(document, source=f"version {version}")
        except SiteMapError as exc:  # validated when loaded: only a hand-edited row gets here
            log.error("stored site map is invalid: keeping the previous one", problems=exc.problems)
            return
        self.version = version
        self.receivers = self._place_receivers()
        log.info("site map loaded", version=version, receivers=len(self.receivers))

    def zone_of(self, signal: AuthenticatedSignal) -> str | None:
        """The zone a press is in as far as its own signal tells, at once: its GPS fix, or the receiver that heard
        it (the escalation policy is chosen by zone before any fusion has run)."""
        gps = signal.signed.frame.gps
        if gps is not None:
            return self.site_map.place_of(gps.lat, gps.lon).zone
        receiver = self.receivers.get(signal.receiver) if signal.receiver is not None else None
        return None if receiver is None else receiver.place.zone

    def problems(self) -> list[str]:
        """Receivers the site map cannot place as configured (a building or room it does not have)."""
        found: list[str] = []
        site_map = self.site_map
        if not site_map.sites:
            return found
        for r in self._settings:
            if r.site and site_map.site(r.site) is None:
                found.append(f"receiver {r.name}: site {r.site!r} is not in the site map")
            if not r.building:
                found.append(f"receiver {r.name}: no building: it names no room and has no position")
                continue
            if site_map.building(r.building) is None:
                found.append(f"receiver {r.name}: building {r.building!r} is not in the site map")
                continue
            actual = site_map.room_at(LocalPoint(r.building, r.floor, r.x, r.y)).room
            if r.room and actual != r.room:
                where = f"room {actual}" if actual else "no room"
                found.append(f"receiver {r.name}: configured in room {r.room!r} but its position is in {where}")
        return found

    def _place_receivers(self) -> dict[str, ReceiverSite]:
        """Each configured receiver in the site model: its room from the map when its building is there."""
        for problem in self.problems():
            log.warning("receiver placement", problem=problem)
        placed = {}
        for r in self._settings:
            local = LocalPoint(r.building, r.floor, r.x, r.y) if r.building else None
            lat = lon = None
            place = Place(r.site or None, r.building or None, r.floor, r.room or None, None)
            if local is not None and self.site_map.building(r.building) is not None:
                lat, lon = self.site_map.to_geo(local)
                found = self.site_map.room_at(local)
                place = Place(found.site or place.site, r.building, r.floor, r.room or found.room, found.zone)
            placed[r.name] = ReceiverSite(r.name, place, local, lat, lon)
        return placed


class LocationEngine:
    """An async context manager: locates incidents handed to it (`locate_soon`), in passes, in the background."""

    def __init__(
        self,
        store: IncidentStore,
        publish: Callable[[Sequence[OutboxItem]], None],
        metrics: Metrics,
        *,
        sites: SiteMapCache,
        cells: CellDatabase | None = None,
        passes_s: Sequence[float] = PASSES_S,
    ) -> None:
        self._store = store
        self._publish = publish
        self._metrics = metrics
        self.sites = sites
        self._cells = cells or CellDatabase()
        self._passes = tuple(passes_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        #: Devices whose open incident this gateway located (device -> incident), and each incident's press counter.
        self._open: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        #: This gateway's receivers' RSSI readings of a press (set when BLE receivers run): more than the one
        #: observation per receiver the database keeps.
        self.readings: Callable[[str, int], dict[str, list[int]]] = lambda device_id, counter: {}

    async def __aenter__(self) -> Self:
        with contextlib.suppress(BaseORMException, OSError):
            await self.sites.refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="site-map-refresh")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = [t for t in (self._refresher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def locate_soon(self, incident_ids: Sequence[str]) -> None:
        """New incidents: locate each in passes (the alert itself has already gone out). Without a site map,
        receivers or cells there is nothing to fuse: the frame's own fix is the location, and nothing runs."""
        if not self.sites.useful:
            return
        for incident_id in dict.fromkeys(incident_ids):
            task = asyncio.create_task(self._passes_for(incident_id), name=f"locate-{incident_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _passes_for(self, incident_id: str) -> None:
        elapsed = 0.0
        for at in self._passes:
            await asyncio.sleep(max(0.0, at - elapsed))  # gathering window: receivers are still reporting
            elapsed = at
            try:
                heard = await self.locate(incident_id)
            except StoreUnavailable as exc:
                log.warning("location pass failed: database unavailable", alert_id=incident_id, error=str(exc))
                continue
            except Exception:
                log.exception("location pass failed", alert_id=incident_id)
                return
            if not heard:
                return  # no receiver heard it: later passes would find what this one found

    def track(self, signals: Sequence[AuthenticatedSignal]) -> None:
        """Later signals (heartbeats, other frames) of devices with an incident this gateway is locating: their
        positions update the incident while it is open (the wearer may be moving)."""
        for sig in signals:
            device_id = sig.signed.frame.device_id
            incident_id = self._open.get(device_id)
            if incident_id is None or sig.signed.frame.counter == self._counters.get(incident_id):
                continue
            task = asyncio.create_task(
                self._track_once(incident_id, sig.signed.frame.counter), name=f"track-{incident_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _track_once(self, incident_id: str, counter: int) -> None:
        await asyncio.sleep(self._passes[0])  # the same gathering window as a press: receivers still report
        try:
            await self.locate(incident_id, counter=counter)
        except StoreUnavailable as exc:
            log.warning("track pass failed: database unavailable", alert_id=incident_id, error=str(exc))
        except Exception:
            log.exception("track pass failed", alert_id=incident_id)

    async def locate(self, incident_id: str, *, counter: int | None = None) -> bool:
        """One pass: gather what the press (or the later signal `counter`) says, fuse, store if news, publish.
        True when BLE receivers heard it (their readings keep coming while the burst goes on)."""
        try:
            incident = await Incident.get_or_none(id=incident_id)
            if incident is None:
                return False
            if not AlertState(incident.state).is_open:
                self._forget(incident)
                return False
            previous = self._open.get(incident.device_id)
            if previous is not None and previous != incident_id:
                self._counters.pop(previous, None)  # one open incident per device is followed: the newest
            self._open[incident.device_id] = incident_id
            self._counters[incident_id] = incident.counter
            press_at = incident.device_time
            if counter is None:
                gps, cells = await _frame_facts(incident.device_id, incident.counter)
                observations = await Observation.filter(incident_id=incident_id, transport=BLE_TRANSPORT)
            else:
                gps, cells = await _frame_facts(incident.device_id, counter)
                observations = await Observation.filter(
                    device_id=incident.device_id, counter=counter, transport=BLE_TRANSPORT
                )
                press_at = observations[0].received_at if observations else datetime.now(UTC)
                if gps is None and not cells and not observations:
                    return False  # a signal that says nothing about where the wearer is
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        if counter is None and gps is None and incident.lat is not None and incident.location_source in (None, "gps"):
            # A fix the GATT follow-up read (the advert carries none): the incident holds it.
            gps = GpsFix(incident.lat, incident.lon or 0.0, incident.accuracy_m or 0, incident.fix_age_s or 0)
        ble = _readings_with(
            observations, self.readings(incident.device_id, counter if counter is not None else incident.counter)
        )
        table = await self._cells.prefetch([cell_key(c) for c in cells])
        site_map = self.sites.site_map
        estimate = fuse(
            FusionInput(press_at, gps, cells, ble),
            cells=table,
            receivers=self.sites.receivers,
            describe=site_map.describe,
            locate=site_map.place_of,
        )
        if estimate.source is LocationSource.NONE and incident.location_source is None:
            estimate = await self._last_known(incident.device_id) or estimate
        items = await self._store.record_location(incident_id, estimate, datetime.now(UTC))
        self._metrics.locations.labels(estimate.source.value, "news" if items else "same").inc()
        if items:
            log.info("located", alert_id=incident_id, source=estimate.source.value, place=estimate.text)
            self._publish(items)
        return bool(ble)

    async def _last_known(self, device_id: str) -> Estimate | None:
        """Nothing current: where the device was last heard (the receiver that heard its latest signal best)."""
        device = await Device.get_or_none(device_id=device_id)
        if device is None or device.nearest_receiver is None or device.last_seen_at is None:
            return None
        receiver = self.sites.receivers.get(device.nearest_receiver)
        if receiver is None:
            return None
        site_map = self.sites.site_map
        heard = Estimate(
            receiver.lat,
            receiver.lon,
            RECEIVER_RADIUS_M if receiver.lat is not None else None,
            LocationSource.BLE,
            receiver.place,
            site_map.describe(receiver.place),
            f"heard by {receiver.name}",
            device.last_seen_at,
        )
        return last_known(heard, datetime.now(UTC))

    def _forget(self, incident: Incident) -> None:
        if self._open.get(incident.device_id) == incident.id:
            del self._open[incident.device_id]
        self._counters.pop(incident.id, None)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(SITE_MAP_REFRESH_S)
            try:
                await self.sites.refresh()
            except (BaseORMException, OSError) as exc:
                log.warning("site map not refreshed", error=str(exc))


def _readings_with(observations: Sequence[Observation], readings: dict[str, list[int]]) -> tuple[BleObservation, ...]:
    """Every reading of the press: this gateway's receivers' own (all of them), and for receivers it does not run
    (other gateways on the database) their stored observation."""
    ble: list[BleObservation] = []
    first: dict[str, datetime] = {}
    for o in observations:
        if o.receiver is None or o.rssi is None:
            continue
        first.setdefault(o.receiver, o.received_at)
        if o.receiver not in readings:
            ble.append(BleObservation(o.receiver, o.rssi, o.received_at))
    for receiver, values in readings.items():
        at = first.get(receiver)
        if at is None:
            continue  # not stored as an observation of this press: not ours to use
        ble.extend(BleObservation(receiver, rssi, at) for rssi in values)
    return tuple(ble)


async def _frame_facts(device_id: str, counter: int) -> tuple[GpsFix | None, tuple[CellObservation, ...]]:
    """The GPS fix and cells of a stored frame (an advert's stored bytes carry neither)."""
    signal = await Signal.get_or_none(device_id=device_id, counter=counter)
    if signal is None or signal.transport == BLE_TRANSPORT:
        return None, ()
    frame = decode_frame(bytes(signal.frame))
    if isinstance(frame, Rejection):
        return None, ()
    return frame.gps, frame.cells
