"""Makes the SMS and calls the ladders decided: at most once per notification, retried through provider trouble.

Each notification row is marked `sending` (committed) before the request leaves. A gateway that dies during the
request leaves the row `sending`; whoever picks it up next asks the provider whether it exists (same number, same
text, since the attempt) before sending again, so a crash neither doubles nor drops a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Final, Self
from urllib.parse import quote

import structlog

from gateway.config import TwilioSettings
from gateway.core.ladder import SendOutcome
from gateway.errors import CarrierError, StoreUnavailable
from gateway.escalation.carrier import Carrier
from gateway.observability import Metrics
from gateway.store.ladders import LadderStore
from gateway.store.models import Notification

log = structlog.get_logger(__name__)

#: Requests to the provider in flight at once: 50 incidents escalating together each notify a few people
#: within the second.
MAX_IN_FLIGHT: Final = 32
#: How often due rows nobody holds are looked for (another gateway died, a retry came due after a restart).
SWEEP_INTERVAL_S: Final = 1.0
#: Paths of the webhooks (gateway.escalation.webhooks serves them).
SMS_STATUS_PATH: Final = "/v1/twilio/sms/status"
CALL_STATUS_PATH: Final = "/v1/twilio/voice/status"
CALL_TWIML_PATH: Final = "/v1/twilio/voice/answer"
CALL_GATHER_PATH: Final = "/v1/twilio/voice/gather"
SMS_INBOUND_PATH: Final = "/v1/twilio/sms"

#: Reports a send's fate to the ladder: (key, outcome, detail for the log).
OnOutcome = Callable[[str, SendOutcome, str | None], Awaitable[None]]


def webhook_url(public_url: str, path: str, key: str | None = None) -> str:
    """A webhook URL as the provider calls it (and as its signature is computed over)."""
    url = public_url.rstrip("/") + path
    return url if key is None else f"{url}?key={quote(key, safe='')}"


class NotificationSender:
    """An async context manager: sends what is enqueued, sweeps for what nobody sends, retries with backoff."""

    def __init__(
        self,
        store: LadderStore,
        carrier: Carrier | None,
        settings: TwilioSettings,
        on_outcome: OnOutcome,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._carrier = carrier
        self._settings = settings
        self._on_outcome = on_outcome
        self._metrics = metrics
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._held: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._rng = random.Random()  # noqa: S311 - retry jitter, not cryptography

    async def __aenter__(self) -> Self:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="notification-sweep")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for timer in self._timers.values():
            timer.cancel()
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._carrier is not None:
            with contextlib.suppress(Exception):
                await self._carrier.aclose()

    def enqueue(self, keys: Sequence[str]) -> None:
        """Send these notifications (committed rows); keys already in hand are ignored."""
        for key in keys:
            if key in self._held:
                continue
            self._held.add(key)
            task = asyncio.create_task(self._run(key), name=f"send-{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, key: str) -> None:
        retry_in: float | None = None
        try:
            retry_in = await self._send(key)
        except StoreUnavailable as exc:
            log.warning("notification not sent: database unavailable", key=key, error=str(exc))
            retry_in = SWEEP_INTERVAL_S * 2
        except Exception:
            log.exception("notification send failed unexpectedly", key=key)
            retry_in = self._settings.retry_max_s
        finally:
            self._held.discard(key)
        if retry_in is not None:
            self._held.add(key)  # still ours: the lease is renewed until the retry
            self._timers[key] = asyncio.get_running_loop().call_later(retry_in, self._retry, key)

    def _retry(self, key: str) -> None:
        self._timers.pop(key, None)
        self._held.discard(key)
        self.enqueue([key])

    async def _send(self, key: str) -> float | None:
        """One attempt; returns seconds until the next one, or None when the row is settled."""
        row = await self._store.notification(key)
        if row is None or row.status not in ("pending", "sending"):
            return None
        now = datetime.now(UTC)
        if row.status == "pending" and row.next_attempt_at > now:
            return (row.next_attempt_at - now).total_seconds()
        carrier = self._carrier
        if carrier is None:
            await self._fail(row, "SMS and calls are not configured (twilio.enabled is false)")
            return None
        if row.status == "sending" and await self._already_sent(carrier, row):
            return None
        attempts = row.attempts + 1
        await self._store.update_notification(key, now, status="sending", attempts=attempts)
        started = asyncio.get_running_loop().time()
        try:
            async with self._slots:  # only the provider request: database work never holds a slot
                sid = await self._request(carrier, row)
        except CarrierError as exc:
            self._metrics.notifications.labels(row.channel, "error").inc()
            if exc.permanent or attempts >= self._settings.max_attempts:
                await self._fail(row, str(exc))
                return None
            delay = self._backoff(attempts)
            log.warning(
                "send deferred", key=key, channel=row.channel, attempt=attempts, retry_in_s=delay, error=str(exc)
            )
            await self._store.update_notification(
                key, datetime.now(UTC), status="pending", next_attempt_at=now + timedelta(seconds=delay), error=str(exc)
            )
            return delay
        self._metrics.notifications.labels(row.channel, "sent").inc()
        self._metrics.send_latency.labels(row.channel).observe(asyncio.get_running_loop().time() - started)
        await self._store.update_notification(key, datetime.now(UTC), status="queued", provider_sid=sid, error=None)
        log.info("notification sent", key=key, channel=row.channel, to=mask_phone(row.phone))
        await self._on_outcome(key, SendOutcome.QUEUED, None)
        return None

    async def _request(self, carrier: Carrier, row: Notification) -> str:
        public = self._settings.public_url
        if row.channel == "voice":
            return await carrier.place_call(
                to=row.phone,
                twiml_url=webhook_url(public, CALL_TWIML_PATH, row.key),
                status_callback=webhook_url(public, CALL_STATUS_PATH, row.key),
                ring_timeout_s=self._settings.ring_timeout_s,
            )
        return await carrier.send_sms(
            to=row.phone, body=row.body, status_callback=webhook_url(public, SMS_STATUS_PATH, row.key)
        )

    async def _already_sent(self, carrier: Carrier, row: Notification) -> bool:
        """A `sending` row: the last attempt's answer was lost. Adopt the message if the provider has it."""
        try:
            if row.channel == "voice":
                sid = await carrier.find_call(to=row.phone, since=row.updated_at)
            else:
                sid = await carrier.find_sms(to=row.phone, body=row.body, since=row.updated_at)
        except CarrierError as exc:
            raise StoreUnavailable(f"cannot tell whether {row.key} was sent: {exc}") from exc  # retry later
        if sid is None:
            return False
        log.info("send found at the provider after a lost answer", key=row.key, sid=sid)
        await self._store.update_notification(row.key, datetime.now(UTC), status="queued", provider_sid=sid)
        await self._on_outcome(row.key, SendOutcome.QUEUED, None)
        return True

    async def _fail(self, row: Notification, reason: str) -> None:
        self._metrics.notifications.labels(row.channel, "failed").inc()
        log.warning("notification failed", key=row.key, channel=row.channel, to=mask_phone(row.phone), error=reason)
        await self._store.update_notification(row.key, datetime.now(UTC), status="failed", error=reason[:255])
        await self._on_outcome(row.key, SendOutcome.FAILED, reason)

    def _backoff(self, attempts: int) -> float:
        s = self._settings
        ceiling = min(s.retry_max_s, s.retry_min_s * 2 ** (attempts - 1))
        return self._rng.uniform(s.retry_min_s, max(s.retry_min_s, ceiling))

    async def _sweep_loop(self) -> None:
        include_own = True  # after a restart, this gateway's own rows are the ones nobody else will take soon
        while True:
            try:
                now = datetime.now(UTC)
                keys = await self._store.claim_notifications(now, include_own=include_own)
                include_own = False
                fresh = [k for k in keys if k not in self._held]
                if fresh:
                    log.info("resuming notifications", count=len(fresh))
                    self.enqueue(fresh)
                await self._store.extend_leases(now, sorted(self._held))
            except Exception as exc:
                log.warning("notification sweep failed", error=str(exc))
            await asyncio.sleep(SWEEP_INTERVAL_S)


def mask_phone(phone: str) -> str:
    """+15551230001 -> +1555***0001: enough to tell numbers apart in logs, not to call them."""
    return phone if len(phone) < 9 else f"{phone[:5]}***{phone[-4:]}"
