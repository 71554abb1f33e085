"""CommandCenterLink when things break: brokers of the test's own are stopped, killed and restarted by PID."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

import pytest
from structlog.testing import capture_logs

from gateway.commandcenter import LinkDown, LinkDownReason, alert_state_topic, gateway_status_topic, state_document
from gateway.commandcenter.link import CommandCenterLink
from tests.commandcenter.conftest import (
    WAIT_S,
    ConnectedCounter,
    LinkFactory,
    MosquittoProcess,
    command_center,
    eventually,
    json_of,
    make_view,
    next_message,
)

pytestmark = pytest.mark.mosquitto

HOST = "127.0.0.1"


async def connected(link: CommandCenterLink) -> None:
    async with asyncio.timeout(WAIT_S):
        await link.wait_connected()


async def test_reconnects_by_itself_after_the_broker_restarts(
    mosquitto: MosquittoProcess, make_link: LinkFactory
) -> None:
    counter = ConnectedCounter()
    with capture_logs() as logs:
        async with make_link(HOST, mosquitto.port, on_connected=counter) as link:
            await connected(link)
            assert counter.calls == 1

            await mosquitto.stop(signal.SIGTERM)
            await eventually(lambda: not link.is_connected)
            with pytest.raises(LinkDown) as raised:
                await link.publish_state(make_view())
            assert raised.value.reason is LinkDownReason.NOT_CONNECTED
            # While the broker is down, attempts fail and are retried (each logged once).
            await eventually(lambda: link.stats.connect_failures >= 2)

            await mosquitto.start()  # same port
            await connected(link)
            assert counter.calls == 2
            assert link.stats.connects == 2
            assert link.stats.connections_lost == 1
            await link.publish_state(make_view())
    events = [entry["event"] for entry in logs]
    assert events.count("commandcenter.connected") == 2
    assert events.count("commandcenter.connection_lost") == 1
    assert events.count("commandcenter.connect_failed") == link.stats.connect_failures


async def test_on_connected_restores_retained_state_a_killed_broker_lost(
    mosquitto: MosquittoProcess, make_link: LinkFactory, prefix: str
) -> None:
    view = make_view(revision=4)
    link: CommandCenterLink

    async def republish_open_alerts() -> None:
        await link.publish_state(view)

    link = make_link(HOST, mosquitto.port, on_connected=ConnectedCounter(action=republish_open_alerts))
    topic = alert_state_topic(prefix, view.alert_id)
    async with link:
        await connected(link)
        await mosquitto.stop(signal.SIGKILL)  # no persistence: every retained message is gone
        await eventually(lambda: not link.is_connected)
        await mosquitto.start()
        await connected(link)
        # Subscribed only now: the state can only come from the broker's retained store, refilled by on_connected.
        async with command_center(HOST, mosquitto.port, subscribe=topic) as cc:
            message = await next_message(cc, topic)
        assert message.retain
        assert json_of(message) == state_document(view)


async def test_a_publish_awaiting_its_puback_raises_link_down_when_the_connection_drops(
    mosquitto: MosquittoProcess, make_link: LinkFactory
) -> None:
    async with make_link(HOST, mosquitto.port, max_inflight=1) as link:
        await connected(link)
        mosquitto.pause()  # SIGSTOP: the socket stays open, no PUBACK comes
        on_the_wire = asyncio.create_task(link.publish_state(make_view()))
        waiting_for_a_slot = asyncio.create_task(link.publish_state(make_view()))
        # A few loop turns: the task queues its PUBLISH and aiomqtt registers the socket's writer, which
        # it does in a later turn (killing the broker before that makes asyncio log a harmless EBADF).
        for _ in range(3):
            await asyncio.sleep(0)
        assert not on_the_wire.done()
        assert not waiting_for_a_slot.done()
        await mosquitto.stop(signal.SIGKILL)  # the kernel resets the connection
        for publish in (on_the_wire, waiting_for_a_slot):
            with pytest.raises(LinkDown) as raised:
                async with asyncio.timeout(5):  # far below PUBLISH_TIMEOUT_S: the drop, not the timeout, ended it
                    await publish
            assert raised.value.reason is LinkDownReason.CONNECTION_LOST


_GATEWAY_PROCESS = """
import asyncio, sys
from gateway.commandcenter import CommandCenterLink
from gateway.config import MqttSettings

async def main() -> None:
    port, prefix, gateway_id = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    async def on_ack(ack):
        pass
    settings = MqttSettings(host="127.0.0.1", port=port, topic_prefix=prefix)
    async with CommandCenterLink(settings, gateway_id, on_ack=on_ack) as link:
        await link.wait_connected()
        print("READY", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_the_broker_publishes_the_last_will_when_the_gateway_process_dies(
    mosquitto: MosquittoProcess, prefix: str
) -> None:
    gateway_id = f"gw-{uuid.uuid4().hex[:8]}"
    topic = gateway_status_topic(prefix, gateway_id)
    async with command_center(HOST, mosquitto.port, subscribe=topic) as cc:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _GATEWAY_PROCESS,
            str(mosquitto.port),
            prefix,
            gateway_id,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert process.stdout is not None
            async with asyncio.timeout(30):  # interpreter start-up and imports
                while (line := await process.stdout.readline()) and line.strip() != b"READY":
                    pass
            assert line.strip() == b"READY", "the gateway process exited before connecting"
            assert json_of(await next_message(cc, topic))["status"] == "online"
            process.kill()  # SIGKILL to the PID we started: no clean DISCONNECT
            await process.wait()
            will = json_of(await next_message(cc, topic))
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert will["status"] == "offline"
    assert will["gateway_id"] == gateway_id
    async with command_center(HOST, mosquitto.port, subscribe=topic) as late:
        retained = await next_message(late, topic)
    assert retained.retain
    assert json_of(retained)["status"] == "offline"
