"""The group commit: authenticated signals wait briefly in a bounded queue and are committed together."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final, Self

import structlog

from gateway.core.authenticate import AuthenticatedSignal
from gateway.errors import GatewayError, StoreUnavailable
from gateway.observability import Metrics
from gateway.protocol import EventType
from gateway.store.incidents import IncidentStore, OutboxItem, Outcome, SignalOutcome

log = structlog.get_logger(__name__)

#: Urgent signals (panic, fall, test, cancel) are refused once the oldest waiting signal has waited this
#: long: a device told to retry in a second beats a queue that makes every answer late.
URGENT_MAX_WAIT_S: Final = 0.25
#: Heartbeats and other chatter are refused much earlier: late they are worthless, and shedding them
#: first keeps the room for panics.
CHATTER_MAX_WAIT_S: Final = 0.05
#: Retry-After for shed chatter: long enough to take real load off; the next heartbeat says the same.
CHATTER_RETRY_AFTER_S: Final = 10.0
#: Retry-After for a shed urgent signal: as short as HTTP allows.
URGENT_RETRY_AFTER_S: Final = 1.0


def is_urgent(event: EventType) -> bool:
    """Signals a person is waiting on: never shed before chatter."""
    return event.raises_incident or event is EventType.CANCEL


class Overloaded(GatewayError):
    """The commit queue is saturated: the device must retry after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("ingest queue saturated")
        self.retry_after = retry_after


class SignalPipeline:
    """Owns the committer task. `submit` returns once the signal is durably stored (or refused)."""

    def __init__(
        self,
        store: IncidentStore,
        deliver: Callable[[Sequence[OutboxItem]], None],
        metrics: Metrics,
        *,
        max_batch: int,
        max_queue: int,
        on_accepted: Callable[[Sequence[AuthenticatedSignal]], None] | None = None,
    ) -> None:
        """on_accepted: told of every newly stored signal that raised nothing (heartbeats, cancels, low
        battery), after the commit: a wearer with an open alert may be moving."""
        self._store = store
        self._deliver = deliver
        self._on_accepted = on_accepted
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._queue: deque[tuple[AuthenticatedSignal, asyncio.Future[SignalOutcome], float]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="group-commit")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue:
            _, fut, _ = self._queue.popleft()
            if not fut.done():
                fut.set_exception(StoreUnavailable("gateway is shutting down"))

    def waited(self) -> float:
        """Seconds the oldest queued signal has been waiting (0 when none is)."""
        return time.monotonic() - self._queue[0][2] if self._queue else 0.0

    def shed(self, event: EventType) -> float | None:
        """Retry-After seconds if a signal of this kind must be refused now, else None.

        Cheap on purpose: called before the signature check, so overload costs as little as possible.
        """
        urgent = is_urgent(event)
        share = 1.0 if urgent else 0.5
        limit = URGENT_MAX_WAIT_S if urgent else CHATTER_MAX_WAIT_S
        if len(self._queue) < self._max_queue * share and self.waited() <= limit:
            return None
        return URGENT_RETRY_AFTER_S if urgent else CHATTER_RETRY_AFTER_S

    async def submit(self, signal: AuthenticatedSignal) -> SignalOutcome:
        """Store one signal. Raises Overloaded (queue saturated) or StoreUnavailable (database down)."""
        retry_after = self.shed(signal.signed.frame.event)
        if retry_after is not None:
            raise Overloaded(retry_after)
        fut: asyncio.Future[SignalOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append((signal, fut, time.monotonic()))
        self._wake.set()
        self._metrics.queue_depth.set(len(self._queue))
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            self._metrics.queue_depth.set(len(self._queue))
            started = time.perf_counter()
            try:
                outcomes = await self._store.commit_signals([s for s, _, _ in batch])
            except StoreUnavailable as exc:
                self._metrics.store_errors.labels("commit").inc()
                log.warning("commit failed, devices will retry", error=str(exc), signals=len(batch))
                self._fail(batch, exc)
                continue
            except Exception as exc:  # a bug must not kill the committer: refuse the batch, keep serving
                log.exception("commit crashed", signals=len(batch))
                self._fail(batch, StoreUnavailable(f"internal error: {exc!r}"))
                continue
            self._metrics.commit_batch.observe(len(batch))
            self._metrics.commit_latency.observe(time.perf_counter() - started)
            items = [item for outcome in outcomes for item in outcome.outbox]
            if items:
                self._deliver(items)
            if self._on_accepted is not None:
                later = [
                    signal
                    for (signal, _, _), outcome in zip(batch, outcomes, strict=True)
                    if outcome.outcome is Outcome.ACCEPTED and not signal.signed.frame.event.raises_incident
                ]
                if later:
                    self._on_accepted(later)
            for (_, fut, _), outcome in zip(batch, outcomes, strict=True):
                if not fut.done():
                    fut.set_result(outcome)

    @staticmethod
    def _fail(
        batch: list[tuple[AuthenticatedSignal, asyncio.Future[SignalOutcome], float]], exc: StoreUnavailable
    ) -> None:
        for _, fut, _ in batch:
            if not fut.done():
                fut.set_exception(exc)
