"""The `panic-gateway pki` commands: create the PKI, issue server and device certificates, revoke, show."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path

from cryptography import x509

from gateway.errors import PkiError
from gateway.identity import const
from gateway.identity.pki import (
    PkiLayout,
    device_id_of,
    fingerprint,
    init_pki,
    issue_device_certificate,
    issue_device_files,
    issue_server_files,
    load_certificate,
    load_crl,
    load_csr,
    load_device_ca,
    load_revoked,
    revoke_serial,
    write_certificate,
)

#: Exit code of a refused command (the same as argparse's for a usage error).
EXIT_ERROR = 2

Command = Callable[[argparse.Namespace], int]


def _command(body: Callable[[argparse.Namespace, PkiLayout, datetime], None]) -> Command:
    """Give a command its layout and the time, and turn every expected failure into one `error:` line."""

    @wraps(body)
    def run(args: argparse.Namespace) -> int:
        try:
            # The CLI is the edge: the one place that reads the clock for the pure PKI functions.
            body(args, PkiLayout(args.dir), datetime.now(UTC))
        except PkiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR
        return 0

    return run


def _describe(label: str, cert: x509.Certificate) -> None:
    print(f"{label}: {cert.subject.rfc4514_string()}")
    print(f"  serial      {cert.serial_number:#x}")
    print(f"  expires     {cert.not_valid_after_utc.isoformat()}")
    print(f"  sha256      {fingerprint(cert)}")


@_command
def _init(args: argparse.Namespace, layout: PkiLayout, now: datetime) -> None:
    init_pki(layout, now, force=args.force)
    print(f"created a PKI in {layout.directory}")
    for path in layout.pki_files:
        print(f"  {path}")


@_command
def _server_cert(args: argparse.Namespace, layout: PkiLayout, now: datetime) -> None:
    hosts: list[str] = args.host or []
    ips: list[str] = args.ip or []
    if not hosts and not ips:
        hosts, ips = ["localhost"], ["127.0.0.1", "::1"]
    cert_path, key_path = issue_server_files(layout, hosts, ips, now, args.days)
    print(f"server certificate for {', '.join(hosts + ips)}")
    print(f"  certificate {cert_path}")
    print(f"  key         {key_path}")


@_command
def _issue(args: argparse.Namespace, layout: PkiLayout, now: datetime) -> None:
    cert = issue_device_certificate(load_device_ca(layout), load_csr(args.csr), args.days, now)
    write_certificate(args.out, cert)
    print(f"issued device {device_id_of(cert)}, serial {cert.serial_number:#x}, to {args.out}")


@_command
def _device_key(args: argparse.Namespace, layout: PkiLayout, now: datetime) -> None:
    cert_path, key_path = issue_device_files(layout, args.device_id, now, valid_days=args.days, force=args.force)
    print(f"certificate {cert_path}")
    print(f"key         {key_path}")


def _serial(text: str) -> int:
    try:
        return int(text.replace(":", ""), 16) if ":" in text else int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a serial (decimal, 0x-hex or colon-separated hex)") from None


@_command
def _revoke_serial(args: argparse.Namespace, layout: PkiLayout, now: datetime) -> None:
    added = revoke_serial(layout, args.serial, now, args.reason)
    state = "revoked" if added else "was already revoked"
    print(f"serial {args.serial:#x} {state}; CRL rewritten: {layout.device_ca_crl}")


@_command
def _show(args: argparse.Namespace, layout: PkiLayout, now: datetime) -> None:
    print(f"PKI in {layout.directory}")
    for label, path in (
        ("root CA", layout.root_ca_cert),
        ("device CA", layout.device_ca_cert),
        ("server CA", layout.server_ca_cert),
        ("server", layout.server_cert),
    ):
        if not path.exists():
            print(f"{label}: missing ({path})")
            continue
        cert = load_certificate(path)
        _describe(label, cert)
        if cert.not_valid_after_utc < now:
            print("  EXPIRED")
    if layout.device_ca_crl.exists():
        crl = load_crl(layout.device_ca_crl)
        next_update = crl.next_update_utc.isoformat() if crl.next_update_utc else "never"
        print(f"CRL: {len(crl)} revoked, next update {next_update}")
    else:
        print(f"CRL: missing ({layout.device_ca_crl})")
    print(f"revoked.json: {len(load_revoked(layout))} entries")
    devices = sorted(layout.devices_dir.glob("*.crt")) if layout.devices_dir.is_dir() else []
    print(f"simulated devices: {len(devices)}")


def _dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, default=const.DEFAULT_PKI_DIR, help=f"PKI directory (default {const.DEFAULT_PKI_DIR})"
    )


def add_pki_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `pki` and its subcommands; each leaf sets `func(args) -> exit code`."""
    pki = subparsers.add_parser("pki", help="device PKI: CAs, server and device certificates, revocation")
    commands = pki.add_subparsers(dest="pki_command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create root, device and server CAs, a localhost server cert, a CRL")
    _dir_option(init)
    init.add_argument("--force", action="store_true", help="replace an existing PKI (old devices stop verifying)")
    init.set_defaults(func=_init)

    server = commands.add_parser("server-cert", help="issue server.crt/.key for the gateway or the broker")
    server.add_argument("--host", nargs="+", action="extend", metavar="NAME", help="DNS name(s) for the SAN")
    server.add_argument("--ip", nargs="+", action="extend", metavar="ADDR", help="IP address(es) for the SAN")
    server.add_argument("--days", type=int, default=const.SERVER_CERT_DAYS, help="validity in days")
    _dir_option(server)
    server.set_defaults(func=_server_cert)

    issue = commands.add_parser("issue", help="sign a device's CSR with the device CA")
    issue.add_argument("--csr", type=Path, required=True, metavar="FILE", help="the device's CSR (PEM or DER)")
    issue.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the certificate")
    issue.add_argument("--days", type=int, default=const.DEVICE_CERT_DAYS, help="validity in days")
    _dir_option(issue)
    issue.set_defaults(func=_issue)

    device = commands.add_parser("device-key", help="key and certificate for a simulated device, under devices/")
    device.add_argument("device_id", metavar="DEVICE_ID", help="1-32 chars of [A-Za-z0-9._-]")
    device.add_argument("--days", type=int, default=const.DEVICE_CERT_DAYS, help="validity in days")
    device.add_argument("--force", action="store_true", help="replace the device's existing key")
    _dir_option(device)
    device.set_defaults(func=_device_key)

    revoke = commands.add_parser("revoke-serial", help="revoke a device certificate and rewrite the CRL")
    revoke.add_argument("serial", type=_serial, metavar="SERIAL", help="decimal, 0x-hex or aa:bb:.. hex")
    revoke.add_argument("--reason", metavar="R", help="RFC 5280 reason, e.g. keyCompromise, cessationOfOperation")
    _dir_option(revoke)
    revoke.set_defaults(func=_revoke_serial)

    show = commands.add_parser("show", help="subjects, expiry, fingerprints and revocations of the PKI")
    _dir_option(show)
    show.set_defaults(func=_show)
