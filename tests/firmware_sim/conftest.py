"""Fixtures of the simulator's tests: a throwaway device CA, enrolled wearables, local HTTP(S) servers."""

from __future__ import annotations

import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_sim import VirtualWearable, enroll
from firmware_sim.wearable import Issuer
from gateway.protocol import parse_signed_frame, verify_signature
from gateway.protocol.const import MEDIA_TYPE
from gateway.rejection import HTTP_STATUS, Rejection, RejectReason

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[..., Awaitable[str]]


@dataclass(frozen=True)
class ThrowawayCa:
    """A one-level CA standing in for the gateway's device CA (which these unit tests do not depend on)."""

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
async def serve() -> AsyncIterator[Serve]:
    """Start local servers answering POST /v1/signals with a handler; all are stopped after the test."""
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


def problem(
    reason: RejectReason | str, detail: str, status: int | None = None, *, retry_after: str | None = None
) -> web.Response:
    code = status if status is not None else HTTP_STATUS[RejectReason(reason)]
    body = {"type": f"about:{reason}", "title": str(reason), "status": code, "detail": detail, "reason": str(reason)}
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.json_response(body, status=code, content_type="application/problem+json", headers=headers)


@dataclass
class MiniGateway:
    """Just enough of the gateway's answers to check that each fault gets the answer the simulator expects.

    The real gateway is tested end to end elsewhere; this one only mirrors its documented answers.
    """

    devices: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    seen: dict[tuple[str, int], bytes] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)

    def register(self, wearable: VirtualWearable) -> None:
        self.devices[wearable.device_id] = wearable.public_key

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_type != MEDIA_TYPE:
            return problem("unsupported-media-type", "wrong media type", 415)
        if request.content_length is not None and request.content_length > 1024:
            return problem("oversized", "too large", 413)
        body = await request.read()
        self.bodies.append(body)
        parsed = parse_signed_frame(body)
        if isinstance(parsed, Rejection):
            return problem(parsed.reason, parsed.detail)
        frame = parsed.frame
        key = self.devices.get(frame.device_id)
        if key is None:
            return problem(RejectReason.UNKNOWN_DEVICE, "not registered")
        if frame.device_id in self.revoked:
            return problem(RejectReason.REVOKED, "revoked")
        if not verify_signature(parsed, key):
            return problem(RejectReason.BAD_SIGNATURE, "signature")
        if frame.timestamp_ms > datetime.now(UTC).timestamp() * 1000 + 300_000:
            return problem(RejectReason.CLOCK_SKEW, "ahead")
        previous = self.seen.get((frame.device_id, frame.counter))
        if previous is not None and previous != parsed.frame_bytes:
            return problem(RejectReason.REPLAYED, f"counter {frame.counter} already used")
        self.seen[(frame.device_id, frame.counter)] = parsed.frame_bytes
        incident = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{frame.device_id}/{frame.counter}"))
        return web.json_response(
            {
                "incident_id": incident if frame.event.raises_incident else None,
                "status": "duplicate" if previous is not None else "accepted",
                "delayed": False,
                "event": frame.event.name.lower(),
            },
            status=202,
        )


@pytest.fixture(scope="session", autouse=True)
def _real_services() -> None:
    """Overrides tests/conftest.py's: the simulator's unit tests need no PostgreSQL or Mosquitto."""
