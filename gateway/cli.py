"""panic-gateway: run the service and administer it (config, database, PKI, devices, escalation)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import GatewaySettings, load_settings
from gateway.errors import GatewayError
from gateway.observability import configure_logging

if TYPE_CHECKING:
    from gateway.store.registry import DeviceRegistry

RegistryAction = Callable[["DeviceRegistry", GatewaySettings], Awaitable[int]]


def _settings(args: argparse.Namespace) -> GatewaySettings:
    return load_settings(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import run

    settings = _settings(args)
    configure_logging(settings.log)
    with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
        runner.run(run(settings))
    return 0


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it exists (about twice the HTTP and socket throughput per core); else asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    return uvloop.new_event_loop


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    db_kind = settings.database.url.get_secret_value().split("://")[0]
    print(
        f"{args.file}: ok (gateway {settings.gateway_id}, database {db_kind}, "
        f"mqtt {settings.mqtt.host}:{settings.mqtt.port})"
    )
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from gateway.store.db import apply_migrations

    asyncio.run(apply_migrations(_settings(args).database.url.get_secret_value()))
    print("database schema is up to date")
    return 0


def _with_registry(args: argparse.Namespace, action: RegistryAction) -> int:
    """Open the database and the trust anchors, run one registry action, close."""
    from gateway.identity.trust import load_device_trust
    from gateway.store.db import open_database
    from gateway.store.registry import DeviceRegistry

    settings = _settings(args)

    async def main() -> int:
        async with open_database(settings.database.url.get_secret_value()):
            return await action(DeviceRegistry(load_device_trust(settings.pki)), settings)

    return asyncio.run(main())


def cmd_devices_add(args: argparse.Namespace) -> int:
    from gateway.identity.pki import load_certificate

    cert = load_certificate(args.cert)

    async def action(registry: DeviceRegistry, settings: GatewaySettings) -> int:
        rec = await registry.add(cert, wearer=args.wearer, site=args.site, phone=args.phone, now=datetime.now(UTC))
        print(
            f"registered {rec.device_id} (wearer {rec.wearer}, site {rec.site or '-'}, "
            f"cert {rec.cert_fingerprint[:16]}...)"
        )
        return 0

    return _with_registry(args, action)


def _mask_phone(phone: str) -> str:
    """Never print a full phone number: keep the last three digits."""
    return "" if not phone else "*" * max(0, len(phone) - 3) + phone[-3:]


def cmd_devices_list(args: argparse.Namespace) -> int:
    async def action(registry: DeviceRegistry, settings: GatewaySettings) -> int:
        rows = await registry.list()
        print(f"{'DEVICE':<20} {'WEARER':<24} {'SITE':<12} {'STATUS':<8} {'LAST SEEN':<20} BATTERY")
        for r in rows:
            status = "revoked" if r.revoked_at else "active"
            seen = r.last_seen_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_seen_at else "never"
            battery = f"{r.battery}%" if r.battery is not None else "-"
            print(f"{r.device_id:<20} {r.wearer:<24} {r.site:<12} {status:<8} {seen:<20} {battery}")
        print(f"{len(rows)} device(s)")
        return 0

    return _with_registry(args, action)


def cmd_devices_show(args: argparse.Namespace) -> int:
    async def action(registry: DeviceRegistry, settings: GatewaySettings) -> int:
        r = await registry.show(args.device_id)
        status = f"revoked {r.revoked_at:%Y-%m-%d %H:%M:%SZ} ({r.revoked_reason})" if r.revoked_at else "active"
        rows = [
            ("device", r.device_id),
            ("wearer", r.wearer),
            ("site", r.site or "-"),
            ("phone", _mask_phone(r.phone) or "-"),
            ("fingerprint", r.cert_fingerprint),
            ("serial", r.cert_serial),
            ("valid until", f"{r.not_after:%Y-%m-%d %H:%M:%SZ}"),
            ("status", status),
            ("last seen", f"{r.last_seen_at:%Y-%m-%d %H:%M:%SZ}" if r.last_seen_at else "never"),
            ("battery", f"{r.battery}%" if r.battery is not None else "-"),
        ]
        for name, value in rows:
            print(f"{name + ':':<13}{value}")
        return 0

    return _with_registry(args, action)


def cmd_devices_revoke(args: argparse.Namespace) -> int:
    from gateway.errors import PkiError
    from gateway.identity.pki import PkiLayout, parse_reason, revoke_serial

    async def action(registry: DeviceRegistry, settings: GatewaySettings) -> int:
        now = datetime.now(UTC)
        r = await registry.revoke(args.device_id, args.reason, now)
        crl = ""
        if (settings.pki.directory / "device-ca.key").exists():
            # The CRL takes only RFC 5280 reason names; free text stays in the deny list.
            try:
                crl_reason: str | None = parse_reason(args.reason).name
            except PkiError:
                crl_reason = None
            revoke_serial(PkiLayout(settings.pki.directory), int(r.cert_serial, 16), now, crl_reason)
            crl = f"; CRL updated in {settings.pki.directory}"
        print(f"revoked {r.device_id}: denied from now on{crl}")
        return 0

    return _with_registry(args, action)


def build_parser() -> argparse.ArgumentParser:
    from gateway.console.cli import add_user_commands
    from gateway.escalation.cli import add_escalation_commands
    from gateway.identity.cli import add_pki_commands
    from gateway.location.cli import add_location_commands

    parser = argparse.ArgumentParser(prog="panic-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", "-c", type=Path, default=None, help="TOML settings file (PANIC_* variables override)"
        )
        return p

    run = with_config(sub.add_parser("run", help="run the gateway"))
    run.set_defaults(func=cmd_run)

    config = sub.add_parser("config", help="settings files").add_subparsers(dest="config_command", required=True)
    check = config.add_parser("check", help="validate a settings file and print every problem")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    with_config(db.add_parser("migrate", help="apply schema migrations")).set_defaults(func=cmd_db_migrate)

    devices = sub.add_parser("devices", help="device registry").add_subparsers(dest="devices_command", required=True)
    add = with_config(devices.add_parser("add", help="register a device from its certificate"))
    add.add_argument("--cert", type=Path, required=True, help="device certificate (PEM) issued by the device CA")
    add.add_argument("--wearer", required=True, help="the wearer's name as operators should see it")
    add.add_argument("--site", default="", help="site the wearer belongs to")
    add.add_argument("--phone", default="", help="the wearer's phone number (E.164)")
    add.set_defaults(func=cmd_devices_add)
    with_config(devices.add_parser("list", help="list devices")).set_defaults(func=cmd_devices_list)
    show = with_config(devices.add_parser("show", help="show one device"))
    show.add_argument("device_id")
    show.set_defaults(func=cmd_devices_show)
    revoke = with_config(devices.add_parser("revoke", help="deny a device (deny list + CRL)"))
    revoke.add_argument("device_id")
    revoke.add_argument("--reason", default="unspecified", help="why (kept in the deny list and the CRL)")
    revoke.set_defaults(func=cmd_devices_revoke)

    add_pki_commands(sub)
    add_escalation_commands(sub)
    add_location_commands(sub)
    add_user_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for problem in getattr(exc, "problems", []):
            print(f"  {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
