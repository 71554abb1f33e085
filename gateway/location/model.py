"""Value types of location (sans-I/O), shared by the site map, the cell database, fusion and the outputs."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class LocationSource(enum.StrEnum):
    """What a position estimate rests on."""

    GPS = "gps"
    CELL = "cell"
    BLE = "ble"
    #: Nothing current: the last known place of the device, with its age.
    LAST_KNOWN = "last-known"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Place:
    """Where in the site model a point or a receiver is; every part may be unknown (None).

    site: the site id (a site polygon or point of the site map); building: building id within the site;
    floor: floor number (0 = ground); room: room id on that floor; zone: the zone id (routes the alert).
    """

    site: str | None = None
    building: str | None = None
    floor: int | None = None
    room: str | None = None
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class LocalPoint:
    """A point on a floor plan, in metres from the floor's anchor (x east, y north, before rotation)."""

    building: str
    floor: int
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class CellObservation:
    """A cell the wearable saw (serving or neighbour), as the frame's cells extension carries it.

    radio: "gsm", "umts", "lte" or "nr"; area: LAC (gsm/umts) or TAC (lte/nr); cell: cell id (for lte the
    28-bit ECI, for nr the 36-bit NCI); signal_dbm: received power, None when unknown.
    """

    radio: str
    mcc: int
    mnc: int
    area: int
    cell: int
    signal_dbm: int | None
    serving: bool


@dataclass(frozen=True, slots=True)
class CellSite:
    """Where a cell's antenna is believed to be (OpenCellID's lat, lon, range and samples)."""

    lat: float
    lon: float
    range_m: float
    samples: int


@dataclass(frozen=True, slots=True)
class BleObservation:
    """One receiver heard one press (or heartbeat) at this strength."""

    receiver: str
    rssi: int
    at: datetime


@dataclass(frozen=True, slots=True)
class ReceiverSite:
    """A BLE receiver in the site model: its place, its position on the floor plan, and that position on earth."""

    name: str
    place: Place
    local: LocalPoint | None
    lat: float | None
    lon: float | None


@dataclass(frozen=True, slots=True)
class Estimate:
    """Where the wearer is believed to be.

    lat / lon / accuracy_m: WGS84 and a radius (metres, ~68 % confidence) or None when unknown.
    source: what it rests on; place: site, building, floor, room and zone (None parts unknown).
    text: a human place text ("Building B, floor 2, room 214" or "52.52030, 13.40490 +/- 35 m").
    why: one sentence: which source won and why (when sources disagree, says so).
    at: the time the position refers to (a GPS fix's time, the press for BLE and cells).
    """

    lat: float | None
    lon: float | None
    accuracy_m: float | None
    source: LocationSource
    place: Place
    text: str
    why: str
    at: datetime | None
