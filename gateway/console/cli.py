"""`panic-gateway users ...`: add, list and disable web console operators (passwords never on the command line)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.config import load_settings
from gateway.console.auth import Role


def _with_database(args: argparse.Namespace, action: Callable[[], Awaitable[int]]) -> int:
    from gateway.store.db import open_database

    settings = load_settings(args.config)

    async def main() -> int:
        async with open_database(settings.database.url.get_secret_value()):
            return await action()

    return asyncio.run(main())


def _read_password(args: argparse.Namespace) -> str:
    """From the environment variable named by --password-env, else typed twice on a terminal."""
    from gateway.console.store import ConsoleError

    if args.password_env is not None:
        password = os.environ.get(args.password_env)
        if not password:
            raise ConsoleError(f"environment variable {args.password_env} is not set or empty")
        return password
    if not sys.stdin.isatty():
        raise ConsoleError("no terminal to prompt for the password: use --password-env VAR")
    password = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != password:
        raise ConsoleError("the two passwords differ")
    return password


def cmd_users_add(args: argparse.Namespace) -> int:
    from gateway.console.auth import check_operator_name
    from gateway.console.store import ConsoleError, add_operator

    if (problem := check_operator_name(args.name)) is not None:
        raise ConsoleError(problem)  # before asking for a password
    password = _read_password(args)

    async def action() -> int:
        operator = await add_operator(args.name, args.display_name or args.name, args.role, password, actor=args.by)
        print(f"added {operator.name} ({operator.display_name}, {operator.role})")
        return 0

    return _with_database(args, action)


def cmd_users_list(args: argparse.Namespace) -> int:
    from gateway.console.store import list_operators

    async def action() -> int:
        operators = await list_operators()
        print(f"{'NAME':<24} {'DISPLAY NAME':<32} {'ROLE':<12} DISABLED")
        for o in operators:
            print(f"{o.name:<24} {o.display_name:<32} {o.role:<12} {'yes' if o.disabled else 'no'}")
        print(f"{len(operators)} operator(s)")
        return 0

    return _with_database(args, action)


def cmd_users_disable(args: argparse.Namespace) -> int:
    from gateway.console.store import disable_operator

    async def action() -> int:
        operator = await disable_operator(args.name, actor=args.by)
        print(f"disabled {operator.name}: cannot sign in, sessions ended")
        return 0

    return _with_database(args, action)


def cmd_tokens_add(args: argparse.Namespace) -> int:
    from gateway.console.store import add_api_token

    async def action() -> int:
        row, token = await add_api_token(args.name, args.role, actor=args.by)
        print(f"added token {row.name} ({row.role}); it is shown once, keep it in the client's secret store:")
        print(token)
        return 0

    return _with_database(args, action)


def cmd_tokens_list(args: argparse.Namespace) -> int:
    from gateway.console.store import list_api_tokens

    async def action() -> int:
        rows = await list_api_tokens()
        print(f"{'NAME':<24} {'ROLE':<12} {'CREATED':<26} REVOKED")
        for t in rows:
            revoked = t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "no"
            print(f"{t.name:<24} {t.role:<12} {t.created_at.isoformat(timespec='seconds'):<26} {revoked}")
        print(f"{len(rows)} token(s)")
        return 0

    return _with_database(args, action)


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from gateway.console.store import revoke_api_token

    async def action() -> int:
        row = await revoke_api_token(args.name, actor=args.by)
        print(f"revoked token {row.name}: refused from now on")
        return 0

    return _with_database(args, action)


def add_user_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `users ...` on the gateway's CLI."""

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", "-c", type=Path, default=None, help="TOML settings file (PANIC_* variables override)"
        )
        p.add_argument("--by", default="cli", help="who makes the change (kept in the audit log)")
        return p

    users = sub.add_parser("users", help="web console operators").add_subparsers(dest="users_command", required=True)

    add = with_config(users.add_parser("add", help="add an operator (password prompted twice, or --password-env)"))
    add.add_argument("name", help="sign-in name, [a-z0-9._-]{1,64}")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--display-name", default=None, help="name shown in the console (default: the sign-in name)")
    add.add_argument(
        "--password-env", default=None, metavar="VAR", help="read the password from this environment variable"
    )
    add.set_defaults(func=cmd_users_add)

    with_config(users.add_parser("list", help="list operators")).set_defaults(func=cmd_users_list)

    disable = with_config(users.add_parser("disable", help="stop an operator signing in and end their sessions"))
    disable.add_argument("name")
    disable.set_defaults(func=cmd_users_disable)

    tokens = sub.add_parser("tokens", help="REST API tokens for machine clients").add_subparsers(
        dest="tokens_command", required=True
    )
    tadd = with_config(tokens.add_parser("add", help="create a bearer token (printed once)"))
    tadd.add_argument("name", help="client name, [a-z0-9._-]{1,64} (recorded as who acted)")
    tadd.add_argument("--role", required=True, choices=[r.value for r in Role])
    tadd.set_defaults(func=cmd_tokens_add)
    with_config(tokens.add_parser("list", help="list tokens")).set_defaults(func=cmd_tokens_list)
    trevoke = with_config(tokens.add_parser("revoke", help="refuse a token from now on"))
    trevoke.add_argument("name")
    trevoke.set_defaults(func=cmd_tokens_revoke)


__all__ = ["add_user_commands"]
