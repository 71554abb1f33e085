"""The open-loop load generator: requests leave on a fixed timetable, whatever the gateway answers.

Each shot i is due at t0 + i / rate. The scheduler starts every due request as its own task and never
waits for answers, so a slow gateway cannot slow the offered load down (no coordinated omission). Its
own lag (actual start minus due time) is recorded, so a generator that cannot keep up is visible.

Two client shapes:
- keep-alive: a pool of persistent TLS connections (a fleet whose modems hold their connection);
- new connection: a fresh TCP connection and full TLS handshake per alert (`force_close`), what a
  wearable waking from sleep pays. No TLS session resumption: the worst case.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Final

import aiohttp

from bench import const
from bench.frames import Shot
from gateway.protocol import const as protocol

#: One clock for every process on the machine (CLOCK_MONOTONIC): the observer process uses it too.
now_ns: Final = time.monotonic_ns

KEEPALIVE: Final = "keep-alive"
NEW_CONNECTION: Final = "new-connection"
HEADERS: Final = {"Content-Type": protocol.MEDIA_TYPE}
#: How often the scheduler reports progress (a rich refresh is not free on a shared core).
PROGRESS_EVERY_NS: Final = 250_000_000


@dataclass(slots=True)
class Sample:
    """One request. Times are monotonic nanoseconds; status 0 means no HTTP answer (error names why)."""

    kind: str
    alert_id: str | None
    scheduled_ns: int
    started_ns: int = 0
    ended_ns: int = 0
    status: int = 0
    retry_after: bool = False
    error: str = ""
    #: The problem's "reason" of a refusal (e.g. "overloaded", "store-unavailable", "replayed").
    reason: str = ""


@dataclass(slots=True)
class RunLog:
    """What one open-loop run did."""

    mode: str
    rate: float
    samples: list[Sample]
    t0_ns: int
    #: Requests that waited for a free pooled connection in the client (the pool was too small: not open loop).
    client_queued: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def offered_s(self) -> float:
        return len(self.samples) / self.rate


class LoadClient:
    """An aiohttp session of one shape; `async with LoadClient(url, ssl, mode) as client`."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext, mode: str, connections: int) -> None:
        self.url = f"{base_url}/v1/signals"
        self._base = base_url
        self._ssl = ssl_context
        self.mode = mode
        self._connections = connections
        self.client_queued = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadClient:
        trace = aiohttp.TraceConfig()

        async def queued(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object) -> None:
            self.client_queued += 1

        trace.on_connection_queued_start.append(queued)
        if self.mode == KEEPALIVE:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl, limit=self._connections, limit_per_host=self._connections, keepalive_timeout=300
            )
        else:
            connector = aiohttp.TCPConnector(ssl=self._ssl, force_close=True, limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=const.REQUEST_TIMEOUT_S),
            trace_configs=[trace],
            skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def warm(self, connections: int) -> None:
        """Open `connections` pooled connections before the clock starts (keep-alive only)."""
        if self.mode != KEEPALIVE or self._session is None:
            return
        session = self._session

        async def one() -> None:
            async with session.get(f"{self._base}/healthz") as r:
                await r.read()

        await asyncio.gather(*(one() for _ in range(min(connections, self._connections))))
        self.client_queued = 0

    async def send(self, sample: Sample, body: bytes) -> None:
        assert self._session is not None
        sample.started_ns = now_ns()
        try:
            async with self._session.post(self.url, data=body, headers=HEADERS) as r:
                payload = await r.read()
                sample.status = r.status
                sample.retry_after = "Retry-After" in r.headers
                if r.status >= 400:
                    sample.reason = _reason(payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            sample.error = type(exc).__name__
        sample.ended_ns = now_ns()


def _reason(payload: bytes) -> str:
    try:
        doc = json.loads(payload)
    except ValueError:
        return "unparsable"
    return str(doc.get("reason", "")) if isinstance(doc, dict) else ""


async def open_loop(
    client: LoadClient,
    shots: Sequence[Shot],
    rate: float,
    progress: Callable[[int, int], None] | None = None,
) -> RunLog:
    """Send `shots` at `rate` per second on a fixed timetable; return once every request is answered."""
    interval = 1e9 / rate
    t0 = now_ns() + 20_000_000  # a little slack so the first shots are not already late
    samples = [Sample(s.kind, s.alert_id, t0 + int(i * interval)) for i, s in enumerate(shots)]
    queued_before = client.client_queued
    tasks: set[asyncio.Task[None]] = set()
    done = 0

    def finished(task: asyncio.Task[None]) -> None:
        nonlocal done
        done += 1
        tasks.discard(task)

    n = len(shots)
    i = 0
    next_progress = 0
    while i < n:
        now = now_ns()
        due = min(n, int((now - t0) // interval) + 1) if now >= t0 else 0
        while i < due:
            task = asyncio.create_task(client.send(samples[i], shots[i].body))
            tasks.add(task)
            task.add_done_callback(finished)
            i += 1
        if progress is not None and now >= next_progress:
            progress(i, done)
            next_progress = now + PROGRESS_EVERY_NS
        if i < n:
            await asyncio.sleep(max(0.0, (samples[i].scheduled_ns - now_ns()) / 1e9))
    while tasks:
        await asyncio.wait(set(tasks), timeout=PROGRESS_EVERY_NS / 1e9)
        if progress is not None:
            progress(n, done)
    if progress is not None:
        progress(n, n)
    return RunLog(client.mode, rate, samples, t0, client.client_queued - queued_before)
