"""Twilio REST resources of the phone network simulator: records, their JSON, list filters and pages; no I/O."""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any, Final, NamedTuple, TypeVar
from urllib.parse import urlencode, urlsplit

#: The only REST API version the simulator speaks (the one twilio-python's Api domain uses).
API_VERSION: Final = "2010-04-01"
#: Where every Twilio error code is documented; error bodies carry it as `more_info`.
ERRORS_DOC: Final = "https://www.twilio.com/docs/errors/"
#: Twilio's default and largest PageSize for list requests.
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
#: Twilio refuses message bodies longer than this (error 21617).
MAX_BODY_CHARS: Final = 1600
#: E.164: "+", a country code not starting with 0, at most 15 digits in all.
E164: Final = re.compile(r"\+[1-9]\d{6,14}")
#: Twilio's default and largest call `Timeout` (seconds a call rings before "no-answer").
CALL_TIMEOUT_S: Final = 60
MAX_CALL_TIMEOUT_S: Final = 600
#: Call progress events a StatusCallbackEvent may ask for ("completed" is always sent).
CALL_EVENTS: Final = frozenset({"initiated", "ringing", "answered", "completed"})

# Characters of the GSM 03.38 default alphabet and its extension table: a body of only these is sent as GSM-7
# (160 characters a segment, 153 when concatenated); any other character makes the whole body UCS-2 (70 / 67).
_GSM7: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED: Final = frozenset("^{}\\[~]|€\f")


def new_sid(prefix: str) -> str:
    """A resource SID as Twilio makes them: a two-letter type prefix and 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime | None) -> str | None:
    """A timestamp as the 2010-04-01 API writes it: "Thu, 24 Aug 2023 05:01:45 +0000"."""
    return None if moment is None else format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def mask_number(number: str) -> str:
    """A phone number fit for logs: "+1555***0001" (country and area code, last four digits)."""
    if len(number) <= 8:
        return "***" + number[-2:]
    return number[:5] + "***" + number[-4:]


def formatted_number(number: str) -> str:
    """Twilio's `to_formatted`/`from_formatted`: "(555) 123-0001" for North American numbers, else E.164."""
    if len(number) == 12 and number.startswith("+1") and number[1:].isdigit():
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


def segments(body: str) -> int:
    """How many SMS segments Twilio bills `body` as."""
    if all(c in _GSM7 or c in _GSM7_EXTENDED for c in body):
        length = sum(2 if c in _GSM7_EXTENDED else 1 for c in body)
        single, part = 160, 153
    else:
        length = sum(2 if ord(c) > 0xFFFF else 1 for c in body)  # UTF-16 code units
        single, part = 70, 67
    return 1 if length <= single else math.ceil(length / part)


def twilio_error(status: int, code: int, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of a Twilio REST error (the legacy shape twilio-python turns into TwilioRestException)."""
    return {"code": code, "message": message, "more_info": f"{ERRORS_DOC}{code}", "status": status, **extra}


def is_callback_url(url: str) -> bool:
    """Twilio accepts only absolute http(s) URLs for webhooks and callbacks."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# --- records ------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class MessageRecord:
    """One Message resource as the simulator holds it; `status` and the dates change as it moves."""

    sid: str
    seq: int
    to: str
    from_: str
    body: str
    direction: str  # "outbound-api", "outbound-reply" or "inbound"
    status: str
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    status_callback: str | None = None
    messaging_service_sid: str | None = None
    error_code: int | None = None
    error_message: str | None = None


@dataclass(slots=True)
class CallRecord:
    """One Call resource as the simulator holds it, with what it was created with."""

    sid: str
    seq: int
    to: str
    from_: str
    status: str
    date_created: datetime
    date_updated: datetime
    url: str | None
    method: str
    twiml: str | None
    timeout_s: int
    status_callback: str | None
    status_callback_method: str
    status_callback_events: frozenset[str]
    direction: str = "outbound-api"
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_s: int | None = None
    callbacks_sent: int = 0
    answered_by: str | None = None


def message_json(m: MessageRecord, account_sid: str) -> dict[str, Any]:
    """The Message resource as the API returns it."""
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{m.sid}"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": m.body,
        "date_created": rfc2822(m.date_created),
        "date_sent": rfc2822(m.date_sent),
        "date_updated": rfc2822(m.date_updated),
        "direction": m.direction,
        "error_code": m.error_code,
        "error_message": m.error_message,
        "from": m.from_,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": "0",
        "num_segments": str(segments(m.body)),
        "price": None,
        "price_unit": "USD",
        "sid": m.sid,
        "status": m.status,
        "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
        "to": m.to,
        "uri": f"{uri}.json",
    }


def call_json(c: CallRecord, account_sid: str) -> dict[str, Any]:
    """The Call resource as the API returns it."""
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{c.sid}"
    return {
        "account_sid": account_sid,
        "annotation": None,
        "answered_by": c.answered_by,
        "api_version": API_VERSION,
        "caller_name": None,
        "date_created": rfc2822(c.date_created),
        "date_updated": rfc2822(c.date_updated),
        "direction": c.direction,
        "duration": None if c.duration_s is None else str(c.duration_s),
        "end_time": rfc2822(c.end_time),
        "forwarded_from": None,
        "from": c.from_,
        "from_formatted": formatted_number(c.from_),
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": None,
        "price": None,
        "price_unit": "USD",
        "queue_time": "0",
        "sid": c.sid,
        "start_time": rfc2822(c.start_time),
        "status": c.status,
        "subresource_uris": {
            "notifications": f"{uri}/Notifications.json",
            "recordings": f"{uri}/Recordings.json",
            "events": f"{uri}/Events.json",
        },
        "to": c.to,
        "to_formatted": formatted_number(c.to),
        "trunk_sid": None,
        "uri": f"{uri}.json",
    }


# --- create requests ----------------------------------------------------------------------------------------------


class Refusal(NamedTuple):
    """A request the API refuses, with Twilio's error code for it."""

    code: int
    message: str
    status: int = 400


@dataclass(frozen=True, slots=True)
class MessageRequest:
    """A valid `POST Messages.json`."""

    to: str
    from_: str
    body: str
    status_callback: str | None
    messaging_service_sid: str | None


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A valid `POST Calls.json`."""

    to: str
    from_: str
    url: str | None
    method: str
    twiml: str | None
    timeout_s: int
    status_callback: str | None
    status_callback_method: str
    status_callback_events: frozenset[str]


def _check_to(to: str, invalid: Callable[[str], bool]) -> Refusal | None:
    if not E164.fullmatch(to) or invalid(to):
        return Refusal(21211, f"The 'To' number {to} is not a valid phone number.")
    return None


def read_message_request(
    form: Mapping[str, str], owned: Collection[str], invalid: Callable[[str], bool]
) -> MessageRequest | Refusal:
    """Check a message create as Twilio does: `owned` are the account's numbers, `invalid(to)` a dead number."""
    to, from_, body = form.get("To", "").strip(), form.get("From", "").strip(), form.get("Body", "")
    service = form.get("MessagingServiceSid") or None
    callback = form.get("StatusCallback") or None
    if not from_ and service is not None and owned:
        from_ = next(iter(owned))  # the service's sender pool is the account's numbers
    if not to:
        return Refusal(21604, "A 'To' phone number is required.")
    if (refusal := _check_to(to, invalid)) is not None:
        return refusal
    if not from_:
        return Refusal(21603, "A 'From' phone number is required.")
    if from_ not in owned:
        return Refusal(
            21606,
            f"The From phone number {from_} is not a valid, SMS-capable inbound phone number or short code for "
            "your account.",
        )
    if not body:
        return Refusal(21602, "Message body is required.")
    if len(body) > MAX_BODY_CHARS:
        return Refusal(21617, "The concatenated message body exceeds the 1600 character limit.")
    if callback is not None and not is_callback_url(callback):
        return Refusal(21609, f"Invalid StatusCallback url: {callback}")
    return MessageRequest(to, from_, body, callback, service)


def read_call_request(
    form: Mapping[str, str], events: Sequence[str], owned: Collection[str], invalid: Callable[[str], bool]
) -> CallRequest | Refusal:
    """Check a call create as Twilio does; `events` are the StatusCallbackEvent values (repeated or spaced)."""
    to, from_ = form.get("To", "").strip(), form.get("From", "").strip()
    url, twiml = form.get("Url") or None, form.get("Twiml") or None
    callback = form.get("StatusCallback") or None
    method = form.get("Method", "POST").upper()
    callback_method = form.get("StatusCallbackMethod", "POST").upper()
    if not to:
        return Refusal(21201, "No 'To' number is specified")
    if (refusal := _check_to(to, invalid)) is not None:
        return refusal
    if not from_:
        return Refusal(21213, "No 'From' number is specified")
    if from_ not in owned:
        return Refusal(21210, f"The source phone number provided, {from_}, is not yet verified for your account.")
    if twiml is None and (url is None or not is_callback_url(url)):
        return Refusal(21205, "Url or Twiml is required, and Url must be an absolute http(s) URL.")
    if callback is not None and not is_callback_url(callback):
        return Refusal(21609, f"Invalid StatusCallback url: {callback}")
    if method not in ("GET", "POST") or callback_method not in ("GET", "POST"):
        return Refusal(21206, "Method and StatusCallbackMethod must be GET or POST.")
    if unknown := set(events) - CALL_EVENTS:
        return Refusal(21626, f"Invalid StatusCallbackEvent: {', '.join(sorted(unknown))}")
    try:
        timeout_s = int(form.get("Timeout", CALL_TIMEOUT_S))
    except ValueError:
        return Refusal(20001, "Timeout must be an integer.")
    timeout_s = min(max(timeout_s, 1), MAX_CALL_TIMEOUT_S)
    return CallRequest(to, from_, url, method, twiml, timeout_s, callback, callback_method, frozenset(events))


# --- list filters -------------------------------------------------------------------------------------------------


class TimeBounds(NamedTuple):
    """A filter on one timestamp field: `Field=`, `Field>=` (sent by the library as "Field>") and `Field<=`.

    Each bound is a date (compared by UTC day) or a datetime (compared to the second); None: no bound.
    """

    on: date | datetime | None
    after: date | datetime | None
    before: date | datetime | None

    def admits(self, moment: datetime | None) -> bool:
        if self.on is None and self.after is None and self.before is None:
            return True
        if moment is None:
            return False
        moment = moment.astimezone(UTC).replace(microsecond=0)
        return (
            (self.on is None or _key(moment, self.on) == self.on)
            and (self.after is None or _key(moment, self.after) >= self.after)
            and (self.before is None or _key(moment, self.before) <= self.before)
        )


def _key(moment: datetime, bound: date | datetime) -> date | datetime:
    return moment if isinstance(bound, datetime) else moment.date()


def parse_time(value: str) -> date | datetime:
    """ "2024-05-01" or "2024-05-01T12:00:00Z" (as twilio-python serialises); raise ValueError otherwise."""
    value = value.strip()
    if len(value) == 10:
        return date.fromisoformat(value)
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def time_bounds(query: Mapping[str, str], name: str) -> TimeBounds:
    """The bounds on `name` in a list request's query; raise ValueError on an unreadable date."""
    on = query.get(name)
    after = query.get(f"{name}>") or query.get(f"{name}>=")
    before = query.get(f"{name}<") or query.get(f"{name}<=")
    if on is not None and on[:2] in (">=", "<="):  # "DateSent=>=2024-05-01", the form the API docs show
        after, before, on = (on[2:], before, None) if on[0] == ">" else (after, on[2:], None)
    return TimeBounds(*(None if v is None or v == "" else parse_time(v) for v in (on, after, before)))


def select_messages(records: Iterable[MessageRecord], query: Mapping[str, str]) -> list[MessageRecord]:
    """The messages a list request's To, From and DateSent filters keep, newest first; ValueError on a bad date."""
    sent = time_bounds(query, "DateSent")
    return [
        m
        for m in sorted(records, key=lambda m: m.seq, reverse=True)
        if query.get("To", m.to) == m.to and query.get("From", m.from_) == m.from_ and sent.admits(m.date_sent)
    ]


def select_calls(records: Iterable[CallRecord], query: Mapping[str, str]) -> list[CallRecord]:
    """The calls a list request's To, From, Status, StartTime and EndTime filters keep, newest first."""
    started, ended = time_bounds(query, "StartTime"), time_bounds(query, "EndTime")
    return [
        c
        for c in sorted(records, key=lambda c: c.seq, reverse=True)
        if query.get("To", c.to) == c.to
        and query.get("From", c.from_) == c.from_
        and query.get("Status", c.status) == c.status
        and started.admits(c.start_time)
        and ended.admits(c.end_time)
    ]


# --- pages --------------------------------------------------------------------------------------------------------

R = TypeVar("R", MessageRecord, CallRecord)

#: Query keys that select a page rather than filter the list.
_PAGING_KEYS: Final = frozenset({"Page", "PageSize", "PageToken"})


def page_envelope(
    records: Sequence[R],
    query: Sequence[tuple[str, str]],
    path: str,
    key: str,
    render: Callable[[R], dict[str, Any]],
) -> dict[str, Any]:
    """One page of `records` (already filtered, newest first) in the API's list envelope.

    Paging follows the API: `PageSize` (default 50, at most 1000), `Page` (a number, informative) and
    `PageToken` ("PA<sid>": the records after that one; "PB<sid>": the ones before it), so a page stays put
    while new records arrive. Raises ValueError on a bad PageSize, Page or PageToken.
    """
    params = dict(query)
    size = int(params.get("PageSize", DEFAULT_PAGE_SIZE))
    number = int(params.get("Page", 0))
    if not 1 <= size <= MAX_PAGE_SIZE or number < 0:
        raise ValueError("PageSize must be 1..1000 and Page at least 0")
    token = params.get("PageToken", "")
    sids = [r.sid for r in records]
    if token[:2] in ("PA", "PB") and token[2:] in sids:
        at = sids.index(token[2:])
        start = at + 1 if token[:2] == "PA" else max(0, at - size)
        stop = start + size if token[:2] == "PA" else at
    elif token:
        raise ValueError(f"PageToken {token!r} is not valid")
    else:
        start, stop = number * size, number * size + size
    chunk = list(records[start:stop])
    filters: list[tuple[str, str]] = [(k, v) for k, v in query if k not in _PAGING_KEYS]

    def link(page: int, page_token: str | None) -> str:
        items = [*filters, ("PageSize", str(size)), ("Page", str(page))]
        if page_token:
            items.append(("PageToken", page_token))
        return f"{path}?{urlencode(items)}"

    return {
        key: [render(r) for r in chunk],
        "end": start + max(len(chunk), 1) - 1,
        "first_page_uri": link(0, None),
        "next_page_uri": link(number + 1, f"PA{chunk[-1].sid}") if stop < len(records) and chunk else None,
        "page": number,
        "page_size": size,
        "previous_page_uri": link(max(number - 1, 0), f"PB{chunk[0].sid}") if start > 0 and chunk else None,
        "start": start,
        "uri": f"{path}?{urlencode(query)}" if query else path,
    }
