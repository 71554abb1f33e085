"""Fleet scenarios: a TOML file read into a frozen Scenario, every problem reported at once."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from firmware_sim import const
from firmware_sim.ble_wearable import BURST_INTERVAL_MS, HEARTBEAT_INTERVAL_MS
from firmware_sim.errors import ScenarioError
from firmware_sim.faults import FaultKind
from gateway.identity.const import DEVICE_ID_PATTERN
from gateway.protocol import EventType

_SECTIONS: Final = {"name", "description", "fleet", "load", "events", "faults", "ble"}
_FLEET_KEYS: Final = {"devices", "id_prefix", "keep_alive", "gps", "gps_center", "gps_radius_m", "ble_share"}
_BLE_KEYS: Final = {"transports", "receivers", "site", "area_m", "burst_interval_ms", "heartbeat_interval_ms"}
#: Receiver names become the gateway's `ble.receivers[].name`, so they follow its pattern.
_RECEIVER_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: A bumble transport spec: a scheme, a colon, then its argument (`tcp-client:127.0.0.1:9101`, `usb:0`).
_TRANSPORT_SPEC: Final = re.compile(r"[a-z][a-z0-9-]*:\S*")
#: Side of the square, in metres, the in-process air's wearables stand in: well inside a 30 m radio range.
DEFAULT_BLE_AREA_M: Final = 20.0
DEFAULT_BLE_SITE: Final = "sim"
_LOAD_KEYS: Final = {"rate", "duration_s", "deadline_s", "seed"}
# Revocation happens on the gateway, which a scenario does not drive: `panic-sim fault revoked` covers it.
_FLEET_FAULTS: Final = frozenset(FaultKind) - {FaultKind.REVOKED}


@dataclass(frozen=True, slots=True)
class BleSide:
    """Where a scenario's BLE wearables are on the air.

    transports: one bumble transport spec per BLE wearable (air nodes another process exposes, or dongles);
        empty means an in-process virtual air, whose receiver nodes are exposed for the gateway.
    receivers: (name, x, y) of the in-process air's receiver nodes, in metres on floor 0 of `site`.
    site: the in-process air's site.
    area_m: the in-process air's wearables stand at random points of a square this wide.
    burst_interval_ms, heartbeat_interval_ms: advertising intervals of a press burst and at rest.
    """

    transports: tuple[str, ...]
    receivers: tuple[tuple[str, float, float], ...]
    site: str
    area_m: float
    burst_interval_ms: float
    heartbeat_interval_ms: float

    @property
    def in_process(self) -> bool:
        return not self.transports


@dataclass(frozen=True, slots=True)
class Scenario:
    """A fleet run.

    name: shown in the summary.
    devices: how many wearables; their ids are id_prefix + a zero-padded index.
    rate_per_s: signals per second from the whole fleet, open loop (sent on time whatever the answers).
    duration_s: how long signals are started; the run then waits for the last answers.
    deadline_s: retry deadline of each signal.
    events: (event, fraction) pairs summing to 1: what normal signals carry.
    faults: (fault, probability) pairs summing to at most 1: the share of signals replaced by each fault.
    keep_alive: reuse connections; False opens a new TCP+TLS connection per signal, like many modems.
    gps: frames carry a GPS fix; each device stands at a fixed point within gps_radius_m of gps_center.
    seed: makes event, fault and position draws reproducible.
    ble_share: the share of the wearables that signal over BLE adverts instead of HTTPS (the last ones by id).
    ble: where those are on the air; None when ble_share is 0.
    """

    name: str
    devices: int
    id_prefix: str
    rate_per_s: float
    duration_s: float
    deadline_s: float
    events: tuple[tuple[EventType, float], ...]
    faults: tuple[tuple[FaultKind, float], ...]
    keep_alive: bool
    gps: bool
    gps_center: tuple[float, float]
    gps_radius_m: float
    seed: int | None
    ble_share: float = 0.0
    ble: BleSide | None = None

    @property
    def ble_devices(self) -> int:
        """How many of the wearables are on BLE."""
        return round(self.devices * self.ble_share)

    def ble_device_ids(self) -> list[str]:
        """The BLE wearables' ids: the last `ble_devices` of the fleet."""
        ids = self.device_ids()
        return ids[len(ids) - self.ble_devices :]

    def https_device_ids(self) -> list[str]:
        """The wearables that signal over HTTPS."""
        ids = self.device_ids()
        return ids[: len(ids) - self.ble_devices]

    @property
    def signals(self) -> int:
        """How many signals the run starts."""
        return max(1, round(self.rate_per_s * self.duration_s))

    def device_ids(self) -> list[str]:
        """The fleet's device ids, in order."""
        width = max(const.FLEET_ID_DIGITS, len(str(self.devices - 1)))
        return [f"{self.id_prefix}{index:0{width}d}" for index in range(self.devices)]


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file; raises ScenarioError naming the file and every problem in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: {exc}", []) from None
    return parse_scenario(text, source=str(path), default_name=path.stem)


def parse_scenario(text: str, *, source: str = "<scenario>", default_name: str = "scenario") -> Scenario:
    """Parse scenario TOML; raises ScenarioError with every problem as 'field: message'."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}", []) from None
    reader = _Reader()
    scenario = reader.scenario(document, default_name)
    if reader.problems or scenario is None:
        raise ScenarioError(f"{source}: {len(reader.problems)} problem(s)", reader.problems)
    return scenario


class _Reader:
    """Reads the TOML document field by field, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, field: str, message: str) -> None:
        self.problems.append(f"{field}: {message}")

    def table(self, document: dict[str, Any], name: str, keys: set[str] | None) -> dict[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            self.problem(name, "must be a table")
            return {}
        if keys is not None:
            for unknown in sorted(set(value) - keys):
                self.problem(f"{name}.{unknown}", f"unknown setting (known: {', '.join(sorted(keys))})")
        return value

    def number(self, table: dict[str, Any], field: str, default: float | None, *, low: float, inclusive: bool) -> float:
        name = field.split(".")[-1]
        value = table.get(name, default)
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        if value is None:
            self.problem(field, f"is required (a number {bound})")
            return math.nan
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.problem(field, f"must be a number {bound}, not {value!r}")
            return math.nan
        if value < low or (value == low and not inclusive):
            self.problem(field, f"must be {bound}, not {value!r}")
        return float(value)

    def flag(self, table: dict[str, Any], field: str, default: bool) -> bool:
        value = table.get(field.split(".")[-1], default)
        if not isinstance(value, bool):
            self.problem(field, f"must be true or false, not {value!r}")
            return default
        return value

    def scenario(self, document: dict[str, Any], default_name: str) -> Scenario | None:
        for unknown in sorted(set(document) - _SECTIONS):
            self.problem(unknown, f"unknown section or setting (known: {', '.join(sorted(_SECTIONS))})")
        name = document.get("name", default_name)
        if not isinstance(name, str):
            self.problem("name", "must be a string")
            name = default_name
        fleet = self.table(document, "fleet", _FLEET_KEYS)
        load = self.table(document, "load", _LOAD_KEYS)

        devices = fleet.get("devices")
        if devices is None:
            self.problem("fleet.devices", "is required (a whole number >= 1)")
            devices = 1
        elif isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
            self.problem("fleet.devices", f"must be a whole number >= 1, not {devices!r}")
            devices = 1
        id_prefix = fleet.get("id_prefix", const.DEFAULT_ID_PREFIX)
        width = max(const.FLEET_ID_DIGITS, len(str(devices - 1)))
        if not isinstance(id_prefix, str) or not DEVICE_ID_PATTERN.fullmatch(f"{id_prefix}{0:0{width}d}"):
            self.problem(
                "fleet.id_prefix",
                f"{id_prefix!r} plus {width} digits must be a device id: 1-32 characters of [A-Za-z0-9._-]",
            )
            id_prefix = const.DEFAULT_ID_PREFIX
        gps_center = self.center(fleet.get("gps_center", list(const.DEFAULT_GPS_CENTER)))

        rate = self.number(load, "load.rate", None, low=0, inclusive=False)
        duration = self.number(load, "load.duration_s", None, low=0, inclusive=False)
        if rate > 0 and duration > 0 and rate * duration < 1:  # a bad rate or duration is reported once, above
            self.problem("load", f"rate x duration_s starts {rate * duration:g} signals: at least 1 is needed")
        seed = load.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            self.problem("load.seed", f"must be a whole number, not {seed!r}")
            seed = None

        ble_share = self.number(fleet, "fleet.ble_share", 0.0, low=0, inclusive=True)
        if ble_share > 1:
            self.problem("fleet.ble_share", f"is a share of the devices: 0..1, not {ble_share:g}")
        elif ble_share > 0 and round(devices * ble_share) == 0:
            self.problem("fleet.ble_share", f"{ble_share:g} of {devices} devices is no device: raise it or use 0")
        ble_devices = round(devices * ble_share) if 0 <= ble_share <= 1 else 0
        ble = self.ble(document, ble_devices)

        scenario = Scenario(
            name=name,
            devices=devices,
            id_prefix=id_prefix,
            rate_per_s=rate,
            duration_s=duration,
            deadline_s=self.number(load, "load.deadline_s", const.DEFAULT_DEADLINE_S, low=0, inclusive=False),
            events=self.events(self.table(document, "events", None)),
            faults=self.faults(self.table(document, "faults", None)),
            keep_alive=self.flag(fleet, "fleet.keep_alive", True),
            gps=self.flag(fleet, "fleet.gps", False),
            gps_center=gps_center,
            gps_radius_m=self.number(fleet, "fleet.gps_radius_m", const.DEFAULT_GPS_RADIUS_M, low=0, inclusive=True),
            seed=seed,
            ble_share=ble_share,
            ble=ble,
        )
        return None if self.problems else scenario

    def ble(self, document: dict[str, Any], ble_devices: int) -> BleSide | None:
        if "ble" not in document:
            if ble_devices:
                self.problem("ble", "is required when fleet.ble_share puts wearables on BLE")
            return None
        table = self.table(document, "ble", _BLE_KEYS)
        if not ble_devices:
            self.problem("ble", "is given but no wearable is on BLE: set fleet.ble_share")
        transports = table.get("transports", [])
        if not isinstance(transports, list) or not all(
            isinstance(t, str) and _TRANSPORT_SPEC.fullmatch(t) for t in transports
        ):
            self.problem("ble.transports", f"must be a list of bumble transport specs like 'usb:0', not {transports!r}")
            transports = []
        elif transports and len(transports) != ble_devices:
            self.problem(
                "ble.transports", f"has {len(transports)} transport(s) for {ble_devices} BLE wearable(s): one each"
            )
        receivers = self.receivers(table.get("receivers", {}))
        if transports and receivers:
            self.problem("ble.receivers", "are the in-process air's nodes: not used with ble.transports")
        elif not transports and not receivers and ble_devices:
            self.problem("ble.receivers", "at least one is needed on the in-process air (or give ble.transports)")
        site = table.get("site", DEFAULT_BLE_SITE)
        if not isinstance(site, str) or not site:
            self.problem("ble.site", f"must be a non-empty string, not {site!r}")
            site = DEFAULT_BLE_SITE
        return BleSide(
            transports=tuple(transports),
            receivers=receivers,
            site=site,
            area_m=self.number(table, "ble.area_m", DEFAULT_BLE_AREA_M, low=0, inclusive=False),
            burst_interval_ms=self.number(table, "ble.burst_interval_ms", BURST_INTERVAL_MS, low=20, inclusive=True),
            heartbeat_interval_ms=self.number(
                table, "ble.heartbeat_interval_ms", HEARTBEAT_INTERVAL_MS, low=20, inclusive=True
            ),
        )

    def receivers(self, value: object) -> tuple[tuple[str, float, float], ...]:
        if not isinstance(value, dict):
            self.problem("ble.receivers", f"must be a table of name = [x, y] in metres, not {value!r}")
            return ()
        found: list[tuple[str, float, float]] = []
        for name, at in value.items():
            if not _RECEIVER_NAME.fullmatch(name):
                self.problem(f"ble.receivers.{name}", "names are 1-64 characters of [A-Za-z0-9._-]")
            elif (
                isinstance(at, list)
                and len(at) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in at)
            ):
                found.append((name, float(at[0]), float(at[1])))
            else:
                self.problem(f"ble.receivers.{name}", f"must be [x, y] in metres, not {at!r}")
        return tuple(found)

    def center(self, value: object) -> tuple[float, float]:
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            and -90 <= value[0] <= 90
            and -180 <= value[1] <= 180
        ):
            return float(value[0]), float(value[1])
        self.problem("fleet.gps_center", f"must be [latitude, longitude] in degrees, not {value!r}")
        return const.DEFAULT_GPS_CENTER

    def events(self, table: dict[str, Any]) -> tuple[tuple[EventType, float], ...]:
        if not table:
            return ((EventType.HEARTBEAT, 1.0),)
        known = {event.name.lower().replace("_", "-"): event for event in EventType}
        mix: list[tuple[EventType, float]] = []
        for key in table:
            event = known.get(key.lower().replace("_", "-"))
            if event is None:
                self.problem(f"events.{key}", f"unknown event (known: {', '.join(known)})")
                continue
            mix.append((event, self.number(table, f"events.{key}", None, low=0, inclusive=True)))
        total = sum(share for _, share in mix)
        if mix and len(mix) == len(table) and abs(total - 1) > const.MIX_SUM_TOLERANCE:
            self.problem("events", f"the fractions must add up to 1, not {total:g}")
        return tuple(mix)

    def faults(self, table: dict[str, Any]) -> tuple[tuple[FaultKind, float], ...]:
        mix: list[tuple[FaultKind, float]] = []
        for key in table:
            try:
                kind = FaultKind(key)
            except ValueError:
                self.problem(f"faults.{key}", f"unknown fault (known: {', '.join(sorted(_FLEET_FAULTS))})")
                continue
            if kind not in _FLEET_FAULTS:
                self.problem(f"faults.{key}", "needs the device revoked on the gateway: use `panic-sim fault revoked`")
                continue
            share = self.number(table, f"faults.{key}", None, low=0, inclusive=True)
            if share > 1:
                self.problem(f"faults.{key}", f"is a probability: 0..1, not {share:g}")
            mix.append((kind, share))
        total = sum(share for _, share in mix)
        if total > 1 + const.MIX_SUM_TOLERANCE:
            self.problem("faults", f"the probabilities add up to {total:g}, more than 1")
        return tuple(mix)
