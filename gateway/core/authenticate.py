"""Authentication of a signed frame against its device's registration (sans-I/O)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.protocol import AlertFrame, SignedFrame, verify_signature
from gateway.protocol.advert import BATTERY_UNKNOWN, AdvertSignal
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
    phone: the device's own number (E.164), the only sender its SMS frames are accepted from; "" if none.
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
    phone: str = ""


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
    receiver: the BLE receiver that heard it (None for other transports).
    rssi: its signal strength at that receiver, dBm (None for other transports).
    """

    signed: SignedFrame
    device: DeviceCredentials
    transport: str
    received_at: datetime
    device_time: datetime
    delayed: bool
    receiver: str | None = None
    rssi: int | None = None


#: Prefix of an advert's canonical encoding: never the start of a signed frame, so digests never collide.
ADVERT_RECORD_PREFIX = b"advert/v1\x00"


def advert_record(signal: AdvertSignal, received_at: datetime) -> SignedFrame:
    """An opened advert in the shape of a signed frame, so it travels the same pipeline as HTTPS.

    The frame's timestamp is the receipt time (an advert carries none). frame_bytes is a canonical
    encoding of (device, counter, event, battery) and digest its SHA-256; there is no signature
    (the advert's MAC was checked by open_advert).
    """
    battery = BATTERY_UNKNOWN if signal.battery is None else signal.battery
    record = (
        ADVERT_RECORD_PREFIX
        + signal.device_id.encode("ascii")
        + b"\x00"
        + signal.counter.to_bytes(4, "big")
        + bytes((int(signal.event), battery))
    )
    frame = AlertFrame(
        signal.device_id, signal.counter, int(received_at.timestamp() * 1000), signal.event, battery=signal.battery
    )
    return SignedFrame(frame, record, b"", hashlib.sha256(record).digest())


def authenticate_advert(
    signal: AdvertSignal,
    device: DeviceCredentials | None,
    *,
    receiver: str,
    rssi: int | None,
    now: datetime,
) -> AuthenticatedSignal | Rejection:
    """Check the registration behind an opened advert (its MAC already verified): registered, trusted, valid."""
    if device is None:
        return Rejection(RejectReason.UNKNOWN_DEVICE, f"device {signal.device_id!r} is not registered")
    if device.revoked:
        return Rejection(RejectReason.REVOKED, f"device {signal.device_id!r} is revoked")
    if device.trust_problem is not None:
        return device.trust_problem
    if not device.not_before <= now <= device.not_after:
        return Rejection(
            RejectReason.CERT_INVALID,
            f"certificate of {signal.device_id!r} is not valid at {now:%Y-%m-%dT%H:%M:%SZ}",
        )
    return AuthenticatedSignal(
        signed=advert_record(signal, now),
        device=device,
        transport="ble",
        received_at=now,
        device_time=now,
        delayed=False,
        receiver=receiver,
        rssi=rssi,
    )


def authenticate(
    signed: SignedFrame,
    device: DeviceCredentials | None,
    *,
    transport: str,
    now: datetime,
    rules: AuthRules,
    peer_device_id: str | None = None,
    sender_phone: str | None = None,
) -> AuthenticatedSignal | Rejection:
    """Check a signed frame: registered device, valid certificate, not revoked, signature, clock.

    peer_device_id: the device id of a TLS client certificate (mTLS), which must match the frame's.
    sender_phone: the number an SMS frame came from, which must be the device's registered phone.
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
    if sender_phone is not None and (not device.phone or sender_phone != device.phone):
        return Rejection(
            RejectReason.DEVICE_MISMATCH, f"SMS sender is not the registered phone number of {frame.device_id!r}"
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
