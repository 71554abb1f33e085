"""The command-center contract over MQTT (topics, JSON payloads; docs/asyncapi.yaml) and the link that speaks it."""

from gateway.commandcenter.embedded_broker import EmbeddedBroker
from gateway.commandcenter.errors import LinkDown, LinkDownReason
from gateway.commandcenter.link import CommandCenterLink, LinkStats, reconnect_delay, tls_context
from gateway.commandcenter.payloads import (
    Acknowledgement,
    AckRejection,
    AckRejectReason,
    AlertEventType,
    GatewayStatus,
    event_payload,
    format_utc,
    location_feature,
    parse_ack,
    state_document,
    state_payload,
    status_payload,
)
from gateway.commandcenter.topics import (
    ParsedTopic,
    TopicKind,
    ack_filter,
    alert_ack_topic,
    alert_events_topic,
    alert_state_topic,
    gateway_status_topic,
    parse_ack_topic,
    parse_topic,
)

__all__ = [
    "AckRejectReason",
    "AckRejection",
    "Acknowledgement",
    "AlertEventType",
    "CommandCenterLink",
    "EmbeddedBroker",
    "GatewayStatus",
    "LinkDown",
    "LinkDownReason",
    "LinkStats",
    "ParsedTopic",
    "TopicKind",
    "ack_filter",
    "alert_ack_topic",
    "alert_events_topic",
    "alert_state_topic",
    "event_payload",
    "format_utc",
    "gateway_status_topic",
    "location_feature",
    "parse_ack",
    "parse_ack_topic",
    "parse_topic",
    "reconnect_delay",
    "state_document",
    "state_payload",
    "status_payload",
    "tls_context",
]
