"""Device PKI: root, device and server CAs, device and server certificates, CRLs, and the files that hold them."""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import PkiError
from gateway.identity import const

#: RFC 5280 caps serial numbers at 20 octets, and they must be positive.
_MAX_SERIAL: Final = (1 << 159) - 1

#: A DNS name or a wildcard one ("*.site.example"): labels of letters, digits and inner hyphens.
_HOSTNAME: Final = re.compile(
    r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)


class CaKind(enum.StrEnum):
    """What an intermediate CA issues; its EKU limits it to that use, so a leaked server CA cannot mint devices."""

    DEVICE = "device"
    SERVER = "server"


_CA_EKU: Final = {
    CaKind.DEVICE: ExtendedKeyUsageOID.CLIENT_AUTH,
    CaKind.SERVER: ExtendedKeyUsageOID.SERVER_AUTH,
}

_PURPOSE_NAMES: Final = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "device (clientAuth)",
    ExtendedKeyUsageOID.SERVER_AUTH: "server (serverAuth)",
}


@dataclass(frozen=True, slots=True)
class CertAndKey:
    """A certificate and its private key.

    cert: the certificate.
    key: its ECDSA private key (never logged or printed).
    """

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One revoked device certificate, as kept in revoked.json.

    serial: the certificate's serial number.
    revoked_at: when it was revoked (UTC).
    reason: an RFC 5280 reason name ("keyCompromise", "cessationOfOperation"...), or None.
    """

    serial: int
    revoked_at: datetime
    reason: str | None = None


# --- building blocks -------------------------------------------------------------------------------------------


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return now.astimezone(UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _hash_for(key: ec.EllipticCurvePrivateKey) -> hashes.SHA256 | hashes.SHA384:
    # Match the digest to the curve's strength, so an operator's P-384 CA signs with SHA-384.
    return hashes.SHA384() if key.curve.key_size > 256 else hashes.SHA256()


def _public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_issuer(ca: CertAndKey, purpose: x509.ObjectIdentifier | None = None) -> None:
    try:
        constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PkiError(f"{ca.cert.subject.rfc4514_string()} is not a CA certificate (no basic constraints)") from None
    if not constraints.ca:
        raise PkiError(f"{ca.cert.subject.rfc4514_string()} is not a CA certificate")
    cert_key = ca.cert.public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or _public_der(cert_key) != _public_der(ca.key.public_key()):
        raise PkiError(f"the private key does not belong to {ca.cert.subject.rfc4514_string()}")
    if purpose is not None:
        try:
            usages = ca.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return
        # Verifiers would refuse the result anyway; refusing here names the mistake (server CA for a device).
        if purpose not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
            raise PkiError(f"{ca.cert.subject.rfc4514_string()} may not issue {_PURPOSE_NAMES[purpose]} certificates")


def _validity(now: datetime, valid_days: int, issuer: x509.Certificate | None) -> tuple[datetime, datetime]:
    if not 1 <= valid_days <= const.MAX_VALID_DAYS:
        raise PkiError(f"validity must be 1 to {const.MAX_VALID_DAYS} days, not {valid_days}")
    not_before = now - const.CERT_BACKDATE
    not_after = now + timedelta(days=valid_days)
    # A certificate that outlives its issuer stops verifying early and silently; say so when it is made.
    if issuer is not None and not_after > issuer.not_valid_after_utc:
        raise PkiError(
            f"a {valid_days}-day certificate would outlive its issuer {issuer.subject.rfc4514_string()}, "
            f"which expires {issuer.not_valid_after_utc.isoformat()}"
        )
    return not_before, not_after


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # Operators' CAs may lack an SKI; derive the same key id from the public key.
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    window: tuple[datetime, datetime],
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(window[0])
        .not_valid_after(window[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


_CA_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)

#: Device keys sign frames (digitalSignature) and derive the per-device BLE advert key by ECDH with the
#: gateway's fleet key (keyAgreement): set now, since device certificates outlive several releases.
_DEVICE_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)

_LEAF_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


# --- CAs and certificates --------------------------------------------------------------------------------------


def create_root_ca(
    common_name: str, valid_days: int = const.ROOT_CA_DAYS, *, now: datetime | None = None
) -> CertAndKey:
    """A new self-signed root CA with a fresh P-256 key; it may sign one level of intermediate CAs."""
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key(), _validity(_utc(now), valid_days, None))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .sign(key, _hash_for(key))
    )
    return CertAndKey(cert, key)


def create_intermediate_ca(
    parent: CertAndKey,
    common_name: str,
    kind: CaKind,
    valid_days: int = const.INTERMEDIATE_CA_DAYS,
    *,
    now: datetime | None = None,
) -> CertAndKey:
    """A new issuing CA under `parent` (path length 0), limited by EKU to device or server certificates."""
    _check_issuer(parent)
    key = _new_key()
    cert = (
        _builder(
            _name(common_name), parent.cert.subject, key.public_key(), _validity(_utc(now), valid_days, parent.cert)
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([_CA_EKU[kind]]), critical=False)
        .add_extension(_authority_key_id(parent.cert), critical=False)
        .sign(parent.key, _hash_for(parent.key))
    )
    return CertAndKey(cert, key)


def _check_hostname(name: str) -> x509.DNSName:
    if not _HOSTNAME.fullmatch(name) or len(name) > 253:
        raise PkiError(f"{name!r} is not a valid DNS host name")
    return x509.DNSName(name.lower())


def _check_ip(text: str) -> x509.IPAddress:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        raise PkiError(f"{text!r} is not an IPv4 or IPv6 address") from None


def issue_server_certificate(
    ca: CertAndKey,
    hostnames: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
    valid_days: int = const.SERVER_CERT_DAYS,
    *,
    now: datetime | None = None,
) -> CertAndKey:
    """A TLS server certificate (fresh key) for the gateway's HTTPS or the MQTT broker, named in its SAN."""
    _check_issuer(ca, ExtendedKeyUsageOID.SERVER_AUTH)
    names: list[x509.GeneralName] = [_check_hostname(h) for h in hostnames]
    names += [_check_ip(ip) for ip in ip_addresses]
    if not names:
        raise PkiError("a server certificate needs at least one host name or IP address")
    key = _new_key()
    common_name = hostnames[0] if hostnames else ip_addresses[0]
    cert = (
        _builder(_name(common_name), ca.cert.subject, key.public_key(), _validity(_utc(now), valid_days, ca.cert))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(_authority_key_id(ca.cert), critical=False)
        .sign(ca.key, _hash_for(ca.key))
    )
    return CertAndKey(cert, key)


def check_device_id(device_id: str) -> str:
    """Return the id when it is one the wire protocol can carry (1-32 chars of [A-Za-z0-9._-]); else PkiError."""
    if not const.DEVICE_ID_PATTERN.fullmatch(device_id):
        raise PkiError(f"device id {device_id!r} is not 1-32 chars of [A-Za-z0-9._-]")
    return device_id


def device_uri(device_id: str) -> str:
    """The SAN URI that names a device in its certificate."""
    return const.DEVICE_URI_PREFIX + device_id


def make_device_csr(device_id: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """What a wearable's firmware sends to enrol: a CSR with its id as CN, signed by its own key."""
    check_device_id(device_id)
    return x509.CertificateSigningRequestBuilder().subject_name(_name(device_id)).sign(key, hashes.SHA256())


def _single_cn(name: x509.Name, what: str) -> str:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attributes) != 1:
        raise PkiError(f"{what} must have exactly one common name, it has {len(attributes)}")
    value = attributes[0].value
    if not isinstance(value, str):
        raise PkiError(f"{what} has a binary common name")
    return value


def issue_device_certificate(
    ca: CertAndKey,
    csr: x509.CertificateSigningRequest,
    valid_days: int = const.DEVICE_CERT_DAYS,
    now: datetime | None = None,
) -> x509.Certificate:
    """Sign a wearable's CSR with the device CA.

    Only the CSR's CN and public key are used; requested extensions are ignored, since the CA alone decides
    what a device may do. Raises PkiError when the signature, the id or the key is not acceptable.
    """
    _check_issuer(ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    if not csr.is_signature_valid:
        raise PkiError("the CSR's signature does not verify: it was not signed by the key it carries")
    device_id = check_device_id(_single_cn(csr.subject, "the CSR"))
    try:
        public_key = csr.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise PkiError(f"the CSR for {device_id} carries an unsupported public key") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise PkiError(f"the CSR for {device_id} must carry an ECDSA P-256 key (the protocol's signature)")
    return (
        _builder(_name(device_id), ca.cert.subject, public_key, _validity(_utc(now), valid_days, ca.cert))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_DEVICE_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(device_uri(device_id))]), critical=False
        )
        .add_extension(_authority_key_id(ca.cert), critical=False)
        .sign(ca.key, _hash_for(ca.key))
    )


def device_id_of(cert: x509.Certificate) -> str:
    """The device id of a device certificate: its CN, which must equal its `urn:dev:` SAN URI; else PkiError."""
    device_id = check_device_id(_single_cn(cert.subject, "a device certificate"))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiError(f"the certificate of {device_id} has no subject alternative name") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(const.DEVICE_URI_PREFIX)]
    if uris != [device_uri(device_id)]:
        raise PkiError(f"the certificate's CN {device_id!r} does not match its device URIs {uris}")
    return device_id


def fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    return cert.fingerprint(hashes.SHA256()).hex()


# --- revocation ------------------------------------------------------------------------------------------------


def parse_reason(text: str) -> x509.ReasonFlags:
    """An RFC 5280 revocation reason from its name ("keyCompromise") or Python spelling ("key_compromise")."""
    for flag in x509.ReasonFlags:
        if text in (flag.value, flag.name) and flag is not x509.ReasonFlags.remove_from_crl:
            return flag
    choices = ", ".join(f.value for f in x509.ReasonFlags if f is not x509.ReasonFlags.remove_from_crl)
    raise PkiError(f"unknown revocation reason {text!r}; use one of {choices}")


def _check_serial(serial: int) -> int:
    if not 0 < serial <= _MAX_SERIAL:
        raise PkiError(f"serial {serial} is not a certificate serial number (1 to 2**159-1)")
    return serial


def build_crl(
    ca: CertAndKey,
    revoked: Sequence[RevokedEntry],
    now: datetime | None = None,
    next_update_days: int = const.CRL_NEXT_UPDATE_DAYS,
) -> x509.CertificateRevocationList:
    """A CRL of `revoked`, signed by `ca`; its CRL number is `now` in milliseconds, so later lists sort later."""
    _check_issuer(ca)
    if not 1 <= next_update_days <= const.MAX_VALID_DAYS:
        raise PkiError(f"next update must be 1 to {const.MAX_VALID_DAYS} days away, not {next_update_days}")
    at = _utc(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(at)
        .next_update(at + timedelta(days=next_update_days))
        .add_extension(x509.CRLNumber(int(at.timestamp() * 1000)), critical=False)
        .add_extension(_authority_key_id(ca.cert), critical=False)
    )
    seen: set[int] = set()
    for entry in revoked:
        if _check_serial(entry.serial) in seen:
            continue
        seen.add(entry.serial)
        revoked_cert = (
            x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(_utc(entry.revoked_at))
        )
        reason = None if entry.reason is None else parse_reason(entry.reason)
        # RFC 5280 5.3.1: "unspecified" is expressed by leaving the reason out.
        if reason is not None and reason is not x509.ReasonFlags.unspecified:
            revoked_cert = revoked_cert.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(revoked_cert.build())
    return builder.sign(ca.key, _hash_for(ca.key))


# --- files -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PkiLayout:
    """Where each PKI file lives in one directory (see certs/README.md)."""

    directory: Path

    @property
    def root_ca_cert(self) -> Path:
        return self.directory / "root-ca.crt"

    @property
    def root_ca_key(self) -> Path:
        return self.directory / "root-ca.key"

    @property
    def device_ca_cert(self) -> Path:
        return self.directory / "device-ca.crt"

    @property
    def device_ca_key(self) -> Path:
        return self.directory / "device-ca.key"

    @property
    def server_ca_cert(self) -> Path:
        return self.directory / "server-ca.crt"

    @property
    def server_ca_key(self) -> Path:
        return self.directory / "server-ca.key"

    @property
    def server_cert(self) -> Path:
        """The server certificate followed by the server CA's: the chain a TLS server presents."""
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def device_ca_crl(self) -> Path:
        return self.directory / "device-ca.crl"

    @property
    def revoked_list(self) -> Path:
        """revoked.json: the entries the CRL is built from."""
        return self.directory / "revoked.json"

    @property
    def devices_dir(self) -> Path:
        """Keys and certificates of simulated devices."""
        return self.directory / "devices"

    def device_key(self, device_id: str) -> Path:
        return self.devices_dir / f"{check_device_id(device_id)}.key"

    def device_cert(self, device_id: str) -> Path:
        return self.devices_dir / f"{check_device_id(device_id)}.crt"

    @property
    def fleet_key(self) -> Path:
        """The gateways' BLE fleet key (ECDH with each device key derives that device's advert keys)."""
        return self.directory / "fleet.key"

    @property
    def fleet_public(self) -> Path:
        """Its public half, provisioned into every wearable."""
        return self.directory / "fleet.pub"

    @property
    def ack_key(self) -> Path:
        """The key that signs acknowledgements wearables verify ("help is coming")."""
        return self.directory / "ack.key"

    @property
    def ack_public(self) -> Path:
        """Its public half, provisioned into every wearable."""
        return self.directory / "ack.pub"

    @property
    def pki_files(self) -> tuple[Path, ...]:
        """The files `init_pki` creates."""
        return (
            self.root_ca_cert,
            self.root_ca_key,
            self.device_ca_cert,
            self.device_ca_key,
            self.server_ca_cert,
            self.server_ca_key,
            self.server_cert,
            self.server_key,
            self.device_ca_crl,
            self.revoked_list,
            self.fleet_key,
            self.fleet_public,
            self.ack_key,
            self.ack_public,
        )


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, data: bytes, mode: int, *, exclusive: bool = False) -> None:
    """Write a file whole or not at all, with `mode` from its creation on (readers never see a partial file).

    exclusive: fail with PkiError instead of replacing an existing file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never write through a file or link someone placed there; `mode` applies from the first byte.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            # The umask can only remove bits; fchmod gives public files their full mode and keys exactly 0600.
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PkiError(f"{path} already exists") from None
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_directory(path.parent)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey, *, exclusive: bool = False) -> None:
    """Write a private key as unencrypted PKCS#8 PEM with mode 0600."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_atomic(path, pem, const.KEY_FILE_MODE, exclusive=exclusive)


def write_certificate(path: Path, cert: x509.Certificate, chain: Sequence[x509.Certificate] = ()) -> None:
    """Write a certificate as PEM with mode 0644, followed by `chain` (its issuers, nearest first) if given."""
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *chain))
    _write_atomic(path, pem, const.PUBLIC_FILE_MODE)


def write_csr(path: Path, csr: x509.CertificateSigningRequest) -> None:
    """Write a CSR as PEM with mode 0644."""
    _write_atomic(path, csr.public_bytes(serialization.Encoding.PEM), const.PUBLIC_FILE_MODE)


def write_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    """Write a CRL as PEM with mode 0644; a gateway reloading it sees the old list or the new one, never half."""
    _write_atomic(path, crl.public_bytes(serialization.Encoding.PEM), const.PUBLIC_FILE_MODE)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot read {what}: {exc.strerror}") from None


def load_certificate(path: Path) -> x509.Certificate:
    """Read a PEM or DER certificate; PkiError when missing or not a certificate."""
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise PkiError(f"{path}: not a PEM or DER certificate") from None


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Read every certificate of a PEM bundle; PkiError when missing or empty."""
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PkiError(f"{path}: not a PEM certificate bundle") from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read an unencrypted PEM or DER EC private key; PkiError when missing, encrypted or of another kind."""
    data = _read(path, "private key")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # No detail from the parser: it should never get a chance to echo key bytes.
        raise PkiError(f"{path}: not an unencrypted PEM or DER private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: not an elliptic-curve private key")
    return key


def load_csr(path: Path) -> x509.CertificateSigningRequest:
    """Read a PEM or DER certificate signing request; PkiError when missing or not a CSR."""
    data = _read(path, "CSR")
    try:
        return x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data)
    except ValueError:
        raise PkiError(f"{path}: not a PEM or DER certificate signing request") from None


def load_crl(path: Path) -> x509.CertificateRevocationList:
    """Read a PEM or DER CRL; PkiError when missing or not a CRL. Its signature is checked by DeviceTrust."""
    data = _read(path, "CRL")
    try:
        return x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
    except ValueError:
        raise PkiError(f"{path}: not a PEM or DER CRL") from None


def load_cert_and_key(cert_path: Path, key_path: Path) -> CertAndKey:
    """A certificate and its key from files; PkiError when they do not belong together."""
    pair = CertAndKey(load_certificate(cert_path), load_private_key(key_path))
    public_key = pair.cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or _public_der(public_key) != _public_der(
        pair.key.public_key()
    ):
        raise PkiError(f"{key_path} is not the private key of {cert_path}")
    return pair


def load_device_ca(layout: PkiLayout) -> CertAndKey:
    """The device CA, to sign device certificates and the CRL."""
    return load_cert_and_key(layout.device_ca_cert, layout.device_ca_key)


def load_server_ca(layout: PkiLayout) -> CertAndKey:
    """The server CA, to sign server certificates."""
    return load_cert_and_key(layout.server_ca_cert, layout.server_ca_key)


def _entry_to_json(entry: RevokedEntry) -> dict[str, Any]:
    # Serials are up to 159 bits: hex strings survive JSON tools that read numbers as doubles.
    return {"serial": hex(entry.serial), "revoked_at": entry.revoked_at.isoformat(), "reason": entry.reason}


def load_revoked(layout: PkiLayout) -> list[RevokedEntry]:
    """The entries of revoked.json; an absent file is an empty list."""
    if not layout.revoked_list.exists():
        return []
    data = _read(layout.revoked_list, "revocation list")
    try:
        document = json.loads(data)
        if document.get("version") != const.REVOKED_FILE_VERSION:
            raise PkiError(f"{layout.revoked_list}: unsupported version {document.get('version')!r}")
        return [
            RevokedEntry(
                serial=int(item["serial"], 16),
                revoked_at=_utc(datetime.fromisoformat(item["revoked_at"])),
                reason=item.get("reason"),
            )
            for item in document["revoked"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PkiError(f"{layout.revoked_list}: not a valid revocation list") from None


def _write_revoked(layout: PkiLayout, entries: Sequence[RevokedEntry]) -> None:
    document = {"version": const.REVOKED_FILE_VERSION, "revoked": [_entry_to_json(e) for e in entries]}
    _write_atomic(layout.revoked_list, (json.dumps(document, indent=2) + "\n").encode(), const.PUBLIC_FILE_MODE)


def issue_server_files(
    layout: PkiLayout,
    hostnames: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
    now: datetime | None = None,
    valid_days: int = const.SERVER_CERT_DAYS,
) -> tuple[Path, Path]:
    """Issue a server certificate with the server CA and write server.crt/.key (replacing them); (cert, key)."""
    server = issue_server_certificate(load_server_ca(layout), hostnames, ip_addresses, valid_days, now=now)
    # Two files cannot be replaced together: if the second write fails, the pair mismatches, the server
    # refuses to start on it, and re-running this repairs it; nothing half-written is ever read.
    _write_server(layout, server, load_certificate(layout.server_ca_cert))
    return layout.server_cert, layout.server_key


def _write_server(layout: PkiLayout, server: CertAndKey, server_ca: x509.Certificate) -> None:
    """server.key, then server.crt as a full chain (leaf, then server CA) so clients that trust only the root
    can build the path."""
    write_private_key(layout.server_key, server.key)
    write_certificate(layout.server_cert, server.cert, [server_ca])


def init_pki(layout: PkiLayout, now: datetime | None = None, force: bool = False) -> None:
    """Create root, device and server CAs, a localhost server certificate and an empty CRL in `layout`.

    Refuses (PkiError) when any of those files exists, unless `force`; forcing starts a new trust: devices
    issued by the old device CA no longer verify, and the old revocation list is dropped with it.
    """
    at = _utc(now)
    existing = [p.name for p in layout.pki_files if p.exists()]
    if existing and not force:
        raise PkiError(f"{layout.directory} already holds a PKI ({', '.join(existing)}); use force to replace it")
    root = create_root_ca("Panic Gateway Root CA", now=at)
    device_ca = create_intermediate_ca(root, "Panic Gateway Device CA", CaKind.DEVICE, now=at)
    server_ca = create_intermediate_ca(root, "Panic Gateway Server CA", CaKind.SERVER, now=at)
    server = issue_server_certificate(server_ca, now=at)
    for pair, cert_path, key_path in (
        (root, layout.root_ca_cert, layout.root_ca_key),
        (device_ca, layout.device_ca_cert, layout.device_ca_key),
        (server_ca, layout.server_ca_cert, layout.server_ca_key),
    ):
        write_private_key(key_path, pair.key)
        write_certificate(cert_path, pair.cert)
    _write_server(layout, server, server_ca.cert)
    _write_revoked(layout, [])
    write_crl(layout.device_ca_crl, build_crl(device_ca, [], at))
    ensure_gateway_keys(layout)


def ensure_gateway_keys(layout: PkiLayout) -> bool:
    """Create the fleet (ECDH) and acknowledgement (ECDSA) key pairs if missing; True if any was made.

    Two keys, one purpose each. Their public halves are what a wearable is provisioned with besides its
    own certificate. Existing keys are never replaced: every wearable's advert keys depend on the fleet key.
    """
    made = False
    for key_path, pub_path in ((layout.fleet_key, layout.fleet_public), (layout.ack_key, layout.ack_public)):
        if key_path.exists():
            continue
        key = _new_key()
        write_private_key(key_path, key, exclusive=True)
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        _write_atomic(pub_path, pem, 0o644)
        made = True
    return made


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A P-256 public key (PEM), as provisioned into wearables."""
    key = serialization.load_pem_public_key(_read(path, "public key"))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PkiError(f"{path} is not an EC public key")
    return key


def revoke_serial(layout: PkiLayout, serial: int, now: datetime | None = None, reason: str | None = None) -> bool:
    """Add a serial to revoked.json and re-sign device-ca.crl; True if newly revoked, False if it already was.

    Idempotent: a serial already listed keeps its first date and reason, and the CRL is re-signed either way
    (which also refreshes its next-update time).
    """
    at = _utc(now)
    _check_serial(serial)
    if reason is not None:
        reason = parse_reason(reason).value
    device_ca = load_device_ca(layout)
    entries = load_revoked(layout)
    added = all(e.serial != serial for e in entries)
    if added:
        entries.append(RevokedEntry(serial, at, reason))
    crl = build_crl(device_ca, entries, at)
    _write_revoked(layout, entries)
    write_crl(layout.device_ca_crl, crl)
    return added


def issue_device_files(
    layout: PkiLayout,
    device_id: str,
    now: datetime | None = None,
    *,
    valid_days: int = const.DEVICE_CERT_DAYS,
    force: bool = False,
) -> tuple[Path, Path]:
    """Enrol a simulated device: a new key, its CSR signed by the device CA, written to devices/; (cert, key).

    Refuses (PkiError) to replace an existing device key unless `force`.
    """
    key_path, cert_path = layout.device_key(device_id), layout.device_cert(device_id)
    if key_path.exists() and not force:
        raise PkiError(f"{key_path} already exists; use force to replace the device's key")
    key = _new_key()
    cert = issue_device_certificate(load_device_ca(layout), make_device_csr(device_id, key), valid_days, now)
    write_private_key(key_path, key, exclusive=not force)
    write_certificate(cert_path, cert)
    return cert_path, key_path


def verify_crl_issuer(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> None:
    """PkiError unless `crl` names `issuer` and carries its valid signature."""
    if crl.issuer != issuer.subject:
        raise PkiError(f"the CRL is issued by {crl.issuer.rfc4514_string()}, not {issuer.subject.rfc4514_string()}")
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, InvalidSignature):
        valid = False
    if not valid:
        raise PkiError(f"the CRL's signature is not {issuer.subject.rfc4514_string()}'s")
