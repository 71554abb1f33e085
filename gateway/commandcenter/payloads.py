"""JSON payloads of the command-center contract (pure functions): encode state, events and status; parse acks.

Encoders take values the gateway made and raise ValueError/TypeError only for programming errors
(naive datetimes, NaN coordinates, ids that are not topic levels). `parse_ack` takes bytes from the
network and never raises: bad input comes back as an AckRejection value.
"""

from __future__ import annotations

import enum
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from gateway.commandcenter import const
from gateway.commandcenter.topics import is_topic_id
from gateway.core.incident import IncidentView
from gateway.location.model import Place
from gateway.protocol import GpsFix

_EVENT_TYPE: Final = re.compile(r"[a-z][a-z0-9_.-]*")
#: Control characters a note may keep: operators paste multi-line notes.
_NOTE_WHITESPACE: Final = frozenset("\t\n\r")
#: GPS frames carry 7 decimals; more would only show float noise.
_COORDINATE_DECIMALS: Final = 7


class GatewayStatus(enum.StrEnum):
    """The retained status of a gateway process."""

    ONLINE = "online"
    OFFLINE = "offline"


class AlertEventType(enum.StrEnum):
    """Event types the gateway publishes today. Consumers must ignore types they do not know:
    later versions add more (escalation steps, SMS and call results) without a new topic version."""

    #: The incident was opened by a panic, fall or test press.
    RAISED = "raised"
    #: Another signal for the same press arrived (other transport or receiver); detail says which.
    SIGNAL = "signal"
    #: Escalation started notifying people.
    NOTIFYING = "notifying"
    #: An operator took the alert; detail has operator and note.
    ACKNOWLEDGED = "acknowledged"
    #: The wearer cancelled (false alarm).
    CANCELLED = "cancelled"
    #: Closed after handling.
    RESOLVED = "resolved"
    #: Every escalation step ran and nobody acknowledged.
    EXHAUSTED = "exhausted"
    #: A better position arrived (the GPS fix of a frame read over BLE GATT); detail: source, accuracy_m.
    LOCATED = "located"
    #: The gateway could not complete the BLE GATT follow-up; the alert stands from the advert alone.
    FOLLOWUP_FAILED = "followup-failed"
    #: An operator wrote on the timeline; nothing else changed. detail: by, text.
    NOTE = "note"


def format_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and 'Z' (2024-05-01T12:00:00.123Z); naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: pass an aware (UTC) datetime")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def optional_utc(moment: datetime | None) -> str | None:
    """format_utc, or None for no moment."""
    return None if moment is None else format_utc(moment)


def location_feature(
    gps: GpsFix | None, *, source: str | None = None, place: Place | None = None, text: str | None = None
) -> dict[str, object] | None:
    """A GeoJSON Feature (RFC 7946: coordinates are [lon, lat]) with accuracy and source, or None when unknown.

    Before fusion the position is the frame's GPS fix (source "gps", fix_age_s). Once fused, `source` says what
    it rests on and `place`/`text` where it is in the site model (geometry null for a room without a position).
    """
    if gps is None and place is None:
        return None
    properties: dict[str, object] = {"accuracy_m": gps.accuracy_m if gps else None, "source": source or "gps"}
    if (source or "gps") == "gps" and gps is not None:
        properties["fix_age_s"] = gps.fix_age_s
    if place is not None:
        properties["place"] = {
            "site": place.site,
            "building": place.building,
            "floor": place.floor,
            "room": place.room,
            "zone": place.zone,
        }
        properties["text"] = text
    geometry = None
    if gps is not None:
        geometry = {
            "type": "Point",
            "coordinates": [round(gps.lon, _COORDINATE_DECIMALS), round(gps.lat, _COORDINATE_DECIMALS)],
        }
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def state_document(view: IncidentView) -> dict[str, object]:
    """The retained state of an alert as a JSON-ready dict (also the body of the REST resource)."""
    return {
        "alert_id": view.alert_id,
        "revision": view.revision,
        "state": view.state.value,
        "event": view.event.name.lower(),
        "device": {"id": view.device_id, "wearer": view.wearer, "site": view.site},
        "counter": view.counter,
        "device_time": format_utc(view.device_time),
        "received_at": format_utc(view.received_at),
        "updated_at": format_utc(view.updated_at),
        "delayed": view.delayed,
        "test": view.test,
        "battery": view.battery,
        "location": location_feature(view.gps, source=view.location_source, place=view.place, text=view.place_text),
        "transport": view.transport,
        "acknowledged_by": view.acknowledged_by,
        "acknowledged_at": optional_utc(view.acknowledged_at),
        "zone": view.zone,
        "short_code": view.short_code,
        "resolution": view.resolution,
        "resolved_by": view.resolved_by,
        "resolved_at": optional_utc(view.resolved_at),
    }


def encode_json(document: Mapping[str, object]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def state_payload(view: IncidentView) -> bytes:
    """Payload of `{prefix}/alerts/{alert_id}/state`."""
    return encode_json(state_document(view))


def event_payload(
    *,
    event_id: str,
    alert_id: str,
    revision: int,
    event_type: str,
    at: datetime,
    detail: Mapping[str, object] | None = None,
) -> bytes:
    """Payload of `{prefix}/alerts/{alert_id}/events`.

    event_id: unique per event, the consumers' idempotency key (a retried publish repeats it).
    revision: the alert's revision after this event.
    event_type: an AlertEventType or another lowercase word (`[a-z][a-z0-9_.-]*`, at most 32 chars).
    detail: event-specific JSON object (operator and note for "acknowledged", transport for "signal").
    """
    if not event_id or len(event_id) > const.TOPIC_ID_MAX_CHARS:
        raise ValueError(f"event_id must be 1-{const.TOPIC_ID_MAX_CHARS} characters")
    if not is_topic_id(alert_id):
        raise ValueError(f"alert id {alert_id!r} cannot be a topic level")
    if len(event_type) > const.EVENT_TYPE_MAX_CHARS or not _EVENT_TYPE.fullmatch(event_type):
        raise ValueError(f"event type {event_type!r} is not a short lowercase word")
    return encode_json(event_document(event_id, alert_id, revision, event_type, at, detail))


def event_document(
    event_id: str, alert_id: str, revision: int, event_type: str, at: datetime, detail: Mapping[str, object] | None
) -> dict[str, object]:
    """An alert event as a JSON-ready dict: the MQTT event payload, and an item of the REST timelines."""
    return {
        "event_id": event_id,
        "alert_id": alert_id,
        "revision": revision,
        "type": str(event_type),
        "at": format_utc(at),
        "detail": dict(detail) if detail is not None else {},
    }


def status_payload(*, gateway_id: str, status: GatewayStatus, at: datetime, version: str) -> bytes:
    """Payload of `{prefix}/gateways/{gateway_id}/status`. In a last will, `at` is when the lost connection was made."""
    return encode_json({"gateway_id": gateway_id, "status": status.value, "at": format_utc(at), "version": version})


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """An operator took an alert (from `{prefix}/alerts/{alert_id}/ack`).

    alert_id: from the topic.
    operator: who, 1..64 printable characters.
    note: optional free text, at most 500 characters; None when absent or empty.
    """

    alert_id: str
    operator: str
    note: str | None = None


class AckRejectReason(enum.StrEnum):
    """Why an acknowledgement was refused; the value is stable for logs and metrics."""

    BAD_TOPIC = "bad-topic"
    TOO_LARGE = "too-large"
    NOT_UTF8 = "not-utf8"
    NOT_JSON = "not-json"
    NOT_OBJECT = "not-object"
    BAD_OPERATOR = "bad-operator"
    BAD_NOTE = "bad-note"


@dataclass(frozen=True, slots=True)
class AckRejection:
    """A refused acknowledgement.

    reason: machine-readable cause.
    detail: one sentence for the log; never echoes the payload.
    """

    reason: AckRejectReason
    detail: str


def _note_character_allowed(c: str) -> bool:
    # Surrogates cannot be re-encoded as UTF-8; other control characters could forge log lines.
    category = unicodedata.category(c)
    return c in _NOTE_WHITESPACE or category not in ("Cc", "Cs")


def note_text_ok(note: str) -> bool:
    """Whether a note's characters may be stored and published: newlines and tabs, no other control characters."""
    return all(_note_character_allowed(c) for c in note)


def parse_ack(alert_id: str, payload: bytes) -> Acknowledgement | AckRejection:
    """Parse `{"operator": "...", "note": "..."}`; unknown fields are ignored (later versions may add some).

    Never raises: anything malformed comes back as an AckRejection.
    """
    if not is_topic_id(alert_id):
        return AckRejection(AckRejectReason.BAD_TOPIC, "the alert id in the topic is not valid")
    if len(payload) > const.MAX_ACK_PAYLOAD_BYTES:
        return AckRejection(
            AckRejectReason.TOO_LARGE, f"payload is {len(payload)} bytes, over {const.MAX_ACK_PAYLOAD_BYTES}"
        )
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        return AckRejection(AckRejectReason.NOT_UTF8, "payload is not UTF-8")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays within the size limit
        return AckRejection(AckRejectReason.NOT_JSON, "payload is not JSON")
    if not isinstance(document, dict):
        return AckRejection(AckRejectReason.NOT_OBJECT, "payload is not a JSON object")
    operator = document.get("operator")
    if not isinstance(operator, str):
        return AckRejection(AckRejectReason.BAD_OPERATOR, "operator is missing or not a string")
    if not 0 < len(operator) <= const.OPERATOR_MAX_CHARS or not operator.isprintable() or operator.isspace():
        return AckRejection(
            AckRejectReason.BAD_OPERATOR, f"operator must be 1-{const.OPERATOR_MAX_CHARS} printable characters"
        )
    note = document.get("note")
    if note is not None and not isinstance(note, str):
        return AckRejection(AckRejectReason.BAD_NOTE, "note is not a string")
    if note is not None:
        if len(note) > const.NOTE_MAX_CHARS:
            return AckRejection(AckRejectReason.BAD_NOTE, f"note is longer than {const.NOTE_MAX_CHARS} characters")
        if not all(_note_character_allowed(c) for c in note):
            return AckRejection(AckRejectReason.BAD_NOTE, "note contains control characters or lone surrogates")
    return Acknowledgement(alert_id=alert_id, operator=operator, note=note or None)
