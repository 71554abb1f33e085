"""`panic-sim fleet` with BLE wearables, from the command line, against a real gateway with its receivers.

Two ways QA runs it: the fleet's own in-process air (it prints `[[ble.receivers]]` for the gateway and starts once
the gateway scans on them), and `ble.transports` into the air that `panic-sim air` runs in another process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from firmware_sim import Fleet
from firmware_sim.cli import EXIT_FAILED, EXIT_OK
from firmware_sim.scenario import load_scenario
from firmware_sim.wearable import Issuer
from gateway.config import BleSettings, HttpSettings, ReceiverSettings
from gateway.identity.pki import PkiLayout
from tests import services
from tests.conftest import observe
from tests.firmware_sim.conftest import GatewayFactory, register

#: 2 wearables: fc-0000 over HTTPS, fc-0001 over BLE; 4 presses in 2 s, round robin.
SCENARIO: Final = """
name = "fleet-cli"
[fleet]
devices = 2
id_prefix = "fc-"
ble_share = 0.5
[load]
rate = 2
duration_s = 2
deadline_s = 10
seed = 3
[events]
panic = 1
[ble]
heartbeat_interval_ms = 200
"""
IN_PROCESS_AIR: Final = """receivers = { rx-door = [0.0, 0.0], rx-desk = [8.0, 0.0] }
site = "lab"
area_m = 8
"""
#: What the fleet prints once the gateway listens on every receiver of its air.
LISTENING: Final = "the gateway listens on every receiver"
WAIT_S: Final = 30.0


async def enrolled_fleet(
    scenario_file: Path, fleet_dir: Path, pki: PkiLayout, issue: Issuer, gateway_factory: GatewayFactory
) -> None:
    """Enrol the scenario's wearables (as `panic-sim fleet --ca-dir` would) and register them in the gateway's
    database (as `panic-gateway devices add` would, before the gateway that the test watches starts)."""
    fleet = Fleet.open(fleet_dir, load_scenario(scenario_file).device_ids(), issue=issue)
    async with gateway_factory():
        for wearable in fleet.wearables:
            await register(pki, wearable)


@asynccontextmanager
async def panic_sim(*argv: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`panic-sim ARGV` in its own process; killed on exit if it is still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_sim.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def read_receivers(stderr: asyncio.StreamReader) -> tuple[list[ReceiverSettings], list[str]]:
    """The `[[ble.receivers]]` TOML the fleet prints, parsed as the gateway parses it, and the lines read."""
    lines: list[str] = []
    while True:
        line = (await stderr.readline()).decode()
        assert line, "panic-sim fleet ended before printing its receivers:\n" + "".join(lines)
        lines.append(line)
        if line.startswith("waiting up to"):
            break
    toml = "".join(line for line in lines if not line.startswith(("waiting", "enrolled")))
    table = tomllib.loads(toml)
    return [ReceiverSettings(**entry) for entry in table["ble"]["receivers"]], lines


async def test_fleet_command_starts_once_the_gateway_scans_on_its_air_and_every_press_is_acknowledged(
    gateway_factory: GatewayFactory, pki: PkiLayout, device_ca_issue: Issuer, tmp_path: Path
) -> None:
    scenario = tmp_path / "fleet.toml"
    scenario.write_text(SCENARIO + IN_PROCESS_AIR)
    await enrolled_fleet(scenario, tmp_path / "fleet", pki, device_ca_issue, gateway_factory)
    http = HttpSettings(port=services.free_port(), tls_cert=pki.server_cert, tls_key=pki.server_key)
    url = f"https://127.0.0.1:{http.port}"
    argv = ["fleet", "--scenario", str(scenario), "--dir", str(tmp_path / "fleet"), "--url", url]
    argv += ["--ca", str(pki.root_ca_cert), "--ca-dir", str(pki.directory)]

    async with panic_sim(*argv) as fleet_proc:
        assert fleet_proc.stderr is not None and fleet_proc.stdout is not None
        receivers, _ = await asyncio.wait_for(read_receivers(fleet_proc.stderr), WAIT_S)
        assert [(r.name, r.site, r.x, r.y) for r in receivers] == [("rx-door", "lab", 0, 0), ("rx-desk", "lab", 8, 0)]
        ble = BleSettings(receivers=receivers, restart_min_s=0.1, restart_max_s=0.5)
        async with gateway_factory(http=http, ble=ble) as gateway, observe(gateway.settings.mqtt.topic_prefix) as obs:
            stdout, stderr = await asyncio.wait_for(fleet_proc.communicate(), WAIT_S * 2)
            await obs.wait_for(lambda o: len(o.states) == 4, WAIT_S)

    assert fleet_proc.returncode == EXIT_OK, stdout.decode() + stderr.decode()
    assert LISTENING in stderr.decode()
    summary = stdout.decode()
    assert "by transport" in summary and "help is coming" in summary, summary
    by_transport = sorted((s["transport"], s["device"]["id"]) for s in obs.states.values())
    assert by_transport == [("ble", "fc-0001"), ("ble", "fc-0001"), ("https", "fc-0000"), ("https", "fc-0000")]


async def test_fleet_command_gives_up_clearly_when_no_gateway_scans(
    pki: PkiLayout, device_ca_issue: Issuer, tmp_path: Path
) -> None:
    scenario = tmp_path / "fleet.toml"
    scenario.write_text(SCENARIO + IN_PROCESS_AIR)
    Fleet.open(tmp_path / "fleet", load_scenario(scenario).device_ids(), issue=device_ca_issue)
    argv = ["fleet", "--scenario", str(scenario), "--dir", str(tmp_path / "fleet"), "--url", "https://127.0.0.1:1"]
    argv += ["--ca-dir", str(pki.directory), "--ble-wait", "0.5"]

    async with panic_sim(*argv) as fleet_proc:
        stdout, stderr = await asyncio.wait_for(fleet_proc.communicate(), WAIT_S)

    assert fleet_proc.returncode == EXIT_FAILED
    last = stderr.decode().strip().splitlines()[-1]
    assert last == (
        "panic-sim fleet: error: no gateway scans on receiver(s) rx-door, rx-desk after 0.5 s: "
        "start it with the [[ble.receivers]] above"
    )
    assert stdout == b""  # nothing was sent: no summary


async def test_fleet_command_drives_ble_wearables_on_the_air_of_panic_sim_air(
    gateway_factory: GatewayFactory, pki: PkiLayout, device_ca_issue: Issuer, tmp_path: Path
) -> None:
    nodes = ["rx-hall=lab:0:0:0", "fc-0001=lab:0:3:4"]  # the wearable stands 5 m from the receiver
    async with panic_sim("air", "--nodes", *nodes, "--seed", "1") as air_proc:
        assert air_proc.stdout is not None
        exposed = json.loads(await asyncio.wait_for(air_proc.stdout.readline(), WAIT_S))
        scenario = tmp_path / "fleet.toml"
        scenario.write_text(SCENARIO + f'transports = ["{exposed["fc-0001"]}"]\n')
        await enrolled_fleet(scenario, tmp_path / "fleet", pki, device_ca_issue, gateway_factory)
        receiver = ReceiverSettings(name="rx-hall", transport=exposed["rx-hall"], site="lab")
        ble = BleSettings(receivers=[receiver], restart_min_s=0.1, restart_max_s=0.5)
        async with gateway_factory(ble=ble) as gateway, observe(gateway.settings.mqtt.topic_prefix) as obs:
            await obs.wait_for(lambda o: o.status.get("rx-hall", {}).get("status") == "up", WAIT_S)
            argv = ["fleet", "--scenario", str(scenario), "--dir", str(tmp_path / "fleet"), "--url", gateway.http_url]
            argv += ["--ca", str(pki.root_ca_cert), "--ca-dir", str(pki.directory)]
            async with panic_sim(*argv) as fleet_proc:
                stdout, stderr = await asyncio.wait_for(fleet_proc.communicate(), WAIT_S * 2)
            await obs.wait_for(lambda o: len(o.states) == 4, WAIT_S)

    assert fleet_proc.returncode == EXIT_OK, stdout.decode() + stderr.decode()
    assert "[[ble.receivers]]" not in stderr.decode()  # nothing to print: the air is another process's
    ble_states = [s for s in obs.states.values() if s["transport"] == "ble"]
    assert [s["device"]["id"] for s in ble_states] == ["fc-0001", "fc-0001"]
