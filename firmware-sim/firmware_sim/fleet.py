"""A fleet of virtual wearables driven by a scenario on an open-loop timetable, and the run's summary."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from firmware_sim import const
from firmware_sim.errors import DeviceStateError, ScenarioError
from firmware_sim.faults import Expectation, FaultKind, make_fault, send_fault
from firmware_sim.scenario import Scenario
from firmware_sim.transport import HttpUplink, UplinkResult
from firmware_sim.wearable import Clock, Issuer, VirtualWearable, enroll, wall_clock_ms
from gateway.protocol import EventType, GpsFix

#: Picks the uplink a wearable sends through (one shared, or one per device for mTLS).
UplinkFor = Callable[[VirtualWearable], HttpUplink]

_ACCEPTED = Expectation(202, status="accepted")


class Fleet:
    """Wearables enrolled in one directory, one sub-directory per device id."""

    def __init__(self, wearables: Sequence[VirtualWearable], *, enrolled: Sequence[str] = ()) -> None:
        if not wearables:
            raise ValueError("a fleet needs at least one wearable")
        self.wearables: tuple[VirtualWearable, ...] = tuple(wearables)
        #: Ids enrolled by `open` now (the others were found enrolled already).
        self.enrolled: tuple[str, ...] = tuple(enrolled)

    @classmethod
    def open(
        cls,
        directory: Path,
        device_ids: Sequence[str],
        *,
        issue: Issuer | None = None,
        clock: Clock = wall_clock_ms,
        counter_block: int = const.FLEET_COUNTER_BLOCK,
    ) -> Fleet:
        """Load each device from directory/<id>, enrolling those not there yet with `issue`.

        Raises DeviceStateError for a device that is missing when no issuer is given, or unreadable.
        """
        wearables: list[VirtualWearable] = []
        enrolled: list[str] = []
        for device_id in device_ids:
            device_dir = directory / device_id
            if (device_dir / const.STATE_FILE).exists():
                wearable = VirtualWearable.load(device_dir, clock=clock, counter_block=counter_block)
                if wearable.device_id != device_id:
                    found = wearable.device_id
                    raise DeviceStateError(f"{device_dir} holds device {found}, not {device_id}", device_dir)
            elif issue is None:
                raise DeviceStateError(f"{device_dir}: device not enrolled, and no CA given to enroll it", device_dir)
            else:
                wearable = enroll(device_dir, device_id, issue, clock=clock, counter_block=counter_block)
                enrolled.append(device_id)
            wearables.append(wearable)
        return cls(wearables, enrolled=enrolled)

    def place(self, center: tuple[float, float], radius_m: float, rng: random.Random) -> None:
        """Give every wearable a fixed GPS position, uniformly spread over a disc around `center`."""
        lat0, lon0 = center
        for wearable in self.wearables:
            distance = radius_m * math.sqrt(rng.random())
            bearing = 2 * math.pi * rng.random()
            lat = lat0 + distance * math.cos(bearing) / const.METRES_PER_DEGREE
            lon_scale = const.METRES_PER_DEGREE * max(math.cos(math.radians(lat0)), 1e-6)
            lon = lon0 + distance * math.sin(bearing) / lon_scale
            wearable.gps = GpsFix(max(-90.0, min(90.0, lat)), (lon + 180) % 360 - 180, const.DEFAULT_GPS_ACCURACY_M)


@asynccontextmanager
async def fleet_uplinks(
    base_url: str,
    fleet: Fleet,
    *,
    ca_file: Path | None,
    mtls: bool,
    keep_alive: bool,
    rng: random.Random | None = None,
) -> AsyncIterator[UplinkFor]:
    """Open the uplinks a fleet sends through: one shared, or with mTLS one per device (each its own cert)."""
    async with AsyncExitStack() as stack:
        if not mtls:
            shared = await stack.enter_async_context(
                HttpUplink(base_url, ca_file=ca_file, keep_alive=keep_alive, rng=rng)
            )
            yield lambda _wearable: shared
            return
        by_device: dict[str, HttpUplink] = {}
        for wearable in fleet.wearables:
            uplink = HttpUplink(
                base_url,
                ca_file=ca_file,
                client_cert=wearable.client_certificate,
                keep_alive=keep_alive,
                rng=rng,
            )
            by_device[wearable.device_id] = await stack.enter_async_context(uplink)
        yield lambda wearable: by_device[wearable.device_id]


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One signal of a run.

    index: position in the timetable.
    device_id: the wearable that sent it.
    kind: the event name ("panic") or the fault's name ("bad-signature").
    due_s: when the timetable had it start, from the start of the run.
    lag_s: how late it actually started (open-loop fidelity: should stay near 0 however slow the answers).
    result: the gateway's answer.
    expected: the answer it should have had.
    ok: it had it (for faults with a prelude, the prelude was accepted too).
    """

    index: int
    device_id: str
    kind: str
    due_s: float
    lag_s: float
    result: UplinkResult
    expected: Expectation
    ok: bool


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class FleetReport:
    """The results of a run, and their summary.

    scenario: what was run.
    records: one per signal, in timetable order.
    elapsed_s: from the first signal to the last answer.
    """

    scenario: Scenario
    records: tuple[SignalRecord, ...]
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """Every signal got the answer it should have."""
        return all(record.ok for record in self.records)

    def outcomes(self) -> Counter[str]:
        """Signals by answer: "202 accepted", "409 replayed", "no answer"..."""
        return Counter(record.result.label for record in self.records)

    def latencies_s(self) -> list[float]:
        """Latency of every signal that got an answer, retries included."""
        return [r.result.latency_s for r in self.records if r.result.status_code is not None]

    def render(self, console: Console) -> None:
        """Print the summary: outcomes, expectations by kind, latency and schedule lag percentiles."""
        scenario = self.scenario
        rate = len(self.records) / self.elapsed_s if self.elapsed_s > 0 else math.nan
        console.print(
            f"[bold]{scenario.name}[/bold]: {len(self.records)} signals from {scenario.devices} devices in "
            f"{self.elapsed_s:.1f} s ({rate:.1f}/s, target {scenario.rate_per_s:g}/s, "
            f"keep-alive {'on' if scenario.keep_alive else 'off'})"
        )
        outcomes = Table(title="answers")
        outcomes.add_column("answer")
        outcomes.add_column("signals", justify="right")
        for label, count in sorted(self.outcomes().items()):
            outcomes.add_row(label, str(count))
        console.print(outcomes)

        kinds = Table(title="by kind")
        for column in ("kind", "expected", "sent", "as expected", "unexpected"):
            kinds.add_column(column, justify="left" if column in ("kind", "expected") else "right")
        groups: dict[str, list[SignalRecord]] = {}
        for record in self.records:
            groups.setdefault(record.kind, []).append(record)
        for kind, records in sorted(groups.items()):
            good = sum(r.ok for r in records)
            kinds.add_row(kind, str(records[0].expected), str(len(records)), str(good), str(len(records) - good))
        console.print(kinds)

        timing = Table(title="timing (ms)")
        for column in ("", "p50", "p95", "p99", "max"):
            timing.add_column(column, justify="right")
        for name, values in (
            ("latency", self.latencies_s()),
            ("start lag", [r.lag_s for r in self.records]),
        ):
            row = [percentile(values, q) for q in (50, 95, 99, 100)]
            timing.add_row(name, *("-" if math.isnan(v) else f"{v * 1000:.1f}" for v in row))
        console.print(timing)

        surprises = [r for r in self.records if not r.ok]
        for record in surprises[: const.SHOWN_SURPRISES]:
            console.print(
                f"unexpected: #{record.index} {record.device_id} {record.kind}: expected {record.expected}, "
                f"got {record.result.label}: {record.result.detail}",
                markup=False,
            )
        if len(surprises) > const.SHOWN_SURPRISES:
            console.print(f"... and {len(surprises) - const.SHOWN_SURPRISES} more unexpected answers")


async def run_scenario(scenario: Scenario, fleet: Fleet, uplink_for: UplinkFor) -> FleetReport:
    """Run `scenario`: start signals on a fixed timetable (open loop), round-robin over the fleet.

    A slow answer never delays the next start: every signal is its own task, and the run ends when the last
    signal has its answer or gave up at its deadline.
    """
    if scenario.ble_devices:  # refused rather than sent over HTTPS: the run would not be what the file says
        raise ScenarioError(
            f"{scenario.name}: fleet runs cannot put wearables on BLE yet",
            [f"fleet.ble_share: {scenario.ble_devices} BLE wearable(s); use 0 for an HTTPS-only run"],
        )
    loop = asyncio.get_running_loop()
    rng = random.Random(scenario.seed)  # noqa: S311 - reproducible traffic, not cryptography
    if scenario.gps:
        fleet.place(scenario.gps_center, scenario.gps_radius_m, rng)
    records: list[SignalRecord | None] = [None] * scenario.signals
    started = loop.time()

    async def one(index: int, wearable: VirtualWearable, plan: EventType | FaultKind, due_s: float) -> None:
        lag_s = loop.time() - started - due_s
        uplink = uplink_for(wearable)
        if isinstance(plan, FaultKind):
            fault = make_fault(plan, wearable)
            outcome = await send_fault(uplink, fault, scenario.deadline_s)
            result, expected, ok = outcome.result, fault.expected, outcome.ok
        else:
            result = await uplink.send(wearable.signal(plan), scenario.deadline_s)
            expected, ok = _ACCEPTED, _ACCEPTED.matches(result)
        kind = str(plan) if isinstance(plan, FaultKind) else plan.name.lower().replace("_", "-")
        records[index] = SignalRecord(index, wearable.device_id, kind, due_s, lag_s, result, expected, ok)

    async with asyncio.TaskGroup() as group:
        for index in range(scenario.signals):
            due_s = index / scenario.rate_per_s
            wait_s = started + due_s - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            wearable = fleet.wearables[index % len(fleet.wearables)]
            group.create_task(one(index, wearable, _draw(scenario, rng), due_s), name=f"signal-{index}")
    elapsed_s = loop.time() - started
    return FleetReport(scenario, tuple(r for r in records if r is not None), elapsed_s)


def _draw(scenario: Scenario, rng: random.Random) -> EventType | FaultKind:
    """A fault with its probability, else an event from the mix."""
    roll = rng.random()
    for kind, probability in scenario.faults:
        if roll < probability:
            return kind
        roll -= probability
    events = [event for event, _ in scenario.events]
    weights = [share for _, share in scenario.events]
    return rng.choices(events, weights)[0]
