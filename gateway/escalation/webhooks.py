"""Twilio webhooks: SMS in (wearables' frames and responders' replies), delivery and call statuses, call TwiML.

Every request must carry a valid `X-Twilio-Signature` for the configured public URL (twilio's RequestValidator);
anything else gets 403 and is logged and counted. Handlers are idempotent: Twilio retries, and a repeated status,
digit or reply changes nothing twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import structlog
from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from gateway.core.authenticate import AuthRules
from gateway.core.incident import AlertState
from gateway.core.ladder import SendOutcome, Target
from gateway.core.ratelimit import RateLimiter
from gateway.errors import StoreUnavailable
from gateway.escalation import messages
from gateway.escalation.engine import EscalationEngine
from gateway.escalation.sender import (
    CALL_GATHER_PATH,
    CALL_STATUS_PATH,
    CALL_TWIML_PATH,
    SMS_INBOUND_PATH,
    SMS_STATUS_PATH,
    mask_phone,
    webhook_url,
)
from gateway.ingest.frames import accept_signed_frame
from gateway.ingest.pipeline import SignalPipeline
from gateway.observability import Metrics
from gateway.protocol.sms import sms_frame
from gateway.rejection import Rejection
from gateway.store.incidents import AckResult, Outcome
from gateway.store.models import Device, Incident, Notification
from gateway.store.registry import DeviceDirectory

log = structlog.get_logger(__name__)

TWIML: Final = "application/xml"
SMS_TRANSPORT: Final = "sms"
#: What a reply must contain: the incident's 4 digits, alone or among words ("ok 4821", "4821 on my way").
_CODE: Final = re.compile(r"(?<!\d)(\d{4})(?!\d)")
#: Seconds a call waits for a digit after the prompt, and how often the prompt is spoken.
GATHER_TIMEOUT_S: Final = 8
PROMPT_REPEATS: Final = 2
#: Provider statuses in the order they happen: a late or repeated callback never moves a row backwards.
_SMS_STATUS: Final = {
    "queued": 0,
    "accepted": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 4,
    "undelivered": 5,
    "failed": 5,
}
_CALL_STATUS: Final = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "answered": 3,
    "completed": 5,
    "busy": 5,
    "no-answer": 5,
    "failed": 5,
    "canceled": 5,
}
_OUTCOME: Final = {
    "sent": SendOutcome.SENT,
    "delivered": SendOutcome.DELIVERED,
    "undelivered": SendOutcome.FAILED,
    "failed": SendOutcome.FAILED,
    "ringing": SendOutcome.RINGING,
    "in-progress": SendOutcome.IN_PROGRESS,
    "answered": SendOutcome.IN_PROGRESS,
    "completed": SendOutcome.COMPLETED,
    "busy": SendOutcome.BUSY,
    "no-answer": SendOutcome.NO_ANSWER,
    "canceled": SendOutcome.FAILED,
}
_PROGRESS: Final = {"pending": -1, "sending": -1, **{k: v for k, v in _CALL_STATUS.items()}, **_SMS_STATUS}


@dataclass(frozen=True, slots=True)
class WebhookDeps:
    """What the webhooks need; built by the composition root."""

    engine: EscalationEngine
    public_url: str
    auth_token: str
    time_zone: str
    directory: DeviceDirectory
    pipeline: SignalPipeline
    rules: AuthRules
    metrics: Metrics
    #: A stored press seen again (a retried SMS): its state goes out again.
    ensure_published: Callable[[str], None]
    #: Per-device token bucket for chatter frames (http.device_rate_per_s / device_burst).
    device_rate_per_s: float
    device_burst: int


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TwilioWebhooks:
    """The routes Twilio calls; mount with `routes()` on the gateway's HTTP server."""

    def __init__(self, deps: WebhookDeps) -> None:
        self._deps = deps
        self._validator = RequestValidator(deps.auth_token)
        # Chatter (heartbeats) by SMS is throttled per device like over HTTPS; presses never are.
        self._per_device = RateLimiter(deps.device_rate_per_s, deps.device_burst)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(SMS_INBOUND_PATH, self._signed("sms-in", self.sms_in)),
            web.post(SMS_STATUS_PATH, self._signed("sms-status", self.sms_status)),
            web.post(CALL_TWIML_PATH, self._signed("voice-answer", self.voice_answer)),
            web.post(CALL_GATHER_PATH, self._signed("voice-gather", self.voice_gather)),
            web.post(CALL_STATUS_PATH, self._signed("voice-status", self.voice_status)),
        ]

    def _signed(self, kind: str, handler: Callable[[web.Request, dict[str, str]], Awaitable[web.Response]]) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            form = await request.post()
            params = {k: str(v) for k, v in form.items()}
            url = self._deps.public_url.rstrip("/") + request.path_qs
            signature = request.headers.get("X-Twilio-Signature", "")
            if not signature or not self._validator.validate(url, params, signature):
                self._deps.metrics.webhooks.labels(kind, "forbidden").inc()
                log.warning("webhook refused: bad or missing signature", kind=kind, peer=request.remote)
                raise web.HTTPForbidden(text="X-Twilio-Signature is missing or does not match this request")
            try:
                response = await handler(request, params)
            except StoreUnavailable as exc:
                self._deps.metrics.webhooks.labels(kind, "unavailable").inc()
                log.warning("webhook not handled: database unavailable", kind=kind, error=str(exc))
                raise web.HTTPServiceUnavailable(text="database unavailable; retry") from None
            self._deps.metrics.webhooks.labels(kind, "ok").inc()
            return response

        return checked

    # --- SMS ----------------------------------------------------------------------------------------------------

    async def sms_in(self, request: web.Request, params: dict[str, str]) -> web.Response:
        """A text to the gateway's number: a wearable's signed frame, or a responder's reply with a code."""
        sender, body = params.get("From", ""), params.get("Body", "")
        frame = sms_frame(body)
        if frame is None:
            return _twiml_message(await self._reply(sender, body))
        if isinstance(frame, Rejection):
            self._refused_frame(sender, frame)
            return _twiml_message(None)
        deps = self._deps
        result = await accept_signed_frame(
            frame,
            transport=SMS_TRANSPORT,
            directory=deps.directory,
            pipeline=deps.pipeline,
            rules=deps.rules,
            metrics=deps.metrics,
            now=datetime.now(UTC),
            sender_phone=sender,
            peer=mask_phone(sender),
            throttle=lambda device_id: self._per_device.acquire(device_id, time.monotonic()),
        )
        if isinstance(result, Rejection):
            self._refused_frame(sender, result)
            return _twiml_message(None)
        outcome = result.outcome
        if outcome.outcome is Outcome.DUPLICATE and outcome.incident_id is not None:
            deps.ensure_published(outcome.incident_id)
        if outcome.incident_id is not None:
            deps.engine.poke([outcome.incident_id])
        if result.signed.frame.event.raises_incident:
            log.info("alert accepted by SMS", device_id=result.signed.frame.device_id, alert_id=outcome.incident_id)
            return _twiml_message("Alert received. Help is being arranged.")
        return _twiml_message(None)

    def _refused_frame(self, sender: str, rejection: Rejection) -> None:
        self._deps.metrics.webhooks.labels("sms-frame", rejection.reason.value).inc()
        log.info("SMS frame refused", sender=mask_phone(sender), reason=rejection.reason.value, detail=rejection.detail)

    async def _reply(self, sender: str, body: str) -> str | None:
        """A responder's reply: acknowledge the open incident they were notified of whose code the text holds."""
        codes = _CODE.findall(body)
        notified = await Notification.filter(phone=sender).order_by("-id").limit(200)
        incident_ids = list(dict.fromkeys(n.incident_id for n in notified))
        if not incident_ids:
            # Not a number the gateway ever texted: no answer (each reply costs an SMS, and says nothing to strangers).
            self._deps.metrics.webhooks.labels("sms-in", "stranger").inc()
            log.info("SMS from a number never notified: ignored", sender=mask_phone(sender))
            return None
        if not codes:
            log.info("SMS reply without a code", sender=mask_phone(sender))
            return messages.SMS_REPLY_UNKNOWN
        incidents = await Incident.filter(id__in=incident_ids, short_code__in=codes).order_by("-received_at")
        if not incidents:
            return messages.SMS_REPLY_UNKNOWN
        incident = incidents[0]
        note = next(n for n in notified if n.incident_id == incident.id)
        target = Target(note.target_key, note.target_name, note.phone)
        outcome = await self._deps.engine.acknowledge(incident.id, by=note.target_name, via="sms", target=target)
        device = await Device.get(device_id=incident.device_id)
        facts = self._deps.engine.directory.facts(await Incident.get(id=incident.id), device)
        log.info("SMS acknowledgement", alert_id=incident.id, result=outcome.result.value)
        if outcome.result is AckResult.ACKNOWLEDGED:
            return messages.sms_reply_acknowledged(facts)
        fresh = await Incident.get(id=incident.id)
        if AlertState(fresh.state) is AlertState.ACKNOWLEDGED:
            return messages.sms_reply_already(facts, fresh.acknowledged_by)
        return messages.sms_reply_closed(facts, fresh.state)

    async def sms_status(self, request: web.Request, params: dict[str, str]) -> web.Response:
        status = params.get("MessageStatus") or params.get("SmsStatus", "")
        await self._status(request.query.get("key", ""), status, params.get("ErrorCode"))
        return web.Response(status=204)

    # --- voice --------------------------------------------------------------------------------------------------

    async def voice_answer(self, request: web.Request, params: dict[str, str]) -> web.Response:
        """The call was answered: say who and where, and gather one digit (1 takes it, 2 passes it)."""
        key = request.query.get("key", "")
        row = await Notification.get_or_none(key=key)
        response = VoiceResponse()
        if row is None or not await self._still_open(row.incident_id):
            response.say(messages.CALL_TOO_LATE)
            response.hangup()
            return _twiml(response)
        gather_url = webhook_url(self._deps.public_url, CALL_GATHER_PATH, key)
        for _ in range(PROMPT_REPEATS):
            gather = response.gather(
                input="dtmf", num_digits=1, timeout=GATHER_TIMEOUT_S, action=gather_url, method="POST"
            )
            gather.say(f"{row.body} {messages.CALL_PROMPT}")
        response.say(messages.CALL_NO_INPUT)
        response.hangup()
        return _twiml(response)

    async def voice_gather(self, request: web.Request, params: dict[str, str]) -> web.Response:
        key = request.query.get("key", "")
        digits = params.get("Digits", "")
        row = await Notification.get_or_none(key=key)
        response = VoiceResponse()
        if row is None:
            response.say(messages.CALL_TOO_LATE)
        elif digits == "1":
            target = Target(row.target_key, row.target_name, row.phone)
            outcome = await self._deps.engine.acknowledge(
                row.incident_id, by=row.target_name, via="voice", target=target
            )
            log.info("voice acknowledgement", alert_id=row.incident_id, result=outcome.result.value)
            said = messages.CALL_ACKNOWLEDGED if outcome.result is AckResult.ACKNOWLEDGED else messages.CALL_TOO_LATE
            response.say(said)
        elif digits == "2":
            await self._deps.engine.send_outcome(key, SendOutcome.PASSED, "pressed 2")
            response.say(messages.CALL_PASSED)
        else:
            gather = response.gather(
                input="dtmf",
                num_digits=1,
                timeout=GATHER_TIMEOUT_S,
                action=webhook_url(self._deps.public_url, CALL_GATHER_PATH, key),
                method="POST",
            )
            gather.say(messages.CALL_PROMPT)
            response.say(messages.CALL_NO_INPUT)
        response.hangup()
        return _twiml(response)

    async def voice_status(self, request: web.Request, params: dict[str, str]) -> web.Response:
        await self._status(request.query.get("key", ""), params.get("CallStatus", ""), params.get("ErrorCode"))
        return web.Response(status=204)

    # --- shared -------------------------------------------------------------------------------------------------

    async def _status(self, key: str, status: str, error_code: str | None) -> None:
        """Record a provider status once, in order; report it to the ladder."""
        row = await Notification.get_or_none(key=key)
        if row is None or status not in _PROGRESS:
            log.info("status for an unknown send or of an unknown kind", key=key, status=status)
            return
        if _PROGRESS[status] <= _PROGRESS.get(row.status, -1) and status != row.status:
            return  # late: a newer status is already recorded
        if status == row.status:
            return  # Twilio retried the callback
        await Notification.filter(key=key).update(status=status, updated_at=datetime.now(UTC))
        outcome = _OUTCOME.get(status)
        if outcome is not None:
            detail = f"error {error_code}" if error_code else None
            await self._deps.engine.send_outcome(key, outcome, detail)

    async def _still_open(self, incident_id: str) -> bool:
        incident = await Incident.get_or_none(id=incident_id)
        return incident is not None and AlertState(incident.state) in (
            AlertState.RAISED,
            AlertState.NOTIFYING,
            AlertState.EXHAUSTED,
        )


def _twiml(response: VoiceResponse | MessagingResponse) -> web.Response:
    return web.Response(text=str(response), content_type=TWIML)


def _twiml_message(text: str | None) -> web.Response:
    response = MessagingResponse()
    if text:
        response.message(text)
    return _twiml(response)
