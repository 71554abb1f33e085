"""The group commit: authenticated signals wait briefly in a bounded queue and are committed together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final, Self

import structlog

from gateway.core.authenticate import AuthenticatedSignal
from gateway.errors import GatewayError, StoreUnavailable
from gateway.observability import Metrics
from gateway.protocol import EventType
from gateway.store.incidents import IncidentStore, OutboxItem, SignalOutcome

log = structlog.get_logger(__name__)

#: A signal that would wait longer than this for its commit is refused with 503 + Retry-After instead:
#: a device retrying in a second beats an unbounded queue that makes every answer late.
MAX_QUEUE_WAIT_S: Final = 0.1
#: Heartbeats are shed at this share of the limits: a heartbeat is worthless late, a panic is not.
SHED_HEARTBEATS_AT: Final = 0.5


class Overloaded(GatewayError):
    """The commit queue is full: the device must retry after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("ingest queue full")
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
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._queue: asyncio.Queue[tuple[AuthenticatedSignal, asyncio.Future[SignalOutcome]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Moving average of one commit's duration, for the queue-wait estimate.
        self._commit_seconds = 0.005

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="group-commit")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(StoreUnavailable("gateway is shutting down"))

    async def submit(self, signal: AuthenticatedSignal) -> SignalOutcome:
        """Store one signal. Raises Overloaded (queue full) or StoreUnavailable (database down)."""
        depth = self._queue.qsize()
        event = signal.signed.frame.event
        share = 1.0 if event.raises_incident or event is EventType.CANCEL else SHED_HEARTBEATS_AT
        wait = self.expected_wait(depth)
        if depth >= self._max_queue * share or wait > MAX_QUEUE_WAIT_S * share:
            raise Overloaded(retry_after=max(1.0, wait))
        fut: asyncio.Future[SignalOutcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((signal, fut))
        self._metrics.queue_depth.set(depth + 1)
        return await asyncio.shield(fut)

    def expected_wait(self, depth: int) -> float:
        """Seconds a signal queued behind `depth` others waits before its own commit starts.

        Only full batches ahead count: anything less goes out with the next commit, so a short queue is
        never refused whatever one commit costs. Under overload batches are full, and the moving average
        of commit durations is theirs.
        """
        return (depth // self._max_batch) * self._commit_seconds

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._metrics.queue_depth.set(self._queue.qsize())
            started = time.perf_counter()
            try:
                outcomes = await self._store.commit_signals([s for s, _ in batch])
            except StoreUnavailable as exc:
                self._metrics.store_errors.labels("commit").inc()
                log.warning("commit failed, devices will retry", error=str(exc), signals=len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            except Exception as exc:  # a bug must not kill the committer: refuse the batch, keep serving
                log.exception("commit crashed", signals=len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable(f"internal error: {exc!r}"))
                continue
            elapsed = time.perf_counter() - started
            self._commit_seconds = 0.8 * self._commit_seconds + 0.2 * elapsed
            self._metrics.commit_batch.observe(len(batch))
            self._metrics.commit_latency.observe(elapsed)
            items = [item for outcome in outcomes for item in outcome.outbox]
            if items:
                self._deliver(items)
            for (_, fut), outcome in zip(batch, outcomes, strict=True):
                if not fut.done():
                    fut.set_result(outcome)
