"""Where the two cores went during a run: CPU seconds per process group, read from /proc (Linux)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_TICK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
GROUPS: Final = ("gateway", "postgres", "mosquitto", "bench", "other")


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds used so far, per group, and the machine's busy seconds, at a monotonic time."""

    at: float
    by_group: dict[str, float]
    machine_busy: float
    #: CPU seconds of each process outside the known groups: (pid, name) -> seconds.
    others: dict[tuple[int, str], float]


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def _machine_busy() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


class CpuMeter:
    """Takes snapshots; `cores(a, b)` says how many cores each group used on average between them."""

    def __init__(self, gateway_pid: int) -> None:
        self._gateway = gateway_pid
        self._bench = os.getpid()

    def available(self) -> bool:
        return Path("/proc/stat").exists()

    def snapshot(self) -> CpuSnapshot | None:
        if not self.available():
            return None
        procs = _processes()
        by_group = dict.fromkeys(GROUPS, 0.0)
        others: dict[tuple[int, str], float] = {}
        for pid, (_, name, seconds) in procs.items():
            group = self._group(pid, name, procs)
            by_group[group] += seconds
            if group == "other":
                others[(pid, name)] = seconds
        return CpuSnapshot(time.monotonic(), by_group, _machine_busy(), others)

    def _group(self, pid: int, name: str, procs: dict[int, tuple[int, str, float]]) -> str:
        if pid == self._gateway:
            return "gateway"
        if name.startswith("postgres"):
            return "postgres"
        if name.startswith("mosquitto"):
            return "mosquitto"
        seen = 0
        while pid > 1 and seen < 64:  # walk up: the bench's own children (observer, flood, signers)
            if pid == self._bench:
                return "bench"
            pid = procs.get(pid, (0, "", 0.0))[0]
            seen += 1
        return "other"

    @staticmethod
    def cores(a: CpuSnapshot | None, b: CpuSnapshot | None) -> dict[str, float]:
        if a is None or b is None or b.at <= a.at:
            return {}
        wall = b.at - a.at
        used = {g: round((b.by_group[g] - a.by_group[g]) / wall, 2) for g in GROUPS}
        used["machine"] = round((b.machine_busy - a.machine_busy) / wall, 2)
        # Short-lived processes (other sessions' tests) take their CPU time with them when they exit, so
        # "other" is what the machine did beyond the groups we can follow.
        known = sum(used[g] for g in GROUPS if g != "other")
        used["other"] = round(max(0.0, used["machine"] - known), 2)
        return used

    @staticmethod
    def busiest_others(a: CpuSnapshot | None, b: CpuSnapshot | None, top: int = 3) -> list[str]:
        """The processes outside the bench that used the most CPU between two snapshots ("pytest 0.71")."""
        if a is None or b is None or b.at <= a.at:
            return []
        wall = b.at - a.at
        used = sorted(((s - a.others.get(k, 0.0)) / wall, k[1]) for k, s in b.others.items())
        return [f"{name} {cores:.2f}" for cores, name in reversed(used[-top:]) if cores >= 0.05]
