"""Where is the wearer, measured: `python -m bench.location` (`--quick` for a smoke run).

Indoor, end to end: a floor of 20 rooms with one receiver per room on the virtual air (log-distance path loss with
per-advert shadowing noise), the gateway as a separate process with those receivers placed on a generated site map;
BLE wearables press at seeded random true positions and the gateway's stored verdict after its last location pass
is compared with the truth (right room, metres off, truth inside the reported radius).

Outdoor, sans-I/O: GPS and cell-only wearables at seeded random true positions on a 2 km x 2 km site, their fixes and
cells (from a generated cell table written as OpenCellID CSV and read back) fused directly, errors against truth.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from cryptography.hazmat.primitives.asymmetric import ec

from bench import probe
from bench.ble import RESULTS_DIR, wait_receivers_up
from bench.report import machine_info, write_json
from bench.scenarios import log_events
from bench.stats import percentiles
from bench.testbed import MQTT_HOST, MQTT_PORT, PG_ADMIN_DSN, Testbed
from firmware_sim.air import PathLossModel, Position, VirtualAir, expected_rssi
from firmware_sim.ble_wearable import BleWearable
from firmware_sim.wearable import VirtualWearable
from gateway.identity.pki import load_certificate, load_private_key, load_public_key
from gateway.location.cells import CellKey, CellRow, CellTable, parse_cell_rows, write_cell_csv
from gateway.location.engine import PASSES_S
from gateway.location.fusion import FusionInput, fuse
from gateway.location.model import CellObservation, CellSite, LocalPoint
from gateway.location.sites import SiteMap, parse_site_map
from gateway.protocol import GpsFix
from gateway.store.incidents import BLE_TRANSPORT, incident_id_for

#: The issue's target: a press is placed in the room the wearer is in at least this often.
TARGET_RIGHT_ROOM: Final = 0.95

# -- the site map ------------------------------------------------------------------------------------------------

#: The testbed enrols every wearable at site "bench": the map's site has the same id.
SITE: Final = "bench"
BUILDING: Final = "hq"
FLOOR: Final = 0
#: The building's anchor (plan x = 0, y = 0); any place on earth does, the plan frame keeps metres exact.
ANCHOR_LAT: Final = 52.52
ANCHOR_LON: Final = 13.40
#: Plans are rarely drawn north-up; a turned plan also checks the plan <-> earth conversion both ways.
ROTATION_DEG: Final = 15.0
#: The floor: 5 x 4 rooms of 6 m x 5 m (a typical office or ward room), a 2 m corridor between rows 2 and 3.
COLUMNS: Final = 5
ROWS: Final = 4
ROOM_W_M: Final = 6.0
ROOM_D_M: Final = 5.0
CORRIDOR_M: Final = 2.0
CORRIDOR_AFTER_ROW: Final = 2
#: The site is drawn as a point with this radius: it holds the building and the 2 km x 2 km outdoor area.
SITE_RADIUS_M: Final = 1500.0

# -- the indoor run ----------------------------------------------------------------------------------------------

#: The air: -59 dBm at 1 m (a 0 dBm wearable), exponent 2.7 (an office with people), 30 m range (BLE at 0 dBm
#: indoors), and 4 dB of log-normal noise drawn independently for every advert at every receiver: the per-packet
#: spread of BLE RSSI at a fixed spot (multipath, the three advertising channels, the body) is 3-6 dB. The air has
#: no wall or body loss that stays put for a whole press, so this is the friendly end of real indoor radio.
MODEL: Final = PathLossModel(tx_power_at_1m_dbm=-59.0, exponent=2.7, noise_sigma_db=4.0, range_m=30.0)
#: Presses of a full run (each a different wearable at its own true position) and of --quick.
DEFAULT_PRESSES: Final = 100
QUICK_PRESSES: Final = 20
#: Wearables pressing at once. Each press's observations are rows of its own incident, so they cannot mix; four
#: at a time keep the gateway and the air (20 receivers x 50 adverts/s per bursting wearable) well inside two cores.
DEFAULT_PARALLEL: Final = 4
#: Lanes start this far apart, so their bursts (until the GATT follow-up acknowledges) do not all overlap.
LANE_STAGGER_S: Final = 0.4
#: The verdict is read this long after the gateway's last location pass is due (the passes are timed from the
#: incident's commit; this covers the commit and event-loop delays).
PASS_MARGIN_S: Final = 1.0
#: A press with no incident this long after it counts as lost.
PRESS_TIMEOUT_S: Final = 10.0
#: Bands of the analysis: distance from the wearer to the nearest wall of their room, and the noise-free advantage
#: (dB) of their room's receiver over the best other one.
WALL_BANDS_M: Final = (0.5, 1.0, 1.5)
MARGIN_BANDS_DB: Final = (1.0, 3.0, 6.0)

# -- the outdoor run (sans-I/O) ----------------------------------------------------------------------------------

#: Wearers per class (GPS and cell-only) of a full run and of --quick: fusion is pure, so thousands cost nothing.
DEFAULT_OUTDOOR: Final = 1000
QUICK_OUTDOOR: Final = 200
#: The outdoor area: x and y within +-1 km of the building's anchor.
OUTDOOR_HALF_M: Final = 1000.0
#: 30 LTE cells: a 6 x 5 grid 700 m apart (an urban macro layout), each moved up to 150 m off the grid, over an area
#: a little larger than the site so that wearers at its edge have cells on every side.
CELL_COLUMNS: Final = 6
CELL_ROWS: Final = 5
CELL_SPACING_M: Final = 700.0
CELL_JITTER_M: Final = 150.0
#: OpenCellID's position of a cell is the centre of crowd-sourced samples, not the antenna: about 150 m off.
CELL_DATABASE_SIGMA_M: Final = 150.0
#: OpenCellID's "range" of urban LTE cells.
CELL_RANGE_M: Final = (500.0, 1500.0)
#: Germany, Telekom; one tracking area.
MCC: Final = 262
MNC: Final = 1
TAC: Final = 4711
FIRST_ECI: Final = 0x1A2B00
#: RSRP = -60 dBm at 100 m, exponent 3.5 (urban macro), 8 dB shadowing; LTE reports RSRP in [-140, -44] dBm.
RSRP_AT_100M_DBM: Final = -60.0
RSRP_EXPONENT: Final = 3.5
RSRP_SHADOWING_DB: Final = 8.0
RSRP_RANGE_DBM: Final = (-140, -44)
#: The serving cell is the nearest; the modem reports this many neighbours (the next nearest).
NEIGHBOURS: Final = (2, 4)
#: GPS: 5 m per axis (open sky, a wrist-worn patch antenna); the modem reports 8 m, the ~68 % radius of that error.
GPS_SIGMA_M: Final = 5.0
GPS_ACCURACY_M: Final = 8
#: How old a GPS wearable's fix is at the press: (share, youngest s, oldest s). Fresh; stale (used, radius grown
#: at walking speed); older than fusion's 5-minute limit (not used: the cells decide).
GPS_AGES: Final = (("gps-fresh", 0.7, 0, 5), ("gps-stale", 0.2, 30, 240), ("gps-expired", 0.1, 330, 900))
#: Between the fix and the press the wearer walks straight at up to a walk's 1.4 m/s (standing still to brisk).
WALK_MAX_M_S: Final = 1.4
#: Outdoor presses happen at this (fixed) time: fusion only compares times.
OUTDOOR_PRESS_AT: Final = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PlanRoom:
    """A room of the generated floor, in plan metres."""

    id: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


class PlacedReceiver(NamedTuple):
    """A receiver of the gateway: an exposed node of the air, hanging at a room's centre."""

    name: str
    """Its name in the gateway's config and observations."""
    transport: str
    """The bumble transport the gateway opens (the node's loopback TCP port)."""
    room: str
    """The room it hangs in."""
    x: float
    """Plan metres from the building's anchor."""
    y: float


@dataclass(frozen=True, slots=True)
class Wearer:
    """A planned indoor press: the wearable (testbed device index) and where its wearer truly is."""

    n: int
    room: str
    x: float
    y: float
    #: Distance to the nearest wall of their room (metres).
    wall_m: float
    #: Noise-free RSSI of their room's receiver minus the best other receiver's (dB): how hard the call is.
    margin_db: float


def floor_rooms() -> tuple[PlanRoom, ...]:
    """The 20 rooms: ids "101".."405" (row, column), rows 3 and 4 across the corridor."""
    rooms = []
    for row in range(ROWS):
        y0 = row * ROOM_D_M + (CORRIDOR_M if row >= CORRIDOR_AFTER_ROW else 0.0)
        for col in range(COLUMNS):
            x0 = col * ROOM_W_M
            rooms.append(PlanRoom(f"{row + 1}{col + 1:02d}", x0, y0, x0 + ROOM_W_M, y0 + ROOM_D_M))
    return tuple(rooms)


def site_map_text(rooms: Sequence[PlanRoom]) -> str:
    """The site map (docs/LOCATION.md): a site drawn as a point and radius, one building, one floor of the rooms."""
    site = {
        "type": "Feature",
        "properties": {"kind": "site", "id": SITE, "name": "Bench Plant", "radius_m": SITE_RADIUS_M},
        "geometry": {"type": "Point", "coordinates": [ANCHOR_LON, ANCHOR_LAT]},
    }
    floor = {
        "number": FLOOR,
        "rooms": [{"id": r.id, "polygon": [[r.x0, r.y0], [r.x1, r.y0], [r.x1, r.y1], [r.x0, r.y1]]} for r in rooms],
    }
    building = {
        "type": "Feature",
        "properties": {
            "kind": "building",
            "id": BUILDING,
            "name": "Bench Hall",
            "site": SITE,
            "rotation_deg": ROTATION_DEG,
            "floors": [floor],
        },
        "geometry": {"type": "Point", "coordinates": [ANCHOR_LON, ANCHOR_LAT]},
    }
    return json.dumps({"type": "FeatureCollection", "features": [site, building]}, indent=1) + "\n"


def plan_wearers(rooms: Sequence[PlanRoom], count: int, rng: random.Random) -> list[Wearer]:
    """`count` wearers, each in a room chosen at random and uniformly at random inside it."""
    receivers = {r.id: Position(SITE, FLOOR, *r.centre) for r in rooms}
    wearers = []
    for n in range(count):
        room = rng.choice(rooms)
        x, y = rng.uniform(room.x0, room.x1), rng.uniform(room.y0, room.y1)
        here = Position(SITE, FLOOR, x, y)
        heard = {rid: expected_rssi(MODEL, here, at) for rid, at in receivers.items()}
        own = heard[room.id]
        best_other = max((v for rid, v in heard.items() if rid != room.id and v is not None), default=-math.inf)
        margin = math.inf if own is None else own - best_other
        wall = min(x - room.x0, room.x1 - x, y - room.y0, room.y1 - y)
        wearers.append(Wearer(n, room.id, round(x, 3), round(y, 3), round(wall, 3), round(margin, 2)))
    return wearers


@dataclass(slots=True)
class LocationTestbed(Testbed):
    """The bench's testbed with the receivers placed on the floor plan and the site map as `[location] sites_file`."""

    receivers: tuple[PlacedReceiver, ...] = ()
    sites_text: str = ""

    def _config(self, port: int) -> Path:
        path = Testbed._config(self, port)  # zero-argument super() does not work in a slotted dataclass
        sites = self.workdir / "sites.geojson"
        sites.write_text(self.sites_text)
        lines = ["", "[location]", f'sites_file = "{sites}"', ""]
        lines += ["[ble]", "restart_min_s = 0.1", "restart_max_s = 1.0", ""]
        for r in self.receivers:
            lines += [
                "[[ble.receivers]]",
                f'name = "{r.name}"',
                f'transport = "{r.transport}"',
                f'site = "{SITE}"',
                f'building = "{BUILDING}"',
                f"floor = {FLOOR}",
                f"x = {r.x}",
                f"y = {r.y}",
                "",
            ]
        with path.open("a") as config:
            config.write("\n".join(lines))
        return path


@dataclass(frozen=True, slots=True)
class Keys:
    """What every wearable is provisioned with: the fleet key (advert keys) and the acknowledgement key."""

    fleet_public: ec.EllipticCurvePublicKey
    ack_public: ec.EllipticCurvePublicKey


async def press(
    air: VirtualAir, testbed: Testbed, pool: asyncpg.Pool, wearer: Wearer, keys: Keys, site_map: SiteMap
) -> dict[str, Any]:
    """One wearable at its true position presses; the gateway's verdict after its last location pass, and the truth."""
    device_id = testbed.devices[wearer.n].device_id
    layout = testbed.layout
    firmware = VirtualWearable(
        device_id,
        load_private_key(layout.device_key(device_id)),
        load_certificate(layout.device_cert(device_id)),
        device_dir=None,
    )
    name = f"wearable-{wearer.n}"
    node = await air.add_node(name, Position(SITE, FLOOR, wearer.x, wearer.y), expose=False)
    try:
        async with BleWearable(firmware, keys.fleet_public, keys.ack_public, controller=node.controller) as ble:
            frame = await ble.press()
            alert_id = incident_id_for(device_id, frame.counter)
            testbed.alert_ids.add(alert_id)
            verdict = await final_verdict(pool, alert_id)
    finally:
        await air.remove_node(name)
    out: dict[str, Any] = {
        "n": wearer.n,
        "alert_id": alert_id,
        "true_room": wearer.room,
        "true_x": wearer.x,
        "true_y": wearer.y,
        "wall_m": wearer.wall_m,
        "margin_db": wearer.margin_db,
        "lost": verdict is None,
    }
    if verdict is None:
        return out
    row, observations = verdict
    per_receiver = collections.Counter(o["receiver"] for o in observations)
    rssi = {o["receiver"]: o["rssi"] for o in observations}
    out |= {
        "source": row["location_source"],
        "room": row["place_room"],
        "right_room": row["place_room"] == wearer.room,
        "x": None,
        "y": None,
        "centroid_room": None,
        "error_m": None,
        "accuracy_m": row["accuracy_m"],
        "inside_radius": None,
        "receivers_heard": len(per_receiver),
        "reports_per_receiver_max": max(per_receiver.values(), default=0),
        "rssi_own_room": rssi.get(receiver_name(wearer.room)),
        "rssi_best": max(rssi.values(), default=None),
        "why": row["location_why"],
    }
    if row["lat"] is not None and row["lon"] is not None:
        at = site_map.to_local(BUILDING, FLOOR, row["lat"], row["lon"])
        error = math.hypot(at.x - wearer.x, at.y - wearer.y)
        out |= {
            "x": round(at.x, 3),
            "y": round(at.y, 3),
            "centroid_room": site_map.room_at(at).room,
            "error_m": round(error, 3),
            "inside_radius": row["accuracy_m"] is not None and error <= row["accuracy_m"],
        }
    return out


def receiver_name(room: str) -> str:
    return f"rx-{room}"


async def final_verdict(pool: asyncpg.Pool, alert_id: str) -> tuple[Any, list[Any]] | None:
    """The incident row once the gateway's last location pass is done, and the press's BLE observations."""
    deadline = time.monotonic() + PRESS_TIMEOUT_S
    while (stored := await pool.fetchval("SELECT received_at FROM incidents WHERE id = $1", alert_id)) is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.1)
    last_pass = stored + timedelta(seconds=PASSES_S[-1] + PASS_MARGIN_S)
    await asyncio.sleep(max(0.0, (last_pass - datetime.now(UTC)).total_seconds()))
    row = await pool.fetchrow(
        "SELECT location_source, place_room, lat, lon, accuracy_m, location_why FROM incidents WHERE id = $1",
        alert_id,
    )
    observations = await pool.fetch(
        "SELECT receiver, rssi FROM observations WHERE incident_id = $1 AND transport = $2", alert_id, BLE_TRANSPORT
    )
    return row, list(observations)


async def run_indoor(wearers: Sequence[Wearer], rooms: Sequence[PlanRoom], parallel: int, seed: int) -> dict[str, Any]:
    """The gateway, a receiver per room on the air, the presses in `parallel` lanes: per-press records and facts."""
    text = site_map_text(rooms)
    site_map = parse_site_map(text, source="bench")
    records: list[dict[str, Any]] = []
    async with VirtualAir(MODEL, seed=seed) as air:
        placed = []
        for room in rooms:
            x, y = room.centre
            node = await air.add_node(receiver_name(room.id), Position(SITE, FLOOR, x, y))
            placed.append(PlacedReceiver(node.name, node.transport_spec, room.id, x, y))
        async with LocationTestbed(len(wearers), receivers=tuple(placed), sites_text=text) as testbed:
            up_s = await wait_receivers_up(testbed, [p.name for p in placed])
            print(f"{len(placed)} receivers up after {up_s:.1f} s; {len(wearers)} presses, {parallel} at a time ...")
            keys = Keys(load_public_key(testbed.layout.fleet_public), load_public_key(testbed.layout.ack_public))
            before = await probe.scrape(testbed.http_url, testbed.client_ssl())
            waiting = collections.deque(wearers)
            started = time.perf_counter()
            async with asyncpg.create_pool(testbed.database_url, min_size=1, max_size=parallel + 1) as pool:

                async def lane(number: int) -> None:
                    await asyncio.sleep(number * LANE_STAGGER_S)
                    while waiting:
                        records.append(await press(air, testbed, pool, waiting.popleft(), keys, site_map))
                        if len(records) % 10 == 0:
                            print(f"  {len(records)}/{len(wearers)} presses located")

                async with asyncio.TaskGroup() as lanes:
                    for number in range(parallel):
                        lanes.create_task(lane(number))
            pressing_s = time.perf_counter() - started
            after = await probe.scrape(testbed.http_url, testbed.client_ssl())
            alive = testbed.gateway_alive()
            log = testbed.gateway_log
            events = log_events(log.read_text(errors="replace")) if log is not None and log.exists() else {}
    passes = after.get("panic_location_passes_total", 0.0) - before.get("panic_location_passes_total", 0.0)
    records.sort(key=lambda r: int(r["n"]))
    return {
        "presses": records,
        "pressing_s": round(pressing_s, 1),
        "location_passes": int(passes),
        "location_passes_expected": len(PASSES_S) * sum(1 for r in records if not r["lost"]),
        "gateway_alive": alive,
        "gateway_log_events": events,
    }


def share(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def banded(records: Sequence[dict[str, Any]], key: str, edges: Sequence[float], unit: str) -> list[dict[str, Any]]:
    """The right-room share in each band of `key`: below the first edge, between edges, from the last one up."""
    bounds = [-math.inf, *edges, math.inf]
    bands = []
    for low, high in itertools.pairwise(bounds):
        inside = [r for r in records if low <= r[key] < high]
        if low == -math.inf:
            label = f"< {high:g} {unit}"
        elif high == math.inf:
            label = f">= {low:g} {unit}"
        else:
            label = f"{low:g}-{high:g} {unit}"
        bands.append({"band": label, "n": len(inside), "right_room": share([r["right_room"] for r in inside])})
    return bands


def adjacent(a: str, b: str) -> bool:
    """Rooms that share a wall (the corridor keeps rows 2 and 3 apart)."""
    ra, ca, rb, cb = int(a[0]), int(a[1:]), int(b[0]), int(b[1:])
    across_corridor = {ra, rb} == {CORRIDOR_AFTER_ROW, CORRIDOR_AFTER_ROW + 1}
    return abs(ra - rb) + abs(ca - cb) == 1 and not across_corridor


def summarise_indoor(run: dict[str, Any]) -> dict[str, Any]:
    """Right-room share (a lost press counts as placed wrong), errors, radius coverage and the analysis bands."""
    presses = run["presses"]
    located = [r for r in presses if not r["lost"]]
    errors = [r["error_m"] for r in located if r["error_m"] is not None]
    wrong = [r for r in located if not r["right_room"]]
    flagged = [r for r in located if "nearly as strong" in (r["why"] or "")]
    return {
        "presses": len(presses),
        "lost": [r["alert_id"] for r in presses if r["lost"]],
        "sources": dict(collections.Counter(r["source"] for r in located)),
        "right_room": share([not r["lost"] and r["right_room"] for r in presses]),
        "error_m": percentiles(errors),
        "inside_radius": share([r["inside_radius"] for r in located if r["inside_radius"] is not None]),
        "accuracy_m": percentiles([r["accuracy_m"] for r in located if r["accuracy_m"] is not None]),
        "receivers_heard": percentiles([r["receivers_heard"] for r in located]),
        "reports_per_receiver_max": max((r["reports_per_receiver_max"] for r in located), default=None),
        # What the reported position says (the gateway names the strongest receiver's room instead).
        "right_room_by_position": share([not r["lost"] and r["centroid_room"] == r["true_room"] for r in presses]),
        "wrong_room": len(wrong),
        "wrong_room_adjacent": sum(1 for r in wrong if r["room"] and adjacent(r["room"], r["true_room"])),
        "close_call_flagged": len(flagged),
        "close_call_flagged_wrong": sum(1 for r in flagged if not r["right_room"]),
        "by_wall_distance": banded(located, "wall_m", WALL_BANDS_M, "m"),
        "by_margin": banded(located, "margin_db", MARGIN_BANDS_DB, "dB"),
    }


# -- outdoor ------------------------------------------------------------------------------------------------------


class Tower(NamedTuple):
    """An LTE cell and where its antenna really is; the cell table has it where the crowd's samples put it."""

    key: CellKey
    """The cell's key (radio, MCC, MNC, TAC, ECI)."""
    x: float
    """Plan metres from the building's anchor."""
    y: float


def cell_towers(rng: random.Random) -> list[Tower]:
    """30 LTE cells on a jittered grid centred on the site."""
    towers = []
    for i in range(CELL_COLUMNS * CELL_ROWS):
        gx = (i % CELL_COLUMNS - (CELL_COLUMNS - 1) / 2) * CELL_SPACING_M
        gy = (i // CELL_COLUMNS - (CELL_ROWS - 1) / 2) * CELL_SPACING_M
        x, y = gx + rng.uniform(-CELL_JITTER_M, CELL_JITTER_M), gy + rng.uniform(-CELL_JITTER_M, CELL_JITTER_M)
        towers.append(Tower(CellKey("lte", MCC, MNC, TAC, FIRST_ECI + i), x, y))
    return towers


def cell_table(towers: Sequence[Tower], site_map: SiteMap, rng: random.Random) -> tuple[CellTable, int]:
    """The cells as the offline database knows them, written as OpenCellID CSV and read back: (table, CSV chars)."""
    rows = []
    for tower in towers:
        x = tower.x + rng.gauss(0.0, CELL_DATABASE_SIGMA_M)
        y = tower.y + rng.gauss(0.0, CELL_DATABASE_SIGMA_M)
        lat, lon = site_map.to_geo(LocalPoint(BUILDING, FLOOR, x, y))
        range_m = float(round(rng.uniform(*CELL_RANGE_M)))
        rows.append(CellRow(tower.key, CellSite(lat=lat, lon=lon, range_m=range_m, samples=rng.randint(5, 300))))
    out = io.StringIO()
    write_cell_csv(rows, out)
    parsed = list(parse_cell_rows(io.StringIO(out.getvalue())))
    good = [r for r in parsed if isinstance(r, CellRow)]
    if len(good) != len(rows):
        raise RuntimeError(f"the cell CSV did not read back: {[r for r in parsed if not isinstance(r, CellRow)]}")
    return CellTable(good), len(out.getvalue())


def rsrp(distance_m: float, rng: random.Random) -> int:
    """One RSRP report (dBm) at this distance from the antenna: log-distance with shadowing, in LTE's range."""
    mean = RSRP_AT_100M_DBM - 10.0 * RSRP_EXPONENT * math.log10(max(distance_m, 10.0) / 100.0)
    low, high = RSRP_RANGE_DBM
    return int(min(max(round(mean + rng.gauss(0.0, RSRP_SHADOWING_DB)), low), high))


def cells_seen(towers: Sequence[Tower], x: float, y: float, rng: random.Random) -> tuple[CellObservation, ...]:
    """The modem's report at (x, y): the nearest cell serving, the next 2-4 nearest as neighbours."""
    nearest = sorted(towers, key=lambda t: math.hypot(t.x - x, t.y - y))[: 1 + rng.randint(*NEIGHBOURS)]
    return tuple(
        CellObservation(
            t.key.radio, t.key.mcc, t.key.mnc, t.key.area, t.key.cell, rsrp(math.hypot(t.x - x, t.y - y), rng), i == 0
        )
        for i, t in enumerate(nearest)
    )


def gps_fix(x: float, y: float, site_map: SiteMap, rng: random.Random) -> tuple[str, GpsFix]:
    """A GPS wearable at (x, y) now: how old its fix is, where it was then (it walked since), the fix's error."""
    pick, kind, youngest, oldest = rng.random(), GPS_AGES[-1][0], GPS_AGES[-1][2], GPS_AGES[-1][3]
    for name, chance, low, high in GPS_AGES:
        if pick < chance:
            kind, youngest, oldest = name, low, high
            break
        pick -= chance
    age = rng.randint(youngest, oldest)
    walked, heading = rng.uniform(0.0, WALK_MAX_M_S) * age, rng.uniform(0.0, 2 * math.pi)
    fx = x - walked * math.cos(heading) + rng.gauss(0.0, GPS_SIGMA_M)
    fy = y - walked * math.sin(heading) + rng.gauss(0.0, GPS_SIGMA_M)
    lat, lon = site_map.to_geo(LocalPoint(BUILDING, FLOOR, fx, fy))
    return kind, GpsFix(round(lat, 7), round(lon, 7), GPS_ACCURACY_M, age)  # 7 decimals, as on the wire


def run_outdoor(site_map: SiteMap, per_class: int, seed: int) -> dict[str, Any]:
    """`per_class` GPS wearables (which see cells too) and as many cell-only ones, fused; errors by class."""
    rng = random.Random(seed)
    towers = cell_towers(rng)
    table, csv_chars = cell_table(towers, site_map, rng)
    records: list[dict[str, Any]] = []
    for i in range(2 * per_class):
        x, y = rng.uniform(-OUTDOOR_HALF_M, OUTDOOR_HALF_M), rng.uniform(-OUTDOOR_HALF_M, OUTDOOR_HALF_M)
        cells = cells_seen(towers, x, y, rng)
        kind, gps = gps_fix(x, y, site_map, rng) if i < per_class else ("cells-only", None)
        estimate = fuse(
            FusionInput(OUTDOOR_PRESS_AT, gps, cells),
            cells=table,
            receivers={},
            describe=site_map.describe,
            locate=site_map.place_of,
        )
        record: dict[str, Any] = {"kind": kind, "source": estimate.source.value, "error_m": None, "inside": None}
        if estimate.lat is not None and estimate.lon is not None and estimate.accuracy_m is not None:
            at = site_map.to_local(BUILDING, FLOOR, estimate.lat, estimate.lon)
            error = math.hypot(at.x - x, at.y - y)
            record |= {"error_m": error, "accuracy_m": estimate.accuracy_m, "inside": error <= estimate.accuracy_m}
        records.append(record)
    classes = {}
    for kind in [name for name, *_ in GPS_AGES] + ["cells-only"]:
        mine = [r for r in records if r["kind"] == kind]
        placed = [r for r in mine if r["error_m"] is not None]
        classes[kind] = {
            "n": len(mine),
            "sources": dict(collections.Counter(r["source"] for r in mine)),
            "error_m": percentiles([r["error_m"] for r in placed]),
            "accuracy_m": percentiles([r["accuracy_m"] for r in placed]),
            "inside_radius": share([r["inside"] for r in placed]),
        }
    return {"cells": len(table), "cell_csv_chars": csv_chars, "classes": classes}


# -- the run ------------------------------------------------------------------------------------------------------


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    presses = args.presses or (QUICK_PRESSES if args.quick else DEFAULT_PRESSES)
    outdoor = args.outdoor or (QUICK_OUTDOOR if args.quick else DEFAULT_OUTDOOR)
    return {
        "quick": args.quick,
        "presses": 0 if args.outdoor_only else presses,
        "parallel": args.parallel,
        "outdoor_per_class": outdoor,
        "seed": args.seed,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    options = options_of(args)
    rooms = floor_rooms()
    site_map = parse_site_map(site_map_text(rooms), source="bench")
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": options,
        "floor": {
            "rooms": len(rooms),
            "layout": f"{COLUMNS} x {ROWS} rooms of {ROOM_W_M:g} m x {ROOM_D_M:g} m, {CORRIDOR_M:g} m corridor "
            f"after row {CORRIDOR_AFTER_ROW}, one receiver at each room's centre",
            "air": asdict(MODEL),
        },
        "outdoor_model": {
            "area_m": 2 * OUTDOOR_HALF_M,
            "cells": f"{CELL_COLUMNS * CELL_ROWS} LTE, grid {CELL_SPACING_M:g} m +-{CELL_JITTER_M:g} m, "
            f"database position error {CELL_DATABASE_SIGMA_M:g} m per axis, range {CELL_RANGE_M[0]:g}-"
            f"{CELL_RANGE_M[1]:g} m",
            "rsrp": f"{RSRP_AT_100M_DBM:g} dBm at 100 m, exponent {RSRP_EXPONENT:g}, "
            f"shadowing {RSRP_SHADOWING_DB:g} dB",
            "gps": f"{GPS_SIGMA_M:g} m per axis, reported {GPS_ACCURACY_M} m; ages {GPS_AGES}; "
            f"walk <= {WALK_MAX_M_S} m/s",
        },
    }
    print(f"outdoor (sans-I/O): {options['outdoor_per_class']} GPS and as many cell-only wearables ...")
    results["outdoor"] = run_outdoor(site_map, options["outdoor_per_class"], args.seed)
    if options["presses"]:
        results["machine"] = await machine_info(PG_ADMIN_DSN, MQTT_HOST, MQTT_PORT)
        wearers = plan_wearers(rooms, options["presses"], random.Random(args.seed))
        indoor = await run_indoor(wearers, rooms, args.parallel, args.seed)
        summary = summarise_indoor(indoor)
        right = summary["right_room"]
        results["indoor"] = {"summary": summary} | indoor
        results["target"] = {"right_room": TARGET_RIGHT_ROOM, "met": right is not None and right >= TARGET_RIGHT_ROOM}
    results["run_s"] = round(time.perf_counter() - started, 1)
    return results


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _m(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(results: dict[str, Any]) -> None:
    options = results["options"]
    if "indoor" in results:
        s = results["indoor"]["summary"]
        air = results["floor"]["air"]
        print()
        print(
            f"Indoor, end to end: {s['presses']} presses, {results['floor']['layout']}; "
            f"shadowing {air['noise_sigma_db']:g} dB per advert, exponent {air['exponent']:g}"
        )
        verdict = "MET" if results["target"]["met"] else "MISSED"
        print(f"{'right room':<34}{_pct(s['right_room']):>10}   target >= {TARGET_RIGHT_ROOM:.0%}  {verdict}")
        by_position = _pct(s["right_room_by_position"])
        print(f"{'room of the reported position':<34}{by_position:>10}   (what the room would be if taken from it)")
        e = s["error_m"]
        print(f"{'position error p50 / p95 / max (m)':<34}{_m(e['p50']):>10} / {_m(e['p95'])} / {_m(e['max'])}")
        radius = f"(radius p50 {s['accuracy_m']['p50']} m)"
        print(f"{'truth inside reported radius':<34}{_pct(s['inside_radius']):>10}   {radius}")
        print(f"{'lost / sources':<34}{len(s['lost']):>10}   {s['sources']}")
        print(
            f"{'observations per press':<34}{s['receivers_heard']['p50']:>10}   receivers heard (p50); "
            f"at most {s['reports_per_receiver_max']} report(s) per receiver"
        )
        print(
            f"{'wrong room':<34}{s['wrong_room']:>10}   {s['wrong_room_adjacent']} share a wall with the true room; "
            f"{s['close_call_flagged_wrong']} of them flagged as a close call "
            f"({s['close_call_flagged']} flagged in all)"
        )
        for label, key in (
            ("right room by distance to wall", "by_wall_distance"),
            ("... by noise-free margin", "by_margin"),
        ):
            bands = ", ".join(f"{b['band']}: {_pct(b['right_room'])} (n {b['n']})" for b in s[key])
            print(f"{label:<34}{bands}")
        passes = results["indoor"]
        print(
            f"{'location passes':<34}{passes['location_passes']:>10}   expected {passes['location_passes_expected']}; "
            f"pressing took {passes['pressing_s']} s"
        )
        events = {k: v for k, v in passes["gateway_log_events"].items() if not k.startswith("info")}
        if events:
            print(f"{'gateway log':<34}{events}")
    out = results["outdoor"]
    print()
    print(
        f"Outdoor, sans-I/O: {options['outdoor_per_class']} GPS and {options['outdoor_per_class']} cell-only "
        f"wearables, {OUTDOOR_HALF_M * 2 / 1000:g} km x {OUTDOOR_HALF_M * 2 / 1000:g} km, {out['cells']} LTE cells "
        "(no target)"
    )
    print(f"{'class':<14}{'n':>6}{'p50 m':>9}{'p95 m':>9}{'max m':>9}{'radius p50':>12}{'in radius':>11}   sources")
    for kind, c in out["classes"].items():
        e = c["error_m"]
        print(
            f"{kind:<14}{c['n']:>6}{_m(e['p50']):>9}{_m(e['p95']):>9}{_m(e['max']):>9}"
            f"{_m(c['accuracy_m']['p50']):>12}{_pct(c['inside_radius']):>11}   {c['sources']}"
        )
    print(f"run time {results['run_s']} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.location", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PRESSES} presses, {QUICK_OUTDOOR} per class")
    parser.add_argument("--presses", type=int, default=None, help=f"indoor presses (default {DEFAULT_PRESSES})")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, help="wearables pressing at once")
    parser.add_argument("--outdoor", type=int, default=None, help=f"outdoor wearables per class ({DEFAULT_OUTDOOR})")
    parser.add_argument("--outdoor-only", action="store_true", help="only the sans-I/O outdoor part (no services)")
    parser.add_argument("--seed", type=int, default=1, help="true positions, the air's noise, cells and fixes")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print_table(results)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}-location{'-quick' if args.quick else ''}.json"
    write_json(path, results)
    print(f"results: {path}")
    return 0 if results.get("indoor", {}).get("gateway_alive", True) else 1


if __name__ == "__main__":
    sys.exit(main())
