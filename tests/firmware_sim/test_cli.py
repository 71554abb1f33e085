"""The panic-sim command against the real gateway: one line per answer, exit codes, one-line errors, no tracebacks.

The commands run in this process (a worker thread with its own event loop) against the gateway on plain HTTP:
over HTTPS, a one-shot command's asyncio.run closes its loop before aiohttp has finished closing the TLS
connection, and the socket left behind fails whichever test is running when it is collected (filterwarnings =
error). One test runs the installed command over HTTPS with mTLS, as its own process.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_sim import FaultKind, VirtualWearable, enroll
from firmware_sim.cli import describe, main
from firmware_sim.transport import UplinkResult
from firmware_sim.wearable import Issuer
from gateway.app import RunningGateway
from gateway.config import HttpSettings
from gateway.identity.pki import PkiLayout
from gateway.store.models import Incident, Signal
from tests.firmware_sim.conftest import GatewayFactory, register, revoke

EXAMPLE = Path(__file__).parents[2] / "firmware-sim" / "scenarios" / "example.toml"
PANIC_SIM = Path(sys.executable).with_name("panic-sim")


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> AsyncIterator[RunningGateway]:
    """The real gateway on plain HTTP (see the module's docstring)."""
    async with gateway_factory(http=HttpSettings(port=0)) as running:
        yield running


async def run(*argv: str) -> int:
    # The CLI runs its own event loop in a worker thread; the test's loop keeps the gateway serving meanwhile.
    return await asyncio.to_thread(main, list(argv))


async def test_press_prints_the_incident_and_exits_0(
    gateway: RunningGateway, registered: VirtualWearable, capsys: pytest.CaptureFixture[str]
) -> None:
    device = ["--device-dir", str(registered.device_dir), "--url", gateway.http_url]
    assert await run("press", *device, "--gps", "48.85,2.29,15", "--battery", "64") == 0
    out = capsys.readouterr().out
    match = re.fullmatch(r"alert received: incident ([0-9a-f-]{36}) \(accepted\)\n", out)
    assert match, out
    incident = await Incident.get(id=match[1])
    assert (incident.event, incident.battery, incident.lat, incident.accuracy_m) == ("panic", 64, 48.85, 15)
    assert await run("heartbeat", *device) == 0
    assert capsys.readouterr().out == "heartbeat received (accepted)\n"
    assert await run("cancel", *device) == 0
    assert capsys.readouterr().out == f"cancel received (incident {match[1]}, accepted)\n"
    assert await run("test", *device) == 0
    assert re.fullmatch(r"alert received: incident [0-9a-f-]{36} \(accepted\)\n", capsys.readouterr().out)
    assert await run("press", *device, "--event", "fall", "--silent") == 0
    assert capsys.readouterr().out.startswith("alert received: incident ")
    signals = await Signal.filter(device_id=registered.device_id).order_by("counter")
    assert [signal.event for signal in signals] == ["panic", "heartbeat", "cancel", "test", "fall"]


async def test_the_installed_command_presents_the_device_certificate_over_https(
    gateway_factory: GatewayFactory, pki: PkiLayout, device_ca_issue: Issuer, tmp_path: Path
) -> None:
    http = HttpSettings(port=0, tls_cert=pki.server_cert, tls_key=pki.server_key, require_client_cert=True)
    wearable = enroll(tmp_path / "w-mtls", "w-mtls", device_ca_issue)
    async with gateway_factory(http=http) as gateway:
        await register(pki, wearable)
        process = await asyncio.create_subprocess_exec(
            PANIC_SIM,
            "press",
            "--device-dir",
            str(wearable.device_dir),
            "--url",
            gateway.http_url,
            "--ca",
            str(pki.root_ca_cert),
            "--mtls",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert re.fullmatch(r"alert received: incident [0-9a-f-]{36} \(accepted\)\n", out.decode()), out


async def test_a_refusal_is_one_line_and_exit_1(
    gateway: RunningGateway, wearable: VirtualWearable, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--device-dir", str(wearable.device_dir), "--url", gateway.http_url]
    assert await run("press", *argv) == 1  # a device the gateway never registered
    assert capsys.readouterr().out == "refused: unknown-device (403): device 'w-0001' is not registered\n"


async def test_fault_reports_whether_the_gateway_answered_as_expected(
    gateway: RunningGateway, registered: VirtualWearable, pki: PkiLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    device = ["--device-dir", str(registered.device_dir), "--url", gateway.http_url]
    for kind in FaultKind:
        if kind is not FaultKind.REVOKED:
            assert await run("fault", kind, *device) == 0, capsys.readouterr().out
            assert capsys.readouterr().out.startswith(f"fault {kind}: as expected: ")
    assert await run("fault", "replayed", *device, "--event", "panic") == 0
    assert capsys.readouterr().out.startswith("fault replayed: as expected: refused: replayed (409)")
    assert await run("fault", "revoked", *device) == 1  # the gateway was not told to revoke it yet
    assert capsys.readouterr().out.startswith("fault revoked: expected 403 revoked: heartbeat received (accepted)")
    await revoke(pki, registered.device_id)
    assert await run("fault", "revoked", *device) == 0
    assert capsys.readouterr().out.startswith("fault revoked: as expected: refused: revoked (403)")


def test_usage_errors_exit_2(wearable: VirtualWearable, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["press", "--url", "http://127.0.0.1:1"]) == 2
    assert "--device-dir" in capsys.readouterr().err
    bad_gps = ["press", "--device-dir", str(wearable.device_dir), "--url", "http://x", "--gps", "north"]
    assert main(bad_gps) == 2
    assert "is not LAT,LON,ACCURACY_M" in capsys.readouterr().err
    assert main(["fault", "meltdown", "--device-dir", "d", "--url", "http://x"]) == 2
    assert main([]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["press", "--device-dir", "/nonexistent/dev", "--url", "http://127.0.0.1:1"], "holds no enrolled device"),
        (
            ["fleet", "--scenario", "/nonexistent.toml", "--dir", "/tmp", "--url", "http://x"],
            "cannot read the scenario",
        ),
        (["enroll", "w-1", "--dir", "DIR", "--ca-dir", "/nonexistent/pki"], "no such certificate file"),
    ],
)
def test_errors_are_one_line_without_traceback(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / "dev") if a == "DIR" else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_a_wrong_url_is_an_error_not_a_traceback(wearable: VirtualWearable, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["heartbeat", "--device-dir", str(wearable.device_dir), "--url", "gateway:8443"]) == 1
    assert capsys.readouterr().err == "panic-sim: error: 'gateway:8443' is not an http:// or https:// URL\n"


async def test_fleet_runs_a_scenario_and_prints_the_summary(
    gateway: RunningGateway,
    pki: PkiLayout,
    device_ca_issue: Issuer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        "[fleet]\ndevices = 2\n[load]\nrate = 20\nduration_s = 0.3\nseed = 3\n[faults]\nduplicate = 0.3\n"
    )
    for device_id in ("sim-0000", "sim-0001"):
        await register(pki, enroll(tmp_path / "fleet" / device_id, device_id, device_ca_issue))
    argv = ["fleet", "--scenario", str(scenario), "--dir", str(tmp_path / "fleet")]
    assert await run(*argv, "--url", gateway.http_url) == 0
    out = capsys.readouterr().out
    assert "s: 6 signals from 2 devices" in out and "202 accepted" in out and "latency" in out, out
    assert "unexpected:" not in out
    assert await run(*argv) == 2
    assert "--url is required" in capsys.readouterr().err


def test_enroll_and_fleet_enrolment_use_the_gateway_device_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = pytest.importorskip("gateway.identity.pki")
    layout = pki.PkiLayout(tmp_path / "pki")
    pki.init_pki(layout)
    assert main(["enroll", "w-7", "--dir", str(tmp_path / "w-7"), "--ca-dir", str(layout.directory)]) == 0
    assert capsys.readouterr().out.startswith(f"enrolled w-7 in {tmp_path / 'w-7'}: serial 0x")
    device = VirtualWearable.load(tmp_path / "w-7")
    assert pki.device_id_of(device.certificate) == "w-7"
    device.certificate.verify_directly_issued_by(pki.load_certificate(layout.device_ca_cert))

    argv = ["fleet", "--scenario", str(EXAMPLE), "--dir", str(tmp_path / "fleet"), "--ca-dir", str(layout.directory)]
    assert main([*argv, "--enroll-only"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == str(tmp_path / "fleet" / "sim-0000" / "device.crt")
    assert len(captured.out.splitlines()) == 20 and "enrolled 20 new device(s)" in captured.err


def test_describe_says_alert_received_only_for_events_that_raise_an_incident() -> None:
    def result(event: str, incident: str | None, *, delayed: bool = False) -> UplinkResult:
        return UplinkResult(202, incident, "accepted", None, "", 1, 0.1, final=True, delayed=delayed, event=event)

    assert describe(result("panic", "i-1")) == "alert received: incident i-1 (accepted)"
    assert describe(result("fall", "i-1", delayed=True)) == "alert received: incident i-1 (accepted, delayed)"
    assert describe(result("cancel", "i-1")) == "cancel received (incident i-1, accepted)"
    assert describe(result("heartbeat", None)) == "heartbeat received (accepted)"
    gave_up = UplinkResult(503, None, None, "overloaded", "busy", 4, 30.0, final=False)
    assert describe(gave_up) == "no answer: gave up after 4 attempt(s) in 30.0 s: 503 overloaded: busy"
