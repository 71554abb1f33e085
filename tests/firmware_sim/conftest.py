"""Fixtures of the simulator's tests: the real gateway with registered wearables, and local scripted HTTP servers.

Tests of what a gateway answers run the real gateway (tests/conftest.py's `gateway_factory`) and register the
simulator's wearables in it. The throwaway CA and the scripted servers serve only the unit tests of the wearable
and of the HTTP client's retry logic, which need answers (503 then 202, a hung attempt) on demand.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

import pytest
import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_sim import VirtualWearable, enroll
from firmware_sim.wearable import Issuer
from gateway.app import RunningGateway
from gateway.config import LogSettings
from gateway.identity.pki import PkiLayout, issue_device_certificate, load_device_ca
from gateway.identity.trust import load_device_trust
from gateway.observability import configure_logging
from gateway.rejection import HTTP_STATUS, RejectReason
from gateway.store.registry import DeviceRegistry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: `await scripted_server(handler, ssl_context=...)` -> the server's base URL.
StartScriptedServer = Callable[..., Awaitable[str]]
#: The type of tests/conftest.py's `gateway_factory` (that module is not imported: mypy --strict fails it).
GatewayFactory = Callable[..., AbstractAsyncContextManager[RunningGateway]]

#: Bytes the slow link reads at a time: more than any one request or answer of these tests.
SLOW_LINK_READ_BYTES: Final = 64 * 1024


# --- the real gateway -------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _gateway_logs_to_stderr() -> Iterator[None]:
    """Log as `panic-gateway run` does, to stderr: stdout then carries only what panic-sim prints."""
    saved = structlog.get_config()
    configure_logging(LogSettings())
    yield
    structlog.configure(**saved)


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> AsyncIterator[RunningGateway]:
    """The real gateway over HTTPS on the parametrised database; clients trust `pki.root_ca_cert`."""
    async with gateway_factory() as running:
        yield running


@pytest.fixture
def device_ca_issue(pki: PkiLayout) -> Issuer:
    """Issue wearables' certificates with the gateway's device CA, as `panic-sim enroll --ca-dir` does."""
    device_ca = load_device_ca(pki)
    return lambda csr: issue_device_certificate(device_ca, csr)


async def register(pki: PkiLayout, wearable: VirtualWearable, *, wearer: str = "Ada Sim", site: str = "north") -> None:
    """Register `wearable` in the running gateway's database, as `panic-gateway devices add` does."""
    await DeviceRegistry(load_device_trust(pki)).add(
        wearable.certificate, wearer=wearer, site=site, phone="", now=datetime.now(UTC)
    )


async def revoke(pki: PkiLayout, device_id: str) -> None:
    """Revoke the device in the running gateway's database, as `panic-gateway devices revoke` does."""
    await DeviceRegistry(load_device_trust(pki)).revoke(device_id, "lost", datetime.now(UTC))


@pytest.fixture
async def registered(
    gateway: RunningGateway, pki: PkiLayout, device_ca_issue: Issuer, tmp_path: Path
) -> VirtualWearable:
    """A wearable enrolled with the gateway's device CA and registered in the running `gateway`."""
    wearable = enroll(tmp_path / "w-gw-1", "w-gw-1", device_ca_issue)
    await register(pki, wearable)
    return wearable


class SlowLink:
    """A TCP relay that holds every byte from client to server for `delay_s`: a slow uplink in front of a server.

    It adds latency without limiting throughput, so a test can make the real gateway's answers slow.
    """

    def __init__(self, target_url: str, delay_s: float) -> None:
        target = urlsplit(target_url)
        if target.hostname is None or target.port is None:
            raise ValueError(f"{target_url!r} names no host and port")
        self._scheme, self._host, self._port = target.scheme, target.hostname, target.port
        self._delay_s = delay_s
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{self._scheme}://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        server_writer: asyncio.StreamWriter | None = None
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        try:
            server_reader, server_writer = await asyncio.open_connection(self._host, self._port)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._hold(client_reader, held))
                group.create_task(self._release(held, server_writer))
                group.create_task(self._pass(server_reader, client_writer))
        except* OSError:
            pass  # either side hung up: the relay ends with the connection
        finally:
            self._connections.discard(task)
            for writer in (client_writer, server_writer):
                if writer is not None:
                    writer.close()

    async def _hold(self, reader: asyncio.StreamReader, held: asyncio.Queue[tuple[float, bytes]]) -> None:
        """Read the client's bytes as they come, each stamped with when it may go on (b"" for its end)."""
        loop = asyncio.get_running_loop()
        while True:
            chunk = await reader.read(SLOW_LINK_READ_BYTES)
            held.put_nowait((loop.time() + self._delay_s, chunk))
            if not chunk:
                return

    @staticmethod
    async def _release(held: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, chunk = await held.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                writer.close()
                return
            writer.write(chunk)
            await writer.drain()

    @staticmethod
    async def _pass(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(SLOW_LINK_READ_BYTES):
            writer.write(chunk)
            await writer.drain()
        writer.close()


# --- unit-test fixtures: a throwaway CA and scripted servers ----------------------------------------------------


@dataclass(frozen=True)
class ThrowawayCa:
    """A one-level CA for the wearable's and the HTTP client's unit tests, which need no gateway."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def issue(self, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def server_context(self, directory: Path, *, require_client_cert: bool = False) -> ssl.SSLContext:
        """A TLS server context for 127.0.0.1 with a certificate from this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = directory / "server.crt", directory / "server.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self.pem.decode())
        return context

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def make_ca(name: str = "Test Device CA") -> ThrowawayCa:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return ThrowawayCa(cert, key)


@pytest.fixture(scope="session")
def ca() -> ThrowawayCa:
    return make_ca()


@pytest.fixture
def issue(ca: ThrowawayCa) -> Issuer:
    return ca.issue


@pytest.fixture
def wearable(tmp_path: Path, issue: Issuer) -> VirtualWearable:
    return enroll(tmp_path / "w-0001", "w-0001", issue)


@pytest.fixture
def ca_file(tmp_path: Path, ca: ThrowawayCa) -> Path:
    path = tmp_path / "ca.crt"
    path.write_bytes(ca.pem)
    return path


@pytest.fixture
async def scripted_server() -> AsyncIterator[StartScriptedServer]:
    """Start local servers answering POST /v1/signals from a test's script; all are stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.router.add_post("/v1/signals", handler)
        # A short shutdown: handlers the client stopped waiting for must not hold the test up.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def scripted_problem(
    reason: RejectReason | str, detail: str, status: int | None = None, *, retry_after: str | None = None
) -> web.Response:
    """A problem+json answer in the gateway's shape, for a scripted server."""
    code = status if status is not None else HTTP_STATUS[RejectReason(reason)]
    body = {"type": f"about:{reason}", "title": str(reason), "status": code, "detail": detail, "reason": str(reason)}
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.json_response(body, status=code, content_type="application/problem+json", headers=headers)
