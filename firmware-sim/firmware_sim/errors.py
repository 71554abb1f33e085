"""Errors of the firmware simulator.

SimError                     base of everything the simulator raises on purpose
 +-- DeviceStateError        a device directory is missing, incomplete or corrupt, or its counter is exhausted (.path)
 +-- EnrollmentError         a device cannot be enrolled: already enrolled, or the issuer's certificate is unusable
 +-- ScenarioError           a scenario file is invalid (.problems: list of "field: message")

What the gateway answers is not an exception: it is a firmware_sim.transport.UplinkResult value.
"""

from __future__ import annotations

from pathlib import Path


class SimError(Exception):
    """Base of all simulator errors."""


class DeviceStateError(SimError):
    """A device directory cannot be used; `path` names the file or directory at fault."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class EnrollmentError(SimError):
    """A device cannot be enrolled."""


class ScenarioError(SimError):
    """A scenario file is invalid; `problems` lists each as 'field: message'."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems

    def __str__(self) -> str:
        head = super().__str__()
        return "; ".join([head, *self.problems]) if self.problems else head
