"""The runs: raw limits, latency at fixed offered rates, sustained throughput, overload, and under attack."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID

from bench import const
from bench.cpu import CpuMeter
from bench.flood import Flood
from bench.frames import FrameFactory, Shot
from bench.load import KEEPALIVE, NEW_CONNECTION, LoadClient, RunLog, now_ns, open_loop
from bench.observer import Observer
from bench.probe import delta, scrape
from bench.raw import ecdsa_verify_rate, mqtt_limits, pg_commits
from bench.stats import by_kind, latency_summary, percentiles, status_counts, window_rates
from bench.testbed import MQTT_HOST, MQTT_PORT, Testbed


@dataclass(frozen=True, slots=True)
class Options:
    """What to run (from the command line)."""

    rates: tuple[int, ...]
    duration_s: float
    devices: int
    saturation_s: float
    saturation_rate: int
    connections: int
    saturation_connections: int
    raw_s: float
    settle_s: float
    quick: bool


class GatewayDied(RuntimeError):
    """The gateway process exited during the run."""


@dataclass
class Bench:
    """One run against one testbed; each method returns the JSON-ready results of one part."""

    options: Options
    testbed: Testbed
    factory: FrameFactory
    observer: Observer
    progress: Progress

    def __post_init__(self) -> None:
        self.cpu = CpuMeter(self.testbed.gateway_pid)
        #: The most CPU that processes outside the bench took during any run (other sessions on the machine).
        self.busiest_other = 0.0

    def say(self, text: str) -> None:
        self.progress.console.print(text)

    def _check_alive(self) -> None:
        if not self.testbed.gateway_alive():
            raise GatewayDied(f"the gateway exited during the run:\n{self.testbed.log_tail()}")

    def _task(self, description: str, total: int) -> tuple[TaskID, Callable[[int, int], None]]:
        task = self.progress.add_task(description, total=total, sent=0)

        def update(sent: int, done: int) -> None:
            self.progress.update(task, completed=done, sent=sent)

        return task, update

    async def _shots(self, count: int, heartbeat_share: float = 0.0) -> list[Shot]:
        shots, seconds = await self.factory.shots(count, heartbeat_share)
        self.testbed.alert_ids.update(s.alert_id for s in shots if s.alert_id is not None)
        self.say(f"  signed {len(shots)} frames in {seconds:.1f} s (before the clock starts)")
        return shots

    async def _run(
        self, description: str, shots: list[Shot], rate: float, mode: str, connections: int
    ) -> tuple[RunLog, dict[str, Any]]:
        """One open-loop run; waits for the alerts it got accepted to be published (or DRAIN_S).

        Besides the log, returns where the CPU went (cores per process group, the gateway's CPU per request)
        and the gateway's own view of the run (its metrics' means).
        """
        self._check_alive()
        url, ssl_context = self.testbed.http_url, self.testbed.client_ssl()
        async with LoadClient(url, ssl_context, mode, connections) as client:
            await client.warm(connections)
            task, update = self._task(description, len(shots))
            metrics_before = await scrape(url, ssl_context)
            before = self.cpu.snapshot()
            log = await open_loop(client, shots, rate, update)
            after = self.cpu.snapshot()
            metrics_after = await scrape(url, ssl_context)
            self.progress.remove_task(task)
        accepted = {s.alert_id for s in log.samples if s.status == 202 and s.alert_id is not None}
        await self.observer.wait_for(accepted, const.DRAIN_S)
        self._check_alive()
        info: dict[str, Any] = {"cpu_cores": CpuMeter.cores(before, after)}
        info["other_processes"] = CpuMeter.busiest_others(before, after)
        if before is not None and after is not None:
            wall = after.at - before.at
            gateway_s = after.by_group["gateway"] - before.by_group["gateway"]
            info["wall_s"] = round(wall, 2)
            info["gateway_cpu_s"] = round(gateway_s, 2)
            info["gateway_cpu_ms_per_request"] = round(gateway_s * 1000 / max(1, len(log.samples)), 3)
            info["gateway_internals"] = delta(metrics_before, metrics_after, wall)
            other = info["cpu_cores"].get("other", 0.0)
            self.busiest_other = max(self.busiest_other, other)
        return log, info

    # -- parts -------------------------------------------------------------------------------------------

    async def warm_up(self) -> dict[str, Any]:
        """One heartbeat per device: fills the gateway's credential cache and the database's buffers."""
        shots = await self._shots(len(self.testbed.devices), heartbeat_share=1.0)
        log, _ = await self._run("warm-up: 1 heartbeat per device", shots, 500, KEEPALIVE, 64)
        return {"heartbeats": len(shots), "statuses": status_counts(log.samples)}

    async def raw_limits(self) -> dict[str, Any]:
        task = self.progress.add_task("raw limits: ECDSA verify, MQTT QoS 1, PostgreSQL commit", total=None, sent=0)
        verify = await asyncio.to_thread(ecdsa_verify_rate, self.options.raw_s)
        scale = 1 if not self.options.quick else 10
        mqtt = await mqtt_limits(
            MQTT_HOST,
            MQTT_PORT,
            self.testbed.prefix,
            const.RAW_MQTT_ROUND_TRIPS // scale,
            const.RAW_MQTT_PIPELINED // scale,
            self.observer,
        )
        pg = await pg_commits(self.testbed.database_url, const.RAW_PG_COMMITS // scale)
        self.progress.remove_task(task)
        return {"ecdsa_p256": verify, "mqtt_qos1": mqtt, "postgres": pg}

    async def latency(self) -> list[dict[str, Any]]:
        steps = []
        for mode in (KEEPALIVE, NEW_CONNECTION):
            for rate in self.options.rates:
                shots = await self._shots(int(rate * self.options.duration_s))
                connections = self.options.connections if mode == KEEPALIVE else 0
                log, info = await self._run(f"latency {mode} {rate}/s", shots, rate, mode, connections)
                summary = latency_summary(log, self.observer.arrivals, keep_cdf=True) | info
                steps.append(summary)
                e2e = summary["e2e_ms"]
                self.say(
                    f"  {mode:>14} {rate:>5}/s: p50 {e2e['p50']} ms, p99 {e2e['p99']} ms, "
                    f"statuses {summary['statuses']}, cores {_cores(info)}"
                )
                await asyncio.sleep(self.options.settle_s)
        return steps

    async def sustained(self) -> dict[str, Any]:
        rate = self.options.saturation_rate
        shots = await self._shots(int(rate * self.options.saturation_s))
        log, info = await self._run(
            f"sustained: offer {rate}/s", shots, rate, KEEPALIVE, self.options.saturation_connections
        )
        warmup = min(const.WARMUP_S, self.options.saturation_s / 3)
        out = window_rates(log, self.observer.arrivals, warmup) | {"offered_per_s": rate} | info
        out["latency"] = latency_summary(log, self.observer.arrivals)
        out["by_kind"] = by_kind(log, self.observer.arrivals)
        self.say(
            f"  stored and published {out['busy_per_s']}/s (steady window {out['stored_and_published_per_s']}/s), "
            f"shed {out['shed_per_s']}/s, "
            f"cores {_cores(info)}"
        )
        await asyncio.sleep(self.options.settle_s * 2)
        return out

    async def overload(self, sustained_per_s: float) -> dict[str, Any]:
        base = sustained_per_s if sustained_per_s > 0 else const.TARGET_SUSTAINED_PER_S
        rate = max(1, round(base * const.OVERLOAD_FACTOR))
        shots = await self._shots(int(rate * self.options.saturation_s), const.OVERLOAD_HEARTBEAT_SHARE)
        log, info = await self._run(
            f"overload: offer {rate}/s (2x)", shots, rate, KEEPALIVE, self.options.saturation_connections
        )
        out: dict[str, Any] = {"offered_per_s": rate, "based_on_sustained_per_s": base} | info
        out["by_kind"] = by_kind(log, self.observer.arrivals)
        out["window"] = window_rates(log, self.observer.arrivals, min(const.WARMUP_S, self.options.saturation_s / 3))
        out["client_queued"] = log.client_queued
        panic = out["by_kind"].get("panic", {})
        self.say(
            f"  panics shed {panic.get('shed_share')}, shed p99 {panic.get('shed_ms', {}).get('p99')} ms, "
            f"heartbeats shed {out['by_kind'].get('heartbeat', {}).get('shed_share')}"
        )
        await asyncio.sleep(self.options.settle_s * 2)
        return out

    async def attack(self) -> dict[str, Any]:
        duration = self.options.saturation_s
        shots = await self._shots(int(const.ATTACK_VALID_PER_S * duration))
        bodies = self.factory.invalid_bodies(const.ATTACK_BAD_SIGNATURE_SHARE)
        port = int(self.testbed.http_url.rsplit(":", 1)[1])
        cafile = str(self.testbed.layout.root_ca_cert)
        async with Flood("127.0.0.1", port, cafile, bodies, const.ATTACK_CONNECTIONS) as flood:
            flood_s = duration + 2.0
            flood.start(const.ATTACK_INVALID_PER_S, flood_s, now_ns() + 200_000_000)
            await asyncio.sleep(1.2)  # the valid traffic starts once the flood is under way
            log, info = await self._run(
                f"attack: {const.ATTACK_VALID_PER_S}/s valid + {const.ATTACK_INVALID_PER_S}/s invalid",
                shots,
                const.ATTACK_VALID_PER_S,
                KEEPALIVE,
                64,
            )
            flood_summary = await flood.result(flood_s + 30)
        flood_summary["latency_ms"] = percentiles(flood_summary.pop("latency_ms_sample"))
        valid = latency_summary(log, self.observer.arrivals) | info
        if "wall_s" in info:
            # The gateway's CPU in that window went to both streams.
            requests = info["wall_s"] * (const.ATTACK_VALID_PER_S + flood_summary["achieved_per_s"])
            valid["gateway_cpu_ms_per_request"] = round(info["gateway_cpu_s"] * 1000 / max(1.0, requests), 3)
        self.say(
            f"  valid p99 {valid['e2e_ms']['p99']} ms; flood {flood_summary['achieved_per_s']:.0f}/s, "
            f"answers {flood_summary['statuses']}"
        )
        return {"valid": valid, "invalid": flood_summary}


async def machine_busy(seconds: float) -> float:
    """Cores busy on the whole machine over `seconds`, before anything of the bench runs."""
    meter = CpuMeter(gateway_pid=0)
    before = meter.snapshot()
    await asyncio.sleep(seconds)
    return CpuMeter.cores(before, meter.snapshot()).get("machine", 0.0)


def _cores(info: dict[str, Any]) -> str:
    cores = info.get("cpu_cores", {})
    return ", ".join(f"{k} {v}" for k, v in cores.items() if v)


async def run_all(options: Options, progress: Progress, gateway_log: Path) -> dict[str, Any]:
    """Set up, run every part, tear down; the results as one JSON-ready dict (the gateway's log kept at
    `gateway_log` when it wrote anything)."""
    results: dict[str, Any] = {"preflight_busy_cores": await machine_busy(const.PREFLIGHT_S)}
    if results["preflight_busy_cores"] > const.QUIET_CORES:
        progress.console.print(
            f"[yellow]the machine is not quiet: {results['preflight_busy_cores']} cores busy before the bench "
            "started (other processes); expect pessimistic numbers[/yellow]"
        )
    async with Testbed(options.devices, log=progress.console.print, keep_log=gateway_log) as testbed:
        results["testbed"] = {
            "devices": len(testbed.devices),
            "gateway_pid": testbed.gateway_pid,
            "http_url": testbed.http_url,
            "topic_prefix": testbed.prefix,
            "database": testbed.database_url.rsplit("/", 1)[-1],
        }
        async with (
            FrameFactory(testbed.devices) as factory,
            Observer(MQTT_HOST, MQTT_PORT, testbed.prefix) as observer,
        ):
            bench = Bench(options, testbed, factory, observer, progress)
            phases: dict[str, float] = {}
            results["phase_s"] = phases

            async def phase(name: str, part: Awaitable[Any]) -> Any:
                started = time.perf_counter()
                results[name] = await part
                phases[name] = round(time.perf_counter() - started, 1)
                return results[name]

            try:
                await phase("warm_up", bench.warm_up())
                await phase("raw", bench.raw_limits())
                await phase("latency", bench.latency())
                sustained = await phase("sustained", bench.sustained())
                # The highest rate the gateway was seen to store and publish in this run: a sustained run in
                # congestion collapse can show less than a latency step did.
                seen = [sustained["busy_per_s"] or 0.0, *(s["goodput_per_s"] for s in results["latency"])]
                await phase("overload", bench.overload(max(seen)))
                await phase("attack", bench.attack())
            except GatewayDied as exc:
                results["error"] = str(exc)
                bench.say(f"[red]{exc}[/red]")
            finally:
                results["gateway_log_tail"] = testbed.log_tail(20)
                results["busiest_other_cores"] = bench.busiest_other
    results["gateway_log"] = str(gateway_log) if await asyncio.to_thread(gateway_log.exists) else None
    if results["gateway_log"]:
        results["gateway_log_events"] = log_events(await asyncio.to_thread(gateway_log.read_text, errors="replace"))
    return results


def log_events(text: str) -> dict[str, int]:
    """The gateway's JSON log lines counted by "level: event" (what went wrong, how often)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the start banner
        if isinstance(entry, dict):
            key = f"{entry.get('level', '?')}: {entry.get('event', '?')}"
            counts[key] = counts.get(key, 0) + 1
    return counts
