"""Gateway-signed acknowledgements a wearable verifies before telling its wearer "help is coming" (sans-I/O).

Layout (big-endian), 94 bytes:
    0   1  version (1)
    1   1  kind: 1 = received by the gateway, 2 = an operator has it
    2   4  counter of the acknowledged press (u32)
    6  16  incident id (UUID bytes)
   22   8  gateway time, ms since the Unix epoch (u64)
   30  64  ECDSA P-256 signature (r || s) by the gateway's acknowledgement key over
           b"panic-ack/v1\\0" || bytes 0..29
The acknowledgement key is not the advert fleet key: one key, one purpose.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.rejection import Rejection, RejectReason

ACK_VERSION: Final = 1
ACK_CONTEXT: Final = b"panic-ack/v1\x00"
_BODY: Final = struct.Struct(">BBI16sQ")
ACK_SIZE: Final = _BODY.size + 64

#: GATT contract of the wearable (128-bit UUIDs under the project's base).
GATT_SERVICE_UUID: Final = "6f6b0001-6a0e-4f43-9d0d-2f8f4c3c2a10"
#: Read: the signed v1 frame (docs/PROTOCOL.md §2-6) of the wearable's latest press, with its GPS fix if any.
GATT_FRAME_UUID: Final = "6f6b0002-6a0e-4f43-9d0d-2f8f4c3c2a10"
#: Write with response: a gateway-signed acknowledgement (this module).
GATT_ACK_UUID: Final = "6f6b0003-6a0e-4f43-9d0d-2f8f4c3c2a10"

_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())


class AckKind(enum.IntEnum):
    """What the acknowledgement tells the wearer."""

    RECEIVED = 1
    OPERATOR = 2


@dataclass(frozen=True, slots=True)
class GatewayAck:
    """A decoded acknowledgement.

    kind: received by the gateway, or taken by an operator.
    counter: the press it answers.
    incident_id: the incident the gateway made of it.
    timestamp_ms: gateway clock.
    """

    kind: AckKind
    counter: int
    incident_id: str
    timestamp_ms: int


def sign_ack(ack: GatewayAck, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Encode and sign (gateway side)."""
    body = _BODY.pack(ACK_VERSION, int(ack.kind), ack.counter, uuid.UUID(ack.incident_id).bytes, ack.timestamp_ms)
    r, s = decode_dss_signature(key.sign(ACK_CONTEXT + body, _ECDSA_SHA256))
    return body + r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_ack(data: bytes, gateway_key: ec.EllipticCurvePublicKey) -> GatewayAck | Rejection:
    """Decode and verify (wearable side). Never raises on bad input."""
    if len(data) != ACK_SIZE:
        return Rejection(RejectReason.MALFORMED, f"acknowledgement is {len(data)} bytes, expected {ACK_SIZE}")
    version, kind, counter, incident, ts = _BODY.unpack_from(data)
    if version != ACK_VERSION:
        return Rejection(RejectReason.UNSUPPORTED_VERSION, f"acknowledgement version {version}")
    r, s = int.from_bytes(data[_BODY.size : _BODY.size + 32], "big"), int.from_bytes(data[_BODY.size + 32 :], "big")
    if not (r > 0 and s > 0):
        return Rejection(RejectReason.BAD_SIGNATURE, "zero signature component")
    try:
        gateway_key.verify(encode_dss_signature(r, s), ACK_CONTEXT + data[: _BODY.size], _ECDSA_SHA256)
    except InvalidSignature:
        return Rejection(RejectReason.BAD_SIGNATURE, "acknowledgement not signed by this gateway")
    try:
        ack_kind = AckKind(kind)
    except ValueError:
        return Rejection(RejectReason.MALFORMED, f"unknown acknowledgement kind {kind}")
    return GatewayAck(ack_kind, counter, str(uuid.UUID(bytes=incident)), ts)
