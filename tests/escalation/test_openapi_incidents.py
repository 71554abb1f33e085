"""docs/openapi.yaml against a real gateway: every incident and webhook answer is documented and fits its schema.

Also checks the timeline's event details against docs/asyncapi.yaml's examples. The schemas are checked by the
small JSON Schema (2020-12) subset validator below (no jsonschema package is installed); it refuses keywords it
does not know, so it cannot silently skip a constraint.
"""

from __future__ import annotations

import json
import re
import ssl
import uuid
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml
from twilio.request_validator import RequestValidator

from firmware_sim.phonenet import Behaviour
from gateway.protocol import EventType
from gateway.protocol.sms import encode_sms
from tests.conftest import http_client, post_frame
from tests.escalation.conftest import (
    API_TOKEN,
    AUTH_TOKEN,
    GATEWAY_NUMBER,
    PEOPLE,
    WAIT_S,
    WEARER_PHONE,
    Scene,
    SceneFactory,
    step,
)
from tests.schemacheck import SchemaChecker

DOCS: Final = Path(__file__).resolve().parents[2] / "docs"
SPEC: Final[dict[str, Any]] = yaml.safe_load((DOCS / "openapi.yaml").read_text(encoding="utf-8"))
ASYNCAPI: Final[dict[str, Any]] = yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
INCIDENT: Final = "/v1/incidents/{alert_id}"
ACK: Final = "/v1/incidents/{alert_id}/ack"
RESOLVE: Final = "/v1/incidents/{alert_id}/resolve"
AUTH: Final = {"Authorization": f"Bearer {API_TOKEN}"}

CHECKER: Final = SchemaChecker(SPEC)


def deref(node: Any) -> Any:
    return CHECKER.deref(node)


def violations(schema: Any, value: Any, path: str = "$") -> list[str]:
    """What in `value` breaks `schema` (the JSON Schema 2020-12 subset openapi.yaml uses); empty when it fits."""
    return CHECKER.violations(schema, value, path)


def documented(method: str, path: str, status: int, content_type: str, body: Any) -> None:
    """The operation documents this status and media type, and `body` fits the documented schema."""
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}: {body!r}"
    response = deref(responses[str(status)])
    if status == 204:
        assert "content" not in response
        return
    media = response["content"]
    assert content_type in media, f"{method.upper()} {path} {status}: {content_type} is not documented"
    if content_type == "application/xml":
        assert isinstance(body, str) and body.startswith("<?xml") and "<Response" in body
        return
    assert violations(media[content_type]["schema"], body) == [], (method, path, status)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    path: str,
    *,
    status: int,
    reason: str | None = None,
    **kw: Any,
) -> Any:
    """Make a request, check its answer against the document and the expected status (and problem reason)."""
    async with http.request(method, url, **kw) as r:
        content_type = r.content_type
        body: Any = await r.read()
        if content_type.endswith("json"):
            body = json.loads(body)
        elif body:
            body = body.decode()
        assert r.status == status, (r.status, body)
        documented(method.lower(), path, r.status, content_type, body)
        if reason is not None:
            assert content_type == "application/problem+json"
            assert (body["reason"], body["status"]) == (reason, status)
            assert body["type"] == f"https://panic-gateway.dev/problems/{reason}"
        if status == 401:
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="panic-gateway"'
        return body


async def press(s: Scene, client_ssl: ssl.SSLContext) -> str:
    async with http_client(client_ssl) as http:
        status, body, _ = await post_frame(http, s.gateway, s.wearable.frame())
    assert status == 202, body
    alert_id = body["incident_id"]
    assert isinstance(alert_id, str)
    return alert_id


def signed_form(url: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, form)}


def example_details() -> dict[str, set[str]]:
    """The detail fields of each asyncapi.yaml alertEvent example, by event type."""
    examples = ASYNCAPI["components"]["messages"]["alertEvent"]["examples"]
    return {e["payload"]["type"]: set(e["payload"]["detail"]) for e in examples}


# --- the document alone --------------------------------------------------------------------------------------


def test_the_incident_examples_fit_their_schemas() -> None:
    checked = 0
    for path in (INCIDENT, ACK, RESOLVE):
        for operation in SPEC["paths"][path].values():
            bodies = [("request", operation.get("requestBody", {}))]
            bodies += [(code, deref(r)) for code, r in operation["responses"].items()]
            for where, node in bodies:
                for media in node.get("content", {}).values():
                    samples = [media["example"]] if "example" in media else []
                    samples += [e["value"] for e in media.get("examples", {}).values()]
                    for sample in samples:
                        assert violations(media["schema"], sample) == [], (path, where)
                        checked += 1
    assert checked >= 8


def test_the_checker_does_catch_violations() -> None:
    schema = SPEC["paths"][INCIDENT]["get"]["responses"]["200"]["content"]["application/json"]
    example = schema["example"]
    assert violations(schema["schema"], example) == []
    broken = {**example, "state": "lost", "battery": 101, "events": [{"revision": 1}]}
    broken["notifications"] = [{**example["notifications"][0], "phone": "+15551230001", "step": -2}]
    del broken["counter"]
    found = violations(schema["schema"], broken)
    assert len(found) == 8, found


# --- a real gateway ------------------------------------------------------------------------------------------


async def test_incident_api_answers_are_the_documented_ones(scene: SceneFactory, client_ssl: ssl.SSLContext) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s, http_client(client_ssl) as http:
        alert_id = await press(s, client_ssl)
        await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 1, WAIT_S)
        base = f"{s.gateway.http_url}/v1/incidents/{alert_id}"
        unknown = f"{s.gateway.http_url}/v1/incidents/{uuid.uuid4()}"

        document = await call(http, "GET", base, INCIDENT, status=200, headers=AUTH)
        assert document["alert_id"] == alert_id and document["state"] == "notifying"
        assert [e["type"] for e in document["events"]][:3] == ["raised", "notifying", "step-started"]
        assert [(n["to"], n["purpose"], n["step"]) for n in document["notifications"]] == [("Ana Guard", "alert", 0)]
        await call(http, "GET", base, INCIDENT, status=401, reason="unauthorized")
        await call(
            http, "GET", base, INCIDENT, status=401, reason="unauthorized", headers={"Authorization": "Bearer x"}
        )
        await call(http, "GET", unknown, INCIDENT, status=404, reason="not-found", headers=AUTH)

        json_headers = {**AUTH, "Content-Type": "application/json"}
        ack = f"{base}/ack"
        await call(http, "POST", ack, ACK, status=401, reason="unauthorized", json={})
        await call(http, "POST", ack, ACK, status=400, reason="invalid-json", data=b"{", headers=json_headers)
        await call(http, "POST", ack, ACK, status=400, reason="invalid-json", data=b"[]", headers=json_headers)
        text = {**AUTH, "Content-Type": "text/plain"}
        await call(http, "POST", ack, ACK, status=415, reason="unsupported-media-type", data=b"ok", headers=text)
        for oversized in (5_000, 20_000):  # over the API's own limit, and over the server's
            body = json.dumps({"note": "x" * oversized}).encode()
            await call(http, "POST", ack, ACK, status=413, reason="oversized", data=body, headers=json_headers)
        await call(http, "POST", ack, ACK, status=422, reason="invalid-note", json={"note": "x" * 501}, headers=AUTH)
        await call(http, "POST", ack, ACK, status=422, reason="invalid-operator", json={"operator": " "}, headers=AUTH)
        await call(http, "POST", f"{unknown}/ack", ACK, status=404, reason="not-found", headers=AUTH)
        first = await call(http, "POST", ack, ACK, status=200, json={"note": "on my way"}, headers=AUTH)
        assert first == {"alert_id": alert_id, "result": "acknowledged", "state": "acknowledged"}
        again = await call(http, "POST", ack, ACK, status=200, headers=AUTH)  # no body at all
        assert again["result"] == "already-acknowledged"

        resolve = f"{base}/resolve"
        await call(http, "POST", resolve, RESOLVE, status=401, reason="unauthorized", json={"reason": "handled"})
        await call(http, "POST", resolve, RESOLVE, status=422, reason="invalid-reason", headers=AUTH)
        await call(
            http, "POST", resolve, RESOLVE, status=422, reason="invalid-reason", json={"reason": "x"}, headers=AUTH
        )
        bad_note = {"reason": "handled", "note": 5}
        await call(http, "POST", resolve, RESOLVE, status=422, reason="invalid-note", json=bad_note, headers=AUTH)
        await call(http, "POST", resolve, RESOLVE, status=400, reason="invalid-json", data=b"{", headers=json_headers)
        await call(
            http, "POST", resolve, RESOLVE, status=415, reason="unsupported-media-type", data=b"handled", headers=text
        )
        await call(http, "POST", f"{unknown}/resolve", RESOLVE, status=404, json={"reason": "handled"}, headers=AUTH)
        done = await call(http, "POST", resolve, RESOLVE, status=200, json={"reason": "handled"}, headers=AUTH)
        assert done == {"alert_id": alert_id, "result": "resolved", "reason": "handled"}
        await call(
            http,
            "POST",
            resolve,
            RESOLVE,
            status=409,
            reason="already-resolved",
            json={"reason": "handled"},
            headers=AUTH,
        )
        await call(http, "POST", ack, ACK, status=409, reason="incident-closed", headers=AUTH)

        closed = await call(http, "GET", base, INCIDENT, status=200, headers=AUTH)
        assert (closed["state"], closed["resolution"], closed["resolved_by"]) == (
            "resolved",
            "handled",
            "dispatch-desk",
        )
        details = example_details()
        for event in closed["events"]:
            if event["type"] in ("step-started", "acknowledged"):
                assert set(event["detail"]) == details[event["type"]], event


async def test_an_exhausted_incident_is_the_documented_document(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    steps = step("sms", 1, "responder:ana") + step("voice", 1, "responder:bo")
    async with scene(steps, behaviours={"bo": Behaviour(call="busy")}) as s, http_client(client_ssl) as http:
        alert_id = await press(s, client_ssl)
        await s.observer.wait_for(lambda o: o.states.get(alert_id, {}).get("state") == "exhausted", WAIT_S)
        await s.net.wait_for(lambda n: all(s.texts_to(rid) for rid in PEOPLE), WAIT_S)
        base = f"{s.gateway.http_url}/v1/incidents/{alert_id}"
        document = await call(http, "GET", base, INCIDENT, status=200, headers=AUTH)
        assert document["state"] == "exhausted"
        purposes = {(n["purpose"], n["step"]) for n in document["notifications"]}
        assert {("alert", 0), ("alert", 1), ("broadcast", -1)} <= purposes
        assert all(re.fullmatch(r"\+1555\*\*\*\d{4}", n["phone"]) for n in document["notifications"])

        types = {e["type"] for e in document["events"]}
        description = ASYNCAPI["components"]["schemas"]["AlertEvent"]["properties"]["type"]["description"]
        assert all(f"* {t} - " in description for t in types), types
        details = example_details()
        for event in document["events"]:
            if event["type"] in ("raised", "step-started", "exhausted"):
                assert set(event["detail"]) == details[event["type"]], event
            if event["type"] == "send-result":
                assert (
                    {"key", "outcome", "channel", "to"}
                    <= set(event["detail"])
                    <= {
                        "key",
                        "outcome",
                        "channel",
                        "to",
                        "detail",
                    }
                )
                assert event["detail"]["to"] in {name for name, _ in PEOPLE.values()}

        # The wearable's next contact learns that nobody has its alert yet (the 202's `incident`).
        status, accepted, _ = await post_frame(http, s.gateway, s.wearable.frame(EventType.HEARTBEAT))
        documented("post", "/v1/signals", status, "application/json", accepted)
        assert accepted["incident"] == {"id": alert_id, "state": "exhausted", "acknowledged_by": None}


async def test_twilio_webhook_answers_are_the_documented_ones(scene: SceneFactory, client_ssl: ssl.SSLContext) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s, http_client(client_ssl) as http:
        public = s.gateway.settings.twilio.public_url
        sms_url = f"{public}/v1/twilio/sms"
        reply = {"From": PEOPLE["ana"][1], "To": GATEWAY_NUMBER, "Body": "ok 0000", "MessageSid": "SM" + "0" * 32}
        await call(http, "POST", sms_url, "/v1/twilio/sms", status=403, reason="forbidden", data=reply)
        answer = await call(
            http, "POST", sms_url, "/v1/twilio/sms", status=200, data=reply, headers=signed_form(sms_url, reply)
        )
        assert "<Message>" not in answer  # never notified yet: no reply (each one costs an SMS)

        frame = {"From": WEARER_PHONE, "To": GATEWAY_NUMBER, "Body": encode_sms(s.wearable.frame())}
        answer = await call(
            http, "POST", sms_url, "/v1/twilio/sms", status=200, data=frame, headers=signed_form(sms_url, frame)
        )
        assert "<Message>Alert received. Help is being arranged.</Message>" in answer
        impostor = {**frame, "From": "+15559990000", "Body": encode_sms(s.wearable.frame())}
        answer = await call(
            http, "POST", sms_url, "/v1/twilio/sms", status=200, data=impostor, headers=signed_form(sms_url, impostor)
        )
        assert answer.endswith("<Response />")

        for path, form, kind in (
            ("/v1/twilio/sms/status", {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"}, 204),
            ("/v1/twilio/voice/answer", {"CallSid": "CA" + "1" * 32, "CallStatus": "in-progress"}, 200),
            ("/v1/twilio/voice/gather", {"CallSid": "CA" + "1" * 32, "Digits": "1"}, 200),
            ("/v1/twilio/voice/status", {"CallSid": "CA" + "1" * 32, "CallStatus": "completed"}, 204),
        ):
            url = f"{public}{path}?key=unknown"
            await call(http, "POST", url, path, status=403, reason="forbidden", data=form)
            await call(http, "POST", url, path, status=kind, data=form, headers=signed_form(url, form))
