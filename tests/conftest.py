"""Shared fixtures: real PostgreSQL and Mosquitto, a test PKI, running gateways, enrolled devices, MQTT observers."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.app import RunningGateway, running_gateway
from gateway.config import AuthSettings, DatabaseSettings, GatewaySettings, HttpSettings, MqttSettings, PkiSettings
from gateway.core.authenticate import AuthenticatedSignal, AuthRules, DeviceCredentials, authenticate
from gateway.identity.pki import PkiLayout, init_pki, issue_device_files, load_certificate, load_private_key
from gateway.identity.trust import load_device_trust
from gateway.location.model import CellObservation
from gateway.protocol import AlertFrame, EventType, GpsFix, SignedFrame, const, parse_signed_frame, sign_frame
from gateway.store.registry import DeviceRegistry
from tests import services


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="database for storage and end-to-end tests (one backend per process: tortoise caches SQL per model)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that touches the database, so `-m db` selects them for the second backend's run."""
    for item in items:
        if "db_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session", autouse=True)
def _real_services() -> None:
    services.ensure_postgres()
    services.ensure_mosquitto()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    layout = PkiLayout(tmp_path_factory.mktemp("pki"))
    init_pki(layout)
    return layout


@pytest.fixture
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.config.getoption("--db") == "sqlite":
        yield f"sqlite://{tmp_path / 'gateway.sqlite3'}"
    else:
        async with services.fresh_postgres_database() as url:
            yield url


def make_settings(pki: PkiLayout, db_url: str, **sections: Any) -> GatewaySettings:
    """Settings for a test gateway: free HTTPS port, the shared broker, a unique topic prefix."""
    defaults: dict[str, Any] = {
        "gateway_id": f"gw-{uuid.uuid4().hex[:8]}",
        "http": HttpSettings(port=0, tls_cert=pki.server_cert, tls_key=pki.server_key),
        "database": DatabaseSettings(url=db_url),
        "mqtt": MqttSettings(
            host=services.MQTT_HOST, port=services.MQTT_PORT, topic_prefix=f"test/{uuid.uuid4().hex[:10]}"
        ),
        "pki": PkiSettings(directory=pki.directory),
        "auth": AuthSettings(),
    }
    defaults.update(sections)
    return GatewaySettings(**defaults)


@dataclass
class Wearable:
    """An enrolled test device that signs frames with its own key."""

    device_id: str
    key: ec.EllipticCurvePrivateKey
    counter: int = 0

    def frame(
        self,
        event: EventType = EventType.PANIC,
        *,
        counter: int | None = None,
        ts_ms: int | None = None,
        gps: GpsFix | None = None,
        battery: int | None = 80,
        cells: tuple[CellObservation, ...] = (),
    ) -> bytes:
        if counter is None:
            self.counter += 1
            counter = self.counter
        ts = ts_ms if ts_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
        frame = AlertFrame(self.device_id, counter, ts, event, battery=battery, gps=gps, cells=cells)
        return sign_frame(frame, self.key)


async def enroll(
    pki: PkiLayout,
    device_id: str | None = None,
    *,
    wearer: str = "Ada Test",
    site: str = "north",
    phone: str = "+15550001234",
) -> Wearable:
    """Issue a certificate through the CSR path and register the device (the gateway's database must be open)."""
    device_id = device_id or f"wb-{uuid.uuid4().hex[:10]}"
    cert_path, key_path = issue_device_files(pki, device_id)
    registry = DeviceRegistry(load_device_trust(pki))
    await registry.add(load_certificate(cert_path), wearer=wearer, site=site, phone=phone, now=datetime.now(UTC))
    return Wearable(device_id, load_private_key(key_path))


TEST_RULES = AuthRules(max_clock_ahead=timedelta(seconds=300), delayed_after=timedelta(seconds=60))


def authenticated_frame(
    w: Wearable, creds: DeviceCredentials, event: EventType = EventType.PANIC, *, counter: int | None = None
) -> AuthenticatedSignal:
    """A frame from `w`, signed, parsed and authenticated as the HTTPS path would (for store and pipeline tests)."""
    parsed = parse_signed_frame(w.frame(event, counter=counter))
    assert isinstance(parsed, SignedFrame)
    result = authenticate(parsed, creds, transport="https", now=datetime.now(UTC), rules=TEST_RULES)
    assert isinstance(result, AuthenticatedSignal)
    return result


@pytest.fixture
def client_ssl(pki: PkiLayout) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.root_ca_cert))
    return ctx


@asynccontextmanager
async def http_client(ssl_ctx: ssl.SSLContext, **kw: Any) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx, **kw)) as session:
        yield session


async def post_frame(
    session: aiohttp.ClientSession, gw: RunningGateway, body: bytes, content_type: str = const.MEDIA_TYPE
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with session.post(f"{gw.http_url}/v1/signals", data=body, headers={"Content-Type": content_type}) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


@dataclass
class Observer:
    """A command-center client: subscribes to a prefix and keeps the latest state per alert and all events."""

    prefix: str
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    retained: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    state_messages: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    client: aiomqtt.Client | None = None

    async def wait_for(self, predicate: Callable[[Observer], bool], timeout: float = 20.0) -> None:
        async def check() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: predicate(self))

        await asyncio.wait_for(check(), timeout)

    async def ack(self, alert_id: str, operator: str = "op-1", note: str = "on my way") -> None:
        assert self.client is not None
        await self.client.publish(
            f"{self.prefix}/alerts/{alert_id}/ack", json.dumps({"operator": operator, "note": note}).encode(), qos=1
        )


@asynccontextmanager
async def observe(
    prefix: str, host: str = services.MQTT_HOST, port: int = services.MQTT_PORT
) -> AsyncIterator[Observer]:
    obs = Observer(prefix)
    subscribed = asyncio.Event()

    async def run() -> None:
        async with aiomqtt.Client(host, port, identifier=f"obs-{uuid.uuid4().hex[:8]}") as client:
            obs.client = client
            await client.subscribe(f"{prefix}/#", qos=1)
            subscribed.set()
            async for msg in client.messages:
                topic = str(msg.topic)
                if not msg.payload:
                    continue
                doc = json.loads(msg.payload)  # type: ignore[arg-type]
                parts = topic.split("/")
                async with obs.changed:
                    if parts[-1] == "state":
                        obs.state_messages[parts[-2]] = obs.state_messages.get(parts[-2], 0) + 1
                        old = obs.states.get(parts[-2])
                        if old is None or doc["revision"] >= old["revision"]:
                            obs.states[parts[-2]] = doc
                        if msg.retain:
                            obs.retained.add(parts[-2])
                    elif parts[-1] == "events":
                        obs.events.append(doc)
                    elif parts[-1] == "status":
                        obs.status[parts[-2]] = doc
                    obs.changed.notify_all()

    task = asyncio.create_task(run())
    done, _ = await asyncio.wait([task, asyncio.ensure_future(subscribed.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield obs
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


GatewayFactory = Callable[..., AbstractAsyncContextManager[RunningGateway]]


@pytest.fixture
def gateway_factory(pki: PkiLayout, db_url: str) -> GatewayFactory:
    """`async with gateway_factory(**sections) as gw:` runs a real gateway on the parametrised database."""

    def factory(**sections: Any) -> AbstractAsyncContextManager[RunningGateway]:
        return running_gateway(make_settings(pki, db_url, **sections))

    return factory
