"""Tests of gateway.identity, and the factories they share: PKIs made at test time, never read from disk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.identity.pki import (
    CaKind,
    CertAndKey,
    create_intermediate_ca,
    create_root_ca,
    issue_device_certificate,
    make_device_csr,
)

#: A fixed "now": every certificate is dated from it, so time-dependent tests are exact.
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Chain:
    """A root with a device CA and a server CA under it."""

    root: CertAndKey
    device_ca: CertAndKey
    server_ca: CertAndKey


def make_chain(now: datetime = NOW, prefix: str = "Test") -> Chain:
    root = create_root_ca(f"{prefix} Root CA", now=now)
    return Chain(
        root=root,
        device_ca=create_intermediate_ca(root, f"{prefix} Device CA", CaKind.DEVICE, now=now),
        server_ca=create_intermediate_ca(root, f"{prefix} Server CA", CaKind.SERVER, now=now),
    )


def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_device(
    ca: CertAndKey, device_id: str = "wearable-1", now: datetime = NOW, valid_days: int = 365
) -> x509.Certificate:
    """A device certificate through the real CSR path."""
    return issue_device_certificate(ca, make_device_csr(device_id, device_key()), valid_days, now)


def custom_leaf(
    ca: CertAndKey,
    common_name: str = "wearable-1",
    uris: tuple[str, ...] = ("urn:dev:wearable-1",),
    eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
    key: ec.EllipticCurvePrivateKey | None = None,
    now: datetime = NOW,
) -> x509.Certificate:
    """A leaf the CA functions would refuse to make (wrong EKU, mismatched names, other curve)."""
    public_key = (key or device_key()).public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    return builder.sign(ca.key, hashes.SHA256())
