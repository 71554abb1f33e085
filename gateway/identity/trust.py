"""Device certificate trust: chain, validity window and revocation checks for wearables (sans-I/O)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from gateway.config import PkiSettings
from gateway.errors import PkiError
from gateway.identity import const
from gateway.identity.pki import PkiLayout, device_id_of, fingerprint, load_certificate, load_crl, verify_crl_issuer
from gateway.rejection import Rejection, RejectReason


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """A device certificate that chains to the device CA, as the rest of the gateway sees it.

    device_id: the id in the certificate's CN and `urn:dev:` SAN URI (the frames' device id).
    fingerprint: lowercase hex SHA-256 of the certificate's DER.
    serial: the certificate's serial number (what a CRL lists).
    not_before, not_after: the certificate's validity window (UTC).
    public_key: the device's P-256 key, which verifies its frames' signatures.
    """

    device_id: str
    fingerprint: str
    serial: int
    not_before: datetime
    not_after: datetime
    public_key: ec.EllipticCurvePublicKey


class TrustPaths(NamedTuple):
    """Files a DeviceTrust is loaded from, for CAs kept outside a PkiLayout."""

    #: The trust anchor.
    root_ca_cert: Path
    #: The intermediate CA that issues device certificates.
    device_ca_cert: Path
    #: The device CA's CRL; None only when the operator's CA publishes none.
    crl: Path | None = None


@dataclass(frozen=True, slots=True)
class _Verified:
    identity: DeviceIdentity
    # The window in which every certificate of the verified chain is valid; checked on each cache hit.
    chain_not_before: datetime
    chain_not_after: datetime


def _require_utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("verify needs a timezone-aware `now`")
    return now.astimezone(UTC)


class DeviceTrust:
    """Decides whether a device certificate is trusted now: chain to root via the device CA, window, CRL.

    The chain walk (cryptography.x509.verification) runs once per certificate; its result is cached by
    fingerprint, and the validity windows and the CRL are checked on every call, so a revocation or an
    expiry takes effect at once. Not thread-safe: one event loop owns it.
    """

    def __init__(
        self,
        root_ca: x509.Certificate,
        device_ca: x509.Certificate,
        crl: x509.CertificateRevocationList | None = None,
        *,
        cache_size: int = const.TRUST_CACHE_MAX,
    ) -> None:
        try:
            device_ca.verify_directly_issued_by(root_ca)
        except (ValueError, TypeError) as exc:
            raise PkiError(f"the device CA is not issued by the root CA: {exc}") from None
        except InvalidSignature:
            raise PkiError("the device CA's signature is not the root CA's") from None
        self._root_ca = root_ca
        self._device_ca = device_ca
        self._store = Store([root_ca])
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._cache_size = cache_size
        self._crl: x509.CertificateRevocationList | None = None
        self._revoked: frozenset[int] = frozenset()
        if crl is not None:
            self.update_crl(crl)

    @property
    def root_ca(self) -> x509.Certificate:
        return self._root_ca

    @property
    def device_ca(self) -> x509.Certificate:
        return self._device_ca

    @property
    def crl(self) -> x509.CertificateRevocationList | None:
        """The CRL in use, if any."""
        return self._crl

    @property
    def cached(self) -> int:
        """How many verified certificates are cached (a metric)."""
        return len(self._cache)

    def update_crl(self, crl: x509.CertificateRevocationList) -> None:
        """Use `crl` from now on; PkiError (and the old CRL kept) unless the device CA signed it and it is not
        older than the one in use (an attacker replaying an old CRL must not un-revoke a device)."""
        verify_crl_issuer(crl, self._device_ca)
        if self._crl is not None and crl.last_update_utc < self._crl.last_update_utc:
            raise PkiError(
                f"the CRL of {crl.last_update_utc.isoformat()} is older than the one in use "
                f"({self._crl.last_update_utc.isoformat()})"
            )
        self._revoked = frozenset(entry.serial_number for entry in crl)
        self._crl = crl

    def is_revoked(self, serial: int) -> bool:
        """True when the CRL in use lists `serial`."""
        return serial in self._revoked

    def crl_is_stale(self, now: datetime) -> bool:
        """True when the CRL's next update has passed (or there is none): an alarm for operators, not a refusal,
        since a panic must never be lost because a CRL was not re-signed in time."""
        if self._crl is None:
            return True
        next_update = self._crl.next_update_utc
        return next_update is not None and _require_utc(now) > next_update

    def verify(self, cert: x509.Certificate, now: datetime) -> DeviceIdentity | Rejection:
        """The device identity of `cert` at `now`, or a Rejection (CERT_INVALID or REVOKED). Never raises on bad
        certificates; raises ValueError only for a naive `now` (a programming error)."""
        at = _require_utc(now)
        return self._verify(cert, fingerprint(cert), at)

    def verify_der(self, der: bytes, now: datetime) -> DeviceIdentity | Rejection:
        """As `verify`, for a DER certificate (a TLS peer's); a cache hit skips parsing it."""
        at = _require_utc(now)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        cert_fingerprint = digest.finalize().hex()
        entry = self._cache.get(cert_fingerprint)
        if entry is not None:
            self._cache.move_to_end(cert_fingerprint)
            return self._check_current(entry, at)
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return Rejection(RejectReason.CERT_INVALID, "the client certificate is not valid DER")
        return self._verify(cert, cert_fingerprint, at)

    def _verify(self, cert: x509.Certificate, cert_fingerprint: str, at: datetime) -> DeviceIdentity | Rejection:
        entry = self._cache.get(cert_fingerprint)
        if entry is not None:
            self._cache.move_to_end(cert_fingerprint)
            return self._check_current(entry, at)
        # The leaf's own window first: it is the common failure and deserves a precise message.
        window = _check_window(cert.not_valid_before_utc, cert.not_valid_after_utc, at, "the certificate")
        if window is not None:
            return window
        verified = self._verify_chain(cert, cert_fingerprint, at)
        if isinstance(verified, Rejection):
            return verified
        if self._cache_size > 0:
            self._cache[cert_fingerprint] = verified
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._check_current(verified, at)

    def _verify_chain(self, cert: x509.Certificate, cert_fingerprint: str, at: datetime) -> _Verified | Rejection:
        verifier = PolicyBuilder().store(self._store).time(at).max_chain_depth(1).build_client_verifier()
        try:
            chain = verifier.verify(cert, [self._device_ca]).chain
        except VerificationError as exc:
            return Rejection(RejectReason.CERT_INVALID, f"the certificate does not chain to the device CA: {exc}")
        # The root alone could also sign a clientAuth leaf; only the device CA may enrol devices.
        if len(chain) != 3 or chain[1] != self._device_ca:
            return Rejection(RejectReason.CERT_INVALID, "the certificate is not issued by the device CA")
        try:
            device_id = device_id_of(cert)
        except PkiError as exc:
            return Rejection(RejectReason.CERT_INVALID, str(exc))
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
            return Rejection(RejectReason.CERT_INVALID, f"the certificate of {device_id} has no ECDSA P-256 key")
        identity = DeviceIdentity(
            device_id=device_id,
            fingerprint=cert_fingerprint,
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            public_key=public_key,
        )
        return _Verified(
            identity,
            chain_not_before=max(c.not_valid_before_utc for c in chain),
            chain_not_after=min(c.not_valid_after_utc for c in chain),
        )

    def _check_current(self, entry: _Verified, at: datetime) -> DeviceIdentity | Rejection:
        identity = entry.identity
        if identity.serial in self._revoked:
            return Rejection(
                RejectReason.REVOKED,
                f"the certificate of {identity.device_id} (serial {identity.serial:#x}) is revoked",
            )
        window = _check_window(identity.not_before, identity.not_after, at, f"the certificate of {identity.device_id}")
        if window is None:
            window = _check_window(entry.chain_not_before, entry.chain_not_after, at, "a CA certificate of its chain")
        return identity if window is None else window


def _check_window(not_before: datetime, not_after: datetime, at: datetime, what: str) -> Rejection | None:
    if at < not_before:
        return Rejection(RejectReason.CERT_INVALID, f"{what} is not valid before {not_before.isoformat()}")
    if at > not_after:
        return Rejection(RejectReason.CERT_INVALID, f"{what} expired at {not_after.isoformat()}")
    return None


def load_device_trust(source: PkiLayout | PkiSettings | TrustPaths) -> DeviceTrust:
    """A DeviceTrust from files: a PKI directory, the gateway's PKI settings, or explicit paths.

    A layout or settings always name a CRL, which must exist (init_pki writes one): revocation is not
    silently off because a file went missing. PkiError when a file is missing, unreadable or not trusted.
    """
    if isinstance(source, PkiLayout):
        paths = TrustPaths(source.root_ca_cert, source.device_ca_cert, source.device_ca_crl)
    elif isinstance(source, PkiSettings):
        layout = PkiLayout(source.directory)
        paths = TrustPaths(
            source.path(layout.root_ca_cert.name, source.root_ca_cert),
            source.path(layout.device_ca_cert.name, source.device_ca_cert),
            source.path(layout.device_ca_crl.name, source.crl_file),
        )
    else:
        paths = source
    crl = None if paths.crl is None else load_crl(paths.crl)
    return DeviceTrust(load_certificate(paths.root_ca_cert), load_certificate(paths.device_ca_cert), crl)
