"""Tests of DeviceTrust: chains, validity windows, revocation, CRL checks and the verification cache."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.config import PkiSettings
from gateway.errors import PkiError
from gateway.identity.pki import (
    CaKind,
    PkiLayout,
    RevokedEntry,
    build_crl,
    create_intermediate_ca,
    fingerprint,
    init_pki,
    issue_device_files,
    load_certificate,
    load_crl,
    revoke_serial,
)
from gateway.identity.trust import DeviceIdentity, DeviceTrust, TrustPaths, load_device_trust
from gateway.rejection import Rejection, RejectReason
from tests.identity import NOW, Chain, custom_leaf, make_chain, make_device


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


@pytest.fixture
def trust(chain: Chain) -> DeviceTrust:
    return DeviceTrust(chain.root.cert, chain.device_ca.cert, build_crl(chain.device_ca, [], NOW))


@pytest.fixture
def layout(tmp_path: Path) -> PkiLayout:
    pki = PkiLayout(tmp_path / "pki")
    init_pki(pki, NOW)
    return pki


def _rejected(result: DeviceIdentity | Rejection, reason: RejectReason, match: str) -> None:
    assert isinstance(result, Rejection), result
    assert result.reason is reason
    assert match in result.detail, result.detail


def test_a_device_certificate_verifies(trust: DeviceTrust, chain: Chain) -> None:
    cert = make_device(chain.device_ca, "dev-42")
    identity = trust.verify(cert, NOW)
    assert isinstance(identity, DeviceIdentity)
    assert identity.device_id == "dev-42"
    assert identity.fingerprint == fingerprint(cert)
    assert identity.serial == cert.serial_number
    assert (identity.not_before, identity.not_after) == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    assert identity.public_key == cert.public_key()


def test_verification_is_cached_by_fingerprint(trust: DeviceTrust, chain: Chain) -> None:
    cert = make_device(chain.device_ca)
    first = trust.verify(cert, NOW)
    assert trust.cached == 1
    assert trust.verify(cert, NOW + timedelta(hours=1)) is first
    assert trust.verify_der(cert.public_bytes(serialization.Encoding.DER), NOW) is first
    assert trust.cached == 1


def test_verify_der_parses_on_a_miss(trust: DeviceTrust, chain: Chain) -> None:
    cert = make_device(chain.device_ca, "dev-der")
    identity = trust.verify_der(cert.public_bytes(serialization.Encoding.DER), NOW)
    assert isinstance(identity, DeviceIdentity)
    assert identity.device_id == "dev-der"
    _rejected(trust.verify_der(b"\x30\x03garbage", NOW), RejectReason.CERT_INVALID, "not valid DER")


def test_the_cache_is_bounded(chain: Chain) -> None:
    trust = DeviceTrust(chain.root.cert, chain.device_ca.cert, cache_size=2)
    certs = [make_device(chain.device_ca, f"dev-{i}") for i in range(3)]
    for cert in certs:
        assert isinstance(trust.verify(cert, NOW), DeviceIdentity)
    assert trust.cached == 2
    uncached = DeviceTrust(chain.root.cert, chain.device_ca.cert, cache_size=0)
    assert isinstance(uncached.verify(certs[0], NOW), DeviceIdentity)
    assert uncached.cached == 0


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "cached"])
def test_expired_and_not_yet_valid_are_rejected(trust: DeviceTrust, chain: Chain, warm: bool) -> None:
    cert = make_device(chain.device_ca, valid_days=30)
    if warm:
        assert isinstance(trust.verify(cert, NOW), DeviceIdentity)
    _rejected(trust.verify(cert, NOW + timedelta(days=31)), RejectReason.CERT_INVALID, "expired")
    _rejected(trust.verify(cert, NOW - timedelta(hours=1)), RejectReason.CERT_INVALID, "not valid before")
    assert isinstance(trust.verify(cert, NOW + timedelta(days=29)), DeviceIdentity)


def test_a_cached_certificate_is_rejected_outside_its_cas_window(chain: Chain) -> None:
    # A device CA made a day after the root, issuing a certificate back-dated before the CA existed.
    late_ca = create_intermediate_ca(chain.root, "Late Device CA", CaKind.DEVICE, now=NOW + timedelta(days=1))
    cert = make_device(late_ca, now=NOW)
    trust = DeviceTrust(chain.root.cert, late_ca.cert)
    assert isinstance(trust.verify(cert, NOW + timedelta(days=2)), DeviceIdentity)
    _rejected(trust.verify(cert, NOW + timedelta(hours=12)), RejectReason.CERT_INVALID, "CA certificate")


def test_a_certificate_from_another_pki_is_rejected(trust: DeviceTrust) -> None:
    # Same CA names, different keys: only signatures tell them apart.
    stranger = make_device(make_chain().device_ca)
    _rejected(trust.verify(stranger, NOW), RejectReason.CERT_INVALID, "does not chain")


def test_a_certificate_signed_by_the_root_itself_is_rejected(trust: DeviceTrust, chain: Chain) -> None:
    _rejected(trust.verify(custom_leaf(chain.root), NOW), RejectReason.CERT_INVALID, "not issued by the device CA")


def test_a_client_certificate_from_the_server_ca_is_rejected(trust: DeviceTrust, chain: Chain) -> None:
    _rejected(trust.verify(custom_leaf(chain.server_ca), NOW), RejectReason.CERT_INVALID, "does not chain")


def test_a_certificate_without_client_auth_is_rejected(trust: DeviceTrust, chain: Chain) -> None:
    cert = custom_leaf(chain.device_ca, eku=ExtendedKeyUsageOID.SERVER_AUTH)
    _rejected(trust.verify(cert, NOW), RejectReason.CERT_INVALID, "EKU")


def test_a_certificate_whose_names_disagree_is_rejected(trust: DeviceTrust, chain: Chain) -> None:
    cert = custom_leaf(chain.device_ca, "dev-1", ("urn:dev:dev-2",))
    _rejected(trust.verify(cert, NOW), RejectReason.CERT_INVALID, "does not match")


def test_a_certificate_with_another_curve_is_rejected(trust: DeviceTrust, chain: Chain) -> None:
    cert = custom_leaf(chain.device_ca, key=ec.generate_private_key(ec.SECP384R1()))
    _rejected(trust.verify(cert, NOW), RejectReason.CERT_INVALID, "P-256")


def test_verify_needs_an_aware_now(trust: DeviceTrust, chain: Chain) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        trust.verify(make_device(chain.device_ca), datetime(2030, 6, 1))


def test_a_revoked_serial_is_rejected_even_when_cached(trust: DeviceTrust, chain: Chain) -> None:
    cert = make_device(chain.device_ca)
    assert isinstance(trust.verify(cert, NOW), DeviceIdentity)
    trust.update_crl(build_crl(chain.device_ca, [RevokedEntry(cert.serial_number, NOW)], NOW + timedelta(minutes=1)))
    assert trust.is_revoked(cert.serial_number)
    _rejected(trust.verify(cert, NOW + timedelta(minutes=2)), RejectReason.REVOKED, "revoked")
    fresh = DeviceTrust(chain.root.cert, chain.device_ca.cert, trust.crl)
    _rejected(fresh.verify(cert, NOW), RejectReason.REVOKED, "revoked")


def test_revoke_serial_then_crl_reload(layout: PkiLayout) -> None:
    cert_path, _ = issue_device_files(layout, "dev-1", NOW)
    other_path, _ = issue_device_files(layout, "dev-2", NOW)
    trust = load_device_trust(layout)
    cert, other = load_certificate(cert_path), load_certificate(other_path)
    assert isinstance(trust.verify(cert, NOW), DeviceIdentity)

    revoke_serial(layout, cert.serial_number, NOW + timedelta(minutes=1), "keyCompromise")
    # The old CRL is still in use until the gateway reloads it.
    assert isinstance(trust.verify(cert, NOW + timedelta(minutes=2)), DeviceIdentity)
    trust.update_crl(load_crl(layout.device_ca_crl))
    _rejected(trust.verify(cert, NOW + timedelta(minutes=2)), RejectReason.REVOKED, "dev-1")
    assert isinstance(trust.verify(other, NOW + timedelta(minutes=2)), DeviceIdentity)
    _rejected(load_device_trust(layout).verify(cert, NOW), RejectReason.REVOKED, "revoked")


def test_a_crl_signed_by_another_ca_is_refused(trust: DeviceTrust, chain: Chain) -> None:
    forged = build_crl(make_chain().device_ca, [], NOW + timedelta(minutes=1))  # same issuer name, other key
    with pytest.raises(PkiError, match="signature"):
        trust.update_crl(forged)
    with pytest.raises(PkiError, match="signature"):
        DeviceTrust(chain.root.cert, chain.device_ca.cert, forged)
    with pytest.raises(PkiError, match="issued by"):
        trust.update_crl(build_crl(chain.server_ca, [], NOW + timedelta(minutes=1)))


def test_a_refused_crl_leaves_the_old_one_in_use(trust: DeviceTrust, chain: Chain) -> None:
    cert = make_device(chain.device_ca)
    trust.update_crl(build_crl(chain.device_ca, [RevokedEntry(cert.serial_number, NOW)], NOW + timedelta(minutes=1)))
    forged = build_crl(make_chain().device_ca, [], NOW + timedelta(minutes=2))
    with pytest.raises(PkiError):
        trust.update_crl(forged)
    assert trust.is_revoked(cert.serial_number)


def test_an_older_crl_cannot_replace_a_newer_one(trust: DeviceTrust, chain: Chain) -> None:
    newer = build_crl(chain.device_ca, [RevokedEntry(77, NOW)], NOW + timedelta(hours=1))
    trust.update_crl(newer)
    with pytest.raises(PkiError, match="older"):
        trust.update_crl(build_crl(chain.device_ca, [], NOW))
    assert trust.is_revoked(77)


def test_crl_staleness(chain: Chain, trust: DeviceTrust) -> None:
    assert not trust.crl_is_stale(NOW)
    assert trust.crl_is_stale(NOW + timedelta(days=31))
    assert DeviceTrust(chain.root.cert, chain.device_ca.cert).crl_is_stale(NOW)


def test_a_device_ca_from_another_root_is_refused(chain: Chain) -> None:
    with pytest.raises(PkiError, match="root CA"):
        DeviceTrust(make_chain().root.cert, chain.device_ca.cert)
    with pytest.raises(PkiError, match="not issued by the root"):
        DeviceTrust(make_chain(prefix="Other").root.cert, chain.device_ca.cert)


def test_load_device_trust_from_settings_and_paths(layout: PkiLayout) -> None:
    cert_path, _ = issue_device_files(layout, "dev-1", NOW)
    cert = load_certificate(cert_path)
    for source in (
        PkiSettings(directory=layout.directory),
        PkiSettings(
            directory=Path("/nonexistent"),
            root_ca_cert=layout.root_ca_cert,
            device_ca_cert=layout.device_ca_cert,
            crl_file=layout.device_ca_crl,
        ),
        TrustPaths(layout.root_ca_cert, layout.device_ca_cert),
    ):
        assert isinstance(load_device_trust(source).verify(cert, NOW), DeviceIdentity), source


def test_load_device_trust_needs_the_crl_of_a_layout(layout: PkiLayout) -> None:
    layout.device_ca_crl.unlink()
    with pytest.raises(PkiError, match="no such CRL"):
        load_device_trust(layout)


def test_load_device_trust_refuses_a_foreign_crl(layout: PkiLayout, tmp_path: Path) -> None:
    other = PkiLayout(tmp_path / "other")
    init_pki(other, NOW)
    with pytest.raises(PkiError, match="signature"):
        load_device_trust(TrustPaths(layout.root_ca_cert, layout.device_ca_cert, other.device_ca_crl))


def test_the_server_certificate_is_not_a_device(layout: PkiLayout) -> None:
    trust = load_device_trust(layout)
    server = load_certificate(layout.server_cert)
    _rejected(trust.verify(server, NOW), RejectReason.CERT_INVALID, "does not chain")


def test_rejections_name_no_key_material(trust: DeviceTrust, chain: Chain) -> None:
    result = trust.verify(custom_leaf(chain.root), NOW)
    assert isinstance(result, Rejection)
    pem = chain.root.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert "PRIVATE" not in result.detail
    assert pem not in result.detail
