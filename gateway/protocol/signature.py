"""Signed frames: a frame followed by the device's ECDSA P-256 signature (sans-I/O)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gateway.protocol import const
from gateway.protocol.frame import AlertFrame, decode_frame, encode_frame
from gateway.rejection import Rejection, RejectReason

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class SignedFrame:
    """A parsed signed frame whose signature is not yet checked.

    frame: the decoded frame.
    frame_bytes: the exact bytes that were signed (without the context prefix).
    signature: 64 bytes, r || s.
    digest: SHA-256 of frame_bytes: names the frame whatever its signature, so a retry of the
        same frame (even re-signed; ECDSA signatures are randomised) is recognised as the same.
    """

    frame: AlertFrame
    frame_bytes: bytes
    signature: bytes
    digest: bytes


def sign_frame(frame: AlertFrame, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Encode and sign a frame: what a wearable sends."""
    frame_bytes = encode_frame(frame)
    der = key.sign(const.SIGNATURE_CONTEXT + frame_bytes, _ECDSA_SHA256)
    r, s = decode_dss_signature(der)
    return frame_bytes + r.to_bytes(32, "big") + s.to_bytes(32, "big")


def parse_signed_frame(data: bytes) -> SignedFrame | Rejection:
    """Split and decode a signed frame. Never raises: bad input comes back as a Rejection."""
    if len(data) > const.MAX_SIGNED_FRAME_SIZE:
        return Rejection(
            RejectReason.MALFORMED, f"signed frame is {len(data)} bytes, more than {const.MAX_SIGNED_FRAME_SIZE}"
        )
    if len(data) < const.HEADER_SIZE + 1 + const.SIGNATURE_SIZE:
        return Rejection(
            RejectReason.MALFORMED, f"signed frame is {len(data)} bytes, too short for a frame and a signature"
        )
    frame_bytes = data[: -const.SIGNATURE_SIZE]
    decoded = decode_frame(frame_bytes)
    if isinstance(decoded, Rejection):
        return decoded
    return SignedFrame(
        frame=decoded,
        frame_bytes=frame_bytes,
        signature=data[-const.SIGNATURE_SIZE :],
        digest=hashlib.sha256(frame_bytes).digest(),
    )


def verify_signature(signed: SignedFrame, public_key: ec.EllipticCurvePublicKey) -> bool:
    """True when the signature is the device key's over the context-prefixed frame."""
    r = int.from_bytes(signed.signature[:32], "big")
    s = int.from_bytes(signed.signature[32:], "big")
    if not (r > 0 and s > 0):
        return False
    try:
        public_key.verify(encode_dss_signature(r, s), const.SIGNATURE_CONTEXT + signed.frame_bytes, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True
