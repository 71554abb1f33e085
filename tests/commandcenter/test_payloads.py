"""JSON payloads: state, events and status encode as documented; parse_ack accepts good acks and never raises."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.commandcenter import (
    Acknowledgement,
    AckRejection,
    AckRejectReason,
    AlertEventType,
    GatewayStatus,
    const,
    event_payload,
    format_utc,
    parse_ack,
    state_document,
    state_payload,
    status_payload,
)
from gateway.core.incident import AlertState
from gateway.protocol import EventType, GpsFix
from tests.commandcenter.conftest import make_view

AT = datetime(2025, 3, 14, 9, 26, 53, 589_793, tzinfo=UTC)


def test_state_payload_is_the_documented_json() -> None:
    view = make_view(
        "al-7",
        revision=3,
        state=AlertState.ACKNOWLEDGED,
        acknowledged_by="Grace",
        acknowledged_at=AT + timedelta(seconds=20),
        updated_at=AT + timedelta(seconds=20),
    )
    assert json.loads(state_payload(view)) == {
        "alert_id": "al-7",
        "revision": 3,
        "state": "acknowledged",
        "event": "panic",
        "device": {"id": "wb-0042", "wearer": "Ada Lovelace", "site": "north"},
        "counter": 17,
        "device_time": "2025-03-14T09:26:51.589Z",
        "received_at": "2025-03-14T09:26:53.589Z",
        "updated_at": "2025-03-14T09:27:13.589Z",
        "delayed": False,
        "test": False,
        "battery": 81,
        "location": {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [2.2944813, 48.8583701]},
            "properties": {"accuracy_m": 12, "source": "gps", "fix_age_s": 3},
        },
        "transport": "https",
        "acknowledged_by": "Grace",
        "acknowledged_at": "2025-03-14T09:27:13.589Z",
        "zone": None,
        "short_code": "6559",
        "resolution": None,
        "resolved_by": None,
        "resolved_at": None,
    }


def test_state_without_position_or_battery_has_nulls() -> None:
    doc = json.loads(state_payload(make_view(gps=None, battery=None, event=EventType.FALL, test=True)))
    assert doc["location"] is None
    assert doc["battery"] is None
    assert doc["event"] == "fall"
    assert doc["test"] is True
    assert doc["acknowledged_by"] is None
    assert doc["acknowledged_at"] is None


def test_state_payload_is_compact_utf8() -> None:
    payload = state_payload(make_view(wearer="Zoë Ñúñez 李"))
    assert "Zoë Ñúñez 李".encode() in payload
    assert b": " not in payload
    assert b", " not in payload.replace("Ñúñez 李".encode(), b"")


def test_coordinates_are_rounded_to_the_frame_precision() -> None:
    doc = state_document(make_view(gps=GpsFix(lat=0.1 + 0.2, lon=-179.99999994, accuracy_m=5)))
    geometry = doc["location"]["geometry"]  # type: ignore[index]
    assert geometry["coordinates"] == [-179.9999999, 0.3]


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "2025-01-02T03:04:05.000Z"),
        (datetime(2025, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC), "2025-01-02T03:04:05.999Z"),
        (datetime(2025, 1, 2, 1, 0, tzinfo=timezone(timedelta(hours=2))), "2025-01-01T23:00:00.000Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z"),
    ],
)
def test_times_are_rfc3339_utc_with_milliseconds(moment: datetime, text: str) -> None:
    assert format_utc(moment) == text


def test_naive_times_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_utc(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        state_payload(make_view(received_at=datetime(2025, 1, 1)))


def test_nan_coordinates_are_refused_not_sent_as_invalid_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        state_payload(make_view(gps=GpsFix(lat=float("nan"), lon=0.0, accuracy_m=1)))


def test_event_payload() -> None:
    payload = event_payload(
        event_id="al-7:3",
        alert_id="al-7",
        revision=3,
        event_type=AlertEventType.ACKNOWLEDGED,
        at=AT,
        detail={"operator": "Grace", "note": None},
    )
    assert json.loads(payload) == {
        "event_id": "al-7:3",
        "alert_id": "al-7",
        "revision": 3,
        "type": "acknowledged",
        "at": "2025-03-14T09:26:53.589Z",
        "detail": {"operator": "Grace", "note": None},
    }


def test_event_types_beyond_the_enum_are_allowed_when_well_formed() -> None:
    doc = json.loads(event_payload(event_id="e", alert_id="a", revision=1, event_type="sms-sent", at=AT))
    assert doc["type"] == "sms-sent"
    assert doc["detail"] == {}


@pytest.mark.parametrize("event_type", ["", "Raised", "raised!", "1st", "x" * 33, "a b"])
def test_malformed_event_types_are_refused(event_type: str) -> None:
    with pytest.raises(ValueError, match="event type"):
        event_payload(event_id="e", alert_id="a", revision=1, event_type=event_type, at=AT)


def test_event_payload_refuses_bad_ids() -> None:
    with pytest.raises(ValueError, match="event_id"):
        event_payload(event_id="", alert_id="a", revision=1, event_type="raised", at=AT)
    with pytest.raises(ValueError, match="alert id"):
        event_payload(event_id="e", alert_id="a/b", revision=1, event_type="raised", at=AT)


def test_status_payload() -> None:
    payload = status_payload(gateway_id="gw-1", status=GatewayStatus.OFFLINE, at=AT, version="1.2.3")
    assert json.loads(payload) == {
        "gateway_id": "gw-1",
        "status": "offline",
        "at": "2025-03-14T09:26:53.589Z",
        "version": "1.2.3",
    }


# -- acknowledgements ------------------------------------------------------------------------------------


def ack_bytes(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_parse_ack() -> None:
    assert parse_ack("al-7", ack_bytes({"operator": "Grace Hopper", "note": "unit 12 sent\nETA 4 min"})) == (
        Acknowledgement("al-7", "Grace Hopper", "unit 12 sent\nETA 4 min")
    )


@pytest.mark.parametrize("note_fields", [{}, {"note": None}, {"note": ""}])
def test_a_missing_or_empty_note_is_none(note_fields: dict[str, Any]) -> None:
    assert parse_ack("al-7", ack_bytes({"operator": "op", **note_fields})) == Acknowledgement("al-7", "op", None)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert parse_ack("a", ack_bytes({"operator": "op", "console": "east-2", "priority": 1})) == (
        Acknowledgement("a", "op", None)
    )


def test_limits_are_inclusive() -> None:
    operator, note = "o" * const.OPERATOR_MAX_CHARS, "n" * const.NOTE_MAX_CHARS
    assert parse_ack("a", ack_bytes({"operator": operator, "note": note})) == Acknowledgement("a", operator, note)


def test_a_note_of_escaped_emoji_fits_the_size_limit() -> None:
    payload = json.dumps({"operator": "\U0001f600" * 64, "note": "\U0001f600" * 500}, ensure_ascii=True).encode()
    assert isinstance(parse_ack("a", payload), Acknowledgement)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", AckRejectReason.NOT_JSON),
        (b"\xff\xfe{}", AckRejectReason.NOT_UTF8),
        (b"{operator: 1}", AckRejectReason.NOT_JSON),
        (b"[" * 5000 + b"]" * 5000, AckRejectReason.TOO_LARGE),
        (b"[" * 4000 + b"]" * 4000, AckRejectReason.NOT_JSON),  # nesting beyond the recursion limit
        (b"9" * 5000, AckRejectReason.NOT_JSON),  # beyond int-string conversion limit... if under the size limit
        (b'"operator"', AckRejectReason.NOT_OBJECT),
        (b"null", AckRejectReason.NOT_OBJECT),
        (b'[{"operator": "x"}]', AckRejectReason.NOT_OBJECT),
        (b"{}", AckRejectReason.BAD_OPERATOR),
        (ack_bytes({"operator": None}), AckRejectReason.BAD_OPERATOR),
        (ack_bytes({"operator": 7}), AckRejectReason.BAD_OPERATOR),
        (ack_bytes({"operator": ""}), AckRejectReason.BAD_OPERATOR),
        (ack_bytes({"operator": "   "}), AckRejectReason.BAD_OPERATOR),
        (ack_bytes({"operator": "o" * 65}), AckRejectReason.BAD_OPERATOR),
        (ack_bytes({"operator": "bob\nroot"}), AckRejectReason.BAD_OPERATOR),
        (ack_bytes({"operator": "bob\u202e"}), AckRejectReason.BAD_OPERATOR),  # bidi override
        (ack_bytes({"operator": "bob", "note": 5}), AckRejectReason.BAD_NOTE),
        (ack_bytes({"operator": "bob", "note": ["x"]}), AckRejectReason.BAD_NOTE),
        (ack_bytes({"operator": "bob", "note": "n" * 501}), AckRejectReason.BAD_NOTE),
        (ack_bytes({"operator": "bob", "note": "forged\x1b[2Jlog"}), AckRejectReason.BAD_NOTE),
        (b'{"operator": "bob", "note": "\\ud800"}', AckRejectReason.BAD_NOTE),  # lone surrogate
        (b'{"operator": "b\\udc00b"}', AckRejectReason.BAD_OPERATOR),
        (b" " * (const.MAX_ACK_PAYLOAD_BYTES + 1), AckRejectReason.TOO_LARGE),
    ],
)
def test_bad_acks_are_rejected_with_a_reason(payload: bytes, reason: AckRejectReason) -> None:
    result = parse_ack("al-1", payload)
    assert isinstance(result, AckRejection)
    assert result.reason is reason
    assert result.detail


def test_an_ack_for_an_invalid_alert_id_is_rejected() -> None:
    result = parse_ack("a/b", ack_bytes({"operator": "op"}))
    assert isinstance(result, AckRejection)
    assert result.reason is AckRejectReason.BAD_TOPIC


@given(payload=st.binary(max_size=600))
def test_parse_ack_never_raises_on_random_bytes(payload: bytes) -> None:
    assert isinstance(parse_ack("al-1", payload), Acknowledgement | AckRejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(
    document=st.dictionaries(
        st.sampled_from(["operator", "note", "other"]) | st.text(max_size=8), json_values, max_size=4
    )
)
def test_parse_ack_never_raises_on_random_json_objects(document: dict[str, Any]) -> None:
    result = parse_ack("al-1", json.dumps(document).encode())
    assert isinstance(result, Acknowledgement | AckRejection)
    if isinstance(result, Acknowledgement):
        assert result.operator == document["operator"]


operators = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")) | st.just(" "),
    min_size=1,
    max_size=const.OPERATOR_MAX_CHARS,
).filter(lambda s: not s.isspace() and s.isprintable())
notes = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from("\n\t"), max_size=500)


@given(operator=operators, note=notes, ascii_only=st.booleans())
def test_valid_acks_round_trip(operator: str, note: str, ascii_only: bool) -> None:
    payload = json.dumps({"operator": operator, "note": note}, ensure_ascii=ascii_only).encode()
    assert parse_ack("al-1", payload) == Acknowledgement("al-1", operator, note or None)
