"""The SMS uplink (docs/PROTOCOL.md §16): a signed frame as the text of one SMS, base64 (sans-I/O).

A wearable without a data connection texts its signed frame to the gateway's number. The text is the standard
base64 alphabet (RFC 4648 §4, every character of it is in the GSM 7-bit default alphabet), padding optional;
ASCII whitespace anywhere is ignored (some phones and carriers fold long texts). A reply from a responder
("1234", "ok 1234") is never that long, so `sms_frame` tells the two apart by shape before decoding.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from gateway.protocol.const import HEADER_SIZE, MAX_SIGNED_FRAME_SIZE, SIGNATURE_SIZE
from gateway.rejection import Rejection, RejectReason

#: Shortest and longest text a signed frame makes (82..256 bytes -> 110..344 characters without padding).
MIN_SMS_CHARS: Final = (4 * (HEADER_SIZE + 1 + SIGNATURE_SIZE) + 2) // 3
MAX_SMS_CHARS: Final = (4 * MAX_SIGNED_FRAME_SIZE + 2) // 3
#: One text SMS: 160 GSM-7 characters, that is a signed frame of at most 120 bytes (docs/PROTOCOL.md §5).
ONE_SMS_CHARS: Final = 160

_WHITESPACE: Final = re.compile(r"[ \t\r\n]+")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def encode_sms(signed_frame: bytes) -> str:
    """The SMS text of a signed frame: base64 without padding (saves up to two characters of a 160 budget)."""
    return base64.b64encode(signed_frame).decode("ascii").rstrip("=")


def sms_frame(text: str) -> bytes | Rejection | None:
    """A received SMS text: the signed frame's bytes, a rejection (frame-shaped but not decodable), or None when
    the text is not meant as a frame at all (a responder's reply, a stray message)."""
    compact = _WHITESPACE.sub("", text)
    if len(compact) < MIN_SMS_CHARS or not _BASE64.fullmatch(compact):
        return None
    if len(compact.rstrip("=")) > MAX_SMS_CHARS:
        return Rejection(
            RejectReason.MALFORMED, f"SMS frame text is {len(compact)} characters, at most {MAX_SMS_CHARS}"
        )
    unpadded = compact.rstrip("=")
    if len(unpadded) % 4 == 1:
        return Rejection(RejectReason.MALFORMED, "SMS frame text is not whole base64 (a character is missing)")
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error as exc:
        return Rejection(RejectReason.MALFORMED, f"SMS frame text is not base64: {exc}")
