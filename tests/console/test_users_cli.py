"""`panic-gateway users ...` and the account store: operators are validated, listed, disabled, signed in, audited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.console.auth import ScryptParams, token_digest
from gateway.console.store import (
    SESSION_LIFETIME,
    ConsoleError,
    add_operator,
    authenticate,
    create_session,
    disable_operator,
    end_session,
    lookup_api_token,
    lookup_session,
)
from gateway.store.db import open_database
from gateway.store.models import ApiToken, AuditEntry, Operator, OperatorSession

PASSWORD = "correct horse battery staple"
CHEAP = ScryptParams(n=2**4, r=8, p=1)


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli.sqlite3"
    monkeypatch.setenv("PANIC_DATABASE__URL", f"sqlite://{path}")
    monkeypatch.setenv("ANA_PASSWORD", PASSWORD)
    return path


def test_add_list_and_disable_operators(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add = ["users", "add", "ana", "--role", "supervisor", "--display-name", "Ana Guard", "--password-env"]
    assert main([*add, "ANA_PASSWORD"]) == 0
    assert capsys.readouterr().out == "added ana (Ana Guard, supervisor)\n"

    assert main([*add, "ANA_PASSWORD"]) == 2
    err = capsys.readouterr().err
    assert err == "error: operator 'ana' already exists\n"

    assert main(["users", "list"]) == 0
    listing = capsys.readouterr().out
    assert "Ana Guard" in listing and "supervisor" in listing and "1 operator(s)" in listing
    assert "scrypt" not in listing and PASSWORD not in listing

    assert main(["users", "disable", "ana", "--by", "admin-bo"]) == 0
    assert "disabled ana" in capsys.readouterr().out
    assert main(["users", "list"]) == 0
    assert "yes" in capsys.readouterr().out.splitlines()[1]
    assert main(["users", "disable", "nobody"]) == 2
    assert capsys.readouterr().err == "error: no operator named 'nobody'\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["Ana", "--role", "admin", "--password-env", "ANA_PASSWORD"], "must be 1 to 64 characters"),
        (["bo", "--role", "admin", "--password-env", "WEAK"], "password is shorter than 12 characters"),
        (["bo", "--role", "admin", "--password-env", "UNSET_VARIABLE"], "UNSET_VARIABLE is not set"),
        (["bo", "--role", "admin"], "use --password-env VAR"),  # stdin is not a terminal under pytest
    ],
)
def test_add_refuses_with_one_line(
    argv: list[str], message: str, cli_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEAK", "hunter2")
    monkeypatch.delenv("UNSET_VARIABLE", raising=False)
    assert main(["users", "add", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert "hunter2" not in err


def test_unknown_roles_are_refused_by_the_parser(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["users", "add", "bo", "--role", "root", "--password-env", "ANA_PASSWORD"])
    assert exc.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err


async def test_sign_in_sessions_and_audit(db_url: str) -> None:
    now = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    async with open_database(db_url):
        ana = await add_operator("ana", "Ana Guard", "operator", PASSWORD, now=now, params=CHEAP)
        with pytest.raises(ConsoleError, match="already exists"):
            await add_operator("ana", "", "viewer", PASSWORD, now=now, params=CHEAP)
        with pytest.raises(ConsoleError, match="unknown role 'root'"):
            await add_operator("bo", "", "root", PASSWORD, now=now, params=CHEAP)

        assert await authenticate("ana", "wrong password!!", "10.0.0.1", now, params=CHEAP) is None
        assert await authenticate("nobody", PASSWORD, "10.0.0.1", now, params=CHEAP) is None
        signed_in = await authenticate("ana", PASSWORD, "10.0.0.1", now, params=CHEAP)
        assert signed_in is not None and signed_in.id == ana.id

        token = await create_session(signed_in, "10.0.0.1", now)
        stored = await OperatorSession.get(operator_id=ana.id)
        assert stored.token_digest != token and token not in stored.token_digest
        session = await lookup_session(token, now + timedelta(hours=1))
        assert session is not None and session.operator.name == "ana"
        assert await lookup_session("forged", now) is None
        assert await lookup_session(token, now + SESSION_LIFETIME) is None  # expired and forgotten
        assert await OperatorSession.all().count() == 0

        token = await create_session(signed_in, "10.0.0.1", now)
        assert await end_session(token) and not await end_session(token)

        token = await create_session(signed_in, "10.0.0.1", now)
        await disable_operator("ana", actor="admin-bo", now=now)
        assert await lookup_session(token, now) is None
        assert await authenticate("ana", PASSWORD, "10.0.0.1", now, params=CHEAP) is None

        entries = [(e.actor, e.action, e.target, e.detail) for e in await AuditEntry.all().order_by("id")]
        assert entries == [
            ("cli", "operator.add", "ana", {"role": "operator"}),
            ("ana", "login.failed", "ana", {"address": "10.0.0.1", "reason": "wrong password"}),
            ("nobody", "login.failed", "nobody", {"address": "10.0.0.1", "reason": "unknown"}),
            ("ana", "login", "ana", {"address": "10.0.0.1"}),
            ("admin-bo", "operator.disable", "ana", {"sessions_ended": 1}),
            ("ana", "login.failed", "ana", {"address": "10.0.0.1", "reason": "disabled"}),
        ]
        assert (await Operator.get(name="ana")).password_hash.startswith("scrypt$16$8$1$")


def test_api_tokens_are_shown_once_stored_as_digests_and_revoked(
    cli_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tokens", "add", "dispatch-desk", "--role", "operator"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("added token dispatch-desk (operator)")
    token = out[1]
    assert len(token) >= 40

    async def stored() -> tuple[str, str | None]:
        async with open_database(f"sqlite://{cli_db}"):
            row = await lookup_api_token(token)
            return (row.role if row else ""), (await ApiToken.get(name="dispatch-desk")).token_digest

    role, digest = asyncio.run(stored())
    assert role == "operator" and digest == token_digest(token) and token not in (digest or "")

    assert main(["tokens", "add", "dispatch-desk", "--role", "viewer"]) == 2
    assert capsys.readouterr().err == "error: token 'dispatch-desk' already exists\n"
    assert main(["tokens", "list"]) == 0
    listing = capsys.readouterr().out
    assert "dispatch-desk" in listing and token not in listing and "1 token(s)" in listing
    assert main(["tokens", "revoke", "dispatch-desk"]) == 0
    assert "revoked token dispatch-desk" in capsys.readouterr().out

    async def after() -> bool:
        async with open_database(f"sqlite://{cli_db}"):
            return await lookup_api_token(token) is None

    assert asyncio.run(after())
    assert main(["tokens", "revoke", "nobody"]) == 2
    assert capsys.readouterr().err == "error: no token named 'nobody'\n"
