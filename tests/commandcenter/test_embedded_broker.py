"""EmbeddedBroker: an in-process amqtt broker that aiomqtt clients and the link can use (the demo's broker)."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest

from gateway.commandcenter import (
    Acknowledgement,
    CommandCenterLink,
    EmbeddedBroker,
    alert_ack_topic,
    alert_state_topic,
    state_document,
)
from gateway.config import MqttSettings
from tests.commandcenter.conftest import WAIT_S, AckSink, free_port, make_view, next_message, port_accepts


async def test_retained_publish_reaches_a_later_subscriber() -> None:
    async with EmbeddedBroker() as broker:
        assert broker.port > 0
        async with aiomqtt.Client(broker.host, broker.port) as publisher:
            await publisher.publish("demo/a/state", b'{"revision":1}', qos=1, retain=True)
        async with aiomqtt.Client(broker.host, broker.port) as subscriber:
            await subscriber.subscribe("demo/+/state", qos=1)
            message = await next_message(subscriber)
    assert message.topic.value == "demo/a/state"
    assert message.payload == b'{"revision":1}'
    assert message.retain


async def test_live_messages_flow_between_clients() -> None:
    async with (
        EmbeddedBroker() as broker,
        aiomqtt.Client(broker.host, broker.port) as subscriber,
        aiomqtt.Client(broker.host, broker.port) as publisher,
    ):
        await subscriber.subscribe("demo/#", qos=1)
        await publisher.publish("demo/x", b"1", qos=1)
        message = await next_message(subscriber, "demo/x")
    assert message.payload == b"1"
    assert not message.retain


async def test_a_requested_port_is_used_and_released() -> None:
    port = free_port()
    async with EmbeddedBroker(port) as broker:
        assert broker.port == port
        # An MQTT client, not a bare TCP probe: amqtt 0.12 never closes a connection that sends no CONNECT.
        async with aiomqtt.Client("127.0.0.1", port):
            pass
    assert not await port_accepts("127.0.0.1", port)
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.port


async def test_the_link_speaks_the_contract_through_it() -> None:
    sink = AckSink()
    view = make_view()
    async with EmbeddedBroker() as broker:
        settings = broker.settings_for(MqttSettings(host="embedded", tls=False, topic_prefix="demo/panic/v1"))
        assert (settings.host, settings.port, settings.topic_prefix) == ("127.0.0.1", broker.port, "demo/panic/v1")
        async with CommandCenterLink(settings, "gw-demo", on_ack=sink) as link:
            async with asyncio.timeout(WAIT_S):
                await link.wait_connected()
            await link.publish_state(view)
            topic = alert_state_topic(settings.topic_prefix, view.alert_id)
            async with aiomqtt.Client(broker.host, broker.port) as console:
                await console.subscribe(topic, qos=1)
                message = await next_message(console, topic)
                assert isinstance(message.payload, bytes)
                assert json.loads(message.payload) == state_document(view)
                await console.publish(
                    alert_ack_topic(settings.topic_prefix, view.alert_id), b'{"operator": "demo"}', qos=1
                )
                assert await sink.wait_for(1) == [Acknowledgement(view.alert_id, "demo", None)]
