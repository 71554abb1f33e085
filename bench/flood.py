"""The attacker: a separate process that floods the gateway with invalid requests at a fixed rate.

An attacker optimises for its own cost, so this one does not use aiohttp: it writes prebuilt HTTP/1.1
requests, pipelined, on a few persistent TLS connections, and only counts the status lines that come
back. That lets one process offer thousands of requests per second on a shared core.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import ssl
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Final

from gateway.protocol import const as protocol

#: Requests written ahead on one connection before it counts as saturated (the attacker then skips it).
MAX_OUTSTANDING: Final = 1000
#: The flood process has this long to connect.
READY_TIMEOUT_S: Final = 30.0
#: After the last request, how long to wait for the outstanding answers.
DRAIN_S: Final = 10.0
#: Every Nth answer's latency is kept (a sample is enough; the valid traffic is what the target is about).
LATENCY_SAMPLE_EVERY: Final = 10


class _Pipelined(asyncio.Protocol):
    """One TLS connection carrying pipelined requests; answers come back in order."""

    def __init__(self, statuses: collections.Counter[int], latencies: list[float]) -> None:
        self.statuses = statuses
        self.latencies = latencies
        self.sent_at: collections.deque[int] = collections.deque()
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.answers = 0
        #: Set while nothing written is unanswered.
        self.drained = asyncio.Event()
        self.drained.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.sent_at:
            self.statuses[0] += len(self.sent_at)  # written but never answered
        self.sent_at.clear()
        self.drained.set()

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.sent_at.append(time.monotonic_ns())
        self.drained.clear()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            total = end + 4 + _content_length(head)
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self.statuses[int(head[9:12])] += 1
            sent = self.sent_at.popleft() if self.sent_at else time.monotonic_ns()
            if not self.sent_at:
                self.drained.set()
            self.answers += 1
            if self.answers % LATENCY_SAMPLE_EVERY == 0:
                self.latencies.append((time.monotonic_ns() - sent) / 1e6)


def _content_length(head: bytes) -> int:
    marker = head.find(b"content-length:")
    if marker < 0:
        return 0
    end = head.find(b"\r\n", marker)
    return int(head[marker + len(b"content-length:") : end if end >= 0 else None])


def _requests(host: str, port: int, bodies: Sequence[bytes]) -> list[bytes]:
    head = f"POST /v1/signals HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {protocol.MEDIA_TYPE}\r\n"
    return [f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]


async def _flood(
    host: str, port: int, cafile: str, bodies: Sequence[bytes], connections: int, conn: Connection
) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=cafile)
    loop = asyncio.get_running_loop()
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    requests = _requests(host, port, bodies)

    async def connect() -> _Pipelined:
        _, proto = await loop.create_connection(lambda: _Pipelined(statuses, latencies), host, port, ssl=ctx)
        return proto

    pool = list(await asyncio.gather(*(connect() for _ in range(connections))))
    opened = len(pool)
    conn.send("ready")
    rate, duration_s, start_ns = await loop.run_in_executor(None, conn.recv)
    interval = 1e9 / rate
    total = int(rate * duration_s)
    sent = skipped = 0
    cursor = 0
    reconnecting: set[int] = set()

    async def reconnect(slot: int) -> None:
        nonlocal opened
        try:
            pool[slot] = await connect()
            opened += 1
        except OSError:
            await asyncio.sleep(0.1)
        finally:
            reconnecting.discard(slot)

    i = 0
    tasks: set[asyncio.Task[None]] = set()
    while i < total:
        now = time.monotonic_ns()
        due = min(total, int((now - start_ns) // interval) + 1) if now >= start_ns else 0
        while i < due:
            for _ in range(len(pool)):
                cursor = (cursor + 1) % len(pool)
                proto = pool[cursor]
                if not proto.open:
                    if cursor not in reconnecting:
                        reconnecting.add(cursor)
                        task = asyncio.create_task(reconnect(cursor))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    continue
                if len(proto.sent_at) < MAX_OUTSTANDING:
                    proto.send(requests[i % len(requests)])
                    sent += 1
                    break
            else:
                skipped += 1
            i += 1
        await asyncio.sleep(max(0.0, (start_ns + (i * interval) - time.monotonic_ns()) / 1e9))
    elapsed_s = (time.monotonic_ns() - start_ns) / 1e9
    await asyncio.wait([asyncio.create_task(p.drained.wait()) for p in pool], timeout=DRAIN_S)
    for p in pool:
        if p.transport is not None:
            p.transport.close()
    await asyncio.sleep(0.1)
    return {
        "offered": total,
        "sent": sent,
        "skipped_saturated": skipped,
        "achieved_per_s": sent / elapsed_s if elapsed_s > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "connections_opened": opened,
        "latency_ms_sample": latencies,
    }


def _main(host: str, port: int, cafile: str, bodies: Sequence[bytes], connections: int, conn: Connection) -> None:
    """Process entry point."""
    conn.send(asyncio.run(_flood(host, port, cafile, bodies, connections, conn)))


class Flood:
    """The flood process: `async with Flood(...) as flood: flood.start(...); summary = await flood.result(...)`."""

    def __init__(self, host: str, port: int, cafile: str, bodies: Sequence[bytes], connections: int) -> None:
        self._args = (host, port, cafile, list(bodies), connections)
        self._conn: Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None

    @property
    def pid(self) -> int:
        return (self._proc.pid or 0) if self._proc is not None else 0

    async def __aenter__(self) -> Flood:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._conn = parent
        self._proc = ctx.Process(target=_main, args=(*self._args, child), name="bench-flood", daemon=True)
        self._proc.start()
        child.close()
        if not await asyncio.to_thread(parent.poll, READY_TIMEOUT_S) or parent.recv() != "ready":
            raise RuntimeError("the flood process did not connect in time")
        return self

    def start(self, rate: float, duration_s: float, start_ns: int) -> None:
        assert self._conn is not None
        self._conn.send((rate, duration_s, start_ns))

    async def result(self, timeout_s: float) -> dict[str, Any]:
        assert self._conn is not None
        if not await asyncio.to_thread(self._conn.poll, timeout_s):
            raise RuntimeError("the flood process did not report")
        summary: dict[str, Any] = self._conn.recv()
        return summary

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            await asyncio.to_thread(self._proc.join, 5.0)
            if self._proc.is_alive():
                self._proc.terminate()
                await asyncio.to_thread(self._proc.join, 5.0)
