"""Authentication of a signed frame against its device's registration (sans-I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.protocol import SignedFrame, verify_signature
from gateway.rejection import Rejection, RejectReason


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What the gateway trusts about a registered device (its certificate already chain-verified).

    device_id: certificate CN and registry key.
    public_key: the certificate's key.
    fingerprint: SHA-256 of the certificate, hex.
    not_before / not_after: certificate validity.
    revoked: on the deny list or in the CRL.
    wearer / site: for the command center.
    trust_problem: why the certificate is no longer trusted (CRL, chain, validity), if it is not.
    """

    device_id: str
    public_key: ec.EllipticCurvePublicKey
    fingerprint: str
    not_before: datetime
    not_after: datetime
    revoked: bool
    wearer: str
    site: str
    trust_problem: Rejection | None = None


@dataclass(frozen=True, slots=True)
class AuthRules:
    """Clock rules (from AuthSettings)."""

    max_clock_ahead: timedelta
    delayed_after: timedelta


@dataclass(frozen=True, slots=True)
class AuthenticatedSignal:
    """A signal whose signature, device and clock checked out; replay is decided by the store.

    signed: the parsed frame and its signature.
    device: who sent it.
    transport: "https", "sms" or "ble".
    received_at: gateway time of receipt (UTC).
    device_time: the frame's timestamp as a datetime (UTC).
    delayed: the frame is older than the rules' delayed_after: alert anyway, marked delayed.
    """

    signed: SignedFrame
    device: DeviceCredentials
    transport: str
    received_at: datetime
    device_time: datetime
    delayed: bool


def authenticate(
    signed: SignedFrame,
    device: DeviceCredentials | None,
    *,
    transport: str,
    now: datetime,
    rules: AuthRules,
    peer_device_id: str | None = None,
) -> AuthenticatedSignal | Rejection:
    """Check a signed frame: registered device, valid certificate, not revoked, signature, clock.

    peer_device_id: the device id of a TLS client certificate (mTLS), which must match the frame's.
    The cheap checks come first so that garbage never costs a signature verification.
    """
    frame = signed.frame
    if device is None:
        return Rejection(RejectReason.UNKNOWN_DEVICE, f"device {frame.device_id!r} is not registered")
    if peer_device_id is not None and peer_device_id != frame.device_id:
        return Rejection(
            RejectReason.DEVICE_MISMATCH,
            f"TLS client certificate is for {peer_device_id!r}, frame is from {frame.device_id!r}",
        )
    if device.revoked:
        return Rejection(RejectReason.REVOKED, f"device {frame.device_id!r} is revoked")
    if device.trust_problem is not None:
        return device.trust_problem
    if not device.not_before <= now <= device.not_after:
        return Rejection(
            RejectReason.CERT_INVALID, f"certificate of {frame.device_id!r} is not valid at {now:%Y-%m-%dT%H:%M:%SZ}"
        )
    if not verify_signature(signed, device.public_key):
        return Rejection(
            RejectReason.BAD_SIGNATURE, f"signature does not verify with {frame.device_id!r}'s certificate"
        )
    # Compared in milliseconds first: a timestamp past year 9999 cannot even become a datetime.
    ahead_ms = frame.timestamp_ms - int(now.timestamp() * 1000)
    if ahead_ms > rules.max_clock_ahead.total_seconds() * 1000:
        return Rejection(RejectReason.CLOCK_SKEW, f"device clock is {ahead_ms / 1000:.0f} s ahead of the gateway")
    device_time = datetime.fromtimestamp(frame.timestamp_ms / 1000, tz=UTC)
    return AuthenticatedSignal(
        signed=signed,
        device=device,
        transport=transport,
        received_at=now,
        device_time=device_time,
        delayed=now - device_time > rules.delayed_after,
    )
