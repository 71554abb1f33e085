"""Fixtures for the command-center tests: the shared Mosquitto, brokers of a test's own, MQTT helpers, test PKI."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.commandcenter import Acknowledgement, CommandCenterLink
from gateway.config import MqttSettings
from gateway.core.incident import AlertState, IncidentView, short_code_for
from gateway.protocol import EventType, GpsFix

SHARED_HOST = "127.0.0.1"
SHARED_PORT = 1883
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
#: Generous bound for anything a test awaits from a broker on loopback.
WAIT_S = 10.0
#: Test links reconnect fast so broker restarts are quick to observe.
FAST_RECONNECT: dict[str, Any] = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5}


# -- waiting ---------------------------------------------------------------------------------------


async def port_accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_port(host: str, port: int, *, open_: bool = True, timeout: float = WAIT_S) -> None:
    """Poll a TCP connect until the port is (or is no longer) accepting, with a deadline."""
    async with asyncio.timeout(timeout):
        while await port_accepts(host, port) != open_:  # noqa: ASYNC110 - a port has no event to wait on
            await asyncio.sleep(0.02)


async def eventually(predicate: Callable[[], bool], *, timeout: float = WAIT_S) -> None:
    """Poll a condition that has no awaitable of its own (counters, flags) with a deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - for state that has no event of its own
            await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- brokers of a test's own ------------------------------------------------------------------------


class MosquittoProcess:
    """A Mosquitto this test started on a free port; stopped by its PID only."""

    def __init__(self, workdir: Path, *, port: int, conf: str = "") -> None:
        self.workdir = workdir
        self.port = port
        self.conf = conf
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        # `user root` keeps mosquitto from dropping to a user that cannot read tmp_path (only when run as root).
        conf.write_text(
            f"listener {self.port} 127.0.0.1\npersistence false\nuser root\n"
            f"log_dest file {self.workdir / f'mosquitto-{self.port}.log'}\n{self.conf}\n"
        )
        self.proc = await asyncio.create_subprocess_exec(
            MOSQUITTO, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        async with asyncio.timeout(WAIT_S):
            while not await port_accepts("127.0.0.1", self.port):
                if self.proc.returncode is not None:
                    raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()}")
                await asyncio.sleep(0.02)

    def log(self) -> str:
        path = self.workdir / f"mosquitto-{self.port}.log"
        return path.read_text() if path.exists() else ""

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send `sig` to our own broker, wait for it to exit and its port to close."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                async with asyncio.timeout(WAIT_S):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None
        await wait_port("127.0.0.1", self.port, open_=False)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


MosquittoFactory = Callable[..., Awaitable[MosquittoProcess]]


@pytest.fixture
async def mosquitto_factory(tmp_path: Path) -> AsyncIterator[MosquittoFactory]:
    """`await mosquitto_factory(conf=..., anonymous=True)` starts a broker; all are stopped at teardown."""
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"no mosquitto binary at {MOSQUITTO}")
    started: list[MosquittoProcess] = []

    async def start(*, conf: str = "", anonymous: bool = True, port: int | None = None) -> MosquittoProcess:
        lines = ("allow_anonymous true\n" if anonymous else "") + conf
        broker = MosquittoProcess(tmp_path, port=port or free_port(), conf=lines)
        started.append(broker)
        await broker.start()
        return broker

    try:
        yield start
    finally:
        for broker in started:
            if broker.proc is not None and broker.proc.returncode is None:
                broker.resume()  # a SIGSTOPped process ignores SIGTERM until continued
            await broker.stop(signal.SIGTERM)


@pytest.fixture
async def mosquitto(mosquitto_factory: MosquittoFactory) -> MosquittoProcess:
    return await mosquitto_factory()


# -- the shared broker --------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test alone: no test sees another's retained messages."""
    return f"test-{uuid.uuid4().hex}/panic/v1"


@pytest.fixture
async def shared_broker(prefix: str) -> AsyncIterator[tuple[str, int]]:
    """The machine's Mosquitto on 127.0.0.1:1883; retained messages under `prefix` are cleared afterwards."""
    if not await port_accepts(SHARED_HOST, SHARED_PORT):
        pytest.fail(f"the shared Mosquitto at {SHARED_HOST}:{SHARED_PORT} is not running")
    yield SHARED_HOST, SHARED_PORT
    await clear_retained(SHARED_HOST, SHARED_PORT, prefix)


async def clear_retained(host: str, port: int, prefix: str) -> list[str]:
    """Delete every retained message under `prefix` (an empty retained publish deletes one)."""
    sentinel = f"{prefix}/cleanup/{uuid.uuid4().hex}"
    found: list[str] = []
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        # Retained messages are queued to us at SUBACK, so they arrive before this later publish.
        await client.publish(sentinel, b"end", qos=1)
        async with asyncio.timeout(WAIT_S):
            async for message in client.messages:
                if message.topic.value == sentinel:
                    break
                if message.retain and message.payload:
                    found.append(message.topic.value)
        for topic in found:
            await client.publish(topic, b"", qos=1, retain=True)
    return found


async def forget_session(host: str, port: int, client_id: str) -> None:
    """End a persistent session on the broker: connect with the same id and a clean session."""
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True):
        pass


# -- links and command-center clients ---------------------------------------------------------------


@dataclass
class AckSink:
    """Collects acknowledgements handed to on_ack; `received` wakes waiters."""

    acks: list[Acknowledgement] = field(default_factory=list)
    received: asyncio.Condition = field(default_factory=asyncio.Condition)
    fail_first: int = 0

    async def __call__(self, ack: Acknowledgement) -> None:
        async with self.received:
            self.acks.append(ack)
            self.received.notify_all()
        if len(self.acks) <= self.fail_first:
            raise RuntimeError("on_ack failed on purpose")

    async def wait_for(self, count: int, timeout: float = WAIT_S) -> list[Acknowledgement]:
        async with asyncio.timeout(timeout), self.received:
            await self.received.wait_for(lambda: len(self.acks) >= count)
        return self.acks


@dataclass
class ConnectedCounter:
    """An on_connected callback that counts calls and may run an action (republish) each time."""

    calls: int = 0
    action: Callable[[], Awaitable[None]] | None = None
    fail_first: int = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("on_connected failed on purpose")
        if self.action is not None:
            await self.action()


LinkFactory = Callable[..., CommandCenterLink]


@pytest.fixture
async def make_link(prefix: str) -> AsyncIterator[LinkFactory]:
    """`make_link(host, port, **settings)` builds a link (not entered) with a unique gateway id.

    Links on the shared broker leave persistent sessions behind; teardown ends them.
    """
    made: list[tuple[str, int, str]] = []

    def build(
        host: str,
        port: int,
        *,
        on_ack: Callable[[Acknowledgement], Awaitable[None]] | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        gateway_id: str | None = None,
        **settings: Any,
    ) -> CommandCenterLink:
        merged = {"host": host, "port": port, "topic_prefix": prefix, **FAST_RECONNECT, **settings}
        link = CommandCenterLink(
            MqttSettings(**merged),
            gateway_id or f"gw-{uuid.uuid4().hex[:12]}",
            on_ack=on_ack or AckSink(),
            on_connected=on_connected,
            version="9.9.9-test",
        )
        made.append((host, port, link.client_id))
        return link

    yield build
    for host, port, client_id in made:
        if (host, port) == (SHARED_HOST, SHARED_PORT):
            await forget_session(host, port, client_id)


@contextlib.asynccontextmanager
async def command_center(
    host: str, port: int, subscribe: str | None = None, **kw: Any
) -> AsyncIterator[aiomqtt.Client]:
    """A command-center client (clean session, random id), optionally subscribed (SUBACK awaited)."""
    async with aiomqtt.Client(host, port, **kw) as client:
        if subscribe is not None:
            await client.subscribe(subscribe, qos=1)
        yield client


async def next_message(client: aiomqtt.Client, topic: str | None = None, timeout: float = WAIT_S) -> aiomqtt.Message:
    """The next message (on `topic`, when given), with a deadline."""
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if topic is None or message.topic.value == topic:
                return message
    raise AssertionError("message iterator ended")


def json_of(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload)


# -- domain values --------------------------------------------------------------------------------


def make_view(alert_id: str | None = None, **changes: Any) -> IncidentView:
    """An IncidentView with plausible values; override any field."""
    now = datetime(2025, 3, 14, 9, 26, 53, 589_793, tzinfo=UTC)
    values: dict[str, Any] = {
        "alert_id": alert_id or f"al-{uuid.uuid4().hex[:16]}",
        "revision": 1,
        "state": AlertState.RAISED,
        "event": EventType.PANIC,
        "device_id": "wb-0042",
        "wearer": "Ada Lovelace",
        "site": "north",
        "counter": 17,
        "device_time": now - timedelta(seconds=2),
        "received_at": now,
        "delayed": False,
        "test": False,
        "battery": 81,
        "gps": GpsFix(lat=48.8583701, lon=2.2944813, accuracy_m=12, fix_age_s=3),
        "transport": "https",
        "acknowledged_by": None,
        "acknowledged_at": None,
        "updated_at": now,
    }
    values.update(changes)
    values.setdefault("short_code", short_code_for(values["alert_id"]))
    return IncidentView(**values)


# -- a throwaway PKI for TLS tests ------------------------------------------------------------------


@dataclass(frozen=True)
class ThrowawayPki:
    """Files of a CA, a broker certificate for 127.0.0.1 and a client certificate, all made for one test."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_suffix(".key")
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
    return path.with_suffix(".crt")


@pytest.fixture
def test_pki(tmp_path: Path) -> ThrowawayPki:
    ca, ca_key = _ca("panic test CA")
    server, server_key = _leaf("127.0.0.1", ca, ca_key, server=True)
    client, client_key = _leaf("gateway-under-test", ca, ca_key, server=False)
    other_ca, _ = _ca("some other CA")
    directory = tmp_path / "pki"
    directory.mkdir()
    return ThrowawayPki(
        ca_cert=_write(directory / "ca", ca),
        server_cert=_write(directory / "server", server, server_key),
        server_key=directory / "server.key",
        client_cert=_write(directory / "client", client, client_key),
        client_key=directory / "client.key",
        other_ca_cert=_write(directory / "other-ca", other_ca),
    )
