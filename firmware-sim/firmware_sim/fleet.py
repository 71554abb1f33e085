"""A fleet of virtual wearables driven by a scenario on an open-loop timetable, and the run's summary.

HTTPS wearables send through `fleet_uplinks`; BLE wearables (a scenario's `fleet.ble_share`) advertise on the air a
`FleetAir` opens, before the gateway starts, so that the gateway can be given its receivers::

    async with FleetAir(scenario, fleet, fleet_public, ack_public) as air:
        ...  # start the gateway with air.receivers as its ble.receivers
        report = await run_scenario(scenario, fleet, uplink_for, air=air)
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple, Self

from bumble import hci
from bumble.controller import Controller
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.table import Table

from firmware_sim import const
from firmware_sim.air import PathLossModel, Position, VirtualAir
from firmware_sim.ble_wearable import DISPLAY_OPERATOR, DISPLAY_RECEIVED, BleWearable
from firmware_sim.errors import DeviceStateError, ScenarioError
from firmware_sim.faults import Expectation, FaultKind, make_fault, send_fault
from firmware_sim.scenario import Scenario
from firmware_sim.transport import HttpUplink, UplinkResult
from firmware_sim.wearable import Clock, Issuer, VirtualWearable, enroll, wall_clock_ms
from gateway.protocol import EventType, GpsFix

#: Picks the uplink a wearable sends through (one shared, or one per device for mTLS).
UplinkFor = Callable[[VirtualWearable], HttpUplink]

_ACCEPTED = Expectation(202, status="accepted")
#: What a BLE press should end in (the wearer's display), and what other BLE signals get (no answer exists).
BLE_ACKNOWLEDGED: Final = DISPLAY_RECEIVED
BLE_ADVERTISED: Final = "advertised"
#: Node names of the BLE wearables on the in-process air: apart from the receivers' (the scenario's names).
_WEARABLE_NODE_PREFIX: Final = "wearable:"


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

    @property
    def transport(self) -> str:
        return "https"

    @property
    def label(self) -> str:
        """The answer, for summaries: "202 accepted", "no answer"..."""
        return self.result.label

    @property
    def detail(self) -> str:
        return self.result.detail

    @property
    def latency_s(self) -> float | None:
        """From the first attempt to the answer (retries included); None without an answer."""
        return self.result.latency_s if self.result.status_code is not None else None


@dataclass(frozen=True, slots=True)
class BleRecord:
    """One signal of a BLE wearable in a run: there is no HTTP answer, only what the wearer's display shows.

    index, device_id, kind, due_s, lag_s: as in SignalRecord.
    expected: BLE_ACKNOWLEDGED for events that raise an incident (the gateway follows them up over GATT and
        acknowledges), else BLE_ADVERTISED.
    label: what happened: BLE_ACKNOWLEDGED, BLE_ADVERTISED, "no ack", "superseded", "radio error".
    latency_s: from the press to the display showing the acknowledgement; None without one.
    ok: label is what was expected.
    detail: one sentence for a surprise.
    """

    index: int
    device_id: str
    kind: str
    due_s: float
    lag_s: float
    expected: str
    label: str
    latency_s: float | None
    ok: bool
    detail: str = ""

    @property
    def transport(self) -> str:
        return "ble"


#: One signal of a run, over either channel.
Record = SignalRecord | BleRecord


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
    records: tuple[Record, ...]
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """Every signal got the answer it should have."""
        return all(record.ok for record in self.records)

    def outcomes(self) -> Counter[str]:
        """Signals by answer: "202 accepted", "409 replayed", "no answer", "help is coming" (BLE)..."""
        return Counter(record.label for record in self.records)

    def latencies_s(self, transport: str | None = None) -> list[float]:
        """Latency of every signal (of `transport`, "https" or "ble") that got an answer, retries included."""
        return [
            r.latency_s
            for r in self.records
            if r.latency_s is not None and (transport is None or r.transport == transport)
        ]

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

        transports = Table(title="by transport")
        for column in ("transport", "sent", "as expected", "unexpected", "p50 ms", "p95 ms"):
            transports.add_column(column, justify="left" if column == "transport" else "right")
        for transport in sorted({r.transport for r in self.records}):
            sent = [r for r in self.records if r.transport == transport]
            good = sum(r.ok for r in sent)
            latencies = self.latencies_s(transport)
            shown = ["-" if not latencies else f"{percentile(latencies, q) * 1000:.1f}" for q in (50, 95)]
            transports.add_row(transport, str(len(sent)), str(good), str(len(sent) - good), *shown)
        console.print(transports)

        kinds = Table(title="by kind")
        for column in ("kind", "expected", "sent", "as expected", "unexpected"):
            kinds.add_column(column, justify="left" if column in ("kind", "expected") else "right")
        groups: dict[str, list[Record]] = {}
        for record in self.records:
            key = record.kind if record.transport == "https" else f"{record.kind} ({record.transport})"
            groups.setdefault(key, []).append(record)
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
                f"got {record.label}: {record.detail}",
                markup=False,
            )
        if len(surprises) > const.SHOWN_SURPRISES:
            console.print(f"... and {len(surprises) - const.SHOWN_SURPRISES} more unexpected answers")


class AirReceiver(NamedTuple):
    """A receiver radio of a fleet's in-process air, as the gateway's `ble.receivers` entry needs it."""

    #: The scenario's name for it (the gateway's receiver name).
    name: str
    #: What the gateway opens to drive it: `tcp-client:127.0.0.1:PORT`.
    transport: str
    #: Where it stands (site, floor 0, x/y in metres).
    position: Position


class FleetAir:
    """The BLE side of a fleet run: an async context manager that puts the scenario's BLE wearables on the air.

    With the scenario's in-process air (no `ble.transports`), it opens a VirtualAir, exposes the scenario's
    receivers on loopback TCP ports (`receivers`, `transports`: give them to the gateway) and adds each BLE
    wearable at a seeded random point of the `ble.area_m` square; with `ble.transports`, each wearable opens its
    own. The wearables start advertising heartbeats on entry; exit stops them, then the air.
    """

    def __init__(
        self,
        scenario: Scenario,
        fleet: Fleet,
        fleet_public_key: ec.EllipticCurvePublicKey,
        ack_public_key: ec.EllipticCurvePublicKey,
        *,
        model: PathLossModel | None = None,
    ) -> None:
        if scenario.ble is None or not scenario.ble_devices:
            raise ValueError(f"{scenario.name}: no wearable is on BLE (fleet.ble_share is 0)")
        by_id = {wearable.device_id: wearable for wearable in fleet.wearables}
        missing = [device_id for device_id in scenario.ble_device_ids() if device_id not in by_id]
        if missing:
            raise ValueError(f"the fleet lacks the scenario's BLE wearables {', '.join(missing)}")
        self.scenario = scenario
        self.side = scenario.ble
        self._wearables = [by_id[device_id] for device_id in scenario.ble_device_ids()]
        self._fleet_public_key = fleet_public_key
        self._ack_public_key = ack_public_key
        self._model = model
        self._stack: AsyncExitStack | None = None
        #: The in-process air (None with `ble.transports`).
        self.air: VirtualAir | None = None
        #: The in-process air's receivers, in scenario order (empty with `ble.transports`).
        self.receivers: tuple[AirReceiver, ...] = ()
        #: Where each BLE wearable stands on the in-process air, by device id.
        self.positions: dict[str, Position] = {}
        #: The running BLE wearables, by device id.
        self.wearables: dict[str, BleWearable] = {}

    @property
    def transports(self) -> tuple[str, ...]:
        """The receivers' transport specs, for the gateway."""
        return tuple(receiver.transport for receiver in self.receivers)

    def silent_receivers(self) -> list[str]:
        """The in-process air's receivers on which no host scans yet (a gateway has not opened them)."""
        if self.air is None:
            return []
        return [r.name for r in self.receivers if not self.air.nodes[r.name].controller.scanning.is_set()]

    async def receivers_listening(self) -> None:
        """Return once a host (the gateway) scans on every receiver of the in-process air."""
        if self.air is None:
            return
        nodes = self.air.nodes
        await asyncio.gather(*(nodes[r.name].controller.scanning.wait() for r in self.receivers))

    def place(self, rng: random.Random) -> dict[str, Position]:
        """Seeded random positions of the BLE wearables in the `area_m` square (corner at 0, 0) of the site."""
        side = self.side
        return {
            wearable.device_id: Position(side.site, 0, rng.uniform(0, side.area_m), rng.uniform(0, side.area_m))
            for wearable in self._wearables
        }

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            side = self.side
            radios: list[tuple[Controller | None, str | None]] = []  # (controller, transport) of each wearable
            if side.in_process:
                self.air = air = await stack.enter_async_context(VirtualAir(self._model, seed=self.scenario.seed))
                receivers = []
                for name, x, y in side.receivers:
                    node = await air.add_node(name, Position(side.site, 0, x, y))
                    receivers.append(AirReceiver(name, node.transport_spec, node.position))
                self.receivers = tuple(receivers)
                self.positions = self.place(random.Random(self.scenario.seed))  # noqa: S311 - reproducible places
                for wearable in self._wearables:
                    position = self.positions[wearable.device_id]
                    node = await air.add_node(_WEARABLE_NODE_PREFIX + wearable.device_id, position, expose=False)
                    radios.append((node.controller, None))
            else:
                radios = [(None, spec) for spec in side.transports]
            for wearable, (controller, transport) in zip(self._wearables, radios, strict=True):
                ble = BleWearable(
                    wearable,
                    self._fleet_public_key,
                    self._ack_public_key,
                    controller=controller,
                    transport=transport,
                    heartbeat_interval_ms=side.heartbeat_interval_ms,
                    burst_interval_ms=side.burst_interval_ms,
                )
                self.wearables[wearable.device_id] = await stack.enter_async_context(ble)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self.wearables = {}


async def run_scenario(
    scenario: Scenario, fleet: Fleet, uplink_for: UplinkFor, *, air: FleetAir | None = None
) -> FleetReport:
    """Run `scenario`: start signals on a fixed timetable (open loop), round-robin over the fleet.

    A slow answer never delays the next start: every signal is its own task, and the run ends when the last
    signal has its answer or gave up at its deadline. Signals of the BLE wearables go on `air` (required when the
    scenario has some): events from the same mix (faults are HTTPS-level and are drawn as events instead), and a
    press counts as answered when the wearer's display shows the gateway's acknowledgement within the deadline.
    """
    if scenario.ble_devices and air is None:  # refused rather than sent over HTTPS: the run would not be the file's
        raise ScenarioError(
            f"{scenario.name}: fleet runs cannot put wearables on BLE yet without their air (pass air=FleetAir(...))",
            [f"fleet.ble_share: {scenario.ble_devices} BLE wearable(s); use 0 for an HTTPS-only run"],
        )
    on_ble: Mapping[str, BleWearable] = air.wearables if air is not None else {}
    loop = asyncio.get_running_loop()
    rng = random.Random(scenario.seed)  # noqa: S311 - reproducible traffic, not cryptography
    if scenario.gps:
        fleet.place(scenario.gps_center, scenario.gps_radius_m, rng)
    records: list[Record | None] = [None] * scenario.signals
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
        kind = str(plan) if isinstance(plan, FaultKind) else _event_name(plan)
        records[index] = SignalRecord(index, wearable.device_id, kind, due_s, lag_s, result, expected, ok)

    async def one_ble(index: int, ble: BleWearable, event: EventType, due_s: float) -> None:
        lag_s = loop.time() - started - due_s
        records[index] = await _ble_signal(ble, event, scenario.deadline_s, index, due_s, lag_s)

    async with asyncio.TaskGroup() as group:
        for index in range(scenario.signals):
            due_s = index / scenario.rate_per_s
            wait_s = started + due_s - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            wearable = fleet.wearables[index % len(fleet.wearables)]
            plan = _draw(scenario, rng)
            ble = on_ble.get(wearable.device_id)
            if ble is None:
                group.create_task(one(index, wearable, plan, due_s), name=f"signal-{index}")
            else:
                event = plan if isinstance(plan, EventType) else _draw_event(scenario, rng)
                group.create_task(one_ble(index, ble, event, due_s), name=f"ble-signal-{index}")
    elapsed_s = loop.time() - started
    return FleetReport(scenario, tuple(r for r in records if r is not None), elapsed_s)


async def _ble_signal(
    ble: BleWearable, event: EventType, deadline_s: float, index: int, due_s: float, lag_s: float
) -> BleRecord:
    """Advertise one event; for one that raises an incident, wait for the acknowledgement on the display."""
    loop = asyncio.get_running_loop()
    device_id, kind = ble.wearable.device_id, _event_name(event)
    expected = BLE_ACKNOWLEDGED if event.raises_incident else BLE_ADVERTISED

    def record(label: str, latency_s: float | None = None, detail: str = "") -> BleRecord:
        return BleRecord(index, device_id, kind, due_s, lag_s, expected, label, latency_s, label == expected, detail)

    pressed = loop.time()
    try:
        if event is EventType.HEARTBEAT:
            await ble.heartbeat()
            return record(BLE_ADVERTISED)
        frame = await ble.press(event)
    except (hci.HCI_Error, OSError) as error:
        return record("radio error", detail=str(error))
    if not event.raises_incident:
        return record(BLE_ADVERTISED)

    def settled(w: BleWearable) -> bool:  # acknowledged, or a later press took over the display
        return w.press_frame is not frame or w.display in (DISPLAY_RECEIVED, DISPLAY_OPERATOR)

    try:
        async with asyncio.timeout(deadline_s):
            await ble.wait_until(settled)
    except TimeoutError:
        return record("no ack", detail=f"the display showed no acknowledgement within {deadline_s:g} s")
    if ble.press_frame is not frame:
        return record("superseded", detail="the wearer pressed again before this press was acknowledged")
    return record(BLE_ACKNOWLEDGED, loop.time() - pressed)


def _event_name(event: EventType) -> str:
    return event.name.lower().replace("_", "-")


def _draw(scenario: Scenario, rng: random.Random) -> EventType | FaultKind:
    """A fault with its probability, else an event from the mix."""
    roll = rng.random()
    for kind, probability in scenario.faults:
        if roll < probability:
            return kind
        roll -= probability
    return _draw_event(scenario, rng)


def _draw_event(scenario: Scenario, rng: random.Random) -> EventType:
    """An event from the mix (what a BLE wearable sends when the draw was an HTTPS-level fault)."""
    events = [event for event, _ in scenario.events]
    weights = [share for _, share in scenario.events]
    return rng.choices(events, weights)[0]
