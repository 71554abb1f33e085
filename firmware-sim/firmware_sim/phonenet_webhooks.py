"""Webhooks of the phone network simulator: requests to the gateway signed and retried as Twilio sends them."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Final, NamedTuple, Self
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator
from yarl import URL

from firmware_sim.phonenet_resources import new_sid
from firmware_sim.phonenet_twiml import MAX_TWIML_BYTES

#: Tries of one webhook on a 5xx or network error, and the first backoff (doubled each time): Twilio retries
#: callbacks a few times; three short tries show a gateway's retry-safety without slowing tests.
WEBHOOK_ATTEMPTS: Final = 3
WEBHOOK_RETRY_DELAY_S: Final = 0.02
#: One attempt's budget: Twilio waits 15 s; a gateway on loopback that needs 5 s is broken.
WEBHOOK_TIMEOUT_S: Final = 5.0
#: The User-Agent of Twilio's webhook requests.
USER_AGENT: Final = "TwilioProxy/1.1"


class WebhookAttempt(NamedTuple):
    """One request of a webhook and what came of it."""

    url: str
    method: str
    attempt: int
    #: HTTP status of the answer; None when the request failed on the network.
    status: int | None
    #: What went wrong on the network ("" when an answer came).
    error: str
    signature: str


class WebhookAnswer(NamedTuple):
    """The last answer to a webhook (its body cut at MAX_TWIML_BYTES + 1)."""

    status: int | None
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookSender:
    """Sends webhooks signed with the account's auth token; `async with` it to own its HTTP session."""

    def __init__(self, auth_token: str, ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context`: what https gateways are trusted with (a test CA); None: the system's defaults."""
        self._validator = RequestValidator(auth_token)
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(ssl=self._ssl_context if self._ssl_context is not None else True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def signature(self, url: str, params: Mapping[str, str]) -> str:
        """X-Twilio-Signature of a request to `url` (the full URL, query included) with POST `params`."""
        return str(self._validator.compute_signature(url, dict(params)))

    async def send(
        self,
        url: str,
        params: Mapping[str, str],
        *,
        method: str = "POST",
        report: Callable[[WebhookAttempt], Awaitable[None]],
    ) -> WebhookAnswer:
        """Send `params` as Twilio does, retrying 5xx and network errors; `report` hears of every attempt.

        POST sends them as a form; GET appends them to the URL, which is then signed without parameters. All
        attempts carry the same I-Twilio-Idempotency-Token, so a gateway can tell a retry from a new event.
        """
        if self._session is None:
            raise RuntimeError("the webhook sender is not open")
        if method == "GET":
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
            form: dict[str, str] | None = None
        else:
            form = dict(params)
        signature = self.signature(url, form or {})
        headers = {
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": new_sid(""),
            "User-Agent": USER_AGENT,
        }
        answer = WebhookAnswer(None, b"")
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            error = ""
            try:
                # encoded=True: the bytes sent are the URL signed (yarl would otherwise re-quote "%2C" and the like)
                target = URL(url, encoded=True)
                async with self._session.request(method, target, data=form, headers=headers) as response:
                    answer = WebhookAnswer(response.status, await response.content.read(MAX_TWIML_BYTES + 1))
            except (aiohttp.ClientError, TimeoutError) as exc:
                answer, error = WebhookAnswer(None, b""), f"{type(exc).__name__}: {exc}"
            await report(WebhookAttempt(url, method, attempt, answer.status, error, signature))
            if answer.status is not None and answer.status < 500:
                break
            if attempt < WEBHOOK_ATTEMPTS:
                await asyncio.sleep(WEBHOOK_RETRY_DELAY_S * 2 ** (attempt - 1))
        return answer
