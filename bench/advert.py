"""Micro-benchmark of the BLE advert hot path on one core: `python -m bench.advert`.

Measures, with 10,000 registered devices: building and rotating the ephemeral-id table, our adverts
through parse + resolve + tag check + decrypt, and foreign adverts (other UUIDs, garbage) refused.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

from gateway.core.ephemeral import EphemeralIdTable
from gateway.protocol import EventType
from gateway.protocol.advert import (
    AdvertKeys,
    AdvertSignal,
    ParsedAdvert,
    derive_advert_keys,
    encode_advert,
    open_advert,
    parse_advert,
)
from gateway.rejection import Rejection

#: Adverts per second one core must authenticate (a dense site: thousands of wearers, repeated adverts).
TARGET_ADVERTS_PER_S: Final = 20_000
NOW: Final = 1_963_584


def handle(data: bytes, table: EphemeralIdTable) -> AdvertSignal | Rejection | None:
    """The gateway's path for one received advert."""
    parsed = parse_advert(data)
    if not isinstance(parsed, ParsedAdvert):
        return parsed
    match = table.resolve(parsed.eid)
    if match is None:
        return None
    return open_advert(parsed, match.keys, match.window)


def _rate(adverts: Sequence[bytes], table: EphemeralIdTable, repeat: int) -> tuple[float, int]:
    best = 0.0
    accepted = 0
    for _ in range(repeat):
        started = time.perf_counter()
        results = [handle(a, table) for a in adverts]
        best = max(best, len(adverts) / (time.perf_counter() - started))
        accepted = sum(isinstance(r, AdvertSignal) for r in results)
    return best, accepted


def _timed(label: str, fn: Callable[[], object]) -> None:
    started = time.perf_counter()
    fn()
    print(f"{label:<44} {1000 * (time.perf_counter() - started):9.1f} ms")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.advert", description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--adverts", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement; the best is printed")
    args = parser.parse_args(argv)
    rng = random.Random(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    keys: list[AdvertKeys] = []
    _timed(
        f"derive keys of {args.devices:,} devices (HKDF)",
        lambda: keys.extend(
            derive_advert_keys(hashlib.sha256(b"%d" % i).digest(), f"wb-{i:05d}") for i in range(args.devices)
        ),
    )
    table = EphemeralIdTable(keys)
    _timed("build the table (3 windows)", lambda: table.rotate(NOW))
    _timed("rotate by one window", lambda: table.rotate(NOW + 1))
    table.rotate(NOW)

    ours = [
        encode_advert(
            rng.choice(keys),
            rng.randrange(2**32),
            rng.choice(list(EventType)),
            rng.randrange(101),
            NOW + rng.choice((-1, 0, 1)),
        )
        for _ in range(args.adverts)
    ]
    rate, accepted = _rate(ours, table, args.repeat)
    assert accepted == len(ours)
    verdict = "ok" if rate >= TARGET_ADVERTS_PER_S else "MISSED"
    print(f"{'ours: parse+resolve+verify+decrypt':<44} {rate:9,.0f} /s  (target {TARGET_ADVERTS_PER_S:,}: {verdict})")

    stranger = derive_advert_keys(bytes(32), "stranger")
    unknown = [encode_advert(stranger, i, EventType.PANIC, 50, NOW) for i in range(args.adverts)]
    rate, accepted = _rate(unknown, table, args.repeat)
    assert accepted == 0
    print(f"{'ours, unknown ephemeral id (dropped)':<44} {rate:9,.0f} /s")

    forged = [a[:-1] + bytes((a[-1] ^ 1,)) for a in ours]
    rate, accepted = _rate(forged, table, args.repeat)
    assert accepted == 0
    print(f"{'ours, forged tag (bad-signature)':<44} {rate:9,.0f} /s")

    ibeacon = bytes.fromhex("0201061aff4c000215") + rng.randbytes(16) + bytes.fromhex("00010002c5")
    eddystone = bytes.fromhex("0201060303aafe1116aafe10eb0367676c2e636f6d2f78797a")
    foreign = [ibeacon, eddystone] * (args.adverts // 4) + [
        rng.randbytes(rng.randrange(32)) for _ in range(args.adverts // 2)
    ]
    rate, accepted = _rate(foreign, table, args.repeat)
    assert accepted == 0
    print(f"{'foreign (iBeacon, Eddystone, random bytes)':<44} {rate:9,.0f} /s")


if __name__ == "__main__":
    main()
