"""`panic-gateway cells ...` (the offline cell database) and `panic-gateway sites ...` (the site map)."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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


def cmd_sites_check(args: argparse.Namespace) -> int:
    from gateway.location.sites import load_site_map

    site_map = load_site_map(args.file)  # SiteMapError lists every problem; main() prints them, exit 2
    print(f"{args.file}: ok")
    print(_summary(site_map))
    return 0


def cmd_sites_load(args: argparse.Namespace) -> int:
    from gateway.location.sites import load_site_map
    from gateway.store.locations import save_site_map_document

    site_map = load_site_map(args.file)
    text = args.file.read_text(encoding="utf-8-sig")

    async def action() -> int:
        version = await save_site_map_document(text, source=str(args.file), loaded_by=args.by)
        print(f"{args.file}: {'loaded as version ' + str(version) if version else 'unchanged (already current)'}")
        print(_summary(site_map))
        return 0

    return _with_database(args, action)


def cmd_sites_show(args: argparse.Namespace) -> int:
    from gateway.location.sites import parse_site_map
    from gateway.store.locations import current_site_map_document

    async def action() -> int:
        version, document = await current_site_map_document()
        if document is None:
            print("no site map loaded: places are coordinates only")
            return 0
        print(f"version {version}")
        print(_summary(parse_site_map(document, source=f"version {version}")))
        return 0

    return _with_database(args, action)


def cmd_receivers(args: argparse.Namespace) -> int:
    from gateway.location.engine import SiteMapCache

    settings = load_settings(args.config)

    async def action() -> int:
        cache = SiteMapCache(settings.ble.receivers)
        await cache.refresh()
        if not settings.ble.receivers:
            print("no BLE receivers configured ([[ble.receivers]])")
            return 0
        for name, site in cache.receivers.items():
            place = cache.site_map.describe(site.place) or "not in the site map"
            where = f" at {site.lat:.6f}, {site.lon:.6f}" if site.lat is not None and site.lon is not None else ""
            print(f"{name:<16} {place}{where}")
        problems = cache.problems()
        for problem in problems:
            print(f"  problem: {problem}")
        return 1 if problems else 0

    return _with_database(args, action)


def _summary(site_map: Any) -> str:
    rooms = sum(len(floor.rooms) for building in site_map.buildings for floor in building.floors)
    return (
        f"{len(site_map.sites)} site(s), {len(site_map.zones)} zone(s), {len(site_map.buildings)} building(s), "
        f"{rooms} room(s)"
    )


def add_location_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `cells ...` and `sites ...` on the gateway's CLI."""

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

    sites = sub.add_parser("sites", help="site map: sites, zones, buildings, floors, rooms (docs/LOCATION.md)")
    site_commands = sites.add_subparsers(dest="sites_command", required=True)
    check = site_commands.add_parser("check", help="validate a site map (GeoJSON) and print every problem")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_sites_check)
    load = with_config(site_commands.add_parser("load", help="validate a site map and make it current"))
    load.add_argument("file", type=Path)
    load.add_argument("--by", default="cli", help="who makes the change (kept with the version)")
    load.set_defaults(func=cmd_sites_load)
    with_config(site_commands.add_parser("show", help="summary of the current site map")).set_defaults(
        func=cmd_sites_show
    )
    with_config(
        sub.add_parser("receivers", help="where each configured BLE receiver is in the site map, and problems")
    ).set_defaults(func=cmd_receivers)


__all__ = ["add_location_commands"]
