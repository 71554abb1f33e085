"""Incident store: commits authenticated signals, incidents, their event log and outbox in one transaction."""

from __future__ import annotations

import asyncio
import enum
import json
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from tortoise.exceptions import BaseORMException, IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from gateway.commandcenter import payloads
from gateway.core.authenticate import AuthenticatedSignal
from gateway.core.incident import AlertState, IncidentView, short_code_for
from gateway.core.replay import CounterVerdict, ReplayWindow
from gateway.errors import StoreUnavailable
from gateway.location.model import Estimate, LocationSource, Place
from gateway.protocol import EventType, GpsFix
from gateway.rejection import Rejection, RejectReason
from gateway.store.models import Device, Incident, Observation, OutboxMessage, Signal

log = structlog.get_logger(__name__)

#: Namespace of incident ids: uuid5(INCIDENT_NAMESPACE, "<device_id>:<counter>") (docs/PROTOCOL.md).
INCIDENT_NAMESPACE: Final = uuid.UUID("6f6b1c1e-6a0e-4f43-9d0d-2f8f4c3c2a10")

_OPEN_STATES: Final = [s.value for s in AlertState if s.is_open]


def incident_id_for(device_id: str, counter: int) -> str:
    """The deterministic incident id of a press: retries and racing gateways agree on it."""
    return str(uuid.uuid5(INCIDENT_NAMESPACE, f"{device_id}:{counter}"))


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A committed outbox row, handed to the publisher without a database round trip."""

    key: str
    kind: str
    alert_id: str
    payload: bytes
    retain: bool
    revision: int


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    """What became of one signal. incident_id is None for heartbeats and cancels with nothing open."""

    outcome: Outcome
    incident_id: str | None = None
    rejection: Rejection | None = None
    outbox: tuple[OutboxItem, ...] = ()


class AckResult(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"
    ALREADY = "already-acknowledged"
    NOT_FOUND = "not-found"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class AckOutcome:
    result: AckResult
    state: AlertState | None = None
    outbox: tuple[OutboxItem, ...] = ()
    #: The acknowledged press (device and counter), so its wearable can be told.
    device_id: str | None = None
    counter: int | None = None


#: The event type of an operator's note on the timeline.
NOTE_EVENT: Final = payloads.AlertEventType.NOTE.value


@dataclass(frozen=True, slots=True)
class NoteAdded:
    """A note appended to an incident's timeline, and its MQTT event (to hand to the publisher)."""

    event_id: str
    alert_id: str
    revision: int
    at: datetime
    detail: dict[str, Any]
    outbox: tuple[OutboxItem, ...]


@dataclass(slots=True)
class _IncidentRow:
    """A new incident, inserted with executemany (building model instances costs more than the SQL)."""

    id: str
    device_id: str
    counter: int
    event: str
    state: str
    revision: int
    device_time: datetime
    received_at: datetime
    delayed: bool
    test: bool
    battery: int | None
    lat: float | None
    lon: float | None
    accuracy_m: int | None
    fix_age_s: int | None
    transport: str
    updated_at: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    short_code: str = ""
    resolution: str | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    # The zone of the frame's GPS fix or of the receiver that heard the advert, known at once (routes the
    # escalation policy); the fused location refines it a moment later.
    place_zone: str | None = None


#: An incident as the commit sees it: a stored row (model) or one about to be inserted.
IncidentLike = Incident | _IncidentRow

_INCIDENT_COLUMNS: Final = tuple(f.name for f in fields(_IncidentRow))
_SIGNAL_COLUMNS: Final = (
    "device_id",
    "counter",
    "event",
    "frame_digest",
    "frame",
    "transport",
    "device_time",
    "received_at",
    "incident_id",
)
_EVENT_COLUMNS: Final = ("incident_id", "event_id", "revision", "type", "at", "detail")
#: A new incident's escalation ladder: due at once, started by the escalation engine (state stays NULL till then).
_LADDER_COLUMNS: Final = ("incident_id", "site", "active", "next_at", "updated_at")
_OBSERVATION_COLUMNS: Final = (
    "incident_id",
    "device_id",
    "counter",
    "event",
    "transport",
    "receiver",
    "rssi",
    "received_at",
    "gateway_id",
)
#: Transport of BLE adverts: an advert carries no signature, so its bytes never equal a frame's; the same
#: (device, counter, event) heard as an advert and as a frame (or by two receivers) is one press.
BLE_TRANSPORT: Final = "ble"
_OUTBOX_COLUMNS: Final = (
    "key",
    "channel",
    "alert_id",
    "kind",
    "payload",
    "retain",
    "revision",
    "status",
    "attempts",
    "claimed_by",
    "claimed_until",
    "created_at",
)


@dataclass(slots=True)
class _DeviceRow:
    """The columns of a locked device row that a commit reads and writes."""

    device_id: str
    wearer: str
    site: str
    revoked: bool
    counter_high: int
    counter_mask: int
    last_seen_at: datetime | None
    battery: int | None
    updated_at: datetime | None
    nearest_receiver: str | None = None
    nearest_rssi: int | None = None
    nearest_counter: int | None = None


async def _lock_devices(conn: Any, device_ids: Sequence[str]) -> dict[str, _DeviceRow]:
    """Read and lock the batch's devices, in id order (PostgreSQL: FOR UPDATE; SQLite locks the file)."""
    dialect = conn.capabilities.dialect
    lock = " FOR UPDATE" if dialect == "postgres" else ""
    sql = (
        "SELECT device_id, wearer, site, revoked_at, counter_high, counter_mask, last_seen_at, battery, updated_at, "  # noqa: S608
        "nearest_receiver, nearest_rssi, nearest_counter "
        f'FROM "devices" WHERE device_id IN ({", ".join(_marks(dialect, len(device_ids)))}) '
        f"ORDER BY device_id{lock}"
    )
    rows = await conn.execute_query_dict(sql, list(device_ids))
    return {
        r["device_id"]: _DeviceRow(
            r["device_id"],
            r["wearer"],
            r["site"],
            r["revoked_at"] is not None,
            r["counter_high"],
            r["counter_mask"],
            _as_datetime(r["last_seen_at"]),
            r["battery"],
            _as_datetime(r["updated_at"]),
            r["nearest_receiver"],
            r["nearest_rssi"],
            r["nearest_counter"],
        )
        for r in rows
    }


def _as_datetime(value: Any) -> datetime | None:
    """SQLite hands back the ISO text tortoise stored; asyncpg a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


_PG_TYPES: Final = {
    "incidents": (
        "varchar",
        "varchar",
        "bigint",
        "varchar",
        "varchar",
        "int",
        "timestamptz",
        "timestamptz",
        "bool",
        "bool",
        "smallint",
        "float8",
        "float8",
        "int",
        "int",
        "varchar",
        "timestamptz",
        "varchar",
        "timestamptz",
        "varchar",
        "varchar",
        "varchar",
        "timestamptz",
        "varchar",
    ),
    "signals": ("varchar", "bigint", "varchar", "varchar", "bytea", "varchar", "timestamptz", "timestamptz", "varchar"),
    "incident_events": ("varchar", "varchar", "int", "varchar", "timestamptz", "text"),
    "observations": (
        "varchar",
        "varchar",
        "bigint",
        "varchar",
        "varchar",
        "varchar",
        "smallint",
        "timestamptz",
        "varchar",
    ),
    "ladders": ("varchar", "varchar", "bool", "timestamptz", "timestamptz"),
    "outbox": (
        "varchar",
        "varchar",
        "varchar",
        "varchar",
        "bytea",
        "bool",
        "int",
        "varchar",
        "int",
        "varchar",
        "timestamptz",
        "timestamptz",
    ),
}


_DEVICE_UPDATE_TYPES: Final = (
    "varchar",
    "bigint",
    "bigint",
    "timestamptz",
    "smallint",
    "timestamptz",
    "varchar",
    "smallint",
    "bigint",
)


def _device_update_row(d: _DeviceRow) -> tuple[Any, ...]:
    return (
        d.device_id,
        d.counter_high,
        d.counter_mask,
        d.last_seen_at,
        d.battery,
        d.updated_at,
        d.nearest_receiver,
        d.nearest_rssi,
        d.nearest_counter,
    )


def _pg_write_statement() -> str:
    """One statement inserting a batch into six tables and updating its devices."""
    n = 0
    parts = []
    for name, (table, columns) in zip(
        ("i", "s", "e", "o", "v", "l"),
        (
            ("incidents", _INCIDENT_COLUMNS),
            ("signals", _SIGNAL_COLUMNS),
            ("incident_events", _EVENT_COLUMNS),
            ("outbox", _OUTBOX_COLUMNS),
            ("observations", _OBSERVATION_COLUMNS),
            ("ladders", _LADDER_COLUMNS),
        ),
        strict=True,
    ):
        types = _PG_TYPES[table]
        args = ", ".join(f"${n + k + 1}::{t}[]" for k, t in enumerate(types))
        n += len(types)
        aliases = [f"c{k}" for k in range(len(types))]
        select = ", ".join(f"{a}::jsonb" if c == "detail" else a for a, c in zip(aliases, columns, strict=True))
        names = ", ".join(f'"{c}"' for c in columns)
        alias_list = ", ".join(aliases)
        parts.append(
            f'{name} AS (INSERT INTO "{table}" ({names}) SELECT {select} FROM unnest({args}) AS x({alias_list}))'  # noqa: S608
        )
    dev = ", ".join(f"${n + k + 1}::{t}[]" for k, t in enumerate(_DEVICE_UPDATE_TYPES))
    # Names come from this module's constants; every value is a parameter.
    update = (
        'UPDATE "devices" AS d SET counter_high = u.h, counter_mask = u.m, last_seen_at = u.s, battery = u.b, '  # noqa: S608
        "updated_at = u.t, nearest_receiver = u.nr, nearest_rssi = u.nq, nearest_counter = u.nc "
        f"FROM unnest({dev}) AS u(id, h, m, s, b, t, nr, nq, nc) WHERE d.device_id = u.id"
    )
    return f"WITH {', '.join(parts)} {update}"


_PG_WRITE: Final = _pg_write_statement()


def _marks(dialect: str, count: int) -> list[str]:
    """Parameter placeholders: qmark for SQLite, $n for asyncpg."""
    return ["?" if dialect == "sqlite" else f"${i}" for i in range(1, count + 1)]


def _insert_sql(dialect: str, table: str, columns: Sequence[str]) -> str:
    """INSERT for executemany. Table and column names are this module's constants; values are parameters."""
    names = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({", ".join(_marks(dialect, len(columns)))})'  # noqa: S608


def view_of(incident: IncidentLike, wearer: str, site: str) -> IncidentView:
    """The command-center view of an incident row."""
    gps = None
    if incident.lat is not None and incident.lon is not None:
        gps = GpsFix(incident.lat, incident.lon, incident.accuracy_m or 0, incident.fix_age_s or 0)
    return IncidentView(
        alert_id=incident.id,
        revision=incident.revision,
        state=AlertState(incident.state),
        event=EventType[incident.event.upper()],
        device_id=incident.device_id,
        wearer=wearer,
        site=site,
        counter=incident.counter,
        device_time=incident.device_time,
        received_at=incident.received_at,
        delayed=incident.delayed,
        test=incident.test,
        battery=incident.battery,
        gps=gps,
        transport=incident.transport,
        acknowledged_by=incident.acknowledged_by,
        acknowledged_at=incident.acknowledged_at,
        updated_at=incident.updated_at,
        short_code=incident.short_code,
        resolution=incident.resolution,
        resolved_by=incident.resolved_by,
        resolved_at=incident.resolved_at,
        location_source=getattr(incident, "location_source", None),
        place=_place_of(incident),
        place_text=getattr(incident, "place_text", None),
        zone=incident.place_zone,
    )


def listed_document(incident: Incident, time_zone: str | None) -> dict[str, object]:
    """An incident as REST lists and the console's live stream show it: its state document (device fetched) and
    its site's time zone."""
    device = incident.device
    document = payloads.state_document(view_of(incident, device.wearer, device.site))
    document["time_zone"] = time_zone
    return document


def _place_of(incident: IncidentLike) -> Place | None:
    if not isinstance(incident, Incident) or incident.location_source is None:
        return None
    return Place(
        incident.place_site, incident.place_building, incident.place_floor, incident.place_room, incident.place_zone
    )


@dataclass
class _Batch:
    """Rows a batch will insert (as tuples), and the outbox items that belong to each signal."""

    signals: list[tuple[Any, ...]] = field(default_factory=list)
    incidents: list[_IncidentRow] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[int, OutboxItem, datetime]] = field(default_factory=list)
    observations: list[tuple[Any, ...]] = field(default_factory=list)
    incident_updates: dict[str, Incident] = field(default_factory=dict)
    ladders: list[tuple[Any, ...]] = field(default_factory=list)
    #: (now, incident id) of ladders due at once (a cancelled incident's ladder stops and tells who it notified).
    wake_ladders: list[tuple[datetime, str]] = field(default_factory=list)

    async def _wake(self, conn: Any) -> None:
        if self.wake_ladders:
            marks = _marks(conn.capabilities.dialect, 2)
            sql = f'UPDATE "ladders" SET "next_at" = {marks[0]} WHERE "incident_id" = {marks[1]}'  # noqa: S608
            await conn.execute_many(sql, self.wake_ladders)

    def change(
        self, index: int, incident: IncidentLike, device: _DeviceRow | Device, kind: str, at: datetime, **detail: Any
    ) -> None:
        """Record an incident change: an event in its log, then its new state and the event on the outbox."""
        event_id = f"{incident.id}:{incident.revision}:{kind}"
        self.events.append((incident.id, event_id, incident.revision, kind, at, json.dumps(detail)))
        view = view_of(incident, device.wearer, device.site)
        state = OutboxItem(
            f"{incident.id}:state:{incident.revision}",
            "state",
            incident.id,
            payloads.state_payload(view),
            True,
            incident.revision,
        )
        event = OutboxItem(
            event_id,
            "event",
            incident.id,
            payloads.event_payload(
                event_id=event_id,
                alert_id=incident.id,
                revision=incident.revision,
                event_type=kind,
                at=at,
                detail=detail,
            ),
            False,
            incident.revision,
        )
        self.outbox.append((index, state, at))
        self.outbox.append((index, event, at))

    def note(self, incident: IncidentLike, kind: str, at: datetime, event_id: str, **detail: Any) -> None:
        """Record an event that changes nothing about the incident (a delivery report): its log and the MQTT event
        stream only, under the incident's current revision."""
        self.events.append((incident.id, event_id, incident.revision, kind, at, json.dumps(detail)))
        payload = payloads.event_payload(
            event_id=event_id, alert_id=incident.id, revision=incident.revision, event_type=kind, at=at, detail=detail
        )
        self.outbox.append((0, OutboxItem(event_id, "event", incident.id, payload, False, incident.revision), at))

    def _outbox_rows(self, gateway_id: str, lease_until: datetime) -> list[tuple[Any, ...]]:
        # Born claimed by this gateway: it publishes them from memory; the lease lets another take over.
        return [
            (
                i.key,
                "mqtt",
                i.alert_id,
                i.kind,
                i.payload,
                i.retain,
                i.revision,
                "pending",
                0,
                gateway_id,
                lease_until,
                at,
            )
            for _, i, at in self.outbox
        ]

    async def write_postgres(
        self, conn: Any, gateway_id: str, lease_until: datetime, devices: list[_DeviceRow]
    ) -> None:
        """Everything in ONE statement: data-modifying CTEs over unnest()ed column arrays (one round trip)."""
        for incident in self.incident_updates.values():
            await incident.save(using_db=conn, update_fields=["state", "revision", "updated_at"])
        await self._wake(conn)
        incidents = [tuple(getattr(i, c) for c in _INCIDENT_COLUMNS) for i in self.incidents]
        device_rows = [_device_update_row(d) for d in devices]
        params: list[Any] = []
        for table_rows, width in (
            (incidents, len(_INCIDENT_COLUMNS)),
            (self.signals, len(_SIGNAL_COLUMNS)),
            (self.events, len(_EVENT_COLUMNS)),
            (self._outbox_rows(gateway_id, lease_until), len(_OUTBOX_COLUMNS)),
            (self.observations, len(_OBSERVATION_COLUMNS)),
            (self.ladders, len(_LADDER_COLUMNS)),
            (device_rows, len(_DEVICE_UPDATE_TYPES)),
        ):
            params.extend([list(col) for col in zip(*table_rows, strict=True)] if table_rows else [[]] * width)
        await conn.execute_query(_PG_WRITE, params)

    async def write(self, conn: Any, gateway_id: str, lease_until: datetime) -> None:
        """Insert everything with one executemany per table (inside the caller's transaction)."""
        dialect = conn.capabilities.dialect
        if self.incidents:
            rows = [tuple(getattr(i, c) for c in _INCIDENT_COLUMNS) for i in self.incidents]
            await conn.execute_many(_insert_sql(dialect, "incidents", _INCIDENT_COLUMNS), rows)
        for incident in self.incident_updates.values():
            await incident.save(using_db=conn, update_fields=["state", "revision", "updated_at"])
        await self._wake(conn)
        if self.signals:
            await conn.execute_many(_insert_sql(dialect, "signals", _SIGNAL_COLUMNS), self.signals)
        if self.events:
            await conn.execute_many(_insert_sql(dialect, "incident_events", _EVENT_COLUMNS), self.events)
        if self.outbox:
            rows = self._outbox_rows(gateway_id, lease_until)
            await conn.execute_many(_insert_sql(dialect, "outbox", _OUTBOX_COLUMNS), rows)
        if self.observations:
            await conn.execute_many(_insert_sql(dialect, "observations", _OBSERVATION_COLUMNS), self.observations)
        if self.ladders:
            await conn.execute_many(_insert_sql(dialect, "ladders", _LADDER_COLUMNS), self.ladders)


class IncidentStore:
    """Transactions over incidents. Every method raises StoreUnavailable when the database fails."""

    def __init__(
        self,
        *,
        gateway_id: str,
        replay_window: int,
        outbox_lease: timedelta,
        escalates: Callable[[str], bool] = lambda site: False,
        zone_of: Callable[[AuthenticatedSignal], str | None] = lambda sig: None,
    ) -> None:
        """escalates(site): whether incidents of this site get an escalation ladder (a policy serves the site).
        zone_of(signal): the zone a press is in as far as its own signal tells (GPS fix, receiver), at once."""
        self._gateway_id = gateway_id
        self._window = replay_window
        self._lease = outbox_lease
        self._escalates = escalates
        self._zone_of = zone_of

    async def commit_signals(self, batch: Sequence[AuthenticatedSignal]) -> list[SignalOutcome]:
        """Decide replays and commit a batch of signals with their incidents, events and outbox rows.

        One transaction for the whole batch (group commit). Device rows are locked in id order, so
        several gateways on one PostgreSQL never interleave on a device and never deadlock.
        """
        try:
            # Shielded: cancelling the caller (shutdown) must not cut a transaction short, which would leave
            # SQLite's connection lock held (tortoise takes it before BEGIN).
            return await asyncio.shield(self._commit_signals(batch))
        except IntegrityError as exc:
            if len(batch) == 1:
                raise StoreUnavailable(f"signal conflicts with stored data: {exc}") from exc
            # One bad row must not refuse its neighbours: commit them one by one, isolating it.
            log.error("batch conflict, committing one by one", signals=len(batch), error=str(exc))
            outcomes: list[SignalOutcome] = []
            for sig in batch:
                try:
                    outcomes.extend(await self._commit_signals([sig]))
                except (BaseORMException, OSError) as one:
                    outcomes.append(_reject(RejectReason.OVERLOADED, f"not stored: {one}"))
            return outcomes
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc

    async def _commit_signals(self, batch: Sequence[AuthenticatedSignal]) -> list[SignalOutcome]:
        outcomes: list[SignalOutcome | None] = [None] * len(batch)
        rows = _Batch()
        device_ids = sorted({s.device.device_id for s in batch})
        async with in_transaction() as conn:
            devices = await _lock_devices(conn, device_ids)
            windows = {d.device_id: ReplayWindow(d.counter_high, d.counter_mask) for d in devices.values()}
            in_batch: dict[tuple[str, int], _Seen] = {}
            open_by_device: dict[str, IncidentLike | None] = {}
            for index, sig in enumerate(batch):
                frame = sig.signed.frame
                device = devices.get(frame.device_id)
                if device is None:
                    outcomes[index] = _reject(RejectReason.UNKNOWN_DEVICE, "device was removed from the registry")
                    continue
                if device.revoked:
                    outcomes[index] = _reject(RejectReason.REVOKED, f"device {device.device_id!r} is revoked")
                    continue
                verdict = windows[device.device_id].check(frame.counter, self._window)
                if verdict is not CounterVerdict.FRESH:
                    seen = await self._seen_before(sig, verdict, in_batch, conn)
                    outcomes[index] = seen
                    if seen.outcome is Outcome.DUPLICATE:
                        _note_nearest(device, sig)
                        rows.observations.append(self._observation(sig, seen.incident_id))
                    continue
                windows[device.device_id] = windows[device.device_id].accept(frame.counter, self._window)
                _note_device(device, sig)
                incident_id: str | None = None
                if frame.event.raises_incident:
                    incident = _new_incident(sig)
                    incident.place_zone = self._zone_of(sig)
                    rows.incidents.append(incident)
                    if self._escalates(device.site):  # no policy, no ladder: the command center alone
                        rows.ladders.append((incident.id, device.site, True, sig.received_at, sig.received_at))
                    open_by_device[device.device_id] = incident
                    incident_id = incident.id
                    rows.change(
                        index, incident, device, "raised", sig.received_at, transport=sig.transport, delayed=sig.delayed
                    )
                elif frame.event is EventType.CANCEL:
                    if device.device_id not in open_by_device:
                        open_by_device[device.device_id] = await _latest_open(device.device_id, conn)
                    cancelled = open_by_device[device.device_id]
                    if cancelled is not None:
                        cancelled.state = AlertState.CANCELLED.value
                        cancelled.revision += 1
                        cancelled.updated_at = sig.received_at
                        if isinstance(cancelled, Incident):
                            rows.incident_updates[cancelled.id] = cancelled
                        open_by_device[device.device_id] = None
                        incident_id = cancelled.id
                        rows.change(index, cancelled, device, "cancelled", sig.received_at, by="wearer")
                        rows.wake_ladders.append((sig.received_at, cancelled.id))
                digest = sig.signed.digest.hex()
                in_batch[(device.device_id, frame.counter)] = _Seen(digest, incident_id, frame.event, sig.transport)
                rows.observations.append(self._observation(sig, incident_id))
                rows.signals.append(
                    (
                        device.device_id,
                        frame.counter,
                        frame.event.name.lower(),
                        digest,
                        sig.signed.frame_bytes,
                        sig.transport,
                        sig.device_time,
                        sig.received_at,
                        incident_id,
                    )
                )
                outcomes[index] = SignalOutcome(Outcome.ACCEPTED, incident_id)
            for device in devices.values():
                w = windows[device.device_id]
                device.counter_high, device.counter_mask = w.high, w.mask
            lease_until = datetime.now(UTC) + self._lease
            if conn.capabilities.dialect == "postgres":
                await rows.write_postgres(conn, self._gateway_id, lease_until, list(devices.values()))
            else:
                await rows.write(conn, self._gateway_id, lease_until)
                await _update_devices(list(devices.values()), conn)
        by_index: dict[int, list[OutboxItem]] = {}
        for index, item, _ in rows.outbox:
            by_index.setdefault(index, []).append(item)
        return [
            SignalOutcome(o.outcome, o.incident_id, o.rejection, tuple(by_index.get(i, ())))
            for i, o in enumerate(outcomes)
            if o is not None
        ]

    def _observation(self, sig: AuthenticatedSignal, incident_id: str | None) -> tuple[Any, ...]:
        frame = sig.signed.frame
        return (
            incident_id,
            frame.device_id,
            frame.counter,
            frame.event.name.lower(),
            sig.transport,
            sig.receiver,
            sig.rssi,
            sig.received_at,
            self._gateway_id,
        )

    async def _seen_before(
        self,
        sig: AuthenticatedSignal,
        verdict: CounterVerdict,
        in_batch: dict[tuple[str, int], _Seen],
        conn: Any,
    ) -> SignalOutcome:
        """A used or too-old counter: the same press again is a retry or another observation, anything else a replay.

        The same press: identical frame bytes (an HTTPS or SMS retry), or, when either side is a BLE
        advert (which carries no signature), the same event (the wearable sends one counter over
        several transports, and every receiver in range hears the advert).
        """
        frame = sig.signed.frame
        previous = in_batch.get((frame.device_id, frame.counter))
        if previous is None:
            row = await Signal.get_or_none(device_id=frame.device_id, counter=frame.counter, using_db=conn)
            if row is not None:
                previous = _Seen(row.frame_digest, row.incident_id, EventType[row.event.upper()], row.transport)
        if previous is not None and (
            previous.digest == sig.signed.digest.hex()
            or (BLE_TRANSPORT in (sig.transport, previous.transport) and previous.event is frame.event)
        ):
            return SignalOutcome(Outcome.DUPLICATE, previous.incident_id)
        why = "was already used by another frame" if verdict is CounterVerdict.SEEN else "is behind the replay window"
        return _reject(RejectReason.REPLAYED, f"counter {frame.counter} {why}")

    async def record_follow_up(
        self, alert_id: str, now: datetime, *, gps: GpsFix | None = None, failure: str | None = None
    ) -> tuple[OutboxItem, ...]:
        """What a BLE GATT follow-up added to an incident: its GPS fix (when it had none) or its failure.

        Each change is an event in the incident's log and on MQTT, with the new state; nothing to say, no change.
        """
        try:
            async with in_transaction() as conn:
                incident = await Incident.filter(id=alert_id).select_for_update().using_db(conn).first()
                if incident is None:
                    return ()
                device = await Device.get(device_id=incident.device_id, using_db=conn)
                rows = _Batch()
                updated = ["revision", "updated_at"]
                if gps is not None and incident.lat is None:
                    incident.lat, incident.lon = gps.lat, gps.lon
                    incident.accuracy_m, incident.fix_age_s = gps.accuracy_m, gps.fix_age_s
                    incident.revision += 1
                    incident.updated_at = now
                    updated += ["lat", "lon", "accuracy_m", "fix_age_s"]
                    rows.change(0, incident, device, "located", now, source="ble-gatt", accuracy_m=gps.accuracy_m)
                if failure is not None:
                    incident.revision += 1
                    incident.updated_at = now
                    rows.change(0, incident, device, "followup-failed", now, reason=failure)
                if not rows.events:
                    return ()
                await incident.save(using_db=conn, update_fields=updated)
                await rows.write(conn, self._gateway_id, now + self._lease)
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return tuple(i for _, i, _ in rows.outbox)

    async def add_note(self, alert_id: str, *, by: str, text: str, now: datetime) -> NoteAdded | None:
        """An operator's note: an event in the incident's log and on the MQTT event stream, at its current revision
        (the incident itself does not change). None when there is no such incident."""
        return await asyncio.shield(self._add_note(alert_id, by, text, now))

    async def _add_note(self, alert_id: str, by: str, text: str, now: datetime) -> NoteAdded | None:
        rows = _Batch()
        try:
            async with in_transaction() as conn:
                incident = await Incident.filter(id=alert_id).using_db(conn).first()
                if incident is None:
                    return None
                # Several notes may share a revision: a random suffix keeps each event id unique (at most 60 chars).
                event_id = f"{incident.id}:{incident.revision}:{NOTE_EVENT}:{uuid.uuid4().hex[:10]}"
                rows.note(incident, NOTE_EVENT, now, event_id, by=by, text=text)
                await rows.write(conn, self._gateway_id, now + self._lease)
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        outbox = tuple(i for _, i, _ in rows.outbox)
        return NoteAdded(event_id, alert_id, incident.revision, now, {"by": by, "text": text}, outbox)

    async def record_location(self, alert_id: str, estimate: Estimate, now: datetime) -> tuple[OutboxItem, ...]:
        """A fused location for an incident: stored and published as "located" when it changes what responders
        read (the place text or the source) or tightens the radius by a quarter; nothing otherwise."""
        return await asyncio.shield(self._record_location(alert_id, estimate, now))

    async def _record_location(self, alert_id: str, estimate: Estimate, now: datetime) -> tuple[OutboxItem, ...]:
        try:
            async with in_transaction() as conn:
                incident = await Incident.filter(id=alert_id).select_for_update().using_db(conn).first()
                if incident is None or not _location_news(incident, estimate):
                    return ()
                device = await Device.get(device_id=incident.device_id, using_db=conn)
                place = estimate.place
                incident.location_source = estimate.source.value
                incident.place_site, incident.place_building = place.site, place.building
                incident.place_floor, incident.place_room, incident.place_zone = place.floor, place.room, place.zone
                incident.place_text = estimate.text[:255]
                incident.location_why = estimate.why[:255]
                if estimate.lat is not None and estimate.lon is not None and estimate.accuracy_m is not None:
                    incident.lat, incident.lon = estimate.lat, estimate.lon
                    incident.accuracy_m = max(1, math.ceil(estimate.accuracy_m))
                    if estimate.source is not LocationSource.GPS:
                        incident.fix_age_s = None
                incident.revision += 1
                incident.updated_at = now
                rows = _Batch()
                rows.change(
                    0,
                    incident,
                    device,
                    "located",
                    now,
                    source=estimate.source.value,
                    accuracy_m=incident.accuracy_m if estimate.accuracy_m is not None else None,
                    place=incident.place_text,
                    why=incident.location_why,
                )
                await incident.save(using_db=conn, update_fields=_LOCATION_FIELDS)
                await rows.write(conn, self._gateway_id, now + self._lease)
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return tuple(i for _, i, _ in rows.outbox)

    async def open_incidents(self) -> list[IncidentView]:
        """Every open incident's current view (republished as retained state after each reconnect)."""
        try:
            incidents = await Incident.filter(state__in=_OPEN_STATES).order_by("received_at").prefetch_related("device")
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return [view_of(i, i.device.wearer, i.device.site) for i in incidents]

    async def latest_incident(self, device_id: str, since: datetime) -> IncidentView | None:
        """The device's most recent incident raised since `since` (what its wearer's display should show)."""
        try:
            incident = (
                await Incident.filter(device_id=device_id, received_at__gte=since)
                .order_by("-received_at")
                .prefetch_related("device")
                .first()
            )
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return None if incident is None else view_of(incident, incident.device.wearer, incident.device.site)

    async def get_incident(self, alert_id: str) -> IncidentView | None:
        incident = await Incident.filter(id=alert_id).prefetch_related("device").first()
        return None if incident is None else view_of(incident, incident.device.wearer, incident.device.site)

    async def observations(self, *, incident_id: str | None = None, device_id: str | None = None) -> list[Observation]:
        """Observations of an incident or a device, oldest first."""
        query = Observation.all()
        if incident_id is not None:
            query = query.filter(incident_id=incident_id)
        if device_id is not None:
            query = query.filter(device_id=device_id)
        return await query.order_by("id")

    # --- outbox -------------------------------------------------------------------------------

    async def claim_outbox(self, *, now: datetime, limit: int, include_own: bool) -> list[OutboxItem]:
        """Claim pending rows whose lease expired (or, at start-up, this gateway's own), oldest first."""
        return await asyncio.shield(self._claim_outbox(now=now, limit=limit, include_own=include_own))

    async def _claim_outbox(self, *, now: datetime, limit: int, include_own: bool) -> list[OutboxItem]:
        try:
            async with in_transaction() as conn:
                claimable = Q(claimed_until__lt=now)
                if include_own:
                    claimable |= Q(claimed_by=self._gateway_id)
                query = OutboxMessage.filter(claimable, status="pending")
                rows = await query.order_by("id").limit(limit).select_for_update(skip_locked=True).using_db(conn)
                if rows:
                    await (
                        OutboxMessage.filter(id__in=[r.id for r in rows])
                        .using_db(conn)
                        .update(claimed_by=self._gateway_id, claimed_until=now + self._lease)
                    )
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return [_item(r) for r in rows]

    async def extend_leases(self, now: datetime) -> None:
        """Keep the rows this gateway still holds (broker down) from being taken over.

        Only leases past half-time are renewed, and rows another transaction has locked (a delivery
        mark) are skipped: both lock in id order, so they never deadlock, and this one never waits.
        """
        await asyncio.shield(self._extend_leases(now))

    async def _extend_leases(self, now: datetime) -> None:
        async with in_transaction() as conn:
            due = (
                await OutboxMessage.filter(
                    status="pending", claimed_by=self._gateway_id, claimed_until__lt=now + self._lease / 2
                )
                .order_by("id")
                .select_for_update(skip_locked=True)
                .using_db(conn)
                .values_list("id", flat=True)
            )
            if due:
                await OutboxMessage.filter(id__in=due).using_db(conn).update(claimed_until=now + self._lease)

    async def mark_delivered(self, keys: Iterable[str], now: datetime) -> None:
        """Record deliveries by idempotency key: rows locked in id order, then one UPDATE."""
        keys = list(keys)
        if keys:
            await asyncio.shield(self._mark_delivered(keys, now))

    async def _mark_delivered(self, keys: list[str], now: datetime) -> None:
        async with in_transaction() as conn:
            ids = (
                await OutboxMessage.filter(key__in=keys)
                .order_by("id")
                .select_for_update()
                .using_db(conn)
                .values_list("id", flat=True)
            )
            await OutboxMessage.filter(id__in=ids).using_db(conn).update(status="done", delivered_at=now)


@dataclass(frozen=True, slots=True)
class _Seen:
    """A used counter as the batch or the signals table knows it: enough to tell the same press from a replay."""

    digest: str
    incident_id: str | None
    event: EventType
    transport: str


def _note_nearest(device: _DeviceRow, sig: AuthenticatedSignal) -> None:
    """The receiver that heard the latest counter loudest is the device's nearest."""
    if sig.receiver is None or sig.rssi is None:
        return
    counter = sig.signed.frame.counter
    if (
        device.nearest_counter is None
        or counter > device.nearest_counter
        or (counter == device.nearest_counter and (device.nearest_rssi is None or sig.rssi > device.nearest_rssi))
    ):
        device.nearest_receiver, device.nearest_rssi, device.nearest_counter = sig.receiver, sig.rssi, counter


def _reject(reason: RejectReason, detail: str) -> SignalOutcome:
    return SignalOutcome(Outcome.REJECTED, rejection=Rejection(reason, detail))


def _note_device(device: _DeviceRow, sig: AuthenticatedSignal) -> None:
    frame = sig.signed.frame
    if device.last_seen_at is None or sig.received_at >= device.last_seen_at:
        device.last_seen_at = sig.received_at
        if frame.battery is not None:
            device.battery = frame.battery
    device.updated_at = sig.received_at
    _note_nearest(device, sig)


def _new_incident(sig: AuthenticatedSignal) -> _IncidentRow:
    frame = sig.signed.frame
    gps = frame.gps
    incident_id = incident_id_for(frame.device_id, frame.counter)
    return _IncidentRow(
        id=incident_id,
        device_id=frame.device_id,
        counter=frame.counter,
        event=frame.event.name.lower(),
        state=AlertState.RAISED.value,
        revision=1,
        device_time=sig.device_time,
        received_at=sig.received_at,
        delayed=sig.delayed,
        test=frame.event is EventType.TEST,
        battery=frame.battery,
        lat=gps.lat if gps else None,
        lon=gps.lon if gps else None,
        accuracy_m=gps.accuracy_m if gps else None,
        fix_age_s=gps.fix_age_s if gps else None,
        transport=sig.transport,
        updated_at=sig.received_at,
        short_code=short_code_for(incident_id),
    )


async def _update_devices(devices: list[_DeviceRow], conn: Any) -> None:
    """Replay windows, last seen and battery of the batch's devices: one executemany."""
    if not devices:
        return
    columns = (
        "counter_high",
        "counter_mask",
        "last_seen_at",
        "battery",
        "updated_at",
        "nearest_receiver",
        "nearest_rssi",
        "nearest_counter",
    )
    marks = _marks(conn.capabilities.dialect, len(columns) + 1)
    sets = ", ".join(f'"{c}" = {m}' for c, m in zip(columns, marks, strict=False))
    sql = f'UPDATE "devices" SET {sets} WHERE "device_id" = {marks[-1]}'  # noqa: S608 - constant names
    rows = [(*_device_update_row(d)[1:], d.device_id) for d in devices]
    await conn.execute_many(sql, rows)


async def _latest_open(device_id: str, conn: Any) -> Incident | None:
    return (
        await Incident.filter(device_id=device_id, state__in=_OPEN_STATES)
        .order_by("-received_at")
        .select_for_update()
        .using_db(conn)
        .first()
    )


_LOCATION_FIELDS: Final = [
    "location_source",
    "place_site",
    "place_building",
    "place_floor",
    "place_room",
    "place_zone",
    "place_text",
    "location_why",
    "lat",
    "lon",
    "accuracy_m",
    "fix_age_s",
    "revision",
    "updated_at",
]
#: A new estimate with the same place and source is news only when its radius shrinks by this share.
_TIGHTER: Final = 0.75


def _location_news(incident: Incident, estimate: Estimate) -> bool:
    if estimate.source is LocationSource.NONE:
        return False  # "unknown" is what the state says already; never replace something known with it
    if estimate.source.value != incident.location_source or estimate.text[:255] != incident.place_text:
        return True
    if estimate.accuracy_m is None or incident.accuracy_m is None:
        return False
    return estimate.accuracy_m < incident.accuracy_m * _TIGHTER


def _item(msg: OutboxMessage) -> OutboxItem:
    return OutboxItem(msg.key, msg.kind, msg.alert_id, bytes(msg.payload), msg.retain, msg.revision)
