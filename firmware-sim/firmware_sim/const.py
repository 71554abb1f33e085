"""Constants of the firmware simulator, each with the reason for its value."""

from __future__ import annotations

from typing import Final

from gateway.protocol.const import HEADER_SIZE, SIGNATURE_SIZE

# --- device directory -------------------------------------------------------------------------------------------

#: The device's private key (PKCS#8 PEM). Real firmware keeps it in a secure element; the sim keeps it on disk.
KEY_FILE: Final = "device.key"
#: The certificate signing request made at enrolment, kept so an operator can re-issue without a new key.
CSR_FILE: Final = "device.csr"
#: The certificate the device CA issued.
CERT_FILE: Final = "device.crt"
#: The counter high-water mark (JSON), rewritten atomically before any frame that uses a new counter.
STATE_FILE: Final = "state.json"
#: Format version of the state file, so a later layout can be told apart and migrated.
STATE_VERSION: Final = 1

#: Private keys are readable by their owner only, from the moment the file exists.
KEY_FILE_MODE: Final = 0o600
#: Certificates, the CSR and the counter are not secret; other tools (the gateway's registration) may read them.
PUBLIC_FILE_MODE: Final = 0o644
#: The device directory holds the key: no one else needs to list it.
DEVICE_DIR_MODE: Final = 0o700

#: Counters are u32 on the wire; a device that reached this has to be re-enrolled under a new id.
MAX_COUNTER: Final = 0xFFFF_FFFF

#: A fresh device reports a full battery until told otherwise.
DEFAULT_BATTERY_PERCENT: Final = 100

#: Counters reserved per state-file write in a fleet: one fsync per 64 signals instead of one per signal keeps a
#: high-rate fleet open-loop. A crash skips at most 64 counters, which is harmless (gaps are fine, reuse is not).
FLEET_COUNTER_BLOCK: Final = 64

# --- uplink (HTTPS) ---------------------------------------------------------------------------------------------

#: Path of the signal endpoint under the gateway's base URL.
SIGNALS_PATH: Final = "/v1/signals"

#: Media type of the gateway's error answers (RFC 9457).
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"

#: How long one signal is retried by default: a wearer who pressed panic waits for "alert received"; after 30 s
#: real firmware falls back to SMS, so retrying HTTPS longer only delays that fallback.
DEFAULT_DEADLINE_S: Final = 30.0

#: One attempt's budget: a cellular round trip with a TLS handshake takes 1-3 s; an attempt that hangs far longer
#: is on a dead bearer and a new connection is the better bet.
REQUEST_TIMEOUT_S: Final = 10.0

#: TCP+TLS set-up budget within an attempt: a modem that cannot connect in 5 s is better off backing off.
CONNECT_TIMEOUT_S: Final = 5.0

#: First backoff after a network error or an answer without Retry-After: short, since a panic is urgent and
#: the gateway's retries are idempotent.
BACKOFF_INITIAL_S: Final = 0.25

#: Backoff cap: beyond 8 s a wearer would see no progress within the deadline's last attempts.
BACKOFF_MAX_S: Final = 8.0

#: Backoff growth per attempt (classic doubling); full jitter below it spreads a fleet that lost the same cell.
BACKOFF_FACTOR: Final = 2.0

#: Concurrent connections of one uplink: every wearable is its own modem, so the client should not queue, but
#: staying under the usual 1024 open-file limit keeps a large fleet from failing on descriptors.
MAX_CONNECTIONS: Final = 512

#: Bytes of an answer body read at most: the gateway's answers are well under 1 KiB.
MAX_ANSWER_BYTES: Final = 64 * 1024

#: Characters of a non-JSON answer kept as its detail, enough to recognise a proxy's error page.
MAX_DETAIL_CHARS: Final = 200

# --- faults -----------------------------------------------------------------------------------------------------

#: Clock-skew fault: 1 h ahead, far beyond the gateway's tolerance (AuthSettings.max_clock_ahead_s, 300 s default).
CLOCK_SKEW_MS: Final = 3_600_000

#: Oversized fault: one byte more than the largest body limit the gateway's settings allow (64 KiB), so it is
#: refused with 413 whatever the configuration.
OVERSIZED_BODY_BYTES: Final = 65_537

#: Truncated fault: one byte short of the smallest signed frame (header, 1-byte id, signature), so it is
#: malformed whatever the frame carried.
TRUNCATED_BODY_BYTES: Final = HEADER_SIZE + SIGNATURE_SIZE

#: Garbage fault: within the size a signed frame may have, so it reaches the frame parser instead of a size check.
GARBAGE_BODY_BYTES: Final = 100

#: What a modem's HTTP stack sends when nobody configured a media type.
WRONG_CONTENT_TYPE: Final = "application/octet-stream"

#: Id prefix of the unknown-device fault's self-made device; with 12 hex digits it stays under 32 characters.
UNKNOWN_DEVICE_PREFIX: Final = "rogue-"

#: Life of the unknown device's self-signed certificate: it only has to look valid during one run.
SELF_SIGNED_DAYS: Final = 1

# --- fleet ------------------------------------------------------------------------------------------------------

#: Id prefix of fleet devices when the scenario does not name one.
DEFAULT_ID_PREFIX: Final = "sim-"

#: Fleet device ids are zero-padded to at least this many digits so they sort in order in listings.
FLEET_ID_DIGITS: Final = 4

#: Where fleet wearables stand when the scenario asks for GPS without a centre (Paris, Champ de Mars).
DEFAULT_GPS_CENTER: Final = (48.8556, 2.2986)

#: Fleet wearables are spread over this radius around the centre: one large site.
DEFAULT_GPS_RADIUS_M: Final = 500.0

#: Horizontal accuracy a consumer GNSS module reports outdoors.
DEFAULT_GPS_ACCURACY_M: Final = 10

#: Scenario mixes are fractions: their sum may stray from 1 by float rounding (0.1 + 0.2 != 0.3), not more.
MIX_SUM_TOLERANCE: Final = 1e-6

#: Unexpected answers listed one by one in a fleet summary; the counts above them cover the rest.
SHOWN_SURPRISES: Final = 10

#: Metres per degree of latitude (WGS 84 mean), to place fleet devices around a centre.
METRES_PER_DEGREE: Final = 111_320.0
