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
TLV_CELLS: Final = 0x02

#: One cell of the cells extension: radio, flags, mcc, mnc, area (u32), cell id (u40), signal (i8).
#: The cell id is 5 bytes because NR's is 36 bits; 16 bytes a cell keeps 7 cells + GPS + a 32-byte id
#: within MAX_FRAME_SIZE (17 + 32 + 14 + 2 + 7 x 16 = 177).
CELL_SIZE: Final = 16

#: A modem reports the serving cell and a handful of neighbours; 7 is what fits with room left for an
#: optional extension, and more adds little to a position from cell sites.
MAX_CELLS: Final = 7

#: Cells flag bit 0: the cell the modem is camped on (only the first cell may carry it).
CELL_FLAG_SERVING: Final = 0x01

#: Signal byte meaning "the modem gave no level for this cell".
CELL_SIGNAL_UNKNOWN: Final = -128

#: Weakest level the signal byte carries; encoders clamp weaker levels (NR SS-RSRP goes down to -156 dBm).
CELL_SIGNAL_MIN_DBM: Final = -127

#: Radio codes on the wire and the CellObservation.radio names, with the largest area code and cell id
#: each radio defines (3GPP: 16-bit LAC/TAC, 24-bit NR TAC; 16-bit GSM CI, 28-bit UTRAN cell id and
#: LTE ECI, 36-bit NR NCI).
CELL_RADIOS: Final = {1: "gsm", 2: "umts", 3: "lte", 4: "nr"}
CELL_AREA_MAX: Final = {"gsm": 0xFFFF, "umts": 0xFFFF, "lte": 0xFFFF, "nr": 0xFF_FFFF}
CELL_ID_MAX: Final = {"gsm": 0xFFFF, "umts": 0xFFF_FFFF, "lte": 0xFFF_FFFF, "nr": 0xF_FFFF_FFFF}

#: MCC and MNC are three decimal digits at most (ITU-T E.212); the MNC travels as an integer, as
#: OpenCellID stores it, so "01" and "001" are the same on the wire.
MAX_MCC: Final = 999
MAX_MNC: Final = 999

#: Extension types below this are critical: a v1 decoder that does not know one rejects the frame.
#: Types from 0x80 up are optional and skipped when unknown, so devices can add data safely.
TLV_OPTIONAL_FROM: Final = 0x80

#: Scale of GPS coordinates on the wire: 1e-7 degree (about 1 cm), as in u-blox UBX.
GPS_SCALE: Final = 10_000_000

#: Media type of a signed frame in an HTTP body.
MEDIA_TYPE: Final = "application/vnd.panic.frame.v1"
