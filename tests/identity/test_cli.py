"""Tests of the `pki` commands, run through argparse and their `func` like panic-gateway runs them."""

from __future__ import annotations

import argparse
import ipaddress
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from gateway.identity.cli import EXIT_ERROR, add_pki_commands
from gateway.identity.pki import (
    PkiLayout,
    create_root_ca,
    device_id_of,
    load_certificate,
    load_crl,
    load_device_ca,
    load_revoked,
    make_device_csr,
    write_certificate,
    write_csr,
)
from tests.identity import device_key


@pytest.fixture
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panic-gateway")
    add_pki_commands(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture
def layout(tmp_path: Path) -> PkiLayout:
    return PkiLayout(tmp_path / "pki")


class Run:
    """Runs one command line and keeps what it printed."""

    def __init__(self, parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str], layout: PkiLayout) -> None:
        self._parser = parser
        self._capsys = capsys
        self._dir = str(layout.directory)
        self.out = ""
        self.err = ""

    def __call__(self, *argv: str) -> int:
        args = self._parser.parse_args(["pki", *argv, "--dir", self._dir])
        code = args.func(args)
        assert isinstance(code, int)
        self.out, self.err = self._capsys.readouterr()
        # Whatever happened, no key ever reaches the terminal.
        assert "PRIVATE KEY" not in self.out + self.err
        return code

    def assert_one_error(self, fragment: str) -> None:
        assert self.err.startswith("error: "), self.err
        assert self.err.count("\n") == 1, self.err
        assert "Traceback" not in self.err
        assert fragment in self.err, self.err


@pytest.fixture
def run(parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str], layout: PkiLayout) -> Run:
    return Run(parser, capsys, layout)


@pytest.fixture
def initialised(run: Run) -> Run:
    assert run("init") == 0
    return run


def test_init_then_refuse_then_force(run: Run, layout: PkiLayout) -> None:
    assert run("init") == 0
    assert str(layout.root_ca_cert) in run.out
    assert stat.S_IMODE(layout.device_ca_key.stat().st_mode) == 0o600
    root = layout.root_ca_cert.read_bytes()

    assert run("init") == EXIT_ERROR
    run.assert_one_error("already holds a PKI")
    assert layout.root_ca_cert.read_bytes() == root

    assert run("init", "--force") == 0
    assert layout.root_ca_cert.read_bytes() != root


def test_init_into_a_file_fails_cleanly(
    parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = parser.parse_args(["pki", "init", "--dir", str(blocker)])
    assert args.func(args) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1


def test_commands_without_a_pki_fail_cleanly(run: Run) -> None:
    assert run("device-key", "dev-1") == EXIT_ERROR
    run.assert_one_error("no such certificate file")
    assert run("revoke-serial", "5") == EXIT_ERROR
    run.assert_one_error("no such")


def test_server_cert(initialised: Run, layout: PkiLayout) -> None:
    run = initialised
    assert run("server-cert", "--host", "gw.example", "mqtt.example", "--ip", "10.1.2.3", "--ip", "fd00::1") == 0
    assert "gw.example, mqtt.example, 10.1.2.3, fd00::1" in run.out
    san = load_certificate(layout.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example", "mqtt.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("fd00::1"),
    ]
    assert stat.S_IMODE(layout.server_key.stat().st_mode) == 0o600


def test_server_cert_defaults_to_localhost(initialised: Run, layout: PkiLayout) -> None:
    assert initialised("server-cert") == 0
    san = load_certificate(layout.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_server_cert_refuses_a_bad_address(initialised: Run, layout: PkiLayout) -> None:
    before = layout.server_cert.read_bytes()
    assert initialised("server-cert", "--ip", "not-an-ip") == EXIT_ERROR
    initialised.assert_one_error("not an IPv4 or IPv6 address")
    assert layout.server_cert.read_bytes() == before


def test_issue_from_a_csr(initialised: Run, layout: PkiLayout, tmp_path: Path) -> None:
    csr_path, out = tmp_path / "dev.csr", tmp_path / "out" / "dev.crt"
    write_csr(csr_path, make_device_csr("field-unit-9", device_key()))
    assert initialised("issue", "--csr", str(csr_path), "--out", str(out), "--days", "30") == 0
    cert = load_certificate(out)
    assert device_id_of(cert) == "field-unit-9"
    assert f"{cert.serial_number:#x}" in initialised.out
    cert.verify_directly_issued_by(load_device_ca(layout).cert)


def test_issue_refuses_a_bad_csr(initialised: Run, tmp_path: Path) -> None:
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no spaces allowed")])
    )
    csr_path = tmp_path / "bad.csr"
    write_csr(csr_path, csr.sign(device_key(), hashes.SHA256()))
    assert initialised("issue", "--csr", str(csr_path), "--out", str(tmp_path / "x.crt")) == EXIT_ERROR
    initialised.assert_one_error("device id")
    assert not (tmp_path / "x.crt").exists()

    (tmp_path / "garbage.csr").write_text("hello")
    assert initialised("issue", "--csr", str(tmp_path / "garbage.csr"), "--out", str(tmp_path / "x.crt")) == EXIT_ERROR
    initialised.assert_one_error("not a PEM or DER certificate signing request")


def test_device_key(initialised: Run, layout: PkiLayout) -> None:
    run = initialised
    assert run("device-key", "dev-1") == 0
    assert str(layout.device_cert("dev-1")) in run.out
    assert str(layout.device_key("dev-1")) in run.out
    assert stat.S_IMODE(layout.device_key("dev-1").stat().st_mode) == 0o600
    assert run("device-key", "dev-1") == EXIT_ERROR
    run.assert_one_error("already exists")
    assert run("device-key", "dev-1", "--force") == 0
    assert run("device-key", "bad/id") == EXIT_ERROR
    run.assert_one_error("device id")


def test_revoke_serial_and_show(initialised: Run, layout: PkiLayout) -> None:
    run = initialised
    assert run("device-key", "dev-1") == 0
    serial = load_certificate(layout.device_cert("dev-1")).serial_number
    assert run("revoke-serial", hex(serial), "--reason", "keyCompromise") == 0
    assert "revoked" in run.out
    assert run("revoke-serial", str(serial)) == 0
    assert "already revoked" in run.out
    colon_hex = ":".join(f"{b:02x}" for b in serial.to_bytes(20, "big").lstrip(b"\0"))
    assert run("revoke-serial", colon_hex) == 0
    assert "already revoked" in run.out
    assert [e.serial for e in load_revoked(layout)] == [serial]
    assert [r.serial_number for r in load_crl(layout.device_ca_crl)] == [serial]

    assert run("show") == 0
    for fragment in ("root CA: CN=Panic Gateway Root CA", "device CA:", "server CA:", "server:", "CRL: 1 revoked"):
        assert fragment in run.out
    assert load_device_ca(layout).cert.fingerprint(hashes.SHA256()).hex() in run.out
    assert "simulated devices: 1" in run.out


def test_revoke_serial_refuses_a_bad_reason(initialised: Run) -> None:
    assert initialised("revoke-serial", "0x10", "--reason", "bored") == EXIT_ERROR
    initialised.assert_one_error("unknown revocation reason")


def test_a_bad_serial_is_a_usage_error(parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["pki", "revoke-serial", "twelve"])
    assert exit_info.value.code == 2
    assert "is not a serial" in capsys.readouterr().err


def test_show_on_an_empty_directory(run: Run) -> None:
    assert run("show") == 0
    assert "root CA: missing" in run.out
    assert "CRL: missing" in run.out


def test_show_flags_expired_certificates(run: Run, layout: PkiLayout) -> None:
    # `show` reads the real clock: a root made in 2001 for one year is long expired.
    old = create_root_ca("Old Root", 365, now=datetime(2001, 1, 1, tzinfo=UTC))
    write_certificate(layout.root_ca_cert, old.cert)
    assert run("show") == 0
    assert "root CA: CN=Old Root" in run.out
    assert "EXPIRED" in run.out
    assert "device CA: missing" in run.out


def test_every_leaf_has_a_func(parser: argparse.ArgumentParser) -> None:
    for argv in (
        ["init"],
        ["server-cert"],
        ["issue", "--csr", "a", "--out", "b"],
        ["device-key", "d"],
        ["revoke-serial", "1"],
        ["show"],
    ):
        args = parser.parse_args(["pki", *argv])
        assert callable(args.func)
        assert args.dir == Path("certs/dev")


def test_absurd_days_fail_cleanly(initialised: Run) -> None:
    assert initialised("device-key", "dev-1", "--days", "999999999") == EXIT_ERROR
    initialised.assert_one_error("validity")
