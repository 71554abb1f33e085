"""Location data in the database: the offline cell database (imported in batches) and the site map's versions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from tortoise.exceptions import BaseORMException
from tortoise.transactions import in_transaction

from gateway.errors import StoreUnavailable
from gateway.location.cells import CellKey, CellRow, CellRowProblem, CellTable
from gateway.location.model import CellSite
from gateway.store.models import CellTower, SiteMapVersion
from gateway.store.versions import latest_version, save_version

log = structlog.get_logger(__name__)

#: Rows per transaction of an import: large enough that 40 M rows take minutes, small enough that a
#: transaction never holds much (PostgreSQL: one parameter list per column).
IMPORT_BATCH: Final = 5000
#: Problems listed in an import's report (the count is always complete).
REPORTED_PROBLEMS: Final = 20
_COLUMNS: Final = ("radio", "mcc", "mnc", "area", "cell", "lat", "lon", "range_m", "samples")


@dataclass
class CellImport:
    """What an import did: rows stored (inserted or updated) and the lines that were not rows."""

    stored: int = 0
    problems: int = 0
    examples: list[CellRowProblem] = field(default_factory=list)


async def import_cells(rows: Iterable[CellRow | CellRowProblem], *, batch: int = IMPORT_BATCH) -> CellImport:
    """Upsert a stream of parsed rows (a newer row for a known cell replaces it); problems are counted."""
    report = CellImport()
    pending: list[tuple[Any, ...]] = []
    for row in rows:
        if isinstance(row, CellRowProblem):
            report.problems += 1
            if len(report.examples) < REPORTED_PROBLEMS:
                report.examples.append(row)
            continue
        k, s = row.key, row.site
        pending.append((k.radio, k.mcc, k.mnc, k.area, k.cell, s.lat, s.lon, s.range_m, s.samples))
        if len(pending) >= batch:
            report.stored += await _upsert(pending)
            pending = []
    if pending:
        report.stored += await _upsert(pending)
    return report


async def _upsert(rows: list[tuple[Any, ...]]) -> int:
    names = ", ".join(f'"{c}"' for c in _COLUMNS)
    try:
        async with in_transaction() as conn:
            dialect = conn.capabilities.dialect
            marks = ", ".join("?" if dialect == "sqlite" else f"${i}" for i in range(1, len(_COLUMNS) + 1))
            # Column names are this module's constants; every value is a parameter.
            sql = (
                f'INSERT INTO "cell_towers" ({names}) VALUES ({marks}) '  # noqa: S608
                'ON CONFLICT ("radio", "mcc", "mnc", "area", "cell") DO UPDATE SET '
                '"lat" = excluded."lat", "lon" = excluded."lon", "range_m" = excluded."range_m", '
                '"samples" = excluded."samples"'
            )
            await conn.execute_many(sql, [list(r) for r in rows])
    except (BaseORMException, OSError) as exc:
        raise StoreUnavailable(f"database error: {exc}") from exc
    return len(rows)


class CellDatabase:
    """Cell lookups for fusion: `await prefetch(keys)` returns an in-memory table of the known ones (one query)."""

    async def prefetch(self, keys: Sequence[CellKey]) -> CellTable:
        if not keys:
            return CellTable(())
        wanted = set(keys)
        try:
            # By cell id first (indexed with the rest of the key), then exact keys in memory: a handful of cells.
            found = await CellTower.filter(cell__in=sorted({k.cell for k in wanted}))
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return CellTable(
            CellRow(key, CellSite(t.lat, t.lon, t.range_m, t.samples))
            for t in found
            if (key := CellKey(t.radio, t.mcc, t.mnc, t.area, t.cell)) in wanted
        )

    @staticmethod
    async def count() -> int:
        return await CellTower.all().count()


def iter_lines(path: Any) -> Iterator[str]:
    """The lines of a (possibly huge) CSV file, one at a time, without their line ends."""
    with open(path, encoding="utf-8", newline="") as handle:
        for line in handle:
            yield line.rstrip("\r\n")


async def current_site_map_document() -> tuple[int, str | None]:
    """The newest stored site map (GeoJSON text) and its version; (0, None) when none was loaded."""
    return await latest_version(SiteMapVersion)


async def save_site_map_document(document: str, *, source: str, loaded_by: str) -> int | None:
    """Store a validated site map as the newest version unless it equals the current one; the version or None."""
    return await save_version(SiteMapVersion, document, source=source, loaded_by=loaded_by)
