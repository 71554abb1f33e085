"""Device registry: registration, revocation (deny list), and the credentials cache the hot path reads."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tortoise.exceptions import BaseORMException

from gateway.core.authenticate import DeviceCredentials
from gateway.errors import RegistryError, StoreUnavailable
from gateway.identity.trust import DeviceTrust
from gateway.rejection import Rejection
from gateway.store.models import Device, Revocation

#: An unknown device id is looked up again after this long: short enough that a device registered
#: while the gateway runs is accepted within seconds, long enough that garbage ids don't hammer the database.
NEGATIVE_TTL_S: Final = 2.0
#: A phone number as the phone network writes it (the `From` of an SMS): SMS frames must come from it exactly.
E164: Final = re.compile(r"\+[1-9][0-9]{7,14}")


#: Revocations are looked for a little before the last refresh, so clock skew between this gateway and
#: the one (or the CLI) that revoked cannot hide one.
REFRESH_OVERLAP: Final = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registry entry as the CLI shows it."""

    device_id: str
    wearer: str
    site: str
    phone: str
    cert_fingerprint: str
    cert_serial: str
    not_after: datetime
    revoked_at: datetime | None
    revoked_reason: str | None
    last_seen_at: datetime | None
    battery: int | None


def _record(d: Device) -> DeviceRecord:
    return DeviceRecord(
        d.device_id,
        d.wearer,
        d.site,
        d.phone,
        d.cert_fingerprint,
        d.cert_serial,
        d.not_after,
        d.revoked_at,
        d.revoked_reason,
        d.last_seen_at,
        d.battery,
    )


class DeviceRegistry:
    """Adds, lists, shows and revokes devices. Certificates are chain-checked before they are stored."""

    def __init__(self, trust: DeviceTrust) -> None:
        self._trust = trust

    async def add(self, cert: x509.Certificate, *, wearer: str, site: str, phone: str, now: datetime) -> DeviceRecord:
        identity = self._trust.verify(cert, now)
        if isinstance(identity, Rejection):
            raise RegistryError(f"certificate refused: {identity.detail}", device_id="?")
        if phone and not E164.fullmatch(phone):
            # SMS frames are accepted only from this exact number, as the phone network writes it.
            raise RegistryError(
                f"phone {phone!r} is not an E.164 number (+ and 8 to 15 digits, no spaces)",
                device_id=identity.device_id,
            )
        if await Revocation.exists(cert_fingerprint=identity.fingerprint):
            raise RegistryError("this certificate was revoked; issue a new one", device_id=identity.device_id)
        if await Device.exists(device_id=identity.device_id):
            raise RegistryError(f"device {identity.device_id} is already registered", device_id=identity.device_id)
        device = await Device.create(
            device_id=identity.device_id,
            wearer=wearer,
            site=site,
            phone=phone,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            cert_fingerprint=identity.fingerprint,
            cert_serial=format(identity.serial, "x"),
            not_before=identity.not_before,
            not_after=identity.not_after,
            created_at=now,
            updated_at=now,
        )
        return _record(device)

    async def list(self) -> list[DeviceRecord]:
        return [_record(d) for d in await Device.all().order_by("device_id")]

    async def show(self, device_id: str) -> DeviceRecord:
        device = await Device.get_or_none(device_id=device_id)
        if device is None:
            raise RegistryError(f"device {device_id} is not registered", device_id=device_id)
        return _record(device)

    async def revoke(self, device_id: str, reason: str, now: datetime) -> DeviceRecord:
        """Deny the device from now on (idempotent); the caller also publishes the CRL."""
        device = await Device.get_or_none(device_id=device_id)
        if device is None:
            raise RegistryError(f"device {device_id} is not registered", device_id=device_id)
        if device.revoked_at is None:
            device.revoked_at = now
            device.revoked_reason = reason
            device.updated_at = now
            await device.save(update_fields=["revoked_at", "revoked_reason", "updated_at"])
        if not await Revocation.exists(cert_fingerprint=device.cert_fingerprint):
            await Revocation.create(
                cert_serial=device.cert_serial,
                cert_fingerprint=device.cert_fingerprint,
                device_id=device.device_id,
                revoked_at=now,
                reason=reason,
            )
        return _record(device)


class DeviceDirectory:
    """The hot path's view of registered devices: credentials cached in memory.

    Staleness is safe: the commit transaction re-reads the device row and refuses revoked or removed
    devices, so the cache only saves work and never admits anything the database would not.
    """

    def __init__(self, trust: DeviceTrust) -> None:
        self._trust = trust
        self._cache: dict[str, DeviceCredentials] = {}
        self._unknown: dict[str, float] = {}
        self._refreshed_at = datetime.now(UTC)

    async def get(self, device_id: str, now: datetime) -> DeviceCredentials | None:
        cached = self._cache.get(device_id)
        if cached is not None:
            return cached
        miss = self._unknown.get(device_id)
        if miss is not None and time.monotonic() - miss < NEGATIVE_TTL_S:
            return None
        try:
            device = await Device.get_or_none(device_id=device_id)
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        creds = None if device is None else self._credentials(device, now)
        if creds is None:
            self._unknown[device_id] = time.monotonic()
            if len(self._unknown) > 100_000:  # a flood of random ids must not grow memory without bound
                self._unknown.clear()
            return None
        self._cache[device_id] = creds
        return creds

    def _credentials(self, device: Device, now: datetime) -> DeviceCredentials | None:
        cert = x509.load_pem_x509_certificate(device.cert_pem.encode())
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            return None
        verdict = self._trust.verify(cert, now)
        return DeviceCredentials(
            device_id=device.device_id,
            public_key=public_key,
            fingerprint=device.cert_fingerprint,
            not_before=device.not_before,
            not_after=device.not_after,
            revoked=device.revoked_at is not None,
            wearer=device.wearer,
            site=device.site,
            phone=device.phone,
            # Kept (not "unknown") so the device and the operator see the precise reason.
            trust_problem=verdict if isinstance(verdict, Rejection) else None,
        )

    async def refresh(self) -> None:
        """Drop cached devices revoked since the last refresh (cheap: only those rows come back)."""
        since = self._refreshed_at - REFRESH_OVERLAP
        self._refreshed_at = datetime.now(UTC)
        try:
            revoked = await Device.filter(revoked_at__gte=since).values_list("device_id", flat=True)
        except (BaseORMException, OSError):
            return
        for device_id in revoked:
            self._cache.pop(str(device_id), None)
        self._unknown.clear()
