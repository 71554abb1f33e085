"""Signed frames from any transport: parse, authenticate against the registry, commit on the signal pipeline."""

from __future__ import annotations

import time
from datetime import datetime
from typing import NamedTuple

import structlog

from gateway.core.authenticate import AuthRules, authenticate
from gateway.ingest.pipeline import SignalPipeline
from gateway.observability import Metrics
from gateway.protocol import parse_signed_frame
from gateway.protocol.signature import SignedFrame
from gateway.rejection import Rejection
from gateway.store.incidents import SignalOutcome
from gateway.store.registry import DeviceDirectory

log = structlog.get_logger(__name__)


class AcceptedFrame(NamedTuple):
    """A signed frame that authenticated and was committed."""

    #: The parsed frame (its GPS fix, battery, counter).
    signed: SignedFrame
    #: What the commit made of it: accepted, or a duplicate of a press already stored.
    outcome: SignalOutcome


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
) -> AcceptedFrame | Rejection:
    """Authenticate `data` and commit it; a rejection is a value (counted in the metrics).

    Raises Overloaded or StoreUnavailable, like the pipeline: the frame was not stored and may be sent again.
    """
    started = time.perf_counter()
    parsed = parse_signed_frame(data)
    if isinstance(parsed, Rejection):
        return _refused(metrics, parsed, transport, None)
    device_id = parsed.frame.device_id
    creds = await directory.get(device_id, now)
    verdict = authenticate(parsed, creds, transport=transport, now=now, rules=rules, peer_device_id=peer_device_id)
    if isinstance(verdict, Rejection):
        return _refused(metrics, verdict, transport, device_id)
    outcome = await pipeline.submit(verdict)
    if outcome.rejection is not None:
        return _refused(metrics, outcome.rejection, transport, device_id)
    metrics.signals_accepted.labels(parsed.frame.event.name.lower(), transport, outcome.outcome.value).inc()
    metrics.ingest_latency.labels(transport).observe(time.perf_counter() - started)
    return AcceptedFrame(parsed, outcome)


def _refused(metrics: Metrics, rejection: Rejection, transport: str, device_id: str | None) -> Rejection:
    metrics.signals_rejected.labels(rejection.reason.value, transport).inc()
    log.info("signal refused", reason=rejection.reason.value, detail=rejection.detail, device_id=device_id)
    return rejection
