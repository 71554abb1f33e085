"""Tests of the device PKI: CAs, certificates from CSRs, CRLs and the file layout."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import PkiError
from gateway.identity import const
from gateway.identity.pki import (
    CertAndKey,
    PkiLayout,
    RevokedEntry,
    build_crl,
    check_device_id,
    device_id_of,
    fingerprint,
    init_pki,
    issue_device_certificate,
    issue_device_files,
    issue_server_certificate,
    issue_server_files,
    load_cert_and_key,
    load_certificate,
    load_certificates,
    load_crl,
    load_csr,
    load_device_ca,
    load_private_key,
    load_revoked,
    make_device_csr,
    parse_reason,
    revoke_serial,
    write_certificate,
    write_csr,
    write_private_key,
)
from gateway.protocol.frame import _DEVICE_ID
from tests.identity import NOW, Chain, custom_leaf, device_key, make_chain, make_device


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


@pytest.fixture
def layout(tmp_path: Path) -> PkiLayout:
    pki = PkiLayout(tmp_path / "pki")
    init_pki(pki, NOW)
    return pki


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask, so only the code's own modes protect the files."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _csr(
    subject: x509.Name, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
) -> x509.CertificateSigningRequest:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, algorithm)


def _cn(value: str) -> x509.NameAttribute[str]:
    return x509.NameAttribute(NameOID.COMMON_NAME, value)


# --- CAs and chains --------------------------------------------------------------------------------------------


def test_intermediate_cas_have_path_length_zero_and_sign_only(chain: Chain) -> None:
    for ca in (chain.device_ca, chain.server_ca):
        constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical
        assert constraints.value.ca
        assert constraints.value.path_length == 0
        usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign
        assert usage.crl_sign
        assert not usage.digital_signature
        aki = ca.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        root_ski = chain.root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == root_ski.digest
        assert isinstance(ca.key.curve, ec.SECP256R1)


def test_device_chain_verifies_with_cryptography(chain: Chain) -> None:
    leaf = make_device(chain.device_ca)
    verifier = PolicyBuilder().store(Store([chain.root.cert])).time(NOW).build_client_verifier()
    verified = verifier.verify(leaf, [chain.device_ca.cert])
    assert verified.chain == [leaf, chain.device_ca.cert, chain.root.cert]
    assert verified.subjects == [x509.UniformResourceIdentifier("urn:dev:wearable-1")]


@pytest.mark.parametrize(
    "subject",
    [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ],
)
def test_server_chain_verifies_for_each_default_name(chain: Chain, subject: x509.DNSName | x509.IPAddress) -> None:
    server = issue_server_certificate(chain.server_ca, now=NOW)
    verifier = PolicyBuilder().store(Store([chain.root.cert])).time(NOW).build_server_verifier(subject)
    assert verifier.verify(server.cert, [chain.server_ca.cert])[0] == server.cert


def test_server_certificate_names_and_usage(chain: Chain) -> None:
    server = issue_server_certificate(chain.server_ca, ["gw.Site.example"], ["10.0.0.7"], 30, now=NOW)
    san = server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.site.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    eku = server.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server.cert.not_valid_after_utc == NOW + timedelta(days=30)


@pytest.mark.parametrize(("hosts", "ips"), [(["bad host"], []), ([], ["300.1.1.1"]), ([], [])])
def test_server_certificate_refuses_bad_names(chain: Chain, hosts: list[str], ips: list[str]) -> None:
    with pytest.raises(PkiError):
        issue_server_certificate(chain.server_ca, hosts, ips, now=NOW)


def test_a_ca_issues_only_its_kind(chain: Chain) -> None:
    with pytest.raises(PkiError, match="may not issue device"):
        make_device(chain.server_ca)
    with pytest.raises(PkiError, match="may not issue server"):
        issue_server_certificate(chain.device_ca, now=NOW)


def test_a_certificate_may_not_outlive_its_issuer(chain: Chain) -> None:
    with pytest.raises(PkiError, match="outlive"):
        make_device(chain.device_ca, valid_days=const.INTERMEDIATE_CA_DAYS + 1)


def test_a_leaf_cannot_issue(chain: Chain) -> None:
    server = issue_server_certificate(chain.server_ca, now=NOW)
    with pytest.raises(PkiError, match="not a CA"):
        make_device(server)


def test_a_ca_with_a_foreign_key_cannot_issue(chain: Chain) -> None:
    with pytest.raises(PkiError, match="does not belong"):
        make_device(CertAndKey(chain.device_ca.cert, chain.server_ca.key))


def test_naive_time_is_a_programming_error(chain: Chain) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_device(chain.device_ca, now=datetime(2030, 1, 1))


# --- device certificates ---------------------------------------------------------------------------------------


def test_device_certificate_from_csr(chain: Chain) -> None:
    key = device_key()
    cert = issue_device_certificate(chain.device_ca, make_device_csr("ward-3.bed_12", key), 365, NOW)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ward-3.bed_12"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:dev:ward-3.bed_12"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_agreement, "the BLE advert key is derived by ECDH with the device key"
    assert not usage.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.public_key() == key.public_key()
    assert cert.issuer == chain.device_ca.cert.subject
    assert cert.not_valid_before_utc == NOW - const.CERT_BACKDATE
    assert device_id_of(cert) == "ward-3.bed_12"


def test_device_serials_are_random(chain: Chain) -> None:
    serials = {make_device(chain.device_ca).serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(s.bit_length() > 64 for s in serials)


def test_csr_extensions_and_extra_subject_are_ignored(chain: Chain) -> None:
    key = device_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([_cn("dev-9"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mallory")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert = issue_device_certificate(chain.device_ca, csr, 30, NOW)
    assert cert.subject == x509.Name([_cn("dev-9")])
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("device_id", ["", "x" * 33, "has space", "caf\u00e9", "a/b", "a\nb"])
def test_csr_with_bad_id_is_refused(chain: Chain, device_id: str) -> None:
    with pytest.raises(PkiError, match="device id"):
        make_device_csr(device_id, device_key())
    if device_id:  # an empty CN cannot even be encoded
        with pytest.raises(PkiError, match="device id"):
            issue_device_certificate(chain.device_ca, _csr(x509.Name([_cn(device_id)]), device_key()), 30, NOW)


@pytest.mark.parametrize("names", [[], [_cn("a"), _cn("b")]])
def test_csr_needs_exactly_one_common_name(chain: Chain, names: list[x509.NameAttribute[str]]) -> None:
    with pytest.raises(PkiError, match="exactly one common name"):
        issue_device_certificate(chain.device_ca, _csr(x509.Name(names), device_key()), 30, NOW)


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), ed25519.Ed25519PrivateKey.generate()],
    ids=["p384", "ed25519"],
)
def test_csr_with_another_key_type_is_refused(
    chain: Chain, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
) -> None:
    with pytest.raises(PkiError, match="P-256"):
        issue_device_certificate(chain.device_ca, _csr(x509.Name([_cn("dev-1")]), key), 30, NOW)


def test_csr_with_bad_signature_is_refused(chain: Chain) -> None:
    der = bytearray(make_device_csr("dev-1", device_key()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the signature's s
    with pytest.raises(PkiError, match="signature does not verify"):
        issue_device_certificate(chain.device_ca, x509.load_der_x509_csr(bytes(der)), 30, NOW)


@given(st.text(max_size=40))
def test_device_id_rule_is_the_protocols(text: str) -> None:
    protocol_accepts = text.isascii() and _DEVICE_ID.fullmatch(text.encode("ascii")) is not None
    assert (const.DEVICE_ID_PATTERN.fullmatch(text) is not None) == protocol_accepts


def test_check_device_id_returns_the_id() -> None:
    assert check_device_id("A.b_c-9") == "A.b_c-9"


@pytest.mark.parametrize(
    ("cn", "uris", "match"),
    [
        ("dev-1", ("urn:dev:dev-2",), "does not match"),
        ("dev-1", ("urn:dev:dev-1", "urn:dev:dev-2"), "does not match"),
        ("dev-1", ("https://example.com/",), "does not match"),
        ("dev-1", (), "no subject alternative name"),
        ("bad id", ("urn:dev:bad id",), "device id"),
    ],
)
def test_device_id_of_needs_cn_and_uri_to_agree(chain: Chain, cn: str, uris: tuple[str, ...], match: str) -> None:
    with pytest.raises(PkiError, match=match):
        device_id_of(custom_leaf(chain.device_ca, cn, uris))


def test_device_id_of_tolerates_other_uris(chain: Chain) -> None:
    cert = custom_leaf(chain.device_ca, "dev-1", ("https://fleet.example/dev-1", "urn:dev:dev-1"))
    assert device_id_of(cert) == "dev-1"


def test_fingerprint_is_sha256_of_der(chain: Chain) -> None:
    cert = make_device(chain.device_ca)
    expected = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert fingerprint(cert) == expected


# --- CRLs ------------------------------------------------------------------------------------------------------


def test_crl_lists_entries_with_reasons(chain: Chain) -> None:
    entries = [
        RevokedEntry(11, NOW - timedelta(days=1), "keyCompromise"),
        RevokedEntry(12, NOW, "cessation_of_operation"),
        RevokedEntry(13, NOW, "unspecified"),
        RevokedEntry(14, NOW, None),
        RevokedEntry(11, NOW, "superseded"),  # a duplicate keeps its first entry
    ]
    crl = build_crl(chain.device_ca, entries, NOW, 7)
    assert crl.is_signature_valid(chain.device_ca.key.public_key())
    assert crl.issuer == chain.device_ca.cert.subject
    assert crl.next_update_utc == NOW + timedelta(days=7)
    assert sorted(r.serial_number for r in crl) == [11, 12, 13, 14]

    def reason(serial: int) -> x509.ReasonFlags | None:
        revoked = crl.get_revoked_certificate_by_serial_number(serial)
        assert revoked is not None
        try:
            return revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            return None

    assert reason(11) is x509.ReasonFlags.key_compromise
    assert reason(12) is x509.ReasonFlags.cessation_of_operation
    assert reason(13) is None
    assert reason(14) is None


def test_crl_numbers_grow(chain: Chain) -> None:
    first = build_crl(chain.device_ca, [], NOW)
    later = build_crl(chain.device_ca, [], NOW + timedelta(seconds=1))
    number = x509.CRLNumber
    assert (
        later.extensions.get_extension_for_class(number).value.crl_number
        > first.extensions.get_extension_for_class(number).value.crl_number
    )


@pytest.mark.parametrize("entry", [RevokedEntry(0, NOW), RevokedEntry(1, NOW, "because"), RevokedEntry(1 << 159, NOW)])
def test_crl_refuses_bad_entries(chain: Chain, entry: RevokedEntry) -> None:
    with pytest.raises(PkiError):
        build_crl(chain.device_ca, [entry], NOW)


def test_parse_reason_refuses_remove_from_crl() -> None:
    assert parse_reason("keyCompromise") is x509.ReasonFlags.key_compromise
    with pytest.raises(PkiError, match="unknown revocation reason"):
        parse_reason("removeFromCRL")


# --- files -----------------------------------------------------------------------------------------------------


def test_init_creates_every_file_with_private_keys_0600(tmp_path: Path, umask_zero: None) -> None:
    layout = PkiLayout(tmp_path / "pki")
    init_pki(layout, NOW)
    for path in layout.pki_files:
        expected = const.KEY_FILE_MODE if path.suffix == ".key" else const.PUBLIC_FILE_MODE
        assert _mode(path) == expected, path
    assert sorted(p.name for p in layout.directory.iterdir()) == sorted(p.name for p in layout.pki_files)
    root = load_certificate(layout.root_ca_cert)
    for cert_path in (layout.device_ca_cert, layout.server_ca_cert):
        load_certificate(cert_path).verify_directly_issued_by(root)
    load_certificate(layout.server_cert).verify_directly_issued_by(load_certificate(layout.server_ca_cert))
    crl = load_crl(layout.device_ca_crl)
    assert len(crl) == 0
    assert crl.is_signature_valid(load_device_ca(layout).key.public_key())
    assert load_revoked(layout) == []


def test_keys_stay_0600_and_certs_0644_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_private_key(tmp_path / "k.key", device_key())
        write_certificate(tmp_path / "c.crt", make_chain().root.cert)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k.key") == 0o600
    assert _mode(tmp_path / "c.crt") == 0o644


def test_rewriting_a_key_keeps_it_private_and_leaves_no_temporary(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "k.key"
    path.write_text("old")
    path.chmod(0o644)
    key = device_key()
    write_private_key(path, key)
    assert _mode(path) == 0o600
    assert load_private_key(path).private_numbers() == key.private_numbers()
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


def test_exclusive_write_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text("keep me")
    with pytest.raises(PkiError, match="already exists"):
        write_private_key(path, device_key(), exclusive=True)
    assert path.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


def test_init_refuses_an_existing_pki_unless_forced(layout: PkiLayout) -> None:
    root = layout.root_ca_cert.read_bytes()
    with pytest.raises(PkiError, match="already holds a PKI"):
        init_pki(layout, NOW)
    assert layout.root_ca_cert.read_bytes() == root
    init_pki(layout, NOW, force=True)
    assert layout.root_ca_cert.read_bytes() != root


def test_init_refuses_a_partial_pki(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path)
    layout.device_ca_key.write_text("someone's key")
    with pytest.raises(PkiError, match=r"device-ca\.key"):
        init_pki(layout, NOW)
    assert layout.device_ca_key.read_text() == "someone's key"


def test_issue_device_files(layout: PkiLayout, umask_zero: None) -> None:
    cert_path, key_path = issue_device_files(layout, "dev-7", NOW)
    assert (cert_path, key_path) == (layout.devices_dir / "dev-7.crt", layout.devices_dir / "dev-7.key")
    assert _mode(key_path) == 0o600
    pair = load_cert_and_key(cert_path, key_path)
    assert device_id_of(pair.cert) == "dev-7"
    pair.cert.verify_directly_issued_by(load_certificate(layout.device_ca_cert))
    with pytest.raises(PkiError, match="already exists"):
        issue_device_files(layout, "dev-7", NOW)
    assert load_private_key(key_path).private_numbers() == pair.key.private_numbers()
    issue_device_files(layout, "dev-7", NOW, force=True)
    assert load_private_key(key_path).private_numbers() != pair.key.private_numbers()


def test_issue_device_files_refuses_bad_ids(layout: PkiLayout) -> None:
    with pytest.raises(PkiError, match="device id"):
        issue_device_files(layout, "../escape", NOW)
    assert not layout.devices_dir.exists()


def test_issue_server_files_replaces_the_server_certificate(layout: PkiLayout) -> None:
    before = load_certificate(layout.server_cert)
    cert_path, key_path = issue_server_files(layout, ["gw.example"], [], NOW)
    pair = load_cert_and_key(cert_path, key_path)
    assert pair.cert != before
    san = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example"]


def test_revoke_serial_is_idempotent_and_rewrites_the_crl(layout: PkiLayout) -> None:
    assert revoke_serial(layout, 0xABC, NOW, "key_compromise")
    assert not revoke_serial(layout, 0xABC, NOW + timedelta(hours=1), "superseded")
    assert revoke_serial(layout, 0xDEF, NOW + timedelta(hours=2))
    assert load_revoked(layout) == [
        RevokedEntry(0xABC, NOW, "keyCompromise"),
        RevokedEntry(0xDEF, NOW + timedelta(hours=2), None),
    ]
    document = json.loads(layout.revoked_list.read_text())
    assert document["revoked"][0]["serial"] == "0xabc"
    crl = load_crl(layout.device_ca_crl)
    assert sorted(r.serial_number for r in crl) == [0xABC, 0xDEF]
    assert crl.last_update_utc == NOW + timedelta(hours=2)
    assert crl.is_signature_valid(load_device_ca(layout).key.public_key())


def test_revoke_serial_refuses_a_bad_reason_without_writing(layout: PkiLayout) -> None:
    crl = layout.device_ca_crl.read_bytes()
    with pytest.raises(PkiError, match="unknown revocation reason"):
        revoke_serial(layout, 5, NOW, "lost it")
    assert layout.device_ca_crl.read_bytes() == crl
    assert load_revoked(layout) == []


@pytest.mark.parametrize(
    "content",
    ['{"version": 2, "revoked": []}', '{"version": 1, "revoked": [{"serial": 5}]}', "not json", "[]"],
)
def test_a_corrupt_revoked_list_is_an_error(layout: PkiLayout, content: str) -> None:
    layout.revoked_list.write_text(content)
    with pytest.raises(PkiError, match=r"revoked\.json"):
        revoke_serial(layout, 5, NOW)


def test_loaders_read_pem_and_der(tmp_path: Path, chain: Chain) -> None:
    der = tmp_path / "root.der"
    der.write_bytes(chain.root.cert.public_bytes(serialization.Encoding.DER))
    assert load_certificate(der) == chain.root.cert
    key_der = tmp_path / "key.der"
    key_der.write_bytes(
        chain.root.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert load_private_key(key_der).private_numbers() == chain.root.key.private_numbers()
    csr = make_device_csr("dev-1", device_key())
    write_csr(tmp_path / "dev.csr", csr)
    assert load_csr(tmp_path / "dev.csr") == csr


@pytest.mark.parametrize("loader", [load_certificate, load_private_key, load_csr, load_crl])
def test_loaders_report_missing_and_garbage_files(tmp_path: Path, loader: object) -> None:
    assert callable(loader)
    with pytest.raises(PkiError, match="no such"):
        loader(tmp_path / "absent")
    (tmp_path / "garbage").write_bytes(b"-----BEGIN nonsense")
    with pytest.raises(PkiError, match="not a"):
        loader(tmp_path / "garbage")


def test_load_private_key_refuses_other_key_types_without_echoing_them(tmp_path: Path) -> None:
    path = tmp_path / "ed.key"
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    with pytest.raises(PkiError, match="not an elliptic-curve private key") as caught:
        load_private_key(path)
    assert "PRIVATE" not in str(caught.value)


def test_load_cert_and_key_refuses_a_foreign_key(layout: PkiLayout) -> None:
    with pytest.raises(PkiError, match="is not the private key"):
        load_cert_and_key(layout.device_ca_cert, layout.server_ca_key)


def test_layout_paths_are_in_the_directory(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path)
    assert {p.parent for p in layout.pki_files} == {tmp_path}
    assert layout.device_cert("d1") == tmp_path / "devices" / "d1.crt"


@pytest.mark.parametrize("days", [0, -1, const.MAX_VALID_DAYS + 1, 10**9])
def test_absurd_validity_is_refused(chain: Chain, days: int) -> None:
    with pytest.raises(PkiError, match="validity"):
        make_device(chain.device_ca, valid_days=days)
    with pytest.raises(PkiError, match="next update"):
        build_crl(chain.device_ca, [], NOW, days)


def test_server_crt_carries_the_chain_a_tls_client_needs(layout: PkiLayout) -> None:
    server, server_ca = load_certificates(layout.server_cert)
    assert server_ca == load_certificate(layout.server_ca_cert)
    assert server == load_certificate(layout.server_cert)
    verifier = (
        PolicyBuilder()
        .store(Store([load_certificate(layout.root_ca_cert)]))
        .time(NOW)
        .build_server_verifier(x509.DNSName("localhost"))
    )
    assert verifier.verify(server, [server_ca])[-1] == load_certificate(layout.root_ca_cert)
