"""Broker hygiene: the bench leaves no retained messages and no persistent session on the shared Mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any, Final

import aiomqtt

#: Retained messages arrive right after the SUBACK; this long without a new one means the pass is over.
QUIET_S: Final = 1.0
#: Clearing publishes awaited at once (QoS 1, so each is confirmed).
CLEAR_INFLIGHT: Final = 256
#: Mosquitto drops messages for a client that has more than 1,000 waiting, so one subscription may not
#: show every retained message: look again until a pass finds none (or give up after this many).
MAX_PASSES: Final = 10


async def clear_prefix(host: str, port: int, prefix: str, known: Iterable[str] = ()) -> int:
    """Delete every retained message under `prefix/` (empty retained payloads); return how many topics.

    `known` topics are cleared first without having to be seen; then subscription passes find the rest.
    """
    cleared: set[str] = set()
    async with aiomqtt.Client(
        host, port, identifier=f"bench-clean-{uuid.uuid4().hex[:8]}", max_inflight_messages=CLEAR_INFLIGHT
    ) as client:
        client.pending_calls_threshold = CLEAR_INFLIGHT + 1  # aiomqtt warns above 10 pending; we pipeline on purpose
        slots = asyncio.Semaphore(CLEAR_INFLIGHT)

        async def clear(topic: str) -> None:
            async with slots:
                await client.publish(topic, b"", qos=1, retain=True)

        async def clear_all(topics: set[str]) -> None:
            await asyncio.gather(*(clear(t) for t in topics))
            cleared.update(topics)

        await clear_all(set(known))
        for _ in range(MAX_PASSES):
            found = await _retained_topics(client, prefix)
            if not found:
                break
            await clear_all(found)
    return len(cleared)


async def _retained_topics(client: aiomqtt.Client, prefix: str) -> set[str]:
    """One subscription pass: the topics under `prefix/` that hold a retained message."""
    found: set[str] = set()
    topic_filter = f"{prefix}/#"

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        # A paho callback per filter: cheap enough to keep up with thousands of retained messages a second.
        if message.retain and message.payload:
            found.add(message.topic)

    client._client.message_callback_add(topic_filter, on_message)
    try:
        await client.subscribe(topic_filter, qos=0)
        seen = -1
        while seen != len(found):
            seen = len(found)
            await asyncio.sleep(QUIET_S)
        await client.unsubscribe(topic_filter)
    finally:
        client._client.message_callback_remove(topic_filter)
    return found


async def end_session(host: str, port: int, client_id: str) -> None:
    """Connect once with a clean session under `client_id`: the broker drops the persistent session it kept."""
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True):
        pass
