"""`panic-sim phones` runs the phone network simulator from a TOML file, as its own process, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest

from firmware_sim.cli import main
from firmware_sim.phonenet_cli import PhonesFileError, load_phones
from gateway.escalation.twilio_api import close_client, make_client

ACCOUNT: Final = "AC" + "7" * 32
TOKEN: Final = "phones-cli-token-" + "y" * 16
GATEWAY: Final = "+15550000000"
ANA: Final = "+15551230001"
EXAMPLE: Final = Path(__file__).parents[2] / "firmware-sim" / "phones.example.toml"
LINE_WAIT_S: Final = 20.0

PHONES: Final = f"""
account_sid = "{ACCOUNT}"

[[numbers]]
number = "{GATEWAY}"
sms_url = "http://127.0.0.1:9/v1/twilio/sms"

[[handsets]]
number = "{ANA}"
name = "Ana Guard"
call = "busy"
"""


@asynccontextmanager
async def phones(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`panic-sim phones` with the auth token in the environment; stopped with SIGINT (Ctrl-C) at the end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_sim.cli",
        "phones",
        "--config",
        str(config),
        "--auth-token-env",
        "PHONES_TEST_TOKEN",
        env={**os.environ, "PHONES_TEST_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), LINE_WAIT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


async def next_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), LINE_WAIT_S)
    assert line, "panic-sim phones ended its output"
    return line.decode().rstrip("\n")


async def line_with(process: asyncio.subprocess.Process, text: str) -> str:
    seen = []
    while text not in (line := await next_line(process)):
        seen.append(line)
    assert all(ANA not in s for s in [*seen, line]), "a full phone number was printed"
    return line


async def test_it_prints_its_url_then_every_sms_and_call_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    config = tmp_path / "phones.toml"
    config.write_text(PHONES)
    async with phones(config) as process:
        base_url = await next_line(process)
        assert base_url.startswith("http://127.0.0.1:")
        client = make_client(ACCOUNT, TOKEN, base_url)
        try:
            message = await client.messages.create_async(to=ANA, from_=GATEWAY, body="PANIC: Ada. Reply 4821")
            await client.calls.create_async(to=ANA, from_=GATEWAY, twiml="<Response><Say>hi</Say></Response>")
        finally:
            await close_client(client)
        queued = await line_with(process, "queued")
        assert f"SMS {message.sid[:10]} queued from gateway (+1555***0000) to Ana Guard (+1555***0001)" in queued
        assert queued.endswith('"PANIC: Ada. Reply 4821"')
        await line_with(process, 'reached Ana Guard (+1555***0001): "PANIC: Ada. Reply 4821"')
        await line_with(process, f"SMS {message.sid[:10]} to Ana Guard (+1555***0001): delivered")
        await line_with(process, "to Ana Guard (+1555***0001): ringing")
        await line_with(process, "to Ana Guard (+1555***0001): busy")
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), LINE_WAIT_S) == 130
        assert process.stderr is not None
        assert (await process.stderr.read()).decode().strip().endswith("panic-sim: interrupted")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (PHONES.replace(ACCOUNT, "AC123"), "account_sid: 'AC123' is not 'AC' and 32 hex digits"),
        (PHONES.replace('call = "busy"', 'call = "ring"'), "handsets[0].call: 'ring' is not one of answer, no-answer"),
        (PHONES.replace(f'number = "{ANA}"', 'number = "555 1234"'), "handsets[0].number: '555 1234' is not an E.164"),
        (PHONES + 'press = "x"\n', "handsets[0]: press must be keypad keys (0-9, *, #), not 'x'"),
        (PHONES + "wait_s = 3\n", "handsets[0].wait_s: unknown field (known: answer_after_s, call,"),
        (PHONES.replace("http://127.0.0.1:9/", "127.0.0.1/"), "numbers[0].sms_url: '127.0.0.1/v1/twilio/sms' is not"),
        ('ca_file = "/nonexistent/ca.crt"\n' + PHONES, "ca_file: /nonexistent/ca.crt: no such file"),
        ("account_sid = [", "not valid TOML"),
    ],
)
def test_a_bad_file_is_exit_2_and_one_line_naming_the_problem(
    tmp_path: Path, text: str, problem: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "phones.toml"
    config.write_text(text)
    monkeypatch.setenv("TOKEN_X", TOKEN)
    assert main(["phones", "--config", str(config), "--auth-token-env", "TOKEN_X"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"panic-sim phones: error: {config}: ") and err.count("\n") == 1
    assert problem in err and "Traceback" not in err


def test_several_problems_are_still_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "phones.toml"
    config.write_text(PHONES.replace(ACCOUNT, "nope").replace('call = "busy"', "call = 3"))
    assert main(["phones", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "account_sid: 'nope'" in err and "auth_token: is required" in err and "handsets[0].call: 3" in err


def test_the_token_comes_from_the_file_or_the_environment_never_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "phones.toml"
    config.write_text(PHONES)
    with pytest.raises(PhonesFileError, match="auth_token: is required here, or pass --auth-token-env NAME"):
        load_phones(config, environ={})
    with pytest.raises(PhonesFileError, match=r"the environment variable T \(--auth-token-env\) is unset or empty"):
        load_phones(config, auth_token_env="T", environ={})
    assert load_phones(config, auth_token_env="T", environ={"T": "secret"}).auth_token == "secret"
    config.write_text(f'auth_token = "{TOKEN}"\n' + PHONES)
    setup = load_phones(config, environ={})
    assert setup.auth_token == TOKEN and TOKEN not in repr(setup)
    assert setup.names() == {GATEWAY: "gateway", ANA: "Ana Guard"}


def test_the_example_file_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.identity.pki import PkiLayout, init_pki

    init_pki(PkiLayout(tmp_path / "certs" / "dev"))  # the example trusts the dev PKI made by `make demo`
    monkeypatch.chdir(tmp_path)
    setup = load_phones(EXAMPLE, auth_token_env="T", environ={"T": TOKEN})
    assert [n.number for n in setup.numbers] == [GATEWAY]
    behaviours = {h.name: h.behaviour for h in setup.handsets}
    assert behaviours["Ana Guard"].reply_to("PANIC ... Reply 4821 to acknowledge.") == "ok 4821"
    assert (behaviours["Bo Night"].call, behaviours["Bo Night"].press) == ("answer", "1")
    assert setup.webhook_ssl() is not None
