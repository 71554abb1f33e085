"""Press to the operators' board: `python -m bench.console` (`--quick` for a short run).

A gateway process (PostgreSQL, Mosquitto) serves K web consoles at once, each an open `GET /v1/stream` (server-sent
events, a viewer's bearer token) held by a separate process. Wearables press over HTTPS (`POST /v1/signals`, the
open-loop generator of `bench/load.py`): a steady rate, then a burst. The latency of a press on one console is the
time from its 202 answer until that alert's first `incident` event arrives on that stream; every accepted press
must show on every stream (a missing one is a failure) and once per revision (a second copy is a duplicate).
The gateway's CPU is read with no stream open, with K streams idle, and under the presses.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from bench import const, probe
from bench.cpu import CpuMeter, CpuSnapshot
from bench.frames import FrameFactory
from bench.load import KEEPALIVE, NEW_CONNECTION, LoadClient, RunLog, open_loop
from bench.report import machine_info, write_json
from bench.scenarios import log_events, machine_busy
from bench.stats import percentiles, status_counts
from bench.testbed import MQTT_HOST, MQTT_PORT, PG_ADMIN_DSN, Testbed
from gateway.console.auth import Role
from gateway.console.store import add_api_token
from gateway.store.db import open_database

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"

#: The issue's target: "new alerts appear on the board within one second".
TARGET_P99_MS: Final = 1000.0
#: Consoles watching at once: one operator, and a control room's worth of screens (20).
DEFAULT_CONSOLES: Final = (1, 20)
#: Presses per second of the steady part: a busy site, well inside what the gateway stores (bench/README.md).
DEFAULT_RATE: Final = 20.0
#: Seconds of the steady part: 10 s at 20/s is 200 presses per console, so p99 rests on 2 of them, not the max.
DEFAULT_DURATION_S: Final = 10.0
QUICK_DURATION_S: Final = 3.0
#: The burst: a wing's wearers all press within 100 ms (as in bench.escalation).
DEFAULT_BURST: Final = 50
BURST_S: Final = 0.1
#: Gateway CPU with the streams open and nothing happening: 40 of the feed's polls, and 1,000 /proc ticks of 10 ms.
DEFAULT_IDLE_S: Final = 10.0
QUICK_IDLE_S: Final = 3.0
#: Heartbeats per second of the warm-up (one per device, before anything is measured).
WARM_UP_RATE: Final = 200.0
#: Enrolled wearables; presses are dealt round-robin (a few per device per run, far from its replay window of 64).
DEFAULT_DEVICES: Final = 100
#: An accepted press not on a stream this long after the part's last answer is missing: longer than the feed's
#: sweep of open incidents (15 s), so a change the polls skipped but the sweep delivered shows as late, not lost.
DELIVERY_TIMEOUT_S: Final = 20.0
#: Between the steady part's last delivery and the burst: the gateway's commit and publish queues are empty again.
BURST_GAP_S: Final = 2.0
#: After the last delivery, how long the streams stay open for second copies (8 polls of the feed).
TAIL_S: Final = 2.0
#: A new stream first sends every open incident (catch-up); it is over once no event came for this long ...
QUIET_S: Final = 1.0
#: ... or after this long.
CATCH_UP_TIMEOUT_S: Final = 60.0
#: The streams' process has this long to start and get K answers (200, headers) before the bench gives up.
CONNECT_TIMEOUT_S: Final = 30.0
#: How often the bench asks the streams' process what arrived while it waits for deliveries.
COLLECT_EVERY_S: Final = 0.1
#: The name of the bench's API token; viewer is the least role that may watch the stream.
TOKEN_NAME: Final = "bench-console"
TOKEN_ROLE: Final = Role.VIEWER
#: An EventSource's reconnect delay until the server says otherwise (`retry:`), in ms (the WHATWG default is
#: implementation-defined; the gateway sends 2000).
DEFAULT_RETRY_MS: Final = 2000
#: The stream's event for an incident change (docs/CONSOLE.md).
INCIDENT_EVENT: Final = "incident"

_READY: Final = "ready"
_COLLECT: Final = "collect"
_STOP: Final = "stop"


# -- server-sent events, sans I/O ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched server-sent event."""

    #: The last event id seen on the stream when this event was dispatched ("" before any).
    id: str
    #: The `event:` field, "message" when absent.
    event: str
    #: The `data:` lines joined by newlines.
    data: str


class SseParser:
    """The WHATWG event-stream rules over bytes as they arrive (lines end in LF or CRLF; a lone CR is not a line end).

    `feed(chunk)` returns the events completed by the chunk; comments (keep-alives) are dropped; `retry:` is kept in
    `retry_ms`, the last `id:` in `last_id`. `restart()` drops a half-received event (after a reconnect).
    """

    def __init__(self) -> None:
        self.last_id = ""
        self.retry_ms: int | None = None
        self._partial = b""
        self._event = ""
        self._data: list[str] = []

    def restart(self) -> None:
        self._partial, self._event, self._data = b"", "", []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        events: list[SseEvent] = []
        for raw in lines:
            line = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
            if not line:
                if self._data:
                    events.append(SseEvent(self.last_id, self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                self._field(name, value.removeprefix(" "))
        return events

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)


# -- the consoles' process ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamTally:
    """What one stream received. Times are CLOCK_MONOTONIC ns of the chunk that completed the event."""

    #: alert id -> arrival of its first `incident` event, since the last collect.
    fresh: dict[str, int] = field(default_factory=dict)
    first_seen: set[str] = field(default_factory=set)
    revisions: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    newest: dict[str, int] = field(default_factory=dict)
    events: int = 0
    #: A second copy of an (incident, revision) already received.
    duplicates: int = 0
    #: An event older than a revision already received (a client ignores it).
    stale: int = 0
    unparsable: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)

    def note(self, event: SseEvent, arrived_ns: int) -> None:
        if event.event != INCIDENT_EVENT:
            return
        self.events += 1
        try:
            document = json.loads(event.data)
            alert_id, revision = str(document["alert_id"]), int(document["revision"])
        except (ValueError, KeyError, TypeError):
            self.unparsable += 1
            return
        if alert_id not in self.first_seen:
            self.first_seen.add(alert_id)
            self.fresh[alert_id] = arrived_ns
        self.revisions[(alert_id, revision)] += 1
        if self.revisions[(alert_id, revision)] > 1:
            self.duplicates += 1
        elif revision < self.newest.get(alert_id, 0):
            self.stale += 1
        self.newest[alert_id] = max(revision, self.newest.get(alert_id, 0))

    def report(self) -> dict[str, Any]:
        """What the bench collects: the fresh first arrivals (then forgotten here) and the running counts."""
        fresh, self.fresh = self.fresh, {}
        return {
            "fresh": fresh,
            "events": self.events,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "unparsable": self.unparsable,
            "reconnects": self.reconnects,
            "errors": self.errors[-5:],
        }


async def _follow(http: aiohttp.ClientSession, url: str, token: str, tally: StreamTally, up: asyncio.Event) -> None:
    """One console: hold the stream, reconnect like an EventSource (after `retry`, with Last-Event-ID)."""
    parser = SseParser()
    while True:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if parser.last_id:
            headers["Last-Event-ID"] = parser.last_id
        try:
            async with http.get(url, headers=headers) as response:
                if response.status != 200:
                    tally.errors.append(f"HTTP {response.status}: {(await response.text())[:200]}")
                else:
                    up.set()
                    async for chunk in response.content.iter_any():
                        arrived = time.monotonic_ns()  # before any parsing: when the bytes reached Python
                        for event in parser.feed(chunk):
                            tally.note(event, arrived)
                    tally.errors.append("the stream ended")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            tally.errors.append(f"{type(exc).__name__}: {exc}"[:200])
        parser.restart()
        tally.reconnects += 1
        await asyncio.sleep((parser.retry_ms or DEFAULT_RETRY_MS) / 1000)


def _watch(url: str, cafile: str, token: str, consoles: int, conn: Connection) -> None:
    """Process entry point."""
    asyncio.run(_serve(url, cafile, token, consoles, conn))


async def _serve(url: str, cafile: str, token: str, consoles: int, conn: Connection) -> None:
    tallies = [StreamTally() for _ in range(consoles)]
    ups = [asyncio.Event() for _ in range(consoles)]
    stop = asyncio.Event()

    def on_command() -> None:
        try:
            command = conn.recv()
        except EOFError:
            stop.set()
            return
        if command == _COLLECT:
            conn.send([t.report() for t in tallies])
        elif command == _STOP:
            stop.set()

    context = ssl.create_default_context(cafile=cafile)  # made here: an SSLContext does not cross processes
    # No read timeout: a quiet stream only sends a keep-alive comment every 15 s. One connection per console.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=0), timeout=timeout) as http:
        tasks = [
            asyncio.create_task(_follow(http, url, token, tally, up), name=f"console-{n}")
            for n, (tally, up) in enumerate(zip(tallies, ups, strict=True))
        ]
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), on_command)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await asyncio.gather(*(up.wait() for up in ups))
            conn.send(_READY)
        except TimeoutError:
            conn.send([e for t in tallies for e in t.errors][:5] or ["no answer"])
        await stop.wait()
        loop.remove_reader(conn.fileno())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    conn.send([t.report() for t in tallies])


class ConsoleStreamsError(RuntimeError):
    """The consoles' process could not open its streams (the refusals or errors it got are in the message)."""


class Consoles:
    """`async with Consoles(url, cafile, token, k) as consoles`: K streams held by a separate process.

    In their own process so that the load generator's event loop does not delay their timestamps; both read
    CLOCK_MONOTONIC (`time.monotonic_ns`), one clock for the whole machine.
    """

    def __init__(self, base_url: str, cafile: Path, token: str, consoles: int) -> None:
        self._args = (f"{base_url}/v1/stream", str(cafile), token, consoles)
        self.count = consoles
        self._conn: Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        #: Per stream: alert id -> arrival of its first event.
        self.first: list[dict[str, int]] = [{} for _ in range(consoles)]
        #: Per stream: the counts of its last report.
        self.counts: list[dict[str, Any]] = [{} for _ in range(consoles)]

    async def __aenter__(self) -> Self:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._conn = parent
        self._proc = ctx.Process(target=_watch, args=(*self._args, child), name="bench-consoles", daemon=True)
        self._proc.start()
        child.close()
        answer: Any = None
        if await asyncio.to_thread(parent.poll, CONNECT_TIMEOUT_S + 30):  # + the child's start and imports
            answer = parent.recv()
        if answer != _READY:
            await self.__aexit__(None, None, None)
            raise ConsoleStreamsError(f"the {self.count} console stream(s) did not open: {answer}")
        return self

    def _merge(self, reports: list[dict[str, Any]]) -> None:
        for first, counts, report in zip(self.first, self.counts, reports, strict=True):
            first.update(report.pop("fresh"))
            counts.update(report)

    async def collect(self) -> None:
        assert self._conn is not None
        self._conn.send(_COLLECT)
        self._merge(await asyncio.to_thread(self._conn.recv))

    def events(self) -> int:
        return sum(c.get("events", 0) for c in self.counts)

    async def settle(self) -> dict[str, Any]:
        """Wait until the streams' catch-up (every open incident) is over; what each stream received."""
        started = time.perf_counter()
        await self.collect()
        count, since = self.events(), time.perf_counter()
        while time.perf_counter() - since < QUIET_S and time.perf_counter() - started < CATCH_UP_TIMEOUT_S:
            await asyncio.sleep(COLLECT_EVERY_S)
            await self.collect()
            if self.events() != count:
                count, since = self.events(), time.perf_counter()
        per_stream = [c.get("events", 0) for c in self.counts]
        return {"events_per_stream": sorted(set(per_stream)), "seconds": round(time.perf_counter() - started, 2)}

    async def wait_for(self, alert_ids: set[str], timeout_s: float) -> bool:
        """Collect until every stream has had every alert in `alert_ids`; False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.collect()
            if all(alert_ids <= first.keys() for first in self.first):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(COLLECT_EVERY_S)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            try:
                self._conn.send(_STOP)
                if await asyncio.to_thread(self._conn.poll, 5.0):
                    final = self._conn.recv()
                    if isinstance(final, list) and len(final) == self.count:
                        self._merge(final)
            except (OSError, EOFError):
                pass
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            await asyncio.to_thread(self._proc.join, 5.0)
            if self._proc.is_alive():
                self._proc.terminate()
                await asyncio.to_thread(self._proc.join, 5.0)
            self._proc = None


# -- the testbed and the runs --------------------------------------------------------------------------------------


@dataclass(slots=True)
class ConsoleTestbed(Testbed):
    """The bench's testbed with a viewer's API token, created in the bench database before the gateway starts."""

    token: str = ""

    async def _enrol(self) -> None:
        await Testbed._enrol(self)  # zero-argument super() does not work in a slotted dataclass
        async with open_database(self.database_url):
            _, self.token = await add_api_token(TOKEN_NAME, TOKEN_ROLE, actor="bench")


@dataclass(frozen=True, slots=True)
class Options:
    """What to run (from the command line)."""

    consoles: tuple[int, ...]
    rate: float
    duration_s: float
    burst: int
    idle_s: float
    devices: int
    client: str
    quick: bool


class GatewayDied(RuntimeError):
    """The gateway process exited during the run."""


@dataclass(slots=True)
class Part:
    """One part of a phase (the steady presses, or the burst): the answers, and the CPU around its deliveries."""

    name: str
    log: RunLog
    delivered: bool
    cpu: tuple[CpuSnapshot | None, CpuSnapshot | None]

    def accepted(self) -> list[tuple[str, int, int]]:
        """(alert id, start ns, 202 ns) of every press answered 202."""
        return [(s.alert_id, s.started_ns, s.ended_ns) for s in self.log.samples if s.status == 202 and s.alert_id]


def _ms(ns: int) -> float:
    return ns / 1e6


def _cpu(a: CpuSnapshot | None, b: CpuSnapshot | None) -> dict[str, Any]:
    """Cores per process group over a window (bench.cpu), with the window and the gateway's CPU seconds."""
    if a is None or b is None:
        return {}
    return {
        "seconds": round(b.at - a.at, 2),
        "cores": CpuMeter.cores(a, b),
        "gateway_cpu_s": round(b.by_group["gateway"] - a.by_group["gateway"], 3),
    }


def part_latency(part: Part, consoles: Consoles) -> dict[str, Any]:
    """202 -> first event on each stream, per (press, stream); what never arrived; HTTP and press-start views."""
    accepted = part.accepted()
    after_202: list[float] = []
    after_start: list[float] = []
    missing: list[tuple[int, str]] = []
    for n, first in enumerate(consoles.first):
        for alert_id, started, answered in accepted:
            arrived = first.get(alert_id)
            if arrived is None:
                missing.append((n, alert_id))
                continue
            after_202.append(_ms(arrived - answered))
            after_start.append(_ms(arrived - started))
    return {
        "presses": len(part.log.samples),
        "accepted": len(accepted),
        "statuses": status_counts(part.log.samples),
        "latency_ms": percentiles(after_202),
        # The stream can be faster than the 202's way back to the client: the feed is poked at the commit.
        "before_202": sum(1 for v in after_202 if v < 0),
        "press_to_event_ms": percentiles(after_start),
        "http_ms": percentiles([_ms(s.ended_ns - s.started_ns) for s in part.log.samples if s.status == 202]),
        "send_lag_ms": percentiles([_ms(s.started_ns - s.scheduled_ns) for s in part.log.samples]),
        "missing": len(missing),
        "presses_missing_somewhere": len({a for _, a in missing}),
        "missing_examples": [{"stream": n, "alert_id": a} for n, a in missing[:10]],
        "all_delivered_in_time": part.delivered,
        "client_queued": part.log.client_queued,
        "_samples": after_202,
    }


@dataclass
class ConsoleBench:
    """One run against one testbed: a phase per K, each with its own K streams."""

    options: Options
    testbed: ConsoleTestbed
    factory: FrameFactory
    client: LoadClient
    meter: CpuMeter

    def _check_alive(self) -> None:
        if not self.testbed.gateway_alive():
            raise GatewayDied(f"the gateway died:\n{self.testbed.log_tail(10)}")

    async def warm_up(self) -> dict[str, Any]:
        """One heartbeat per device: fills the gateway's credential cache (and starts the signing workers)."""
        shots, _ = await self.factory.shots(len(self.testbed.devices), heartbeat_share=1.0)
        log = await open_loop(self.client, shots, WARM_UP_RATE)
        return {"heartbeats": len(shots), "statuses": status_counts(log.samples)}

    async def idle_cpu(self) -> dict[str, Any]:
        before = self.meter.snapshot()
        await asyncio.sleep(self.options.idle_s)
        return _cpu(before, self.meter.snapshot())

    async def _press(self, name: str, count: int, rate: float, consoles: Consoles) -> Part:
        shots, _ = await self.factory.shots(count)  # signed (and timestamped) just before the clock starts
        self.testbed.alert_ids.update(s.alert_id for s in shots if s.alert_id)
        before = self.meter.snapshot()
        log = await open_loop(self.client, shots, rate)
        accepted = {s.alert_id for s in log.samples if s.status == 202 and s.alert_id}
        delivered = await consoles.wait_for(accepted, DELIVERY_TIMEOUT_S)
        after = self.meter.snapshot()  # after every arrival was taken: its few ms of /proc reading delay nothing
        self._check_alive()
        return Part(name, log, delivered, (before, after))

    async def phase(self, k: int) -> dict[str, Any]:
        """K streams: catch-up, idle CPU, the steady presses, the burst, then a tail for late second copies."""
        options = self.options
        url = self.testbed.http_url
        async with Consoles(url, self.testbed.layout.root_ca_cert, self.testbed.token, k) as consoles:
            scraped = await probe.scrape(url, self.testbed.client_ssl())
            catch_up = await consoles.settle()
            print(f"{k} console(s): open, catch-up {catch_up['events_per_stream']} events per stream; idle ...")
            idle = await self.idle_cpu()
            steady_count = round(options.rate * options.duration_s)
            print(f"{k} console(s): {steady_count} presses at {options.rate:g}/s ...")
            steady = await self._press("steady", steady_count, options.rate, consoles)
            await asyncio.sleep(BURST_GAP_S)
            print(f"{k} console(s): {options.burst} presses within {BURST_S * 1000:g} ms ...")
            burst = await self._press("burst", options.burst, options.burst / BURST_S, consoles)
            await asyncio.sleep(TAIL_S)
            scraped_end = await probe.scrape(url, self.testbed.client_ssl())
        self._check_alive()
        parts = {p.name: part_latency(p, consoles) for p in (steady, burst)}
        every = [v for p in parts.values() for v in p.pop("_samples")]
        total = {
            "presses": sum(p["presses"] for p in parts.values()),
            "accepted": sum(p["accepted"] for p in parts.values()),
            "latency_ms": percentiles(every),
            "before_202": sum(p["before_202"] for p in parts.values()),
            "missing": sum(p["missing"] for p in parts.values()),
        }
        counts = consoles.counts
        p99 = total["latency_ms"]["p99"]
        met = (
            p99 is not None and p99 <= TARGET_P99_MS and total["missing"] == 0 and total["accepted"] == total["presses"]
        )
        result: dict[str, Any] = {
            "consoles": k,
            # The gateway's own count of open streams (`panic_console_streams`) once these K were open, and at the
            # phase's end. A closed stream counts until the gateway next writes to it (a change or a keep-alive).
            "gateway_streams_gauge": {
                "at_open": scraped.get("panic_console_streams"),
                "at_end": scraped_end.get("panic_console_streams"),
            },
            "catch_up": catch_up,
            "steady": parts["steady"] | {"cpu": _cpu(*steady.cpu)},
            "burst": parts["burst"] | {"cpu": _cpu(*burst.cpu)},
            "all": total,
            "idle_cpu": idle,
            "streams": {
                "duplicates": sum(c.get("duplicates", 0) for c in counts),
                "duplicates_per_stream": [c.get("duplicates", 0) for c in counts],
                "stale": sum(c.get("stale", 0) for c in counts),
                "unparsable": sum(c.get("unparsable", 0) for c in counts),
                "reconnects": sum(c.get("reconnects", 0) for c in counts),
                "events_per_stream": [c.get("events", 0) for c in counts],
                "errors": sorted({e for c in counts for e in c.get("errors", []) if e != "the stream ended"})[:10],
            },
            "target": {"p99_ms": TARGET_P99_MS, "met": met},
        }
        s = result["all"]["latency_ms"]
        print(
            f"{k} console(s): p50 {s['p50']} ms, p99 {s['p99']} ms, max {s['max']} ms, "
            f"{total['missing']} missing, {result['streams']['duplicates']} duplicates"
        )
        return result


async def run(options: Options, gateway_log: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {
            "consoles": list(options.consoles),
            "rate_per_s": options.rate,
            "duration_s": options.duration_s,
            "burst": options.burst,
            "burst_s": BURST_S,
            "idle_s": options.idle_s,
            "devices": options.devices,
            "client": options.client,
            "quick": options.quick,
        },
        "machine": await machine_info(PG_ADMIN_DSN, MQTT_HOST, MQTT_PORT),
        "preflight_busy_cores": await machine_busy(const.PREFLIGHT_S),
    }
    if results["preflight_busy_cores"] > const.QUIET_CORES:
        print(f"the machine is not quiet: {results['preflight_busy_cores']} cores busy before the bench started")
    phases: list[dict[str, Any]] = []
    results["phases"] = phases
    async with ConsoleTestbed(options.devices, keep_log=gateway_log) as testbed:
        results["testbed"] = {
            "devices": len(testbed.devices),
            "gateway_pid": testbed.gateway_pid,
            "database": testbed.database_url.rsplit("/", 1)[-1],
        }
        meter = CpuMeter(testbed.gateway_pid)
        first_snapshot = meter.snapshot()
        connections = max(options.burst, 16)  # every press of the burst on its own connection: open loop
        async with (
            FrameFactory(testbed.devices) as factory,
            LoadClient(testbed.http_url, testbed.client_ssl(), options.client, connections) as client,
        ):
            await client.warm(connections)
            bench = ConsoleBench(options, testbed, factory, client, meter)
            results["warm_up"] = await bench.warm_up()
            print(f"no console open: idle {options.idle_s:g} s ...")
            results["idle_cpu_no_stream"] = await bench.idle_cpu()
            try:
                for k in options.consoles:
                    phases.append(await bench.phase(k))
            except (GatewayDied, ConsoleStreamsError) as exc:
                results["error"] = str(exc)
                print(exc)
        results["busiest_other_cores"] = CpuMeter.busiest_others(first_snapshot, meter.snapshot())
        results["gateway_alive"] = testbed.gateway_alive()
        results["gateway_log_tail"] = testbed.log_tail(20)
    if await asyncio.to_thread(gateway_log.exists):
        results["gateway_log"] = str(gateway_log)
        results["gateway_log_events"] = log_events(await asyncio.to_thread(gateway_log.read_text, errors="replace"))
    results["target"] = {
        "text": "new alerts appear on the board within one second",
        "p99_ms": TARGET_P99_MS,
        "met": bool(phases) and "error" not in results and all(p["target"]["met"] for p in phases),
    }
    return results


# -- the summary ---------------------------------------------------------------------------------------------------


def _cell(value: float | int | None, width: int = 8) -> str:
    return f"{value:>{width}.1f}" if value is not None else f"{'-':>{width}}"


def _cores(cpu: dict[str, Any], group: str = "gateway") -> str:
    value = cpu.get("cores", {}).get(group)
    return f"{value:.2f}" if value is not None else "-"


def print_table(results: dict[str, Any]) -> None:
    o = results["options"]
    print()
    print(
        f"Press answered 202 -> its first `incident` event on each open /v1/stream (ms): {o['rate_per_s']:g} presses/s "
        f"for {o['duration_s']:g} s, then {o['burst']} within {o['burst_s'] * 1000:g} ms ({o['client']})"
    )
    header = f"{'consoles':>8}  {'part':<7}{'presses':>8}{'samples':>8}"
    header += f"{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'missing':>8}{'dups':>6}{'<202':>6}"
    print(header)
    for phase in results["phases"]:
        dups = phase["streams"]["duplicates"]
        for name in ("steady", "burst", "all"):
            part = phase[name]
            lat = part["latency_ms"]
            cells = "".join(_cell(lat[q]) for q in ("p50", "p95", "p99", "max"))
            accepted = f"{part['accepted']}/{part['presses']}" if part["accepted"] != part["presses"] else ""
            print(
                f"{phase['consoles']:>8}  {name:<7}{accepted or part['presses']:>8}{lat['n']:>8}{cells}"
                f"{part['missing']:>8}{(dups if name == 'all' else ''):>6}{part['before_202']:>6}"
            )
    print(f"target: new alerts appear on the board within one second (p99 <= {TARGET_P99_MS:g} ms)")
    for phase in results["phases"]:
        total = phase["all"]
        verdict = "MET" if phase["target"]["met"] else "MISSED"
        notes = []
        if total["missing"]:
            notes.append(f"FAILURE: {total['missing']} events missing (every accepted press must show on every stream)")
        if total["accepted"] != total["presses"]:
            notes.append(f"only {total['accepted']}/{total['presses']} presses accepted")
        streams = phase["streams"]
        if streams["reconnects"] or streams["errors"]:
            notes.append(f"{streams['reconnects']} reconnects {streams['errors']}")
        line = f"{phase['consoles']:>8} console(s): {verdict:<7}(p99 {total['latency_ms']['p99']} ms)"
        print("; ".join([line, *notes]))
    print()
    print(f"gateway CPU (cores; 1.00 = one core)   no stream open, idle: {_cores(results['idle_cpu_no_stream'])}")
    for phase in results["phases"]:
        steady = phase["steady"]
        per_press = (
            f" ({steady['cpu']['gateway_cpu_s'] / steady['accepted'] * 1000:.1f} ms CPU per press)"
            if steady["accepted"] and steady["cpu"]
            else ""
        )
        print(
            f"{phase['consoles']:>8} console(s): idle {_cores(phase['idle_cpu'])}, steady presses "
            f"{_cores(steady['cpu'])}{per_press}, burst {_cores(phase['burst']['cpu'])}; "
            f"postgres idle {_cores(phase['idle_cpu'], 'postgres')} steady {_cores(steady['cpu'], 'postgres')}; "
            f"machine steady {_cores(steady['cpu'], 'machine')}, other {_cores(steady['cpu'], 'other')}"
        )
    if results.get("busiest_other_cores"):
        print(f"other processes took cores ({', '.join(results['busiest_other_cores'])}): numbers are pessimistic")
    events = {k: v for k, v in results.get("gateway_log_events", {}).items() if not k.startswith("info")}
    if events:
        print(f"gateway log: {events}")
    if "error" in results:
        print(f"run stopped: {results['error']}")


def _consoles(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("console counts are whole numbers, comma separated") from None
    if not counts or min(counts) <= 0:
        raise argparse.ArgumentTypeError("give at least one positive number of consoles")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_DURATION_S:g} s of steady presses, {QUICK_IDLE_S:g} s idle"
    )
    default_consoles = ",".join(map(str, DEFAULT_CONSOLES))
    parser.add_argument(
        "--consoles", type=_consoles, default=DEFAULT_CONSOLES, help=f"open streams per phase ({default_consoles})"
    )
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="presses per second of the steady part")
    parser.add_argument("--duration", type=float, default=None, help="seconds of the steady part")
    parser.add_argument("--burst", type=int, default=DEFAULT_BURST, help=f"presses within {BURST_S * 1000:g} ms")
    parser.add_argument("--idle", type=float, default=None, help="seconds of each idle CPU reading")
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES, help="enrolled wearables")
    parser.add_argument("--client", choices=(KEEPALIVE, NEW_CONNECTION), default=KEEPALIVE)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.burst <= 0 or args.devices <= 0:
        parser.error("--rate, --burst and --devices must be positive")
    options = Options(
        consoles=args.consoles,
        rate=args.rate,
        duration_s=args.duration or (QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S),
        burst=args.burst,
        idle_s=args.idle or (QUICK_IDLE_S if args.quick else DEFAULT_IDLE_S),
        devices=args.devices,
        client=args.client,
        quick=args.quick,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-console-quick" if args.quick else "-console")
    results = asyncio.run(run(options, args.out / f"{stamp}-gateway.log"))
    print_table(results)
    path = args.out / f"{stamp}.json"
    write_json(path, results)
    print(f"results: {path}")
    return 0 if results.get("gateway_alive") else 1


if __name__ == "__main__":
    sys.exit(main())
