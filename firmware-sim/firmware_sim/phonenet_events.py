"""The event log of the phone network simulator: what happened, in order, and waiting until something has."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

#: Events shown in the message of a wait that timed out.
TAIL_SHOWN: Final = 8


class EventKind(StrEnum):
    """What a NetEvent records; its `detail` keys are listed per kind."""

    #: The API refused a request: method, path, status, code (and injected=True for fail_next).
    API_REJECTED = "api.rejected"
    #: A Message resource exists: body, direction ("outbound-api", "outbound-reply", "inbound"), status.
    MESSAGE_CREATED = "message.created"
    #: A message changed status: status ("sent", "delivered", "undelivered"), error_code.
    MESSAGE_STATUS = "message.status"
    #: A handset received a text: body, name.
    HANDSET_SMS = "handset.sms"
    #: A Call resource exists: url, status_callback, events (the StatusCallbackEvent list).
    CALL_CREATED = "call.created"
    #: A call moved on: status (the CallStatus of that moment: "initiated", "ringing", "in-progress" or final),
    #: duration on the final one.
    CALL_STATUS = "call.status"
    #: The callee heard a <Say>: text.
    CALL_SAY = "call.say"
    #: The callee pressed keys at a <Gather>: digits.
    CALL_DIGITS = "call.digits"
    #: One webhook attempt got an answer or failed: purpose ("sms", "message-status", "call-status", "voice"),
    #: url, method, attempt, status (None on a network error), error, signature.
    WEBHOOK = "webhook"
    #: A gateway's TwiML could not be used: code (11200 HTTP failure, 12100 parse failure, 11215 too many
    #: documents), message, url.
    TWIML_ERROR = "twiml.error"
    #: A TwiML verb the simulator does not model was skipped: verb.
    TWIML_SKIPPED = "twiml.skipped"


@dataclass(frozen=True, slots=True)
class NetEvent:
    """One thing that happened on the network, in order; `detail` is per kind (see EventKind)."""

    at: datetime
    kind: EventKind
    sid: str
    to: str
    from_: str
    detail: dict[str, Any]


class EventLog:
    """The events, in order, and a condition that wakes waiters on every new one."""

    def __init__(self) -> None:
        self.events: list[NetEvent] = []
        self._changed = asyncio.Condition()

    async def record(self, kind: EventKind, sid: str, to: str, from_: str, **detail: Any) -> None:
        self.events.append(NetEvent(datetime.now(UTC), kind, sid, to, from_, detail))
        async with self._changed:
            self._changed.notify_all()

    def find(self, kind: EventKind | str, *, sid: str | None = None, **detail: Any) -> list[NetEvent]:
        """The events of `kind` (for `sid`, when given) whose detail has all the given items."""
        return [
            e
            for e in self.events
            if e.kind == kind
            and (sid is None or e.sid == sid)
            and all(k in e.detail and e.detail[k] == v for k, v in detail.items())
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Return once `predicate()` holds, re-checked after every event; TimeoutError naming the last events."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            tail = "; ".join(f"{e.kind} {e.sid} {e.detail}" for e in self.events[-TAIL_SHOWN:])
            raise TimeoutError(f"phone network condition not met within {timeout_s} s; last events: {tail}") from None
