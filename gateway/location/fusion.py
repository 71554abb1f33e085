"""Where is the wearer (sans-I/O): the press's GPS fix, cells and BLE receivers fused into one Estimate, with why.

Rules, each with its reason (the numbers are the constants below):

GPS
- Usable when 0 < accuracy_m <= 1000, lat/lon finite and on the globe, and 0 <= fix_age_s <= 300.
  A radius of 0 is a modem's "no fix", and one over 1 km is no better than the cells.
- A fix taken before the press has moved with the wearer: its accuracy grows by walking speed (1.5 m/s x age),
  and the estimate's `at` is the fix's time, not the press's. A fix older than 300 s describes where the wearer
  was, not is: it is not used as current, and `why` says so. A negative age (a fix after the press) cannot
  come off the wire; it is reported as impossible, never used.

Cells
- Each observed cell is looked up; unknown cells are counted in `why` ("2 of 5 cells unknown") and ignored,
  so an unknown cell never moves the estimate. A site the lookup returns off the globe, or with a range that
  is not in (0, 100 km], is ignored too and counted.
- Position: the weighted centroid of the known cells. The serving cell weighs 2x (the modem chose it as the
  best server) and a cell's signal weighs 10^((signal + 100) / 20), clamped to [0.1, 10] (stronger is
  closer, but beyond +-20 dB of -100 dBm the antenna pattern dominates the distance). An unknown or
  impossible signal weighs as -100 dBm.
- Accuracy: max(weighted spread of the cell positions, smallest range of the known cells, 100 m): never
  tighter than the cells allow. Only neighbours known: the wearer is beyond their best-server areas, so the
  accuracy is doubled, and `why` says so.

BLE
- Receivers not in the site model are listed in `why` and ignored; RSSI outside [-127, 0] dBm (HCI's range;
  127 means "not available") is impossible, reported and ignored.
- Room: the receiver with the highest smoothed RSSI over this press's observations (one reflected spike must
  not win): the median of fewer than 5 readings, else the mean of the middle 60 % (every reading counts, and
  the extremes are dropped). Ties: more observations, then the smaller name (deterministic). Its place gives
  the room, and a close runner-up in another room (within 3 dB) is named in `why`: the wearer may be between
  the two rooms.
- Position: weighted centroid of the positioned receivers on the winning receiver's building and floor,
  weight 1/d^2 with d = 10^((P0 - rssi) / (10 n)), P0 = -59 dBm at 1 m, n = 2.0 (log-distance model).
  Accuracy: max(weighted spread of those receivers around the centroid, the strongest one's modelled distance,
  3 m); the distance term keeps one receiver heard alone at -85 dBm from claiming +-3 m.
- The room is never taken from the centroid: when `locate` puts the centroid in another room, the strongest
  receiver's room still wins and `why` says so. Receivers heard on several floors: the strongest's floor.
- A receiver without a valid lat/lon in the site model still names its room (the site model knows where it
  hangs) but is left out of the centroid, and `why` says so.

Fusion
- The winner is the usable source with the smallest accuracy (ties: BLE, GPS, cells), except that BLE with a
  room known wins over GPS worse than 15 m (indoors GPS is multipath, not position) and over cells always.
- When the winner and a loser are further apart than the sum of their accuracies, `why` names the loser, the
  distance and the reason ("BLE room 214 (±4 m) won over GPS 120 m away (±35 m): indoor receivers outrank a
  weak fix"). Nothing usable: source NONE, no position, text "location unknown".
- Place: BLE, the strongest receiver's place; GPS and cells, only site and zone of `locate(lat, lon)` (a radius
  of metres to kilometres cannot name a room). Text: `describe(place)` when a building or room is known and
  `describe` is given, else "lat, lon ±N m" (5 decimals), so an outdoor position always shows its radius.
- Impossible inputs (NaN, infinities, lat 91, accuracy <= 0, RSSI out of range, a receiver without lat/lon)
  are named in `why`; `fuse` never raises on them and never reports a room they made up.

`last_known` turns the previous estimate into a LAST_KNOWN one: same position, accuracy grown by walking speed
over its age (capped at 50 km), and the age in the text ("last known: room 214, 12 min ago").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from gateway.location.cells import MAX_RANGE_M, CellLookup, cell_key
from gateway.location.model import (
    BleObservation,
    CellObservation,
    Estimate,
    LocationSource,
    Place,
    ReceiverSite,
)
from gateway.protocol import GpsFix

#: A GPS radius above 1 km is no better than the cells (and often is the modem's own cell-based guess).
MAX_GPS_ACCURACY_M: Final = 1000.0

#: A fix older than 5 minutes at the press says where the wearer was (450 m of walking ago), not where they are.
MAX_GPS_FIX_AGE_S: Final = 300.0

#: A brisk walk: how fast an old position loses its meaning for someone on foot.
WALKING_SPEED_M_S: Final = 1.5

#: Beyond 50 km a radius names a region, not a place; grown accuracies stop here.
MAX_GROWN_ACCURACY_M: Final = 50_000.0

#: GPS better than 15 m is open sky; worse, next to BLE receivers, is the multipath of a building.
INDOOR_GPS_TRUST_M: Final = 15.0

#: No cell estimate is tighter than 100 m: even a small cell's antenna position is only known to ~100 m.
MIN_CELL_ACCURACY_M: Final = 100.0

#: The modem picked the serving cell as its best server: it is likelier near the wearer than a neighbour.
SERVING_CELL_WEIGHT: Final = 2.0

#: A cell heard at -100 dBm weighs 1; +-20 dB around it is the range where signal still tracks distance.
CELL_SIGNAL_REFERENCE_DBM: Final = -100.0
CELL_WEIGHT_MIN: Final = 0.1
CELL_WEIGHT_MAX: Final = 10.0

#: Cell signal (RSSI/RSCP/RSRP) outside this is impossible: RSRP's floor is -156 dBm, and above 0 dBm no phone receives.
CELL_SIGNAL_MIN_DBM: Final = -160.0
CELL_SIGNAL_MAX_DBM: Final = 0.0

#: Only neighbours known: the wearer is outside their best-server areas, about twice as far as one alone suggests.
NEIGHBOURS_ONLY_FACTOR: Final = 2.0

#: BLE RSSI range of HCI (-127..+20, 127 = "not available"); above 0 dBm at a body-worn tag is impossible.
BLE_RSSI_MIN_DBM: Final = -127.0
BLE_RSSI_MAX_DBM: Final = 0.0

#: Log-distance model: -59 dBm at 1 m is the usual 0 dBm wearable advertiser; n = 2 is free space, which inside
#: one room is close enough for weights (the room decision does not depend on it).
BLE_P0_DBM: Final = -59.0
BLE_PATH_LOSS_EXPONENT: Final = 2.0

#: No BLE estimate is tighter than 3 m: half a small room; the receivers' own placement is not better.
MIN_BLE_ACCURACY_M: Final = 3.0

#: A runner-up in another room this close (median difference in dB) is within the noise of 5 observations.
CLOSE_CALL_DB: Final = 3.0

#: Mean Earth radius (IUGG), for distances and the local plane of centroids.
EARTH_RADIUS_M: Final = 6_371_008.8

#: Unknown or impossible receiver names listed in `why` at most: the count says the rest.
_MAX_NAMES: Final = 5

#: How `why` names a previous estimate's source in last_known.
_SOURCE_WORDS: Final = {LocationSource.GPS: " GPS", LocationSource.CELL: " cell", LocationSource.BLE: " BLE"}

#: Ties between equal accuracies: the finer-grained source first.
_PRIORITY: Final = {LocationSource.BLE: 0, LocationSource.GPS: 1, LocationSource.CELL: 2}


#: From this many readings a receiver's strength is a trimmed mean, not the median (see _smoothed).
TRIMMED_FROM: Final = 5


@dataclass(frozen=True, slots=True)
class FusionInput:
    """What one press says about where the wearer is.

    press_at: when the press happened (device time); fixes are judged against it.
    gps: the frame's fix (accuracy_m; fix_age_s = its age at the press), or None.
    cells: serving and neighbour cells the wearable saw.
    ble: every receiver observation of this press.
    """

    press_at: datetime
    gps: GpsFix | None
    cells: tuple[CellObservation, ...] = ()
    ble: tuple[BleObservation, ...] = ()


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One source's estimate before fusion; lat/lon/accuracy None only for a BLE room without a position."""

    source: LocationSource
    label: str
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    place: Place
    at: datetime | None


def fuse(
    inp: FusionInput,
    *,
    cells: CellLookup,
    receivers: Mapping[str, ReceiverSite],
    describe: Callable[[Place], str] | None = None,
    locate: Callable[[float, float], Place] | None = None,
) -> Estimate:
    """Fuse one press's GPS fix, cells and BLE observations into an Estimate (rules in the module docstring)."""
    notes: list[str] = []
    gps = _gps_candidate(inp.gps, inp.press_at, notes)
    cell = _cell_candidate(inp.cells, cells, inp.press_at, notes)
    ble = _ble_candidate(inp.ble, receivers, locate, inp.press_at, notes)
    usable = [c for c in (ble, gps, cell) if c is not None]
    if not usable:
        if not (inp.gps is not None or inp.cells or inp.ble):
            notes.append("the press carried no GPS fix, cells or receiver observations")
        return Estimate(
            None, None, None, LocationSource.NONE, Place(), "location unknown", _why("no usable source", notes), None
        )
    winner = _choose(ble, gps, usable)
    decision = _decision(winner, [c for c in usable if c is not winner])
    if winner.source is LocationSource.BLE or winner.lat is None or winner.lon is None or locate is None:
        place = winner.place
    else:
        located = locate(winner.lat, winner.lon)
        place = Place(site=located.site, zone=located.zone)
    return Estimate(
        winner.lat,
        winner.lon,
        winner.accuracy_m,
        winner.source,
        place,
        _text(place, winner.lat, winner.lon, winner.accuracy_m, describe),
        _why(decision, notes),
        winner.at,
    )


def last_known(previous: Estimate, now: datetime) -> Estimate:
    """The previous estimate as the LAST_KNOWN place: same position, accuracy grown by walking over its age."""
    has_place = previous.place.room is not None or previous.place.building is not None
    if previous.lat is None and not has_place:
        return Estimate(
            None, None, None, LocationSource.NONE, Place(), "location unknown", "no last known location", None
        )
    notes: list[str] = []
    age = _age_s(previous.at, now, notes)
    accuracy = previous.accuracy_m
    if accuracy is not None:
        grown = MAX_GROWN_ACCURACY_M if age is None else accuracy + WALKING_SPEED_M_S * age
        accuracy = max(accuracy, min(grown, MAX_GROWN_ACCURACY_M))
    ago = "age unknown" if age is None else _ago(age)
    if previous.place.room is not None:
        where = f"room {previous.place.room}"
    elif has_place or previous.lat is None or previous.lon is None or accuracy is None:
        where = _place_words(previous.place)
    else:
        where = _coordinates(previous.lat, previous.lon, accuracy)
    was = _SOURCE_WORDS.get(previous.source, "")
    decision = f"no current position: last known{was} estimate, {ago}"
    if accuracy is not None:
        decision += f", radius grown to {_pm(accuracy)} at walking speed"
    return Estimate(
        previous.lat,
        previous.lon,
        accuracy,
        LocationSource.LAST_KNOWN,
        previous.place,
        f"last known: {where}, {ago}",
        _why(decision, notes),
        previous.at,
    )


# --- GPS ---------------------------------------------------------------------------------------------------------


def _gps_candidate(fix: GpsFix | None, press_at: datetime, notes: list[str]) -> _Candidate | None:
    if fix is None:
        return None
    lat, lon, accuracy, age = _number(fix.lat), _number(fix.lon), _number(fix.accuracy_m), _number(fix.fix_age_s)
    if not _on_globe(lat, lon):
        notes.append(f"GPS fix at impossible coordinates ({lat:g}, {lon:g}): not used")
        return None
    if not (math.isfinite(accuracy) and accuracy > 0):
        notes.append(f"GPS accuracy {accuracy:g} m is impossible: not used")
        return None
    if accuracy > MAX_GPS_ACCURACY_M:
        notes.append(f"GPS accuracy {accuracy:g} m too coarse (limit {MAX_GPS_ACCURACY_M:g} m): not used")
        return None
    if not (math.isfinite(age) and age >= 0):
        notes.append(f"GPS fix age {age:g} s is impossible (a fix after the press): not used")
        return None
    if age > MAX_GPS_FIX_AGE_S:
        notes.append(f"GPS fix {age:g} s older than the press (limit {MAX_GPS_FIX_AGE_S:g} s): not used as current")
        return None
    grown = min(accuracy + WALKING_SPEED_M_S * age, MAX_GROWN_ACCURACY_M)
    if age > 0:
        notes.append(f"GPS fix {age:g} s old: {_pm(accuracy)} grown to {_pm(grown)} at walking speed")
    return _Candidate(LocationSource.GPS, "GPS", lat, lon, grown, Place(), _before(press_at, age))


# --- cells -------------------------------------------------------------------------------------------------------


def _cell_candidate(
    observations: tuple[CellObservation, ...], lookup: CellLookup, press_at: datetime, notes: list[str]
) -> _Candidate | None:
    if not observations:
        return None
    points: list[tuple[float, float, float]] = []  # lat, lon, weight
    ranges: list[float] = []
    unknown = impossible_sites = impossible_signals = 0
    serving_known = False
    for obs in observations:
        site = lookup.get(cell_key(obs))
        if site is None:
            unknown += 1
            continue
        lat, lon, range_m = _number(site.lat), _number(site.lon), _number(site.range_m)
        if not (_on_globe(lat, lon) and 0 < range_m <= MAX_RANGE_M):
            impossible_sites += 1
            continue
        signal = None if obs.signal_dbm is None else _number(obs.signal_dbm)
        if signal is not None and not CELL_SIGNAL_MIN_DBM <= signal <= CELL_SIGNAL_MAX_DBM:
            impossible_signals += 1
            signal = None
        weight = _cell_signal_weight(signal) * (SERVING_CELL_WEIGHT if obs.serving else 1.0)
        serving_known = serving_known or obs.serving
        points.append((lat, lon, weight))
        ranges.append(range_m)
    total = len(observations)
    if unknown:
        notes.append(f"{unknown} of {total} cells unknown")
    if impossible_sites:
        notes.append(f"{impossible_sites} of {total} cells at an impossible site in the cell database: ignored")
    if impossible_signals:
        notes.append(f"{impossible_signals} impossible cell signal(s): weighted as unknown")
    if not points:
        return None
    lat, lon, spread = _weighted_centroid(points)
    accuracy = max(spread, min(ranges), MIN_CELL_ACCURACY_M)
    if not serving_known:
        accuracy *= NEIGHBOURS_ONLY_FACTOR
        notes.append(f"only neighbour cells known: accuracy x{NEIGHBOURS_ONLY_FACTOR:g}")
    return _Candidate(LocationSource.CELL, "cells", lat, lon, accuracy, Place(), press_at)


def _cell_signal_weight(signal_dbm: float | None) -> float:
    if signal_dbm is None:
        return 1.0
    exponent = (signal_dbm - CELL_SIGNAL_REFERENCE_DBM) / 20.0
    return float(min(max(10.0**exponent, CELL_WEIGHT_MIN), CELL_WEIGHT_MAX))


# --- BLE ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Heard:
    """One known receiver's smoothed strength over the press."""

    site: ReceiverSite
    name: str
    median_dbm: float
    count: int


def _ble_candidate(
    observations: tuple[BleObservation, ...],
    receivers: Mapping[str, ReceiverSite],
    locate: Callable[[float, float], Place] | None,
    press_at: datetime,
    notes: list[str],
) -> _Candidate | None:
    if not observations:
        return None
    strengths: dict[str, list[float]] = {}
    unknown: set[str] = set()
    impossible: list[str] = []
    for obs in observations:
        if obs.receiver not in receivers:
            unknown.add(obs.receiver)
            continue
        rssi = _number(obs.rssi)
        if not BLE_RSSI_MIN_DBM <= rssi <= BLE_RSSI_MAX_DBM:
            impossible.append(f"{obs.receiver} {rssi:g} dBm")
            continue
        strengths.setdefault(obs.receiver, []).append(rssi)
    if unknown:
        notes.append(f"{len(unknown)} unknown receiver(s) ignored: {_names(sorted(unknown))}")
    if impossible:
        notes.append(f"{len(impossible)} impossible RSSI value(s) ignored: {_names(impossible)}")
    if not strengths:
        return None
    heard = sorted(
        (_Heard(receivers[name], name, _smoothed(values), len(values)) for name, values in strengths.items()),
        key=lambda h: (-h.median_dbm, -h.count, h.name),
    )
    strongest = heard[0]
    place = strongest.site.place
    floor = (place.building, place.floor)
    floors = {(h.site.place.building, h.site.place.floor) for h in heard}
    if len(floors) > 1:
        notes.append(f"receivers on {len(floors)} floors heard: the floor of the strongest, {_floor_words(place)}")
    label = _ble_label(place, strongest.name)
    if place.room is not None:
        rival = next((h for h in heard[1:] if h.site.place.room not in (None, place.room)), None)
        if rival is not None and strongest.median_dbm - rival.median_dbm <= CLOSE_CALL_DB:
            notes.append(
                f"room {rival.site.place.room} nearly as strong ({rival.name} {rival.median_dbm:g} dBm vs "
                f"{strongest.name} {strongest.median_dbm:g} dBm): the wearer may be between the two rooms"
            )
    same_floor = [h for h in heard if (h.site.place.building, h.site.place.floor) == floor]
    positioned = [h for h in same_floor if _on_globe(_number(h.site.lat), _number(h.site.lon))]
    unplaced = [h.name for h in same_floor if not _on_globe(_number(h.site.lat), _number(h.site.lon))]
    if unplaced:
        notes.append(f"receiver(s) without a valid lat/lon in the site model, not in the centroid: {_names(unplaced)}")
    if not positioned:
        if place.room is None:
            notes.append("BLE not used: no room and no receiver position for the strongest receiver's floor")
            return None
        return _Candidate(LocationSource.BLE, label, None, None, None, place, press_at)
    points = []
    distances = []
    for h in positioned:
        distance = 10.0 ** ((BLE_P0_DBM - h.median_dbm) / (10.0 * BLE_PATH_LOSS_EXPONENT))
        points.append((_number(h.site.lat), _number(h.site.lon), 1.0 / distance**2))
        distances.append(distance)
    lat, lon, spread = _weighted_centroid(points)
    accuracy = max(spread, min(distances), MIN_BLE_ACCURACY_M)
    if locate is not None and place.room is not None:
        centroid_room = locate(lat, lon).room
        if centroid_room is not None and centroid_room != place.room:
            notes.append(f"centroid falls in room {centroid_room}: the strongest receiver's room {place.room} wins")
    return _Candidate(LocationSource.BLE, label, lat, lon, accuracy, place, press_at)


def _smoothed(values: list[float]) -> float:
    """One receiver's strength over a press: the median of a few readings; from 5 on, the mean of the middle 60 %
    (as robust to a reflected spike, and it uses every reading: bench.location measures it 1-2 points better)."""
    if len(values) < TRIMMED_FROM:
        return statistics.median(values)
    ordered = sorted(values)
    cut = len(ordered) // 5
    return statistics.fmean(ordered[cut : len(ordered) - cut])


def _ble_label(place: Place, receiver: str) -> str:
    if place.room is not None:
        return f"BLE room {place.room}"
    if place.floor is not None or place.building is not None:
        return f"BLE {_floor_words(place)}"
    return f"BLE receiver {receiver}"


# --- fusion ------------------------------------------------------------------------------------------------------


def _choose(ble: _Candidate | None, gps: _Candidate | None, usable: list[_Candidate]) -> _Candidate:
    if ble is not None and ble.place.room is not None:
        if gps is None or gps.accuracy_m is None or gps.accuracy_m > INDOOR_GPS_TRUST_M:
            return ble
        return gps if ble.accuracy_m is None or gps.accuracy_m < ble.accuracy_m else ble
    return min(
        (c for c in usable if c.accuracy_m is not None),
        key=lambda c: (c.accuracy_m if c.accuracy_m is not None else math.inf, _PRIORITY[c.source]),
    )


def _decision(winner: _Candidate, losers: list[_Candidate]) -> str:
    head = (
        f"{winner.label} ({_pm(winner.accuracy_m)})"
        if winner.accuracy_m is not None
        else f"{winner.label} (no position)"
    )
    if not losers:
        return f"{head}: the only usable source"
    disputes: list[str] = []
    others: list[str] = []
    for loser in losers:
        spacing = _distance(winner, loser)
        shown = f"{_pm(loser.accuracy_m)}" if loser.accuracy_m is not None else "no position"
        if spacing is not None and spacing > (winner.accuracy_m or 0.0) + (loser.accuracy_m or 0.0):
            disputes.append(f"{loser.label} {spacing:.0f} m away ({shown}): {_reason(winner, loser)}")
        elif spacing is None:
            others.append(f"{loser.label} ({shown}) cannot be compared")
        else:
            others.append(f"{loser.label} ({shown}) {'agree' if loser.source is LocationSource.CELL else 'agrees'}")
    if disputes:
        decision = f"{head} won over " + ", and over ".join(disputes)
    else:
        # Losers with a better accuracy lost to the indoor rule; none: the winner had the best accuracy.
        finer = [c for c in losers if c.accuracy_m is not None and c.accuracy_m < (winner.accuracy_m or math.inf)]
        decision = f"{head}: {_reason(winner, finer[0]) if finer else 'best accuracy'}"
    return "; ".join([decision, *others])


def _reason(winner: _Candidate, loser: _Candidate) -> str:
    if winner.source is LocationSource.BLE and winner.place.room is not None:
        if loser.source is LocationSource.GPS and (loser.accuracy_m or 0.0) > INDOOR_GPS_TRUST_M:
            return "indoor receivers outrank a weak fix"
        if loser.source is LocationSource.CELL:
            return "indoor receivers outrank cells"
    return "better accuracy"


def _text(
    place: Place, lat: float | None, lon: float | None, accuracy: float | None, describe: Callable[[Place], str] | None
) -> str:
    named = place.room is not None or place.building is not None
    if named and describe is not None:
        return describe(place)
    if lat is not None and lon is not None and accuracy is not None:
        return _coordinates(lat, lon, accuracy)
    if named:
        return _place_words(place)
    return "location unknown"


def _why(decision: str, notes: list[str]) -> str:
    return "; ".join([decision, *notes])


# --- small pieces ------------------------------------------------------------------------------------------------


def _number(value: float | None) -> float:
    """The input as a float; NaN for None or what is not a number (the callers check ranges, which NaN fails)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _on_globe(lat: float, lon: float) -> bool:
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0  # False for NaN


def _weighted_centroid(points: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Weighted centroid of (lat, lon, weight) on a local plane, and the weighted RMS distance of the points from
    it (metres). The plane is exact enough at cell scales and wraps the antimeridian; it is centred on the
    smallest point, so that the order of the observations cannot change a digit of the result.
    """
    points = sorted(points)
    lat0, lon0 = points[0][0], points[0][1]
    scale = max(math.cos(math.radians(lat0)), 1e-12)
    xy = []
    for lat, lon, weight in points:
        dlon = (lon - lon0 + 180.0) % 360.0 - 180.0
        xy.append((math.radians(dlon) * EARTH_RADIUS_M * scale, math.radians(lat - lat0) * EARTH_RADIUS_M, weight))
    total = math.fsum(w for _, _, w in xy)
    cx = math.fsum(x * w for x, _, w in xy) / total
    cy = math.fsum(y * w for _, y, w in xy) / total
    spread = math.sqrt(math.fsum(w * ((x - cx) ** 2 + (y - cy) ** 2) for x, y, w in xy) / total)
    lat = min(max(lat0 + math.degrees(cy / EARTH_RADIUS_M), -90.0), 90.0)
    lon = (lon0 + math.degrees(cx / (EARTH_RADIUS_M * scale)) + 180.0) % 360.0 - 180.0
    return lat, lon, spread


def _distance(a: _Candidate, b: _Candidate) -> float | None:
    """Great-circle distance in metres (haversine), None when either has no position."""
    if a.lat is None or a.lon is None or b.lat is None or b.lon is None:
        return None
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _before(at: datetime, seconds: float) -> datetime | None:
    try:
        return at - timedelta(seconds=seconds)
    except OverflowError:
        return None


def _age_s(then: datetime | None, now: datetime, notes: list[str]) -> float | None:
    if then is None:
        notes.append("the previous estimate has no time")
        return None
    try:
        age = (now - then).total_seconds()
    except TypeError:
        notes.append("the previous estimate's time and now are not comparable (one without a time zone)")
        return None
    if age < 0:
        notes.append(f"now is {-age:.0f} s before the previous estimate: taken as fresh")
        return 0.0
    return age


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    return f"{s // 86400} d ago"


def _pm(metres: float) -> str:
    """'±N m', N rounded up (never tighter than computed), read to the millimetre against float noise."""
    return f"±{max(1, math.ceil(round(metres, 3)))} m"


def _coordinates(lat: float, lon: float, accuracy: float) -> str:
    return f"{lat:.5f}, {lon:.5f} {_pm(accuracy)}"


def _floor_words(place: Place) -> str:
    parts = []
    if place.floor is not None:
        parts.append(f"floor {place.floor}")
    if place.building is not None:
        parts.append(f"building {place.building}")
    return " of ".join(parts) if parts else "unknown floor"


def _place_words(place: Place) -> str:
    parts = [f"building {place.building}" if place.building is not None else None]
    parts += [f"floor {place.floor}" if place.floor is not None else None]
    parts += [f"room {place.room}" if place.room is not None else None]
    words = [p for p in parts if p is not None]
    return ", ".join(words) if words else "location unknown"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown if len(names) <= _MAX_NAMES else f"{shown} and {len(names) - _MAX_NAMES} more"
