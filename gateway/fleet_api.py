"""The REST API's fleet and map: devices (list, show, revoke), BLE receivers, sites with their floor plans for the
console's map, and the OpenAPI document of the whole API.

Documents are built by pure functions from the site map, settings and rows; the handlers only fetch and answer.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import structlog
import yaml
from aiohttp import web
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from gateway.api import invalid_query, json_body, query_params
from gateway.commandcenter.payloads import format_utc, optional_utc
from gateway.config import ReceiverSettings
from gateway.console.access import Access, Principal
from gateway.console.auth import Action
from gateway.console.store import audit
from gateway.errors import RegistryError
from gateway.ingest.ble.receivers import ReceiverReport
from gateway.ingest.http import problem
from gateway.location.engine import SiteMapCache
from gateway.location.model import LocalPoint
from gateway.location.sites import Building, Floor, Site, SiteMap
from gateway.store.models import Device, SiteMapVersion
from gateway.store.queries import (
    QueryProblem,
    certificate_status,
    device_page,
    open_incidents_by_site,
    parse_device_query,
)
from gateway.store.registry import DeviceRegistry

log = structlog.get_logger(__name__)

#: Floor plan images the gateway serves, by file extension: the formats browsers draw in an <img>.
PLAN_TYPES: Final[Mapping[str, str]] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
#: An SVG plan is a document that could carry script: served with no permission to run any, and never sniffed.
PLAN_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=300",
}
#: Coordinates in documents: 7 decimals of a degree are about a centimetre.
DEGREE_DECIMALS: Final = 7
#: The device id column's width: a longer id names no device.
MAX_DEVICE_ID_CHARS: Final = 32
#: Revocation reasons are kept in the registry's column of this width.
MAX_REVOKE_REASON_CHARS: Final = 128
#: The installed package's copy of the document (pyproject's force-include), then the checkout's.
OPENAPI_PACKAGED: Final = Path(__file__).with_name("openapi.yaml")
OPENAPI_CHECKOUT: Final = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
YAML_TYPE: Final = "application/yaml"


@dataclass(frozen=True, slots=True)
class FleetDeps:
    access: Access
    #: Devices: revocation goes through the registry (deny list), as the CLI's.
    registry: DeviceRegistry
    #: The newest site map (and its version, whose source locates plan files).
    sites: SiteMapCache
    #: The IANA time zone of a site (the site map's, else the gateway's default), or None.
    time_zone_of: Callable[[str], str | None]
    #: The configured BLE receivers and their latest live reports (empty when BLE is off).
    receivers: Sequence[ReceiverSettings]
    receiver_reports: Callable[[], Mapping[str, ReceiverReport]]
    #: Where the OpenAPI document is looked for, first found wins.
    openapi_paths: Sequence[Path] = (OPENAPI_PACKAGED, OPENAPI_CHECKOUT)


class FleetApi:
    """`/v1/devices`, `/v1/receivers`, `/v1/sites` with floor plans, `/v1/openapi.{json,yaml}`."""

    def __init__(self, deps: FleetDeps) -> None:
        self._deps = deps
        self._openapi: tuple[str, str] | None = None

    def routes(self) -> list[web.RouteDef]:
        guard = self._deps.access.guard
        view = guard(Action.VIEW)
        return [
            web.get("/v1/devices", view(self.list_devices)),
            web.get("/v1/devices/{device_id}", view(self.get_device)),
            web.post("/v1/devices/{device_id}/revoke", guard(Action.REVOKE_DEVICE)(self.revoke_device)),
            web.get("/v1/receivers", view(self.list_receivers)),
            web.get("/v1/sites", view(self.list_sites)),
            web.get("/v1/sites/{site_id}", view(self.get_site)),
            web.get("/v1/sites/{site_id}/buildings/{building_id}/floors/{floor}/plan", view(self.get_plan)),
            web.get("/v1/openapi.yaml", self.openapi_yaml),
            web.get("/v1/openapi.json", self.openapi_json),
        ]

    # --- devices ------------------------------------------------------------------------------------------------

    async def list_devices(self, request: web.Request, client: Principal) -> web.Response:
        query = parse_device_query(query_params(request))
        if isinstance(query, QueryProblem):
            return invalid_query(query)
        now = datetime.now(UTC)
        page = await device_page(query, now)
        items = [device_document(d, now) for d in page.items]
        return web.json_response({"items": items, "next_cursor": page.next_cursor})

    async def get_device(self, request: web.Request, client: Principal) -> web.Response:
        device = await _device(request.match_info["device_id"])
        if device is None:
            return _no_device(request.match_info["device_id"])
        return web.json_response(device_document(device, datetime.now(UTC)))

    async def revoke_device(self, request: web.Request, client: Principal) -> web.Response:
        """Deny the device from now on: its next signal is refused (the registry's deny list, as the CLI's)."""
        device_id = request.match_info["device_id"]
        body = await json_body(request)
        if isinstance(body, web.Response):
            return body
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REVOKE_REASON_CHARS:
            return problem(422, "invalid-reason", f"reason must be 1 to {MAX_REVOKE_REASON_CHARS} characters")
        if not reason.isprintable():
            return problem(422, "invalid-reason", "reason must be printable text on one line")
        reason = reason.strip()
        device = await _device(device_id)
        if device is None:
            return _no_device(device_id)
        if device.revoked_at is not None:
            return _already_revoked(device)
        now = datetime.now(UTC)
        try:
            record = await self._deps.registry.revoke(device_id, reason, now)
        except RegistryError:  # removed meanwhile
            return _no_device(device_id)
        if record.revoked_at != now:  # someone else revoked it meanwhile: theirs stands
            return _already_revoked(device)
        await audit(client.name, "device.revoke", device_id, via=client.via, reason=reason)
        log.warning("device revoked", device_id=device_id, by=client.name, via=client.via, reason=reason)
        revoked = await Device.get(device_id=device_id)
        return web.json_response(device_document(revoked, now))

    # --- receivers ----------------------------------------------------------------------------------------------

    async def list_receivers(self, request: web.Request, client: Principal) -> web.Response:
        documents = receiver_documents(self._deps.receivers, self._deps.receiver_reports(), self._deps.sites.site_map)
        return web.json_response({"items": documents})

    # --- sites and plans ----------------------------------------------------------------------------------------

    async def list_sites(self, request: web.Request, client: Principal) -> web.Response:
        site_map = self._deps.sites.site_map
        counts = await open_incidents_by_site()
        items = [
            {
                "id": site.id,
                "name": site.name,
                "time_zone": self._deps.time_zone_of(site.id),
                "open_incidents": counts.get(site.id, 0),
            }
            for site in site_map.sites
        ]
        return web.json_response({"items": items})

    async def get_site(self, request: web.Request, client: Principal) -> web.Response:
        site_map = self._deps.sites.site_map
        site = site_map.site(request.match_info["site_id"])
        if site is None:
            return problem(404, "not-found", f"no site {request.match_info['site_id'][:64]} in the site map")
        return web.json_response(site_document(site_map, site, self._deps.time_zone_of(site.id)))

    async def get_plan(self, request: web.Request, client: Principal) -> web.StreamResponse:
        """The floor plan image a site map names by path (resolved beside the site map file it was loaded from)."""
        site_map = self._deps.sites.site_map
        floor = _floor(site_map, request.match_info)
        if floor is None:
            return problem(404, "not-found", "no such floor in the site map")
        if floor.plan is None or is_url(floor.plan):
            return problem(404, "not-found", "this floor's plan is not a file the gateway serves")
        # Only the source: the document itself may be megabytes.
        loaded = await SiteMapVersion.filter(id=self._deps.sites.version).only("id", "source").first()
        path = plan_path(floor.plan, loaded.source if loaded is not None else None)
        media = PLAN_TYPES.get(path.suffix.lower())
        if media is None:
            return problem(404, "not-found", f"plans are served only as {', '.join(PLAN_TYPES)} files")
        if not await asyncio.to_thread(path.is_file):
            log.warning("floor plan file missing", path=str(path), site=request.match_info["site_id"])
            return problem(404, "not-found", "the floor plan file is missing")
        return web.FileResponse(path, headers={"Content-Type": media, **PLAN_HEADERS})

    # --- the OpenAPI document -----------------------------------------------------------------------------------

    async def openapi_yaml(self, request: web.Request) -> web.Response:
        document = await self._document()
        if document is None:
            return problem(404, "not-found", "the OpenAPI document is not installed")
        return web.Response(text=document[0], content_type=YAML_TYPE)

    async def openapi_json(self, request: web.Request) -> web.Response:
        document = await self._document()
        if document is None:
            return problem(404, "not-found", "the OpenAPI document is not installed")
        return web.Response(text=document[1], content_type="application/json")

    async def _document(self) -> tuple[str, str] | None:
        """The document as YAML and as JSON, read once."""
        if self._openapi is None:
            self._openapi = await asyncio.to_thread(read_openapi, self._deps.openapi_paths)
        return self._openapi


def read_openapi(paths: Sequence[Path]) -> tuple[str, str] | None:
    """(YAML text, JSON text) of the first document found, or None."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        # default=str: a date YAML reads unquoted stays its text.
        return text, json.dumps(yaml.safe_load(text), ensure_ascii=False, default=str)
    return None


async def _device(device_id: str) -> Device | None:
    if not 0 < len(device_id) <= MAX_DEVICE_ID_CHARS:
        return None
    return await Device.get_or_none(device_id=device_id)


def _no_device(device_id: str) -> web.Response:
    return problem(404, "not-found", f"no device {device_id[:MAX_DEVICE_ID_CHARS]}")


def _already_revoked(device: Device) -> web.Response:
    return problem(409, "already-revoked", f"device {device.device_id} is already revoked")


def _floor(site_map: SiteMap, match: Mapping[str, str]) -> Floor | None:
    """The floor a plan URL names, when its building is in its site."""
    building = site_map.building(match["building_id"])
    raw = match["floor"]
    if building is None or building.site != match["site_id"] or not raw.lstrip("-").isdigit() or len(raw) > 4:
        return None
    number = int(raw)
    return next((f for f in building.floors if f.number == number), None)


# --- documents (pure) ---------------------------------------------------------------------------------------------


def device_document(device: Device, now: datetime) -> dict[str, Any]:
    """A device as the fleet view shows it; the certificate's status is judged at `now`."""
    return {
        "device_id": device.device_id,
        "wearer": device.wearer,
        "site": device.site,
        "last_seen_at": optional_utc(device.last_seen_at),
        "battery": device.battery,
        "nearest_receiver": device.nearest_receiver,
        "nearest_rssi": device.nearest_rssi,
        "certificate": {
            "serial": device.cert_serial,
            "fingerprint": device.cert_fingerprint,
            "not_before": format_utc(device.not_before),
            "not_after": format_utc(device.not_after),
            "status": certificate_status(device.not_after, device.revoked_at, now).value,
            "revoked_at": optional_utc(device.revoked_at),
            "revoked_reason": device.revoked_reason,
        },
    }


def receiver_documents(
    receivers: Sequence[ReceiverSettings], reports: Mapping[str, ReceiverReport], site_map: SiteMap
) -> list[dict[str, Any]]:
    """Configured receivers where they are (with lat/lon when the site map has their building) and their live
    status: up or down as last reported, unknown when this gateway has no report (not started yet)."""
    documents = []
    for r in receivers:
        report = reports.get(r.name)
        building = site_map.building(r.building or None)
        lat = lon = None
        if building is not None:
            lat, lon = site_map.to_geo(LocalPoint(building.id, r.floor, r.x, r.y))
        documents.append(
            {
                "name": r.name,
                "site": r.site or (building.site if building is not None else None),
                "building": r.building or None,
                "floor": r.floor,
                "room": r.room or None,
                "x": r.x,
                "y": r.y,
                "lat": _degrees(lat),
                "lon": _degrees(lon),
                "status": report.status.value if report is not None else "unknown",
                "error": report.error if report is not None else None,
                "updated_at": format_utc(report.at) if report is not None else None,
            }
        )
    return documents


def is_url(plan: str) -> bool:
    """Whether a floor's `plan` is a URL the browser loads itself (else a file the gateway serves)."""
    return plan[:8].lower().startswith(("http://", "https://"))


def plan_url(site: str, building: str, floor: Floor) -> str | None:
    """Where the console loads a floor's plan: its URL, or the gateway's plan endpoint for a file; None without."""
    if floor.plan is None:
        return None
    if is_url(floor.plan):
        return floor.plan
    return f"/v1/sites/{quote(site, safe='')}/buildings/{quote(building, safe='')}/floors/{floor.number}/plan"


def plan_path(plan: str, source: str | None) -> Path:
    """A plan file's path: as written when absolute, else relative to the directory of the site map's file."""
    path = Path(plan)
    if path.is_absolute() or source is None:
        return path
    return Path(source).parent / path


def plan_corners(site_map: SiteMap, building: Building, floor: Floor) -> list[list[float]] | None:
    """The plan image's corners as [lat, lon]: top-left, top-right, bottom-right, bottom-left; None without bounds."""
    if floor.plan_bounds is None:
        return None
    (x0, y0), (x1, y1) = floor.plan_bounds
    corners = ((x0, y1), (x1, y1), (x1, y0), (x0, y0))
    found = []
    for x, y in corners:
        lat, lon = site_map.to_geo(LocalPoint(building.id, floor.number, x, y))
        found.append([round(lat, DEGREE_DECIMALS), round(lon, DEGREE_DECIMALS)])
    return found


def geometry(shape: BaseGeometry) -> dict[str, Any]:
    """A lon/lat shape as a GeoJSON geometry, coordinates rounded to about a centimetre."""
    found: dict[str, Any] = mapping(shape)
    return {"type": found["type"], "coordinates": _rounded(found["coordinates"])}


def _rounded(coordinates: Any) -> Any:
    if isinstance(coordinates, int | float):
        return round(float(coordinates), DEGREE_DECIMALS)
    return [_rounded(c) for c in coordinates]


def _degrees(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, DEGREE_DECIMALS)


def room_polygon(
    site_map: SiteMap, building: Building, floor: int, points: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """A room's outline (plan metres) as a closed GeoJSON Polygon in lon/lat."""
    ring = []
    for x, y in [*points, points[0]]:
        lat, lon = site_map.to_geo(LocalPoint(building.id, floor, x, y))
        ring.append([round(lon, DEGREE_DECIMALS), round(lat, DEGREE_DECIMALS)])
    return {"type": "Polygon", "coordinates": [ring]}


def site_document(site_map: SiteMap, site: Site, time_zone: str | None) -> dict[str, Any]:
    """A site for the console's map: its shape and zones, and its buildings' floors with plans and rooms."""
    buildings = []
    for building in site_map.buildings:
        if building.site != site.id:
            continue
        floors = [
            {
                "number": floor.number,
                "name": floor.name,
                "plan_url": plan_url(site.id, building.id, floor),
                "plan_corners": plan_corners(site_map, building, floor) if floor.plan is not None else None,
                "rooms": [
                    {
                        "id": room.id,
                        "name": room.name,
                        "polygon": room_polygon(site_map, building, floor.number, room.polygon),
                    }
                    for room in floor.rooms
                ],
            }
            for floor in building.floors
        ]
        buildings.append({"id": building.id, "name": building.name, "floors": floors})
    return {
        "id": site.id,
        "name": site.name,
        "time_zone": time_zone,
        "shape": geometry(site.shape),
        "zones": [
            {"id": zone.id, "name": zone.name, "shape": geometry(zone.shape)}
            for zone in site_map.zones
            if zone.site == site.id
        ],
        "buildings": buildings,
    }


__all__ = [
    "PLAN_TYPES",
    "FleetApi",
    "FleetDeps",
    "device_document",
    "geometry",
    "is_url",
    "plan_corners",
    "plan_path",
    "plan_url",
    "read_openapi",
    "receiver_documents",
    "room_polygon",
    "site_document",
]
