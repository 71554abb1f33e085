"""Location end to end: the alert goes out at once, then the fused place follows as an update on MQTT.

BLE receivers hang in rooms of the example site map on the virtual air; a press near one of them is placed in
that room. A cellular press with a GPS fix outdoors gets its site and zone from the map.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiomqtt
import pytest
from cryptography import x509
from pydantic import SecretStr

from firmware_sim.air import PathLossModel, Position, VirtualAir
from firmware_sim.ble_wearable import BleWearable
from firmware_sim.wearable import VirtualWearable
from gateway.config import ApiSettings, BleSettings, LocationSettings, ReceiverSettings
from gateway.identity.pki import PkiLayout, load_public_key
from gateway.location.cells import CellKey, CellRow
from gateway.location.model import CellObservation, CellSite
from gateway.protocol import EventType, GpsFix
from gateway.store.db import open_database
from gateway.store.locations import import_cells
from gateway.store.models import Device as DeviceRow
from gateway.store.models import Incident, IncidentEvent
from tests import services
from tests.ble.test_receivers import eventually
from tests.conftest import GatewayFactory, Observer, enroll, http_client, observe, post_frame

SITES: Final = Path(__file__).parents[2] / "deploy" / "sites.example.geojson"
#: Building B, floor 2 of the example map: room 213 (x 20..30) and room 214 "Lab" (x 30..40), y 0..8.
ROOMS: Final = {"rx-213": (25.0, 4.0), "rx-214": (35.0, 4.0)}
WAIT_S: Final = 10.0


@pytest.fixture
async def air() -> AsyncIterator[VirtualAir]:
    async with VirtualAir(PathLossModel(noise_sigma_db=0.0), seed=3) as air:
        for name, (x, y) in ROOMS.items():
            await air.add_node(name, Position("north", 2, x, y))
        yield air


def receivers(air: VirtualAir) -> BleSettings:
    placed = [
        ReceiverSettings(
            name=name, transport=air.nodes[name].transport_spec, site="north", building="b", floor=2, x=x, y=y
        )
        for name, (x, y) in ROOMS.items()
    ]
    return BleSettings(receivers=placed, restart_min_s=0.1, restart_max_s=0.5, key_refresh_s=30.0)


def located(obs: Observer, alert_id: str) -> dict[str, Any] | None:
    state = obs.states.get(alert_id)
    location = None if state is None else state["location"]
    return None if location is None or "place" not in location["properties"] else location


async def test_a_ble_press_is_placed_in_the_room_of_the_receiver_that_hears_it_best(
    air: VirtualAir, pki: PkiLayout, gateway_factory: GatewayFactory
) -> None:
    location = LocationSettings(sites_file=SITES)
    async with (
        gateway_factory(ble=receivers(air), location=location) as gw,
        observe(gw.settings.mqtt.topic_prefix) as obs,
    ):
        await obs.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ROOMS), WAIT_S)
        wearable = await enroll(pki, site="north")
        row = await DeviceRow.get(device_id=wearable.device_id)
        firmware = VirtualWearable(
            wearable.device_id, wearable.key, x509.load_pem_x509_certificate(row.cert_pem.encode()), device_dir=None
        )
        node = await air.add_node("wearable", Position("north", 2, 37.0, 3.0), expose=False)  # inside the Lab
        ble = BleWearable(
            firmware, load_public_key(pki.fleet_public), load_public_key(pki.ack_public), controller=node.controller
        )
        async with ble:
            await ble.press()
            await obs.wait_for(lambda o: len(o.states) == 1, WAIT_S)
            ((alert_id, first),) = obs.states.items()
            assert first["location"] is None  # the alert went out before anything was known of the place
            await obs.wait_for(lambda o: located(o, alert_id) is not None, WAIT_S)
        where = located(obs, alert_id)
        assert where is not None
        assert where["properties"]["source"] == "ble"
        assert where["properties"]["place"] == {
            "site": "north",
            "building": "b",
            "floor": 2,
            "room": "214",
            "zone": "labs",
        }
        assert where["properties"]["text"] == "North Plant, Building B, floor 2, room 214 (Lab)"
        assert where["geometry"] is not None and where["properties"]["accuracy_m"] >= 3
        event = await IncidentEvent.filter(incident_id=alert_id, type="located").first()
        assert event is not None and event.detail["source"] == "ble" and "room 214" in event.detail["why"]
        incident = await Incident.get(id=alert_id)
        assert (incident.place_room, incident.location_source) == ("214", "ble")


async def test_an_outdoor_gps_press_gets_its_site_and_zone(
    pki: PkiLayout, gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    location = LocationSettings(sites_file=SITES)
    api = ApiSettings(tokens={"psap-bridge": SecretStr("pidf-token-0123456789")})
    async with gateway_factory(location=location, api=api) as gw, observe(gw.settings.mqtt.topic_prefix) as obs:
        wearable = await enroll(pki, site="north")
        fix = GpsFix(52.5189, 13.4000, 12, 5)  # in the loading yard of the North Plant
        async with http_client(client_ssl) as http:
            status, body, _ = await post_frame(http, gw, wearable.frame(EventType.PANIC, gps=fix))
        assert status == 202
        alert_id = body["incident_id"]
        await obs.wait_for(lambda o: located(o, alert_id) is not None, WAIT_S)
        where = located(obs, alert_id)
        assert where is not None
        assert where["properties"]["source"] == "gps"
        assert where["properties"]["place"]["site"] == "north" and where["properties"]["place"]["zone"] == "yard"
        assert where["properties"]["place"]["room"] is None  # a radius of metres never names a room
        assert where["properties"]["text"].endswith("m") and "±" in where["properties"]["text"]

        # The same place as PIDF-LO for emergency services: a circle around the fix, with the site's name.
        auth = {"Authorization": "Bearer pidf-token-0123456789"}
        async with (
            http_client(client_ssl) as http,
            http.get(f"{gw.http_url}/v1/incidents/{alert_id}/location.pidf", headers=auth) as r,
        ):
            assert r.status == 200 and r.content_type == "application/pidf+xml"
            document = ET.fromstring(await r.text())
        gml = "{http://www.opengis.net/gml}"
        circle = document.find(".//{http://www.opengis.net/pidflo/1.0}Circle")
        assert circle is not None
        pos = circle.find(f"{gml}pos")
        assert pos is not None and pos.text is not None
        lat, lon = (float(v) for v in pos.text.split())
        assert abs(lat - fix.lat) < 1e-6 and abs(lon - fix.lon) < 1e-6
        assert document.find(".//{urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr}NAM") is not None


async def test_later_frames_of_a_moving_wearer_update_the_open_incident(
    pki: PkiLayout, gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    async with (
        gateway_factory(location=LocationSettings(sites_file=SITES)) as gw,
        observe(gw.settings.mqtt.topic_prefix) as obs,
        http_client(client_ssl) as http,
    ):
        wearable = await enroll(pki, site="north")
        status, body, _ = await post_frame(http, gw, wearable.frame(gps=GpsFix(52.5189, 13.4000, 12, 5)))
        assert status == 202
        alert_id = body["incident_id"]
        await obs.wait_for(
            lambda o: (located(o, alert_id) or {}).get("properties", {}).get("place", {}).get("zone") == "yard", WAIT_S
        )
        # Walking out of the yard: the next heartbeat's fix moves the incident's place.
        moved = GpsFix(52.5203, 13.4015, 9, 2)
        status, _, _ = await post_frame(http, gw, wearable.frame(EventType.HEARTBEAT, gps=moved))
        assert status == 202

        def out_of_the_yard(o: Observer) -> bool:
            where = located(o, alert_id)
            return where is not None and where["properties"]["place"]["zone"] is None

        await obs.wait_for(out_of_the_yard, WAIT_S)
        where = located(obs, alert_id)
        assert where is not None
        lon, lat = where["geometry"]["coordinates"]
        assert (round(lat, 4), round(lon, 4)) == (52.5203, 13.4015)
        track = await IncidentEvent.filter(incident_id=alert_id, type="located").count()
        assert track == 2  # the track: one located event per place


async def test_a_press_with_nothing_current_is_placed_where_the_wearable_was_last_heard(
    air: VirtualAir, pki: PkiLayout, gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    location = LocationSettings(sites_file=SITES)
    async with (
        gateway_factory(ble=receivers(air), location=location) as gw,
        observe(gw.settings.mqtt.topic_prefix) as obs,
    ):
        await obs.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ROOMS), WAIT_S)
        wearable = await enroll(pki, site="north")
        row = await DeviceRow.get(device_id=wearable.device_id)
        firmware = VirtualWearable(
            wearable.device_id, wearable.key, x509.load_pem_x509_certificate(row.cert_pem.encode()), device_dir=None
        )
        node = await air.add_node("wearable", Position("north", 2, 37.0, 3.0), expose=False)
        ble = BleWearable(
            firmware,
            load_public_key(pki.fleet_public),
            load_public_key(pki.ack_public),
            controller=node.controller,
            heartbeat_interval_ms=100.0,
        )
        async with ble:  # heartbeats only: the gateway learns which receiver hears the wearable best

            async def heard() -> bool:
                return (await DeviceRow.get(device_id=wearable.device_id)).nearest_receiver == "rx-214"

            await eventually(heard)
        await air.remove_node("wearable")  # it leaves BLE range, then presses over cellular without a fix
        async with http_client(client_ssl) as http:
            status, body, _ = await post_frame(http, gw, wearable.frame(counter=100_000))
        assert status == 202
        alert_id = body["incident_id"]
        await obs.wait_for(lambda o: located(o, alert_id) is not None, WAIT_S)
        where = located(obs, alert_id)
        assert where is not None and where["properties"]["source"] == "last-known"
        assert where["properties"]["text"].startswith("last known: room 214")
        assert where["properties"]["place"]["room"] == "214"


async def test_the_zone_picks_the_command_center_route_of_the_alert(
    pki: PkiLayout, gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory(location=LocationSettings(sites_file=SITES)) as gw:
        prefix = gw.settings.mqtt.topic_prefix
        wearable = await enroll(pki, site="north")
        async with aiomqtt.Client(services.MQTT_HOST, services.MQTT_PORT) as cc:
            await cc.subscribe(f"{prefix}/routes/#", qos=1)
            async with http_client(client_ssl) as http:
                yard = wearable.frame(gps=GpsFix(52.5189, 13.4000, 12, 5))  # the loading yard: topic north-yard
                status, body, _ = await post_frame(http, gw, yard)
                assert status == 202
                in_yard = body["incident_id"]
                plant = wearable.frame(gps=GpsFix(52.5203, 13.4015, 12, 5))  # no zone: the site's topic
                status, body, _ = await post_frame(http, gw, plant)
                assert status == 202
                in_plant = body["incident_id"]
            routed: dict[str, str] = {}
            async with asyncio.timeout(WAIT_S):
                async for message in cc.messages:
                    if message.payload:
                        routed[str(message.topic)] = json.loads(message.payload)["alert_id"]  # type: ignore[arg-type]
                    if len(set(routed.values())) == 2:
                        break
        assert routed[f"{prefix}/routes/north-yard/alerts/{in_yard}/state"] == in_yard
        assert routed[f"{prefix}/routes/north-plant/alerts/{in_plant}/state"] == in_plant


async def test_a_press_without_gps_is_placed_by_the_cells_its_modem_saw(
    pki: PkiLayout, db_url: str, gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    towers = [
        CellRow(CellKey("lte", 262, 1, 46003, 26386177), CellSite(52.5195, 13.3990, 900.0, 40)),
        CellRow(CellKey("lte", 262, 1, 46003, 26386178), CellSite(52.5215, 13.4030, 1200.0, 25)),
    ]
    async with open_database(db_url):
        await import_cells(iter(towers))
    async with (
        gateway_factory(location=LocationSettings(sites_file=SITES)) as gw,
        observe(gw.settings.mqtt.topic_prefix) as obs,
    ):
        wearable = await enroll(pki, site="north")
        seen = (
            CellObservation("lte", 262, 1, 46003, 26386177, -85, True),
            CellObservation("lte", 262, 1, 46003, 26386178, -101, False),
            CellObservation("lte", 262, 1, 46003, 99999999, -110, False),  # not in the database
        )
        async with http_client(client_ssl) as http:
            status, body, _ = await post_frame(http, gw, wearable.frame(cells=seen))
        assert status == 202
        alert_id = body["incident_id"]
        await obs.wait_for(lambda o: located(o, alert_id) is not None, WAIT_S)
        where = located(obs, alert_id)
        assert where is not None and where["properties"]["source"] == "cell"
        assert where["properties"]["accuracy_m"] >= 900  # never tighter than the cells allow
        lon, lat = where["geometry"]["coordinates"]
        assert 52.519 < lat < 52.522 and 13.398 < lon < 13.404  # between the two known cells, nearer the serving one
        event = await IncidentEvent.filter(incident_id=alert_id, type="located").first()
        assert event is not None and "1 of 3 cells unknown" in event.detail["why"]
