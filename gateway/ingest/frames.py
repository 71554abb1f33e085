"""Signed frames from any transport: parse, authenticate against the registry, commit on the signal pipeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Final, NamedTuple

import structlog

from gateway.core.authenticate import AuthRules, authenticate
from gateway.ingest.pipeline import Overloaded, SignalPipeline
from gateway.observability import Metrics
from gateway.protocol import parse_signed_frame
from gateway.protocol.signature import SignedFrame
from gateway.rejection import Rejection, RejectReason
from gateway.store.incidents import SignalOutcome
from gateway.store.registry import DeviceDirectory

log = structlog.get_logger(__name__)


class AcceptedFrame(NamedTuple):
    """A signed frame that authenticated and was committed."""

    #: The parsed frame (its GPS fix, battery, counter).
    signed: SignedFrame
    #: What the commit made of it: accepted, or a duplicate of a press already stored.
    outcome: SignalOutcome
    #: The press reached the gateway long after it was made (alerted anyway).
    delayed: bool


#: Refusals that only say "come back later": counted, not logged one by one (under overload there are
#: thousands a second, and logging them would take the CPU the accepted signals need).
_QUIET: Final = frozenset({RejectReason.OVERLOADED, RejectReason.RATE_LIMITED})


async def accept_signed_frame(
    data: bytes,
    *,
    transport: str,
    directory: DeviceDirectory,
    pipeline: SignalPipeline,
    rules: AuthRules,
    metrics: Metrics,
    now: datetime,
    peer_device_id: str | None = None,
    sender_phone: str | None = None,
    throttle: Callable[[str], float] | None = None,
    peer: str | None = None,
) -> AcceptedFrame | Rejection:
    """Authenticate `data` and commit it; a rejection is a value (counted in the metrics).

    Overload is decided right after parsing, before the device lookup and the signature check, so
    refusing costs little. `throttle(device_id)` returns seconds to wait (0 when allowed); it applies to
    chatter only: a wearer's panic, fall or test is never throttled per device.
    Raises StoreUnavailable: the frame was not stored and may be sent again.
    """
    started = time.perf_counter()
    parsed = parse_signed_frame(data)
    if isinstance(parsed, Rejection):
        return _refused(metrics, parsed, transport, None, peer, started)
    device_id = parsed.frame.device_id
    retry_after = pipeline.shed(parsed.frame.event)
    if retry_after is not None:
        overloaded = Rejection(RejectReason.OVERLOADED, "gateway is overloaded", retry_after)
        return _refused(metrics, overloaded, transport, device_id, peer, started)
    creds = await directory.get(device_id, now)
    verdict = authenticate(
        parsed,
        creds,
        transport=transport,
        now=now,
        rules=rules,
        peer_device_id=peer_device_id,
        sender_phone=sender_phone,
    )
    if isinstance(verdict, Rejection):
        return _refused(metrics, verdict, transport, device_id, peer, started)
    if throttle is not None and not parsed.frame.event.raises_incident and (wait := throttle(device_id)):
        limited = Rejection(RejectReason.RATE_LIMITED, f"too many signals from {device_id}", wait)
        return _refused(metrics, limited, transport, device_id, peer, started)
    try:
        outcome = await pipeline.submit(verdict)
    except Overloaded as exc:
        overloaded = Rejection(RejectReason.OVERLOADED, "gateway is overloaded", exc.retry_after)
        return _refused(metrics, overloaded, transport, device_id, peer, started)
    if outcome.rejection is not None:
        return _refused(metrics, outcome.rejection, transport, device_id, peer, started)
    metrics.signals_accepted.labels(parsed.frame.event.name.lower(), transport, outcome.outcome.value).inc()
    metrics.ingest_latency.labels(transport).observe(time.perf_counter() - started)
    return AcceptedFrame(parsed, outcome, verdict.delayed)


def _refused(
    metrics: Metrics, rejection: Rejection, transport: str, device_id: str | None, peer: str | None, started: float
) -> Rejection:
    metrics.signals_rejected.labels(rejection.reason.value, transport).inc()
    metrics.ingest_latency.labels(transport).observe(time.perf_counter() - started)
    if rejection.reason not in _QUIET:
        log.info(
            "signal refused", reason=rejection.reason.value, detail=rejection.detail, device_id=device_id, peer=peer
        )
    return rejection
