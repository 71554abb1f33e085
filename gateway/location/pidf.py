"""PIDF-LO documents (RFC 4119, shapes of RFC 5491, civic address of RFC 5139) for a wearer's estimate.

The document, with every namespace declared on the root:

    <presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:...">
      <dm:device id="device-<device id>">
        <gp:geopriv>
          <gp:location-info>
            gml:Point (accuracy unknown) | gs:Circle + con:confidence (accuracy known) | nothing (no position)
            cl:civicAddress (when any part of the place is known)
          </gp:location-info>
          <gp:usage-rules> gbp:retransmission-allowed false, gbp:retention-expiry </gp:usage-rules>
          <gp:method>...</gp:method> (when a method is known)
        </gp:geopriv>
        <dm:deviceID>urn:dev:<device id></dm:deviceID>
        <dm:timestamp>when the position was determined</dm:timestamp>
      </dm:device>
    </presence>

Choices:
- Shape (RFC 5491 §5.2): a Point when the accuracy is unknown, else a Circle whose radius is the accuracy.
  The estimate's radius holds the wearer with about 68 % confidence, and RFC 5491 and RFC 7459 §4 read a
  shape without a confidence as 95 %; so a circle carries `con:confidence pdf="unknown"` 68 (RFC 7459 §5).
- Civic address (RFC 5139 element names, in its schema order): zone -> LOC (additional location
  information), floor -> FLR, site -> NAM (the name of the place), building -> BLD, room -> ROOM. There is
  no country or street: the site map holds none.
- No position and no place: `gp:location-info` is present and empty. RFC 4119's schema requires the
  element and allows it to be empty; empty says "location unknown" while the usage rules and timestamp
  still travel.
- Method (IANA "Method Tokens" registry): GPS -> "GPS", cell -> "Cell" ("location of the cellular radio
  antenna": a position from cell sites). No registered token describes nearness to a fixed BLE receiver,
  and a last known position does not say how it was made: for those, and for no position, the optional
  `gp:method` is left out unless the caller names a registered token.
- Usage rules: retransmission-allowed is "false" (the schema type is xs:boolean; RFC 4119's "no" is an
  erratum); retention-expiry is `at` + RETENTION.
- Coordinates are "lat lon" (EPSG::4326 axis order) with 7 decimals (about 1 cm), the radius in metres with
  1 decimal; times are UTC, whole seconds, with "Z".
- Output is deterministic: fixed element and attribute order, two-space indentation. Characters XML 1.0
  cannot carry (controls) become U+FFFD.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway.identity.const import DEVICE_URI_PREFIX
from gateway.location.model import Estimate, LocationSource, Place

PIDF_NS: Final = "urn:ietf:params:xml:ns:pidf"
DATA_MODEL_NS: Final = "urn:ietf:params:xml:ns:pidf:data-model"
GEOPRIV_NS: Final = "urn:ietf:params:xml:ns:pidf:geopriv10"
BASIC_POLICY_NS: Final = "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
GML_NS: Final = "http://www.opengis.net/gml"
SHAPES_NS: Final = "http://www.opengis.net/pidflo/1.0"
CIVIC_NS: Final = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
CONFIDENCE_NS: Final = "urn:ietf:params:xml:ns:geopriv:conf"

#: Prefixes as RFC 5491's and RFC 7459's examples write them, declared once on the root.
_PREFIXES: Final = (
    ("dm", DATA_MODEL_NS),
    ("gp", GEOPRIV_NS),
    ("gbp", BASIC_POLICY_NS),
    ("gml", GML_NS),
    ("gs", SHAPES_NS),
    ("cl", CIVIC_NS),
    ("con", CONFIDENCE_NS),
)

#: WGS 84 with latitude first (RFC 5491 §5.1), and metres for the radius (RFC 5491 §5.2.3).
SRS_WGS84_2D: Final = "urn:ogc:def:crs:EPSG::4326"
UOM_METRE: Final = "urn:ogc:def:uom:EPSG::9001"

#: The probability that the wearer is inside the circle: Estimate.accuracy_m is a ~68 % radius.
CIRCLE_CONFIDENCE_PERCENT: Final = 68

#: How long a recipient may keep the location: an incident is handled well within a day, and where a
#: wearer was is not the recipient's to keep after that.
RETENTION: Final = timedelta(hours=24)

#: Method tokens of the IANA registry a caller may name (RFC 4119 §2.2.3 and later registrations).
METHOD_TOKENS: Final = frozenset(
    {
        "802.11",
        "A-GNSS",
        "A-GPS",
        "AOA",
        "best-guess",
        "Cell",
        "DBH",
        "DHCP",
        "Derived",
        "E-CID",
        "GNSS",
        "GPS",
        "Manual",
        "Triangulation",
    }
)

_METHOD_OF_SOURCE: Final = {LocationSource.GPS: "GPS", LocationSource.CELL: "Cell"}

_NOT_XML_CHAR: Final = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def pidf_lo(estimate: Estimate, *, entity: str, device_id: str, at: datetime, method: str | None = None) -> str:
    """The PIDF-LO document of `estimate` for one wearable, made at `at` (an aware datetime).

    entity: the presentity URI ("pres:wb-0001@panic-gateway"); device_id: the wearable's id;
    method: a registered method token overriding the one the estimate's source gives.
    Raises ValueError for a naive `at`, an unregistered method, or coordinates or an accuracy that are not
    finite and in range (programming errors: estimates come from the gateway's own fusion).
    """
    if at.tzinfo is None:
        raise ValueError("at must be an aware datetime")
    if method is not None and method not in METHOD_TOKENS:
        raise ValueError(f"method {method!r} is not a registered PIDF-LO method token")
    root = ET.Element("presence", {"xmlns": PIDF_NS, **{f"xmlns:{p}": ns for p, ns in _PREFIXES}})
    root.set("entity", _text(entity))
    device = ET.SubElement(root, "dm:device", {"id": "device-" + _text(device_id)})
    geopriv = ET.SubElement(device, "gp:geopriv")
    location_info = ET.SubElement(geopriv, "gp:location-info")
    has_position = _add_shape(location_info, estimate)
    _add_civic(location_info, estimate.place)
    rules = ET.SubElement(geopriv, "gp:usage-rules")
    ET.SubElement(rules, "gbp:retransmission-allowed").text = "false"
    ET.SubElement(rules, "gbp:retention-expiry").text = _timestamp(at + RETENTION)
    token = method if method is not None else _METHOD_OF_SOURCE.get(estimate.source) if has_position else None
    if token is not None:
        ET.SubElement(geopriv, "gp:method").text = token
    ET.SubElement(device, "dm:deviceID").text = _text(DEVICE_URI_PREFIX + device_id)
    ET.SubElement(device, "dm:timestamp").text = _timestamp(estimate.at if estimate.at is not None else at)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _add_shape(parent: ET.Element, estimate: Estimate) -> bool:
    if estimate.lat is None and estimate.lon is None:
        return False
    if estimate.lat is None or estimate.lon is None:
        raise ValueError("an estimate has both coordinates or neither")
    if not (math.isfinite(estimate.lat) and -90 <= estimate.lat <= 90):
        raise ValueError(f"latitude {estimate.lat} is not a finite -90..90")
    if not (math.isfinite(estimate.lon) and -180 <= estimate.lon <= 180):
        raise ValueError(f"longitude {estimate.lon} is not a finite -180..180")
    pos = f"{_degrees(estimate.lat)} {_degrees(estimate.lon)}"
    if estimate.accuracy_m is None:
        point = ET.SubElement(parent, "gml:Point", {"srsName": SRS_WGS84_2D})
        ET.SubElement(point, "gml:pos").text = pos
        return True
    if not (math.isfinite(estimate.accuracy_m) and estimate.accuracy_m >= 0):
        raise ValueError(f"accuracy {estimate.accuracy_m} m is not a finite radius")
    circle = ET.SubElement(parent, "gs:Circle", {"srsName": SRS_WGS84_2D})
    ET.SubElement(circle, "gml:pos").text = pos
    ET.SubElement(circle, "gs:radius", {"uom": UOM_METRE}).text = f"{estimate.accuracy_m:.1f}"
    ET.SubElement(parent, "con:confidence", {"pdf": "unknown"}).text = str(CIRCLE_CONFIDENCE_PERCENT)
    return True


def _add_civic(parent: ET.Element, place: Place) -> None:
    parts = (
        ("LOC", place.zone),
        ("FLR", None if place.floor is None else str(place.floor)),
        ("NAM", place.site),
        ("BLD", place.building),
        ("ROOM", place.room),
    )
    known = [(name, value) for name, value in parts if value]
    if not known:
        return
    civic = ET.SubElement(parent, "cl:civicAddress")
    for name, value in known:
        ET.SubElement(civic, f"cl:{name}").text = _text(value)


def _degrees(value: float) -> str:
    text = f"{value:.7f}"
    return "0.0000000" if text == "-0.0000000" else text


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be aware datetimes")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", value)
