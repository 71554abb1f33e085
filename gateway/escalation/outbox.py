"""Delivers outbox messages to the command center: at least once, in order per alert, pipelined across alerts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Final, Protocol, Self

import structlog

from gateway.errors import GatewayError
from gateway.observability import Metrics
from gateway.store.incidents import IncidentStore, OutboxItem

log = structlog.get_logger(__name__)

#: Delivered keys are written back in one UPDATE at most this often (delivery is not the latency path).
FLUSH_INTERVAL_S: Final = 0.05
#: The last delivery marks at shutdown get this long (a database in trouble must not hold the stop).
FINAL_FLUSH_TIMEOUT_S: Final = 2.0
#: How often rows whose lease expired (another gateway died, or this one restarted) are looked for.
SWEEP_INTERVAL_S: Final = 2.0
#: Rows claimed per sweep: bounded so a long outage's backlog streams instead of loading at once.
SWEEP_LIMIT: Final = 2000
#: How long to wait before retrying after a failed publish that was not a lost connection.
RETRY_DELAY_S: Final = 0.5
#: Alerts whose highest published revision is remembered (to never publish an older state after a newer
#: one). Only alerts with rows still in flight need it; the oldest entries are forgotten past this many.
REVISIONS_REMEMBERED: Final = 100_000
#: Keys delivered recently, remembered so a sweep that read a row before its "done" mark was committed
#: does not publish it again (at-least-once allows it; doubling the traffic is not worth it).
RECENT_KEYS: Final = 100_000


class Link(Protocol):
    """What the publisher needs of the command-center link."""

    @property
    def is_connected(self) -> bool: ...

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Return once the broker acknowledged; bound the PUBACKs in flight; raise GatewayError on failure."""

    async def wait_connected(self) -> None: ...


class OutboxPublisher:
    """Publishes outbox items; marks them delivered in the database; resumes others' abandoned rows."""

    def __init__(
        self,
        store: IncidentStore,
        link: Link,
        topic_for: Callable[[OutboxItem], str],
        metrics: Metrics,
        *,
        lease: timedelta,
        route_for: Callable[[str, bytes], str | None] | None = None,
    ) -> None:
        """route_for(alert_id, state payload): the routed topic a command center of the alert's zone or site
        subscribes to, which gets a retained copy of the state; None: no route (no site map, no topic)."""
        self._store = store
        self._route_for = route_for
        self._routes: dict[str, str] = {}
        self._link = link
        self._topic_for = topic_for
        self._metrics = metrics
        self._lease = lease
        self._queues: dict[str, deque[tuple[OutboxItem, float]]] = {}
        self._held: set[str] = set()
        self._delivered: list[str] = []
        self._recent: dict[str, None] = {}  # insertion-ordered set, oldest first
        self._published_revision: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> Self:
        self._background = [
            asyncio.create_task(self._flush_loop(), name="outbox-flush"),
            asyncio.create_task(self._sweep_loop(), name="outbox-sweep"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in [*self._background, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._background, *self._tasks, return_exceptions=True)
        # Unrecorded deliveries only cause a harmless republish after restart: never let this hold a shutdown.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FINAL_FLUSH_TIMEOUT_S):
                await self._flush()

    @property
    def held(self) -> int:
        """Messages in memory not yet acknowledged by the broker."""
        return len(self._held)

    async def wait_idle(self) -> None:
        """Wait until everything handed over so far has been published (tests, clean shutdown)."""
        await self._idle.wait()

    def enqueue(self, items: Sequence[OutboxItem]) -> None:
        """Take committed items (from the group commit, an ack, or a sweep); ignore ones already held."""
        now = time.perf_counter()
        for item in items:
            if item.key in self._held:
                continue
            self._held.add(item.key)
            queue = self._queues.get(item.alert_id)
            if queue is None:
                queue = self._queues[item.alert_id] = deque()
                task = asyncio.create_task(self._drain(item.alert_id, queue), name=f"outbox-{item.alert_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            queue.append((item, now))
        self._idle.clear() if self._held else self._idle.set()
        self._metrics.outbox_held.set(len(self._held))

    async def republish(self, views_states: Sequence[tuple[str, int, bytes]]) -> None:
        """After a (re)connect: publish the retained state of every open alert (alert_id, revision, payload).

        A broker restarted after SIGKILL may have lost retained messages it had acknowledged.
        """

        async def one(alert_id: str, revision: int, payload: bytes) -> None:
            await self._link.publish(self._state_topic(alert_id), payload, retain=True)
            route = self._route_for(alert_id, payload) if self._route_for is not None else None
            if route is not None:
                await self._link.publish(route, payload, retain=True)
            self._note_published(alert_id, revision)
            self._metrics.republished.inc()

        await asyncio.gather(*(one(*v) for v in views_states))

    def _state_topic(self, alert_id: str) -> str:
        return self._topic_for(
            OutboxItem(key="", kind="state", alert_id=alert_id, payload=b"", retain=True, revision=0)
        )

    async def _drain(self, alert_id: str, queue: deque[tuple[OutboxItem, float]]) -> None:
        """Publish one alert's messages strictly in order; other alerts proceed in parallel."""
        try:
            while queue:
                item, enqueued = queue[0]
                stale = item.kind == "state" and item.revision <= self._published_revision.get(alert_id, 0)
                if not stale:
                    await self._publish_until_acked(item)
                    if item.kind == "state" and self._route_for is not None:
                        await self._route(alert_id, item.payload)
                    self._metrics.publish_latency.observe(time.perf_counter() - enqueued)
                    self._metrics.published.labels(item.kind).inc()
                    if item.kind == "state":
                        self._note_published(alert_id, item.revision)
                queue.popleft()
                self._held.discard(item.key)
                self._delivered.append(item.key)
                self._remember(item.key)
        finally:
            if self._queues.get(alert_id) is queue:
                del self._queues[alert_id]
            self._metrics.outbox_held.set(len(self._held))
            if not self._held:
                self._idle.set()

    async def _route(self, alert_id: str, payload: bytes) -> None:
        """The state's retained copy under its route; a route the alert left is cleared (empty retained)."""
        assert self._route_for is not None
        route = self._route_for(alert_id, payload)
        old = self._routes.get(alert_id)
        if old is not None and old != route:
            await self._publish_until_acked_to(old, b"", alert_id)
        if route is None:
            self._routes.pop(alert_id, None)
            return
        await self._publish_until_acked_to(route, payload, alert_id)
        self._routes[alert_id] = route
        if len(self._routes) > REVISIONS_REMEMBERED:
            del self._routes[next(iter(self._routes))]

    async def _publish_until_acked_to(self, topic: str, payload: bytes, alert_id: str) -> None:
        while True:
            try:
                await self._link.publish(topic, payload, retain=True)
                return
            except GatewayError as exc:
                self._metrics.publish_failures.inc()
                log.debug("routed publish deferred", alert_id=alert_id, error=str(exc))
                if self._link.is_connected:
                    await asyncio.sleep(RETRY_DELAY_S)
                await self._link.wait_connected()

    def _note_published(self, alert_id: str, revision: int) -> None:
        self._published_revision[alert_id] = max(revision, self._published_revision.get(alert_id, 0))
        if len(self._published_revision) > REVISIONS_REMEMBERED:
            del self._published_revision[next(iter(self._published_revision))]

    def _remember(self, key: str) -> None:
        self._recent[key] = None
        if len(self._recent) > RECENT_KEYS:
            del self._recent[next(iter(self._recent))]

    async def _publish_until_acked(self, item: OutboxItem) -> None:
        """The link bounds PUBACKs in flight; this only retries: after a reconnect, or after a pause."""
        topic = self._topic_for(item)
        while True:
            try:
                await self._link.publish(topic, item.payload, retain=item.retain)
                return
            except GatewayError as exc:  # LinkDown: no session, lost, or no PUBACK in time
                self._metrics.publish_failures.inc()
                log.debug("publish deferred", alert_id=item.alert_id, error=str(exc))
                if self._link.is_connected:  # a timeout on a live session: do not spin on it
                    await asyncio.sleep(RETRY_DELAY_S)
                await self._link.wait_connected()

    async def _flush(self) -> None:
        if not self._delivered:
            return
        keys, self._delivered = self._delivered, []
        try:
            await self._store.mark_delivered(keys, datetime.now(UTC))
        except Exception:
            self._delivered.extend(keys)
            raise

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self._flush()
            except Exception as exc:  # database down: keep the keys, try again
                self._metrics.store_errors.labels("outbox-flush").inc()
                log.warning("could not record deliveries", error=str(exc), pending=len(self._delivered))
                await asyncio.sleep(SWEEP_INTERVAL_S)

    async def _sweep_loop(self) -> None:
        """Claim rows nobody is delivering: this gateway's own from before a crash, and expired leases.

        Own rows already in memory are skipped by `enqueue`; the limit streams a long backlog in slices.
        """
        while True:
            try:
                now = datetime.now(UTC)
                items = await self._store.claim_outbox(now=now, limit=SWEEP_LIMIT, include_own=True)
                fresh = [i for i in items if i.key not in self._held and i.key not in self._recent]
                if fresh:
                    log.info("resuming undelivered outbox messages", count=len(fresh))
                    self.enqueue(fresh)
                await self._store.extend_leases(now)
            except Exception as exc:
                self._metrics.store_errors.labels("outbox-sweep").inc()
                log.warning("outbox sweep failed", error=str(exc))
            await asyncio.sleep(SWEEP_INTERVAL_S)
