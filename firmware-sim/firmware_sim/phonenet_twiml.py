"""TwiML as the phone network simulator reads it: a gateway's answer parsed into verbs, no I/O."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # the documents come from the gateway under test, not from strangers
from dataclasses import dataclass
from typing import Final

#: Twilio's default <Gather timeout> (seconds of silence before the caller is taken to have pressed nothing).
GATHER_TIMEOUT_S: Final = 5.0
#: Twilio's default <Pause length>.
PAUSE_LENGTH_S: Final = 1.0
#: Twilio's default <Gather finishOnKey>: the key ends input and is not part of Digits.
FINISH_ON_KEY: Final = "#"
#: A TwiML document larger than this is refused unread (Twilio's own limit is 64 KB).
MAX_TWIML_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Say:
    """<Say>: text spoken to the callee."""

    text: str


@dataclass(frozen=True, slots=True)
class Pause:
    """<Pause length="...">: silence."""

    length_s: float


@dataclass(frozen=True, slots=True)
class Hangup:
    """<Hangup/>: the call ends."""


@dataclass(frozen=True, slots=True)
class Redirect:
    """<Redirect method="...">url</Redirect>: the call continues with the TwiML at url (relative to the document)."""

    url: str
    method: str


@dataclass(frozen=True, slots=True)
class Gather:
    """<Gather input="dtmf" ...>: prompts (its nested verbs) while collecting keypad digits.

    action: where the digits are sent; None means the current document's URL (as Twilio does).
    num_digits: input ends after this many digits; None: at finish_on_key or the timeout.
    """

    action: str | None
    method: str
    num_digits: int | None
    timeout_s: float
    finish_on_key: str
    prompts: tuple[Say | Pause, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """<Message to=... from=...>body</Message> in messaging TwiML: a reply SMS."""

    body: str
    to: str | None
    from_: str | None


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A verb the simulator does not model (<Play>, <Dial>, <Record>, ...): skipped, as if it had finished."""

    name: str


Verb = Say | Pause | Hangup | Redirect | Gather | Message | Unsupported


class TwimlError(ValueError):
    """The document is not TwiML (Twilio's error 12100, "Document parse failure")."""


def parse_twiml(document: bytes | str) -> tuple[Verb, ...]:
    """The verbs of a <Response> document, in order; raise TwimlError when it is not one."""
    raw = document.encode() if isinstance(document, str) else document
    if len(raw) > MAX_TWIML_BYTES:
        raise TwimlError(f"document of {len(raw)} bytes exceeds {MAX_TWIML_BYTES}")
    if not raw.strip():
        return ()  # Twilio treats an empty 200 answer as an empty <Response/>
    try:
        root = ET.fromstring(raw)  # noqa: S314 (trusted source, bounded size; expat refuses entity expansion bombs)
    except ET.ParseError as error:
        raise TwimlError(f"not XML: {error}") from None
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, not <Response>")
    return tuple(_verb(element) for element in root)


def _verb(element: ET.Element) -> Verb:
    tag = element.tag
    if tag == "Say":
        return Say(_text(element))
    if tag == "Pause":
        return Pause(_number(element.get("length"), PAUSE_LENGTH_S))
    if tag == "Hangup":
        return Hangup()
    if tag == "Redirect":
        return Redirect(_text(element), _method(element.get("method")))
    if tag == "Gather":
        return _gather(element)
    if tag == "Message":
        body = element.find("Body")
        text = _text(body) if body is not None else (element.text or "").strip()
        return Message(text, element.get("to"), element.get("from"))
    return Unsupported(str(tag))


def _gather(element: ET.Element) -> Gather:
    num_digits = element.get("numDigits")
    prompts: list[Say | Pause] = []
    for child in element:
        verb = _verb(child)
        if isinstance(verb, Say | Pause):
            prompts.append(verb)
    return Gather(
        action=element.get("action") or None,
        method=_method(element.get("method")),
        num_digits=int(num_digits) if num_digits and num_digits.isdigit() and int(num_digits) > 0 else None,
        timeout_s=_number(element.get("timeout"), GATHER_TIMEOUT_S),
        finish_on_key=element.get("finishOnKey", FINISH_ON_KEY),
        prompts=tuple(prompts),
    )


def _text(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()


def _method(value: str | None) -> str:
    return "GET" if (value or "").upper() == "GET" else "POST"


def _number(value: str | None, default: float) -> float:
    try:
        number = float(value) if value is not None else default
    except ValueError:
        return default
    return number if 0 <= number < 3600 else default


def gathered_digits(pressed: str, gather: Gather) -> str:
    """What Twilio would post as Digits when the callee keys `pressed` at `gather`."""
    digits = pressed
    if gather.finish_on_key and gather.finish_on_key in digits:
        digits = digits[: digits.index(gather.finish_on_key)]
    if gather.num_digits is not None:
        digits = digits[: gather.num_digits]
    return digits
