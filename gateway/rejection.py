"""Why a signal was refused: the value every stage returns instead of raising on bad input."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class RejectReason(enum.StrEnum):
    """A signal's rejection reason; the value is the stable string used in APIs, logs and metrics."""

    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported-version"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_DEVICE = "unknown-device"
    REVOKED = "revoked"
    CERT_INVALID = "certificate-invalid"
    DEVICE_MISMATCH = "device-mismatch"
    REPLAYED = "replayed"
    CLOCK_SKEW = "clock-skew"
    RATE_LIMITED = "rate-limited"
    OVERLOADED = "overloaded"


#: HTTP status for each reason: 4xx are final for the device, 429/503 mean "retry later".
HTTP_STATUS: Final[dict[RejectReason, int]] = {
    RejectReason.MALFORMED: 400,
    RejectReason.UNSUPPORTED_VERSION: 400,
    RejectReason.BAD_SIGNATURE: 401,
    RejectReason.UNKNOWN_DEVICE: 403,
    RejectReason.REVOKED: 403,
    RejectReason.CERT_INVALID: 403,
    RejectReason.DEVICE_MISMATCH: 403,
    RejectReason.REPLAYED: 409,
    RejectReason.CLOCK_SKEW: 422,
    RejectReason.RATE_LIMITED: 429,
    RejectReason.OVERLOADED: 503,
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused signal.

    reason: machine-readable cause (stable across versions).
    detail: one human-readable sentence for logs and problem bodies; never contains key material.
    retry_after: for "retry later" reasons (rate-limited, overloaded), seconds the device must wait.
    """

    reason: RejectReason
    detail: str
    retry_after: float | None = None
