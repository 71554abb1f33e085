"""Console accounts in the database: operators, their sessions, and the append-only audit log.

ConsoleError (a GatewayError) is raised when an account operation is refused: a duplicate or malformed name,
an unknown role, a weak password, an unknown operator. Its message is one line, fit for the CLI.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from gateway.console.auth import (
    DEFAULT_PARAMS,
    DUMMY_HASH,
    Role,
    ScryptParams,
    check_operator_name,
    check_password,
    hash_password,
    needs_rehash,
    new_session_token,
    token_digest,
    verify_password,
)
from gateway.errors import GatewayError
from gateway.store.models import ApiToken, AuditEntry, Operator, OperatorSession

#: A session lasts one long shift, then the operator signs in again.
SESSION_LIFETIME: Final = timedelta(hours=12)
#: last_seen_at is written at most this often, so that every console request is not a database write.
LAST_SEEN_GRANULARITY: Final = timedelta(minutes=1)


class ConsoleError(GatewayError):
    """A console account operation was refused (the message says why, in one line)."""


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


async def add_operator(
    name: str,
    display_name: str,
    role: Role | str,
    password: str,
    *,
    actor: str = "cli",
    now: datetime | None = None,
    params: ScryptParams = DEFAULT_PARAMS,
) -> Operator:
    """Create an operator after checking the name, role and password policy."""
    if (problem := check_operator_name(name)) is not None:
        raise ConsoleError(problem)
    try:
        checked_role = Role(role)
    except ValueError:
        raise ConsoleError(f"unknown role {role!r} (one of {', '.join(Role)})") from None
    display = display_name.strip() or name
    if len(display) > 128:
        raise ConsoleError("display name is longer than 128 characters")
    if problems := check_password(password):
        raise ConsoleError("; ".join(problems))
    if await Operator.exists(name=name):
        raise ConsoleError(f"operator {name!r} already exists")
    at = _now(now)
    encoded = await asyncio.to_thread(hash_password, password, params)
    try:
        async with in_transaction() as conn:
            operator = await Operator.create(
                name=name,
                display_name=display,
                role=checked_role.value,
                password_hash=encoded,
                created_at=at,
                updated_at=at,
                using_db=conn,
            )
            await audit(actor, "operator.add", name, at=at, using_db=conn, role=checked_role.value)
    except IntegrityError:  # added by someone else since the check above
        raise ConsoleError(f"operator {name!r} already exists") from None
    return operator


async def list_operators() -> list[Operator]:
    """Every operator, by name."""
    return await Operator.all().order_by("name")


async def disable_operator(name: str, *, actor: str = "cli", now: datetime | None = None) -> Operator:
    """Stop an operator from signing in and end their sessions (the account and its history stay)."""
    at = _now(now)
    async with in_transaction() as conn:
        operator = await Operator.filter(name=name).select_for_update().using_db(conn).first()
        if operator is None:
            raise ConsoleError(f"no operator named {name!r}")
        if not operator.disabled:
            operator.disabled = True
            operator.updated_at = at
            await operator.save(update_fields=["disabled", "updated_at"], using_db=conn)
        ended = await OperatorSession.filter(operator_id=operator.id).using_db(conn).delete()
        await audit(actor, "operator.disable", name, at=at, using_db=conn, sessions_ended=ended)
    return operator


async def authenticate(
    name: str, password: str, address: str, now: datetime | None = None, *, params: ScryptParams = DEFAULT_PARAMS
) -> Operator | None:
    """The operator if `password` is theirs and they are enabled, else None (both outcomes are audited).

    An unknown name is checked against a dummy hash, so it takes as long as a wrong password.
    Throttling is the caller's (gateway.console.auth.LoginThrottle), before this is called.
    """
    at = _now(now)
    operator = await Operator.get_or_none(name=name)
    # scrypt takes about 0.1 s of CPU: off the event loop, so that alerts are not held up by a sign-in.
    ok = await asyncio.to_thread(verify_password, password, operator.password_hash if operator else DUMMY_HASH)
    if operator is None or not ok or operator.disabled:
        reason = "unknown" if operator is None else "wrong password" if not ok else "disabled"
        await audit(name[:64], "login.failed", name[:128], at=at, address=address, reason=reason)
        return None
    if needs_rehash(operator.password_hash, params):
        operator.password_hash = await asyncio.to_thread(hash_password, password, params)
        operator.updated_at = at
        await operator.save(update_fields=["password_hash", "updated_at"])
    await audit(name, "login", name, at=at, address=address)
    return operator


async def create_session(operator: Operator, address: str, now: datetime | None = None) -> str:
    """Open a session and return its token (for the cookie), storing only the token's digest."""
    at = _now(now)
    token = new_session_token()
    await OperatorSession.create(
        operator=operator,
        token_digest=token_digest(token),
        created_at=at,
        expires_at=at + SESSION_LIFETIME,
        last_seen_at=at,
        address=address[:64],
    )
    return token


async def lookup_session(token: str, now: datetime | None = None) -> OperatorSession | None:
    """The live session of `token` with its operator fetched, or None (unknown, expired, operator disabled)."""
    at = _now(now)
    session = await OperatorSession.get_or_none(token_digest=token_digest(token)).prefetch_related("operator")
    if session is None:
        return None
    if session.expires_at <= at or session.operator.disabled:
        await session.delete()
        return None
    if at - session.last_seen_at >= LAST_SEEN_GRANULARITY:
        session.last_seen_at = at
        await session.save(update_fields=["last_seen_at"])
    return session


async def end_session(token: str) -> bool:
    """Sign out: forget the session of `token`. Whether there was one."""
    return await OperatorSession.filter(token_digest=token_digest(token)).delete() > 0


async def add_api_token(
    name: str, role: Role | str, *, actor: str = "cli", now: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a bearer token for a machine client: (its row, the token, shown once and never stored)."""
    if (problem := check_operator_name(name)) is not None:
        raise ConsoleError(problem.replace("operator name", "token name"))
    try:
        checked_role = Role(role)
    except ValueError:
        raise ConsoleError(f"unknown role {role!r} (one of {', '.join(Role)})") from None
    if await ApiToken.exists(name=name):
        raise ConsoleError(f"token {name!r} already exists")
    at = _now(now)
    token = new_session_token()
    try:
        async with in_transaction() as conn:
            row = await ApiToken.create(
                name=name, token_digest=token_digest(token), role=checked_role.value, created_at=at, using_db=conn
            )
            await audit(actor, "token.add", name, at=at, using_db=conn, role=checked_role.value)
    except IntegrityError:
        raise ConsoleError(f"token {name!r} already exists") from None
    return row, token


async def list_api_tokens() -> list[ApiToken]:
    """Every API token (revoked ones too), by name."""
    return await ApiToken.all().order_by("name")


async def revoke_api_token(name: str, *, actor: str = "cli", now: datetime | None = None) -> ApiToken:
    """Stop a token from working at once (the row stays, for the audit trail)."""
    at = _now(now)
    async with in_transaction() as conn:
        row = await ApiToken.filter(name=name).select_for_update().using_db(conn).first()
        if row is None:
            raise ConsoleError(f"no token named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = at
            await row.save(update_fields=["revoked_at"], using_db=conn)
        await audit(actor, "token.revoke", name, at=at, using_db=conn)
    return row


async def lookup_api_token(token: str) -> ApiToken | None:
    """The live token row of a bearer token, or None (unknown or revoked)."""
    row = await ApiToken.get_or_none(token_digest=token_digest(token))
    return None if row is None or row.revoked_at is not None else row


async def audit(
    actor: str,
    action: str,
    target: str,
    *,
    at: datetime | None = None,
    using_db: BaseDBAsyncClient | None = None,
    **detail: Any,
) -> AuditEntry:
    """Append one entry to the audit log (never key material or passwords in `detail`)."""
    return await AuditEntry.create(
        at=_now(at), actor=actor[:64], action=action[:64], target=target[:128], detail=detail, using_db=using_db
    )


__all__ = [
    "ConsoleError",
    "add_api_token",
    "add_operator",
    "audit",
    "authenticate",
    "create_session",
    "disable_operator",
    "end_session",
    "list_api_tokens",
    "list_operators",
    "lookup_api_token",
    "lookup_session",
    "revoke_api_token",
]
