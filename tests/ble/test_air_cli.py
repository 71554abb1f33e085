"""`panic-sim air` runs virtual controllers that other processes reach over tcp-client transports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests import services


def test_air_command_exposes_each_node_and_stops_on_ctrl_c() -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_sim.cli",
            "air",
            "--nodes",
            "rx1=hq:0:0:0",
            "rx2=hq:1:4:2",
            "--background",
            "beacon=hq:0:3:3",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _check_exposed(proc)


def _check_exposed(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        exposed = json.loads(proc.stdout.readline())
        assert set(exposed) == {"rx1", "rx2"}
        for spec in exposed.values():
            host, port = spec.removeprefix("tcp-client:").rsplit(":", 1)
            assert host == "127.0.0.1"
            assert services.port_open(host, int(port))
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130


def test_air_command_refuses_a_bad_placement() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "firmware_sim.cli", "air", "--nodes", "nowhere"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith("'nowhere' is not NAME=SITE:FLOOR:X:Y")
    assert "Traceback" not in result.stderr
