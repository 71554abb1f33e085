"""CommandCenterLink over mutual TLS to a Mosquitto of the test's own, with a PKI made for the test."""

from __future__ import annotations

import asyncio
import ssl

import aiomqtt
import pytest
from structlog.testing import capture_logs

from gateway.commandcenter import alert_state_topic, state_document
from gateway.commandcenter.link import tls_context
from gateway.config import MqttSettings
from tests.commandcenter.conftest import (
    WAIT_S,
    LinkFactory,
    MosquittoFactory,
    MosquittoProcess,
    ThrowawayPki,
    command_center,
    eventually,
    json_of,
    make_view,
    next_message,
)

pytestmark = pytest.mark.mosquitto

HOST = "127.0.0.1"


@pytest.fixture
async def tls_broker(mosquitto_factory: MosquittoFactory, test_pki: ThrowawayPki) -> MosquittoProcess:
    return await mosquitto_factory(
        conf=(
            f"cafile {test_pki.ca_cert}\ncertfile {test_pki.server_cert}\nkeyfile {test_pki.server_key}\n"
            "require_certificate true\n"
        )
    )


def client_settings(pki: ThrowawayPki, port: int, prefix: str, *, with_cert: bool = True) -> MqttSettings:
    certs = {"cert_file": pki.client_cert, "key_file": pki.client_key} if with_cert else {}
    return MqttSettings(host=HOST, port=port, topic_prefix=prefix, tls=True, ca_file=pki.ca_cert, **certs)


async def test_mutual_tls_publish_and_subscribe(
    tls_broker: MosquittoProcess, test_pki: ThrowawayPki, make_link: LinkFactory, prefix: str
) -> None:
    view = make_view()
    link = make_link(
        HOST,
        tls_broker.port,
        tls=True,
        ca_file=test_pki.ca_cert,
        cert_file=test_pki.client_cert,
        key_file=test_pki.client_key,
    )
    async with link:
        async with asyncio.timeout(WAIT_S):
            await link.wait_connected()
        await link.publish_state(view)
    topic = alert_state_topic(prefix, view.alert_id)
    context = tls_context(client_settings(test_pki, tls_broker.port, prefix))
    async with command_center(HOST, tls_broker.port, subscribe=topic, tls_context=context) as cc:
        message = await next_message(cc, topic)
    assert message.retain
    assert json_of(message) == state_document(view)


async def test_without_a_client_certificate_the_broker_refuses(
    tls_broker: MosquittoProcess, test_pki: ThrowawayPki, prefix: str
) -> None:
    context = tls_context(client_settings(test_pki, tls_broker.port, prefix, with_cert=False))
    # TLS 1.2 makes the refusal part of the handshake; with 1.3 the broker drops the connection just after it.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(aiomqtt.MqttError) as raised:
        async with aiomqtt.Client(HOST, tls_broker.port, tls_context=context, timeout=3):
            pass
    assert "handshake failure" in str(raised.value)
    await eventually(lambda: "peer did not return a certificate" in tls_broker.log())


async def test_a_broker_signed_by_another_ca_is_not_trusted(
    tls_broker: MosquittoProcess, test_pki: ThrowawayPki, make_link: LinkFactory
) -> None:
    link = make_link(
        HOST,
        tls_broker.port,
        tls=True,
        ca_file=test_pki.other_ca_cert,
        cert_file=test_pki.client_cert,
        key_file=test_pki.client_key,
    )
    with capture_logs() as logs:
        async with link:
            await eventually(lambda: link.stats.connect_failures >= 2)
            assert not link.is_connected
            assert link.stats.connects == 0
    failure = next(entry for entry in logs if entry["event"] == "commandcenter.connect_failed")
    assert "certificate verify failed" in failure["error"]


def test_tls_context_verifies_the_broker_and_presents_the_client_certificate(
    test_pki: ThrowawayPki, prefix: str
) -> None:
    context = tls_context(client_settings(test_pki, 8883, prefix))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
