"""The REST API of docs/CONSOLE.md on a real gateway over HTTPS: every endpoint, its filters and pages, roles, and
every answer checked against the OpenAPI document the gateway itself serves (which must be docs/openapi.yaml).

Each test claims the operations it exercises (COVERAGE) and fails if it did not call them; a last test checks that
the claims and the operations exercised elsewhere (ELSEWHERE) are exactly the document's operations, so the
document cannot grow an operation no test calls, nor the API answer one the document lacks.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from firmware_sim.air import PathLossModel, Position, VirtualAir
from gateway.app import RunningGateway
from gateway.config import ApiSettings, BleSettings, EscalationSettings, LocationSettings, ReceiverSettings
from gateway.console.store import add_api_token
from gateway.identity.pki import PkiLayout
from gateway.protocol import EventType
from gateway.store.models import AuditEntry, Incident
from tests import services
from tests.conftest import GatewayFactory, Wearable, enroll, http_client, observe, post_frame
from tests.escalation.conftest import directory_toml, step
from tests.schemacheck import SchemaChecker

ROOT: Final = Path(__file__).resolve().parents[2]
DOCUMENT: Final[dict[str, Any]] = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
SITE_MAP: Final = ROOT / "deploy" / "sites.example.geojson"
DESK_TOKEN: Final = "desk-token-for-rest-tests-0123456789"
#: The escalation directory's time zone: what incidents of a site the site map does not have carry.
DEFAULT_ZONE: Final = "America/Chicago"
WAIT_S: Final = 10.0
#: A 1x1 PNG: the floor plan file the gateway serves.
PNG: Final = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)

INCIDENTS: Final = "/v1/incidents"
INCIDENT: Final = "/v1/incidents/{alert_id}"
TIMELINE: Final = "/v1/incidents/{alert_id}/events"
NOTES: Final = "/v1/incidents/{alert_id}/notes"
ACK: Final = "/v1/incidents/{alert_id}/ack"
RESOLVE: Final = "/v1/incidents/{alert_id}/resolve"
PIDF: Final = "/v1/incidents/{alert_id}/location.pidf"
EVENTS: Final = "/v1/events"
DEVICES: Final = "/v1/devices"
DEVICE: Final = "/v1/devices/{device_id}"
REVOKE: Final = "/v1/devices/{device_id}/revoke"
RECEIVERS: Final = "/v1/receivers"
SITES: Final = "/v1/sites"
SITE: Final = "/v1/sites/{site_id}"
PLAN: Final = "/v1/sites/{site_id}/buildings/{building_id}/floors/{floor}/plan"
ME: Final = "/v1/me"
STREAM: Final = "/v1/stream"
OPENAPI_JSON: Final = "/v1/openapi.json"
OPENAPI_YAML: Final = "/v1/openapi.yaml"

Operation = tuple[str, str]

#: Which test here exercises each operation (checked when the test ends: it must have called them all).
COVERAGE: Final[dict[Operation, str]] = {
    ("get", INCIDENTS): "test_incident_lists_filters_and_pages",
    ("get", INCIDENT): "test_an_incident_its_timeline_and_notes",
    ("get", TIMELINE): "test_an_incident_its_timeline_and_notes",
    ("post", NOTES): "test_an_incident_its_timeline_and_notes",
    ("get", EVENTS): "test_an_incident_its_timeline_and_notes",
    ("post", ACK): "test_roles_decide_who_may_act",
    ("post", RESOLVE): "test_roles_decide_who_may_act",
    ("get", PIDF): "test_roles_decide_who_may_act",
    ("get", DEVICES): "test_devices_and_their_revocation",
    ("get", DEVICE): "test_devices_and_their_revocation",
    ("post", REVOKE): "test_devices_and_their_revocation",
    ("get", RECEIVERS): "test_receivers_merge_settings_with_live_status",
    ("get", SITES): "test_sites_for_the_map_and_floor_plans",
    ("get", SITE): "test_sites_for_the_map_and_floor_plans",
    ("get", PLAN): "test_sites_for_the_map_and_floor_plans",
    ("get", ME): "test_the_served_document_identity_and_stream",
    ("get", STREAM): "test_the_served_document_identity_and_stream",
    ("get", OPENAPI_JSON): "test_the_served_document_identity_and_stream",
    ("get", OPENAPI_YAML): "test_the_served_document_identity_and_stream",
    ("get", "/healthz"): "test_the_served_document_identity_and_stream",
    ("get", "/readyz"): "test_the_served_document_identity_and_stream",
    ("get", "/metrics"): "test_the_served_document_identity_and_stream",
}
#: Operations exercised, and checked against the document, by another test file.
ELSEWHERE: Final[dict[Operation, str]] = {
    ("post", "/v1/signals"): "tests/escalation/test_openapi_incidents.py",
    ("post", "/v1/twilio/sms"): "tests/escalation/test_openapi_incidents.py",
    ("post", "/v1/twilio/sms/status"): "tests/escalation/test_openapi_incidents.py",
    ("post", "/v1/twilio/voice/answer"): "tests/escalation/test_openapi_incidents.py",
    ("post", "/v1/twilio/voice/gather"): "tests/escalation/test_openapi_incidents.py",
    ("post", "/v1/twilio/voice/status"): "tests/escalation/test_openapi_incidents.py",
}


@dataclass
class Rest:
    """A REST client of one gateway: every answer is checked against the document the gateway serves."""

    gw: RunningGateway
    http: aiohttp.ClientSession
    token: str = DESK_TOKEN
    checker: SchemaChecker = field(default_factory=lambda: SchemaChecker(DOCUMENT))
    called: set[Operation] = field(default_factory=set)

    async def load_document(self) -> None:
        """Fetch the served JSON document (no credentials needed); it must be docs/openapi.yaml."""
        async with self.http.get(f"{self.gw.http_url}{OPENAPI_JSON}") as r:
            assert r.status == 200 and r.content_type == "application/json"
            served = await r.json()
        assert served == json.loads(json.dumps(DOCUMENT, default=str))
        self.checker = SchemaChecker(served)
        self.called.add(("get", OPENAPI_JSON))

    async def call(
        self,
        method: str,
        template: str,
        *,
        status: int,
        reason: str | None = None,
        token: str | None = None,
        anonymous: bool = False,
        query: dict[str, str] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        **path: str | int,
    ) -> Any:
        """Call an operation of the document; the answer must have `status` and fit the documented schema."""
        url = self.gw.http_url + template.format(**{k: quote(str(v), safe="") for k, v in path.items()})
        sent = dict(headers or {})
        if not anonymous:
            sent["Authorization"] = f"Bearer {token or self.token}"
        kwargs: dict[str, Any] = {"params": query, "headers": sent}
        if body is not None:
            kwargs["json"] = body
        if raw is not None:
            kwargs["data"] = raw
        async with self.http.request(method, url, **kwargs) as r:
            content_type = r.content_type
            payload: Any = await r.read()
            if content_type.endswith("json"):
                payload = json.loads(payload)
            assert r.status == status, (method, url, r.status, payload)
            self.called.add((method.lower(), template))
            self.documented(method.lower(), template, r.status, content_type, payload)
            if reason is not None:
                assert (payload["reason"], payload["status"]) == (reason, status), payload
            if status == 401:
                assert r.headers["WWW-Authenticate"] == 'Bearer realm="panic-gateway"'
            if status == 503:
                assert int(r.headers["Retry-After"]) >= 1
            return payload

    def documented(self, method: str, template: str, status: int, content_type: str, payload: Any) -> None:
        spec = self.checker.document
        responses = spec["paths"][template][method]["responses"]
        assert str(status) in responses, f"{method.upper()} {template} does not document {status}: {payload!r}"
        media = self.checker.deref(responses[str(status)])["content"]
        assert content_type in media, f"{method.upper()} {template} {status}: {content_type} is not documented"
        if isinstance(payload, bytes):
            return  # an image, a PIDF document or metrics text: the media type is what is documented
        assert self.checker.violations(media[content_type]["schema"], payload) == [], (method, template, status)

    async def pages(self, template: str, query: dict[str, str], limit: int, **path: str) -> list[dict[str, Any]]:
        """Every item of a list, `limit` at a time, following next_cursor to the last page."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            q = {**query, "limit": str(limit)} | ({"cursor": cursor} if cursor else {})
            page = await self.call("GET", template, status=200, query=q, **path)
            assert len(page["items"]) <= limit
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items
            assert len(page["items"]) == limit  # only a full page has a next one


RestFactory = Callable[[RunningGateway], AbstractAsyncContextManager[Rest]]


@pytest.fixture
def rest(client_ssl: ssl.SSLContext, request: pytest.FixtureRequest) -> RestFactory:
    """`async with rest(gw) as api:`; on exit, the test must have called every operation COVERAGE gives it."""

    @asynccontextmanager
    async def make(gw: RunningGateway) -> AsyncIterator[Rest]:
        async with http_client(client_ssl) as http:
            api = Rest(gw, http)
            await api.load_document()
            yield api
        name = request.node.originalname
        claimed = {op for op, test in COVERAGE.items() if test == name}
        assert claimed <= api.called, f"{name} claims {sorted(claimed - api.called)} but did not call them"

    return make


def settings(tmp_path: Path, *devices: str, **sections: Any) -> dict[str, Any]:
    """A gateway with the desk token, and with the example site map (plan files beside it) and an escalation
    directory whose wearer entry is the first device's."""
    site_map = json.loads(SITE_MAP.read_text(encoding="utf-8"))
    building_a = next(f for f in site_map["features"] if f["properties"]["id"] == "a")
    building_a["properties"]["floors"][0] |= {
        "plan": "https://plans.example/a-0.png",
        "plan_bounds": [[0, 0], [25, 10]],
    }
    building_a["properties"]["floors"][1] |= {"plan": "plans/missing.png", "plan_bounds": [[0, 0], [25, 10]]}
    building_b = next(f for f in site_map["features"] if f["properties"]["id"] == "b")
    building_b["properties"]["floors"][1] |= {"plan": "plans/readme.txt", "plan_bounds": [[0, 0], [40, 20]]}
    building_b["properties"]["floors"][2] |= {"plan": "plans/b-2.svg"}
    (tmp_path / "plans").mkdir(exist_ok=True)
    (tmp_path / "plans" / "b-2.svg").write_bytes(PNG)  # the bytes do not matter, the extension does
    (tmp_path / "plans" / "readme.txt").write_text("not an image")
    sites = tmp_path / "sites.geojson"
    sites.write_text(json.dumps(site_map))
    directory = tmp_path / "escalation.toml"
    text = directory_toml(step("mqtt", 600))
    directory.write_text(text.replace("{device}", devices[0] if devices else "wb-nobody"))
    return {
        "api": ApiSettings(tokens={"dispatch-desk": DESK_TOKEN}),
        "location": LocationSettings(sites_file=sites),
        "escalation": EscalationSettings(file=directory, tick_s=0.1, time_zone=DEFAULT_ZONE),
    } | sections


async def press(gw: RunningGateway, wearable: Wearable, http: aiohttp.ClientSession) -> str:
    status, body, _ = await post_frame(http, gw, wearable.frame())
    assert status == 202, body
    return str(body["incident_id"])


# --- incidents ------------------------------------------------------------------------------------------------


async def test_incident_lists_filters_and_pages(
    gateway_factory: GatewayFactory, pki: PkiLayout, tmp_path: Path, rest: RestFactory
) -> None:
    async with gateway_factory(**settings(tmp_path)) as gw, rest(gw) as api:
        north = await enroll(pki, site="north", wearer="Ada North")
        south = await enroll(pki, site="south", wearer="Bo South")
        before = datetime.now(UTC)
        ids = [await press(gw, w, api.http) for w in (north, south, north, south, north)]
        middle = (await Incident.get(id=ids[2])).received_at
        await api.call("POST", RESOLVE, status=200, body={"reason": "handled"}, alert_id=ids[0])

        everything = await api.call("GET", INCIDENTS, status=200)
        assert [i["alert_id"] for i in everything["items"]] == ids[::-1]  # newest first
        assert everything["next_cursor"] is None
        zones = {i["device"]["site"]: i["time_zone"] for i in everything["items"]}
        assert zones == {"north": "Europe/Berlin", "south": DEFAULT_ZONE}  # site map's, else the default
        for limit in (1, 2, 4):
            assert [i["alert_id"] for i in await api.pages(INCIDENTS, {}, limit)] == ids[::-1]

        async def listed(**query: str) -> list[str]:
            return [i["alert_id"] for i in await api.pages(INCIDENTS, query, 2)]

        assert await listed(state="open") == ids[:0:-1]
        assert await listed(state="resolved") == [ids[0]]
        assert await listed(state="resolved,open") == ids[::-1]
        assert await listed(state="cancelled") == []
        assert await listed(site="south") == [ids[3], ids[1]]
        assert await listed(device=north.device_id, state="open") == [ids[4], ids[2]]
        assert await listed(since=middle.isoformat()) == [ids[4], ids[3], ids[2]]
        assert await listed(until=middle.isoformat()) == [ids[1], ids[0]]
        assert await listed(since=before.isoformat().replace("+00:00", "Z"), until=middle.isoformat()) == ids[1::-1]
        later = (middle + timedelta(hours=2)).astimezone().isoformat()
        assert await listed(since=later.replace("+", " ")) == []  # an unencoded '+' reads as a space

        # Equal arrival times are ordered by id, and a page boundary between them loses or repeats nothing.
        await Incident.filter(id__in=ids[1:4]).update(received_at=middle)
        tied = sorted(ids[1:4], reverse=True)
        edge = (middle + timedelta(microseconds=1)).isoformat()
        assert await listed(state="open", until=edge) == tied
        assert [i["alert_id"] for i in await api.pages(INCIDENTS, {"until": edge}, 1)] == [*tied, ids[0]]

        events_cursor = (await api.call("GET", EVENTS, status=200, query={"limit": "1"}))["next_cursor"]
        for name, value in (
            ("limit", "0"),
            ("limit", "201"),
            ("limit", "ten"),
            ("state", "open,lost"),
            ("since", "yesterday"),
            ("until", "2026-01-01T00:00:00"),  # no offset
            ("site", ""),
            ("cursor", "not-a-cursor"),
            ("cursor", events_cursor),  # another list's
        ):
            refused = await api.call("GET", INCIDENTS, status=400, reason="invalid-query", query={name: value})
            assert name in refused["detail"], refused
        twice = f"{gw.http_url}{INCIDENTS}?state=open&state=resolved"
        async with api.http.get(twice, headers={"Authorization": f"Bearer {DESK_TOKEN}"}) as r:
            assert r.status == 400 and "state" in (await r.json())["detail"]
        await api.call("GET", INCIDENTS, status=401, reason="unauthorized", anonymous=True)
        await api.call("GET", INCIDENTS, status=401, reason="unauthorized", token="wrong")


async def test_an_incident_its_timeline_and_notes(
    gateway_factory: GatewayFactory, pki: PkiLayout, tmp_path: Path, rest: RestFactory
) -> None:
    device_id = f"wb-{uuid.uuid4().hex[:10]}"
    async with (
        gateway_factory(**settings(tmp_path, device_id)) as gw,
        observe(gw.settings.mqtt.topic_prefix) as obs,
        rest(gw) as api,
    ):
        wearable = await enroll(pki, device_id, wearer="Ada Lovelace")
        other = await enroll(pki, wearer="Cy Other")
        alert_id = await press(gw, wearable, api.http)
        other_id = await press(gw, other, api.http)
        await obs.wait_for(lambda o: o.states.get(alert_id, {}).get("state") == "notifying", WAIT_S)

        document = await api.call("GET", INCIDENT, status=200, alert_id=alert_id)
        assert document["time_zone"] == "Europe/Berlin"
        assert document["wearer_info"] == {
            "name": "Ada Lovelace",
            "notes": "Diabetic. Key in locker 4.",
            "contacts": [{"name": "Sam Lovelace", "phone": "+15557654321", "relation": "son"}],
        }
        bare = await api.call("GET", INCIDENT, status=200, alert_id=other_id)
        assert bare["wearer_info"] == {"name": "Cy Other", "notes": "", "contacts": []}

        text = "Son is on his way with the key.\nCall him first."
        note = await api.call("POST", NOTES, status=201, body={"text": text, "operator": "Kim"}, alert_id=alert_id)
        assert (note["type"], note["alert_id"], note["detail"]) == ("note", alert_id, {"by": "Kim", "text": text})
        revision = (await api.call("GET", INCIDENT, status=200, alert_id=alert_id))["revision"]
        assert note["revision"] == revision  # a note changes nothing: the incident keeps its revision
        await obs.wait_for(lambda o: any(e["type"] == "note" for e in o.events), WAIT_S)
        (published,) = [e for e in obs.events if e["type"] == "note"]
        assert published == note
        second = await api.call("POST", NOTES, status=201, body={"text": "second"}, alert_id=alert_id)
        assert second["detail"]["by"] == "dispatch-desk" and second["event_id"] != note["event_id"]
        assert await AuditEntry.filter(action="incident.note", target=alert_id).count() == 2

        for bad in ({}, {"text": ""}, {"text": "   "}, {"text": "x" * 501}, {"text": 5}, {"text": "a\x07b"}):
            await api.call("POST", NOTES, status=422, reason="invalid-note", body=bad, alert_id=alert_id)
        operator = {"text": "ok", "operator": " "}
        await api.call("POST", NOTES, status=422, reason="invalid-operator", body=operator, alert_id=alert_id)
        await api.call(
            "POST",
            NOTES,
            status=400,
            reason="invalid-json",
            raw=b"{",
            alert_id=alert_id,
            headers={"Content-Type": "application/json"},
        )
        await api.call(
            "POST",
            NOTES,
            status=415,
            reason="unsupported-media-type",
            raw=b"hello",
            alert_id=alert_id,
            headers={"Content-Type": "text/plain"},
        )
        body = json.dumps({"text": "x" * 5000}).encode()
        await api.call(
            "POST",
            NOTES,
            status=413,
            reason="oversized",
            raw=body,
            alert_id=alert_id,
            headers={"Content-Type": "application/json"},
        )
        unknown = str(uuid.uuid4())
        await api.call("POST", NOTES, status=404, reason="not-found", body={"text": "x"}, alert_id=unknown)
        await api.call(
            "POST", NOTES, status=401, reason="unauthorized", body={"text": "x"}, anonymous=True, alert_id=alert_id
        )

        timeline = await api.pages(TIMELINE, {}, 2, alert_id=alert_id)
        types = [e["type"] for e in timeline]
        assert types[0] == "raised" and {"notifying", "step-started"} <= set(types)
        assert [e for e in timeline if e["type"] == "note"] == [note, second]
        assert {e["alert_id"] for e in timeline} == {alert_id}
        assert [e["event_id"] for e in await api.pages(TIMELINE, {}, 50, alert_id=alert_id)] == [
            e["event_id"] for e in timeline
        ]
        shown = [(e["revision"], e["type"], e["at"], e["detail"]) for e in document["events"]]
        assert shown == [(e["revision"], e["type"], e["at"], e["detail"]) for e in timeline][: len(shown)]
        await api.call("GET", TIMELINE, status=404, reason="not-found", alert_id=unknown)
        await api.call("GET", TIMELINE, status=400, reason="invalid-query", query={"limit": "-1"}, alert_id=alert_id)

        everything = await api.pages(EVENTS, {}, 3)
        assert {e["alert_id"] for e in everything} == {alert_id, other_id}
        assert len({e["event_id"] for e in everything}) == len(everything)
        notes = await api.pages(EVENTS, {"type": "note"}, 1)
        assert [n["event_id"] for n in notes] == [note["event_id"], second["event_id"]]
        assert await api.pages(EVENTS, {"type": "raised,note", "incident": other_id}, 5) == [
            e for e in everything if e["alert_id"] == other_id and e["type"] == "raised"
        ]
        assert await api.pages(EVENTS, {"since": note["at"], "type": "note"}, 5) == notes
        for name, value in (("type", "Raised"), ("since", "now"), ("cursor", "x"), ("incident", " ")):
            refused = await api.call("GET", EVENTS, status=400, reason="invalid-query", query={name: value})
            assert name in refused["detail"], refused


async def test_roles_decide_who_may_act(
    gateway_factory: GatewayFactory, pki: PkiLayout, tmp_path: Path, rest: RestFactory
) -> None:
    async with gateway_factory(**settings(tmp_path)) as gw, rest(gw) as api:
        _, viewer = await add_api_token("wall-screen", "viewer")
        _, operator = await add_api_token("desk-2", "operator")
        wearable = await enroll(pki)
        alert_id = await press(gw, wearable, api.http)

        await api.call("GET", INCIDENT, status=200, token=viewer, alert_id=alert_id)
        pidf = await api.call("GET", PIDF, status=200, token=viewer, alert_id=alert_id)
        assert pidf.startswith(b"<?xml")
        for template, body in ((ACK, {}), (RESOLVE, {"reason": "handled"}), (NOTES, {"text": "x"})):
            refused = await api.call(
                "POST", template, status=403, reason="forbidden", token=viewer, body=body, alert_id=alert_id
            )
            assert "viewer" in refused["detail"]
        await api.call(
            "POST",
            REVOKE,
            status=403,
            reason="forbidden",
            token=viewer,
            body={"reason": "x"},
            device_id=wearable.device_id,
        )
        await api.call(
            "POST",
            REVOKE,
            status=403,
            reason="forbidden",
            token=operator,
            body={"reason": "x"},
            device_id=wearable.device_id,
        )

        await api.call("POST", NOTES, status=201, token=operator, body={"text": "on it"}, alert_id=alert_id)
        acked = await api.call("POST", ACK, status=200, token=operator, alert_id=alert_id)
        assert acked["result"] == "acknowledged"
        await api.call("POST", RESOLVE, status=200, token=operator, body={"reason": "handled"}, alert_id=alert_id)
        await api.call("POST", NOTES, status=201, token=operator, body={"text": "closed"}, alert_id=alert_id)
        states = [i["state"] for i in (await api.call("GET", INCIDENTS, status=200, token=viewer))["items"]]
        assert states == ["resolved"]
        audited = await AuditEntry.filter(target=alert_id).order_by("id").values_list("actor", "action")
        assert audited == [
            ("desk-2", "incident.note"),
            ("desk-2", "incident.acknowledge"),
            ("desk-2", "incident.resolve"),
            ("desk-2", "incident.note"),
        ]


# --- fleet ----------------------------------------------------------------------------------------------------


async def test_devices_and_their_revocation(
    gateway_factory: GatewayFactory, pki: PkiLayout, tmp_path: Path, rest: RestFactory, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory(**settings(tmp_path)) as gw, rest(gw) as api:
        _, admin = await add_api_token("fleet-admin", "admin")
        ada = await enroll(pki, wearer="Ada Lovelace", site="north")
        bo = await enroll(pki, wearer="Bo Depot", site="depot")
        cy = await enroll(pki, wearer="Cy Depot", site="depot")
        await press(gw, ada, api.http)
        ids = sorted(w.device_id for w in (ada, bo, cy))

        listed = await api.pages(DEVICES, {}, 2)
        assert [d["device_id"] for d in listed] == ids
        seen = next(d for d in listed if d["device_id"] == ada.device_id)
        assert seen["last_seen_at"] is not None and seen["battery"] == 80
        assert {d["certificate"]["status"] for d in listed} == {"valid"}
        assert [d["device_id"] for d in await api.pages(DEVICES, {"site": "depot"}, 1)] == sorted(
            [bo.device_id, cy.device_id]
        )
        assert [d["device_id"] for d in await api.pages(DEVICES, {"q": "nobody"}, 5)] == []
        assert [d["device_id"] for d in await api.pages(DEVICES, {"q": "LOVEL"}, 5)] == [ada.device_id]
        assert [d["device_id"] for d in await api.pages(DEVICES, {"q": cy.device_id[-6:]}, 5)] == [cy.device_id]
        assert await api.pages(DEVICES, {"status": "expiring,expired,revoked"}, 5) == []
        for name, value in (("status", "lost"), ("q", "x" * 129), ("cursor", "e30"), ("limit", "1.5")):
            refused = await api.call("GET", DEVICES, status=400, reason="invalid-query", query={name: value})
            assert name in refused["detail"], refused

        one = await api.call("GET", DEVICE, status=200, device_id=ada.device_id)
        assert one == seen
        await api.call("GET", DEVICE, status=404, reason="not-found", device_id="wb-unknown")
        await api.call("GET", DEVICE, status=404, reason="not-found", device_id="x" * 40)

        for bad in ({}, {"reason": ""}, {"reason": " "}, {"reason": "x" * 129}, {"reason": "two\nlines"}):
            await api.call(
                "POST", REVOKE, status=422, reason="invalid-reason", token=admin, body=bad, device_id=ada.device_id
            )
        await api.call(
            "POST", REVOKE, status=404, reason="not-found", token=admin, body={"reason": "lost"}, device_id="wb-unknown"
        )
        revoked = await api.call(
            "POST", REVOKE, status=200, token=admin, body={"reason": " lost at night "}, device_id=ada.device_id
        )
        certificate = revoked["certificate"]
        assert (certificate["status"], certificate["revoked_reason"]) == ("revoked", "lost at night")
        again = await api.call(
            "POST",
            REVOKE,
            status=409,
            reason="already-revoked",
            token=admin,
            body={"reason": "again"},
            device_id=ada.device_id,
        )
        assert ada.device_id in again["detail"]
        assert [d["device_id"] for d in await api.pages(DEVICES, {"status": "revoked"}, 5)] == [ada.device_id]
        assert len(await api.pages(DEVICES, {"status": "valid"}, 5)) == 2
        audited = await AuditEntry.filter(action="device.revoke").values_list("actor", "target", "detail")
        assert audited == [("fleet-admin", ada.device_id, {"via": "token", "reason": "lost at night"})]

        # The revoked device is refused from its very next press, before any cache refresh.
        async with http_client(client_ssl) as http:
            status, body, _ = await post_frame(http, gw, ada.frame(EventType.PANIC))
        assert (status, body["reason"]) == (403, "revoked")
        assert await Incident.filter(device_id=ada.device_id).count() == 1


async def test_receivers_merge_settings_with_live_status(
    gateway_factory: GatewayFactory, tmp_path: Path, rest: RestFactory
) -> None:
    async with VirtualAir(PathLossModel(range_m=30.0), seed=1) as air:
        node = await air.add_node("hall", Position("north", 0, 0.0, 0.0))
        ble = BleSettings(
            receivers=[
                ReceiverSettings(
                    name="hall", transport=node.transport_spec, site="north", building="a", room="101", x=4.0, y=6.5
                ),
                ReceiverSettings(name="yard", transport=f"tcp-client:127.0.0.1:{services.free_port()}", floor=2),
            ],
            restart_min_s=0.1,
            restart_max_s=0.5,
        )
        async with gateway_factory(**settings(tmp_path, ble=ble)) as gw, rest(gw) as api:
            assert gw.receivers is not None

            async with asyncio.timeout(WAIT_S):  # each receiver reports once it opened, or failed to
                while True:
                    if len(gw.receivers.reports()) == 2:
                        break
                    await asyncio.sleep(0.05)
            hall, yard = (await api.call("GET", RECEIVERS, status=200))["items"]
        assert (hall["name"], hall["status"], hall["error"]) == ("hall", "up", None)
        assert (hall["site"], hall["building"], hall["floor"], hall["room"], hall["x"], hall["y"]) == (
            "north",
            "a",
            0,
            "101",
            4.0,
            6.5,
        )
        assert abs(hall["lat"] - 52.52051) < 1e-4 and abs(hall["lon"] - 13.39785) < 1e-4
        assert hall["updated_at"] is not None
        assert (yard["name"], yard["status"], yard["site"], yard["building"], yard["lat"]) == (
            "yard",
            "down",
            None,
            None,
            None,
        )
        assert yard["error"]

    async with gateway_factory(**settings(tmp_path)) as gw, rest(gw) as api:
        assert await api.call("GET", RECEIVERS, status=200) == {"items": []}


async def test_sites_for_the_map_and_floor_plans(
    gateway_factory: GatewayFactory, pki: PkiLayout, tmp_path: Path, rest: RestFactory
) -> None:
    async with gateway_factory(**settings(tmp_path)) as gw, rest(gw) as api:
        wearable = await enroll(pki, site="north")
        await press(gw, wearable, api.http)
        closed = await press(gw, wearable, api.http)
        await api.call("POST", RESOLVE, status=200, body={"reason": "handled"}, alert_id=closed)

        sites = (await api.call("GET", SITES, status=200))["items"]
        assert sites == [
            {"id": "north", "name": "North Plant", "time_zone": "Europe/Berlin", "open_incidents": 1},
            {"id": "depot", "name": "South Depot", "time_zone": "Europe/Berlin", "open_incidents": 0},
        ]
        north = await api.call("GET", SITE, status=200, site_id="north")
        assert north["shape"]["type"] == "Polygon"
        assert [13.3970537, 52.518652] in north["shape"]["coordinates"][0]  # [lon, lat], as written in the site map
        assert [z["id"] for z in north["zones"]] == ["yard", "labs"]
        a, b = north["buildings"]
        assert [(f["number"], f["plan_url"]) for f in a["floors"]] == [
            (0, "https://plans.example/a-0.png"),
            (1, "/v1/sites/north/buildings/a/floors/1/plan"),
        ]
        reception = a["floors"][0]["rooms"][0]
        assert (reception["id"], reception["name"]) == ("101", "Reception")
        ring = reception["polygon"]["coordinates"][0]
        assert len(ring) == 5 and ring[0] == ring[-1]
        anchor = (13.3977902, 52.5204493)  # building a's Point: plan (0, 0)
        assert max(abs(ring[0][0] - anchor[0]), abs(ring[0][1] - anchor[1])) < 1e-7
        top_left, top_right, bottom_right, bottom_left = a["floors"][0]["plan_corners"]
        assert abs(bottom_left[0] - anchor[1]) < 1e-7 and abs(bottom_left[1] - anchor[0]) < 1e-7  # [lat, lon]
        assert top_left[0] > bottom_left[0] and top_right[1] > top_left[1]  # north up, east right (rotation 0)
        assert abs(bottom_right[0] - bottom_left[0]) < 1e-6 and abs(top_right[0] - top_left[0]) < 1e-6
        floors_b = {f["number"]: f for f in b["floors"]}
        assert floors_b[-1]["plan_url"] is None and floors_b[-1]["plan_corners"] is None
        assert floors_b[2]["plan_url"] == "/v1/sites/north/buildings/b/floors/2/plan"
        tl, tr, _, bl = floors_b[2]["plan_corners"]
        assert tr[0] < tl[0] and tr[1] > tl[1]  # turned 15 degrees clockwise: the top edge runs east-south-east
        assert tl[0] > bl[0]
        depot = await api.call("GET", SITE, status=200, site_id="depot")
        assert (depot["shape"]["type"], depot["buildings"], depot["zones"]) == ("Polygon", [], [])

        image = await api.call("GET", PLAN, status=200, site_id="north", building_id="b", floor="2")
        assert image == PNG
        async with api.http.get(
            f"{gw.http_url}/v1/sites/north/buildings/b/floors/2/plan", headers={"Authorization": f"Bearer {DESK_TOKEN}"}
        ) as r:
            assert r.content_type == "image/svg+xml"
            assert "sandbox" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        for site_id, building_id, floor in (
            ("north", "a", "1"),  # the file is missing
            ("north", "a", "0"),  # a URL: the browser loads it itself
            ("north", "b", "0"),  # not an image type
            ("north", "b", "-1"),  # no plan
            ("north", "b", "7"),  # no such floor
            ("north", "b", "x"),
            ("depot", "b", "2"),  # not the building's site
            ("north", "z", "2"),
        ):
            await api.call(
                "GET", PLAN, status=404, reason="not-found", site_id=site_id, building_id=building_id, floor=floor
            )
        await api.call("GET", SITE, status=404, reason="not-found", site_id="nowhere")
        await api.call("GET", SITES, status=401, reason="unauthorized", anonymous=True)


# --- the document, who am I, the stream ---------------------------------------------------------------------


async def test_the_served_document_identity_and_stream(
    gateway_factory: GatewayFactory, pki: PkiLayout, tmp_path: Path, rest: RestFactory
) -> None:
    async with gateway_factory(**settings(tmp_path)) as gw, rest(gw) as api:
        text = await api.call("GET", OPENAPI_YAML, status=200, anonymous=True)
        assert text.decode() == (ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8")
        await api.call("GET", OPENAPI_JSON, status=200, anonymous=True)
        await api.call("GET", "/healthz", status=200, anonymous=True)
        await api.call("GET", "/readyz", status=200, anonymous=True)
        metrics = await api.call("GET", "/metrics", status=200, anonymous=True)
        assert b"panic_" in metrics

        _, supervisor = await add_api_token("night-lead", "supervisor")
        me = await api.call("GET", ME, status=200, token=supervisor)
        assert (me["name"], me["role"], me["via"], me["csrf_token"]) == ("night-lead", "supervisor", "token", None)
        assert me["permissions"] == ["view", "acknowledge", "resolve"]
        await api.call("GET", ME, status=401, reason="unauthorized", anonymous=True)

        alert_id = await press(gw, await enroll(pki, site="north"), api.http)
        await api.call("GET", STREAM, status=401, reason="unauthorized", anonymous=True)
        url = f"{gw.http_url}{STREAM}"
        async with api.http.get(url, headers={"Authorization": f"Bearer {DESK_TOKEN}"}) as r:
            assert (r.status, r.content_type) == (200, "text/event-stream")
            api.called.add(("get", STREAM))
            frame: dict[str, str] = {}
            async with asyncio.timeout(WAIT_S):
                while "data" not in frame:
                    line = (await r.content.readline()).decode().rstrip("\n")
                    if line and not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        frame[name] = value
        assert frame["event"] == "incident" and frame["id"]
        data = json.loads(frame["data"])
        assert data["alert_id"] == alert_id and data["time_zone"] == "Europe/Berlin"
        assert api.checker.violations({"$ref": "#/components/schemas/IncidentListItem"}, data) == []
        listed = (await api.call("GET", INCIDENTS, status=200))["items"]
        assert set(listed[0]) == set(data)


# --- the document alone ---------------------------------------------------------------------------------------


def test_every_documented_operation_is_exercised() -> None:
    documented = {(method, path) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert set(COVERAGE) | set(ELSEWHERE) == documented
    assert not set(COVERAGE) & set(ELSEWHERE)
    tests = {name for name, value in globals().items() if name.startswith("test_") and callable(value)}
    assert set(COVERAGE.values()) <= tests
    for (_, path), where in ELSEWHERE.items():
        assert path in (ROOT / where).read_text(encoding="utf-8"), (path, where)


def test_the_document_examples_fit_their_schemas() -> None:
    checker = SchemaChecker(DOCUMENT)
    checked = 0
    for operation in (op for ops in DOCUMENT["paths"].values() for op in ops.values()):
        bodies = [operation.get("requestBody", {})] + [checker.deref(r) for r in operation["responses"].values()]
        for node in bodies:
            for media in node.get("content", {}).values():
                samples = [media["example"]] if "example" in media else []
                samples += [e["value"] for e in media.get("examples", {}).values()]
                for sample in samples:
                    assert checker.violations(media["schema"], sample) == [], sample
                    checked += 1
    assert checked >= 20
