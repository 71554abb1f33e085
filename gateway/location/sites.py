"""The site map: sites, zones, buildings, floors and rooms, and which of them a point is in (sans-I/O).

The map is one GeoJSON FeatureCollection (format: docs/LOCATION.md), validated in full when it is parsed. Validation
reports every problem at once, each on one line as "path: problem", e.g.
``features[4].properties.floors[1].rooms[3].polygon: overlaps room '213' (rooms[2]) by 1.50 m²``.

Sites and zones are kept in longitude/latitude (shapely x = lon, y = lat); rooms in their floor plan's metres. Floor
plans are tied to the earth by their building's anchor and rotation through the anchor's local tangent plane (east,
north, up on the WGS84 ellipsoid), computed exactly through earth-centred coordinates, so plan metres stay metres.

Lookups go through STRtrees built once per map; a point on a border shared by several areas belongs to the smallest
of them, and among areas of equal size to the one written first in the file.

Errors:

SiteMapError (a GatewayError and a ValueError)   the text is not a valid site map;
                                                 `.problems` holds one "path: problem" line per problem
KeyError                                         `to_geo` or `to_local` of a building the map does not have

Everything here is pure except `load_site_map`, which only reads the file and hands its text to `parse_site_map`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import shapely
from shapely import STRtree
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from gateway.documents import DocumentChecker, DocumentUnreadable, read_document
from gateway.documents import did_you_mean as _did_you_mean
from gateway.errors import GatewayError
from gateway.escalation.directory import ANY_SITE
from gateway.location.model import LocalPoint, Place

#: WGS84 semi-major axis (m) and flattening: the ellipsoid GPS and GeoJSON (RFC 7946) coordinates refer to.
WGS84_A: Final = 6_378_137.0
WGS84_F: Final = 1 / 298.257223563
#: First eccentricity squared.
WGS84_E2: Final = WGS84_F * (2 - WGS84_F)

#: Ids end up in places, MQTT topics, escalation policies (whose sites and zones are at most 64 characters) and
#: the console's URLs: short, and free of the MQTT topic characters '/', '+' and '#'.
MAX_ID_LEN: Final = 64
#: Names are printed in SMS and spoken in calls: long enough for any real name, short enough to leave room.
MAX_NAME_LEN: Final = 128
#: A plan's path or URL; 2048 is the longest URL that every browser and proxy accepts.
MAX_PLAN_LEN: Final = 2048
#: Two rooms of one floor may share walls, but a shared area above this is a drawing mistake: 0.01 m² (10 cm by
#: 10 cm) is well below any room and above the rounding of coordinates written with millimetres.
ROOM_OVERLAP_M2: Final = 0.01
#: A zone drawn by hand may overshoot its site's edge by a sliver; a square metre is far below any GPS fix's
#: accuracy, so a zone outside by less still routes every alert the same.
ZONE_OUTSIDE_M2: Final = 1.0
#: Plan coordinates are metres from the building's anchor. The largest buildings are about a kilometre long;
#: 5 km catches plans exported in millimetres (a 20 m room is 20,000 mm) while leaving campuses room.
MAX_PLAN_M: Final = 5000.0
#: Floor numbers: the deepest basements are a few tens of levels down, the tallest tower has 163 floors.
MIN_FLOOR: Final = -20
MAX_FLOOR: Final = 200
#: A site drawn as a point is a circle of this radius at most; a larger site is better drawn as a polygon (the
#: circle has 128 sides, so at 10 km its edge is within 3 m of the true circle).
MAX_SITE_RADIUS_M: Final = 10_000.0
CIRCLE_SIDES: Final = 128
#: Unknown ids are answered with the full list of known ones up to this many; past it, with close matches.
_KNOWN_LISTED: Final = 10

_KINDS: Final = ("site", "zone", "building")
_COLLECTION_FIELDS: Final = (("type", "features"), ("bbox",))
_FEATURE_FIELDS: Final = (("type", "geometry", "properties"), ("id", "bbox"))
_GEOMETRY_FIELDS: Final = (("type", "coordinates"), ("bbox",))
_SITE_FIELDS: Final = (("kind", "id", "name"), ("time_zone", "topic", "radius_m"))
_ZONE_FIELDS: Final = (("kind", "id", "name", "site"), ("topic",))
_BUILDING_FIELDS: Final = (("kind", "id", "name", "site"), ("rotation_deg", "floors"))
_FLOOR_FIELDS: Final = (("number",), ("name", "plan", "plan_bounds", "rooms"))
_ROOM_FIELDS: Final = (("id", "polygon"), ("name", "zone"))
_AREA_TYPES: Final = ("Polygon", "MultiPolygon")
_SITE_TYPES: Final = ("Polygon", "MultiPolygon", "Point")

#: 1 to 64 characters; no control characters, no '/', '+' or '#' (MQTT topic syntax), no space at either end and
#: no '$' first (MQTT reserves such topics for the broker).
_ID_PATTERN: Final = re.compile(
    rf"[^\s$/+#\x00-\x1f\x7f](?:[^/+#\x00-\x1f\x7f]{{0,{MAX_ID_LEN - 2}}}[^\s/+#\x00-\x1f\x7f])?"
)
_ID_RULE: Final = "1 to 64 characters, none of '/', '+', '#' or control characters, no '$' first, no space at the ends"


class SiteMapError(GatewayError, ValueError):
    """The site map text is invalid; `problems` has one "path: problem" line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = tuple(problems)


@dataclass(frozen=True, slots=True)
class Site:
    """A place that owns alerts: its command center and escalation policies.

    id: unique; the `site` of places and of escalation policies.
    name: for people ("North Plant").
    topic: MQTT topic segment of its command center (the id unless the map says otherwise).
    shape: the site's area in lon/lat (a circle of `radius_m` for a site drawn as a point).
    time_zone: IANA name, or None when the map does not say.
    radius_m: the radius of a site drawn as a point, else None.
    """

    id: str
    name: str
    topic: str
    shape: BaseGeometry = field(compare=False, repr=False)
    time_zone: str | None = None
    radius_m: float | None = None


@dataclass(frozen=True, slots=True)
class Zone:
    """A part of a site that routes alerts (its own escalation policy, maybe its own command-center topic).

    id: unique across the map; name: for people; site: the site's id; shape: the area in lon/lat;
    topic: MQTT topic segment that replaces the site's for alerts in this zone, or None.
    """

    id: str
    name: str
    site: str
    shape: BaseGeometry = field(compare=False, repr=False)
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class Room:
    """A room of a floor plan.

    id: unique on its floor ("214"); polygon: its outline in plan metres, as written, without a closing point;
    centroid: (x, y) in plan metres; shape: the outline as a shapely polygon; name: for people ("Lab"), may be "";
    zone: the zone the room belongs to, or None (then the zone is the one around the room's position).
    """

    id: str
    polygon: tuple[tuple[float, float], ...]
    centroid: tuple[float, float]
    shape: BaseGeometry = field(compare=False, repr=False)
    name: str = ""
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Floor:
    """One floor of a building: number (0 ground, negative basements), rooms, and the console's plan image.

    plan: image path or URL, or None; plan_bounds: ((x0, y0), (x1, y1)), the plan metres the image spans.
    """

    number: int
    rooms: tuple[Room, ...] = ()
    name: str = ""
    plan: str | None = None
    plan_bounds: tuple[tuple[float, float], tuple[float, float]] | None = None


@dataclass(frozen=True, slots=True)
class Building:
    """A building: its floor plans share one anchor (plan x = 0, y = 0) at (lat, lon).

    id: unique across the map (floor-plan points name only the building); site: the site's id;
    rotation_deg: clockwise angle from north to the plans' y axis, in [0, 360).
    """

    id: str
    name: str
    site: str
    lat: float
    lon: float
    rotation_deg: float = 0.0
    floors: tuple[Floor, ...] = ()


@dataclass(frozen=True, slots=True)
class SiteMap:
    """Sites, zones and buildings; build it with `parse_site_map` or `load_site_map`, which validate it."""

    sites: tuple[Site, ...] = ()
    zones: tuple[Zone, ...] = ()
    buildings: tuple[Building, ...] = ()
    # Indexes built once: lookups run for every alert.
    _index: _Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _Index(self.sites, self.zones, self.buildings))

    def place_of(self, lat: float, lon: float) -> Place:
        """The site and zone of an outdoor point (building, floor and room None); Place() outside every site."""
        index = self._index
        if not _plausible(lat, lon):
            return Place()
        point = _point(lon, lat)
        site = index.site_at(point)
        if site is None:
            return Place()
        zone = index.zone_at(site.id, point)
        return Place(site=site.id, zone=zone.id if zone is not None else None)

    def room_at(self, point: LocalPoint) -> Place:
        """Site, building, floor, the room containing the point (None in a corridor) and zone of a plan point.

        The zone is the room's, else the one around the point's position on earth. A building the map does not
        have gives Place(); a floor the building does not list keeps its number and has no room.
        """
        index = self._index
        building = index.building_by_id.get(point.building)
        if building is None:
            return Place()
        floor = index.floor_by_key.get((building.id, point.floor))
        room = floor.room_at(point.x, point.y) if floor is not None else None
        zone = room.zone if room is not None else None
        if zone is None:
            lat, lon = index.frame_by_building[building.id].to_geo(point.x, point.y)
            found = index.zone_at(building.site, _point(lon, lat)) if _plausible(lat, lon) else None
            zone = found.id if found is not None else None
        return Place(
            site=building.site,
            building=building.id,
            floor=point.floor,
            room=room.id if room is not None else None,
            zone=zone,
        )

    def to_geo(self, point: LocalPoint) -> tuple[float, float]:
        """(lat, lon) of a floor-plan point; KeyError for a building the map does not have."""
        return self._frame(point.building).to_geo(point.x, point.y)

    def to_local(self, building: str, floor: int, lat: float, lon: float) -> LocalPoint:
        """The floor-plan point of (lat, lon) in `building`; KeyError for a building the map does not have."""
        x, y = self._frame(building).to_local(lat, lon)
        return LocalPoint(building=building, floor=floor, x=x, y=y)

    def room(self, building: str, floor: int, room: str) -> Room | None:
        """The room with this id on that floor of that building, if any."""
        found = self._index.floor_by_key.get((building, floor))
        return found.room_by_id.get(room) if found is not None else None

    def site(self, site_id: str | None) -> Site | None:
        """The site with this id, if any."""
        return self._index.site_by_id.get(site_id) if site_id is not None else None

    def zone(self, zone_id: str | None) -> Zone | None:
        """The zone with this id, if any."""
        return self._index.zone_by_id.get(zone_id) if zone_id is not None else None

    def building(self, building_id: str | None) -> Building | None:
        """The building with this id, if any."""
        return self._index.building_by_id.get(building_id) if building_id is not None else None

    def time_zone(self, site_id: str | None) -> str | None:
        """The site's IANA time zone, or None when the site is unknown or the map does not say."""
        site = self.site(site_id)
        return site.time_zone if site is not None else None

    def topic_for(self, place: Place) -> str | None:
        """The command-center topic segment of a place: its zone's topic, else its site's; None for no site."""
        zone = self.zone(place.zone)
        if zone is not None and place.site not in (None, zone.site):
            zone = None  # a zone of another site cannot route this place
        if zone is not None and zone.topic is not None:
            return zone.topic
        site = self.site(place.site if place.site is not None else zone.site if zone is not None else None)
        return site.topic if site is not None else None

    def describe(self, place: Place) -> str:
        """Place text for people: "North Plant, Building B, floor 2, room 214 (Lab)".

        Names, not ids (ids the map does not know are shown as they are); unknown (None) parts are left out. The
        zone is named only outdoors (no building): indoors the room says more. Place() gives "".
        """
        parts: list[str] = []
        site = self.site(place.site)
        if place.site is not None:
            parts.append(site.name if site is not None else place.site)
        building = self.building(place.building)
        if place.building is not None:
            parts.append(building.name if building is not None else place.building)
        floor = None
        if place.building is not None and place.floor is not None:
            floor = self._index.floor_by_key.get((place.building, place.floor))
        if place.floor is not None:
            floor_name = floor.floor.name if floor is not None else ""
            parts.append(f"floor {place.floor}" + (f" ({floor_name})" if floor_name else ""))
        if place.room is not None:
            room = floor.room_by_id.get(place.room) if floor is not None else None
            room_name = room.name if room is not None and room.name != room.id else ""
            parts.append(f"room {place.room}" + (f" ({room_name})" if room_name else ""))
        if place.building is None and place.zone is not None:
            zone = self.zone(place.zone)
            parts.append(zone.name if zone is not None else place.zone)
        return ", ".join(parts)

    def _frame(self, building: str) -> _Frame:
        frame = self._index.frame_by_building.get(building)
        if frame is None:
            raise KeyError(f"unknown building {building!r}")
        return frame


# --- lookups ----------------------------------------------------------------------------------------------------


class _FloorIndex:
    """One floor's rooms in an STRtree, with their areas (for the smallest-room rule) and by id."""

    __slots__ = ("areas", "floor", "room_by_id", "tree")

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.tree = STRtree([room.shape for room in floor.rooms])
        self.areas = [_area(room.shape) for room in floor.rooms]
        self.room_by_id: dict[str, Room] = {}
        for room in floor.rooms:
            self.room_by_id.setdefault(room.id, room)

    def room_at(self, x: float, y: float) -> Room | None:
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        found = _smallest(_hits(self.tree, _point(x, y)), self.areas)
        return self.floor.rooms[found] if found is not None else None


class _Index:
    """The map's lookups: STRtrees of sites, zones and each floor's rooms; dicts by id; each building's frame."""

    __slots__ = (
        "building_by_id",
        "floor_by_key",
        "frame_by_building",
        "site_area",
        "site_by_id",
        "site_tree",
        "sites",
        "zone_area",
        "zone_by_id",
        "zone_tree",
        "zones",
    )

    def __init__(self, sites: Sequence[Site], zones: Sequence[Zone], buildings: Sequence[Building]) -> None:
        self.sites = tuple(sites)
        self.zones = tuple(zones)
        self.site_tree = STRtree([s.shape for s in sites])
        self.zone_tree = STRtree([z.shape for z in zones])
        self.site_area = [_geo_area_m2(s.shape) for s in sites]
        self.zone_area = [_geo_area_m2(z.shape) for z in zones]
        self.site_by_id: dict[str, Site] = {}
        self.zone_by_id: dict[str, Zone] = {}
        self.building_by_id: dict[str, Building] = {}
        self.frame_by_building: dict[str, _Frame] = {}
        self.floor_by_key: dict[tuple[str, int], _FloorIndex] = {}
        for site in sites:
            self.site_by_id.setdefault(site.id, site)
        for zone in zones:
            self.zone_by_id.setdefault(zone.id, zone)
        for building in buildings:
            if building.id in self.building_by_id:
                continue
            self.building_by_id[building.id] = building
            self.frame_by_building[building.id] = _Frame(building.lat, building.lon, building.rotation_deg)
            for floor in building.floors:
                self.floor_by_key.setdefault((building.id, floor.number), _FloorIndex(floor))

    def site_at(self, point: BaseGeometry) -> Site | None:
        found = _smallest(_hits(self.site_tree, point), self.site_area)
        return self.sites[found] if found is not None else None

    def zone_at(self, site: str, point: BaseGeometry) -> Zone | None:
        hits = [i for i in _hits(self.zone_tree, point) if self.zones[i].site == site]
        found = _smallest(hits, self.zone_area)
        return self.zones[found] if found is not None else None


def _smallest(hits: Iterable[int], areas: Sequence[float]) -> int | None:
    """The smallest area among the hits, the first written among equals; None for no hits."""
    return min(hits, key=lambda i: (areas[i], i), default=None)


def _plausible(lat: float, lon: float) -> bool:
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0  # also False for NaN


# --- local tangent plane ----------------------------------------------------------------------------------------


def _ecef(lat: float, lon: float) -> tuple[float, float, float]:
    """Earth-centred, earth-fixed metres of a point on the WGS84 ellipsoid (height 0)."""
    phi, lam = math.radians(lat), math.radians(lon)
    n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(phi) ** 2)
    return n * math.cos(phi) * math.cos(lam), n * math.cos(phi) * math.sin(lam), n * (1 - WGS84_E2) * math.sin(phi)


def _geodetic(x: float, y: float, z: float) -> tuple[float, float]:
    """(lat, lon) in degrees of an earth-centred point near the ellipsoid (its height is dropped)."""
    p = math.hypot(x, y)
    phi = math.atan2(z, p * (1 - WGS84_E2))
    for _ in range(4):  # near the surface each round gains about five digits; four are far past a millimetre
        s = math.sin(phi)
        n = WGS84_A / math.sqrt(1 - WGS84_E2 * s * s)
        phi = math.atan2(z + WGS84_E2 * n * s, p)
    return math.degrees(phi), math.degrees(math.atan2(y, x))


class _Frame:
    """A building's plan frame: the tangent plane at its anchor (east, north, up), turned by its rotation.

    Plan (x, y) turn into (east, north) by `rotation_deg` clockwise; (east, north) lie in the plane touching the
    ellipsoid at the anchor. Going through earth-centred coordinates keeps the plane exact: a plan point within
    1 km of the anchor lands within micrometres of where a surveyor's tangent plane puts it.
    """

    __slots__ = ("cos", "east", "north", "origin", "radius", "sin", "up")

    def __init__(self, lat: float, lon: float, rotation_deg: float) -> None:
        phi, lam = math.radians(lat), math.radians(lon)
        self.origin = _ecef(lat, lon)
        self.east = (-math.sin(lam), math.cos(lam), 0.0)
        self.north = (-math.sin(phi) * math.cos(lam), -math.sin(phi) * math.sin(lam), math.cos(phi))
        self.up = (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))
        theta = math.radians(rotation_deg)
        self.sin, self.cos = math.sin(theta), math.cos(theta)
        # Gaussian mean radius at the anchor: how far the ellipsoid drops below the plane, sqrt(M * N).
        s2 = math.sin(phi) ** 2
        self.radius = WGS84_A * math.sqrt(1 - WGS84_E2) / (1 - WGS84_E2 * s2)

    def to_geo(self, x: float, y: float) -> tuple[float, float]:
        e = x * self.cos + y * self.sin
        n = -x * self.sin + y * self.cos
        # The ground lies below the plane by about d²/2R; dropping the remaining height along the normal moves the
        # point sideways by height times d/R: micrometres within a kilometre.
        u = -(e * e + n * n) / (2 * self.radius)
        x0, y0, z0 = self.origin
        return _geodetic(
            x0 + e * self.east[0] + n * self.north[0] + u * self.up[0],
            y0 + e * self.east[1] + n * self.north[1] + u * self.up[1],
            z0 + e * self.east[2] + n * self.north[2] + u * self.up[2],
        )

    def to_local(self, lat: float, lon: float) -> tuple[float, float]:
        x1, y1, z1 = _ecef(lat, lon)
        x0, y0, z0 = self.origin
        dx, dy, dz = x1 - x0, y1 - y0, z1 - z0
        e = dx * self.east[0] + dy * self.east[1] + dz * self.east[2]
        n = dx * self.north[0] + dy * self.north[1] + dz * self.north[2]
        return e * self.cos - n * self.sin, e * self.sin + n * self.cos


# --- shapely, typed ---------------------------------------------------------------------------------------------


def _point(x: float, y: float) -> BaseGeometry:
    """A shapely point, made from a sequence: about twice as fast per call as shapely.Point(x, y)."""
    return shapely.points((x, y))


def _hits(tree: STRtree, point: BaseGeometry) -> list[int]:
    """Indexes of the tree's geometries that contain the point or have it on their border."""
    return [int(i) for i in tree.query(point, predicate="intersects")]


def _area(shape: BaseGeometry) -> float:
    return float(shape.area)


def _is_valid(shape: BaseGeometry) -> bool:
    return bool(shape.is_valid)


def _is_empty(shape: BaseGeometry) -> bool:
    return bool(shape.is_empty)


def _centroid(shape: BaseGeometry) -> tuple[float, float]:
    c = shape.centroid
    return float(c.x), float(c.y)


def _geo_area_m2(shape: BaseGeometry) -> float:
    """About the area in m² of a lon/lat geometry (degrees² scaled at its centroid's latitude)."""
    if _is_empty(shape):
        return 0.0
    phi = math.radians(_centroid(shape)[1])
    s2 = math.sin(phi) ** 2
    meridional = WGS84_A * (1 - WGS84_E2) / (1 - WGS84_E2 * s2) / math.sqrt(1 - WGS84_E2 * s2)
    prime_vertical = WGS84_A / math.sqrt(1 - WGS84_E2 * s2)
    return _area(shape) * math.radians(1) ** 2 * meridional * prime_vertical * math.cos(phi)


def _outside_m2(inner: BaseGeometry, outer: BaseGeometry) -> float:
    """About how many m² of `inner` lie outside `outer`."""
    return _geo_area_m2(inner.difference(outer))


def _intersects(a: BaseGeometry, b: BaseGeometry) -> bool:
    return bool(a.intersects(b))


def _covers(a: BaseGeometry, b: BaseGeometry) -> bool:
    return bool(a.covers(b))


def _overlapping_pairs(shapes: Sequence[BaseGeometry]) -> list[tuple[int, int, float]]:
    """(i, j, area) for each pair i < j whose shared area exceeds ROOM_OVERLAP_M2, from an STRtree query."""
    if len(shapes) < 2:
        return []
    tree = STRtree(shapes)
    left, right = tree.query(shapes, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    areas = shapely.area(shapely.intersection(tree.geometries.take(left), tree.geometries.take(right)))
    return [
        (int(i), int(j), float(a)) for i, j, a in zip(left, right, areas, strict=True) if float(a) > ROOM_OVERLAP_M2
    ]


#: explain_validity's "Self-intersection[1 2]": the reason and the point it was found at.
_VALIDITY: Final = re.compile(r"^(?P<reason>.*)\[(?P<x>\S+) (?P<y>\S+)\]$")


def _validity_problem(shape: BaseGeometry, *, geo: bool) -> str | None:
    """None for a valid polygon, else "invalid polygon: self-intersection at lon 13.4, lat 52.5" (or x, y)."""
    if _is_valid(shape):
        return None
    text = str(explain_validity(shape))
    match = _VALIDITY.match(text)
    if match is None:
        return f"invalid polygon: {text[:1].lower()}{text[1:]}"
    at = f"lon {match['x']}, lat {match['y']}" if geo else f"x {match['x']}, y {match['y']}"
    return f"invalid polygon: {match['reason'].lower()} at {at}"


# --- parsing ----------------------------------------------------------------------------------------------------


#: A map with nothing in it: no place is known and alerts carry their device's registry site only.
EMPTY_SITE_MAP: Final = SiteMap()


def parse_site_map(text: str, *, source: str = "<text>") -> SiteMap:
    """Parse and validate site-map GeoJSON; SiteMapError lists every problem. `source` names the text in messages."""
    try:
        document = json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        message = exc.msg[:1].lower() + exc.msg[1:]
        raise SiteMapError([f"{source} line {exc.lineno}: {message} (column {exc.colno})"]) from None
    except RecursionError:
        raise SiteMapError([f"{source}: nested too deeply"]) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise SiteMapError([f"{source}: {exc}"]) from None
    return _site_map_from_document(document, source)


def load_site_map(path: Path) -> SiteMap:
    """Read (UTF-8) and parse a site-map file; SiteMapError also when it cannot be read."""
    try:
        text = read_document(path)
    except DocumentUnreadable as exc:
        raise SiteMapError([exc.problem]) from None
    return parse_site_map(text, source=str(path))


def _site_map_from_document(document: object, source: str) -> SiteMap:
    check = _Checker()
    if not isinstance(document, dict):
        check.add(source, f"expected a GeoJSON FeatureCollection (an object), got {_kind(document)}")
        raise SiteMapError(check.sorted())
    check.fields("", document, _COLLECTION_FIELDS, where=source)
    kind = document.get("type")
    if "type" in document and kind != "FeatureCollection":
        check.add("type", f"expected 'FeatureCollection', got {_shown(kind)}")
    features = document.get("features", [])
    if not isinstance(features, list):
        check.add("features", f"expected an array of features, got {_kind(features)}")
        features = []
    sites: list[tuple[int, Site]] = []
    zones: list[tuple[int, Zone]] = []
    buildings: list[tuple[int, Building]] = []
    for i, feature in enumerate(features):
        check.feature = i
        path = f"features[{i}]"
        if not isinstance(feature, dict):
            check.add(path, f"expected a feature (an object), got {_kind(feature)}")
            continue
        parsed = check.feature_of(path, feature)
        if isinstance(parsed, Site):
            sites.append((i, parsed))
        elif isinstance(parsed, Zone):
            zones.append((i, parsed))
        elif isinstance(parsed, Building):
            buildings.append((i, parsed))
    site_by_id = _first_by(check, sites, "site")
    zone_by_id = _first_by(check, zones, "zone")
    _first_by(check, buildings, "building")
    for i, zone in zones:
        check.feature = i
        site = check.reference(f"features[{i}].properties.site", zone.site, site_by_id)
        if site is not None and not _is_empty(zone.shape) and not _is_empty(site.shape):
            check.zone_inside(f"features[{i}].geometry", zone, site)
    for i, building in buildings:
        check.feature = i
        site = check.reference(f"features[{i}].properties.site", building.site, site_by_id)
        if site is not None and _plausible(building.lat, building.lon) and not _is_empty(site.shape):
            check.anchor_inside(f"features[{i}].geometry", building, site)
        check.room_zones(f"features[{i}].properties", building, zone_by_id)
    if check.problems:
        raise SiteMapError(check.sorted())
    return SiteMap(
        sites=tuple(s for _, s in sites), zones=tuple(z for _, z in zones), buildings=tuple(b for _, b in buildings)
    )


_Feature = TypeVar("_Feature", Site, Zone, Building)


def _first_by(check: _Checker, items: Sequence[tuple[int, _Feature]], what: str) -> dict[str, _Feature]:
    """Items by id (the first of each); later duplicates are problems."""
    first: dict[str, tuple[int, _Feature]] = {}
    for i, item in items:
        if not item.id:  # missing or of the wrong type: already a problem
            continue
        j, _ = first.setdefault(item.id, (i, item))
        if j != i:
            check.feature = i
            check.add(f"features[{i}].properties.id", f"duplicate {what} id {item.id!r} (first at features[{j}])")
    return {key: item for key, (_, item) in first.items()}


#: A placeholder for a geometry that could not be read (already a problem): skipped by containment checks.
_NO_SHAPE: Final = shapely.Polygon()


class _Checker(DocumentChecker):
    """Reads one site map leniently: every problem is recorded and reading goes on with a placeholder value."""

    def __init__(self) -> None:
        #: (feature index, line); -1 for the collection itself. Reported in feature order, then as found.
        self.problems: list[tuple[int, str]] = []
        self.feature = -1

    def add(self, path: str, message: str) -> None:
        self.problems.append((self.feature, f"{path}: {message}"))

    def kind(self, value: object) -> str:
        return _kind(value)

    def sorted(self) -> list[str]:
        return [line for _, line in sorted(self.problems, key=lambda p: p[0])]

    # -- shapes --

    def number(self, path: str, value: object) -> float | None:
        """A finite JSON number as a float; None (and a problem) for anything else."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(path, f"expected a number, got {_kind(value)}")
            return None
        if not math.isfinite(value):
            self.add(path, f"expected a finite number, got {value}")
            return None
        return float(value)

    def array_words(self, where: str) -> str:
        return "an array of objects"

    objects = DocumentChecker.members

    # -- geometry --

    def position(self, path: str, value: object) -> tuple[float, float] | None:
        """(lon, lat) of a GeoJSON position [lon, lat] or [lon, lat, altitude] within the earth's ranges."""
        if not isinstance(value, list):
            self.add(path, f"expected a position [lon, lat], got {_kind(value)}")
            return None
        if len(value) not in (2, 3):
            self.add(path, f"expected a position [lon, lat] (or [lon, lat, altitude]), got {len(value)} numbers")
            return None
        numbers = [self.number(f"{path}[{k}]", v) for k, v in enumerate(value)]
        lon, lat = numbers[0], numbers[1]
        if lon is not None and not -180.0 <= lon <= 180.0:
            self.add(path, f"longitude {lon:g} is out of range (-180 to 180)")
            lon = None
        if lat is not None and not -90.0 <= lat <= 90.0:
            self.add(path, f"latitude {lat:g} is out of range (-90 to 90)")
            lat = None
        if lon is None or lat is None or None in numbers:
            return None
        return lon, lat

    def ring(
        self, path: str, value: object, point: Callable[[str, object], tuple[float, float] | None]
    ) -> list[tuple[float, float]] | None:
        """The points of a ring (closed or not), or None; fewer than 3 distinct points is a problem."""
        if not isinstance(value, list):
            self.add(path, f"expected an array of points, got {_kind(value)}")
            return None
        points = [point(f"{path}[{k}]", v) for k, v in enumerate(value)]
        if any(p is None for p in points):
            return None
        found = [p for p in points if p is not None]
        distinct = len(set(found))
        if distinct < 3:
            self.add(path, f"a polygon needs at least 3 distinct points, got {distinct}")
            return None
        if found[0] == found[-1]:
            found.pop()
        return found

    def geo_polygon(self, path: str, value: object) -> BaseGeometry | None:
        """A GeoJSON Polygon's coordinates (outline, then holes) as a valid shapely polygon, or None."""
        if not isinstance(value, list) or not value:
            got = "an empty array" if isinstance(value, list) else _kind(value)
            self.add(path, f"expected an array of rings (the outline, then any holes), got {got}")
            return None
        rings = [self.ring(f"{path}[{k}]", ring, self.position) for k, ring in enumerate(value)]
        if any(r is None for r in rings):
            return None
        shell, *holes = [r for r in rings if r is not None]
        return self.valid(path, shapely.Polygon(shell, holes), geo=True)

    def valid(self, path: str, shape: BaseGeometry, *, geo: bool) -> BaseGeometry | None:
        problem = _validity_problem(shape, geo=geo)
        if problem is not None:
            self.add(path, problem)
            return None
        return shape

    def geometry(self, path: str, feature: Mapping[str, object], types: tuple[str, ...]) -> tuple[str, Any] | None:
        """(type, shape) of the feature's geometry: a shapely polygon or multipolygon, or (lon, lat) for a Point."""
        path = f"{path}.geometry"
        geometry = feature.get("geometry")
        if not isinstance(geometry, dict):
            self.add(path, f"expected a geometry ({_or(types)}), got {_kind(geometry)}")
            return None
        self.fields(path, geometry, _GEOMETRY_FIELDS)
        kind = geometry.get("type")
        if "type" in geometry and kind not in types:
            self.add(f"{path}.type", f"expected {_or(types)}, got {_shown(kind)}")
            return None
        if "coordinates" not in geometry or kind not in types:
            return None
        coordinates = geometry["coordinates"]
        where = f"{path}.coordinates"
        if kind == "Point":
            point = self.position(where, coordinates)
            return (kind, point) if point is not None else None
        if kind == "Polygon":
            polygon = self.geo_polygon(where, coordinates)
            return (kind, polygon) if polygon is not None else None
        if not isinstance(coordinates, list) or not coordinates:
            got = "an empty array" if isinstance(coordinates, list) else _kind(coordinates)
            self.add(where, f"expected an array of polygons, got {got}")
            return None
        parts = [self.geo_polygon(f"{where}[{k}]", part) for k, part in enumerate(coordinates)]
        if any(p is None for p in parts):
            return None
        multi = self.valid(where, shapely.MultiPolygon(parts), geo=True)
        return (kind, multi) if multi is not None else None

    # -- features --

    def feature_of(self, path: str, feature: Mapping[str, object]) -> Site | Zone | Building | None:
        self.fields(path, feature, _FEATURE_FIELDS)
        if "type" in feature and feature["type"] != "Feature":
            self.add(f"{path}.type", f"expected 'Feature', got {_shown(feature['type'])}")
        properties = feature.get("properties")
        if not isinstance(properties, dict):
            if "properties" in feature:
                self.add(f"{path}.properties", f"expected an object, got {_kind(properties)}")
            return None
        # GIS tools write every attribute of a layer on every feature, empty ones as null: null means absent.
        properties = {key: value for key, value in properties.items() if value is not None}
        where = f"{path}.properties"
        kind = properties.get("kind")
        if kind == "site":
            return self.site(path, feature, properties)
        if kind == "zone":
            return self.zone(path, feature, properties)
        if kind == "building":
            return self.building(path, feature, properties)
        if "kind" not in properties:
            self.add(where, f"missing required field 'kind' ({_or(_KINDS)})")
        elif not isinstance(kind, str):
            self.add(f"{where}.kind", f"expected a string ({_or(_KINDS)}), got {_kind(kind)}")
        else:
            self.add(
                f"{where}.kind", f"unknown kind {kind!r}{_did_you_mean(kind, _KINDS) or f' (expected {_or(_KINDS)})'}"
            )
        return None

    def site(self, path: str, feature: Mapping[str, object], properties: Mapping[str, object]) -> Site:
        where = f"{path}.properties"
        self.fields(where, properties, _SITE_FIELDS)
        site_id = self.text(where, properties, "id", _site_id_problem) or ""
        name = self.text(where, properties, "name", _name_problem) or ""
        topic = self.text(where, properties, "topic", _topic_problem)
        time_zone = self.text(where, properties, "time_zone", _time_zone_problem)
        radius: float | None = None
        if "radius_m" in properties:
            radius = self.number(f"{where}.radius_m", properties["radius_m"])
            if radius is not None and not 0 < radius <= MAX_SITE_RADIUS_M:
                self.add(f"{where}.radius_m", f"{radius:g} is out of range (above 0, at most {MAX_SITE_RADIUS_M:g} m)")
                radius = None
        shape = _NO_SHAPE
        geometry = self.geometry(path, feature, _SITE_TYPES)
        if geometry is not None and geometry[0] == "Point":
            if "radius_m" not in properties:
                self.add(where, "missing required field 'radius_m' (a site drawn as a point is a circle)")
            elif radius is not None:
                lon, lat = geometry[1]
                shape = _circle(lat, lon, radius)
        elif geometry is not None:
            shape = geometry[1]
            if "radius_m" in properties:
                self.add(f"{where}.radius_m", "only a site drawn as a point has a radius")
        return Site(id=site_id, name=name, topic=topic or site_id, shape=shape, time_zone=time_zone, radius_m=radius)

    def zone(self, path: str, feature: Mapping[str, object], properties: Mapping[str, object]) -> Zone:
        where = f"{path}.properties"
        self.fields(where, properties, _ZONE_FIELDS)
        zone = Zone(
            id=self.text(where, properties, "id", _id_problem) or "",
            name=self.text(where, properties, "name", _name_problem) or "",
            site=self.text(where, properties, "site") or "",
            shape=_NO_SHAPE,
            topic=self.text(where, properties, "topic", _topic_problem),
        )
        geometry = self.geometry(path, feature, _AREA_TYPES)
        if geometry is None:
            return zone
        return Zone(id=zone.id, name=zone.name, site=zone.site, shape=geometry[1], topic=zone.topic)

    def building(self, path: str, feature: Mapping[str, object], properties: Mapping[str, object]) -> Building:
        where = f"{path}.properties"
        self.fields(where, properties, _BUILDING_FIELDS)
        building_id = self.text(where, properties, "id", _id_problem) or ""
        name = self.text(where, properties, "name", _name_problem) or ""
        site = self.text(where, properties, "site") or ""
        rotation = 0.0
        if "rotation_deg" in properties:
            value = self.number(f"{where}.rotation_deg", properties["rotation_deg"])
            if value is not None and not -360.0 <= value <= 360.0:
                self.add(f"{where}.rotation_deg", f"{value:g} is out of range (-360 to 360 degrees)")
            elif value is not None:
                rotation = value % 360.0
        floors: list[Floor] = []
        numbers: dict[int, int] = {}
        for k, (floor_path, table) in enumerate(self.objects(where, properties, "floors")):
            floor = self.floor(floor_path, table)
            number = table.get("number")
            if isinstance(number, int) and not isinstance(number, bool) and MIN_FLOOR <= number <= MAX_FLOOR:
                first = numbers.setdefault(number, k)
                if first != k:
                    self.add(f"{floor_path}.number", f"duplicate floor {number} (first at floors[{first}])")
            floors.append(floor)
        lon, lat = math.nan, math.nan
        geometry = self.geometry(path, feature, ("Point",))
        if geometry is not None:
            lon, lat = geometry[1]
        return Building(
            id=building_id, name=name, site=site, lat=lat, lon=lon, rotation_deg=rotation, floors=tuple(floors)
        )

    def floor(self, path: str, table: Mapping[str, object]) -> Floor:
        self.fields(path, table, _FLOOR_FIELDS)
        number = 0
        if "number" in table:
            value = table["number"]
            if isinstance(value, bool) or not isinstance(value, int):
                self.add(f"{path}.number", f"expected an integer, got {_kind(value)}")
            elif not MIN_FLOOR <= value <= MAX_FLOOR:
                self.add(f"{path}.number", f"{value} is out of range ({MIN_FLOOR} to {MAX_FLOOR})")
            else:
                number = value
        name = self.text(path, table, "name", _name_problem) or ""
        plan = self.text(path, table, "plan", _plan_problem)
        bounds = self.plan_bounds(path, table)
        if plan is not None and "plan_bounds" not in table:
            self.add(path, "missing required field 'plan_bounds' (the plan's [[x0, y0], [x1, y1]] in metres)")
        if plan is None and "plan_bounds" in table and "plan" not in table:
            self.add(f"{path}.plan_bounds", "plan_bounds places a plan image: add 'plan' or remove it")
        rooms: list[Room] = []
        ids: dict[str, int] = {}
        paths: list[str] = []
        for k, (room_path, room_table) in enumerate(self.objects(path, table, "rooms")):
            room = self.room(room_path, room_table)
            if room.id:
                first = ids.setdefault(room.id, k)
                if first != k:
                    self.add(f"{room_path}.id", f"duplicate room id {room.id!r} (first at rooms[{first}])")
            rooms.append(room)
            paths.append(room_path)
        for i, j, area in _overlapping_pairs([r.shape for r in rooms]):
            self.add(f"{paths[j]}.polygon", f"overlaps room {rooms[i].id!r} (rooms[{i}]) by {area:.2f} m²")
        return Floor(number=number, rooms=tuple(rooms), name=name, plan=plan, plan_bounds=bounds)

    def plan_bounds(
        self, path: str, table: Mapping[str, object]
    ) -> tuple[tuple[float, float], tuple[float, float]] | None:
        if "plan_bounds" not in table:
            return None
        where = f"{path}.plan_bounds"
        value = table["plan_bounds"]
        if not isinstance(value, list) or len(value) != 2:
            self.add(where, f"expected [[x0, y0], [x1, y1]] (metres), got {_kind(value)}")
            return None
        first, second = (self.plan_point(f"{where}[{k}]", v) for k, v in enumerate(value))
        if first is None or second is None:
            return None
        (x0, y0), (x1, y1) = first, second
        if not (x0 < x1 and y0 < y1):
            self.add(where, "the first corner must be the lower left: x0 < x1 and y0 < y1")
            return None
        return (x0, y0), (x1, y1)

    def plan_point(self, path: str, value: object) -> tuple[float, float] | None:
        """(x, y) of a plan point [x, y] in metres, within MAX_PLAN_M of the anchor on each axis."""
        if not isinstance(value, list) or len(value) != 2:
            got = f"{len(value)} numbers" if isinstance(value, list) else _kind(value)
            self.add(path, f"expected a point [x, y] (metres), got {got}")
            return None
        x, y = self.number(f"{path}[0]", value[0]), self.number(f"{path}[1]", value[1])
        if x is None or y is None:
            return None
        if max(abs(x), abs(y)) > MAX_PLAN_M:
            self.add(
                path,
                f"({x:g}, {y:g}) is more than {MAX_PLAN_M:g} m from the anchor "
                "(plan coordinates are metres: is the plan in millimetres?)",
            )
            return None
        return x, y

    def room(self, path: str, table: Mapping[str, object]) -> Room:
        self.fields(path, table, _ROOM_FIELDS)
        room_id = self.text(path, table, "id", _id_problem) or ""
        name = self.text(path, table, "name", _name_problem) or ""
        zone = self.text(path, table, "zone")
        points: list[tuple[float, float]] | None = None
        if "polygon" in table:
            points = self.ring(f"{path}.polygon", table["polygon"], self.plan_point)
        shape = _NO_SHAPE
        if points is not None:
            shape = self.valid(f"{path}.polygon", shapely.Polygon(points), geo=False) or _NO_SHAPE
        centroid = _centroid(shape) if not _is_empty(shape) else (math.nan, math.nan)
        return Room(id=room_id, polygon=tuple(points or ()), centroid=centroid, shape=shape, name=name, zone=zone)

    # -- references --

    def reference(self, path: str, site_id: str, sites: Mapping[str, Site]) -> Site | None:
        if not site_id:  # missing or of the wrong type: already a problem
            return None
        site = sites.get(site_id)
        if site is None:
            self.add(path, _unknown("site", site_id, sites))
        return site

    def zone_inside(self, path: str, zone: Zone, site: Site) -> None:
        if not _intersects(zone.shape, site.shape):
            self.add(path, f"lies outside its site {site.id!r}")
            return
        outside = _outside_m2(zone.shape, site.shape)
        if outside > ZONE_OUTSIDE_M2:
            self.add(path, f"lies partly outside its site {site.id!r} (about {outside:.0f} m² outside)")

    def anchor_inside(self, path: str, building: Building, site: Site) -> None:
        if not _covers(site.shape, _point(building.lon, building.lat)):
            self.add(path, f"the anchor lies outside its site {site.id!r}")

    def room_zones(self, path: str, building: Building, zones: Mapping[str, Zone]) -> None:
        for k, floor in enumerate(building.floors):
            for m, room in enumerate(floor.rooms):
                if room.zone is None:
                    continue
                where = f"{path}.floors[{k}].rooms[{m}].zone"
                zone = zones.get(room.zone)
                if zone is None:
                    self.add(where, _unknown("zone", room.zone, zones))
                elif building.site and zone.site != building.site:
                    self.add(
                        where,
                        f"zone {zone.id!r} is in site {zone.site!r}, not in this building's site {building.site!r}",
                    )


def _circle(lat: float, lon: float, radius: float) -> BaseGeometry:
    """A site drawn as a point: a CIRCLE_SIDES-gon of `radius` metres around it, in lon/lat."""
    frame = _Frame(lat, lon, 0.0)
    ring = []
    for k in range(CIRCLE_SIDES):
        angle = 2 * math.pi * k / CIRCLE_SIDES
        p_lat, p_lon = frame.to_geo(radius * math.sin(angle), radius * math.cos(angle))
        ring.append((p_lon, p_lat))
    return shapely.Polygon(ring)


# --- rules and messages -----------------------------------------------------------------------------------------


def _id_problem(value: str) -> str | None:
    if _ID_PATTERN.fullmatch(value):
        return None
    return f"{value!r} is not a valid id ({_ID_RULE})"


def _site_id_problem(value: str) -> str | None:
    if value == ANY_SITE:
        return "'*' is not a site id (escalation policies use it for every other site)"
    return _id_problem(value)


def _topic_problem(value: str) -> str | None:
    if _ID_PATTERN.fullmatch(value):
        return None
    return f"{value!r} is not an MQTT topic segment ({_ID_RULE})"


def _bounded_text(value: str, limit: int) -> str | None:
    if not value.strip():
        return "must not be empty or only spaces"
    if len(value) > limit:
        return f"{len(value)} characters, at most {limit}"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "must not contain control characters"
    return None


def _name_problem(value: str) -> str | None:
    return _bounded_text(value, MAX_NAME_LEN)


def _plan_problem(value: str) -> str | None:
    return _bounded_text(value, MAX_PLAN_LEN)


def _time_zone_problem(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; bad keys raise ValueError
        return f"{value!r} is not an IANA time zone{_did_you_mean(value, zoneinfo.available_timezones())}"
    return None


def _unknown(kind: str, value: str, known: Iterable[str]) -> str:
    """ "unknown <kind> 'x'" with the known ids, or the close ones when there are many."""
    names = sorted(known)
    if not names:
        hint = f"no {kind}s are defined"
    elif len(names) <= _KNOWN_LISTED:
        hint = f"known: {', '.join(names)}"
    else:
        close = difflib.get_close_matches(value, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"{len(names)} {kind}s are defined"
    return f"unknown {kind} {value!r} ({hint})"


def _or(choices: Sequence[str]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else _kind(value)


def _kind(value: object) -> str:
    """What a JSON value is, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
