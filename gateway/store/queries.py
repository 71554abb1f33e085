"""The REST API's lists: query parsing and opaque cursors (pure), and the keyset-paginated reads behind them.

Parsing never raises: a bad parameter comes back as a `QueryProblem` naming it (the API answers 400
invalid-query). Unknown parameters are ignored. Cursors are opaque to clients: url-safe base64 (no padding) of a
small JSON array whose first element names the list it belongs to, so that a cursor of one list is refused by
another; the rest is the last item's sort key (keyset pagination: a page costs the same at any depth, and rows
added meanwhile never shift or repeat the items of later pages).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from tortoise.expressions import Q

from gateway.core.incident import AlertState
from gateway.store.models import Device, Incident, IncidentEvent

#: Items per page unless `limit` says otherwise, and the most it may say: 200 incidents are about 200 kB of JSON,
#: a screenful many times over, and one indexed read.
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
#: A certificate that ends within this is "expiring": a month leaves time to issue and install a new one.
EXPIRING_WITHIN: Final = timedelta(days=30)
#: Longest value of a filter or cursor read: ids are at most 64 characters, cursors under 150.
MAX_PARAM_CHARS: Final = 256
#: Longest `q` (a device id or a part of a wearer's name).
MAX_SEARCH_CHARS: Final = 128
#: `state=open`: every state that still needs a person.
OPEN: Final = "open"
#: Event types as the MQTT event stream allows them (docs/asyncapi.yaml, AlertEvent.type).
EVENT_TYPE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,31}")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_OPEN_STATES: Final = tuple(s for s in AlertState if s.is_open)
#: A query string decodes '+' to a space: "...T10:00:00 02:00" is "...T10:00:00+02:00" typed without %2B.
_SPACED_OFFSET: Final = re.compile(r"(T?[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?) ([0-9]{2}:?[0-9]{2})$")

#: The cursor kinds, one per sort order.
_INCIDENTS: Final = "i"
_EVENTS: Final = "e"
_DEVICES: Final = "d"

#: Query parameters as the request has them: every value of each name (a name given twice is refused).
Params = Mapping[str, Sequence[str]]


class QueryProblem(NamedTuple):
    """A query parameter the API refuses."""

    parameter: str
    """Its name, as in the URL."""
    detail: str
    """One sentence for the client, naming the parameter."""


class CertificateStatus(enum.StrEnum):
    """Where a device's certificate stands (the console's fleet view, the `status` filter)."""

    VALID = "valid"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    REVOKED = "revoked"


def certificate_status(not_after: datetime, revoked_at: datetime | None, now: datetime) -> CertificateStatus:
    """Revoked wins over expired, expired over expiring (within EXPIRING_WITHIN of `not_after`)."""
    if revoked_at is not None:
        return CertificateStatus.REVOKED
    if not_after < now:
        return CertificateStatus.EXPIRED
    if not_after < now + EXPIRING_WITHIN:
        return CertificateStatus.EXPIRING
    return CertificateStatus.VALID


class IncidentCursor(NamedTuple):
    """Where a page of incidents (newest first) ends: the last item's sort key."""

    received_at: datetime
    alert_id: str


@dataclass(frozen=True, slots=True)
class IncidentQuery:
    """`GET /v1/incidents`: filters (None or empty: any), the cursor and the page size."""

    states: tuple[AlertState, ...] = ()
    site: str | None = None
    device: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: IncidentCursor | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class EventQuery:
    """`GET /v1/events` and an incident's timeline: filters, the last event id seen, and the page size."""

    types: tuple[str, ...] = ()
    incident: str | None = None
    since: datetime | None = None
    after: int | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """`GET /v1/devices`: filters, the last device id seen, and the page size."""

    site: str | None = None
    statuses: tuple[CertificateStatus, ...] = ()
    text: str | None = None
    after: str | None = None
    limit: int = DEFAULT_LIMIT


# --- cursors ------------------------------------------------------------------------------------------------------


def encode_cursor(kind: str, *key: str | int) -> str:
    """An opaque cursor: url-safe base64, without padding, of the JSON array [kind, *key]."""
    raw = json.dumps([kind, *key], separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(kind: str, cursor: str) -> list[Any] | None:
    """The key of a cursor of `kind`, or None for anything else (never raises)."""
    if not 0 < len(cursor) <= MAX_PARAM_CHARS or not cursor.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    if not isinstance(value, list) or not value or value[0] != kind:
        return None
    return value[1:]


def incident_cursor(received_at: datetime, alert_id: str) -> str:
    """The cursor after an incident: its arrival to the microsecond (what the database keeps) and its id."""
    micros = (received_at - _EPOCH) // timedelta(microseconds=1)
    return encode_cursor(_INCIDENTS, micros, alert_id)


def parse_incident_cursor(cursor: str) -> IncidentCursor | None:
    key = decode_cursor(_INCIDENTS, cursor)
    if key is None or len(key) != 2:
        return None
    micros, alert_id = key
    if not _is_int(micros) or not isinstance(alert_id, str) or not 0 < len(alert_id) <= MAX_PARAM_CHARS:
        return None
    try:
        received_at = _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None
    return IncidentCursor(received_at, alert_id)


def event_cursor(event_id: int) -> str:
    """The cursor after an event: its row id (events are listed in id order)."""
    return encode_cursor(_EVENTS, event_id)


def parse_event_cursor(cursor: str) -> int | None:
    key = decode_cursor(_EVENTS, cursor)
    if key is None or len(key) != 1 or not _is_int(key[0]) or not 0 <= key[0] < 2**63:
        return None
    return int(key[0])


def device_cursor(device_id: str) -> str:
    """The cursor after a device: its id (devices are listed in id order)."""
    return encode_cursor(_DEVICES, device_id)


def parse_device_cursor(cursor: str) -> str | None:
    key = decode_cursor(_DEVICES, cursor)
    if key is None or len(key) != 1 or not isinstance(key[0], str) or not 0 < len(key[0]) <= MAX_PARAM_CHARS:
        return None
    return key[0]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- parameters ---------------------------------------------------------------------------------------------------


def single(params: Params, name: str) -> str | QueryProblem | None:
    """The one value of `name`, or None when absent; given twice, or too long, is a problem."""
    values = params.get(name, ())
    if not values:
        return None
    if len(values) > 1:
        return QueryProblem(name, f"{name} is given more than once")
    value = values[0]
    if len(value) > MAX_PARAM_CHARS:
        return QueryProblem(name, f"{name} is longer than {MAX_PARAM_CHARS} characters")
    return value


def parse_limit(raw: str | None) -> int | QueryProblem:
    """`limit`: 1 to MAX_LIMIT, DEFAULT_LIMIT when absent."""
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        return QueryProblem("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def parse_time(name: str, raw: str | None) -> datetime | QueryProblem | None:
    """An RFC 3339 time with its offset (2026-11-21T09:14:03Z), in UTC; None when absent."""
    if raw is None:
        return None
    text = _SPACED_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or moment.utcoffset() is None:
        return QueryProblem(name, f"{name} must be an RFC 3339 time with an offset, e.g. 2026-11-21T09:14:03Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        return QueryProblem(name, f"{name} is out of range")


def parse_states(raw: str | None) -> tuple[AlertState, ...] | QueryProblem:
    """`state`: a comma list of states and `open` (every open state); empty when absent."""
    if raw is None:
        return ()
    found: list[AlertState] = []
    for part in raw.split(","):
        word = part.strip()
        if word == OPEN:
            found.extend(_OPEN_STATES)
            continue
        try:
            found.append(AlertState(word))
        except ValueError:
            known = ", ".join([*(s.value for s in AlertState), OPEN])
            return QueryProblem("state", f"state {word[:40]!r} is not one of {known}")
    return tuple(dict.fromkeys(found))


def parse_event_types(raw: str | None) -> tuple[str, ...] | QueryProblem:
    """`type`: a comma list of event types (raised, note, ...); empty when absent."""
    if raw is None:
        return ()
    found: list[str] = []
    for part in raw.split(","):
        word = part.strip()
        if EVENT_TYPE.fullmatch(word) is None:
            return QueryProblem("type", f"type {word[:40]!r} is not an event type (lower case, e.g. raised,note)")
        found.append(word)
    return tuple(dict.fromkeys(found))


def parse_certificate_statuses(raw: str | None) -> tuple[CertificateStatus, ...] | QueryProblem:
    """`status`: a comma list of certificate statuses; empty when absent."""
    if raw is None:
        return ()
    found: list[CertificateStatus] = []
    for part in raw.split(","):
        try:
            found.append(CertificateStatus(part.strip()))
        except ValueError:
            known = ", ".join(CertificateStatus)
            return QueryProblem("status", f"status {part.strip()[:40]!r} is not one of {known}")
    return tuple(dict.fromkeys(found))


def _identifier(name: str, raw: str | None) -> str | QueryProblem | None:
    if raw is not None and not raw.strip():
        return QueryProblem(name, f"{name} must not be empty")
    return raw


def _values(params: Params, names: Sequence[str]) -> dict[str, str | None] | QueryProblem:
    values: dict[str, str | None] = {}
    for name in names:
        value = single(params, name)
        if isinstance(value, QueryProblem):
            return value
        values[name] = value
    return values


_BAD_CURSOR: Final = "cursor is not one of this list's cursors (pass next_cursor as it was given)"


def parse_incident_query(params: Params) -> IncidentQuery | QueryProblem:
    """`GET /v1/incidents`'s parameters: state, site, device, since, until, cursor, limit."""
    values = _values(params, ("state", "site", "device", "since", "until", "cursor", "limit"))
    if isinstance(values, QueryProblem):
        return values
    states = parse_states(values["state"])
    if isinstance(states, QueryProblem):
        return states
    site = _identifier("site", values["site"])
    if isinstance(site, QueryProblem):
        return site
    device = _identifier("device", values["device"])
    if isinstance(device, QueryProblem):
        return device
    since = parse_time("since", values["since"])
    if isinstance(since, QueryProblem):
        return since
    until = parse_time("until", values["until"])
    if isinstance(until, QueryProblem):
        return until
    limit = parse_limit(values["limit"])
    if isinstance(limit, QueryProblem):
        return limit
    after = None
    if values["cursor"] is not None:
        after = parse_incident_cursor(values["cursor"])
        if after is None:
            return QueryProblem("cursor", _BAD_CURSOR)
    return IncidentQuery(states, site, device, since, until, after, limit)


def parse_event_query(params: Params, *, filters: bool = True) -> EventQuery | QueryProblem:
    """`GET /v1/events`'s parameters: type, incident, since, cursor, limit; only cursor and limit without
    `filters` (an incident's timeline)."""
    names = ("type", "incident", "since", "cursor", "limit") if filters else ("cursor", "limit")
    values = _values(params, names)
    if isinstance(values, QueryProblem):
        return values
    types = parse_event_types(values.get("type"))
    if isinstance(types, QueryProblem):
        return types
    incident = _identifier("incident", values.get("incident"))
    if isinstance(incident, QueryProblem):
        return incident
    since = parse_time("since", values.get("since"))
    if isinstance(since, QueryProblem):
        return since
    limit = parse_limit(values["limit"])
    if isinstance(limit, QueryProblem):
        return limit
    after = None
    if values["cursor"] is not None:
        after = parse_event_cursor(values["cursor"])
        if after is None:
            return QueryProblem("cursor", _BAD_CURSOR)
    return EventQuery(types, incident, since, after, limit)


def parse_device_query(params: Params) -> DeviceQuery | QueryProblem:
    """`GET /v1/devices`'s parameters: site, status, q, cursor, limit."""
    values = _values(params, ("site", "status", "q", "cursor", "limit"))
    if isinstance(values, QueryProblem):
        return values
    site = _identifier("site", values["site"])
    if isinstance(site, QueryProblem):
        return site
    statuses = parse_certificate_statuses(values["status"])
    if isinstance(statuses, QueryProblem):
        return statuses
    text = values["q"].strip() if values["q"] is not None else None
    if text is not None and not 0 < len(text) <= MAX_SEARCH_CHARS:
        return QueryProblem("q", f"q must be 1 to {MAX_SEARCH_CHARS} characters")
    limit = parse_limit(values["limit"])
    if isinstance(limit, QueryProblem):
        return limit
    after = None
    if values["cursor"] is not None:
        after = parse_device_cursor(values["cursor"])
        if after is None:
            return QueryProblem("cursor", _BAD_CURSOR)
    return DeviceQuery(site, statuses, text, after, limit)


# --- reads --------------------------------------------------------------------------------------------------------


class IncidentPage(NamedTuple):
    """One page of incidents (device rows fetched) and the cursor of the next, None on the last page."""

    items: list[Incident]
    next_cursor: str | None


class EventPage(NamedTuple):
    items: list[IncidentEvent]
    next_cursor: str | None


class DevicePage(NamedTuple):
    items: list[Device]
    next_cursor: str | None


async def incident_page(query: IncidentQuery) -> IncidentPage:
    """Incidents newest first (received_at, then id, both descending), from after the cursor."""
    rows = Incident.all()
    if query.states:
        rows = rows.filter(state__in=[s.value for s in query.states])
    if query.site is not None:
        rows = rows.filter(device__site=query.site)
    if query.device is not None:
        rows = rows.filter(device_id=query.device)
    if query.since is not None:
        rows = rows.filter(received_at__gte=query.since)
    if query.until is not None:
        rows = rows.filter(received_at__lt=query.until)
    if query.after is not None:
        at, alert_id = query.after
        rows = rows.filter(Q(received_at__lt=at) | Q(received_at=at, id__lt=alert_id))
    found = await rows.order_by("-received_at", "-id").limit(query.limit + 1).prefetch_related("device")
    if len(found) <= query.limit:
        return IncidentPage(found, None)
    last = found[query.limit - 1]
    return IncidentPage(found[: query.limit], incident_cursor(last.received_at, last.id))


async def event_page(query: EventQuery) -> EventPage:
    """Incident events oldest first (by id), from after the cursor."""
    rows = IncidentEvent.all()
    if query.types:
        rows = rows.filter(type__in=list(query.types))
    if query.incident is not None:
        rows = rows.filter(incident_id=query.incident)
    if query.since is not None:
        rows = rows.filter(at__gte=query.since)
    if query.after is not None:
        rows = rows.filter(id__gt=query.after)
    found = await rows.order_by("id").limit(query.limit + 1)
    if len(found) <= query.limit:
        return EventPage(found, None)
    return EventPage(found[: query.limit], event_cursor(int(found[query.limit - 1].id)))


def _status_filter(status: CertificateStatus, now: datetime) -> Q:
    """The rows `certificate_status` gives `status` at `now`."""
    if status is CertificateStatus.REVOKED:
        return Q(revoked_at__isnull=False)
    soon = now + EXPIRING_WITHIN
    if status is CertificateStatus.EXPIRED:
        return Q(revoked_at__isnull=True, not_after__lt=now)
    if status is CertificateStatus.EXPIRING:
        return Q(revoked_at__isnull=True, not_after__gte=now, not_after__lt=soon)
    return Q(revoked_at__isnull=True, not_after__gte=soon)


async def device_page(query: DeviceQuery, now: datetime) -> DevicePage:
    """Devices by id, from after the cursor; `status` is judged at `now`."""
    rows = Device.all()
    if query.site is not None:
        rows = rows.filter(site=query.site)
    if query.statuses:
        rows = rows.filter(Q(*(_status_filter(s, now) for s in query.statuses), join_type=Q.OR))
    if query.text is not None:
        rows = rows.filter(Q(device_id__icontains=query.text) | Q(wearer__icontains=query.text))
    if query.after is not None:
        rows = rows.filter(device_id__gt=query.after)
    found = await rows.order_by("device_id").limit(query.limit + 1)
    if len(found) <= query.limit:
        return DevicePage(found, None)
    return DevicePage(found[: query.limit], device_cursor(found[query.limit - 1].device_id))


async def open_incidents_by_site() -> Counter[str]:
    """How many open incidents each site has (by the site of the incident's device)."""
    sites = await Incident.filter(state__in=[s.value for s in _OPEN_STATES]).values_list("device__site", flat=True)
    return Counter(str(s) for s in sites)


__all__ = [
    "DEFAULT_LIMIT",
    "EXPIRING_WITHIN",
    "MAX_LIMIT",
    "CertificateStatus",
    "DevicePage",
    "DeviceQuery",
    "EventPage",
    "EventQuery",
    "IncidentCursor",
    "IncidentPage",
    "IncidentQuery",
    "QueryProblem",
    "certificate_status",
    "decode_cursor",
    "device_cursor",
    "device_page",
    "encode_cursor",
    "event_cursor",
    "event_page",
    "incident_cursor",
    "incident_page",
    "open_incidents_by_site",
    "parse_device_query",
    "parse_event_query",
    "parse_incident_query",
    "parse_limit",
    "parse_time",
]
