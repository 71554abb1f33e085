"""The REST API for command centers and integrators: incidents, their timeline, acknowledge and resolve.

Machine clients authenticate with a bearer token from `[api] tokens` (its name is recorded as who acted). Every
refusal is problem+json (RFC 9457), like the signal endpoint's.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiohttp import web

from gateway.commandcenter.payloads import format_utc, state_document
from gateway.config import ApiSettings
from gateway.core.ladder import ResolveReason
from gateway.escalation.engine import EscalationEngine, ResolveResult
from gateway.escalation.sender import mask_phone
from gateway.ingest.http import problem
from gateway.location.model import Estimate, LocationSource, Place
from gateway.location.pidf import pidf_lo
from gateway.observability import Metrics
from gateway.store.incidents import AckResult, IncidentStore
from gateway.store.models import Incident, IncidentEvent, Notification

log = structlog.get_logger(__name__)

#: A note is for people: a few lines, not a document.
MAX_NOTE_CHARS: Final = 500
MAX_BODY_BYTES: Final = 4096
#: RFC 4119's media type for a PIDF document (with location objects).
PIDF_TYPE: Final = "application/pidf+xml"
#: The incident id column's width.
MAX_ID_CHARS: Final = 36


@dataclass(frozen=True, slots=True)
class ApiDeps:
    settings: ApiSettings
    store: IncidentStore
    engine: EscalationEngine
    metrics: Metrics


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class IncidentApi:
    """`/v1/incidents/{id}`, `/v1/incidents/{id}/ack`, `/v1/incidents/{id}/resolve`."""

    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps
        self._tokens = [(name, token.get_secret_value().encode()) for name, token in deps.settings.tokens.items()]

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/incidents/{alert_id}", self._authorised(self.get_incident)),
            web.get("/v1/incidents/{alert_id}/location.pidf", self._authorised(self.get_pidf)),
            web.post("/v1/incidents/{alert_id}/ack", self._authorised(self.acknowledge)),
            web.post("/v1/incidents/{alert_id}/resolve", self._authorised(self.resolve)),
        ]

    def _client(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        offered = token.strip().encode()
        found = None
        for name, secret in self._tokens:  # compare with every token: the time does not tell which one matched
            if hmac.compare_digest(offered, secret):
                found = name
        return found

    def _authorised(self, handler: Callable[[web.Request, str], Awaitable[web.Response]]) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            client = self._client(request)
            if client is None:
                log.info("API request refused: no valid token", path=request.path, peer=request.remote)
                response = problem(401, "unauthorized", "send Authorization: Bearer <token> with a configured token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="panic-gateway"'
                return response
            alert_id = request.match_info.get("alert_id", "")
            if not _known_id(alert_id):
                return problem(404, "not-found", f"no incident {alert_id[:40]}")
            return await handler(request, client)

        return checked

    async def get_incident(self, request: web.Request, client: str) -> web.Response:
        alert_id = request.match_info["alert_id"]
        view = await self._deps.store.get_incident(alert_id)
        if view is None:
            return problem(404, "not-found", f"no incident {alert_id}")
        events = await IncidentEvent.filter(incident_id=alert_id).order_by("id")
        sends = await Notification.filter(incident_id=alert_id).order_by("id")
        document: dict[str, Any] = state_document(view)
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

    async def get_pidf(self, request: web.Request, client: str) -> web.Response:
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

    async def acknowledge(self, request: web.Request, client: str) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        note = body.get("note", "")
        operator = body.get("operator", client)
        if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
            return problem(422, "invalid-note", f"note must be text of at most {MAX_NOTE_CHARS} characters")
        if not isinstance(operator, str) or not 1 <= len(operator.strip()) <= 64:
            return problem(422, "invalid-operator", "operator must be 1 to 64 characters")
        alert_id = request.match_info["alert_id"]
        outcome = await self._deps.engine.acknowledge(alert_id, by=operator.strip(), via="rest", note=note)
        self._deps.metrics.acks.labels("rest", outcome.result.value).inc()
        log.info("acknowledgement", alert_id=alert_id, operator=operator, via="rest", result=outcome.result.value)
        if outcome.result is AckResult.NOT_FOUND:
            return problem(404, "not-found", f"no incident {alert_id}")
        if outcome.result is AckResult.REFUSED:
            state = outcome.state.value if outcome.state else "closed"
            return problem(409, "incident-closed", f"incident {alert_id} is {state}: nothing to acknowledge")
        return web.json_response({"alert_id": alert_id, "result": outcome.result.value, "state": "acknowledged"})

    async def resolve(self, request: web.Request, client: str) -> web.Response:
        body = await _json_body(request)
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
        operator = body.get("operator", client)
        if not isinstance(operator, str) or not 1 <= len(operator.strip()) <= 64:
            return problem(422, "invalid-operator", "operator must be 1 to 64 characters")
        alert_id = request.match_info["alert_id"]
        outcome = await self._deps.engine.resolve(alert_id, reason=reason, by=operator.strip(), note=note)
        log.info("resolution", alert_id=alert_id, operator=operator, reason=reason.value, result=outcome.result.value)
        if outcome.result is ResolveResult.NOT_FOUND:
            return problem(404, "not-found", f"no incident {alert_id}")
        if outcome.result is ResolveResult.ALREADY:
            return problem(409, "already-resolved", f"incident {alert_id} is already resolved")
        return web.json_response({"alert_id": alert_id, "result": "resolved", "reason": reason.value})


def _known_id(alert_id: str) -> bool:
    """Incident ids are UUIDs (36 characters); anything longer cannot name one."""
    return 1 <= len(alert_id) <= MAX_ID_CHARS


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
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
