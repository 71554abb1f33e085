"""Incident states and the command-center view of an incident (sans-I/O)."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from gateway.location.model import Place
from gateway.protocol import EventType, GpsFix


class AlertState(enum.StrEnum):
    """Lifecycle of an incident. Later issues add NOTIFYING and EXHAUSTED transitions."""

    RAISED = "raised"
    NOTIFYING = "notifying"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    EXHAUSTED = "exhausted"

    @property
    def is_open(self) -> bool:
        """Open incidents still need a person; their retained state is republished on reconnect."""
        return self in (AlertState.RAISED, AlertState.NOTIFYING, AlertState.ACKNOWLEDGED, AlertState.EXHAUSTED)


#: Allowed transitions; anything else is refused (an ack after a cancel does not reopen it).
TRANSITIONS: dict[AlertState, frozenset[AlertState]] = {
    AlertState.RAISED: frozenset(
        {AlertState.NOTIFYING, AlertState.ACKNOWLEDGED, AlertState.CANCELLED, AlertState.RESOLVED, AlertState.EXHAUSTED}
    ),
    AlertState.NOTIFYING: frozenset(
        {AlertState.ACKNOWLEDGED, AlertState.CANCELLED, AlertState.RESOLVED, AlertState.EXHAUSTED}
    ),
    AlertState.EXHAUSTED: frozenset({AlertState.ACKNOWLEDGED, AlertState.CANCELLED, AlertState.RESOLVED}),
    AlertState.ACKNOWLEDGED: frozenset({AlertState.RESOLVED, AlertState.CANCELLED}),
    AlertState.RESOLVED: frozenset(),
    AlertState.CANCELLED: frozenset({AlertState.RESOLVED}),
}


def can_transition(current: AlertState, new: AlertState) -> bool:
    """True when an incident in `current` may move to `new`."""
    return new in TRANSITIONS[current]


@dataclass(frozen=True, slots=True)
class IncidentView:
    """What a command center sees of one incident (the retained MQTT state, the REST resource).

    alert_id: stable id; deterministic from (device_id, counter) of the press, so retries and
        racing gateways name the same incident.
    revision: increases by one with every change; consumers keep the highest they have seen.
    state: lifecycle state.
    event: the event that raised it (panic, fall, test).
    device_id, wearer, site: who and where they belong.
    counter: the raising frame's counter.
    device_time: the wearable's clock when pressed; received_at: when the gateway accepted it.
    delayed: the press reached the gateway long after it was made (still alerted).
    test: a TEST press; command centers show it but do not dispatch.
    battery: percent, or None.
    gps: position from the frame, or None.
    transport: how the raising signal arrived (https, sms, ble).
    acknowledged_by / acknowledged_at: who took it, when.
    updated_at: time of the latest change.
    short_code: 4 digits a responder texts back to acknowledge ("Reply 1234").
    resolution / resolved_by / resolved_at: why, by whom and when it was closed (false-alarm, handled,
        dispatched), None while open.
    location_source: what `gps` (the position) rests on once fused: gps, cell, ble, last-known; None before.
    place: site, building, floor, room and zone of the fused location; place_text: what responders read.
    zone: the zone it is in (from its own signal at once, then from the fused location): picks the escalation
        policy and the command-center route.
    """

    alert_id: str
    revision: int
    state: AlertState
    event: EventType
    device_id: str
    wearer: str
    site: str
    counter: int
    device_time: datetime
    received_at: datetime
    delayed: bool
    test: bool
    battery: int | None
    gps: GpsFix | None
    transport: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    updated_at: datetime
    short_code: str = ""
    resolution: str | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    location_source: str | None = None
    place: Place | None = None
    place_text: str | None = None
    zone: str | None = None


#: Digits of an SMS acknowledgement code: short to type under stress; a reply is matched only among the
#: incidents its sender was notified of, so collisions between unrelated incidents do not matter.
SHORT_CODE_DIGITS = 4


def short_code_for(alert_id: str) -> str:
    """The incident's SMS acknowledgement code, derived from its id (every gateway computes the same)."""
    digest = hashlib.sha256(alert_id.encode("ascii")).digest()
    return str(int.from_bytes(digest[:8], "big") % 10**SHORT_CODE_DIGITS).zfill(SHORT_CODE_DIGITS)
