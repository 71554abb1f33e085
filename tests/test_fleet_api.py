"""The fleet API's documents (gateway/fleet_api.py), without a gateway: plans, corners, rooms, receivers, devices."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from gateway.config import ReceiverSettings
from gateway.fleet_api import (
    device_document,
    geometry,
    is_url,
    plan_corners,
    plan_path,
    plan_url,
    read_openapi,
    receiver_documents,
    room_polygon,
    site_document,
)
from gateway.ingest.ble.receivers import ReceiverReport, ReceiverStatus
from gateway.location.model import LocalPoint
from gateway.location.sites import Floor, parse_site_map
from gateway.store.models import Device

ROOT: Final = Path(__file__).resolve().parents[1]
SITE_MAP: Final = parse_site_map((ROOT / "deploy" / "sites.example.geojson").read_text(encoding="utf-8"))
NOW: Final = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def test_plan_urls_and_paths() -> None:
    assert is_url("https://plans.example/a.png") and is_url("HTTP://x/y.svg")
    assert not is_url("plans/a.png") and not is_url("/srv/plans/a.png") and not is_url("data:image/png;base64,")
    assert plan_url("north", "b", Floor(2, plan="plans/b-2.svg")) == "/v1/sites/north/buildings/b/floors/2/plan"
    assert plan_url("north site", "b/1", Floor(-1, plan="x.png")) == (
        "/v1/sites/north%20site/buildings/b%2F1/floors/-1/plan"
    )
    assert plan_url("north", "b", Floor(0, plan="https://p.example/0.png")) == "https://p.example/0.png"
    assert plan_url("north", "b", Floor(0)) is None
    assert plan_path("plans/b-2.svg", "/etc/panic/sites.geojson") == Path("/etc/panic/plans/b-2.svg")
    assert plan_path("/srv/b-2.svg", "/etc/panic/sites.geojson") == Path("/srv/b-2.svg")
    assert plan_path("b-2.svg", None) == Path("b-2.svg")


def test_plan_corners_follow_the_building_frame() -> None:
    building = SITE_MAP.building("b")
    assert building is not None and building.rotation_deg == 15
    floor = next(f for f in building.floors if f.number == 2)
    corners = plan_corners(SITE_MAP, building, floor)
    assert corners is not None
    (x0, y0), (x1, y1) = floor.plan_bounds or ((0.0, 0.0), (0.0, 0.0))
    expected = [(x0, y1), (x1, y1), (x1, y0), (x0, y0)]
    for (lat, lon), (x, y) in zip(corners, expected, strict=True):
        want = SITE_MAP.to_geo(LocalPoint("b", 2, x, y))
        assert abs(lat - want[0]) < 1e-7 and abs(lon - want[1]) < 1e-7
    assert plan_corners(SITE_MAP, building, Floor(0)) is None


def test_rooms_are_closed_lon_lat_polygons() -> None:
    building = SITE_MAP.building("a")
    assert building is not None
    polygon = room_polygon(SITE_MAP, building, 0, ((0, 0), (15, 0), (15, 10), (0, 10)))
    ring = polygon["coordinates"][0]
    assert polygon["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
    assert ring[0] == [13.3977902, 52.5204493]  # the anchor, [lon, lat]
    assert ring[1][0] > ring[0][0] and ring[2][1] > ring[1][1]  # x east, y north at rotation 0


def test_site_documents_are_json_with_rounded_coordinates() -> None:
    site = SITE_MAP.site("depot")
    assert site is not None
    shape = geometry(site.shape)
    assert shape["type"] == "Polygon"
    assert all(len(str(c).split(".")[-1]) <= 7 for point in shape["coordinates"][0] for c in point)
    north = SITE_MAP.site("north")
    assert north is not None
    document = site_document(SITE_MAP, north, "Europe/Berlin")
    assert json.loads(json.dumps(document)) == document  # plain JSON: lists, not tuples
    assert [b["id"] for b in document["buildings"]] == ["a", "b"]


def test_receivers_without_a_report_are_unknown() -> None:
    receivers = [
        ReceiverSettings(name="hall", transport="usb:0", building="a", x=1.0, y=2.0),
        ReceiverSettings(name="yard", transport="usb:1", site="north"),
        ReceiverSettings(name="lost", transport="usb:2", building="nowhere"),
    ]
    report = ReceiverReport("yard", ReceiverStatus.DOWN, NOW, "no such device")
    hall, yard, lost = receiver_documents(receivers, {"yard": report}, SITE_MAP)
    assert (hall["status"], hall["site"], hall["updated_at"]) == ("unknown", "north", None)
    assert hall["lat"] is not None and hall["lon"] is not None
    assert (yard["status"], yard["error"], yard["updated_at"]) == ("down", "no such device", "2026-11-21T09:00:00.000Z")
    assert (yard["building"], yard["lat"]) == (None, None)
    assert (lost["site"], lost["building"], lost["lat"]) == (None, "nowhere", None)


def test_device_document_judges_the_certificate_now() -> None:
    device = Device(
        device_id="wb-1",
        wearer="Ada",
        site="north",
        cert_pem="",
        cert_fingerprint="ab" * 32,
        cert_serial="1f",
        not_before=NOW - timedelta(days=300),
        not_after=NOW + timedelta(days=10),
        created_at=NOW,
        updated_at=NOW,
    )
    document = device_document(device, NOW)
    assert document["certificate"]["status"] == "expiring"
    assert document["last_seen_at"] is None and document["certificate"]["not_after"] == "2026-12-01T09:00:00.000Z"
    assert device_document(device, NOW + timedelta(days=11))["certificate"]["status"] == "expired"


def test_the_openapi_document_is_found_in_order(tmp_path: Path) -> None:
    first = tmp_path / "first.yaml"
    first.write_text("openapi: 3.1.0\ninfo: {title: t, version: '1'}\ndate: 2026-01-01\n")
    found = read_openapi([tmp_path / "missing.yaml", first, ROOT / "docs" / "openapi.yaml"])
    assert found is not None
    text, as_json = found
    assert text == first.read_text() and json.loads(as_json)["date"] == "2026-01-01"
    assert read_openapi([tmp_path / "missing.yaml"]) is None
