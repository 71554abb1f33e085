"""PIDF-LO documents: golden documents, RFC namespaces and element names, and read-back of any estimate."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.location.model import Estimate, LocationSource, Place
from gateway.location.pidf import pidf_lo

FAST: Final = settings(max_examples=300, deadline=None)

PIDF: Final = "urn:ietf:params:xml:ns:pidf"
DM: Final = "urn:ietf:params:xml:ns:pidf:data-model"
GP: Final = "urn:ietf:params:xml:ns:pidf:geopriv10"
GBP: Final = "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
GML: Final = "http://www.opengis.net/gml"
GS: Final = "http://www.opengis.net/pidflo/1.0"
CL: Final = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
CON: Final = "urn:ietf:params:xml:ns:geopriv:conf"

AT: Final = datetime(2026, 1, 1, 0, 3, 5, tzinfo=UTC)
FIX_AT: Final = datetime(2026, 1, 1, 0, 3, 0, tzinfo=UTC)
ENTITY: Final = "pres:wb-0001@panic-gateway"
PLACE: Final = Place(site="plant-north", building="B", floor=2, room="214", zone="east-wing")

GPS_ESTIMATE: Final = Estimate(
    lat=52.5203,
    lon=13.4049,
    accuracy_m=35.0,
    source=LocationSource.GPS,
    place=PLACE,
    text="Building B, floor 2, room 214",
    why="GPS fix 5 s before the press.",
    at=FIX_AT,
)

_HEAD: Final = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
    ' xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:gbp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"'
    ' xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0"'
    ' xmlns:cl="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" xmlns:con="urn:ietf:params:xml:ns:geopriv:conf"'
    ' entity="pres:wb-0001@panic-gateway">\n'
)

GOLDEN_CIRCLE: Final = (
    _HEAD
    + """\
  <dm:device id="device-wb-0001">
    <gp:geopriv>
      <gp:location-info>
        <gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">
          <gml:pos>52.5203000 13.4049000</gml:pos>
          <gs:radius uom="urn:ogc:def:uom:EPSG::9001">35.0</gs:radius>
        </gs:Circle>
        <con:confidence pdf="unknown">68</con:confidence>
        <cl:civicAddress>
          <cl:LOC>east-wing</cl:LOC>
          <cl:FLR>2</cl:FLR>
          <cl:NAM>plant-north</cl:NAM>
          <cl:BLD>B</cl:BLD>
          <cl:ROOM>214</cl:ROOM>
        </cl:civicAddress>
      </gp:location-info>
      <gp:usage-rules>
        <gbp:retransmission-allowed>false</gbp:retransmission-allowed>
        <gbp:retention-expiry>2026-01-02T00:03:05Z</gbp:retention-expiry>
      </gp:usage-rules>
      <gp:method>GPS</gp:method>
    </gp:geopriv>
    <dm:deviceID>urn:dev:wb-0001</dm:deviceID>
    <dm:timestamp>2026-01-01T00:03:00Z</dm:timestamp>
  </dm:device>
</presence>
"""
)

GOLDEN_POINT: Final = (
    _HEAD
    + """\
  <dm:device id="device-wb-0001">
    <gp:geopriv>
      <gp:location-info>
        <gml:Point srsName="urn:ogc:def:crs:EPSG::4326">
          <gml:pos>-33.8567844 151.2152967</gml:pos>
        </gml:Point>
      </gp:location-info>
      <gp:usage-rules>
        <gbp:retransmission-allowed>false</gbp:retransmission-allowed>
        <gbp:retention-expiry>2026-01-02T00:03:05Z</gbp:retention-expiry>
      </gp:usage-rules>
      <gp:method>Cell</gp:method>
    </gp:geopriv>
    <dm:deviceID>urn:dev:wb-0001</dm:deviceID>
    <dm:timestamp>2026-01-01T00:03:05Z</dm:timestamp>
  </dm:device>
</presence>
"""
)

GOLDEN_CIVIC: Final = (
    _HEAD
    + """\
  <dm:device id="device-wb-0001">
    <gp:geopriv>
      <gp:location-info>
        <cl:civicAddress>
          <cl:FLR>0</cl:FLR>
          <cl:BLD>A &amp; B</cl:BLD>
          <cl:ROOM>lobby</cl:ROOM>
        </cl:civicAddress>
      </gp:location-info>
      <gp:usage-rules>
        <gbp:retransmission-allowed>false</gbp:retransmission-allowed>
        <gbp:retention-expiry>2026-01-02T00:03:05Z</gbp:retention-expiry>
      </gp:usage-rules>
    </gp:geopriv>
    <dm:deviceID>urn:dev:wb-0001</dm:deviceID>
    <dm:timestamp>2026-01-01T00:03:00Z</dm:timestamp>
  </dm:device>
</presence>
"""
)


def q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def document(estimate: Estimate, *, at: datetime = AT, method: str | None = None) -> str:
    return pidf_lo(estimate, entity=ENTITY, device_id="wb-0001", at=at, method=method)


def parsed(estimate: Estimate, *, at: datetime = AT, method: str | None = None) -> ET.Element:
    return ET.fromstring(document(estimate, at=at, method=method))


def location_info(root: ET.Element) -> ET.Element:
    found = root.find(f"./{q(DM, 'device')}/{q(GP, 'geopriv')}/{q(GP, 'location-info')}")
    assert found is not None
    return found


def civic_parts(root: ET.Element) -> list[tuple[str, str | None]]:
    civic = location_info(root).find(q(CL, "civicAddress"))
    return [] if civic is None else [(c.tag.split("}")[1], c.text) for c in civic]


def expected_civic(place: Place) -> list[tuple[str, str | None]]:
    floor = None if place.floor is None else str(place.floor)
    parts = [("LOC", place.zone), ("FLR", floor), ("NAM", place.site), ("BLD", place.building), ("ROOM", place.room)]
    return [(name, value) for name, value in parts if value]


# --- golden documents ---------------------------------------------------------------------------------------


def test_golden_circle() -> None:
    assert document(GPS_ESTIMATE) == GOLDEN_CIRCLE


def test_golden_point() -> None:
    estimate = Estimate(-33.85678441, 151.21529673, None, LocationSource.CELL, Place(), "", "", None)
    assert document(estimate) == GOLDEN_POINT


def test_golden_civic_only() -> None:
    estimate = Estimate(
        None, None, None, LocationSource.BLE, Place(building="A & B", floor=0, room="lobby"), "", "", FIX_AT
    )
    assert document(estimate) == GOLDEN_CIVIC


def test_golden_documents_are_deterministic() -> None:
    assert document(GPS_ESTIMATE) == document(replace(GPS_ESTIMATE))


# --- structure, namespaces and element names ----------------------------------------------------------------


def test_document_structure_uses_the_rfc_namespaces_and_names() -> None:
    root = parsed(GPS_ESTIMATE)
    assert root.tag == q(PIDF, "presence")
    assert root.get("entity") == ENTITY
    device = root.find(q(DM, "device"))
    assert device is not None
    assert device.get("id") == "device-wb-0001"
    assert [c.tag for c in device] == [q(GP, "geopriv"), q(DM, "deviceID"), q(DM, "timestamp")]
    geopriv = device.find(q(GP, "geopriv"))
    assert geopriv is not None
    assert [c.tag for c in geopriv] == [q(GP, "location-info"), q(GP, "usage-rules"), q(GP, "method")]
    info = location_info(root)
    assert [c.tag for c in info] == [q(GS, "Circle"), q(CON, "confidence"), q(CL, "civicAddress")]
    circle = info.find(q(GS, "Circle"))
    assert circle is not None
    assert circle.get("srsName") == "urn:ogc:def:crs:EPSG::4326"
    assert [c.tag for c in circle] == [q(GML, "pos"), q(GS, "radius")]
    radius = circle.find(q(GS, "radius"))
    assert radius is not None
    assert radius.get("uom") == "urn:ogc:def:uom:EPSG::9001"
    rules = geopriv.find(q(GP, "usage-rules"))
    assert rules is not None
    assert [(c.tag, c.text) for c in rules] == [
        (q(GBP, "retransmission-allowed"), "false"),
        (q(GBP, "retention-expiry"), "2026-01-02T00:03:05Z"),
    ]
    assert device.findtext(q(DM, "deviceID")) == "urn:dev:wb-0001"


def test_civic_elements_follow_the_rfc_5139_schema_order() -> None:
    civic = location_info(parsed(GPS_ESTIMATE)).find(q(CL, "civicAddress"))
    assert civic is not None
    assert [(c.tag, c.text) for c in civic] == [
        (q(CL, "LOC"), "east-wing"),
        (q(CL, "FLR"), "2"),
        (q(CL, "NAM"), "plant-north"),
        (q(CL, "BLD"), "B"),
        (q(CL, "ROOM"), "214"),
    ]


def test_no_position_and_no_place_is_an_empty_location_info_without_method() -> None:
    estimate = Estimate(None, None, None, LocationSource.NONE, Place(), "", "", None)
    root = parsed(estimate)
    assert len(location_info(root)) == 0
    assert root.find(f".//{q(GP, 'method')}") is None
    assert root.findtext(f".//{q(DM, 'timestamp')}") == "2026-01-01T00:03:05Z"


@pytest.mark.parametrize(
    ("source", "token"),
    [
        (LocationSource.GPS, "GPS"),
        (LocationSource.CELL, "Cell"),
        (LocationSource.BLE, None),
        (LocationSource.LAST_KNOWN, None),
        (LocationSource.NONE, None),
    ],
)
def test_method_token_of_each_source(source: LocationSource, token: str | None) -> None:
    root = parsed(replace(GPS_ESTIMATE, source=source))
    assert root.findtext(f".//{q(GP, 'method')}") == token


def test_a_caller_may_name_a_registered_method() -> None:
    root = parsed(replace(GPS_ESTIMATE, source=LocationSource.BLE), method="Triangulation")
    assert root.findtext(f".//{q(GP, 'method')}") == "Triangulation"
    with pytest.raises(ValueError, match="not a registered"):
        document(GPS_ESTIMATE, method="Beacon")


def test_times_are_utc_and_retention_follows_the_document_time() -> None:
    berlin = timezone(timedelta(hours=1))
    root = parsed(replace(GPS_ESTIMATE, at=FIX_AT.astimezone(berlin)), at=AT.astimezone(berlin))
    assert root.findtext(f".//{q(DM, 'timestamp')}") == "2026-01-01T00:03:00Z"
    assert root.findtext(f".//{q(GBP, 'retention-expiry')}") == "2026-01-02T00:03:05Z"


def test_coordinates_have_seven_decimals_and_no_negative_zero() -> None:
    root = parsed(replace(GPS_ESTIMATE, lat=-0.00000001, lon=1 / 3))
    assert root.findtext(f".//{q(GML, 'pos')}") == "0.0000000 0.3333333"


def test_characters_xml_cannot_carry_are_replaced() -> None:
    root = parsed(replace(GPS_ESTIMATE, place=Place(room="2\x0014\x1b")))
    assert root.findtext(f".//{q(CL, 'ROOM')}") == "2\ufffd14\ufffd"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        pytest.param({"lat": None}, "both coordinates", id="lat-only"),
        pytest.param({"lat": math.nan}, "latitude", id="nan-lat"),
        pytest.param({"lon": 180.5}, "longitude", id="lon-range"),
        pytest.param({"accuracy_m": -1.0}, "accuracy", id="negative-accuracy"),
        pytest.param({"accuracy_m": math.inf}, "accuracy", id="infinite-accuracy"),
    ],
)
def test_impossible_estimates_are_programming_errors(change: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        document(replace(GPS_ESTIMATE, **change))  # type: ignore[arg-type]


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        document(GPS_ESTIMATE, at=datetime(2026, 1, 1))


# --- any estimate -------------------------------------------------------------------------------------------

#: Text XML carries unchanged: no controls (CR would come back as LF), surrogates or non-characters.
texts = st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn")), max_size=20))
places = st.builds(
    Place, site=texts, building=texts, floor=st.one_of(st.none(), st.integers(-5, 200)), room=texts, zone=texts
)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@FAST
@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    accuracy=st.floats(0, 1e7),
    place=places,
    source=st.sampled_from(LocationSource),
    fix_at=st.one_of(st.none(), moments),
    at=moments,
)
def test_any_finite_estimate_reads_back(
    lat: float, lon: float, accuracy: float, place: Place, source: LocationSource, fix_at: datetime | None, at: datetime
) -> None:
    estimate = Estimate(lat, lon, accuracy, source, place, "", "", fix_at)
    root = parsed(estimate, at=at)
    circle = location_info(root).find(q(GS, "Circle"))
    assert circle is not None
    pos, radius = circle.findtext(q(GML, "pos")), circle.findtext(q(GS, "radius"))
    assert pos is not None and radius is not None
    read_lat, read_lon = (float(v) for v in pos.split())
    assert abs(read_lat - lat) <= 1e-7
    assert abs(read_lon - lon) <= 1e-7
    assert abs(float(radius) - accuracy) <= 0.1
    assert civic_parts(root) == expected_civic(place)


@FAST
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), place=places)
def test_any_point_reads_back(lat: float, lon: float, place: Place) -> None:
    root = parsed(Estimate(lat, lon, None, LocationSource.LAST_KNOWN, place, "", "", None))
    point = location_info(root).find(q(GML, "Point"))
    assert point is not None
    pos = point.findtext(q(GML, "pos"))
    assert pos is not None
    read_lat, read_lon = (float(v) for v in pos.split())
    assert abs(read_lat - lat) <= 1e-7
    assert abs(read_lon - lon) <= 1e-7
    assert location_info(root).find(q(GS, "Circle")) is None
    assert civic_parts(root) == expected_civic(place)
