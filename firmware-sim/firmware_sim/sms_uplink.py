"""SMS uplink of a wearable without data: the signed frame as a text to the gateway's number, and HTTPS-or-SMS.

`SmsUplink` texts a signed frame (gateway.protocol.sms.encode_sms) from the wearable's registered phone through a
`PhoneNetwork`, the simulated carrier; the gateway confirms an alert with a reply ("Alert received..."). A
`FallbackUplink` tries HTTPS first and texts the same bytes when the gateway could not be reached at all, as
firmware does when the cell has no data bearer. Both answer with the HTTP uplink's `UplinkResult`; its
`transport` says which path carried the signal.
"""

from __future__ import annotations

import asyncio
from typing import Final

from firmware_sim import const
from firmware_sim.phonenet import PhoneNetwork
from firmware_sim.phonenet_twiml import Message, TwimlError, parse_twiml
from firmware_sim.transport import HttpUplink, UplinkResult
from gateway.protocol import SignedFrame, parse_signed_frame
from gateway.protocol.sms import encode_sms

#: The `transport` of a result the SMS path carried (the gateway records the same name).
SMS_TRANSPORT: Final = "sms"
#: A texted alert counts as taken when the gateway's reply says so within this time: a carrier usually delivers
#: in seconds, and a wearer who sees nothing for a minute presses again.
SMS_DEADLINE_S: Final = 60.0


class SmsUplink:
    """Texts signed frames from `phone` (the wearable's number in the gateway's registry) to `gateway_number`.

    net: the running phone network; `gateway_number` must be one of its own numbers with an sms_url.
    """

    def __init__(self, net: PhoneNetwork, *, phone: str, gateway_number: str) -> None:
        self._net = net
        self._phone = phone
        self._gateway_number = gateway_number

    @property
    def phone(self) -> str:
        """The number the texts come from."""
        return self._phone

    async def send(self, signed: bytes, deadline_s: float = SMS_DEADLINE_S) -> UplinkResult:
        """Text `signed` once and read the gateway's reply.

        An alert (an event that raises an incident) is accepted when the reply confirms it; the reply's text is
        the result's detail, and no incident id comes back by SMS. Other events get no reply: they count as
        accepted once the gateway's webhook took the text. A webhook that failed, or no confirmation before
        `deadline_s`, is "no answer" (status_code None, final False), as on HTTPS.
        """
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        loop = asyncio.get_running_loop()
        started = loop.time()
        parsed = parse_signed_frame(signed)
        wants_reply = isinstance(parsed, SignedFrame) and parsed.frame.event.raises_incident
        try:
            async with asyncio.timeout(deadline_s):
                answer = await self._net.send_sms(from_=self._phone, to=self._gateway_number, body=encode_sms(signed))
        except TimeoutError:
            return _no_answer(f"no answer to the SMS within {deadline_s:.1f} s", loop.time() - started)
        latency_s = loop.time() - started
        if not 200 <= answer.status < 300:
            what = f"status {answer.status}" if answer.status else "a network error"
            return _no_answer(f"the gateway's SMS webhook failed with {what}", latency_s)
        reply = _reply_text(answer.body)
        if wants_reply and reply is None:
            return _no_answer("the gateway took the SMS but did not confirm the alert", latency_s)
        return UplinkResult(
            status_code=answer.status,
            incident_id=None,
            status="accepted",
            reason=None,
            detail=reply or "SMS taken",
            attempts=1,
            latency_s=latency_s,
            final=True,
            transport=SMS_TRANSPORT,
        )


class FallbackUplink:
    """HTTPS first; when no answer at all came from the gateway (no data, no route), the same bytes by SMS.

    Only the absence of any answer falls back: a refusal (4xx) or an overloaded gateway (429, 5xx) answered, and
    would answer the SMS the same. `primary_deadline_s` bounds the HTTPS attempts before the text goes out.
    The primary's `async with` stays with its owner.
    """

    def __init__(
        self, primary: HttpUplink, fallback: SmsUplink, *, primary_deadline_s: float = const.DEFAULT_DEADLINE_S
    ) -> None:
        if primary_deadline_s <= 0:
            raise ValueError("primary_deadline_s must be positive")
        self._primary = primary
        self._fallback = fallback
        self._primary_deadline_s = primary_deadline_s

    async def send(self, signed: bytes, deadline_s: float = SMS_DEADLINE_S) -> UplinkResult:
        """The HTTPS result, or the SMS result (`transport` "sms"; its attempts and latency include HTTPS's)."""
        first = await self._primary.send(signed, self._primary_deadline_s)
        if first.status_code is not None:
            return first
        second = await self._fallback.send(signed, deadline_s)
        return UplinkResult(
            status_code=second.status_code,
            incident_id=second.incident_id,
            status=second.status,
            reason=second.reason,
            detail=f"{second.detail} (by SMS: HTTPS gave {first.label}: {first.detail})",
            attempts=first.attempts + second.attempts,
            latency_s=first.latency_s + second.latency_s,
            final=second.final,
            delayed=second.delayed,
            event=second.event,
            transport=second.transport,
        )


def _reply_text(twiml: str) -> str | None:
    """The text of the first <Message> of a TwiML answer, or None."""
    try:
        verbs = parse_twiml(twiml.encode())
    except TwimlError:
        return None
    return next((verb.body for verb in verbs if isinstance(verb, Message) and verb.body), None)


def _no_answer(detail: str, latency_s: float) -> UplinkResult:
    return UplinkResult(
        status_code=None,
        incident_id=None,
        status=None,
        reason=None,
        detail=detail,
        attempts=1,
        latency_s=latency_s,
        final=False,
        transport=SMS_TRANSPORT,
    )
