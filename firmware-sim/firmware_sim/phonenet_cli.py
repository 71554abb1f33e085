"""`panic-sim phones`: the phone network simulator as a stand-alone service, set up from a TOML file.

The file names the account (SID, and the auth token unless the environment gives it), the account's own numbers
with the gateway's webhooks, the CA that the gateway's HTTPS certificate chains to, and the handsets with their
behaviour. `load_phones` reads it and reports every problem at once (PhonesFileError); `serve_phones` runs the
network until cancelled, printing its base URL and then one line per network event (`event_line`, which also
feeds the demo's phone panel). Phone numbers only ever appear masked.
"""

from __future__ import annotations

import contextlib
import math
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, Final, get_args
from urllib.parse import urlsplit

from firmware_sim.errors import SimError
from firmware_sim.phonenet import Behaviour, EventKind, NetEvent, OwnNumber, PhoneNetwork
from firmware_sim.phonenet_handset import CallFate, SmsFate
from firmware_sim.phonenet_resources import E164, is_callback_url, mask_number
from gateway.protocol.sms import sms_frame

#: The events loop wakes this often when nothing happens; nothing depends on it but an idle process's CPU.
EVENT_WAIT_S: Final = 60.0
#: Characters of an SMS body or a spoken sentence shown in an event line: enough to tell texts apart on one line.
BODY_CHARS: Final = 72
#: Account SIDs as Twilio makes them (the simulator refuses others).
ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")

_TOP_KEYS: Final = frozenset({"account_sid", "auth_token", "ca_file", "numbers", "handsets"})
_NUMBER_KEYS: Final = frozenset({"number", "sms_url", "voice_url"})
_HANDSET_KEYS: Final = frozenset(
    {"number", "name", "sms", "reply", "reply_after_s", "reply_pattern", "call", "answer_after_s", "press", "invalid"}
)
#: How a final or passing call status reads in an event line.
_CALL_STATUS_TEXT: Final = {
    "initiated": "dialling",
    "in-progress": "answered",
    "no-answer": "no answer",
    "canceled": "cancelled before it was answered",
}


class PhonesFileError(SimError):
    """A phones file cannot be used; `problems` lists each as 'field: message'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {'; '.join(problems)}")
        self.source = source
        self.problems = problems


@dataclass(frozen=True, slots=True)
class HandsetSetup:
    """One simulated phone of the file: its number, who holds it, and how it acts."""

    number: str
    name: str
    behaviour: Behaviour


@dataclass(frozen=True, slots=True)
class PhonesSetup:
    """A phones file, read and checked.

    account_sid / auth_token: the credentials the API accepts (and signs webhooks with).
    ca_file: what webhooks to https:// URLs trust; None: the system's CAs.
    numbers: the account's own numbers and where their inbound texts go.
    handsets: the simulated phones.
    """

    account_sid: str
    auth_token: str = field(repr=False)
    ca_file: Path | None
    numbers: tuple[OwnNumber, ...]
    handsets: tuple[HandsetSetup, ...]

    def names(self) -> dict[str, str]:
        """Who holds each number, for event lines ("gateway" for the account's own numbers)."""
        named = {n.number: "gateway" for n in self.numbers}
        named.update({h.number: h.name for h in self.handsets if h.name})
        return named

    def webhook_ssl(self) -> ssl.SSLContext | None:
        return None if self.ca_file is None else ssl.create_default_context(cafile=str(self.ca_file))


def load_phones(path: Path, *, auth_token_env: str | None = None, environ: Mapping[str, str]) -> PhonesSetup:
    """Read a phones file; PhonesFileError naming the file and every problem.

    auth_token_env: the name of an environment variable (in `environ`) that holds the auth token; it replaces
    the file's `auth_token`, so the secret need not be in the file nor on the command line.
    """
    source = str(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PhonesFileError(source, [f"cannot read the file ({getattr(exc, 'strerror', None) or exc})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise PhonesFileError(source, [f"not valid TOML: {exc}"]) from None
    reader = _Reader()
    setup = reader.setup(document, auth_token_env, environ)
    if reader.problems or setup is None:
        raise PhonesFileError(source, reader.problems)
    return setup


class _Reader:
    """Reads the document field by field, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def setup(
        self, document: dict[str, Any], auth_token_env: str | None, environ: Mapping[str, str]
    ) -> PhonesSetup | None:
        self.unknown(document, "", _TOP_KEYS)
        account_sid = document.get("account_sid")
        if account_sid is None:
            self.problem("account_sid", "is required ('AC' and 32 hex digits)")
        elif not isinstance(account_sid, str) or not ACCOUNT_SID.fullmatch(account_sid):
            self.problem("account_sid", f"{account_sid!r} is not 'AC' and 32 hex digits")
        auth_token = self.auth_token(document.get("auth_token"), auth_token_env, environ)
        ca_file = self.ca_file(document.get("ca_file"))
        if "numbers" not in document:
            self.problem("numbers", "is required: [[numbers]] with number and sms_url (texts and calls come from them)")
        elif document["numbers"] == []:
            self.problem("numbers", "must list at least one number (texts and calls come from the account's numbers)")
        numbers = [self.number(f"numbers[{i}]", t) for i, t in enumerate(self.tables(document, "numbers"))]
        handsets = [self.handset(f"handsets[{i}]", t) for i, t in enumerate(self.tables(document, "handsets"))]
        self.unique([n.number for n in numbers if n is not None], "numbers", "number")
        self.unique([h.number for h in handsets if h is not None], "handsets", "handset")
        if self.problems or not isinstance(account_sid, str) or auth_token is None:
            return None
        return PhonesSetup(
            account_sid,
            auth_token,
            ca_file,
            tuple(n for n in numbers if n is not None),
            tuple(h for h in handsets if h is not None),
        )

    def unknown(self, table: dict[str, Any], where: str, known: frozenset[str]) -> None:
        for key in sorted(set(table) - known):
            self.problem(f"{where}.{key}" if where else key, f"unknown field (known: {_list(known)})")

    def tables(self, document: dict[str, Any], name: str) -> list[dict[str, Any]]:
        value = document.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.problem(name, f"must be an array of tables ([[{name}]])")
            return []
        return value

    def auth_token(self, value: Any, env: str | None, environ: Mapping[str, str]) -> str | None:
        if env is not None:
            token = environ.get(env, "")
            if not token:
                self.problem("auth_token", f"the environment variable {env} (--auth-token-env) is unset or empty")
                return None
            return token
        if value is None:
            self.problem(
                "auth_token", "is required here, or pass --auth-token-env NAME to read it from the environment"
            )
            return None
        if not isinstance(value, str) or not value:
            self.problem("auth_token", "must be a non-empty string")
            return None
        return value

    def ca_file(self, value: Any) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem("ca_file", f"must be the path of a PEM file, not {value!r}")
            return None
        path = Path(value)
        try:
            ssl.create_default_context(cafile=str(path))
        except FileNotFoundError:
            self.problem("ca_file", f"{value}: no such file")
        except (OSError, ssl.SSLError) as exc:
            self.problem("ca_file", f"{value}: not a readable PEM CA file ({getattr(exc, 'strerror', None) or exc})")
        return path

    def phone(self, where: str, value: Any) -> str | None:
        if value is None:
            self.problem(where, "is required (E.164: '+' and up to 15 digits)")
        elif not isinstance(value, str) or not E164.fullmatch(value):
            self.problem(where, f"{value!r} is not an E.164 number ('+' and up to 15 digits, no spaces)")
        else:
            return value
        return None

    def url(self, where: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not is_callback_url(value):
            self.problem(where, f"{value!r} is not an absolute http(s) URL")
            return None
        return value

    def number(self, where: str, table: dict[str, Any]) -> OwnNumber | None:
        self.unknown(table, where, _NUMBER_KEYS)
        number = self.phone(f"{where}.number", table.get("number"))
        sms_url = self.url(f"{where}.sms_url", table.get("sms_url"))
        voice_url = self.url(f"{where}.voice_url", table.get("voice_url"))
        return None if number is None else OwnNumber(number, sms_url, voice_url)

    def handset(self, where: str, table: dict[str, Any]) -> HandsetSetup | None:
        self.unknown(table, where, _HANDSET_KEYS)
        number = self.phone(f"{where}.number", table.get("number"))
        name = self.text(where, table, "name", "")
        problems = len(self.problems)
        fields: dict[str, Any] = {}
        for key in ("sms", "call"):
            choices: tuple[str, ...] = get_args(SmsFate if key == "sms" else CallFate)
            if key in table and table[key] not in choices:
                self.problem(f"{where}.{key}", f"{table[key]!r} is not one of {', '.join(choices)}")
            elif key in table:
                fields[key] = table[key]
        for key in ("reply", "reply_pattern", "press"):
            if key in table:
                fields[key] = self.text(where, table, key, "")
        for key in ("reply_after_s", "answer_after_s"):
            value = table.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                self.problem(f"{where}.{key}", f"must be a number of seconds >= 0, not {value!r}")
            else:
                fields[key] = float(value)
        if "invalid" in table:
            if isinstance(table["invalid"], bool):
                fields["invalid"] = table["invalid"]
            else:
                self.problem(f"{where}.invalid", f"must be true or false, not {table['invalid']!r}")
        if number is None or len(self.problems) > problems:
            return None
        try:
            behaviour = Behaviour(**fields)
        except (ValueError, re.error) as exc:
            self.problem(where, str(exc))
            return None
        return HandsetSetup(number, name, behaviour)

    def text(self, where: str, table: dict[str, Any], key: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            self.problem(f"{where}.{key}", f"must be a string, not {value!r}")
            return default
        return value

    def unique(self, numbers: list[str], section: str, what: str) -> None:
        seen: set[str] = set()
        for index, number in enumerate(numbers):
            if number in seen:
                self.problem(f"{section}[{index}].number", f"{mask_number(number)} is already another {what}")
            seen.add(number)


def _list(keys: frozenset[str]) -> str:
    return ", ".join(sorted(keys))


# --- event lines --------------------------------------------------------------------------------------------------


def event_line(event: NetEvent, names: Mapping[str, str], *, with_sid: bool = True) -> str:
    """One line saying what happened on the network, numbers masked and named when `names` knows them."""

    def who(number: str) -> str:
        name = names.get(number)
        return f"{name} ({mask_number(number)})" if name else mask_number(number)

    d = event.detail
    sid = f" {event.sid[:10]}" if with_sid and event.sid else ""
    kind = event.kind
    if kind is EventKind.MESSAGE_CREATED:
        if d.get("direction") == "inbound":
            return f"SMS{sid} from {who(event.from_)} to {who(event.to)}: {_sms_body(str(d.get('body', '')))}"
        reply = " (reply)" if d.get("direction") == "outbound-reply" else ""
        return f"SMS{sid}{reply} queued from {who(event.from_)} to {who(event.to)}: {_quote(d.get('body', ''))}"
    if kind is EventKind.MESSAGE_STATUS:
        error = f" (error {d['error_code']})" if d.get("error_code") else ""
        return f"SMS{sid} to {who(event.to)}: {d.get('status')}{error}"
    if kind is EventKind.HANDSET_SMS:
        return f"SMS{sid} reached {who(event.to)}: {_quote(d.get('body', ''))}"
    if kind is EventKind.CALL_CREATED:
        return f"call{sid} placed from {who(event.from_)} to {who(event.to)}"
    if kind is EventKind.CALL_STATUS:
        status = str(d.get("status", ""))
        text = _CALL_STATUS_TEXT.get(status, status)
        if status == "completed":
            text = f"hung up after {d.get('duration', 0)} s"
        return f"call{sid} to {who(event.to)}: {text}"
    if kind is EventKind.CALL_SAY:
        return f"call{sid} to {who(event.to)}: heard {_quote(d.get('text', ''))}"
    if kind is EventKind.CALL_DIGITS:
        return f"call{sid} to {who(event.to)}: pressed {d.get('digits')}"
    if kind is EventKind.WEBHOOK:
        url = urlsplit(str(d.get("url", "")))
        answer = f"{d['status']}" if d.get("status") is not None else f"failed: {d.get('error')}"
        attempt = f" (attempt {d['attempt']})" if d.get("attempt", 1) > 1 else ""
        where = f"{url.scheme}://{url.netloc}{url.path}"  # the query may name who a callback is about
        return f"webhook {d.get('purpose')}{sid}: {d.get('method')} {where} -> {answer}{attempt}"
    if kind is EventKind.TWIML_ERROR:
        return f"TwiML error {d.get('code')}{sid}: {d.get('message')}"
    if kind is EventKind.TWIML_SKIPPED:
        return f"TwiML{sid}: <{d.get('verb')}> skipped"
    if kind is EventKind.API_REJECTED:
        return f"API refused {d.get('method')} {d.get('path')}: {d.get('status')} (Twilio error {d.get('code')})"
    return f"{kind}{sid}"


def _quote(text: object) -> str:
    flat = " ".join(str(text).split())
    return f'"{flat if len(flat) <= BODY_CHARS else flat[: BODY_CHARS - 3] + "..."}"'


def _sms_body(body: str) -> str:
    """A wearable's frame is shown as what it is, not as base64."""
    if isinstance(sms_frame(body), bytes):
        return f"a signed frame ({len(body)} characters)"
    return _quote(body)


def _print_line(line: str) -> None:
    print(line, flush=True)  # often a pipe to another process: each line as it happens


# --- the service ----------------------------------------------------------------------------------------------------


async def serve_phones(setup: PhonesSetup, *, host: str, port: int, emit: Callable[[str], None] = _print_line) -> None:
    """Run the network until cancelled: `emit` its base URL, then one line per event (time, UTC)."""
    async with PhoneNetwork(
        setup.account_sid, setup.auth_token, host=host, port=port, ssl_context=setup.webhook_ssl()
    ) as net:
        for own in setup.numbers:
            net.own_number(own.number, sms_url=own.sms_url, voice_url=own.voice_url)
        for handset in setup.handsets:
            net.phone(handset.number, name=handset.name, behaviour=handset.behaviour)
        emit(net.base_url)
        names = setup.names()
        shown = 0

        def unseen(n: PhoneNetwork) -> bool:
            return len(n.events) > shown

        while True:
            with contextlib.suppress(TimeoutError):
                await net.wait_for(unseen, EVENT_WAIT_S)
            for event in net.events[shown:]:
                emit(f"{event.at.astimezone(UTC):%H:%M:%S.%f}"[:12] + " " + event_line(event, names))
            shown = len(net.events)
