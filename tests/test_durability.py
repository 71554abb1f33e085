"""An accepted alert is never lost: not across a broker outage or SIGKILL, a database outage, or a gateway crash."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.config import MqttSettings
from gateway.identity.pki import PkiLayout
from gateway.store.db import open_database
from tests import services
from tests.conftest import GatewayFactory, Wearable, enroll, http_client, make_settings, observe, post_frame


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[services.Mosquitto]:
    """A Mosquitto of this test's own (no persistence), killed at the end whatever happened."""
    with services.Mosquitto(tmp_path) as broker:
        yield broker


def own_mqtt(broker: services.Mosquitto) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=broker.port, topic_prefix="cc", reconnect_max_s=0.5)


async def test_alerts_accepted_while_broker_is_down_are_delivered_when_it_returns(
    gateway_factory: GatewayFactory, pki: PkiLayout, client_ssl: ssl.SSLContext, own_broker: services.Mosquitto
) -> None:
    broker = own_broker
    async with gateway_factory(mqtt=own_mqtt(broker)) as gw, http_client(client_ssl) as http:
        w = await enroll(pki)
        await gw.link.wait_connected()
        broker.kill()
        ids = []
        for _ in range(20):
            status, body, _ = await post_frame(http, gw, w.frame())
            assert status == 202, body
            ids.append(body["incident_id"])
        assert gw.publisher.held > 0
        broker.start()
        async with observe("cc", port=broker.port) as cc:
            await cc.wait_for(lambda o: set(ids) <= set(o.states))
            await cc.wait_for(lambda o: {e["alert_id"] for e in o.events if e["type"] == "raised"} >= set(ids))
        await asyncio.wait_for(gw.publisher.wait_idle(), 10)


async def test_broker_killed_and_restarted_gets_every_open_alert_back(
    gateway_factory: GatewayFactory, pki: PkiLayout, client_ssl: ssl.SSLContext, own_broker: services.Mosquitto
) -> None:
    broker = own_broker
    async with gateway_factory(mqtt=own_mqtt(broker)) as gw, http_client(client_ssl) as http:
        w = await enroll(pki)
        ids = [(await post_frame(http, gw, w.frame()))[1]["incident_id"] for _ in range(5)]
        async with observe("cc", port=broker.port) as cc:
            await cc.wait_for(lambda o: set(ids) <= o.retained or set(ids) <= set(o.states))
        await asyncio.wait_for(gw.publisher.wait_idle(), 10)
        # SIGKILL without persistence: the broker forgets every retained message it had acknowledged.
        broker.kill()
        broker.start()
        await asyncio.wait_for(_reconnected(gw), 20)
        async with observe("cc", port=broker.port) as late:
            await late.wait_for(lambda o: set(ids) <= o.retained)
            assert all(late.states[i]["state"] == "raised" for i in ids)


async def _reconnected(gw) -> None:  # type: ignore[no-untyped-def]
    # The link exposes no "disconnected" event; polling a property briefly is the honest wait here.
    while gw.link.is_connected:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await gw.link.wait_connected()


@pytest.mark.postgres
async def test_database_unreachable_answers_503_and_recovers(pki: PkiLayout, client_ssl: ssl.SSLContext) -> None:
    """PostgreSQL behind a proxy the test cuts: the device is told to retry, the gateway keeps running."""
    from gateway.app import running_gateway

    async with services.fresh_postgres_database() as url:
        host_port = url.split("@", 1)[1].split("/", 1)[0]
        proxy = services.TcpProxy(host_port.split(":")[0], int(host_port.split(":")[1]))
        await proxy.start()
        proxied = url.replace(host_port, f"127.0.0.1:{proxy.port}")
        try:
            settings = make_settings(pki, proxied)
            async with running_gateway(settings) as gw, http_client(client_ssl) as http:
                w = await enroll(pki)
                assert (await post_frame(http, gw, w.frame()))[0] == 202
                proxy.cut()
                frame = w.frame()
                status, problem, headers = await post_frame(http, gw, frame)
                assert status == 503, problem
                assert problem["reason"] == "store-unavailable"
                assert int(headers["Retry-After"]) >= 1
                assert (await http.get(f"{gw.http_url}/healthz")).status == 200
                assert (await http.get(f"{gw.http_url}/readyz")).status == 503
                proxy.restore()
                # The device retries the same frame until the database is back.
                deadline = time.monotonic() + 20
                while (status := (await post_frame(http, gw, frame))[0]) == 503 and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                assert status == 202
        finally:
            await proxy.close()


async def test_gateway_killed_at_random_points_loses_and_doubles_nothing(
    pki: PkiLayout, db_url: str, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    """Thousands of panics while the gateway is SIGKILLed at random; devices retry the same frame like firmware."""
    prefix = f"crash/{uuid.uuid4().hex[:8]}"
    async with open_database(db_url):
        wearables = [await enroll(pki) for _ in range(40)]
    port = services.free_port()
    gateway_env = {
        **os.environ,
        "PANIC_GATEWAY_ID": "crash-test-gw",
        "PANIC_HTTP__PORT": str(port),
        "PANIC_HTTP__TLS_CERT": str(pki.server_cert),
        "PANIC_HTTP__TLS_KEY": str(pki.server_key),
        "PANIC_HTTP__DEVICE_BURST": "100000",
        "PANIC_DATABASE__URL": db_url,
        "PANIC_MQTT__TOPIC_PREFIX": prefix,
        "PANIC_PKI__DIRECTORY": str(pki.directory),
        "PANIC_LOG__LEVEL": "WARNING",
    }
    url = f"https://127.0.0.1:{port}"
    log = (tmp_path / "gateway.log").open("wb")

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run"], env=gateway_env, stdout=log, stderr=log)
        return proc

    accepted: dict[tuple[str, int], str] = {}
    total = 2000
    proc = start()
    try:
        async with observe(prefix) as cc, http_client(client_ssl, limit=64) as http:

            async def device(w: Wearable, n: int) -> None:
                for _ in range(n):
                    frame = w.frame()
                    key = (w.device_id, w.counter)
                    deadline = time.monotonic() + 90
                    while time.monotonic() < deadline:
                        try:
                            async with http.post(
                                f"{url}/v1/signals",
                                data=frame,
                                headers={"Content-Type": "application/vnd.panic.frame.v1"},
                            ) as r:
                                if r.status == 202:
                                    accepted[key] = (await r.json())["incident_id"]
                                    break
                                assert r.status in (503, 429), await r.text()
                        except (TimeoutError, aiohttp.ClientError):
                            pass
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError(f"{key} never accepted")

            async def killer() -> None:
                nonlocal proc
                rng = random.Random(7)
                for _ in range(3):
                    await asyncio.sleep(rng.uniform(0.5, 2.0))
                    proc.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(proc.wait)
                    proc = start()

            per_device = total // len(wearables)
            await asyncio.gather(killer(), *(device(w, per_device) for w in wearables))
            assert len(accepted) == total
            ids = set(accepted.values())
            assert len(ids) == total, "two presses share an incident id"
            await cc.wait_for(lambda o: ids <= set(o.states), timeout=60)
            assert set(cc.states) == ids, "an alert was published under an id no device was given"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
        except TimeoutError:
            proc.kill()
        log.close()
