"""The phone network port: send an SMS, place a call, and find a send whose answer was lost (Twilio adapter)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import aiohttp
import structlog
from twilio.base.exceptions import TwilioRestException

from gateway.config import TwilioSettings
from gateway.errors import CarrierError
from gateway.escalation.twilio_api import close_client, make_client

log = structlog.get_logger(__name__)

#: HTTP statuses after which the same request may succeed later (rate limit, provider trouble, and our own
#: account problems, which an operator fixes while the ladder keeps trying: never silently skip a responder).
_TRANSIENT_STATUSES: Final = frozenset({401, 403, 404, 408, 409, 429})
#: A lost answer is looked for among the sends to the same number made since the attempt, with this slack for
#: clock differences between the gateway and the provider.
FIND_SLACK: Final = timedelta(seconds=5)
#: Calls the provider shows per number when a lost answer is looked for (a responder gets few calls).
FIND_PAGE: Final = 50
#: One request to the provider, whole: a hung connection must not hold a responder's notification.
REQUEST_TIMEOUT_S: Final = 15.0


class Carrier(Protocol):
    """What the sender needs of a phone network."""

    async def send_sms(self, *, to: str, body: str, status_callback: str) -> str:
        """The provider's message id; raises CarrierError."""

    async def place_call(self, *, to: str, twiml_url: str, status_callback: str, ring_timeout_s: int) -> str:
        """The provider's call id; raises CarrierError."""

    async def find_sms(self, *, to: str, body: str, since: datetime) -> str | None:
        """The id of an SMS with this text sent to `to` since `since` (a send whose answer was lost)."""

    async def find_call(self, *, to: str, since: datetime) -> str | None:
        """The id of a call placed to `to` since `since`."""

    async def aclose(self) -> None: ...


class TwilioCarrier:
    """Twilio's REST API through the twilio library's async client (or a compatible service at api_base_url)."""

    def __init__(self, settings: TwilioSettings) -> None:
        self._from = settings.from_number
        self._client = make_client(settings.account_sid, settings.auth_token.get_secret_value(), settings.api_base_url)

    async def aclose(self) -> None:
        await close_client(self._client)

    async def send_sms(self, *, to: str, body: str, status_callback: str) -> str:
        message = await self._call(
            self._client.messages.create_async(to=to, from_=self._from, body=body, status_callback=status_callback)
        )
        return str(message.sid)

    async def place_call(self, *, to: str, twiml_url: str, status_callback: str, ring_timeout_s: int) -> str:
        call = await self._call(
            self._client.calls.create_async(
                to=to,
                from_=self._from,
                url=twiml_url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                timeout=ring_timeout_s,
            )
        )
        return str(call.sid)

    async def find_sms(self, *, to: str, body: str, since: datetime) -> str | None:
        messages = await self._call(
            self._client.messages.list_async(to=to, from_=self._from, date_sent_after=since - FIND_SLACK)
        )
        for message in messages:
            if message.body == body:
                return str(message.sid)
        return None

    async def find_call(self, *, to: str, since: datetime) -> str | None:
        calls = await self._call(self._client.calls.list_async(to=to, from_=self._from, limit=FIND_PAGE))
        for call in calls:
            created = call.date_created
            if created is not None and created >= since - FIND_SLACK:
                return str(call.sid)
        return None

    @staticmethod
    async def _call(request: Any) -> Any:
        try:
            return await asyncio.wait_for(request, REQUEST_TIMEOUT_S)
        except TwilioRestException as exc:
            status = int(exc.status) if exc.status is not None else None
            permanent = status is not None and 400 <= status < 500 and status not in _TRANSIENT_STATUSES
            raise CarrierError(
                f"provider refused: HTTP {status}, code {exc.code}: {exc.msg}",
                permanent=permanent,
                status=status,
                code=exc.code,
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CarrierError(f"provider unreachable: {type(exc).__name__}: {exc}", permanent=False) from None
