"""`python -m bench`: set up a throwaway gateway, measure it, print the summary, write JSON and a plot."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import const
from bench.report import machine_info, plot, print_summary, ratios, verdicts, write_json
from bench.scenarios import Options, run_all
from bench.testbed import MQTT_HOST, MQTT_PORT, PG_ADMIN_DSN

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("rates are whole numbers per second, comma separated") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError("give at least one positive rate")
    return rates


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a short smoke run (about 40 s); numbers are indicative only")
    default_rates = ",".join(map(str, const.DEFAULT_RATES))
    p.add_argument("--rates", type=_rates, help=f"offered alerts/s of the latency steps (default {default_rates})")
    p.add_argument("--duration", type=float, help="seconds of each latency step")
    p.add_argument("--devices", type=int, help="enrolled devices")
    p.add_argument("--saturation-duration", type=float, help="seconds of the sustained, overload and attack runs")
    p.add_argument("--saturation-rate", type=int, help="offered alerts/s of the sustained run")
    p.add_argument("--connections", type=int, help="keep-alive pool of the latency steps")
    p.add_argument("--saturation-connections", type=int, help="keep-alive pool of the sustained and overload runs")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})")
    return p


def options_from(args: argparse.Namespace) -> Options:
    quick = bool(args.quick)

    def pick(given: object, full: object, short: object) -> Any:
        return given if given is not None else (short if quick else full)

    return Options(
        rates=pick(args.rates, const.DEFAULT_RATES, const.QUICK_RATES),
        duration_s=pick(args.duration, const.DEFAULT_DURATION_S, const.QUICK_DURATION_S),
        devices=pick(args.devices, const.DEFAULT_DEVICES, const.QUICK_DEVICES),
        saturation_s=pick(args.saturation_duration, const.DEFAULT_SATURATION_S, const.QUICK_SATURATION_S),
        saturation_rate=pick(args.saturation_rate, const.DEFAULT_SATURATION_RATE, const.QUICK_SATURATION_RATE),
        connections=pick(args.connections, const.DEFAULT_CONNECTIONS, const.QUICK_CONNECTIONS),
        saturation_connections=pick(
            args.saturation_connections, const.DEFAULT_SATURATION_CONNECTIONS, const.QUICK_SATURATION_CONNECTIONS
        ),
        raw_s=pick(None, const.RAW_VERIFY_S, const.QUICK_RAW_S),
        settle_s=pick(None, const.SETTLE_S, const.QUICK_SETTLE_S),
        quick=quick,
    )


async def main_async(options: Options, out: Path, console: Console) -> int:
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if options.quick else "")
    results: dict[str, object] = {
        "started_at": started.isoformat(timespec="seconds"),
        "options": asdict(options),
        "machine": await machine_info(PG_ADMIN_DSN, MQTT_HOST, MQTT_PORT),
    }
    clock = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("answered, {task.fields[sent]} sent"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, refresh_per_second=4) as progress:
        results |= await run_all(options, progress, out / f"{stamp}-gateway.log")
    results["wall_s"] = round(time.perf_counter() - clock, 1)
    results["ratios"] = ratios(results)
    results["verdicts"] = [asdict(v) for v in verdicts(results)]
    json_path = out / f"{stamp}.json"
    png_path = out / f"{stamp}.png"
    write_json(json_path, results)
    plotted = plot(png_path, results)
    print_summary(console, results)
    console.print(f"results: {json_path}")
    if plotted:
        console.print(f"plot:    {png_path}")
    if results.get("gateway_log"):
        console.print(f"gateway log: {results['gateway_log']}")
    return 1 if results.get("error") else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Not a terminal (CI, a log file): rich would wrap the tables at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=170)
    try:
        return asyncio.run(main_async(options_from(args), args.out, console))
    except KeyboardInterrupt:
        console.print("interrupted; the gateway was stopped and the database dropped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
