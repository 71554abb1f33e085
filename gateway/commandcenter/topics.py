"""MQTT topics of the command-center contract: build them, parse them (pure functions).

    {prefix}/alerts/{alert_id}/state        retained IncidentView           gateway -> command center
    {prefix}/alerts/{alert_id}/events       one message per event           gateway -> command center
    {prefix}/alerts/{alert_id}/ack          an operator's acknowledgement   command center -> gateway
    {prefix}/gateways/{gateway_id}/status   retained online/offline + will  gateway -> command center

Builders raise ValueError for an id or prefix that cannot be one topic level (a programming error:
ids are validated where they are made); parsers return None for anything that is not ours.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from gateway.commandcenter import const

_ALERTS = "alerts"
_ROUTES = "routes"
_GATEWAYS = "gateways"
_WILDCARDS = frozenset("+#/")


class TopicKind(enum.StrEnum):
    """Which of the contract's channels a topic belongs to (the value is its last level)."""

    ALERT_STATE = "state"
    ALERT_EVENTS = "events"
    ALERT_ACK = "ack"
    GATEWAY_STATUS = "status"


class ParsedTopic(NamedTuple):
    """A topic of the contract, taken apart."""

    #: Which channel.
    kind: TopicKind
    #: The alert id (alert channels) or the gateway id (status channel).
    id: str


def is_topic_id(value: str) -> bool:
    """True when `value` can be one topic level: 1..128 printable characters, no spaces, no '/', '+', '#'."""
    return (
        0 < len(value) <= const.TOPIC_ID_MAX_CHARS
        and value.isprintable()
        and not any(c.isspace() or c in _WILDCARDS for c in value)
    )


def is_topic_prefix(prefix: str) -> bool:
    """True when `prefix` is one or more valid levels joined by '/', not starting with '$' (broker-reserved)."""
    return bool(prefix) and not prefix.startswith("$") and all(is_topic_id(level) for level in prefix.split("/"))


def _checked(prefix: str, what: str, value: str) -> None:
    if not is_topic_prefix(prefix):
        raise ValueError(f"topic prefix {prefix!r} has an empty level, a wildcard, a space or a leading '$'")
    if not is_topic_id(value):
        raise ValueError(
            f"{what} {value!r} cannot be a topic level (1-{const.TOPIC_ID_MAX_CHARS} chars, no / + # space)"
        )


def alert_state_topic(prefix: str, alert_id: str) -> str:
    """Retained current state of one alert."""
    _checked(prefix, "alert id", alert_id)
    return f"{prefix}/{_ALERTS}/{alert_id}/{TopicKind.ALERT_STATE}"


def routed_state_topic(prefix: str, route: str, alert_id: str) -> str:
    """The retained state of an alert again, under the command-center topic its zone or site picks."""
    _checked(prefix, "alert id", alert_id)
    _checked(prefix, "route", route)
    return f"{prefix}/{_ROUTES}/{route}/{_ALERTS}/{alert_id}/{TopicKind.ALERT_STATE}"


def alert_events_topic(prefix: str, alert_id: str) -> str:
    """The stream of things that happen to one alert (not retained)."""
    _checked(prefix, "alert id", alert_id)
    return f"{prefix}/{_ALERTS}/{alert_id}/{TopicKind.ALERT_EVENTS}"


def alert_ack_topic(prefix: str, alert_id: str) -> str:
    """Where the command center publishes an operator's acknowledgement of one alert."""
    _checked(prefix, "alert id", alert_id)
    return f"{prefix}/{_ALERTS}/{alert_id}/{TopicKind.ALERT_ACK}"


def ack_filter(prefix: str) -> str:
    """The subscription that receives acknowledgements of every alert."""
    _checked(prefix, "level", _ALERTS)
    return f"{prefix}/{_ALERTS}/+/{TopicKind.ALERT_ACK}"


def gateway_status_topic(prefix: str, gateway_id: str) -> str:
    """Retained online/offline status of one gateway process (also its last will)."""
    _checked(prefix, "gateway id", gateway_id)
    return f"{prefix}/{_GATEWAYS}/{gateway_id}/{TopicKind.GATEWAY_STATUS}"


def parse_topic(prefix: str, topic: str) -> ParsedTopic | None:
    """Take a topic of the contract apart; None when it is not one (other prefix, wildcard, bad id)."""
    if not topic.startswith(prefix + "/"):
        return None
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) != 3 or not is_topic_id(levels[1]):
        return None
    collection, ident, last = levels
    if collection == _ALERTS and last in (TopicKind.ALERT_STATE, TopicKind.ALERT_EVENTS, TopicKind.ALERT_ACK):
        return ParsedTopic(TopicKind(last), ident)
    if collection == _GATEWAYS and last == TopicKind.GATEWAY_STATUS:
        return ParsedTopic(TopicKind.GATEWAY_STATUS, ident)
    return None


def parse_ack_topic(prefix: str, topic: str) -> str | None:
    """The alert id of an acknowledgement topic; None for any other topic."""
    parsed = parse_topic(prefix, topic)
    if parsed is None or parsed.kind is not TopicKind.ALERT_ACK:
        return None
    return parsed.id
