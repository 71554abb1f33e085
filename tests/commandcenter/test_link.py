"""CommandCenterLink against the machine's Mosquitto (127.0.0.1:1883), one topic prefix per test."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from structlog.testing import capture_logs

from gateway.commandcenter import (
    Acknowledgement,
    AckRejectReason,
    AlertEventType,
    LinkDown,
    LinkDownReason,
    alert_ack_topic,
    alert_events_topic,
    alert_state_topic,
    gateway_status_topic,
    state_document,
)
from gateway.commandcenter.link import CommandCenterLink, reconnect_delay
from gateway.config import MqttSettings
from gateway.core.incident import AlertState
from tests.commandcenter.conftest import (
    WAIT_S,
    AckSink,
    ConnectedCounter,
    LinkFactory,
    command_center,
    eventually,
    free_port,
    json_of,
    make_view,
    next_message,
)

pytestmark = pytest.mark.mosquitto

Broker = tuple[str, int]


async def connected(link: CommandCenterLink) -> None:
    async with asyncio.timeout(WAIT_S):
        await link.wait_connected()


async def test_state_is_retained_for_a_late_subscriber(
    shared_broker: Broker, make_link: LinkFactory, prefix: str
) -> None:
    view = make_view(revision=2, state=AlertState.NOTIFYING)
    async with make_link(*shared_broker) as link:
        await connected(link)
        await link.publish_state(view)
    # Subscribed after the publish (and after the link left): the broker hands over the retained copy.
    topic = alert_state_topic(prefix, view.alert_id)
    async with command_center(*shared_broker, subscribe=topic) as cc:
        message = await next_message(cc, topic)
    assert message.retain
    assert message.qos == 1
    assert json_of(message) == state_document(view)


async def test_events_are_not_retained(shared_broker: Broker, make_link: LinkFactory, prefix: str) -> None:
    topic = alert_events_topic(prefix, "al-1")
    async with make_link(*shared_broker) as link, command_center(*shared_broker, subscribe=topic) as live:
        await connected(link)
        await link.publish_event(
            event_id="al-1:1", alert_id="al-1", revision=1, event_type=AlertEventType.RAISED, at=make_view().received_at
        )
        message = await next_message(live, topic)
        assert not message.retain
        assert json_of(message)["event_id"] == "al-1:1"
    # A late subscriber gets nothing on the events topic: only the sentinel published after subscribing.
    sentinel = f"{prefix}/alerts/al-1/sentinel"
    async with command_center(*shared_broker, subscribe=f"{prefix}/alerts/al-1/#") as late:
        await late.publish(sentinel, b".", qos=1)
        assert (await next_message(late)).topic.value == sentinel


async def test_status_online_on_connect_and_offline_on_clean_exit(
    shared_broker: Broker, make_link: LinkFactory, prefix: str
) -> None:
    link = make_link(*shared_broker, gateway_id="gw-status")
    topic = gateway_status_topic(prefix, "gw-status")
    async with command_center(*shared_broker, subscribe=topic) as cc:
        async with link:
            await connected(link)
            online = json_of(await next_message(cc, topic))
            assert online["status"] == "online"
            assert online["gateway_id"] == "gw-status"
            assert online["version"] == "9.9.9-test"
        offline = json_of(await next_message(cc, topic))
        assert offline["status"] == "offline"
    async with command_center(*shared_broker, subscribe=topic) as late:
        retained = await next_message(late, topic)
    assert retained.retain
    assert json_of(retained)["status"] == "offline"


async def test_an_ack_from_the_command_center_reaches_on_ack(
    shared_broker: Broker, make_link: LinkFactory, prefix: str
) -> None:
    sink = AckSink()
    async with make_link(*shared_broker, on_ack=sink) as link, command_center(*shared_broker) as cc:
        await connected(link)
        await cc.publish(
            alert_ack_topic(prefix, "al-42"), json.dumps({"operator": "Grace", "note": "unit 12"}).encode(), qos=1
        )
        assert await sink.wait_for(1) == [Acknowledgement("al-42", "Grace", "unit 12")]
        assert link.stats.acks_received == 1


async def test_invalid_acks_are_counted_and_logged_and_the_link_survives(
    shared_broker: Broker, make_link: LinkFactory, prefix: str
) -> None:
    sink = AckSink()
    topic = alert_ack_topic(prefix, "al-9")
    with capture_logs() as logs:
        async with make_link(*shared_broker, on_ack=sink) as link, command_center(*shared_broker) as cc:
            await connected(link)
            for garbage in (b"\xff\x00", b"not json", b"[]", b'{"operator": ""}', b'{"operator": "x", "note": 3}'):
                await cc.publish(topic, garbage, qos=1)
            await cc.publish(topic, b'{"operator": "Ada"}', qos=1)
            # Acks of one publisher arrive in order, so the valid one comes after all the bad ones.
            assert await sink.wait_for(1) == [Acknowledgement("al-9", "Ada", None)]
            assert link.is_connected
            assert link.stats.acks_invalid == {
                AckRejectReason.NOT_UTF8: 1,
                AckRejectReason.NOT_JSON: 1,
                AckRejectReason.NOT_OBJECT: 1,
                AckRejectReason.BAD_OPERATOR: 1,
                AckRejectReason.BAD_NOTE: 1,
            }
            assert link.stats.connections_lost == 0
    rejected = [entry for entry in logs if entry["event"] == "commandcenter.ack_rejected"]
    assert [entry["reason"] for entry in rejected] == ["not-utf8", "not-json", "not-object", "bad-operator", "bad-note"]
    assert all(entry["log_level"] == "warning" and entry["topic"] == topic for entry in rejected)


async def test_an_ack_published_while_the_gateway_was_away_is_delivered_when_it_returns(
    shared_broker: Broker, make_link: LinkFactory, prefix: str
) -> None:
    async with make_link(*shared_broker, gateway_id="gw-away") as link:
        await connected(link)  # the broker now holds a persistent session with the ack subscription
    async with command_center(*shared_broker) as cc:
        await cc.publish(alert_ack_topic(prefix, "al-5"), b'{"operator": "Night shift"}', qos=1)
    sink = AckSink()
    async with make_link(*shared_broker, gateway_id="gw-away", on_ack=sink) as link:
        # The broker redelivers the queued ack as soon as the session resumes, even before our SUBACK.
        assert await sink.wait_for(1) == [Acknowledgement("al-5", "Night shift", None)]
        await connected(link)


async def test_a_failing_on_ack_is_logged_and_the_next_ack_still_arrives(
    shared_broker: Broker, make_link: LinkFactory, prefix: str
) -> None:
    sink = AckSink(fail_first=1)
    with capture_logs() as logs:
        async with make_link(*shared_broker, on_ack=sink) as link, command_center(*shared_broker) as cc:
            await connected(link)
            await cc.publish(alert_ack_topic(prefix, "al-1"), b'{"operator": "a"}', qos=1)
            await cc.publish(alert_ack_topic(prefix, "al-2"), b'{"operator": "b"}', qos=1)
            assert [a.alert_id for a in await sink.wait_for(2)] == ["al-1", "al-2"]
            assert link.stats.ack_callback_errors == 1
            assert link.is_connected
    assert any(entry["event"] == "commandcenter.on_ack_failed" for entry in logs)


async def test_many_publishes_in_flight_at_once(shared_broker: Broker, make_link: LinkFactory, prefix: str) -> None:
    count = 500
    at = make_view().received_at
    async with (
        make_link(*shared_broker, max_inflight=64) as link,
        command_center(*shared_broker, subscribe=f"{prefix}/alerts/+/events") as cc,
    ):
        await connected(link)
        await asyncio.gather(
            *(
                link.publish_event(
                    event_id=f"e-{i}", alert_id=f"al-{i % 7}", revision=i, event_type="signal", at=at, detail={"i": i}
                )
                for i in range(count)
            )
        )
        seen: set[str] = set()
        async with asyncio.timeout(WAIT_S):
            async for message in cc.messages:
                seen.add(json_of(message)["event_id"])
                if len(seen) == count:
                    break
    assert seen == {f"e-{i}" for i in range(count)}


async def test_on_connected_runs_before_connected_and_can_publish(
    shared_broker: Broker, make_link: LinkFactory, prefix: str
) -> None:
    view = make_view()
    observed: list[bool] = []
    link: CommandCenterLink

    async def republish() -> None:
        observed.append(link.is_connected)
        await link.publish_state(view)

    counter = ConnectedCounter(action=republish)
    link = make_link(*shared_broker, on_connected=counter)
    async with link:
        await connected(link)
    assert counter.calls == 1
    assert observed == [False]
    topic = alert_state_topic(prefix, view.alert_id)
    async with command_center(*shared_broker, subscribe=topic) as cc:
        assert json_of(await next_message(cc, topic))["alert_id"] == view.alert_id


async def test_a_failing_on_connected_is_retried_before_the_link_counts_as_connected(
    shared_broker: Broker, make_link: LinkFactory
) -> None:
    counter = ConnectedCounter(fail_first=2)
    with capture_logs() as logs:
        async with make_link(*shared_broker, on_connected=counter) as link:
            await connected(link)
            assert counter.calls == 3
            assert link.stats.connected_callback_errors == 2
            assert link.stats.connects == 3
    assert sum(entry["event"] == "commandcenter.on_connected_failed" for entry in logs) == 2


async def test_publish_without_a_broker_raises_link_down_and_failures_are_logged(make_link: LinkFactory) -> None:
    port = free_port()  # nothing listens there
    with capture_logs() as logs:
        async with make_link("127.0.0.1", port) as link:
            with pytest.raises(LinkDown) as raised:
                await link.publish_state(make_view())
            assert raised.value.reason is LinkDownReason.NOT_CONNECTED
            assert "/state" in raised.value.topic
            await eventually(lambda: link.stats.connect_failures >= 3)
            assert not link.is_connected
    failures = [entry for entry in logs if entry["event"] == "commandcenter.connect_failed"]
    assert len(failures) >= 3
    assert [entry["attempt"] for entry in failures[:3]] == [1, 2, 3]
    assert all(entry["port"] == port and entry["retry_in_s"] <= 0.5 for entry in failures)


async def test_exit_while_the_broker_never_answers_is_prompt() -> None:
    # A TCP server that reads the CONNECT and stays silent: the link waits for a CONNACK that never comes.
    connect_received = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1)
        connect_received.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = MqttSettings(host="127.0.0.1", port=port, topic_prefix=f"test-{uuid.uuid4().hex}")
    try:
        link = CommandCenterLink(settings, "gw-silent", on_ack=AckSink())
        async with asyncio.timeout(5):
            async with link:
                await connect_received.wait()
            assert not link.is_connected
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def test_reconnect_delay_grows_exponentially_within_bounds() -> None:
    assert reconnect_delay(0, 0.2, 30.0, 0.999) == pytest.approx(0.2)
    assert reconnect_delay(3, 0.2, 30.0, 0.0) == 0.2
    assert reconnect_delay(3, 0.2, 30.0, 1.0) == pytest.approx(1.6)
    assert reconnect_delay(10_000, 0.2, 30.0, 1.0) == 30.0
    assert reconnect_delay(5, 1.0, 0.5, 0.7) == 1.0  # a max below the min never shortens the min
    ceilings = [reconnect_delay(n, 0.2, 30.0, 1.0) for n in range(12)]
    assert ceilings == sorted(ceilings)


def test_embedded_host_must_be_resolved_first() -> None:
    async def noop(ack: Acknowledgement) -> None:
        return None

    with pytest.raises(ValueError, match="embedded"):
        CommandCenterLink(MqttSettings(host="embedded"), "gw", on_ack=noop)
