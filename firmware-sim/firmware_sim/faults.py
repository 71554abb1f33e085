"""Faults on demand: the bytes a broken, hostile or misconfigured device sends, and what the gateway must answer."""

from __future__ import annotations

import enum
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_sim import const
from firmware_sim.transport import HttpUplink, UplinkResult
from firmware_sim.wearable import Clock, VirtualWearable, make_csr
from gateway.protocol import EventType
from gateway.protocol.const import FRAME_VERSION, MEDIA_TYPE
from gateway.rejection import HTTP_STATUS, RejectReason


class FaultKind(enum.StrEnum):
    """A kind of fault; the value is its name on the command line and in scenario files."""

    #: A bit of the signature (r || s) flipped.
    BAD_SIGNATURE = "bad-signature"
    #: A different frame under a counter the gateway has already accepted.
    REPLAYED = "replayed"
    #: The identical frame again: an idempotent retry, answered 202 duplicate.
    DUPLICATE = "duplicate"
    #: A well-formed frame from a device with its own self-signed certificate, never registered.
    UNKNOWN_DEVICE = "unknown-device"
    #: A valid frame from a device the caller has revoked on the gateway.
    REVOKED = "revoked"
    #: A frame dated an hour ahead of the gateway's clock.
    CLOCK_SKEW = "clock-skew"
    #: A signed frame cut short, as by a connection lost mid-body.
    TRUNCATED = "truncated"
    #: Random bytes.
    GARBAGE = "garbage"
    #: A valid frame under the wrong media type.
    WRONG_CONTENT_TYPE = "wrong-content-type"
    #: A body larger than any limit the gateway may be configured with.
    OVERSIZED = "oversized"


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the gateway must answer.

    status_code: the HTTP status.
    reason: the problem+json reason (None where the gateway's answer carries none, e.g. 413 and 415).
    status: for 2xx, "accepted" or "duplicate".
    """

    status_code: int
    reason: str | None = None
    status: str | None = None

    def matches(self, result: UplinkResult) -> bool:
        """True when `result` is this answer."""
        return (
            result.status_code == self.status_code
            and (self.reason is None or result.reason == self.reason)
            and (self.status is None or result.status == self.status)
        )

    def __str__(self) -> str:
        what = self.reason or self.status
        return f"{self.status_code} {what}" if what else str(self.status_code)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault ready to send.

    kind: which fault.
    body: the bytes to POST.
    expected: what the gateway must answer to `body`.
    content_type: the Content-Type to send `body` under.
    prelude: valid signals to send first, each of which must be accepted (a replay needs a used counter).
    """

    kind: FaultKind
    body: bytes
    expected: Expectation
    content_type: str = MEDIA_TYPE
    prelude: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class FaultOutcome:
    """What the gateway answered to a fault.

    fault: what was sent.
    prelude: the answers to the prelude signals, in order.
    result: the answer to the fault's body.
    """

    fault: Fault
    prelude: tuple[UplinkResult, ...]
    result: UplinkResult

    @property
    def ok(self) -> bool:
        """The prelude was accepted and the fault got the expected answer."""
        return all(r.accepted for r in self.prelude) and self.fault.expected.matches(self.result)


def _refused(reason: RejectReason) -> Expectation:
    return Expectation(HTTP_STATUS[reason], str(reason))


def make_fault(kind: FaultKind, wearable: VirtualWearable, *, event: EventType = EventType.HEARTBEAT) -> Fault:
    """Build `kind` from `wearable` (which spends counters on it, as a real device would).

    event: what the faulty frames claim to be; a heartbeat by default so that a fault that wrongly gets
    through raises no incident.
    """
    match kind:
        case FaultKind.BAD_SIGNATURE:
            body = bytearray(wearable.signal(event))
            body[-1] ^= 0x01  # lowest bit of s: still in range, never a valid signature
            return Fault(kind, bytes(body), _refused(RejectReason.BAD_SIGNATURE))
        case FaultKind.REPLAYED:
            first = wearable.next_frame(event)
            # Another timestamp makes another frame under the same counter; the gateway names frames by their
            # bytes, so re-signing the first frame would be a duplicate, not a replay.
            second = replace(first, timestamp_ms=first.timestamp_ms + 1)
            return Fault(kind, wearable.sign(second), _refused(RejectReason.REPLAYED), prelude=(wearable.sign(first),))
        case FaultKind.DUPLICATE:
            signed = wearable.signal(event)
            return Fault(kind, signed, Expectation(202, status="duplicate"), prelude=(signed,))
        case FaultKind.UNKNOWN_DEVICE:
            rogue = unregistered_wearable(clock=wearable.clock)
            rogue.battery, rogue.gps = wearable.battery, wearable.gps
            return Fault(kind, rogue.signal(event), _refused(RejectReason.UNKNOWN_DEVICE))
        case FaultKind.REVOKED:
            return Fault(kind, wearable.signal(event), _refused(RejectReason.REVOKED))
        case FaultKind.CLOCK_SKEW:
            frame = wearable.next_frame(event)
            skewed = replace(frame, timestamp_ms=frame.timestamp_ms + const.CLOCK_SKEW_MS)
            return Fault(kind, wearable.sign(skewed), _refused(RejectReason.CLOCK_SKEW))
        case FaultKind.TRUNCATED:
            body = bytearray(wearable.signal(event)[: const.TRUNCATED_BODY_BYTES])
            return Fault(kind, bytes(body), _refused(RejectReason.MALFORMED))
        case FaultKind.GARBAGE:
            body = bytearray(os.urandom(const.GARBAGE_BODY_BYTES))
            # A v1 version byte gets the garbage past the version check; event type 0 exists in no version,
            # so the answer is "malformed" whatever the random rest.
            body[0], body[1] = FRAME_VERSION, 0x00
            return Fault(kind, bytes(body), _refused(RejectReason.MALFORMED))
        case FaultKind.WRONG_CONTENT_TYPE:
            return Fault(kind, wearable.signal(event), Expectation(415), content_type=const.WRONG_CONTENT_TYPE)
        case FaultKind.OVERSIZED:
            signed = wearable.signal(event)
            return Fault(kind, signed.ljust(const.OVERSIZED_BODY_BYTES, b"\x00"), Expectation(413))


def unregistered_wearable(device_id: str | None = None, *, clock: Clock) -> VirtualWearable:
    """An in-memory device with a self-signed certificate that no gateway has registered."""
    if device_id is None:
        device_id = const.UNKNOWN_DEVICE_PREFIX + secrets.token_hex(6)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(device_id, key)
    now = datetime.fromtimestamp(clock() / 1000, tz=UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=const.SELF_SIGNED_DAYS))
        .add_extension(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, critical=False)
        .sign(key, hashes.SHA256())
    )
    return VirtualWearable(device_id, key, certificate, device_dir=None, clock=clock)


async def send_fault(uplink: HttpUplink, fault: Fault, deadline_s: float = const.DEFAULT_DEADLINE_S) -> FaultOutcome:
    """Send the fault's prelude, then its body, each with its own retry deadline."""
    prelude = tuple([await uplink.send(signed, deadline_s) for signed in fault.prelude])
    result = await uplink.send(fault.body, deadline_s, content_type=fault.content_type)
    return FaultOutcome(fault, prelude, result)
