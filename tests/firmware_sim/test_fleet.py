"""Fleets: enrolled once and reused, driven open loop on a timetable against the real gateway, summarised."""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import pytest
from rich.console import Console

from firmware_sim import DeviceStateError, Fleet, FleetReport, fleet_uplinks, parse_scenario, run_scenario
from firmware_sim.fleet import percentile
from firmware_sim.wearable import Issuer
from gateway.app import RunningGateway
from gateway.config import HttpSettings
from gateway.identity.pki import PkiLayout
from gateway.protocol import AlertFrame, decode_frame
from gateway.store.models import Signal
from tests.firmware_sim.conftest import GatewayFactory, SlowLink, register, revoke

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
deadline_s = {deadline}
seed = 7
[events]
panic = 0.25
heartbeat = 0.75
[faults]
{faults}
"""


#: Every fault a scenario may hold (revoked needs the gateway told: see test_faults and test_cli).
FAULTS = """
bad-signature = 0.1
replayed = 0.1
duplicate = 0.1
unknown-device = 0.05
clock-skew = 0.05
truncated = 0.05
garbage = 0.05
wrong-content-type = 0.05
oversized = 0.05
"""


def scenario_text(
    *, rate: float = 40, duration: float = 0.5, keep_alive: bool = True, faults: str = "", deadline: float = 3
) -> str:
    return SCENARIO.format(
        rate=rate, duration=duration, keep_alive=str(keep_alive).lower(), faults=faults, deadline=deadline
    )


#: Long enough for a wearable to come back after a 503 "overloaded" (Retry-After 10 s for chatter): a loaded
#: 2-core machine may shed a burst of 100 new TLS connections a second, which is not what these tests are about.
PATIENT_S = 15


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


#: How long the slow link holds each request: far beyond any scheduling delay, so open and closed loops differ.
SLOW_S = 1.0


async def test_signals_start_on_the_timetable_however_slow_the_answers(
    gateway_factory: GatewayFactory, pki: PkiLayout, device_ca_issue: Issuer, tmp_path: Path
) -> None:
    scenario = parse_scenario(scenario_text(rate=40, duration=0.5))
    fleet = Fleet.open(tmp_path, scenario.device_ids(), issue=device_ca_issue)
    # Plain HTTP, so that the slow link delays each request once (over TLS it would delay the handshake too).
    async with gateway_factory(http=HttpSettings(port=0)) as gateway, SlowLink(gateway.http_url, SLOW_S) as link:
        for wearable in fleet.wearables:
            await register(pki, wearable)
        async with fleet_uplinks(link.url, fleet, ca_file=None, mtls=False, keep_alive=True) as uplink_for:
            report = await run_scenario(scenario, fleet, uplink_for)
        stored = [decode_frame(signal.frame) for signal in await Signal.all()]
    assert len(report.records) == 20 and report.ok, report.outcomes()
    assert [r.device_id for r in report.records[:5]] == ["f-0000", "f-0001", "f-0002", "f-0003", "f-0000"]
    # Open loop: nobody waited for an answer (a closed loop would lag by 1 s, the slow answer, and more). The
    # bound leaves a loaded 2-core machine room for scheduling delays.
    assert max(r.lag_s for r in report.records) < SLOW_S * 0.6
    assert report.records[-1].due_s == pytest.approx(19 / 40)
    assert report.elapsed_s < 0.475 + SLOW_S + 0.5  # the last start plus one slow answer, not 20 of them
    assert all(r.result.latency_s >= SLOW_S for r in report.records)
    assert {r.kind for r in report.records} <= {"panic", "heartbeat"}
    assert len(stored) == 20  # every signal reached the gateway's database...
    for frame in stored:
        assert isinstance(frame, AlertFrame) and frame.gps is not None  # ...with the place the fleet gave it
        assert abs(frame.gps.lat - 52.52) < 0.01


async def test_faults_in_a_run_get_their_expected_answers_from_the_gateway(
    gateway: RunningGateway, pki: PkiLayout, device_ca_issue: Issuer, tmp_path: Path
) -> None:
    scenario = parse_scenario(
        scenario_text(rate=100, duration=0.4, keep_alive=False, faults=FAULTS, deadline=PATIENT_S)
    )
    fleet = Fleet.open(tmp_path, scenario.device_ids(), issue=device_ca_issue)
    for wearable in fleet.wearables:
        await register(pki, wearable)
    async with fleet_uplinks(
        gateway.http_url, fleet, ca_file=pki.root_ca_cert, mtls=False, keep_alive=False
    ) as uplink_for:
        report = await run_scenario(scenario, fleet, uplink_for)
    unexpected = [(r.kind, str(r.expected), r.result.label, r.result.detail) for r in report.records if not r.ok]
    assert report.ok, unexpected
    kinds = {r.kind for r in report.records}
    assert {"bad-signature", "replayed", "duplicate", "unknown-device", "heartbeat"} <= kinds, kinds
    assert report.outcomes()["409 replayed"] == sum(r.kind == "replayed" for r in report.records)

    # The gateway now refuses f-0003: the summary lists its signals as unexpected answers.
    await revoke(pki, "f-0003")
    again = parse_scenario(scenario_text(rate=40, duration=0.2, deadline=PATIENT_S))
    async with fleet_uplinks(
        gateway.http_url, fleet, ca_file=pki.root_ca_cert, mtls=False, keep_alive=True
    ) as uplink_for:
        report = await run_scenario(again, fleet, uplink_for)
    for record in report.records:
        assert record.ok == (record.device_id != "f-0003"), record
    assert not report.ok and report.outcomes()["403 revoked"] == 2

    out = io.StringIO()
    report.render(Console(file=out, width=120, highlight=False))
    text = out.getvalue()
    for needle in (
        "unit: 8 signals from 4 devices",
        "answers",
        "by kind",
        "timing (ms)",
        "p99",
        "unexpected: #3 f-0003",
    ):
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
