"""`panic-gateway cells ...` (the offline cell database) and `panic-gateway sites ...` (the site map)."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.config import load_settings


def _with_database(args: argparse.Namespace, action: Callable[[], Awaitable[int]]) -> int:
    from gateway.store.db import open_database

    settings = load_settings(args.config)

    async def main() -> int:
        async with open_database(settings.database.url.get_secret_value()):
            return await action()

    return asyncio.run(main())


def cmd_cells_import(args: argparse.Namespace) -> int:
    from gateway.location.cells import parse_cell_rows
    from gateway.store.locations import import_cells, iter_lines

    async def action() -> int:
        started = time.monotonic()
        # CellImportError (no OpenCellID header) stops before anything is stored; main() prints it, exit 2.
        report = await import_cells(parse_cell_rows(iter_lines(args.file)))
        took = time.monotonic() - started
        print(f"{args.file}: {report.stored} cell(s) stored in {took:.1f} s, {report.problems} line(s) skipped")
        for problem in report.examples:
            print(f"  line {problem.line_number}: {problem.message}")
        if report.problems > len(report.examples):
            print(f"  ... and {report.problems - len(report.examples)} more")
        return 0 if report.stored or not report.problems else 1

    return _with_database(args, action)


def cmd_cells_count(args: argparse.Namespace) -> int:
    from gateway.store.locations import CellDatabase

    async def action() -> int:
        print(f"{await CellDatabase.count()} cell(s)")
        return 0

    return _with_database(args, action)


def add_location_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `cells ...` on the gateway's CLI."""

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", "-c", type=Path, default=None, help="TOML settings file (PANIC_* variables override)"
        )
        return p

    cells = sub.add_parser("cells", help="offline cell database (OpenCellID CSV format)").add_subparsers(
        dest="cells_command", required=True
    )
    imp = with_config(cells.add_parser("import", help="import or update cells from an OpenCellID CSV file"))
    imp.add_argument("file", type=Path, help="cell_towers.csv (radio,mcc,net,area,cell,unit,lon,lat,range,...)")
    imp.set_defaults(func=cmd_cells_import)
    with_config(cells.add_parser("count", help="how many cells are known")).set_defaults(func=cmd_cells_count)


__all__ = ["add_location_commands"]
