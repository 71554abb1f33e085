"""Wire protocol v1 (sans-I/O): alert frames and their signatures. Byte layout in docs/PROTOCOL.md."""

from gateway.protocol.frame import AlertFrame, EventType, Flags, GpsFix, decode_frame, encode_frame
from gateway.protocol.signature import SignedFrame, parse_signed_frame, sign_frame, verify_signature

__all__ = [
    "AlertFrame",
    "EventType",
    "Flags",
    "GpsFix",
    "SignedFrame",
    "decode_frame",
    "encode_frame",
    "parse_signed_frame",
    "sign_frame",
    "verify_signature",
]
