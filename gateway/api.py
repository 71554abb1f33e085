"""The REST API for command centers and integrators: incidents and their lists, timelines, notes, acknowledge and
resolve, and every incident event.

Callers are authenticated and checked by gateway.console.access (bearer tokens for machines, the console's session
cookie with its CSRF token for people); who acted is recorded. Every refusal is problem+json (RFC 9457), like the
signal endpoint's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aiohttp import web

from gateway.commandcenter.payloads import event_document, format_utc, note_text_ok, state_document
from gateway.console.access import Access, Principal
from gateway.console.auth import Action
from gateway.console.store import audit
from gateway.core.ladder import ResolveReason
from gateway.errors import StoreUnavailable
from gateway.escalation.engine import DirectoryCache, EscalationEngine, ResolveResult
from gateway.escalation.sender import mask_phone
from gateway.ingest.http import problem
from gateway.location.model import Estimate, LocationSource, Place
from gateway.location.pidf import pidf_lo
from gateway.observability import Metrics
from gateway.store.incidents import NOTE_EVENT, AckResult, IncidentStore, OutboxItem, listed_document
from gateway.store.models import Incident, IncidentEvent, Notification
from gateway.store.queries import (
    QueryProblem,
    event_page,
    incident_page,
    parse_event_query,
    parse_incident_query,
)

log = structlog.get_logger(__name__)

#: A note is for people: a few lines, not a document.
MAX_NOTE_CHARS: Final = 500
MAX_BODY_BYTES: Final = 4096
#: RFC 4119's media type for a PIDF document (with location objects).
PIDF_TYPE: Final = "application/pidf+xml"
#: The incident id column's width.
MAX_ID_CHARS: Final = 36
#: A client told the database is down retries after this many seconds.
RETRY_AFTER_S: Final = 2


@dataclass(frozen=True, slots=True)
class ApiDeps:
    access: Access
    store: IncidentStore
    engine: EscalationEngine
    metrics: Metrics
    #: The escalation directory: wearers' notes and emergency contacts.
    directory: DirectoryCache
    #: The IANA time zone of a site (the site map's, else the gateway's default), or None.
    time_zone_of: Callable[[str], str | None]
    #: Hands committed outbox rows (a note's MQTT event) to the publisher.
    publish: Callable[[Sequence[OutboxItem]], None]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class IncidentApi:
    """`/v1/incidents` and `/v1/incidents/{id}` with its events, notes, ack and resolve; `/v1/events`."""

    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps

    def routes(self) -> list[web.RouteDef]:
        view = self._deps.access.guard(Action.VIEW)
        return [
            web.get("/v1/incidents", view(self.list_incidents)),
            web.get("/v1/events", view(self.list_events)),
            web.get("/v1/incidents/{alert_id}", self._authorised(Action.VIEW, self.get_incident)),
            web.get("/v1/incidents/{alert_id}/events", self._authorised(Action.VIEW, self.get_timeline)),
            web.post("/v1/incidents/{alert_id}/notes", self._authorised(Action.ACKNOWLEDGE, self.add_note)),
            web.get("/v1/incidents/{alert_id}/location.pidf", self._authorised(Action.VIEW, self.get_pidf)),
            web.post("/v1/incidents/{alert_id}/ack", self._authorised(Action.ACKNOWLEDGE, self.acknowledge)),
            web.post("/v1/incidents/{alert_id}/resolve", self._authorised(Action.RESOLVE, self.resolve)),
        ]

    def _authorised(
        self, action: Action, handler: Callable[[web.Request, Principal], Awaitable[web.Response]]
    ) -> Handler:
        async def checked(request: web.Request, principal: Principal) -> web.StreamResponse:
            alert_id = request.match_info.get("alert_id", "")
            if not _known_id(alert_id):
                return problem(404, "not-found", f"no incident {alert_id[:40]}")
            return await handler(request, principal)

        return self._deps.access.guard(action)(checked)

    def _listed(self, incident: Incident) -> dict[str, object]:
        return listed_document(incident, self._deps.time_zone_of(incident.device.site))

    async def list_incidents(self, request: web.Request, client: Principal) -> web.Response:
        """Incidents newest first (by arrival), filtered, a page at a time."""
        query = parse_incident_query(query_params(request))
        if isinstance(query, QueryProblem):
            return invalid_query(query)
        page = await incident_page(query)
        return web.json_response({"items": [self._listed(i) for i in page.items], "next_cursor": page.next_cursor})

    async def list_events(self, request: web.Request, client: Principal) -> web.Response:
        """Every incident's events, oldest first, filtered, a page at a time."""
        query = parse_event_query(query_params(request))
        if isinstance(query, QueryProblem):
            return invalid_query(query)
        page = await event_page(query)
        return web.json_response({"items": [_event_item(e) for e in page.items], "next_cursor": page.next_cursor})

    async def get_timeline(self, request: web.Request, client: Principal) -> web.Response:
        """One incident's events, oldest first, a page at a time."""
        alert_id = request.match_info["alert_id"]
        query = parse_event_query(query_params(request), filters=False)
        if isinstance(query, QueryProblem):
            return invalid_query(query)
        if not await Incident.exists(id=alert_id):
            return problem(404, "not-found", f"no incident {alert_id}")
        page = await event_page(dataclasses.replace(query, incident=alert_id))
        return web.json_response({"items": [_event_item(e) for e in page.items], "next_cursor": page.next_cursor})

    async def add_note(self, request: web.Request, client: Principal) -> web.Response:
        """An operator's note on the timeline (and the MQTT event stream); the incident's state does not change."""
        body = await json_body(request)
        if isinstance(body, web.Response):
            return body
        text = body.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_NOTE_CHARS or not note_text_ok(text):
            return problem(
                422,
                "invalid-note",
                f"text must be 1 to {MAX_NOTE_CHARS} characters, not only spaces (newlines and tabs allowed, "
                "no other control characters)",
            )
        operator = _acting(body, client)
        if operator is None:
            return problem(422, "invalid-operator", "operator must be 1 to 64 characters")
        alert_id = request.match_info["alert_id"]
        try:
            added = await self._deps.store.add_note(alert_id, by=operator, text=text, now=datetime.now(UTC))
        except StoreUnavailable as exc:
            log.error("note not stored", alert_id=alert_id, error=str(exc))
            return problem(503, "store-unavailable", "the note was not stored; retry", retry_after=RETRY_AFTER_S)
        if added is None:
            return problem(404, "not-found", f"no incident {alert_id}")
        self._deps.publish(added.outbox)
        await audit(client.name, "incident.note", alert_id, via=client.via, chars=len(text))
        log.info("note", alert_id=alert_id, operator=operator, chars=len(text))
        note = event_document(added.event_id, alert_id, added.revision, NOTE_EVENT, added.at, added.detail)
        return web.json_response(note, status=201)

    def _wearer_info(self, device_id: str, wearer: str) -> dict[str, Any]:
        """What responders should know about the wearer: the escalation directory's notes and emergency contacts."""
        info = self._deps.directory.directory.wearer(device_id)
        if info is None:
            return {"name": wearer, "notes": "", "contacts": []}
        return {
            "name": info.name or wearer,
            "notes": info.notes,
            "contacts": [{"name": c.name, "phone": c.phone, "relation": c.relation} for c in info.contacts],
        }

    async def get_incident(self, request: web.Request, client: Principal) -> web.Response:
        alert_id = request.match_info["alert_id"]
        view = await self._deps.store.get_incident(alert_id)
        if view is None:
            return problem(404, "not-found", f"no incident {alert_id}")
        events = await IncidentEvent.filter(incident_id=alert_id).order_by("id")
        sends = await Notification.filter(incident_id=alert_id).order_by("id")
        document: dict[str, Any] = state_document(view)
        document["time_zone"] = self._deps.time_zone_of(view.site)
        document["wearer_info"] = self._wearer_info(view.device_id, view.wearer)
        document["events"] = [
            {"revision": e.revision, "type": e.type, "at": format_utc(e.at), "detail": e.detail} for e in events
        ]
        document["notifications"] = [
            {
                "step": n.step,
                "channel": n.channel,
                "purpose": n.purpose,
                "to": n.target_name,
                "phone": mask_phone(n.phone),
                "status": n.status,
                "attempts": n.attempts,
                "error": n.error,
                "created_at": format_utc(n.created_at),
                "updated_at": format_utc(n.updated_at),
            }
            for n in sends
        ]
        return web.json_response(document)

    async def get_pidf(self, request: web.Request, client: Principal) -> web.Response:
        """The incident's location as PIDF-LO (RFC 4119, RFC 5491 shapes), for emergency-services systems."""
        alert_id = request.match_info["alert_id"]
        incident = await Incident.get_or_none(id=alert_id)
        if incident is None:
            return problem(404, "not-found", f"no incident {alert_id}")
        source = LocationSource(incident.location_source) if incident.location_source else LocationSource.GPS
        has_position = incident.lat is not None and incident.lon is not None
        if not has_position and incident.location_source is None:
            source = LocationSource.NONE
        estimate = Estimate(
            lat=incident.lat,
            lon=incident.lon,
            accuracy_m=float(incident.accuracy_m) if incident.accuracy_m else None,
            source=source,
            place=Place(
                incident.place_site,
                incident.place_building,
                incident.place_floor,
                incident.place_room,
                incident.place_zone,
            ),
            text=incident.place_text or "",
            why=incident.location_why or "",
            at=incident.device_time,
        )
        document = pidf_lo(
            estimate,
            entity=f"pres:{incident.device_id}@panic-gateway",
            device_id=incident.device_id,
            at=incident.updated_at,
        )
        return web.Response(text=document, content_type=PIDF_TYPE)

    async def acknowledge(self, request: web.Request, client: Principal) -> web.Response:
        body = await json_body(request)
        if isinstance(body, web.Response):
            return body
        note = body.get("note", "")
        if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
            return problem(422, "invalid-note", f"note must be text of at most {MAX_NOTE_CHARS} characters")
        operator = _acting(body, client)
        if operator is None:
            return problem(422, "invalid-operator", "operator must be 1 to 64 characters")
        alert_id = request.match_info["alert_id"]
        outcome = await self._deps.engine.acknowledge(alert_id, by=operator, via="rest", note=note)
        await audit(client.name, "incident.acknowledge", alert_id, via=client.via, result=outcome.result.value)
        self._deps.metrics.acks.labels("rest", outcome.result.value).inc()
        log.info("acknowledgement", alert_id=alert_id, operator=operator, via="rest", result=outcome.result.value)
        if outcome.result is AckResult.NOT_FOUND:
            return problem(404, "not-found", f"no incident {alert_id}")
        if outcome.result is AckResult.REFUSED:
            state = outcome.state.value if outcome.state else "closed"
            return problem(409, "incident-closed", f"incident {alert_id} is {state}: nothing to acknowledge")
        return web.json_response({"alert_id": alert_id, "result": outcome.result.value, "state": "acknowledged"})

    async def resolve(self, request: web.Request, client: Principal) -> web.Response:
        body = await json_body(request)
        if isinstance(body, web.Response):
            return body
        reasons = ", ".join(r.value for r in ResolveReason)
        try:
            reason = ResolveReason(str(body.get("reason")))
        except ValueError:
            return problem(422, "invalid-reason", f"reason must be one of {reasons}")
        note = body.get("note", "")
        if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
            return problem(422, "invalid-note", f"note must be text of at most {MAX_NOTE_CHARS} characters")
        operator = _acting(body, client)
        if operator is None:
            return problem(422, "invalid-operator", "operator must be 1 to 64 characters")
        alert_id = request.match_info["alert_id"]
        outcome = await self._deps.engine.resolve(alert_id, reason=reason, by=operator, note=note)
        await audit(client.name, "incident.resolve", alert_id, via=client.via, reason=reason.value)
        log.info("resolution", alert_id=alert_id, operator=operator, reason=reason.value, result=outcome.result.value)
        if outcome.result is ResolveResult.NOT_FOUND:
            return problem(404, "not-found", f"no incident {alert_id}")
        if outcome.result is ResolveResult.ALREADY:
            return problem(409, "already-resolved", f"incident {alert_id} is already resolved")
        return web.json_response({"alert_id": alert_id, "result": "resolved", "reason": reason.value})


def _event_item(event: IncidentEvent) -> dict[str, object]:
    """An incident event as lists show it: the MQTT `alertEvent` document."""
    return event_document(event.event_id, event.incident_id, event.revision, event.type, event.at, event.detail)


def query_params(request: web.Request) -> Mapping[str, Sequence[str]]:
    """Every value of each query parameter (a parameter given twice is refused by the parsers)."""
    query = request.query
    return {name: query.getall(name) for name in query}


def invalid_query(refused: QueryProblem) -> web.Response:
    """400 invalid-query, naming the parameter."""
    return problem(400, "invalid-query", refused.detail)


def _acting(body: dict[str, Any], client: Principal) -> str | None:
    """Who acts: a signed-in operator is themselves; a machine may name the person at its desk ("operator")."""
    if client.via == "session":
        return client.name
    operator = body.get("operator", client.name)
    if not isinstance(operator, str) or not 1 <= len(operator.strip()) <= 64:
        return None
    return operator.strip()


def _known_id(alert_id: str) -> bool:
    """Incident ids are UUIDs (36 characters); anything longer cannot name one."""
    return 1 <= len(alert_id) <= MAX_ID_CHARS


async def json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return problem(413, "oversized", f"body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    if not raw:
        return {}
    if request.content_type != "application/json":
        return problem(415, "unsupported-media-type", "send application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return problem(400, "invalid-json", "the body is not JSON")
    if not isinstance(body, dict):
        return problem(400, "invalid-json", "the body must be a JSON object")
    return body
