"""`panic-gateway escalation ...`: check, load, show and export the directory; add, list and remove responders;
set a wearer's notes and emergency contacts. Every change is validated as a whole and stored as a new version,
which running gateways pick up within seconds (gateway.escalation.engine.DIRECTORY_REFRESH_S)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.config import load_settings
from gateway.escalation.directory import Directory, EmergencyContact, Responder, WearerInfo, dump_directory
from gateway.escalation.sender import mask_phone

DirectoryChange = Callable[[Directory], Directory]


def _with_database(args: argparse.Namespace, action: Callable[[], Awaitable[int]]) -> int:
    from gateway.store.db import open_database

    settings = load_settings(args.config)

    async def main() -> int:
        async with open_database(settings.database.url.get_secret_value()):
            return await action()

    return asyncio.run(main())


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.escalation.directory import load_directory

    directory = load_directory(args.file)  # DirectoryError lists every problem; main() prints them, exit 2
    print(f"{args.file}: ok")
    print(directory.summary())
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from gateway.escalation.directory import load_directory
    from gateway.escalation.engine import save_directory

    directory = load_directory(args.file)

    async def action() -> int:
        stored = await save_directory(directory, source=str(args.file), loaded_by=args.by)
        print(f"{args.file}: {'loaded as version ' + str(stored) if stored else 'unchanged (already current)'}")
        print(directory.summary())
        return 0

    return _with_database(args, action)


def cmd_show(args: argparse.Namespace) -> int:
    from gateway.escalation.engine import current_directory

    async def action() -> int:
        version, directory = await current_directory()
        print(f"version {version or 'none (no directory loaded: command center only)'}")
        print(directory.summary())
        return 0

    return _with_database(args, action)


def cmd_export(args: argparse.Namespace) -> int:
    from gateway.escalation.engine import current_directory

    async def action() -> int:
        _, directory = await current_directory()
        text = dump_directory(directory)
        if args.output is None:
            print(text, end="")
        else:
            args.output.write_text(text, encoding="utf-8")
            print(f"written to {args.output}")
        return 0

    return _with_database(args, action)


def _change(args: argparse.Namespace, change: DirectoryChange, what: str) -> int:
    from gateway.escalation.engine import current_directory, save_directory

    async def action() -> int:
        _, directory = await current_directory()
        changed = change(directory)  # DirectoryError: the whole directory would be invalid; nothing is stored
        version = await save_directory(changed, source=f"cli: {what}", loaded_by=args.by)
        print(f"{what}: {'stored as version ' + str(version) if version else 'no change'}")
        return 0

    return _with_database(args, action)


def cmd_responder_add(args: argparse.Namespace) -> int:
    responder = Responder(
        id=args.id,
        name=args.name,
        phone=args.phone,
        sites=tuple(args.site),
        supervisor=args.supervisor,
        active=not args.inactive,
    )
    return _change(args, lambda d: d.with_responder(responder), f"responder {args.id}")


def cmd_responder_remove(args: argparse.Namespace) -> int:
    return _change(args, lambda d: d.without_responder(args.id), f"responder {args.id} removed")


def cmd_responder_list(args: argparse.Namespace) -> int:
    from gateway.escalation.engine import current_directory

    async def action() -> int:
        _, directory = await current_directory()
        if not directory.responders:
            print("no responders")
        for r in directory.responders:
            flags = [f for f, on in (("supervisor", r.supervisor), ("inactive", not r.active)) if on]
            print(
                f"{r.id:<16} {r.name:<28} {mask_phone(r.phone):<14} sites {','.join(r.sites) or '-'}"
                + (f"  ({', '.join(flags)})" if flags else "")
            )
        return 0

    return _with_database(args, action)


def _contact(text: str) -> EmergencyContact:
    """NAME=+PHONE[:RELATION] -> EmergencyContact (validated with the whole directory)."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=+PHONE[:RELATION]")
    phone, _, relation = rest.partition(":")
    return EmergencyContact(name=name.strip(), phone=phone.strip(), relation=relation.strip())


def cmd_wearer(args: argparse.Namespace) -> int:
    info = WearerInfo(device=args.device, name=args.name, notes=args.notes or "", contacts=tuple(args.contact))
    return _change(args, lambda d: d.with_wearer(info), f"wearer {args.device}")


def add_escalation_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `escalation ...` on the gateway's CLI."""

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", "-c", type=Path, default=None, help="TOML settings file (PANIC_* variables override)"
        )
        return p

    def with_author(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--by", default="cli", help="who makes the change (kept with the version)")
        return with_config(p)

    escalation = sub.add_parser("escalation", help="people and escalation policies (docs/ESCALATION.md)")
    commands = escalation.add_subparsers(dest="escalation_command", required=True)

    check = commands.add_parser("check", help="validate a directory file and print every problem")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check)

    load = with_author(commands.add_parser("load", help="validate a directory file and make it current"))
    load.add_argument("file", type=Path)
    load.set_defaults(func=cmd_load)

    with_config(commands.add_parser("show", help="summary of the current directory")).set_defaults(func=cmd_show)

    export = with_config(commands.add_parser("export", help="the current directory as TOML"))
    export.add_argument("--output", "-o", type=Path, default=None, help="write here instead of stdout")
    export.set_defaults(func=cmd_export)

    responders = commands.add_parser("responders", help="people who respond").add_subparsers(
        dest="responders_command", required=True
    )
    add = with_author(responders.add_parser("add", help="add or replace a responder"))
    add.add_argument("id", help="[a-z0-9][a-z0-9._-]{0,63}")
    add.add_argument("--name", required=True)
    add.add_argument("--phone", required=True, help="E.164, e.g. +15551230001")
    add.add_argument("--site", action="append", default=[], help="a site they respond to (repeat for more)")
    add.add_argument("--supervisor", action="store_true", help="may supervise a policy (told on exhaustion)")
    add.add_argument("--inactive", action="store_true", help="keep them listed but never notify them")
    add.set_defaults(func=cmd_responder_add)
    remove = with_author(responders.add_parser("remove", help="remove a responder no group or policy names"))
    remove.add_argument("id")
    remove.set_defaults(func=cmd_responder_remove)
    with_config(responders.add_parser("list", help="list responders")).set_defaults(func=cmd_responder_list)

    wearer = with_author(commands.add_parser("wearer", help="set a wearer's notes and emergency contacts"))
    wearer.add_argument("device", help="registered device id")
    wearer.add_argument("--name", default=None, help="name in messages, if not the registry's")
    wearer.add_argument("--notes", default=None, help="notes for responders (max 500 characters)")
    wearer.add_argument(
        "--contact", type=_contact, action="append", default=[], metavar="NAME=+PHONE[:RELATION]", help="repeatable"
    )
    wearer.set_defaults(func=cmd_wearer)


__all__ = ["add_escalation_commands"]
