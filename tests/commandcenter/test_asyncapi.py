"""docs/asyncapi.yaml: valid YAML, a well-formed AsyncAPI 3.0 document, and in step with the code.

Every example must satisfy its payload schema, and what payloads.py produces must too. The schemas
are checked by the small JSON Schema subset validator below (no jsonschema package is installed);
it refuses keywords it does not know, so it cannot silently skip a constraint.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.commandcenter import (
    Acknowledgement,
    AlertEventType,
    GatewayStatus,
    event_payload,
    parse_ack,
    state_payload,
    status_payload,
)
from gateway.core.incident import AlertState
from gateway.ingest.ble.receivers import ReceiverReport, ReceiverStatus, receiver_status_topic
from gateway.protocol import EventType, GpsFix
from tests.commandcenter.conftest import make_view
from tests.schemacheck import SchemaChecker

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
AT = datetime(2025, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def violations(doc: dict[str, Any], schema: Any, value: Any, path: str = "$") -> list[str]:
    """What in `value` breaks `schema` (a JSON Schema draft-07 subset); empty when it conforms."""
    return SchemaChecker(doc).violations(schema, value, path)


def deref(doc: dict[str, Any], node: Any) -> Any:
    return SchemaChecker(doc).deref(node)


def message_schema(doc: dict[str, Any], name: str) -> Any:
    return doc["components"]["messages"][name]["payload"]


def test_it_is_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["defaultContentType"] == "application/json"
    assert set(doc["servers"]) == {"mqtt", "mqtts"}
    assert doc["servers"]["mqtt"]["protocol"] == "mqtt"
    assert doc["servers"]["mqtts"]["protocol"] == "secure-mqtt"
    for server in doc["servers"].values():
        will = server["bindings"]["mqtt"]["lastWill"]
        assert (will["qos"], will["retain"]) == (1, True)
        assert json.loads(will["message"])["status"] == "offline"


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                SchemaChecker(doc).resolve(node["$ref"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(doc)


@pytest.mark.parametrize(
    ("channel", "address"),
    [
        ("alertState", "{prefix}/alerts/{alert_id}/state"),
        ("routedAlertState", "{prefix}/routes/{route}/alerts/{alert_id}/state"),
        ("alertEvents", "{prefix}/alerts/{alert_id}/events"),
        ("alertAck", "{prefix}/alerts/{alert_id}/ack"),
        ("gatewayStatus", "{prefix}/gateways/{gateway_id}/status"),
        ("receiverStatus", "{prefix}/gateways/{gateway_id}/receivers/{receiver}/status"),
    ],
)
def test_channels_and_their_parameters(doc: dict[str, Any], channel: str, address: str) -> None:
    spec = doc["channels"][channel]
    assert spec["address"] == address
    assert set(spec["parameters"]) == set(re.findall(r"{(\w+)}", address))
    assert spec["messages"]


@pytest.mark.parametrize(
    ("operation", "action", "channel", "retain"),
    [
        ("sendAlertState", "send", "alertState", True),
        ("sendAlertEvent", "send", "alertEvents", False),
        ("receiveAcknowledgement", "receive", "alertAck", False),
        ("sendGatewayStatus", "send", "gatewayStatus", True),
        ("sendReceiverStatus", "send", "receiverStatus", True),
    ],
)
def test_operations_from_the_gateways_point_of_view(
    doc: dict[str, Any], operation: str, action: str, channel: str, retain: bool
) -> None:
    spec = doc["operations"][operation]
    assert spec["action"] == action
    assert spec["channel"]["$ref"] == f"#/channels/{channel}"
    for message in spec["messages"]:
        assert message["$ref"].startswith(f"#/channels/{channel}/messages/")
    binding = spec["bindings"]["mqtt"]
    assert (binding["qos"], binding["retain"]) == (1, retain)


def test_every_message_has_examples_that_satisfy_its_schema(doc: dict[str, Any]) -> None:
    for name, message in doc["components"]["messages"].items():
        assert message["examples"], name
        for example in message["examples"]:
            assert violations(doc, message["payload"], example["payload"]) == [], (name, example["name"])


def test_the_checker_does_catch_violations(doc: dict[str, Any]) -> None:
    example = doc["components"]["messages"]["alertState"]["examples"][0]["payload"]
    broken = {**example, "state": "lost", "battery": 101, "received_at": "2025-03-14 09:26:53"}
    del broken["counter"]
    found = violations(doc, message_schema(doc, "alertState"), broken)
    assert len(found) == 4, found


def test_state_payloads_satisfy_the_schema_and_match_the_example(doc: dict[str, Any]) -> None:
    schema = message_schema(doc, "alertState")
    view = make_view(
        "6f1c2d3e-9a4b-5c6d-8e7f-0a1b2c3d4e5f",
        received_at=AT,
        updated_at=AT,
        device_time=AT - timedelta(seconds=2),
        gps=GpsFix(lat=48.8583701, lon=2.2944813, accuracy_m=12, fix_age_s=3),
    )
    produced = json.loads(state_payload(view))
    assert produced == doc["components"]["messages"]["alertState"]["examples"][0]["payload"]
    assert set(produced) == set(deref(doc, schema)["properties"])
    for state in AlertState:
        for event in (e for e in EventType if e.raises_incident):
            variant = make_view(state=state, event=event, gps=None, battery=None, acknowledged_at=AT)
            assert violations(doc, schema, json.loads(state_payload(variant))) == []


def test_documented_enums_match_the_code(doc: dict[str, Any]) -> None:
    properties = deref(doc, message_schema(doc, "alertState"))["properties"]
    assert properties["state"]["enum"] == [s.value for s in AlertState]
    assert set(properties["event"]["enum"]) == {e.name.lower() for e in EventType if e.raises_incident}
    status = deref(doc, message_schema(doc, "gatewayStatus"))["properties"]["status"]
    assert status["enum"] == [s.value for s in GatewayStatus]
    event_type = deref(doc, message_schema(doc, "alertEvent"))["properties"]["type"]
    assert all(t.value in event_type["description"] for t in AlertEventType)


def test_event_and_status_payloads_satisfy_the_schema(doc: dict[str, Any]) -> None:
    for event_type in AlertEventType:
        payload = event_payload(
            event_id="al-1:2", alert_id="al-1", revision=2, event_type=event_type, at=AT, detail={"x": 1}
        )
        assert violations(doc, message_schema(doc, "alertEvent"), json.loads(payload)) == []
    for status in GatewayStatus:
        payload = status_payload(gateway_id="gw-north-1", status=status, at=AT, version="0.1.0")
        assert violations(doc, message_schema(doc, "gatewayStatus"), json.loads(payload)) == []


def test_receiver_status_matches_the_code(doc: dict[str, Any]) -> None:
    address = doc["channels"]["receiverStatus"]["address"]
    assert receiver_status_topic("{prefix}", "{gateway_id}", "{receiver}") == address
    schema = message_schema(doc, "receiverStatus")
    assert deref(doc, schema)["properties"]["status"]["enum"] == [s.value for s in ReceiverStatus]
    examples = {e["name"]: e["payload"] for e in doc["components"]["messages"]["receiverStatus"]["examples"]}
    up = ReceiverReport("hall-east", ReceiverStatus.UP, datetime(2025, 3, 14, 8, 0, 0, 412_000, tzinfo=UTC), None)
    assert json.loads(up.payload()) == examples["up"]
    down_at = datetime(2025, 3, 14, 11, 17, 5, 31_000, tzinfo=UTC)
    down = ReceiverReport("hall-east", ReceiverStatus.DOWN, down_at, "transport lost")
    assert json.loads(down.payload()) == examples["down"]
    for status in ReceiverStatus:
        produced = json.loads(
            ReceiverReport("r-1", status, AT, "x" if status is ReceiverStatus.DOWN else None).payload()
        )
        assert set(produced) == set(deref(doc, schema)["properties"])
        assert violations(doc, schema, produced) == []


def test_ack_examples_are_accepted_by_the_gateway(doc: dict[str, Any]) -> None:
    for example in doc["components"]["messages"]["acknowledgement"]["examples"]:
        document = example["payload"]
        result = parse_ack("al-1", json.dumps(document).encode())
        assert result == Acknowledgement("al-1", document["operator"], document.get("note"))
