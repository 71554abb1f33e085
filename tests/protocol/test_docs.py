"""docs/PROTOCOL.md and docs/openapi.yaml agree with the code: constants, event types, reasons, statuses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import pytest

from gateway.console.auth import Action, Role
from gateway.core.ladder import ResolveReason
from gateway.escalation.sender import (
    CALL_GATHER_PATH,
    CALL_STATUS_PATH,
    CALL_TWIML_PATH,
    SMS_INBOUND_PATH,
    SMS_STATUS_PATH,
)
from gateway.protocol import EventType, Flags, const
from gateway.rejection import HTTP_STATUS, RejectReason
from gateway.store.incidents import AckResult

DOCS: Final = Path(__file__).resolve().parents[2] / "docs"
PROTOCOL: Final = (DOCS / "PROTOCOL.md").read_text(encoding="utf-8")

#: Problem reasons that are not signal rejections: HTTP layer and gateway errors, with their status.
OTHER_PROBLEMS: Final = {
    "store-unavailable": 503,
    "oversized": 413,
    "unsupported-media-type": 415,
    "internal-error": 500,
}


#: The REST API's incident operations and the statuses each documents (gateway/api.py).
INCIDENT_PATHS: Final = {
    "/v1/incidents/{alert_id}": ("get", {200, 401, 404, 500, 503}),
    "/v1/incidents/{alert_id}/location.pidf": ("get", {200, 401, 404, 500, 503}),
    "/v1/incidents/{alert_id}/ack": ("post", {200, 400, 401, 403, 404, 409, 413, 415, 422, 500, 503}),
    "/v1/incidents/{alert_id}/resolve": ("post", {200, 400, 401, 403, 404, 409, 413, 415, 422, 500, 503}),
}
#: Every operation that needs credentials (bearer token or console session) and the action its role must allow
#: (gateway/api.py, gateway/fleet_api.py, gateway/console/web.py and feed.py; docs/CONSOLE.md's table).
GUARDED: Final = {
    ("get", "/v1/me"): Action.VIEW,
    ("get", "/v1/incidents"): Action.VIEW,
    ("get", "/v1/incidents/{alert_id}"): Action.VIEW,
    ("get", "/v1/incidents/{alert_id}/location.pidf"): Action.VIEW,
    ("post", "/v1/incidents/{alert_id}/ack"): Action.ACKNOWLEDGE,
    ("post", "/v1/incidents/{alert_id}/resolve"): Action.RESOLVE,
    ("get", "/v1/incidents/{alert_id}/events"): Action.VIEW,
    ("post", "/v1/incidents/{alert_id}/notes"): Action.ACKNOWLEDGE,
    ("get", "/v1/events"): Action.VIEW,
    ("get", "/v1/stream"): Action.VIEW,
    ("get", "/v1/devices"): Action.VIEW,
    ("get", "/v1/devices/{device_id}"): Action.VIEW,
    ("post", "/v1/devices/{device_id}/revoke"): Action.REVOKE_DEVICE,
    ("get", "/v1/receivers"): Action.VIEW,
    ("get", "/v1/sites"): Action.VIEW,
    ("get", "/v1/sites/{site_id}"): Action.VIEW,
    ("get", "/v1/sites/{site_id}/buildings/{building_id}/floors/{floor}/plan"): Action.VIEW,
}
#: Operations anyone may call.
OPEN_PATHS: Final = {"/v1/openapi.json", "/v1/openapi.yaml", "/healthz", "/readyz", "/metrics"}
#: The Twilio webhooks (gateway/escalation/webhooks.py) and what a signed request gets.
TWILIO_PATHS: Final = {
    SMS_INBOUND_PATH: "application/xml",
    SMS_STATUS_PATH: None,
    CALL_TWIML_PATH: "application/xml",
    CALL_GATHER_PATH: "application/xml",
    CALL_STATUS_PATH: None,
}
#: Reasons of the REST API's and the webhooks' problems.
API_PROBLEMS: Final = {
    "unauthorized",
    "forbidden",
    "not-found",
    "invalid-json",
    "invalid-note",
    "invalid-operator",
    "invalid-reason",
    "incident-closed",
    "already-resolved",
    "service-unavailable",
    "invalid-query",
    "already-revoked",
    "csrf-failed",
    "too-many-attempts",
    "unavailable",
}


def section(title_prefix: str) -> str:
    """The text of one '## ' or '### ' section of PROTOCOL.md, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title_prefix)}.*?$(.*?)(?=^#+ )", PROTOCOL, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no section {title_prefix!r}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header row


def test_event_table_matches_event_type() -> None:
    rows = table_rows(section("3.1 Event types"))
    documented = {int(value.strip("`"), 16): (name.strip("`"), opens) for value, name, _, opens in rows}
    assert set(documented) == {int(e) for e in EventType}
    for event in EventType:
        name, opens = documented[int(event)]
        assert name == event.name.lower()
        assert opens.startswith("yes") == event.raises_incident


def test_flag_table_matches_flags() -> None:
    rows = table_rows(section("3.2 Flags"))
    masks = {mask.strip("`"): name.strip("`") for _, mask, name, _ in rows}
    for flag in (Flags.RETRANSMISSION, Flags.SILENT):
        assert masks[f"0x{int(flag):02x}"] == flag.name
    reserved = int(next(m for m, n in masks.items() if n == "reserved"), 16)
    assert reserved == 0xFF & ~int(Flags.RETRANSMISSION | Flags.SILENT)


def test_reason_tables_match_http_status() -> None:
    rows = table_rows(section("10.3 Errors"))
    documented: dict[str, int] = {}
    for reason_cell, status_cell, *_ in rows:
        reasons = re.findall(r"`([a-z-]+)`", reason_cell)
        statuses = [int(s) for s in re.findall(r"\d{3}", status_cell)]
        if len(statuses) == 1:
            statuses *= len(reasons)
        documented.update(zip(reasons, statuses, strict=True))
    assert {r: documented[r.value] for r in RejectReason} == HTTP_STATUS
    for reason, status in OTHER_PROBLEMS.items():
        assert documented[reason] == status


def test_layout_and_constants_are_stated() -> None:
    layout = table_rows(section("2. Frame layout"))
    offsets = {row[3].strip("`"): (row[0], row[1]) for row in layout}
    assert offsets["version"] == ("0", "1")
    assert offsets["counter"] == ("4", "4")
    assert offsets["timestamp_ms"] == ("8", "8")
    assert offsets["id_len"] == ("16", "1")
    assert offsets["device_id"][0] == str(const.HEADER_SIZE)
    assert f"always {const.HEADER_SIZE} bytes" in PROTOCOL
    assert f"at most {const.MAX_FRAME_SIZE} bytes" in PROTOCOL
    assert f"1..{const.MAX_DEVICE_ID_LEN} bytes" in PROTOCOL
    assert f"82..{const.MAX_SIGNED_FRAME_SIZE} bytes" in PROTOCOL
    assert const.SIGNATURE_CONTEXT.hex() in PROTOCOL
    assert const.MEDIA_TYPE in PROTOCOL
    gps = table_rows(section("4.1 GPS fix"))
    assert [(row[0], row[1]) for row in gps] == [("0", "4"), ("4", "4"), ("8", "2"), ("10", "2")]
    assert f"`0x{const.TLV_GPS:02x}` | GPS fix | {const.GPS_TLV_SIZE} |" in PROTOCOL
    assert f"`0x{const.TLV_OPTIONAL_FROM:02X}`..`0xFF` are *optional*" in PROTOCOL


# --- openapi.yaml -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    spec: dict[str, Any] = yaml.safe_load((DOCS / "openapi.yaml").read_text(encoding="utf-8"))
    return spec


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs ('#/components/...') to the node they name."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in all_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in all_refs(v)]
    return []


def test_openapi_is_3_1_and_every_ref_resolves(openapi: dict[str, Any]) -> None:
    assert str(openapi["openapi"]).startswith("3.1")
    assert set(openapi["paths"]) == {"/v1/signals", *(path for _, path in GUARDED), *TWILIO_PATHS, *OPEN_PATHS}
    for ref in all_refs(openapi):
        resolve(openapi, {"$ref": ref})


def test_openapi_signals_statuses_match_the_protocol(openapi: dict[str, Any]) -> None:
    post = openapi["paths"]["/v1/signals"]["post"]
    assert list(post["requestBody"]["content"]) == [const.MEDIA_TYPE]
    statuses = {int(code) for code in post["responses"]}
    assert statuses >= {202, 413, 415, *HTTP_STATUS.values(), *OTHER_PROBLEMS.values()}
    for code, response in post["responses"].items():
        response = resolve(openapi, response)
        media = "application/json" if code == "202" else "application/problem+json"
        assert media in response["content"], code
        if code in ("429", "503"):
            assert resolve(openapi, response["headers"]["Retry-After"])["schema"]["type"] == "integer"


def test_openapi_schemas_match_the_code(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert set(schemas["Reason"]["enum"]) >= {r.value for r in RejectReason} | set(OTHER_PROBLEMS)
    assert schemas["EventName"]["enum"] == [e.name.lower() for e in EventType]
    assert set(schemas["Accepted"]["required"]) == {"incident_id", "status", "delayed", "event"}
    assert schemas["Accepted"]["properties"]["status"]["enum"] == ["accepted", "duplicate"]
    assert set(schemas["Problem"]["required"]) >= {"type", "title", "status", "reason"}
    assert set(schemas["Readiness"]["properties"]["checks"]["required"]) == {"database", "mqtt"}


def test_openapi_incident_operations(openapi: dict[str, Any]) -> None:
    bearer = openapi["components"]["securitySchemes"]["bearerToken"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for path, (method, statuses) in INCIDENT_PATHS.items():
        operation = openapi["paths"][path][method]
        assert {int(code) for code in operation["responses"]} == statuses, path
        parameters = [resolve(openapi, p) for p in operation["parameters"]]
        assert [(p["name"], p["in"]) for p in parameters] == [("alert_id", "path")]
        for code, response in operation["responses"].items():
            success = "application/pidf+xml" if path.endswith(".pidf") else "application/json"
            media = "application/problem+json" if int(code) >= 400 else success
            assert list(resolve(openapi, response)["content"]) == [media], (path, code)
        if method == "post":
            assert list(operation["requestBody"]["content"]) == ["application/json"]


def test_openapi_guarded_operations(openapi: dict[str, Any]) -> None:
    session = openapi["components"]["securitySchemes"]["consoleSession"]
    assert (session["type"], session["in"], session["name"]) == ("apiKey", "cookie", "panic_session")
    assert "X-CSRF-Token" in session["description"]
    documented = {(m, p) for p, ops in openapi["paths"].items() for m, op in ops.items() if "x-permission" in op}
    assert documented == set(GUARDED)
    for (method, path), action in GUARDED.items():
        operation = openapi["paths"][path][method]
        assert operation["security"] == [{"bearerToken": []}, {"consoleSession": []}], path
        assert operation["x-permission"] == action.value, path
        statuses = {int(code) for code in operation["responses"]}
        assert {401, 500, 503} <= statuses, path
        assert (403 in statuses) == (action is not Action.VIEW), path
        assert resolve(openapi, operation["responses"]["503"])["headers"]["Retry-After"], path
    for path in ("/v1/openapi.json", "/v1/openapi.yaml"):
        assert openapi["paths"][path]["get"]["security"] == [], path
    assert openapi["components"]["schemas"]["Permission"]["enum"] == [a.value for a in Action]
    assert openapi["components"]["schemas"]["Role"]["enum"] == [r.value for r in Role]


def test_openapi_incident_schemas_match_the_code(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert schemas["ResolveReason"]["enum"] == [r.value for r in ResolveReason]
    assert schemas["AckResult"]["properties"]["result"]["enum"] == [AckResult.ACKNOWLEDGED, AckResult.ALREADY]
    assert set(schemas["Reason"]["enum"]) >= API_PROBLEMS
    assert schemas["Incident"]["allOf"][0] == {"$ref": "#/components/schemas/AlertState"}
    extra = schemas["Incident"]["allOf"][1]
    assert set(extra["required"]) == {"time_zone", "wearer_info", "events", "notifications"}
    assert set(schemas["IncidentEvent"]["required"]) == {"revision", "type", "at", "detail"}
    assert set(schemas["Notification"]["required"]) == {
        "step",
        "channel",
        "purpose",
        "to",
        "phone",
        "status",
        "attempts",
        "error",
        "created_at",
        "updated_at",
    }


def test_openapi_alert_state_is_the_asyncapi_one(openapi: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")
    asyncapi = yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))["components"]["schemas"]
    ours = openapi["components"]["schemas"]
    assert ours["AlertState"]["required"] == asyncapi["AlertState"]["required"]
    assert set(ours["AlertState"]["properties"]) == set(asyncapi["AlertState"]["properties"])
    for name in ("state", "event", "counter", "battery", "short_code", "resolution"):
        theirs = {k: v for k, v in asyncapi["AlertState"]["properties"][name].items() if k != "description"}
        mine = {k: v for k, v in ours["AlertState"]["properties"][name].items() if k != "description"}
        assert mine == theirs, name
    for name in ("Timestamp", "AlertId"):
        assert ours[name] == asyncapi[name], name
    assert ours["Location"]["required"] == asyncapi["Location"]["required"]


def test_openapi_twilio_webhooks(openapi: dict[str, Any]) -> None:
    for path, answer in TWILIO_PATHS.items():
        operation = openapi["paths"][path]["post"]
        parameters = {(p["name"], p["in"]) for p in (resolve(openapi, p) for p in operation["parameters"])}
        assert ("X-Twilio-Signature", "header") in parameters, path
        assert (("key", "query") in parameters) == (path != SMS_INBOUND_PATH), path
        assert list(operation["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
        responses = operation["responses"]
        assert resolve(openapi, responses["403"])["content"].keys() == {"application/problem+json"}
        if answer is None:
            assert "204" in responses and "200" not in responses, path
        else:
            assert list(responses["200"]["content"]) == [answer], path


def test_annotated_example_is_the_panic_gps_vector() -> None:
    block = re.search(r"```\n(.*?)```", section("Annotated example"), re.DOTALL)
    assert block is not None
    hex_columns = [re.split(r"\s{2,}", line.strip(), maxsplit=1)[0] for line in block.group(1).splitlines()]
    annotated = "".join(column.replace(" ", "") for column in hex_columns)
    vector = re.search(r"^name: panic-gps$.*?^frame: ([0-9a-f]+)$", PROTOCOL, re.MULTILINE | re.DOTALL)
    assert vector is not None
    assert annotated == vector.group(1)
    assert f"{len(annotated) // 2} bytes:" in section("Annotated example")
