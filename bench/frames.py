"""Frames to send, made before the clock starts: signed panics and heartbeats, and invalid bodies for the flood.

Signing (one ECDSA P-256 signature per frame) is spread over a pool of worker processes; each device
signs with its own key and strictly increasing counters, dealt round-robin over the fleet so that no
device's frames can arrive further out of order than its replay window allows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.testbed import BenchDevice
from gateway.protocol import AlertFrame, EventType, encode_frame, sign_frame
from gateway.store.incidents import incident_id_for

#: Frames per task handed to a signing worker: large enough that pickling is negligible.
CHUNK: Final = 2000
#: Battery level in generated frames (any valid value; the gateway stores it).
BATTERY: Final = 87
#: Distinct invalid bodies; the flood cycles through them (the gateway caches nothing about refusals).
INVALID_POOL: Final = 4000

PANIC: Final = "panic"
HEARTBEAT: Final = "heartbeat"


@dataclass(frozen=True, slots=True)
class Shot:
    """One planned request.

    body: the signed frame.
    kind: "panic" or "heartbeat".
    alert_id: the incident id a panic will get (uuid5 of device and counter); None for a heartbeat.
    """

    body: bytes
    kind: str
    alert_id: str | None


_worker_keys: list[ec.EllipticCurvePrivateKey] = []
_worker_ids: list[str] = []


def _load_keys(devices: Sequence[tuple[str, bytes]]) -> None:
    """Signing worker initializer: load every device key once."""
    for device_id, pem in devices:
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        _worker_ids.append(device_id)
        _worker_keys.append(key)


def _sign_chunk(plan: Sequence[tuple[int, int, int]], timestamp_ms: int) -> list[bytes]:
    return [
        sign_frame(
            AlertFrame(_worker_ids[d], counter, timestamp_ms, EventType(event), battery=BATTERY), _worker_keys[d]
        )
        for d, counter, event in plan
    ]


class FrameFactory:
    """Plans and signs frames for the enrolled fleet; `async with` owns the signing workers."""

    def __init__(self, devices: Sequence[BenchDevice], seed: int = 1) -> None:
        self._devices = list(devices)
        self._counters = [0] * len(self._devices)
        self._cursor = 0
        self._rng = random.Random(seed)
        workers = max(1, min(os.cpu_count() or 1, 4))
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load_keys,
            initargs=([(d.device_id, d.key_pem) for d in self._devices],),
        )

    async def __aenter__(self) -> FrameFactory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _plan(self, count: int, heartbeat_share: float) -> list[tuple[int, int, int]]:
        plan = []
        n = len(self._devices)
        for _ in range(count):
            d = self._cursor
            self._cursor = (self._cursor + 1) % n
            self._counters[d] += 1
            heartbeat = heartbeat_share > 0 and self._rng.random() < heartbeat_share
            plan.append((d, self._counters[d], int(EventType.HEARTBEAT if heartbeat else EventType.PANIC)))
        return plan

    async def shots(self, count: int, heartbeat_share: float = 0.0) -> tuple[list[Shot], float]:
        """`count` signed frames (timestamped now) and the seconds it took to sign them."""
        started = time.perf_counter()
        plan = self._plan(count, heartbeat_share)
        timestamp_ms = int(datetime.now(UTC).timestamp() * 1000)
        loop = asyncio.get_running_loop()
        chunks = [plan[i : i + CHUNK] for i in range(0, len(plan), CHUNK)]
        signed = await asyncio.gather(
            *(loop.run_in_executor(self._pool, _sign_chunk, chunk, timestamp_ms) for chunk in chunks)
        )
        shots = []
        for chunk, bodies in zip(chunks, signed, strict=True):
            for (d, counter, event), body in zip(chunk, bodies, strict=True):
                if event == EventType.PANIC:
                    shots.append(Shot(body, PANIC, incident_id_for(self._devices[d].device_id, counter)))
                else:
                    shots.append(Shot(body, HEARTBEAT, None))
        return shots, time.perf_counter() - started

    def invalid_bodies(self, bad_signature_share: float) -> list[bytes]:
        """Garbage (refused by the parser) and well-formed frames of enrolled devices with random signatures
        (each costs the gateway a full ECDSA verification before it is refused)."""
        bodies = []
        timestamp_ms = int(datetime.now(UTC).timestamp() * 1000)
        for _ in range(INVALID_POOL):
            if self._rng.random() < bad_signature_share:
                device = self._rng.choice(self._devices)
                frame = AlertFrame(device.device_id, self._rng.randrange(1, 2**31), timestamp_ms, EventType.PANIC)
                bodies.append(encode_frame(frame) + self._rng.randbytes(64))
            else:
                bodies.append(self._rng.randbytes(self._rng.randrange(16, 200)))
        return bodies
