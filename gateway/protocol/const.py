"""Wire-format constants of protocol v1 (see docs/PROTOCOL.md)."""

from typing import Final

#: First byte of every v1 frame; a device speaking another version gets a clear rejection.
FRAME_VERSION: Final = 1

#: Fixed header: version, event, flags, battery, counter(u32), timestamp_ms(i64), id length.
HEADER_SIZE: Final = 17

#: Device ids are certificate CNs. A signed frame fits one SMS in base64 with a 32-byte id and no GPS,
#: or with GPS up to a 25-byte id (size table in docs/PROTOCOL.md).
MAX_DEVICE_ID_LEN: Final = 32

#: Upper bound on a frame: header + id + extensions. Anything larger is garbage, not a frame.
MAX_FRAME_SIZE: Final = 192

#: ECDSA P-256 signature in IEEE P1363 form (r || s, 32 bytes each): fixed size, no DER parsing.
SIGNATURE_SIZE: Final = 64

MAX_SIGNED_FRAME_SIZE: Final = MAX_FRAME_SIZE + SIGNATURE_SIZE

#: Domain separation: a signature over a frame can never be reused as one over anything else.
SIGNATURE_CONTEXT: Final = b"panic-frame/v1\x00"

#: Battery byte meaning "the device does not know".
BATTERY_UNKNOWN: Final = 0xFF

#: Extension (TLV) types.
TLV_GPS: Final = 0x01
GPS_TLV_SIZE: Final = 12

#: Extension types below this are critical: a v1 decoder that does not know one rejects the frame.
#: Types from 0x80 up are optional and skipped when unknown, so devices can add data safely.
TLV_OPTIONAL_FROM: Final = 0x80

#: Scale of GPS coordinates on the wire: 1e-7 degree (about 1 cm), as in u-blox UBX.
GPS_SCALE: Final = 10_000_000

#: Media type of a signed frame in an HTTP body.
MEDIA_TYPE: Final = "application/vnd.panic.frame.v1"
