"""Cellular uplink of a wearable: POST signed frames over HTTPS, retried by the gateway's rules."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import aiohttp
from multidict import CIMultiDictProxy

from firmware_sim import const
from gateway.protocol.const import MEDIA_TYPE


class ClientCertificate(NamedTuple):
    """The files a device presents for mTLS."""

    #: PEM certificate of the device (optionally followed by its chain).
    cert_file: Path
    #: PEM private key of the device.
    key_file: Path


@dataclass(frozen=True, slots=True)
class UplinkResult:
    """What became of one signal.

    status_code: HTTP status of the last answer; None when no attempt got one.
    incident_id: the incident a 2xx answer names (None for events that raise none).
    status: "accepted" or "duplicate" on 2xx.
    reason: the gateway's rejection reason (problem+json "reason") on an error answer.
    detail: one human-readable sentence: the gateway's detail, or what went wrong on the network.
    attempts: requests made, the first included.
    latency_s: from the first attempt to the last answer or to giving up.
    final: the answer settles the signal (2xx, a 4xx other than 429, or an untrusted server); False when the
        deadline ran out on retryable answers or network errors.
    delayed: the gateway marked the signal as delayed (device time far behind its own).
    event: the event name the gateway understood.
    transport: what carried the signal: "https", or "sms" when the wearable had no data (sms_uplink.py).
    """

    status_code: int | None
    incident_id: str | None
    status: str | None
    reason: str | None
    detail: str
    attempts: int
    latency_s: float
    final: bool
    delayed: bool = False
    event: str | None = None
    transport: str = "https"

    @property
    def accepted(self) -> bool:
        """The gateway took the signal (first time or as a duplicate of one it has)."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def label(self) -> str:
        """A short outcome name for summaries: "202 accepted", "409 replayed", "no answer"."""
        if self.status_code is None:
            return "no answer" if not self.final else "untrusted server"
        what = self.status if self.accepted else self.reason
        return f"{self.status_code} {what}" if what else str(self.status_code)


@dataclass(frozen=True, slots=True)
class _Answer:
    status_code: int | None
    detail: str
    retryable: bool
    incident_id: str | None = None
    status: str | None = None
    reason: str | None = None
    delayed: bool = False
    event: str | None = None
    retry_after_s: float | None = None


class HttpUplink:
    """POSTs signed frames to a gateway's /v1/signals; an async context manager owning one aiohttp session.

    base_url: the gateway, e.g. https://gateway.example:8443 (http:// only for tests).
    ca_file: PEM bundle the gateway's server certificate must chain to (system trust when None).
    client_cert: files to present for mTLS.
    keep_alive: False opens a new TCP+TLS connection per signal, as many cellular modems do.
    rng: jitter source; pass a seeded one for reproducible runs.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | None = None,
        client_cert: ClientCertificate | None = None,
        keep_alive: bool = True,
        max_connections: int = const.MAX_CONNECTIONS,
        request_timeout_s: float = const.REQUEST_TIMEOUT_S,
        backoff_initial_s: float = const.BACKOFF_INITIAL_S,
        backoff_max_s: float = const.BACKOFF_MAX_S,
        rng: random.Random | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + const.SIGNALS_PATH
        self._ssl: ssl.SSLContext | None = None
        if base_url.startswith("https://"):
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if client_cert is not None:
                self._ssl.load_cert_chain(client_cert.cert_file, client_cert.key_file)
        elif not base_url.startswith("http://"):
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        elif client_cert is not None:
            raise ValueError("mTLS needs an https:// URL")
        self._keep_alive = keep_alive
        self._max_connections = max_connections
        self._request_timeout_s = request_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not cryptography
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The endpoint signals are posted to."""
        return self._url

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(
            ssl=self._ssl if self._ssl is not None else True,
            force_close=not self._keep_alive,
            limit=self._max_connections,
        )
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(
        self, signed: bytes, deadline_s: float = const.DEFAULT_DEADLINE_S, *, content_type: str = MEDIA_TYPE
    ) -> UplinkResult:
        """POST `signed` until the gateway settles it or `deadline_s` runs out.

        429 and 5xx answers and network errors are retried with the SAME bytes (the gateway's retries are
        idempotent): after Retry-After when the answer has one, else after an exponential backoff with jitter.
        No retry is made that could not start before the deadline.
        """
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        if self._session is None:
            raise RuntimeError("HttpUplink is used outside `async with`")
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + deadline_s
        attempts = 0
        backoff_step = 0
        while True:
            attempts += 1
            answer = await self._attempt(self._session, signed, content_type, deadline - loop.time())
            if not answer.retryable:
                return _result(answer, attempts, loop.time() - started, final=True)
            if answer.retry_after_s is not None:
                delay = answer.retry_after_s
            else:
                delay = self._backoff(backoff_step)
                backoff_step += 1
            if loop.time() + delay >= deadline:
                return _result(answer, attempts, loop.time() - started, final=False)
            await asyncio.sleep(delay)

    def _backoff(self, step: int) -> float:
        # Equal jitter: at least half the exponential step, so retries never collapse to a burst, and a random
        # other half, so devices that lost the same cell at the same moment do not come back in lockstep.
        ceiling = min(self._backoff_max_s, self._backoff_initial_s * const.BACKOFF_FACTOR**step)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def _attempt(
        self, session: aiohttp.ClientSession, signed: bytes, content_type: str, budget_s: float
    ) -> _Answer:
        budget_s = max(min(budget_s, self._request_timeout_s), 0.001)
        timeout = aiohttp.ClientTimeout(total=budget_s, connect=min(budget_s, const.CONNECT_TIMEOUT_S))
        try:
            async with session.post(
                self._url,
                data=signed,
                headers={"Content-Type": content_type},
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                body = await response.content.read(const.MAX_ANSWER_BYTES)
                return _interpret(response.status, response.headers, body)
        except aiohttp.ClientConnectorCertificateError as exc:
            # The server is not the gateway this CA vouches for: no retry can change that.
            return _Answer(None, f"server certificate not trusted: {exc.certificate_error}", retryable=False)
        except TimeoutError:
            return _Answer(None, f"no answer within {budget_s:.1f} s", retryable=True)
        except (aiohttp.ClientError, OSError) as exc:
            return _Answer(None, f"{type(exc).__name__}: {exc}", retryable=True)


def _interpret(status_code: int, headers: CIMultiDictProxy[str], body: bytes) -> _Answer:
    """Read one HTTP answer: 2xx settles, 429 and 5xx are retried, any other status is final."""
    document = _json_object(body, headers.get("Content-Type", ""))
    retryable = status_code == 429 or status_code >= 500
    retry_after_s = _retry_after(headers.get("Retry-After")) if retryable else None
    if 200 <= status_code < 300:
        incident_id = document.get("incident_id")
        status = document.get("status")
        event = document.get("event")
        return _Answer(
            status_code,
            detail=str(status) if isinstance(status, str) else "accepted",
            retryable=False,
            incident_id=incident_id if isinstance(incident_id, str) else None,
            status=status if isinstance(status, str) else None,
            delayed=document.get("delayed") is True,
            event=event if isinstance(event, str) else None,
        )
    reason = document.get("reason")
    detail = document.get("detail") or document.get("title")
    if not isinstance(detail, str):
        detail = body[: const.MAX_DETAIL_CHARS].decode("utf-8", "replace").strip() or f"HTTP {status_code}"
    return _Answer(
        status_code,
        detail=detail,
        retryable=retryable,
        reason=reason if isinstance(reason, str) else None,
        retry_after_s=retry_after_s,
    )


def _json_object(body: bytes, content_type: str) -> dict[str, Any]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in ("application/json", const.PROBLEM_MEDIA_TYPE):
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or invalid."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read as such
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if seconds == seconds else None  # NaN is no instruction


def _result(answer: _Answer, attempts: int, latency_s: float, *, final: bool) -> UplinkResult:
    return UplinkResult(
        status_code=answer.status_code,
        incident_id=answer.incident_id,
        status=answer.status,
        reason=answer.reason,
        detail=answer.detail,
        attempts=attempts,
        latency_s=latency_s,
        final=final,
        delayed=answer.delayed,
        event=answer.event,
    )
