"""A local Twilio-compatible phone network: the REST API the gateway calls, handsets, and signed webhooks back.

`PhoneNetwork` serves the parts of Twilio's 2010-04-01 REST API the gateway uses (Messages and Calls: create,
fetch, list) on a loopback port, and plays the other side: simulated handsets with scripted `Behaviour` that
receive texts and calls, reply, answer, listen to TwiML and press keys. Everything Twilio would POST to the
gateway (status callbacks, the voice URL, <Gather> actions, inbound SMS) is POSTed with a real
`X-Twilio-Signature`, so the gateway's webhook validation runs unchanged. Nothing needs the internet.

Errors: the API answers Twilio's error JSON (twilio-python raises TwilioRestException from it); misuse of the
simulator itself raises PhoneNetError (a firmware_sim.errors.SimError); a crash of one of its own tasks is
re-raised as an ExceptionGroup when the network is closed, so a bug cannot hide behind a passing test.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import math
import re
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, NamedTuple, Self
from urllib.parse import urljoin

import structlog
from aiohttp import web

from firmware_sim.errors import SimError
from firmware_sim.phonenet_events import EventKind, EventLog, NetEvent
from firmware_sim.phonenet_handset import Behaviour, CallFate, Handset, ReceivedCall, ReceivedSms, SmsFate
from firmware_sim.phonenet_resources import (
    API_VERSION,
    CallRecord,
    MessageRecord,
    Refusal,
    call_json,
    is_callback_url,
    mask_number,
    message_json,
    new_sid,
    page_envelope,
    read_call_request,
    read_message_request,
    rfc2822,
    segments,
    select_calls,
    select_messages,
    twilio_error,
)
from firmware_sim.phonenet_twiml import (
    Gather,
    Hangup,
    Message,
    Pause,
    Redirect,
    Say,
    TwimlError,
    Unsupported,
    Verb,
    gathered_digits,
    parse_twiml,
)
from firmware_sim.phonenet_webhooks import WebhookAnswer, WebhookAttempt, WebhookSender

log = structlog.get_logger(__name__)

#: How long a handset rings before it is busy or does not answer: Twilio's real 10-60 s, compressed for tests.
RING_S: Final = 0.05
#: Gap between a resource's successive state changes (queued -> sent -> delivered): keeps callbacks in order
#: while a test runs in milliseconds.
CALLBACK_SPACING_S: Final = 0.01
#: TwiML <Pause> and <Gather timeout> are in seconds of call time; the simulator lets 1 s pass in 10 ms.
TWIML_TIME_SCALE: Final = 0.01
#: TwiML documents one call may fetch (Url, Gather actions, Redirects): bounds a gateway that loops.
MAX_TWIML_DOCUMENTS: Final = 10
#: Default budget of `wait_for`.
WAIT_TIMEOUT_S: Final = 10.0
#: Twilio's error for a message the carrier could not deliver ("Unreachable destination handset").
UNREACHABLE_HANDSET: Final = 30003
#: Call statuses after which nothing more happens.
FINAL_CALL_STATUSES: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


class PhoneNetError(SimError):
    """The simulator was used wrongly (not started, an unknown own number, a number without a webhook)."""


@dataclass(frozen=True, slots=True)
class OwnNumber:
    """One of the account's Twilio numbers and where its inbound traffic goes (IncomingPhoneNumber config)."""

    number: str
    sms_url: str | None
    voice_url: str | None


class InboundResult(NamedTuple):
    """The gateway's answer to an inbound SMS webhook."""

    #: HTTP status of the last attempt; 0 when no attempt got an answer.
    status: int
    #: The answer's body (TwiML, or whatever came back).
    body: str
    #: SID of the inbound Message resource.
    sid: str


class PhoneNetwork:
    """The simulated network; `async with` it to serve the API at `base_url` and run the handsets."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context`: what webhooks to https gateways trust (a test CA); None: the system's defaults."""
        if not re.fullmatch(r"AC[0-9a-fA-F]{32}", account_sid):
            raise ValueError("account_sid must be 'AC' and 32 hex digits")
        if not auth_token:
            raise ValueError("auth_token must not be empty")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._host = host
        self._port = port
        self._webhooks_ssl = ssl_context
        self._log = EventLog()
        #: Everything that happened, in order.
        self.events: list[NetEvent] = self._log.events
        self._handsets: dict[str, Handset] = {}
        self._numbers: dict[str, OwnNumber] = {}
        self._messages: dict[str, MessageRecord] = {}
        self._calls: dict[str, CallRecord] = {}
        self._received_calls: dict[str, ReceivedCall] = {}
        self._call_tasks: dict[str, asyncio.Task[None]] = {}
        self._faults: deque[int] = deque()
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashes: list[Exception] = []
        self._closing = False
        self._stack = AsyncExitStack()
        self._webhooks: WebhookSender | None = None
        self._base_url: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._guard])
        accounts = f"/{API_VERSION}/Accounts/{{account}}"
        app.router.add_post(f"{accounts}/Messages.json", self._create_message)
        app.router.add_get(f"{accounts}/Messages.json", self._list_messages)
        app.router.add_get(f"{accounts}/Messages/{{sid}}.json", self._fetch_message)
        app.router.add_post(f"{accounts}/Calls.json", self._create_call)
        app.router.add_get(f"{accounts}/Calls.json", self._list_calls)
        app.router.add_get(f"{accounts}/Calls/{{sid}}.json", self._fetch_call)
        app.router.add_post(f"{accounts}/Calls/{{sid}}.json", self._update_call)
        self._closing = False
        async with AsyncExitStack() as stack:
            # Closed in reverse: the API stops taking requests, then the network's tasks end, then webhooks close.
            self._webhooks = await stack.enter_async_context(WebhookSender(self._auth_token, self._webhooks_ssl))
            stack.push_async_callback(self._end_tasks)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, self._host, self._port).start()
            host, port = runner.addresses[0][:2]
            self._base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            self._stack = stack.pop_all()
        log.info("phone network up", base_url=self._base_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
        self._webhooks = self._base_url = None
        log.info("phone network down")
        if self._crashes and exc_type is None:
            raise ExceptionGroup("phone network tasks crashed", self._crashes)

    async def _end_tasks(self) -> None:
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        if self._closing:
            work.close()
            return None
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and isinstance(error := task.exception(), Exception):
            log.error("phone network task crashed", task=task.get_name(), exc_info=error)
            self._crashes.append(error)

    # --- public surface -------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API's base URL ("http://127.0.0.1:PORT"), to use in place of https://api.twilio.com."""
        if self._base_url is None:
            raise PhoneNetError("the phone network is not running")
        return self._base_url

    @property
    def account_sid(self) -> str:
        return self._account_sid

    def own_number(self, number: str, *, sms_url: str | None = None, voice_url: str | None = None) -> OwnNumber:
        """Give the account a Twilio number; its inbound texts are POSTed to `sms_url` (signed)."""
        for url in (sms_url, voice_url):
            if url is not None and not is_callback_url(url):
                raise ValueError(f"{url!r} is not an absolute http(s) URL")
        own = OwnNumber(_clean(number), sms_url, voice_url)
        self._numbers[own.number] = own
        return own

    def phone(self, number: str, *, name: str = "", behaviour: Behaviour | None = None) -> Handset:
        """The handset with `number`, made if new; `behaviour` (when given) replaces its current one."""
        handset = self._handset(_clean(number))
        if name:
            handset.name = name
        if behaviour is not None:
            handset.behaviour = behaviour
        return handset

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` create requests (Messages or Calls) with `status` and Twilio's error JSON."""
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("count must be >= 0 and status a 4xx or 5xx")
        self._faults.extend([status] * count)

    def status_of(self, sid: str) -> str | None:
        """The current status of a Message or Call, or None for an unknown SID."""
        record = self._messages.get(sid) or self._calls.get(sid)
        return None if record is None else record.status

    def find(self, kind: EventKind | str, *, sid: str | None = None, **detail: Any) -> list[NetEvent]:
        """The events of `kind` (for `sid`, when given) whose detail has all the given items."""
        return self._log.find(kind, sid=sid, **detail)

    async def wait_for(
        self,
        predicate: Callable[[PhoneNetwork], bool],
        timeout: float = WAIT_TIMEOUT_S,  # noqa: ASYNC109 (the documented interface; asyncio.timeout inside)
    ) -> None:
        """Return once `predicate(self)` holds; it is re-checked after every event. TimeoutError otherwise."""
        await self._log.wait_for(lambda: predicate(self), timeout)

    async def send_sms(self, *, from_: str, to: str, body: str) -> InboundResult:
        """A handset (any number) texts the account's number `to`: POST its sms_url, signed; the gateway's answer.

        A <Message> in the answered TwiML is delivered to the sender's handset afterwards.
        """
        own = self._numbers.get(_clean(to))
        if own is None or own.sms_url is None:
            raise PhoneNetError(f"{mask_number(to)} is not an own number with an sms_url")
        return await self._inbound_sms(_clean(from_), own, body)

    # --- state ----------------------------------------------------------------------------------------------------

    def _handset(self, number: str) -> Handset:
        handset = self._handsets.get(number)
        if handset is None:
            handset = self._handsets[number] = Handset(number, "", Behaviour())
        return handset

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- webhooks -------------------------------------------------------------------------------------------------

    async def _webhook(
        self,
        url: str,
        params: Mapping[str, str],
        *,
        method: str = "POST",
        purpose: str,
        record: MessageRecord | CallRecord,
    ) -> WebhookAnswer:
        """Send one webhook for `record`, logging every attempt as a WEBHOOK event."""
        assert self._webhooks is not None

        async def report(a: WebhookAttempt) -> None:
            log.debug("webhook", purpose=purpose, sid=record.sid, attempt=a.attempt, status=a.status, error=a.error)
            await self._log.record(
                EventKind.WEBHOOK,
                record.sid,
                record.to,
                record.from_,
                purpose=purpose,
                url=a.url,
                method=a.method,
                attempt=a.attempt,
                status=a.status,
                error=a.error or None,
                signature=a.signature,
            )

        return await self._webhooks.send(url, params, method=method, report=report)

    # --- messages -------------------------------------------------------------------------------------------------

    def _new_message(self, to: str, from_: str, body: str, direction: str, status: str, **extra: Any) -> MessageRecord:
        now = datetime.now(UTC)
        m = MessageRecord(new_sid("SM"), self._next_seq(), to, from_, body, direction, status, now, now, **extra)
        self._messages[m.sid] = m
        log.info("message", sid=m.sid, direction=direction, to=mask_number(to), from_=mask_number(from_))
        return m

    async def _deliver(self, m: MessageRecord) -> None:
        """An outbound message's life: sent, then delivered to the handset (and its reply) or undelivered."""
        handset = self._handset(m.to)
        await asyncio.sleep(CALLBACK_SPACING_S)
        await self._message_status(m, "sent")
        await asyncio.sleep(CALLBACK_SPACING_S)
        if handset.behaviour.sms == "undeliverable":
            await self._message_status(m, "undelivered", UNREACHABLE_HANDSET, "Unreachable destination handset")
            return
        handset.inbox.append(ReceivedSms(m.body, m.sid, m.from_))
        await self._log.record(EventKind.HANDSET_SMS, m.sid, m.to, m.from_, body=m.body, name=handset.name)
        await self._message_status(m, "delivered")
        reply = handset.behaviour.reply_to(m.body)
        own = self._numbers.get(m.from_)
        if reply is not None and own is not None:
            self._spawn(self._reply(handset, own, reply), name=f"phonenet-reply-{m.sid}")

    async def _reply(self, handset: Handset, own: OwnNumber, body: str) -> None:
        await asyncio.sleep(handset.behaviour.reply_after_s)
        await self._inbound_sms(handset.number, own, body)

    async def _message_status(
        self, m: MessageRecord, status: str, error_code: int | None = None, error_message: str | None = None
    ) -> None:
        m.status, m.error_code, m.error_message = status, error_code, error_message
        m.date_updated = datetime.now(UTC)
        if status == "sent":
            m.date_sent = m.date_updated
        await self._log.record(EventKind.MESSAGE_STATUS, m.sid, m.to, m.from_, status=status, error_code=error_code)
        if m.status_callback is None:
            return
        params = {
            "AccountSid": self._account_sid,
            "ApiVersion": API_VERSION,
            "From": m.from_,
            "MessageSid": m.sid,
            "MessageStatus": status,
            "SmsSid": m.sid,
            "SmsStatus": status,
            "To": m.to,
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        await self._webhook(m.status_callback, params, purpose="message-status", record=m)

    async def _inbound_sms(self, from_: str, own: OwnNumber, body: str) -> InboundResult:
        """A handset's text to the account's number: a received Message, POSTed to the number's sms_url."""
        m = self._new_message(own.number, from_, body, "inbound", "received")
        m.date_sent = m.date_created
        await self._log.record(
            EventKind.MESSAGE_CREATED, m.sid, m.to, m.from_, body=body, direction=m.direction, status=m.status
        )
        if own.sms_url is None:
            return InboundResult(0, "", m.sid)
        params = {
            "AccountSid": self._account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": from_,
            "MessageSid": m.sid,
            "NumMedia": "0",
            "NumSegments": str(segments(body)),
            "SmsMessageSid": m.sid,
            "SmsSid": m.sid,
            "SmsStatus": "received",
            "To": own.number,
        }
        answer = await self._webhook(own.sms_url, params, purpose="sms", record=m)
        if answer.ok:
            await self._messaging_twiml(answer.body, own, m)
        return InboundResult(answer.status or 0, answer.body.decode("utf-8", "replace"), m.sid)

    async def _messaging_twiml(self, document: bytes, own: OwnNumber, inbound: MessageRecord) -> None:
        """Send the <Message> replies of the gateway's answer to an inbound text."""
        try:
            verbs = parse_twiml(document)
        except TwimlError as error:
            await self._twiml_error(inbound, 12100, str(error), own.sms_url or "")
            return
        for verb in verbs:
            if not isinstance(verb, Message):
                await self._log.record(
                    EventKind.TWIML_SKIPPED, inbound.sid, own.number, inbound.from_, verb=_verb_name(verb)
                )
                continue
            to, from_ = _clean(verb.to or inbound.from_), _clean(verb.from_ or own.number)
            reply = self._new_message(to, from_, verb.body, "outbound-reply", "queued")
            await self._log.record(
                EventKind.MESSAGE_CREATED,
                reply.sid,
                to,
                from_,
                body=verb.body,
                direction=reply.direction,
                status="queued",
            )
            self._spawn(self._deliver(reply), name=f"phonenet-message-{reply.sid}")

    async def _twiml_error(self, record: MessageRecord | CallRecord, code: int, message: str, url: str) -> None:
        log.warning("gateway twiml unusable", sid=record.sid, code=code, error=message)
        await self._log.record(
            EventKind.TWIML_ERROR, record.sid, record.to, record.from_, code=code, message=message, url=url
        )

    # --- calls ----------------------------------------------------------------------------------------------------

    def _call_params(self, call: CallRecord, status: str) -> dict[str, str]:
        return {
            "AccountSid": self._account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
        }

    async def _call_progress(self, call: CallRecord, status: str, *, final: bool = False) -> None:
        """Log a call's step and send its status callback if asked for (final ones always)."""
        received = self._received_calls.get(call.sid)
        if received is not None and status != "initiated":
            received.status = status
        detail: dict[str, Any] = {"status": status}
        if final:
            detail["duration"] = call.duration_s or 0
        await self._log.record(EventKind.CALL_STATUS, call.sid, call.to, call.from_, **detail)
        log.info("call", sid=call.sid, status=status, to=mask_number(call.to))
        event = {"in-progress": "answered"}.get(status, status)
        if call.status_callback is None or not (final or event in call.status_callback_events):
            return
        params = self._call_params(call, status)
        params["CallbackSource"] = "call-progress-events"
        params["SequenceNumber"] = str(call.callbacks_sent)
        params["Timestamp"] = rfc2822(datetime.now(UTC)) or ""
        if final:
            params["CallDuration"] = str(call.duration_s or 0)
        call.callbacks_sent += 1
        await self._webhook(
            call.status_callback, params, method=call.status_callback_method, purpose="call-status", record=call
        )

    def _end_call(self, call: CallRecord, status: str, duration_s: int = 0) -> bool:
        """Make `call` final; False when it already was."""
        if call.status in FINAL_CALL_STATUSES:
            return False
        call.status, call.duration_s = status, duration_s
        call.end_time = call.date_updated = datetime.now(UTC)
        return True

    async def _run_call(self, call: CallRecord, handset: Handset) -> None:
        """An outbound call's life, by the callee's behaviour; ends with the final status callback."""
        behaviour = handset.behaviour
        loop = asyncio.get_running_loop()
        await asyncio.sleep(CALLBACK_SPACING_S)
        received = self._received_calls[call.sid] = ReceivedCall(call.sid, call.from_)
        handset.calls.append(received)
        await self._call_progress(call, "initiated")
        await asyncio.sleep(CALLBACK_SPACING_S)
        if behaviour.call == "fail":
            status, duration = "failed", 0
        else:
            call.status, call.date_updated = "ringing", datetime.now(UTC)
            await self._call_progress(call, "ringing")
            if behaviour.call == "answer" and behaviour.answer_after_s <= call.timeout_s:
                await asyncio.sleep(behaviour.answer_after_s)
                call.status = "in-progress"
                call.start_time = call.date_updated = datetime.now(UTC)
                answered_at = loop.time()
                await self._call_progress(call, "in-progress")
                await self._converse(call, received)
                status, duration = "completed", max(1, math.ceil(loop.time() - answered_at))
            else:
                await asyncio.sleep(RING_S)
                status, duration = ("busy" if behaviour.call == "busy" else "no-answer"), 0
        if self._end_call(call, status, duration):
            # in a task of its own, so that a hang-up (which cancels this task) cannot cut it off
            self._spawn(self._call_progress(call, status, final=True), name=f"phonenet-final-{call.sid}")

    async def _voice_document(
        self, call: CallRecord, url: str, method: str, params: Mapping[str, str]
    ) -> tuple[Verb, ...] | None:
        answer = await self._webhook(url, params, method=method, purpose="voice", record=call)
        if not answer.ok:
            await self._twiml_error(call, 11200, f"HTTP retrieval failure: status {answer.status}", url)
            return None
        try:
            return parse_twiml(answer.body)
        except TwimlError as error:
            await self._twiml_error(call, 12100, str(error), url)
            return None

    async def _converse(self, call: CallRecord, received: ReceivedCall) -> None:
        """Play the gateway's TwiML to the callee: say, pause, gather (pressing keys once), redirect, hang up."""
        params = self._call_params(call, "in-progress")
        url = call.url or ""
        if call.twiml is not None:
            try:
                verbs: tuple[Verb, ...] | None = parse_twiml(call.twiml)
            except TwimlError as error:
                await self._twiml_error(call, 12100, str(error), url)
                return
        else:
            verbs = await self._voice_document(call, url, call.method, params)
        documents, pressed = 1, self._handset(call.to).behaviour.press
        while verbs is not None:
            follow: tuple[str, str, dict[str, str]] | None = None
            for verb in verbs:
                if isinstance(verb, Say):
                    await self._say(call, received, verb)
                elif isinstance(verb, Pause):
                    await asyncio.sleep(verb.length_s * TWIML_TIME_SCALE)
                elif isinstance(verb, Hangup):
                    return
                elif isinstance(verb, Redirect):
                    follow = (urljoin(url, verb.url), verb.method, params)
                    break
                elif isinstance(verb, Gather):
                    for prompt in verb.prompts:
                        if isinstance(prompt, Say):
                            await self._say(call, received, prompt)
                        else:
                            await asyncio.sleep(prompt.length_s * TWIML_TIME_SCALE)
                    pressed_keys, pressed = pressed or "", None  # keys are pressed at the first <Gather> only
                    digits = gathered_digits(pressed_keys, verb)
                    if digits:
                        received.digits.append(digits)
                        await self._log.record(EventKind.CALL_DIGITS, call.sid, call.to, call.from_, digits=digits)
                        finished = verb.finish_on_key if verb.finish_on_key in pressed_keys else ""
                        sent = {**params, "Digits": digits, "FinishedOnKey": finished}
                        follow = (urljoin(url, verb.action or url), verb.method, sent)
                        break
                    await asyncio.sleep(verb.timeout_s * TWIML_TIME_SCALE)
                elif isinstance(verb, Message | Unsupported):
                    await self._log.record(
                        EventKind.TWIML_SKIPPED, call.sid, call.to, call.from_, verb=_verb_name(verb)
                    )
            if follow is None:
                return
            if documents >= MAX_TWIML_DOCUMENTS or not is_callback_url(follow[0]):
                await self._twiml_error(call, 11215, "too many TwiML documents or no URL to follow", follow[0])
                return
            url, method, form = follow
            documents += 1
            verbs = await self._voice_document(call, url, method, form)

    async def _say(self, call: CallRecord, received: ReceivedCall, say: Say) -> None:
        received.spoken.append(say.text)
        await self._log.record(EventKind.CALL_SAY, call.sid, call.to, call.from_, text=say.text)

    # --- REST API -------------------------------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Authenticate every request; turn aiohttp's errors and crashes into Twilio error JSON."""
        try:
            refused = await self._authenticate(request)
            return refused if refused is not None else await handler(request)
        except web.HTTPException as exc:
            code = 20404 if exc.status == 404 else 20000 + exc.status
            message = f"The requested resource {request.path} was not found" if exc.status == 404 else exc.reason
            return await self._refuse(request, code, message, status=exc.status)
        except Exception as exc:  # answer 500 as Twilio would, and fail the test at exit
            log.exception("phone network api crashed", path=request.path)
            self._crashes.append(exc)
            return _error(500, 20500, "Internal Server Error")

    async def _authenticate(self, request: web.Request) -> web.Response | None:
        expected = base64.b64encode(f"{self._account_sid}:{self._auth_token}".encode()).decode("ascii")
        presented = request.headers.get("Authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Basic {expected}".encode()):
            response = await self._refuse(
                request, 20003, "Authenticate", status=401, detail="Your AccountSid or AuthToken was incorrect."
            )
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        account = request.match_info.get("account")
        if account is not None and account != self._account_sid:
            return await self._refuse(
                request, 20404, f"The requested resource {request.path} was not found", status=404
            )
        return None

    async def _refuse(
        self, request: web.Request, code: int, message: str, *, status: int = 400, **extra: Any
    ) -> web.Response:
        """Answer Twilio's error JSON, and log the refusal."""
        await self._log.record(
            EventKind.API_REJECTED, "", "", "", method=request.method, path=request.path, status=status, code=code
        )
        log.info("api refused", method=request.method, path=request.path, status=status, code=code)
        return _error(status, code, message, **extra)

    async def _form(
        self, request: web.Request, *, injectable: bool = True
    ) -> tuple[Mapping[str, str], list[str]] | web.Response:
        """The form and its StatusCallbackEvent values, or the answer to send instead (an injected fault, 400)."""
        if injectable and self._faults:
            status = self._faults.popleft()
            return await self._refuse(request, 20000 + status, _REASONS.get(status, "Service Error"), status=status)
        try:
            form = await request.post()
        except (ValueError, UnicodeDecodeError) as exc:
            return await self._refuse(request, 20001, f"Unreadable form data: {exc}")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        events = [e for v in form.getall("StatusCallbackEvent", []) if isinstance(v, str) for e in v.split()]
        return fields, events

    async def _create_message(self, request: web.Request) -> web.Response:
        parsed = await self._form(request)
        if isinstance(parsed, web.Response):
            return parsed
        wanted = read_message_request(parsed[0], self._numbers.keys(), self._is_invalid)
        if isinstance(wanted, Refusal):
            return await self._refuse(request, wanted.code, wanted.message, status=wanted.status)
        m = self._new_message(
            wanted.to,
            wanted.from_,
            wanted.body,
            "outbound-api",
            "queued",
            status_callback=wanted.status_callback,
            messaging_service_sid=wanted.messaging_service_sid,
        )
        await self._log.record(
            EventKind.MESSAGE_CREATED, m.sid, m.to, m.from_, body=m.body, direction=m.direction, status=m.status
        )
        self._spawn(self._deliver(m), name=f"phonenet-message-{m.sid}")
        return web.json_response(message_json(m, self._account_sid), status=201)

    async def _create_call(self, request: web.Request) -> web.Response:
        parsed = await self._form(request)
        if isinstance(parsed, web.Response):
            return parsed
        wanted = read_call_request(*parsed, self._numbers.keys(), self._is_invalid)
        if isinstance(wanted, Refusal):
            return await self._refuse(request, wanted.code, wanted.message, status=wanted.status)
        now = datetime.now(UTC)
        call = CallRecord(
            sid=new_sid("CA"),
            seq=self._next_seq(),
            to=wanted.to,
            from_=wanted.from_,
            status="queued",
            date_created=now,
            date_updated=now,
            url=wanted.url,
            method=wanted.method,
            twiml=wanted.twiml,
            timeout_s=wanted.timeout_s,
            status_callback=wanted.status_callback,
            status_callback_method=wanted.status_callback_method,
            status_callback_events=wanted.status_callback_events,
        )
        self._calls[call.sid] = call
        await self._log.record(
            EventKind.CALL_CREATED,
            call.sid,
            call.to,
            call.from_,
            url=call.url,
            status_callback=call.status_callback,
            events=sorted(call.status_callback_events),
        )
        log.info("call", sid=call.sid, status="queued", to=mask_number(call.to), from_=mask_number(call.from_))
        task = self._spawn(self._run_call(call, self._handset(call.to)), name=f"phonenet-call-{call.sid}")
        if task is not None:
            self._call_tasks[call.sid] = task
            task.add_done_callback(lambda _: self._call_tasks.pop(call.sid, None))
        return web.json_response(call_json(call, self._account_sid), status=201)

    def _is_invalid(self, number: str) -> bool:
        handset = self._handsets.get(number)
        return handset is not None and handset.behaviour.invalid

    async def _update_call(self, request: web.Request) -> web.Response:
        """Hang up a call (Status=completed or canceled), as the gateway does once someone acknowledged."""
        call = self._calls.get(request.match_info["sid"])
        if call is None:
            raise web.HTTPNotFound
        parsed = await self._form(request, injectable=False)
        if isinstance(parsed, web.Response):
            return parsed
        wanted = parsed[0].get("Status")
        if wanted not in ("completed", "canceled"):
            return await self._refuse(request, 20001, "The simulator only updates Status (completed or canceled).")
        task = self._call_tasks.get(call.sid)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        answered = call.status == "in-progress"
        status = "completed" if answered else "canceled"
        duration = 0
        if answered and call.start_time is not None:
            duration = max(1, math.ceil((datetime.now(UTC) - call.start_time).total_seconds()))
        if self._end_call(call, status, duration):
            self._spawn(self._call_progress(call, status, final=True), name=f"phonenet-hangup-{call.sid}")
        return web.json_response(call_json(call, self._account_sid))

    async def _fetch_message(self, request: web.Request) -> web.Response:
        m = self._messages.get(request.match_info["sid"])
        if m is None:
            raise web.HTTPNotFound
        return web.json_response(message_json(m, self._account_sid))

    async def _fetch_call(self, request: web.Request) -> web.Response:
        call = self._calls.get(request.match_info["sid"])
        if call is None:
            raise web.HTTPNotFound
        return web.json_response(call_json(call, self._account_sid))

    async def _list_messages(self, request: web.Request) -> web.Response:
        try:
            chosen = select_messages(self._messages.values(), request.query)
        except ValueError as exc:
            return await self._refuse(request, 20001, f"Invalid DateSent: {exc}")
        return await self._page(request, chosen, "messages", lambda m: message_json(m, self._account_sid))

    async def _list_calls(self, request: web.Request) -> web.Response:
        try:
            chosen = select_calls(self._calls.values(), request.query)
        except ValueError as exc:
            return await self._refuse(request, 20001, f"Invalid StartTime or EndTime: {exc}")
        return await self._page(request, chosen, "calls", lambda c: call_json(c, self._account_sid))

    async def _page(
        self, request: web.Request, records: list[Any], key: str, render: Callable[[Any], dict[str, Any]]
    ) -> web.Response:
        try:
            envelope = page_envelope(records, list(request.query.items()), request.path, key, render)
        except ValueError as exc:
            return await self._refuse(request, 20001, str(exc))
        return web.json_response(envelope)


#: Reasons of the statuses fail_next usually injects.
_REASONS: Final = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def _error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    return web.json_response(twilio_error(status, code, message, **extra), status=status)


def _verb_name(verb: Verb) -> str:
    return verb.name if isinstance(verb, Unsupported) else type(verb).__name__


def _clean(number: str) -> str:
    return number.strip()


__all__ = [
    "Behaviour",
    "CallFate",
    "EventKind",
    "Handset",
    "InboundResult",
    "NetEvent",
    "OwnNumber",
    "PhoneNetError",
    "PhoneNetwork",
    "ReceivedCall",
    "ReceivedSms",
    "SmsFate",
]
