"""The command center's side of the measurement: a process that notes when each alert's first state arrives.

It runs in its own process so that its timestamps are not delayed by the load generator's busy event
loop. Times are CLOCK_MONOTONIC nanoseconds (`time.monotonic_ns`), one clock for every process on the
machine, so they compare directly with the generator's send times.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt

#: The observer has this long to connect and subscribe before the bench gives up.
READY_TIMEOUT_S: Final = 20.0
_READY: Final = "ready"
_COLLECT: Final = "collect"
_STOP: Final = "stop"


def _observe(host: str, port: int, prefix: str, conn: Connection) -> None:
    """Process entry point."""
    asyncio.run(_serve(host, port, prefix, conn))


async def _serve(host: str, port: int, prefix: str, conn: Connection) -> None:
    seen: set[str] = set()
    fresh: dict[str, int] = {}
    stop = asyncio.Event()

    def on_state(client: Any, userdata: Any, message: Any) -> None:
        # Called by paho as soon as the PUBLISH is parsed off the socket: the earliest moment Python sees it.
        arrived = time.monotonic_ns()
        alert_id = message.topic.rsplit("/", 2)[-2]
        if alert_id not in seen:
            seen.add(alert_id)
            fresh[alert_id] = arrived

    def on_command() -> None:
        nonlocal fresh
        try:
            command = conn.recv()
        except EOFError:
            stop.set()
            return
        if command == _COLLECT:
            batch, fresh = fresh, {}
            conn.send(batch)
        elif command == _STOP:
            stop.set()

    state_filter = f"{prefix}/alerts/+/state"
    async with aiomqtt.Client(host, port, identifier=f"bench-observer-{uuid.uuid4().hex[:8]}") as client:
        # A paho callback per topic filter bypasses aiomqtt's per-message task and queue (cheaper, earlier).
        client._client.message_callback_add(state_filter, on_state)
        # QoS 0 to us: Mosquitto's per-client queue (1,000 QoS 1 messages) would drop alerts under load and
        # count them as lost; on loopback TCP nothing is lost at QoS 0. The gateway still publishes at QoS 1.
        await client.subscribe(state_filter, qos=0)
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), on_command)
        conn.send(_READY)
        await stop.wait()
        loop.remove_reader(conn.fileno())
    conn.send(fresh)


class Observer:
    """`async with Observer(host, port, prefix) as obs: arrivals = await obs.collect()`."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self._args = (host, port, prefix)
        self._conn: Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self.arrivals: dict[str, int] = {}

    @property
    def pid(self) -> int:
        return self._proc.pid or 0 if self._proc is not None else 0

    async def __aenter__(self) -> Self:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._conn = parent
        self._proc = ctx.Process(target=_observe, args=(*self._args, child), name="bench-observer", daemon=True)
        self._proc.start()
        child.close()
        if not await asyncio.to_thread(parent.poll, READY_TIMEOUT_S) or parent.recv() != _READY:
            raise RuntimeError("the MQTT observer did not subscribe in time")
        return self

    async def collect(self) -> dict[str, int]:
        """Arrivals (alert id -> monotonic ns) since the last call; also merged into `arrivals`."""
        assert self._conn is not None
        self._conn.send(_COLLECT)
        batch: dict[str, int] = await asyncio.to_thread(self._conn.recv)
        self.arrivals.update(batch)
        return batch

    async def wait_for(self, alert_ids: set[str], timeout_s: float) -> None:
        """Collect until every id in `alert_ids` has arrived or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.collect()
            if alert_ids.issubset(self.arrivals.keys()) or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.2)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            try:
                self._conn.send(_STOP)
                if await asyncio.to_thread(self._conn.poll, 5.0):
                    self.arrivals.update(self._conn.recv())
            except (OSError, EOFError):
                pass
            self._conn.close()
        if self._proc is not None:
            await asyncio.to_thread(self._proc.join, 5.0)
            if self._proc.is_alive():
                self._proc.terminate()
                await asyncio.to_thread(self._proc.join, 5.0)
