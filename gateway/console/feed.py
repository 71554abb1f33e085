"""Live incident changes for the console and integrators: `GET /v1/stream` (server-sent events).

One poller per gateway reads what changed in the database (so changes made by another gateway on the same
database show too) and fans it out to every open stream. It polls every POLL_S, and at once when this gateway
commits a change (`poke`). Rows are read again for LOOKBACK after their `updated_at`, so a transaction that
committed late (its `updated_at` is older than rows already seen) is still picked up; what was sent is remembered
by (incident, revision), so a change is sent once per stream, and a client ignores revisions it already has.

A stream's event id is a cursor: `<updated_at in ms>-<revision>`. A client that reconnects sends it back as
Last-Event-ID and first receives every incident changed since (minus LOOKBACK), then live changes. A stream
opened without one starts with every open incident and what changed in the last RECENT.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import structlog
from aiohttp import web
from tortoise.exceptions import BaseORMException
from tortoise.expressions import Q

from gateway.commandcenter.payloads import encode_json
from gateway.console.access import Access, Principal
from gateway.console.auth import Action
from gateway.console.store import lookup_session
from gateway.core.incident import AlertState
from gateway.observability import Metrics
from gateway.store.incidents import listed_document
from gateway.store.models import Incident

log = structlog.get_logger(__name__)

#: Longest a change waits for the next poll when it was made by another gateway (this one pokes at once).
POLL_S: Final = 0.25
#: A transaction committing later than this after it stamped `updated_at` is missed by the polls; the sweep of
#: open incidents (every SWEEP_S) still delivers it if the incident is open, and consoles reload on reconnect.
LOOKBACK: Final = timedelta(seconds=10)
SWEEP_S: Final = 15.0
#: What a stream opened without Last-Event-ID sends besides the open incidents.
RECENT: Final = timedelta(minutes=1)
#: Rows read per poll: far more than people can handle in a quarter second.
POLL_LIMIT: Final = 2000
#: A stream that falls this many changes behind is closed; its client reconnects and catches up by cursor.
QUEUE_LIMIT: Final = 1000
KEEPALIVE_S: Final = 15.0
#: How often a stream checks that its session still exists (sign-out, disabled operator, expiry).
SESSION_CHECK_S: Final = 30.0
#: The client's reconnect delay (EventSource `retry`).
RETRY_MS: Final = 2000
_CURSOR: Final = re.compile(r"([0-9]{1,16})-[0-9]{1,10}")
_OPEN: Final = [s.value for s in AlertState if s.is_open]


@dataclass(frozen=True, slots=True)
class Change:
    """One incident's state at one revision, ready to send."""

    alert_id: str
    revision: int
    updated_at: datetime
    data: bytes

    @property
    def cursor(self) -> str:
        return f"{int(self.updated_at.timestamp() * 1000)}-{self.revision}"

    def frame(self) -> bytes:
        return b"id: " + self.cursor.encode() + b"\nevent: incident\ndata: " + self.data + b"\n\n"


def parse_cursor(value: str | None) -> datetime | None:
    """The time of a Last-Event-ID cursor, or None when absent or not ours."""
    if not value:
        return None
    match = _CURSOR.fullmatch(value.strip())
    if match is None:
        return None
    try:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


class IncidentFeed:
    """Polls incident changes while anyone listens and fans them out (`async with` it; `stream()` per client)."""

    def __init__(
        self, time_zone_of: Callable[[str], str | None], metrics: Metrics, *, sweep_s: float = SWEEP_S
    ) -> None:
        self._time_zone_of = time_zone_of
        self._sweep_s = sweep_s
        self._metrics = metrics
        self._queues: set[asyncio.Queue[Change | None]] = set()
        self._wake = asyncio.Event()
        self._sent: dict[str, tuple[int, datetime]] = {}
        self._watermark: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._next_sweep = 0.0

    async def __aenter__(self) -> IncidentFeed:
        self._task = asyncio.create_task(self._run(), name="incident-feed")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End every stream (their handlers return) and stop polling. Idempotent."""
        self._closed = True
        for queue in list(self._queues):
            _offer(queue, None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Something changed here: poll now rather than at the next tick."""
        self._wake.set()

    def change_of(self, incident: Incident) -> Change:
        document = listed_document(incident, self._time_zone_of(incident.device.site))
        return Change(incident.id, incident.revision, incident.updated_at, encode_json(document))

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()
            if not self._queues:
                self._watermark = None  # nobody listens: start afresh when someone does
                self._sent.clear()
                self._next_sweep = 0.0
                continue
            try:
                await self._poll()
            except (BaseORMException, OSError) as exc:  # the database is down: streams wait, then catch up
                log.warning("incident feed cannot read the database", error=str(exc))
                await asyncio.sleep(POLL_S * 4)

    async def _poll(self) -> None:
        now = datetime.now(UTC)
        since = (self._watermark or now) - LOOKBACK
        query = Incident.filter(updated_at__gte=since)
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_sweep:  # and every open incident, whenever it was stamped
            self._next_sweep = loop.time() + self._sweep_s
            query = Incident.filter(Q(updated_at__gte=since) | Q(state__in=_OPEN))
        rows = await query.order_by("updated_at", "id").limit(POLL_LIMIT).prefetch_related("device")
        for row in rows:
            seen = self._sent.get(row.id)
            if seen is not None and seen[0] >= row.revision:
                continue
            self._sent[row.id] = (row.revision, row.updated_at)
            change = self.change_of(row)
            for queue in list(self._queues):
                if not _offer(queue, change):
                    self._queues.discard(queue)
            if row.updated_at >= since and (self._watermark is None or row.updated_at > self._watermark):
                self._watermark = row.updated_at
        if self._watermark is None:
            self._watermark = now
        horizon = self._watermark - LOOKBACK * 2
        if len(self._sent) > POLL_LIMIT:
            self._sent = {k: v for k, v in self._sent.items() if v[1] >= horizon}

    async def catch_up(self, since: datetime | None) -> list[Change]:
        """What a new stream sends first: changes since its cursor, or the open incidents and recent changes."""
        if since is not None:
            query = Incident.filter(updated_at__gte=since - LOOKBACK)
        else:
            query = Incident.filter(Q(updated_at__gte=datetime.now(UTC) - RECENT) | Q(state__in=_OPEN))
        rows = await query.order_by("-updated_at", "-id").limit(POLL_LIMIT).prefetch_related("device")
        return [self.change_of(r) for r in reversed(rows)]  # the newest POLL_LIMIT, oldest first

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Change | None]]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE_LIMIT)
        if self._closed:
            _offer(queue, None)
        self._queues.add(queue)
        self._metrics.console_streams.inc()
        self._wake.set()
        try:
            yield queue
        finally:
            self._queues.discard(queue)
            self._metrics.console_streams.dec()


def _offer(queue: asyncio.Queue[Change | None], item: Change | None) -> bool:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        with contextlib.suppress(asyncio.QueueEmpty):  # make room for the end marker: the stream closes
            queue.get_nowait()
        queue.put_nowait(None)
        return False
    return True


class StreamApi:
    """`GET /v1/stream`: the feed as server-sent events."""

    def __init__(self, feed: IncidentFeed, access: Access) -> None:
        self._feed = feed
        self._access = access

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/stream", self._access.guard(Action.VIEW)(self.stream))]

    async def stream(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        since = parse_cursor(request.headers.get("Last-Event-ID") or request.query.get("cursor"))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        async with self._feed.subscribe() as queue:
            try:
                await response.write(f"retry: {RETRY_MS}\n\n".encode())
                sent: dict[str, int] = {}
                for change in await self._feed.catch_up(since):
                    sent[change.alert_id] = change.revision
                    await response.write(change.frame())
                await self._pump(response, queue, principal, sent)
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            except (BaseORMException, OSError) as exc:
                log.warning("stream ended", error=str(exc))
        return response

    async def _pump(
        self,
        response: web.StreamResponse,
        queue: asyncio.Queue[Change | None],
        principal: Principal,
        sent: dict[str, int],
    ) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + SESSION_CHECK_S
        while True:
            try:
                change = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
            else:
                if change is None:
                    return
                if sent.get(change.alert_id, 0) < change.revision:
                    sent[change.alert_id] = change.revision
                    await response.write(change.frame())
            if principal.session_token is not None and loop.time() >= next_check:
                next_check = loop.time() + SESSION_CHECK_S
                if await lookup_session(principal.session_token) is None:
                    return  # signed out or disabled: the client reconnects and is refused
