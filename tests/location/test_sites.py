"""The site map: every validation rule with its message, lookups, borders, plan <-> earth, place texts, speed."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.location.model import LocalPoint, Place
from gateway.location.sites import (
    EMPTY_SITE_MAP,
    Building,
    Floor,
    Room,
    Site,
    SiteMap,
    SiteMapError,
    Zone,
    load_site_map,
    parse_site_map,
)

EXAMPLE: Final = Path(__file__).parents[2] / "deploy" / "sites.example.geojson"
FAST: Final = settings(max_examples=100, deadline=None)

#: Test maps are drawn in metres around this point (an equirectangular sketch: exact enough to place areas).
LAT0: Final = 52.52
LON0: Final = 13.40
_M_PER_DEG_LAT: Final = 111_250.0
_M_PER_DEG_LON: Final = 111_320.0 * math.cos(math.radians(LAT0))

Doc = dict[str, Any]


def geo(x: float, y: float) -> list[float]:
    """[lon, lat] of the point x metres east and y metres north of (LAT0, LON0)."""
    return [round(LON0 + x / _M_PER_DEG_LON, 9), round(LAT0 + y / _M_PER_DEG_LAT, 9)]


def rect(x0: float, y0: float, x1: float, y1: float) -> list[list[list[float]]]:
    return [[geo(x0, y0), geo(x1, y0), geo(x1, y1), geo(x0, y1), geo(x0, y0)]]


def feature(geometry_type: str, coordinates: object, **properties: object) -> Doc:
    return {
        "type": "Feature",
        "geometry": {"type": geometry_type, "coordinates": coordinates},
        "properties": properties,
    }


def site(
    site_id: str = "north", box: tuple[float, float, float, float] = (-200, -150, 200, 150), **props: object
) -> Doc:
    return feature("Polygon", rect(*box), kind="site", id=site_id, name=props.pop("name", site_id.title()), **props)


def zone(zone_id: str, box: tuple[float, float, float, float], site_id: str = "north", **props: object) -> Doc:
    return feature(
        "Polygon", rect(*box), kind="zone", id=zone_id, name=props.pop("name", zone_id.title()), site=site_id, **props
    )


def building(
    building_id: str = "b", at: tuple[float, float] = (0, 0), *floors: Doc, site_id: str = "north", **props: object
) -> Doc:
    name = props.pop("name", f"Building {building_id.upper()}")
    return feature(
        "Point", geo(*at), kind="building", id=building_id, name=name, site=site_id, floors=list(floors), **props
    )


def floor(number: int, *rooms: Doc, **props: object) -> Doc:
    return {"number": number, **props, "rooms": list(rooms)}


def room(room_id: str, x0: float, y0: float, x1: float, y1: float, **props: object) -> Doc:
    return {"id": room_id, **props, "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}


def collection(*features: Doc) -> Doc:
    return {"type": "FeatureCollection", "features": list(features)}


def base() -> Doc:
    """A valid map: a site, a zone, a building with a ground floor of two rooms; tests break one thing each."""
    return collection(
        site(time_zone="Europe/Berlin"),
        zone("yard", (-200, -150, 200, -80)),
        building("b", (0, 0), floor(0, room("001", 0, 0, 10, 8), room("002", 10, 0, 20, 8))),
    )


def problems(document: object) -> list[str]:
    with pytest.raises(SiteMapError) as caught:
        parse_site_map(json.dumps(document))
    return list(caught.value.problems)


def parse(document: object) -> SiteMap:
    return parse_site_map(json.dumps(document))


# --- the example and the error type -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> SiteMap:
    return load_site_map(EXAMPLE)


def test_the_example_loads(example: SiteMap) -> None:
    assert [s.id for s in example.sites] == ["north", "depot"]
    assert [z.id for z in example.zones] == ["yard", "labs"]
    assert [b.id for b in example.buildings] == ["a", "b"]
    b = example.buildings[1]
    assert (b.rotation_deg, [f.number for f in b.floors]) == (15.0, [-1, 0, 2])
    assert b.floors[0].rooms == ()  # a floor without rooms is allowed
    assert b.floors[2].plan == "plans/north-b-2.svg"
    assert b.floors[2].plan_bounds == ((-1.0, -1.0), (41.0, 21.0))
    assert example.site("depot") is not None
    assert example.site("depot").radius_m == 150.0  # type: ignore[union-attr]


def test_site_map_error_is_a_gateway_error_and_a_value_error() -> None:
    error = SiteMapError(["a: one", "b: two"])
    assert isinstance(error, GatewayError)
    assert isinstance(error, ValueError)
    assert error.problems == ("a: one", "b: two")
    assert str(error) == "a: one\nb: two"


def test_the_base_map_is_valid() -> None:
    site_map = parse(base())
    assert site_map.room_at(LocalPoint("b", 0, 5, 4)) == Place("north", "b", 0, "001", None)


# --- validation: one rule, one message ----------------------------------------------------------------------------


def _set(path: str, value: object) -> Any:
    """A change to the base map: set the value at a dotted path ("features.2.properties.floors.0.number")."""

    def change(document: Doc) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _delete(path: str) -> Any:
    def change(document: Doc) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[last]

    return change


def _add(*features: Doc) -> Any:
    def change(document: Doc) -> None:
        document["features"].extend(copy.deepcopy(features))

    return change


P0: Final = "features.0.properties"
P1: Final = "features.1.properties"
P2: Final = "features.2.properties"
ID_RULE: Final = "1 to 64 characters, none of '/', '+', '#' or control characters, no '$' first, no space at the ends"

RULES: Final = [
    # the collection
    ("top-level unknown field", _set("crs", {}), "<text>: unknown field 'crs'"),
    ("top-level misspelt field", _set("featurs", []), "<text>: unknown field 'featurs' (did you mean 'features'?)"),
    ("not a collection", _set("type", "Feature"), "type: expected 'FeatureCollection', got 'Feature'"),
    ("features not an array", _set("features", {}), "features: expected an array of features, got an object"),
    ("feature not an object", _add([]), "features[3]: expected a feature (an object), got an array"),  # type: ignore[arg-type]
    ("feature type", _set("features.1.type", "feature"), "features[1].type: expected 'Feature', got 'feature'"),
    ("feature unknown field", _set("features.1.fill", "#f00"), "features[1]: unknown field 'fill'"),
    (
        "properties not an object",
        _set("features.1.properties", None),
        "features[1].properties: expected an object, got null",
    ),
    # kinds and fields
    (
        "missing kind",
        _delete(f"{P1}.kind"),
        "features[1].properties: missing required field 'kind' (site, zone or building)",
    ),
    (
        "unknown kind",
        _set(f"{P1}.kind", "zome"),
        "features[1].properties.kind: unknown kind 'zome' (did you mean 'zone'?)",
    ),
    (
        "strange kind",
        _set(f"{P1}.kind", "road"),
        "features[1].properties.kind: unknown kind 'road' (expected site, zone or building)",
    ),
    (
        "kind not a string",
        _set(f"{P1}.kind", 3),
        "features[1].properties.kind: expected a string (site, zone or building), got a number",
    ),
    ("unknown field", _set(f"{P0}.nmae", "x"), "features[0].properties: unknown field 'nmae' (did you mean 'name'?)"),
    ("missing field", _delete(f"{P1}.name"), "features[1].properties: missing required field 'name'"),
    ("name not a string", _set(f"{P1}.name", 7), "features[1].properties.name: expected a string, got a number"),
    ("empty name", _set(f"{P1}.name", " "), "features[1].properties.name: must not be empty or only spaces"),
    (
        "name with a line break",
        _set(f"{P1}.name", "a\nb"),
        "features[1].properties.name: must not contain control characters",
    ),
    ("bad id", _set(f"{P1}.id", "a/b"), f"features[1].properties.id: 'a/b' is not a valid id ({ID_RULE})"),
    (
        "site id *",
        _add(site("*", (300, 300, 400, 400))),
        "features[3].properties.id: '*' is not a site id (escalation policies use it for every other site)",
    ),
    (
        "bad topic",
        _set(f"{P0}.topic", "cc/north"),
        f"features[0].properties.topic: 'cc/north' is not an MQTT topic segment ({ID_RULE})",
    ),
    (
        "bad time zone",
        _set(f"{P0}.time_zone", "Europe/Berln"),
        "features[0].properties.time_zone: 'Europe/Berln' is not an IANA time zone (did you mean 'Europe/Berlin'?)",
    ),
    (
        "made-up time zone",
        _set(f"{P0}.time_zone", "Mars/Olympus"),
        "features[0].properties.time_zone: 'Mars/Olympus' is not an IANA time zone",
    ),
    # geometry
    (
        "zone as a point",
        _set("features.1.geometry", {"type": "Point", "coordinates": geo(0, 0)}),
        "features[1].geometry.type: expected Polygon or MultiPolygon, got 'Point'",
    ),
    (
        "building as a polygon",
        _set("features.2.geometry", {"type": "Polygon", "coordinates": rect(0, 0, 1, 1)}),
        "features[2].geometry.type: expected Point, got 'Polygon'",
    ),
    (
        "no geometry",
        _set("features.1.geometry", None),
        "features[1].geometry: expected a geometry (Polygon or MultiPolygon), got null",
    ),
    ("geometry unknown field", _set("features.1.geometry.crs", 1), "features[1].geometry: unknown field 'crs'"),
    (
        "latitude out of range",
        _set("features.2.geometry.coordinates", [13.4, 95.0]),
        "features[2].geometry.coordinates: latitude 95 is out of range (-90 to 90)",
    ),
    (
        "longitude out of range",
        _set("features.2.geometry.coordinates", [-181.5, 52.0]),
        "features[2].geometry.coordinates: longitude -181.5 is out of range (-180 to 180)",
    ),
    (
        "lat and lon swapped",
        _set("features.1.geometry.coordinates.0.1", [52.52, 113.4]),
        "features[1].geometry.coordinates[0][1]: latitude 113.4 is out of range (-90 to 90)",
    ),
    (
        "position too long",
        _set("features.2.geometry.coordinates", [13.4, 52.5, 0, 1]),
        "features[2].geometry.coordinates: expected a position [lon, lat] (or [lon, lat, altitude]), got 4 numbers",
    ),
    (
        "position not numbers",
        _set("features.2.geometry.coordinates", ["13.4", 52.5]),
        "features[2].geometry.coordinates[0]: expected a number, got a string",
    ),
    (
        "not a finite number",
        _set("features.2.geometry.coordinates", [math.nan, 52.5]),
        "features[2].geometry.coordinates[0]: expected a finite number, got nan",
    ),
    (
        "too few points",
        _set("features.1.geometry.coordinates", [[geo(0, 0), geo(0, 10), geo(0, 0)]]),
        "features[1].geometry.coordinates[0]: a polygon needs at least 3 distinct points, got 2",
    ),
    (
        "no rings",
        _set("features.1.geometry.coordinates", []),
        "features[1].geometry.coordinates: expected an array of rings (the outline, then any holes), "
        "got an empty array",
    ),
    (
        "self-intersecting zone",
        _set("features.1.geometry.coordinates", [[[13.0, 52.0], [13.5, 52.5], [13.5, 52.0], [13.0, 52.5]]]),
        "features[1].geometry.coordinates: invalid polygon: self-intersection at lon 13.25, lat 52.25",
    ),
    (
        "hole outside its shell",
        _set("features.1.geometry.coordinates", [*rect(0, 0, 10, 10), *rect(20, 20, 30, 30)]),
        re.compile(
            r"features\[1\]\.geometry\.coordinates: invalid polygon: "
            r"hole lies outside shell at lon 13\.40\d+, lat 52\.52\d+"
        ),
    ),
    (
        "overlapping multipolygon parts",
        _set("features.1.geometry", {"type": "MultiPolygon", "coordinates": [rect(0, 0, 10, 10), rect(5, 5, 15, 15)]}),
        re.compile(
            r"features\[1\]\.geometry\.coordinates: invalid polygon: self-intersection at lon [\d.]+, lat [\d.]+"
        ),
    ),
    # sites drawn as points
    (
        "point site without radius",
        _add(feature("Point", geo(500, 500), kind="site", id="depot", name="Depot")),
        "features[3].properties: missing required field 'radius_m' (a site drawn as a point is a circle)",
    ),
    (
        "radius out of range",
        _add(feature("Point", geo(500, 500), kind="site", id="depot", name="Depot", radius_m=0)),
        "features[3].properties.radius_m: 0 is out of range (above 0, at most 10000 m)",
    ),
    (
        "radius of a polygon site",
        _set(f"{P0}.radius_m", 50),
        "features[0].properties.radius_m: only a site drawn as a point has a radius",
    ),
    # references, duplicates, containment
    (
        "duplicate site",
        _add(site("north", (300, 300, 400, 400))),
        "features[3].properties.id: duplicate site id 'north' (first at features[0])",
    ),
    (
        "duplicate zone",
        _add(zone("yard", (0, 0, 10, 10))),
        "features[3].properties.id: duplicate zone id 'yard' (first at features[1])",
    ),
    (
        "duplicate building",
        _add(building("b", (50, 50))),
        "features[3].properties.id: duplicate building id 'b' (first at features[2])",
    ),
    (
        "zone of an unknown site",
        _set(f"{P1}.site", "nroth"),
        "features[1].properties.site: unknown site 'nroth' (known: north)",
    ),
    (
        "building of an unknown site",
        _set(f"{P2}.site", "south"),
        "features[2].properties.site: unknown site 'south' (known: north)",
    ),
    (
        "zone outside its site",
        _set("features.1.geometry.coordinates", rect(300, 300, 400, 400)),
        "features[1].geometry: lies outside its site 'north'",
    ),
    (
        "zone partly outside its site",
        _set("features.1.geometry.coordinates", rect(190, 0, 210, 100)),
        re.compile(r"features\[1\]\.geometry: lies partly outside its site 'north' \(about 10\d\d m² outside\)"),
    ),
    (
        "building outside its site",
        _set("features.2.geometry.coordinates", geo(250, 0)),
        "features[2].geometry: the anchor lies outside its site 'north'",
    ),
    # buildings and floors
    (
        "rotation out of range",
        _set(f"{P2}.rotation_deg", 400),
        "features[2].properties.rotation_deg: 400 is out of range (-360 to 360 degrees)",
    ),
    (
        "rotation not a number",
        _set(f"{P2}.rotation_deg", "15"),
        "features[2].properties.rotation_deg: expected a number, got a string",
    ),
    (
        "floors not an array",
        _set(f"{P2}.floors", {}),
        "features[2].properties.floors: expected an array of objects, got an object",
    ),
    (
        "duplicate floor",
        lambda d: d["features"][2]["properties"]["floors"].append(floor(0)),
        "features[2].properties.floors[1].number: duplicate floor 0 (first at floors[0])",
    ),
    (
        "floor number not an integer",
        _set(f"{P2}.floors.0.number", 1.5),
        "features[2].properties.floors[0].number: expected an integer, got a number",
    ),
    (
        "floor number out of range",
        _set(f"{P2}.floors.0.number", 300),
        "features[2].properties.floors[0].number: 300 is out of range (-20 to 200)",
    ),
    ("floor unknown field", _set(f"{P2}.floors.0.level", 1), "features[2].properties.floors[0]: unknown field 'level'"),
    (
        "plan without bounds",
        _set(f"{P2}.floors.0.plan", "b0.png"),
        "features[2].properties.floors[0]: "
        "missing required field 'plan_bounds' (the plan's [[x0, y0], [x1, y1]] in metres)",
    ),
    (
        "bounds without plan",
        _set(f"{P2}.floors.0.plan_bounds", [[0, 0], [10, 10]]),
        "features[2].properties.floors[0].plan_bounds: plan_bounds places a plan image: add 'plan' or remove it",
    ),
    (
        "bounds the wrong way",
        _set(f"{P2}.floors.0", floor(0, plan="b.png", plan_bounds=[[10, 0], [0, 10]])),
        "features[2].properties.floors[0].plan_bounds: the first corner must be the lower left: x0 < x1 and y0 < y1",
    ),
    # rooms
    (
        "duplicate room",
        _set(f"{P2}.floors.0.rooms.1.id", "001"),
        "features[2].properties.floors[0].rooms[1].id: duplicate room id '001' (first at rooms[0])",
    ),
    (
        "room unknown field",
        _set(f"{P2}.floors.0.rooms.0.area", 80),
        "features[2].properties.floors[0].rooms[0]: unknown field 'area'",
    ),
    (
        "room without polygon",
        _delete(f"{P2}.floors.0.rooms.0.polygon"),
        "features[2].properties.floors[0].rooms[0]: missing required field 'polygon'",
    ),
    (
        "overlapping rooms",
        _set(f"{P2}.floors.0.rooms.1", room("002", 9, 0, 20, 8)),
        "features[2].properties.floors[0].rooms[1].polygon: overlaps room '001' (rooms[0]) by 8.00 m²",
    ),
    (
        "room inside a room",
        _set(f"{P2}.floors.0.rooms.1", room("002", 2, 2, 4, 4)),
        "features[2].properties.floors[0].rooms[1].polygon: overlaps room '001' (rooms[0]) by 4.00 m²",
    ),
    (
        "self-intersecting room",
        _set(f"{P2}.floors.0.rooms.1.polygon", [[0, 0], [4, 4], [4, 0], [0, 4]]),
        "features[2].properties.floors[0].rooms[1].polygon: invalid polygon: self-intersection at x 2, y 2",
    ),
    (
        "room of two points",
        _set(f"{P2}.floors.0.rooms.1.polygon", [[0, 0], [4, 4], [0, 0]]),
        "features[2].properties.floors[0].rooms[1].polygon: a polygon needs at least 3 distinct points, got 2",
    ),
    (
        "room point not [x, y]",
        _set(f"{P2}.floors.0.rooms.1.polygon.2", [1, 2, 3]),
        "features[2].properties.floors[0].rooms[1].polygon[2]: expected a point [x, y] (metres), got 3 numbers",
    ),
    (
        "room in millimetres",
        _set(f"{P2}.floors.0.rooms.1.polygon.2", [20000, 8000]),
        "features[2].properties.floors[0].rooms[1].polygon[2]: (20000, 8000) is more than 5000 m from the anchor "
        "(plan coordinates are metres: is the plan in millimetres?)",
    ),
    (
        "room of an unknown zone",
        _set(f"{P2}.floors.0.rooms.0.zone", "yrad"),
        "features[2].properties.floors[0].rooms[0].zone: unknown zone 'yrad' (known: yard)",
    ),
    (
        "room of another site's zone",
        lambda d: (
            _add(site("south", (300, 300, 400, 400)), zone("dock", (300, 300, 350, 350), "south"))(d),
            _set(f"{P2}.floors.0.rooms.0.zone", "dock")(d),
        ),
        "features[2].properties.floors[0].rooms[0].zone: "
        "zone 'dock' is in site 'south', not in this building's site 'north'",
    ),
]


@pytest.mark.parametrize(("change", "expected"), [(c, e) for _, c, e in RULES], ids=[r[0] for r in RULES])
def test_each_rule_has_its_message(change: Any, expected: str | re.Pattern[str]) -> None:
    document = base()
    change(document)
    found = problems(document)
    assert len(found) == 1, found
    if isinstance(expected, str):
        assert found == [expected]
    else:
        assert expected.fullmatch(found[0]), found


def test_touching_rooms_and_floors_without_rooms_are_fine() -> None:
    document = base()
    document["features"][2]["properties"]["floors"].append({"number": -1, "name": "Basement"})
    site_map = parse(document)
    assert [f.number for f in site_map.buildings[0].floors] == [0, -1]
    assert site_map.buildings[0].floors[1] == Floor(number=-1, name="Basement")


def test_null_properties_are_absent_as_gis_tools_write_them() -> None:
    document = base()
    for one in document["features"]:
        one["properties"].update({"topic": None, "radius_m": None, "rotation_deg": None, "site": None, "floors": None})
    document["features"][1]["properties"]["site"] = "north"
    document["features"][2]["properties"]["site"] = "north"
    site_map = parse(document)
    assert site_map.topic_for(Place("north")) == "north"
    document["features"][1]["properties"]["name"] = None
    assert problems(document) == ["features[1].properties: missing required field 'name'"]


def test_a_tiny_overlap_is_tolerated() -> None:
    document = base()
    document["features"][2]["properties"]["floors"][0]["rooms"][1] = room("002", 9.999, 0, 20, 8)  # 0.008 m²
    parse(document)


def test_several_problems_at_once_in_file_order() -> None:
    document = base()
    document["features"][0]["properties"]["time_zone"] = "Nowhere/Town"
    document["features"][1]["properties"]["site"] = "nroth"
    document["features"][2]["properties"]["floors"][0]["rooms"][1] = room("001", 5, 0, 20, 8)
    document["features"][2]["geometry"]["coordinates"] = [13.4, 91]
    document["features"].append(feature("LineString", [geo(0, 0), geo(1, 1)], kind="road"))
    assert problems(document) == [
        "features[0].properties.time_zone: 'Nowhere/Town' is not an IANA time zone",
        "features[1].properties.site: unknown site 'nroth' (known: north)",
        "features[2].properties.floors[0].rooms[1].id: duplicate room id '001' (first at rooms[0])",
        "features[2].properties.floors[0].rooms[1].polygon: overlaps room '001' (rooms[0]) by 40.00 m²",
        "features[2].geometry.coordinates: latitude 91 is out of range (-90 to 90)",
        "features[3].properties.kind: unknown kind 'road' (expected site, zone or building)",
    ]


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(SiteMapError) as caught:
        parse_site_map('{"type": "FeatureCollection",\n "features": [,]}', source="sites.geojson")
    assert caught.value.problems == ("sites.geojson line 2: expecting value (column 15)",)
    with pytest.raises(SiteMapError) as caught:
        parse_site_map("")
    assert caught.value.problems == ("<text> line 1: expecting value (column 1)",)


def test_the_top_level_must_be_an_object() -> None:
    assert problems([]) == ["<text>: expected a GeoJSON FeatureCollection (an object), got an array"]


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "sites.geojson"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(base()).encode())
    assert len(load_site_map(path).sites) == 1


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.geojson"
    with pytest.raises(SiteMapError) as caught:
        load_site_map(missing)
    assert caught.value.problems == (f"{missing}: cannot read the file (No such file or directory)",)
    latin = tmp_path / "latin.geojson"
    latin.write_bytes(b'{"type": "\xe9"}')
    with pytest.raises(SiteMapError) as caught:
        load_site_map(latin)
    assert caught.value.problems == (f"{latin}: not UTF-8 text (invalid byte at offset 10)",)


def test_file_syntax_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sites.geojson"
    path.write_text('{\n  "type": "FeatureCollection"\n  "features": []\n}\n')
    with pytest.raises(SiteMapError) as caught:
        load_site_map(path)
    assert caught.value.problems == (f"{path} line 3: expecting ',' delimiter (column 3)",)


@FAST
@given(st.text(max_size=200))
def test_garbage_text_is_only_ever_a_site_map_error(text: str) -> None:
    error: SiteMapError | None = None
    try:
        parse_site_map(text)
    except SiteMapError as exc:
        error = exc
    assert error is None or error.problems


def _paths(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


EXAMPLE_DOCUMENT: Final = json.loads(EXAMPLE.read_text())
EXAMPLE_PATHS: Final = _paths(EXAMPLE_DOCUMENT)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)


@FAST
@given(st.lists(st.tuples(st.sampled_from(EXAMPLE_PATHS), json_values), min_size=1, max_size=3))
def test_a_damaged_example_is_a_site_map_or_a_site_map_error(changes: list[tuple[tuple[Any, ...], object]]) -> None:
    document = copy.deepcopy(EXAMPLE_DOCUMENT)
    for path, value in changes:
        target: Any = document
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this path
    error: SiteMapError | None = None
    try:
        parse_site_map(json.dumps(document))
    except SiteMapError as exc:
        error = exc
    assert error is None or (error.problems and all(": " in line for line in error.problems))


# --- outdoor places ------------------------------------------------------------------------------------------------


def test_place_of_in_a_site_and_its_zones(example: SiteMap) -> None:
    lat, lon = geo(0, -100)[::-1]
    assert example.place_of(lat, lon) == Place(site="north", zone="yard")
    lat, lon = geo(-100, 100)[::-1]
    assert example.place_of(lat, lon) == Place(site="north")  # in the site, in no zone
    assert example.place_of(52.4987, 13.4321) == Place(site="depot")  # the centre of a site drawn as a point
    assert example.place_of(52.4987, 13.4321 + 140 / _M_PER_DEG_LON) == Place(site="depot")
    assert example.place_of(52.4987, 13.4321 + 160 / _M_PER_DEG_LON) == Place()
    assert example.place_of(48.0, 2.0) == Place()
    assert example.place_of(math.nan, 13.4) == Place()
    assert example.place_of(95.0, 13.4) == Place()


#: Borders: areas drawn on exact binary fractions of a degree, so that equal areas really are equal.
BORDERS: Final = collection(
    feature(
        "Polygon", [[[13.25, 52.25], [13.75, 52.25], [13.75, 52.75], [13.25, 52.75]]], kind="site", id="s", name="S"
    ),
    feature("Polygon", [[[13.75, 52.25], [14.0, 52.25], [14.0, 52.75], [13.75, 52.75]]], kind="site", id="t", name="T"),
    feature(
        "Polygon",
        [[[13.25, 52.25], [13.5, 52.25], [13.5, 52.5], [13.25, 52.5]]],
        kind="zone",
        id="west",
        name="W",
        site="s",
    ),
    feature(
        "Polygon",
        [[[13.5, 52.25], [13.75, 52.25], [13.75, 52.5], [13.5, 52.5]]],
        kind="zone",
        id="east",
        name="E",
        site="s",
    ),
    feature(
        "Polygon",
        [[[13.25, 52.5], [13.5, 52.5], [13.5, 52.75], [13.25, 52.75]]],
        kind="zone",
        id="big",
        name="B",
        site="s",
    ),
    feature(
        "Polygon",
        [[[13.5, 52.625], [13.625, 52.625], [13.625, 52.75], [13.5, 52.75]]],
        kind="zone",
        id="small",
        name="Sm",
        site="s",
    ),
    feature(
        "Polygon",
        [[[13.3125, 52.5625], [13.375, 52.5625], [13.375, 52.625], [13.3125, 52.625]]],
        kind="zone",
        id="inner",
        name="I",
        site="s",
    ),
    feature(
        "Polygon",
        [[[13.75, 52.25], [14.0, 52.25], [14.0, 52.75], [13.75, 52.75]]],
        kind="zone",
        id="tz",
        name="TZ",
        site="t",
    ),
)


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [
        (52.375, 13.5, Place(site="s", zone="west")),  # between equal zones: the first in the file
        (52.6875, 13.5, Place(site="s", zone="small")),  # between a big and a small zone: the small one
        (52.59375, 13.34375, Place(site="s", zone="inner")),  # a zone within a zone: the inner one
        (52.5625, 13.3125, Place(site="s", zone="inner")),  # on the inner zone's corner
        (52.375, 13.75, Place(site="t", zone="tz")),  # between sites: the smaller; and only its own zones
        (52.25, 13.375, Place(site="s", zone="west")),  # on the outer edge: inside
        (52.2499, 13.375, Place()),
    ],
)
def test_borders_are_decided_by_size_then_file_order(lat: float, lon: float, expected: Place) -> None:
    assert parse(BORDERS).place_of(lat, lon) == expected


# --- rooms ---------------------------------------------------------------------------------------------------------


def test_room_at_in_rooms_corridors_and_on_walls(example: SiteMap) -> None:
    assert example.room_at(LocalPoint("b", 2, 35, 4)) == Place("north", "b", 2, "214", "labs")  # the room's zone
    assert example.room_at(LocalPoint("b", 2, 5, 4)) == Place("north", "b", 2, "211", "labs")  # zone around it
    assert example.room_at(LocalPoint("b", 2, 5, 10)) == Place("north", "b", 2, None, "labs")  # the corridor
    assert example.room_at(LocalPoint("b", 2, 10, 4)) == Place("north", "b", 2, "211", "labs")  # wall: first room
    assert example.room_at(LocalPoint("b", 2, 20, 12)) == Place("north", "b", 2, "221", "labs")  # corner, first
    assert example.room_at(LocalPoint("a", 0, 5, 5)) == Place("north", "a", 0, "101", None)
    assert example.room_at(LocalPoint("a", 0, -500, 0)) == Place("north", "a", 0, None, None)
    # building A's anchor is 50 m north of the site's middle: 180 m south of it is in the loading yard
    assert example.room_at(LocalPoint("a", 0, 0, -180)) == Place("north", "a", 0, None, "yard")
    assert example.room_at(LocalPoint("b", 7, 5, 4)) == Place("north", "b", 7, None, "labs")  # an unlisted floor
    assert example.room_at(LocalPoint("nope", 0, 5, 4)) == Place()
    assert example.room_at(LocalPoint("b", 2, math.nan, 4)).room is None


def test_on_a_wall_between_rooms_of_different_sizes_the_smaller_wins() -> None:
    document = base()
    document["features"][2]["properties"]["floors"][0]["rooms"][1] = room("002", 10, 0, 14, 8)
    site_map = parse(document)
    assert site_map.room_at(LocalPoint("b", 0, 10, 4)).room == "002"
    assert site_map.room_at(LocalPoint("b", 0, 9.99, 4)).room == "001"


def test_room_lookup(example: SiteMap) -> None:
    lab = example.room("b", 2, "214")
    assert lab is not None
    assert (lab.name, lab.zone, lab.centroid) == ("Lab", "labs", (35.0, 4.0))
    assert lab.polygon == ((30.0, 0.0), (40.0, 0.0), (40.0, 8.0), (30.0, 8.0))
    assert example.room("b", 2, "999") is None
    assert example.room("b", 3, "214") is None
    assert example.room("x", 2, "214") is None


def test_closed_and_open_room_outlines_are_the_same() -> None:
    document = base()
    rooms = document["features"][2]["properties"]["floors"][0]["rooms"]
    rooms[0]["polygon"].append(rooms[0]["polygon"][0])
    site_map = parse(document)
    assert site_map.room("b", 0, "001") == parse(base()).room("b", 0, "001")


# --- plan <-> earth --------------------------------------------------------------------------------------------------


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def _vincenty(lat1: float, lon1: float, lat2: float, lon2: float) -> tuple[float, float]:
    """Geodesic distance (m) and initial azimuth (degrees) on WGS84, by Vincenty's inverse formula."""
    a, f = 6_378_137.0, 1 / 298.257223563
    b = a * (1 - f)
    big_l = math.radians(lon2 - lon1)
    u1, u2 = math.atan((1 - f) * math.tan(math.radians(lat1))), math.atan((1 - f) * math.tan(math.radians(lat2)))
    su1, cu1, su2, cu2 = math.sin(u1), math.cos(u1), math.sin(u2), math.cos(u2)
    lam = big_l
    for _ in range(200):
        sl, cl = math.sin(lam), math.cos(lam)
        ss = math.hypot(cu2 * sl, cu1 * su2 - su1 * cu2 * cl)
        if ss == 0:
            return 0.0, 0.0
        cs = su1 * su2 + cu1 * cu2 * cl
        sigma = math.atan2(ss, cs)
        sa = cu1 * cu2 * sl / ss
        c2a = 1 - sa * sa
        c2m = cs - 2 * su1 * su2 / c2a if c2a else 0.0
        c = f / 16 * c2a * (4 + f * (4 - 3 * c2a))
        previous = lam
        lam = big_l + (1 - c) * f * sa * (sigma + c * ss * (c2m + c * cs * (-1 + 2 * c2m * c2m)))
        if abs(lam - previous) < 1e-14:
            break
    u_sq = c2a * (a * a - b * b) / (b * b)
    big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    d_sigma = (
        big_b
        * ss
        * (c2m + big_b / 4 * (cs * (-1 + 2 * c2m**2) - big_b / 6 * c2m * (-3 + 4 * ss**2) * (-3 + 4 * c2m**2)))
    )
    azimuth = math.degrees(math.atan2(cu2 * math.sin(lam), cu1 * su2 - su1 * cu2 * math.cos(lam))) % 360
    return b * big_a * (sigma - d_sigma), azimuth


def _one_building(lat: float, lon: float, rotation: float) -> SiteMap:
    return SiteMap(buildings=(Building(id="b", name="B", site="s", lat=lat, lon=lon, rotation_deg=rotation),))


def test_known_distances_and_directions() -> None:
    north_up = _one_building(LAT0, LON0, 0.0)
    lat, lon = north_up.to_geo(LocalPoint("b", 0, 100, 0))
    assert _haversine(LAT0, LON0, lat, lon) == pytest.approx(100, abs=0.5)  # a sphere is within 0.5 % of WGS84
    assert lat == pytest.approx(LAT0, abs=1e-6)  # due east (the plane parts from the parallel by 1 mm here)
    assert lon > LON0
    lat, lon = north_up.to_geo(LocalPoint("b", 0, 0, 100))
    assert lon == pytest.approx(LON0, abs=1e-12)  # due north
    assert lat > LAT0
    assert north_up.to_geo(LocalPoint("b", 0, 0, 0)) == pytest.approx((LAT0, LON0), abs=1e-12)

    turned = _one_building(LAT0, LON0, 90.0)  # the plan's y axis points east, so its x axis points south
    lat, lon = turned.to_geo(LocalPoint("b", 0, 0, 100))
    assert _vincenty(LAT0, LON0, lat, lon) == pytest.approx((100, 90), abs=1e-4)
    lat, lon = turned.to_geo(LocalPoint("b", 0, 100, 0))
    assert _vincenty(LAT0, LON0, lat, lon) == pytest.approx((100, 180), abs=1e-4)
    east = north_up.to_geo(LocalPoint("b", 0, 100, 0))
    back = turned.to_local("b", 3, *east)
    assert (back.building, back.floor) == ("b", 3)
    assert back.x == pytest.approx(0, abs=1e-6)  # 100 m east is the turned plan's north
    assert back.y == pytest.approx(100)

    tilted = _one_building(LAT0, LON0, 15.0)
    lat, lon = tilted.to_geo(LocalPoint("b", 0, 0, 500))
    assert _vincenty(LAT0, LON0, lat, lon) == pytest.approx((500, 15), abs=1e-4)


def test_plan_points_of_unknown_buildings_are_key_errors() -> None:
    with pytest.raises(KeyError, match="unknown building 'x'"):
        EMPTY_SITE_MAP.to_geo(LocalPoint("x", 0, 0, 0))
    with pytest.raises(KeyError, match="unknown building 'x'"):
        EMPTY_SITE_MAP.to_local("x", 0, 52.0, 13.0)


anchors = st.tuples(
    st.floats(-80, 80), st.floats(-180, 180), st.floats(0, 360, exclude_max=True)
)  # |lat| <= 80: Vincenty's formula needs no pole care there


@FAST
@given(anchors, st.floats(-5000, 5000), st.floats(-5000, 5000), st.integers(-3, 5))
def test_plan_to_earth_and_back_within_a_millimetre(
    anchor: tuple[float, float, float], x: float, y: float, number: int
) -> None:
    site_map = _one_building(*anchor)
    lat, lon = site_map.to_geo(LocalPoint("b", number, x, y))
    back = site_map.to_local("b", number, lat, lon)
    assert (back.building, back.floor) == ("b", number)
    assert math.hypot(back.x - x, back.y - y) < 0.001


@FAST
@given(anchors, st.floats(0, 1000), st.floats(0, 360))
def test_plan_metres_are_earth_metres_within_a_centimetre(
    anchor: tuple[float, float, float], distance: float, bearing: float
) -> None:
    lat0, lon0, rotation = anchor
    x, y = distance * math.sin(math.radians(bearing)), distance * math.cos(math.radians(bearing))
    lat, lon = _one_building(lat0, lon0, rotation).to_geo(LocalPoint("b", 0, x, y))
    measured, azimuth = _vincenty(lat0, lon0, lat, lon)
    assert abs(measured - distance) < 0.01
    turn = (azimuth - (rotation + bearing) + 180) % 360 - 180
    assert abs(math.radians(turn)) * distance < 0.01  # sideways error


# --- texts, topics, time zones, value types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("place", "text"),
    [
        (Place("north", "b", 2, "214", "labs"), "North Plant, Building B, floor 2, room 214 (Lab)"),
        (Place("north", "b", 2, "211", "labs"), "North Plant, Building B, floor 2, room 211"),
        (Place("north", "b", 2, None, "labs"), "North Plant, Building B, floor 2"),
        (Place("north", "a", 0, "101"), "North Plant, Building A, floor 0 (Ground floor), room 101 (Reception)"),
        (Place("north", zone="yard"), "North Plant, Loading Yard"),
        (Place("north"), "North Plant"),
        (Place("depot"), "South Depot"),
        (Place("south", "c", 1, "7", "gate"), "south, c, floor 1, room 7"),  # ids the map does not know
        (Place("south", zone="gate"), "south, gate"),
        (Place(floor=3), "floor 3"),
        (Place(), ""),
    ],
)
def test_describe(example: SiteMap, place: Place, text: str) -> None:
    assert example.describe(place) == text


def test_topics_time_zones_and_sites(example: SiteMap) -> None:
    assert example.topic_for(Place("north", zone="yard")) == "north-yard"  # the zone's topic
    assert example.topic_for(Place("north", "b", 2, "214", "labs")) == "north-plant"  # zone without one: the site's
    assert example.topic_for(Place("north")) == "north-plant"
    assert example.topic_for(Place("depot")) == "depot"  # no topic: the site id
    assert example.topic_for(Place(zone="yard")) == "north-yard"
    assert example.topic_for(Place("depot", zone="yard")) == "depot"  # another site's zone does not route it
    assert example.topic_for(Place("south")) is None
    assert example.topic_for(Place()) is None
    assert example.time_zone("north") == "Europe/Berlin"
    assert example.time_zone("south") is None
    assert example.time_zone(None) is None
    north = example.site("north")
    assert north is not None
    assert (north.name, north.topic, north.time_zone, north.radius_m) == (
        "North Plant",
        "north-plant",
        "Europe/Berlin",
        None,
    )
    assert example.site("south") is None


def test_value_types_compare_without_their_shapes_and_are_frozen(example: SiteMap) -> None:
    again = load_site_map(EXAMPLE)
    assert again == example
    assert again.sites == example.sites
    assert hash(again.buildings) == hash(example.buildings)
    lab = example.room("b", 2, "214")
    assert lab is not None
    assert lab == dataclasses.replace(lab, shape=None)
    assert {lab} == {again.room("b", 2, "214")}
    for value in (example, example.sites[0], example.zones[0], example.buildings[0], lab):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, ())
    assert isinstance(example.sites[0], Site)
    assert isinstance(example.zones[0], Zone)
    assert isinstance(lab, Room)


def test_the_empty_map_knows_no_place() -> None:
    assert EMPTY_SITE_MAP.place_of(52.52, 13.40) == Place()
    assert EMPTY_SITE_MAP.room_at(LocalPoint("b", 0, 0, 0)) == Place()
    assert EMPTY_SITE_MAP.describe(Place("north", "b", 2, "214")) == "north, b, floor 2, room 214"
    assert EMPTY_SITE_MAP.topic_for(Place("north")) is None
    assert parse(collection()) == EMPTY_SITE_MAP


# --- speed -----------------------------------------------------------------------------------------------------------


def test_two_thousand_rooms_answer_ten_thousand_lookups_in_well_under_a_second() -> None:
    # 2,000 rooms of 4 m by 4 m in a 50 by 40 grid, sharing walls, on one floor; no room has a zone, so every
    # lookup also finds the zone around the point on earth.
    rooms = [room(f"r{i}-{j}", 4 * i, 4 * j, 4 * i + 4, 4 * j + 4) for i in range(50) for j in range(40)]
    site_map = parse(
        collection(
            site(box=(-50, -50, 300, 300)), zone("hall", (-50, -50, 300, 300)), building("b", (0, 0), floor(0, *rooms))
        )
    )
    chance = random.Random(4)
    points = [LocalPoint("b", 0, chance.uniform(-10, 210), chance.uniform(-10, 170)) for _ in range(10_000)]
    started = time.perf_counter()
    places = [site_map.room_at(point) for point in points]
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{elapsed:.3f} s"
    inside = [(p, q) for p, q in zip(points, places, strict=True) if 0 < p.x < 200 and 0 < p.y < 160]
    assert all(q.room == f"r{int(p.x // 4)}-{int(p.y // 4)}" for p, q in inside if p.x % 4 and p.y % 4)
    assert all(q.zone == "hall" for q in places)
