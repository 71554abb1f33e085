"""Simulated handsets of the phone network simulator: their scripted behaviour and what reached them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, get_args

#: Default delay before an answering handset picks up, and before a replying one sends its reply: a person takes
#: seconds; tests should not.
ANSWER_AFTER_S: Final = 0.05
REPLY_AFTER_S: Final = 0.05
#: The handset's default way of finding the code to echo: the gateway writes "Reply 1234 to acknowledge".
REPLY_PATTERN: Final = r"(?i)\breply\s+(\d{4})\b"

SmsFate = Literal["deliver", "undeliverable"]
CallFate = Literal["answer", "no-answer", "busy", "fail"]


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a simulated handset acts; the defaults receive texts without replying and let calls ring out.

    sms: "deliver", or "undeliverable" (the message ends "undelivered" with ErrorCode 30003).
    reply: text sent back to the sender after `reply_after_s`; "{code}" in it is replaced by the first group of
        `reply_pattern` found in the received body (no match: no reply). None: never replies.
    call: "answer" (after `answer_after_s`; if that exceeds the call's Timeout it is "no-answer"), "no-answer",
        "busy" or "fail".
    press: keys pressed at the first <Gather> of an answered call (digits, * and #); None: presses nothing.
    invalid: the number is not a valid phone number: creating a message or call to it fails with 21211.
    """

    sms: SmsFate = "deliver"
    reply: str | None = None
    reply_after_s: float = REPLY_AFTER_S
    reply_pattern: str = REPLY_PATTERN
    call: CallFate = "no-answer"
    answer_after_s: float = ANSWER_AFTER_S
    press: str | None = None
    invalid: bool = False

    def __post_init__(self) -> None:
        if self.sms not in get_args(SmsFate):
            raise ValueError(f"sms must be one of {get_args(SmsFate)}, not {self.sms!r}")
        if self.call not in get_args(CallFate):
            raise ValueError(f"call must be one of {get_args(CallFate)}, not {self.call!r}")
        if self.press is not None and not re.fullmatch(r"[0-9*#]+", self.press):
            raise ValueError(f"press must be keypad keys (0-9, *, #), not {self.press!r}")
        if self.reply_after_s < 0 or self.answer_after_s < 0:
            raise ValueError("delays must not be negative")
        re.compile(self.reply_pattern)

    def reply_to(self, body: str) -> str | None:
        """The reply this handset sends on receiving `body`, or None."""
        if self.reply is None:
            return None
        if "{code}" not in self.reply:
            return self.reply
        found = re.search(self.reply_pattern, body)
        if found is None:
            return None
        return self.reply.replace("{code}", found.group(1) if found.re.groups else found.group(0))


class ReceivedSms(NamedTuple):
    """A text that reached a handset."""

    #: What it said.
    body: str
    #: The Message SID.
    sid: str
    #: Who sent it (the gateway's number).
    from_: str


@dataclass(slots=True)
class ReceivedCall:
    """A call that reached a handset; filled in as the call goes on."""

    sid: str
    from_: str
    #: Texts of the <Say> verbs heard, in order (including those nested in <Gather>).
    spoken: list[str] = field(default_factory=list)
    #: Keys sent as Digits, one entry per <Gather> answered.
    digits: list[str] = field(default_factory=list)
    #: The call's status: "queued", "ringing", "in-progress", then the final one.
    status: str = "queued"


@dataclass(slots=True)
class Handset:
    """A simulated phone. `behaviour` may be replaced at any time; it applies to what arrives next."""

    number: str
    name: str
    behaviour: Behaviour
    #: Texts received, oldest first.
    inbox: list[ReceivedSms] = field(default_factory=list)
    #: Calls received, oldest first.
    calls: list[ReceivedCall] = field(default_factory=list)
