"""Cell towers (sans-I/O): OpenCellID CSV rows parsed as a stream, cell keys, and the lookup fusion asks.

The OpenCellID export (`cell_towers.csv`, ~40 M rows) has the header
`radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal`.
`parse_cell_rows` reads it one line at a time and yields a `CellRow` per good line and a `CellRowProblem`
value per bad one (an importer counts and logs them; one bad row must not stop 40 M good ones). Only a
missing or wrong header raises `CellImportError`: then nothing in the file can be trusted to mean what the
columns say.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol, TextIO

from gateway.errors import GatewayError
from gateway.location.model import CellObservation, CellSite

#: The OpenCellID export's header, in order; compared case-insensitively (tools re-case it).
OPENCELLID_HEADER: Final = (
    "radio",
    "mcc",
    "net",
    "area",
    "cell",
    "unit",
    "lon",
    "lat",
    "range",
    "samples",
    "changeable",
    "created",
    "updated",
    "averageSignal",
)

#: Radios a wearable can report (CellObservation.radio). OpenCellID also has CDMA rows: no wearable modem of
#: ours speaks CDMA, so those rows are problems, not silently imported keys nobody can ever look up.
RADIOS: Final = frozenset({"gsm", "umts", "lte", "nr"})

#: A cell's range above this is not a cell (the largest macro cells reach ~35 km, GSM's timing-advance limit;
#: extended-range cells ~100 km): such a row would make every fused estimate it touches meaningless.
MAX_RANGE_M: Final = 100_000.0

#: MCC and MNC are three decimal digits (ITU-T E.212).
MAX_MCC: Final = 999
MAX_MNC: Final = 999

#: LAC is 16 bits, TAC 16 (LTE) or 24 bits (NR): the widest is 24.
MAX_AREA: Final = (1 << 24) - 1

#: The widest cell identity is NR's 36-bit NCI (LTE's ECI is 28 bits, UMTS's 28, GSM's 16).
MAX_CELL: Final = (1 << 36) - 1

#: Longest decimal integer field accepted: beyond 12 digits nothing in a valid row fits, and Python's int()
#: refuses > 4300 digits with an exception we would rather not provoke on garbage.
_MAX_INT_DIGITS: Final = 12

#: Characters of a bad field quoted in a problem message: enough to recognise it in the file.
_MAX_SHOWN: Final = 40


class CellImportError(GatewayError):
    """The CSV has no OpenCellID header (missing, or other columns): `found` is the first line (None if empty)."""

    def __init__(self, message: str, found: str | None) -> None:
        super().__init__(message)
        self.found = found


@dataclass(frozen=True, slots=True)
class CellKey:
    """What identifies a cell worldwide: radio (lowercase), MCC, MNC, area (LAC/TAC) and cell id."""

    radio: str
    mcc: int
    mnc: int
    area: int
    cell: int


@dataclass(frozen=True, slots=True)
class CellRow:
    """One good OpenCellID row: the cell's key and where its antenna is believed to be."""

    key: CellKey
    site: CellSite


@dataclass(frozen=True, slots=True)
class CellRowProblem:
    """One line that is not a usable row; line_number counts from 1 (the header is line 1)."""

    line_number: int
    message: str


class CellLookup(Protocol):
    """Where fusion finds a cell's site; None when the cell is not known."""

    def get(self, key: CellKey) -> CellSite | None: ...


class CellTable:
    """An in-memory CellLookup (tests, small deployments); a later row for the same key replaces an earlier one."""

    __slots__ = ("_sites",)

    def __init__(self, rows: Iterable[CellRow]) -> None:
        self._sites: dict[CellKey, CellSite] = {row.key: row.site for row in rows}

    def get(self, key: CellKey) -> CellSite | None:
        return self._sites.get(key)

    def __len__(self) -> int:
        return len(self._sites)


def cell_key(obs: CellObservation) -> CellKey:
    """The lookup key of an observed cell (radio lowercased as in the parsed rows)."""
    return CellKey(obs.radio.lower(), obs.mcc, obs.mnc, obs.area, obs.cell)


def parse_cell_rows(lines: Iterable[str]) -> Iterator[CellRow | CellRowProblem]:
    """Parse an OpenCellID CSV lazily: a CellRow or a CellRowProblem per non-blank line after the header.

    Raises CellImportError (before yielding anything) when the first line is not the OpenCellID header.
    Blank lines are skipped. Nothing else raises, whatever the lines hold.
    """
    it = iter(lines)
    header = next(it, None)
    if header is None:
        raise CellImportError("empty cell file: no OpenCellID header", None)
    fields = tuple(f.strip().lower() for f in header.lstrip("\ufeff").strip().split(","))
    if fields != tuple(f.lower() for f in OPENCELLID_HEADER):
        raise CellImportError(f"not an OpenCellID header: expected {','.join(OPENCELLID_HEADER)}", header.strip())
    for line_number, line in enumerate(it, start=2):
        text = line.strip()
        if text:
            yield _parse_row(line_number, text)


def write_cell_csv(rows: Iterable[CellRow], out: TextIO) -> int:
    """Write rows as an OpenCellID CSV (header first) that parse_cell_rows reads back unchanged; returns the count.

    For tests and benchmarks: unit, changeable, created, updated and averageSignal are written as fixed values.
    """
    out.write(",".join(OPENCELLID_HEADER) + "\n")
    count = 0
    for row in rows:
        k, s = row.key, row.site
        rng = str(int(s.range_m)) if s.range_m.is_integer() else repr(s.range_m)
        out.write(
            f"{k.radio.upper()},{k.mcc},{k.mnc},{k.area},{k.cell},0,{s.lon!r},{s.lat!r},{rng},{s.samples},1,0,0,0\n"
        )
        count += 1
    return count


def _parse_row(line_number: int, text: str) -> CellRow | CellRowProblem:
    parts = text.split(",")
    if len(parts) != len(OPENCELLID_HEADER):
        return CellRowProblem(line_number, f"expected {len(OPENCELLID_HEADER)} fields, got {len(parts)}")
    radio = parts[0].strip().lower()
    if radio not in RADIOS:
        return CellRowProblem(line_number, f"unknown radio {_shown(parts[0])}")
    try:
        key = CellKey(
            radio,
            _integer(parts[1], "mcc", MAX_MCC),
            _integer(parts[2], "net", MAX_MNC),
            _integer(parts[3], "area", MAX_AREA),
            _integer(parts[4], "cell", MAX_CELL),
        )
        lon = _decimal(parts[6], "lon", -180.0, 180.0)
        lat = _decimal(parts[7], "lat", -90.0, 90.0)
        range_m = _decimal(parts[8], "range", -math.inf, math.inf)
        samples = _integer(parts[9], "samples", 10**_MAX_INT_DIGITS)
    except _BadField as bad:
        return CellRowProblem(line_number, str(bad))
    if range_m <= 0:
        return CellRowProblem(line_number, f"range {range_m:g} m is not positive")
    if range_m > MAX_RANGE_M:
        return CellRowProblem(line_number, f"range {range_m:g} m is absurd (over {MAX_RANGE_M / 1000:g} km)")
    return CellRow(key, CellSite(lat=lat, lon=lon, range_m=range_m, samples=samples))


class _BadField(Exception):
    """A field that makes its row a problem (internal: parse_cell_rows turns it into a CellRowProblem)."""


def _integer(field: str, name: str, maximum: int) -> int:
    text = field.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_INT_DIGITS):
        raise _BadField(f"{name} {_shown(text)} is not a number")
    value = int(text)
    if value > maximum:
        raise _BadField(f"{name} {value} is out of range (0..{maximum})")
    return value


def _decimal(field: str, name: str, low: float, high: float) -> float:
    text = field.strip()
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _BadField(f"{name} {_shown(text)} is not a number")
    if not low <= value <= high:
        raise _BadField(f"{name} {value:g} is out of range ({low:g}..{high:g})")
    return value


def _shown(field: str) -> str:
    """A field quoted for a problem message, cut short: a garbage line can be megabytes long."""
    text = field.strip()
    return repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...")
