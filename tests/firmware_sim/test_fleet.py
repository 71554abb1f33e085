"""Fleets: enrolled once and reused, driven open loop on a timetable, summarised with percentiles."""

from __future__ import annotations

import asyncio
import io
import math
import random
from pathlib import Path

import pytest
from aiohttp import web
from rich.console import Console

from firmware_sim import DeviceStateError, Fleet, FleetReport, fleet_uplinks, parse_scenario, run_scenario
from firmware_sim.fleet import percentile
from firmware_sim.wearable import Issuer
from gateway.protocol import SignedFrame, parse_signed_frame
from tests.firmware_sim.conftest import MiniGateway, Serve

SCENARIO = """
name = "unit"
[fleet]
devices = 4
id_prefix = "f-"
keep_alive = {keep_alive}
gps = true
gps_center = [52.52, 13.405]
gps_radius_m = 200
[load]
rate = {rate}
duration_s = {duration}
deadline_s = 3
seed = 7
[events]
panic = 0.25
heartbeat = 0.75
[faults]
{faults}
"""


def scenario_text(*, rate: float = 40, duration: float = 0.5, keep_alive: bool = True, faults: str = "") -> str:
    return SCENARIO.format(rate=rate, duration=duration, keep_alive=str(keep_alive).lower(), faults=faults)


def test_a_fleet_is_enrolled_once_then_reused(tmp_path: Path, issue: Issuer) -> None:
    ids = ["f-0000", "f-0001"]
    first = Fleet.open(tmp_path, ids, issue=issue)
    assert first.enrolled == tuple(ids)
    first.wearables[0].heartbeat()
    again = Fleet.open(tmp_path, ids)  # no issuer needed: everyone is enrolled
    assert again.enrolled == ()
    assert [w.certificate for w in again.wearables] == [w.certificate for w in first.wearables]
    assert again.wearables[0].heartbeat() != b""
    assert again.wearables[0].counter > first.wearables[0].counter  # the fleet's counter block was reserved
    with pytest.raises(DeviceStateError, match="f-0002: device not enrolled, and no CA given"):
        Fleet.open(tmp_path, [*ids, "f-0002"])


def test_placement_keeps_every_device_within_the_radius(tmp_path: Path, issue: Issuer) -> None:
    fleet = Fleet.open(tmp_path, [f"g-{i}" for i in range(20)], issue=issue, counter_block=1)
    fleet.place((60.0, 25.0), 300.0, random.Random(1))
    for wearable in fleet.wearables:
        assert wearable.gps is not None
        north = (wearable.gps.lat - 60.0) * 111_320
        east = (wearable.gps.lon - 25.0) * 111_320 * math.cos(math.radians(60.0))
        assert math.hypot(north, east) <= 301


async def test_signals_start_on_the_timetable_however_slow_the_answers(
    tmp_path: Path, issue: Issuer, serve: Serve
) -> None:
    scenario = parse_scenario(scenario_text(rate=40, duration=0.5))
    fleet = Fleet.open(tmp_path, scenario.device_ids(), issue=issue)
    gateway = MiniGateway()
    for wearable in fleet.wearables:
        gateway.register(wearable)

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.4)  # far slower than the 25 ms between starts
        return await gateway.handle(request)

    url = await serve(slow)
    async with fleet_uplinks(url, fleet, ca_file=None, mtls=False, keep_alive=True) as uplink_for:
        report = await run_scenario(scenario, fleet, uplink_for)
    assert len(report.records) == 20 and report.ok
    assert [r.device_id for r in report.records[:5]] == ["f-0000", "f-0001", "f-0002", "f-0003", "f-0000"]
    assert max(r.lag_s for r in report.records) < 0.15  # open loop: nobody waited for an answer
    assert report.records[-1].due_s == pytest.approx(19 / 40)
    assert report.elapsed_s < 0.475 + 0.4 + 0.5  # the last start plus one slow answer, not 20 of them
    assert all(r.result.latency_s >= 0.4 for r in report.records)
    assert {r.kind for r in report.records} <= {"panic", "heartbeat"}
    for body in gateway.bodies:
        signed = parse_signed_frame(body)
        assert isinstance(signed, SignedFrame) and signed.frame.gps is not None
        assert abs(signed.frame.gps.lat - 52.52) < 0.01


async def test_faults_in_a_run_are_checked_against_their_expected_answers(
    tmp_path: Path, issue: Issuer, serve: Serve
) -> None:
    faults = "bad-signature = 0.2\nreplayed = 0.2\nduplicate = 0.1\ngarbage = 0.1\nunknown-device = 0.1"
    scenario = parse_scenario(scenario_text(rate=100, duration=0.4, keep_alive=False, faults=faults))
    fleet = Fleet.open(tmp_path, scenario.device_ids(), issue=issue)
    gateway = MiniGateway()
    for wearable in fleet.wearables[:3]:  # f-0003 is not registered: its normal signals must show as unexpected
        gateway.register(wearable)
    async with fleet_uplinks(
        await serve(gateway.handle), fleet, ca_file=None, mtls=False, keep_alive=False
    ) as uplink_for:
        report = await run_scenario(scenario, fleet, uplink_for)
    kinds = {r.kind for r in report.records}
    assert {"bad-signature", "replayed", "heartbeat"} <= kinds
    for record in report.records:
        registered = record.device_id != "f-0003" or record.kind in ("unknown-device", "garbage")
        assert record.ok == registered, record
    assert not report.ok
    assert report.outcomes()["403 unknown-device"] >= 1

    out = io.StringIO()
    report.render(Console(file=out, width=120, highlight=False))
    text = out.getvalue()
    for needle in ("unit: 40 signals from 4 devices", "answers", "by kind", "timing (ms)", "p99", "unexpected: #"):
        assert needle in text, text


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_an_empty_report_renders(tmp_path: Path) -> None:
    scenario = parse_scenario(scenario_text())
    out = io.StringIO()
    FleetReport(scenario, (), 0.0).render(Console(file=out, width=120))
    assert "0 signals" in out.getvalue()
