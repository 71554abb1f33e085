"""HTTPS ingest: POST /v1/signals, health, readiness and metrics (aiohttp)."""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config import HttpSettings
from gateway.core.authenticate import AuthRules
from gateway.core.ratelimit import RateLimiter
from gateway.errors import PkiError, StoreUnavailable
from gateway.identity.pki import device_id_of
from gateway.ingest.frames import accept_signed_frame
from gateway.ingest.pipeline import SignalPipeline
from gateway.observability import Metrics
from gateway.protocol import const
from gateway.rejection import HTTP_STATUS, Rejection, RejectReason
from gateway.store.incidents import IncidentStore, Outcome
from gateway.store.registry import DeviceDirectory

log = structlog.get_logger(__name__)

PROBLEM_BASE: Final = "https://panic-gateway.dev/problems/"
PROBLEM_TYPE: Final = "application/problem+json"
#: Retry-After for a database outage: long enough not to hammer it, short for a panic.
STORE_RETRY_AFTER_S: Final = 1
TRANSPORT: Final = "https"
SIGNALS_PATH: Final = "/v1/signals"
#: Bodies other than signals (Twilio webhook forms, API JSON with notes) may be this large.
OTHER_MAX_BODY_BYTES: Final = 16 * 1024
#: A heartbeat's answer names the device's latest incident raised this recently (its wearer's display).
INCIDENT_MEMORY: Final = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class IngestDeps:
    """What the HTTP adapter needs; built by the composition root."""

    settings: HttpSettings
    directory: DeviceDirectory
    pipeline: SignalPipeline
    rules: AuthRules
    metrics: Metrics
    ready: Callable[[], Awaitable[dict[str, bool]]]
    #: Called for a retry of a stored press: its current state goes out again, whatever the outbox holds
    #: (the first attempt's gateway may have crashed between commit and publish).
    ensure_published: Callable[[str], None]
    #: Incidents, for the answer to a wearable's later signals (is someone on it?).
    store: IncidentStore


DEPS: Final = web.AppKey("deps", IngestDeps)


def problem(status: int, reason: str, detail: str, *, retry_after: float | None = None) -> web.Response:
    """An RFC 9457 problem response; `reason` doubles as the type's last segment."""
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    body = {
        "type": PROBLEM_BASE + reason,
        "title": reason.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    return web.json_response(body, status=status, headers=headers, content_type=PROBLEM_TYPE)


def _peer_device_id(request: web.Request) -> str | None:
    """The device id of a verified TLS client certificate, when mTLS is on."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return device_id_of(x509.load_der_x509_certificate(der))
    except (PkiError, ValueError):
        return ""  # a client certificate without a device id matches no frame


async def post_signal(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    peer = request.remote or "unknown"
    if request.content_type != const.MEDIA_TYPE:
        deps.metrics.signals_rejected.labels("unsupported-media-type", TRANSPORT).inc()
        return problem(415, "unsupported-media-type", f"Content-Type must be {const.MEDIA_TYPE}")
    if request.content_length is not None and request.content_length > deps.settings.max_body_bytes:
        deps.metrics.signals_rejected.labels("oversized", TRANSPORT).inc()
        return problem(413, "oversized", f"body is larger than {deps.settings.max_body_bytes} bytes")
    wait = request.app[LIMITS].by_address.acquire(peer, time.monotonic())
    if wait:
        deps.metrics.signals_rejected.labels(RejectReason.RATE_LIMITED.value, TRANSPORT).inc()
        return problem(429, RejectReason.RATE_LIMITED.value, "too many requests from this address", retry_after=wait)
    body = await request.read()
    if len(body) > deps.settings.max_body_bytes:  # sent without a Content-Length
        deps.metrics.signals_rejected.labels("oversized", TRANSPORT).inc()
        return problem(413, "oversized", f"body is larger than {deps.settings.max_body_bytes} bytes")
    limits = request.app[LIMITS]
    try:
        result = await accept_signed_frame(
            body,
            transport=TRANSPORT,
            directory=deps.directory,
            pipeline=deps.pipeline,
            rules=deps.rules,
            metrics=deps.metrics,
            now=datetime.now(UTC),
            peer_device_id=_peer_device_id(request),
            throttle=lambda device_id: limits.by_device.acquire(device_id, time.monotonic()),
            peer=peer,
        )
    except StoreUnavailable as exc:
        return _unavailable(deps, str(exc))
    if isinstance(result, Rejection):
        return problem(HTTP_STATUS[result.reason], result.reason.value, result.detail, retry_after=result.retry_after)
    frame, outcome = result.signed.frame, result.outcome
    event = frame.event.name.lower()
    if outcome.outcome is Outcome.DUPLICATE and outcome.incident_id is not None:
        deps.ensure_published(outcome.incident_id)
    if outcome.outcome is Outcome.ACCEPTED and frame.event.raises_incident:
        log.info(
            "alert accepted",
            device_id=frame.device_id,
            alert_id=outcome.incident_id,
            kind=event,
            delayed=result.delayed,
        )
    answer: dict[str, Any] = {
        "incident_id": outcome.incident_id,
        "status": outcome.outcome.value,
        "delayed": result.delayed,
        "event": event,
    }
    if not frame.event.raises_incident:
        # The wearable's next contact after a press: tell it whether someone has the alert (its display).
        answer["incident"] = await _latest_incident(deps, frame.device_id)
    return web.json_response(answer, status=202)


async def _latest_incident(deps: IngestDeps, device_id: str) -> dict[str, Any] | None:
    since = datetime.now(UTC) - INCIDENT_MEMORY
    try:
        view = await deps.store.latest_incident(device_id, since)
    except StoreUnavailable:
        return None  # the signal is stored; the display can wait for the next contact
    if view is None:
        return None
    return {"id": view.alert_id, "state": view.state.value, "acknowledged_by": view.acknowledged_by}


def _unavailable(deps: IngestDeps, detail: str) -> web.Response:
    deps.metrics.signals_rejected.labels("store-unavailable", TRANSPORT).inc()
    log.warning("signal not stored: database unavailable", error=detail)
    return problem(
        503,
        "store-unavailable",
        "the gateway cannot store signals right now; retry the same frame",
        retry_after=STORE_RETRY_AFTER_S,
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[DEPS].ready()
    ok = all(checks.values())
    return web.json_response({"status": "ready" if ok else "not-ready", "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[DEPS].metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


@dataclass(frozen=True, slots=True)
class _Limits:
    by_address: RateLimiter
    by_device: RateLimiter


LIMITS: Final = web.AppKey("limits", _Limits)


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error is problem+json, including aiohttp's own (404, 405, 413) and bugs (500)."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge as exc:
        if request.path == SIGNALS_PATH:
            request.app[DEPS].metrics.signals_rejected.labels("oversized", TRANSPORT).inc()
        return problem(413, "oversized", exc.text or "body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason.lower().replace(" ", "-"), exc.text or exc.reason)
    except Exception:
        log.exception("unhandled error in HTTP handler", path=request.path)
        return problem(500, "internal-error", "the gateway failed to handle this request; retry it")


def build_app(deps: IngestDeps, routes: Sequence[web.AbstractRouteDef] = ()) -> web.Application:
    # The signal endpoint enforces its own, smaller limit; webhooks and API calls carry forms and JSON notes.
    max_size = max(deps.settings.max_body_bytes, OTHER_MAX_BODY_BYTES)
    app = web.Application(middlewares=[problem_middleware], client_max_size=max_size)
    app[DEPS] = deps
    s = deps.settings
    app[LIMITS] = _Limits(
        RateLimiter(s.address_rate_per_s, s.address_burst), RateLimiter(s.device_rate_per_s, s.device_burst)
    )
    app.router.add_post(SIGNALS_PATH, post_signal)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(routes)
    return app


def server_ssl_context(settings: HttpSettings, device_ca_bundle: list[str]) -> ssl.SSLContext | None:
    """TLS 1.2+ with the gateway's server certificate; with mTLS, clients must chain to the device CA."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        for pem in device_ca_bundle:
            ctx.load_verify_locations(cadata=pem)
    return ctx


class HttpIngest:
    """The HTTP server's lifecycle: `async with HttpIngest(...) as server: server.url`."""

    def __init__(
        self, deps: IngestDeps, ssl_context: ssl.SSLContext | None, *, routes: Sequence[web.AbstractRouteDef] = ()
    ) -> None:
        self._app = build_app(deps, routes)
        self._ssl = ssl_context
        self._settings = deps.settings
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{self._settings.host}:{self.port}"

    async def __aenter__(self) -> HttpIngest:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.host, self._settings.port, ssl_context=self._ssl, backlog=1024)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
