"""Constants of the command-center contract and link, each with the reason for its value."""

from __future__ import annotations

from typing import Final

#: Every message of the contract. QoS 1 (at least once) is enough because consumers deduplicate
#: (highest `revision` for state, `event_id` for events); QoS 2 would add a round trip per message.
QOS: Final = 1

#: MQTT client ids are `panic-gw-<gateway_id>`: stable across restarts, so a reconnect takes over
#: the broker's half-open old connection (whose will would otherwise say "offline" after we said
#: "online") and resumes the persistent session that queued acknowledgements while we were away.
CLIENT_ID_PREFIX: Final = "panic-gw-"

#: MqttSettings.host value meaning "run an EmbeddedBroker in-process" (demo); the composition
#: root replaces it with the embedded broker's address before it builds the link.
EMBEDDED_HOST: Final = "embedded"

#: Longest wait for a PUBACK once the PUBLISH is sent (waiting for one of the max_inflight slots
#: is not counted: each slot frees within this time). Long enough for a loaded broker across a WAN;
#: short enough that the outbox retries well inside the 30 s escalation timer. Expiry raises
#: LinkDown(TIMEOUT).
PUBLISH_TIMEOUT_S: Final = 10.0

#: Longest wait for the SUBACK of the acknowledgement subscription after a connect.
SUBSCRIBE_TIMEOUT_S: Final = 10.0

#: Longest wait for TCP/TLS set-up plus CONNACK. A broker that takes longer is treated as down
#: (the attempt is logged and retried with backoff).
CONNECT_TIMEOUT_S: Final = 10.0

#: On a clean shutdown the "offline" status is published before DISCONNECT (a clean DISCONNECT
#: discards the will). Shutdown must not hang on a dying broker, so this is short.
OFFLINE_PUBLISH_TIMEOUT_S: Final = 3.0

#: A connect that got no CONNACK (timeout, or shutdown) is closed by writing one DISCONNECT, a few
#: milliseconds on any network; past this we go on without waiting (paho's keepalive check closes it).
ABANDON_CONNECT_TIMEOUT_S: Final = 1.0

#: After stopping the connection, acknowledgements already received (and PUBACKed by the client
#: library) get this long to reach on_ack before the dispatcher is cancelled.
ACK_DRAIN_TIMEOUT_S: Final = 5.0

#: Received acknowledgements waiting for on_ack. Operators acknowledge a few alerts a minute; a
#: full queue means on_ack is stuck or the command center floods us, and further acks are dropped
#: (counted, logged) instead of growing memory without bound.
ACK_QUEUE_MAX: Final = 10_000

#: A session that lasted at least this long resets the backoff; a broker that accepts and then
#: drops us at once keeps the backoff growing instead of being hammered every reconnect_min_s.
STABLE_SESSION_S: Final = 10.0

#: Caps the exponent of the backoff so 2**n never overflows a float after days of outage.
MAX_BACKOFF_DOUBLINGS: Final = 32

#: An acknowledgement payload is {"operator": <=64 chars, "note": <=500 chars}; even with every
#: character JSON-escaped as a surrogate pair (12 bytes) it fits. Larger payloads are refused
#: unparsed, which also bounds the work a hostile payload can cause.
MAX_ACK_PAYLOAD_BYTES: Final = 8192

#: Operator names are shown next to the alert on every console and in reports.
OPERATOR_MAX_CHARS: Final = 64

#: A short free-text note ("dispatched unit 12"); longer texts belong in the case system.
NOTE_MAX_CHARS: Final = 500

#: Alert and gateway ids become one topic level; bounded so topics stay far below MQTT's 64 KiB.
TOPIC_ID_MAX_CHARS: Final = 128

#: Event types are short lowercase words ("raised", "sms-sent"), stable for consumers' switch tables.
EVENT_TYPE_MAX_CHARS: Final = 32

#: Reported in the status topic when the package metadata cannot be read (running from a tree
#: that was never installed).
UNKNOWN_VERSION: Final = "0+unknown"
