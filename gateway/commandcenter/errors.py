"""Errors of the command-center link.

GatewayError (gateway.errors)
 +-- LinkDown        a publish did not reach the broker (.topic, .reason: LinkDownReason); retry later

A malformed acknowledgement from the command center is not an exception: it is an AckRejection value.
"""

from __future__ import annotations

import enum

from gateway.errors import GatewayError


class LinkDownReason(enum.StrEnum):
    """Why a publish failed; the value is stable for logs and metrics."""

    #: No broker session right now (connecting, backing off, or the link is closed).
    NOT_CONNECTED = "not-connected"
    #: The connection dropped while the PUBACK was awaited; the broker may or may not have the message.
    CONNECTION_LOST = "connection-lost"
    #: No PUBACK within PUBLISH_TIMEOUT_S.
    TIMEOUT = "timeout"
    #: The MQTT client refused the publish (e.g. its socket is already closed).
    REFUSED = "refused"


class LinkDown(GatewayError):
    """A publish did not reach the broker; the caller (a durable outbox) retries it later.

    topic: the topic of the failed publish.
    reason: why it failed.
    """

    def __init__(self, message: str, *, topic: str, reason: LinkDownReason) -> None:
        super().__init__(message)
        self.topic = topic
        self.reason = reason
