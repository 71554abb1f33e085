"""This machine's raw limits, measured in the same run: ECDSA P-256 verification and MQTT QoS 1 through the broker."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import aiomqtt
import asyncpg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bench.observer import Observer
from bench.stats import percentiles
from gateway.protocol import AlertFrame, EventType, SignedFrame, parse_signed_frame, sign_frame, verify_signature
from gateway.protocol import const as protocol

#: About the size of an alert's state JSON, so the broker moves what the gateway's messages weigh.
PAYLOAD_BYTES: Final = 700
#: Publishes awaited at once in the pipelined run (the gateway's default max_inflight).
PIPELINE_INFLIGHT: Final = 256
#: How long the observer may take to receive the whole burst.
BURST_DRAIN_S: Final = 30.0
#: A round trip not back within this long counts as lost.
ROUND_TRIP_TIMEOUT_S: Final = 5.0


def ecdsa_verify_rate(seconds: float) -> dict[str, float]:
    """Verifications per second on this process's one core: raw `cryptography`, and the gateway's parse + verify."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    body = sign_frame(AlertFrame("bench-raw", 1, int(datetime.now(UTC).timestamp() * 1000), EventType.PANIC), key)
    signed = parse_signed_frame(body)
    assert isinstance(signed, SignedFrame)
    message = protocol.SIGNATURE_CONTEXT + signed.frame_bytes
    der = encode_dss_signature(
        int.from_bytes(signed.signature[:32], "big"), int.from_bytes(signed.signature[32:], "big")
    )
    algorithm = ec.ECDSA(hashes.SHA256())

    def loop_rate(step: Any) -> float:
        count, started = 0, time.perf_counter()
        deadline = started + seconds
        while True:
            for _ in range(100):
                step()
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - started)

    raw = loop_rate(lambda: public.verify(der, message, algorithm))

    def gateway_path() -> None:
        parsed = parse_signed_frame(body)
        assert isinstance(parsed, SignedFrame)
        assert verify_signature(parsed, public)

    path = loop_rate(gateway_path)
    return {"raw_verify_per_s": round(raw), "parse_and_verify_per_s": round(path)}


async def pg_commits(dsn: str, transactions: int) -> dict[str, Any]:
    """One-row INSERT transactions one after another: the floor under one group commit (a round trip and a WAL
    flush), on the same PostgreSQL as the gateway."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TEMP TABLE bench_commit (id bigserial PRIMARY KEY, note text)")
        latencies: list[float] = []
        started = time.perf_counter()
        for i in range(transactions):
            t = time.perf_counter()
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_commit (note) VALUES ($1)", f"row {i}")
            latencies.append((time.perf_counter() - t) * 1000)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return {"commit_ms": percentiles(latencies), "commits_per_s": round(transactions / elapsed)}


async def mqtt_limits(
    host: str, port: int, prefix: str, round_trips: int, pipelined: int, observer: Observer
) -> dict[str, Any]:
    """QoS 1 round trips (publish until a subscriber has it) one at a time, then a pipelined burst.

    The burst is received by the bench's observer process (the same subscriber that times the alerts): a
    subscriber in this process would fall behind its own publisher, and Mosquitto drops what a client has
    not taken once about 1,000 messages wait for it.
    """
    loop = asyncio.get_running_loop()
    rtt_topic = f"{prefix}/raw/rtt"
    waiting: dict[int, asyncio.Future[int]] = {}

    def on_rtt(client: Any, userdata: Any, message: Any) -> None:
        fut = waiting.pop(int(message.payload[:12]), None)
        if fut is not None and not fut.done():
            fut.set_result(time.monotonic_ns())

    tag = uuid.uuid4().hex[:8]
    async with (
        aiomqtt.Client(host, port, identifier=f"bench-raw-sub-{tag}") as sub,
        aiomqtt.Client(host, port, identifier=f"bench-raw-pub-{tag}", max_inflight_messages=PIPELINE_INFLIGHT) as pub,
    ):
        pub.pending_calls_threshold = PIPELINE_INFLIGHT * 2 + pipelined
        sub._client.message_callback_add(rtt_topic, on_rtt)
        await sub.subscribe(rtt_topic, qos=1)

        rtts: list[float] = []
        pubacks: list[float] = []
        lost = 0
        for i in range(round_trips):
            fut: asyncio.Future[int] = loop.create_future()
            waiting[i] = fut
            payload = f"{i:012d}".encode().ljust(PAYLOAD_BYTES, b"x")
            started = time.monotonic_ns()
            await pub.publish(rtt_topic, payload, qos=1)
            pubacks.append((time.monotonic_ns() - started) / 1e6)
            try:
                async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
                    arrived = await fut
            except TimeoutError:
                lost += 1
                continue
            rtts.append((arrived - started) / 1e6)

        slots = asyncio.Semaphore(PIPELINE_INFLIGHT)
        payload = b"x" * PAYLOAD_BYTES
        ids = [f"raw-{tag}-{i}" for i in range(pipelined)]

        async def one(alert_id: str) -> None:
            async with slots:
                await pub.publish(f"{prefix}/alerts/{alert_id}/state", payload, qos=1)

        started = time.monotonic_ns()
        await asyncio.gather(*(one(i) for i in ids))
        acked_s = (time.monotonic_ns() - started) / 1e9
    await observer.wait_for(set(ids), BURST_DRAIN_S)
    seen_ns = [observer.arrivals[i] for i in ids if i in observer.arrivals]
    received = len(seen_ns)
    delivered_s = (max(seen_ns) - started) / 1e9 if received == pipelined else float("nan")
    return {
        "round_trip_ms": percentiles(rtts),
        "puback_ms": percentiles(pubacks),
        "round_trips_lost": lost,
        "pipelined_messages": pipelined,
        "pipelined_publish_per_s": round(pipelined / acked_s),
        "pipelined_delivered_per_s": None if math.isnan(delivered_s) else round(pipelined / delivered_s),
        "pipelined_received": received,
        "payload_bytes": PAYLOAD_BYTES,
    }
