"""Numbers from raw samples: percentiles, latencies matched to MQTT arrivals, rates inside a window."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from bench.load import RunLog, Sample

QUANTILES: Final = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))
#: Points kept of each latency distribution for the CDF plot.
CDF_POINTS: Final = 200
SHED: Final = (429, 503)


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/p99.9/max in the unit given, and n; None when there are no values.

    Nearest-rank on the sorted values (no interpolation): a reported p99 is a latency that really happened.
    """
    ordered = sorted(values)
    out: dict[str, float | int | None] = {"n": len(ordered)}
    for name, q in QUANTILES:
        out[name] = _rank(ordered, q)
    out["max"] = round(ordered[-1], 3) if ordered else None
    return out


def _rank(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    index = max(0, math.ceil(q / 100.0 * len(ordered)) - 1)
    return round(ordered[index], 3)


def cdf(values: Sequence[float], points: int = CDF_POINTS) -> list[tuple[float, float]]:
    """(latency, fraction at or below) at evenly spaced ranks, for plotting."""
    ordered = sorted(values)
    if not ordered:
        return []
    n = len(ordered)
    step = max(1, n // points)
    ranks = [*range(0, n, step), n - 1]
    return [(round(ordered[i], 3), round((i + 1) / n, 5)) for i in ranks]


def status_counts(samples: Iterable[Sample]) -> dict[str, int]:
    """HTTP statuses as strings; requests with no answer are counted by error name ("error:TimeoutError")."""
    counts: collections.Counter[str] = collections.Counter()
    for s in samples:
        if not s.status:
            counts[f"error:{s.error or 'unknown'}"] += 1
        else:
            counts[f"{s.status}:{s.reason}" if s.reason else str(s.status)] += 1
    return dict(sorted(counts.items()))


def _ms(ns: int) -> float:
    return ns / 1e6


def latency_summary(log: RunLog, arrivals: Mapping[str, int], keep_cdf: bool = False) -> dict[str, Any]:
    """Press-to-command-center and HTTP latencies of the panics in one run, with what was refused or lost."""
    panics = [s for s in log.samples if s.kind == "panic"]
    accepted = [s for s in panics if s.status == 202]
    e2e = [_ms(arrivals[s.alert_id] - s.started_ns) for s in accepted if s.alert_id in arrivals]
    published_not_accepted = sum(1 for s in panics if s.status != 202 and s.alert_id in arrivals)
    http = [_ms(s.ended_ns - s.started_ns) for s in accepted]
    lag = [_ms(s.started_ns - s.scheduled_ns) for s in log.samples]
    published_ns = [arrivals[s.alert_id] for s in accepted if s.alert_id in arrivals]
    busy_ns = max(published_ns) - log.t0_ns if published_ns else 0
    span_ns = log.samples[-1].started_ns - log.samples[0].started_ns if len(log.samples) > 1 else 0
    out: dict[str, Any] = {
        "mode": log.mode,
        "offered_per_s": log.rate,
        "achieved_send_per_s": round((len(log.samples) - 1) / (span_ns / 1e9), 1) if span_ns else None,
        "requests": len(log.samples),
        "statuses": status_counts(log.samples),
        "panics": len(panics),
        "accepted": len(accepted),
        "published": len(e2e),
        "accepted_not_published": len(accepted) - len(e2e),
        "published_not_accepted": published_not_accepted,
        # Accepted and published per second from the first send to the last publication.
        "goodput_per_s": round(len(published_ns) / (busy_ns / 1e9), 1) if busy_ns > 0 else 0.0,
        "e2e_ms": percentiles(e2e),
        "http_ms": percentiles(http),
        "send_lag_ms": percentiles(lag),
        "client_queued": log.client_queued,
    }
    if keep_cdf:
        out["e2e_cdf"] = cdf(e2e)
    return out


def window_rates(log: RunLog, arrivals: Mapping[str, int], warmup_s: float) -> dict[str, Any]:
    """Throughput of a saturation run, two ways.

    busy_per_s: alerts answered 202 and published, divided by the time from the first to the last such
    publication (the gateway had work all along): robust when latencies exceed the warm-up.
    stored_and_published_per_s: the same alerts whose publication fell inside the steady window
    [t0 + warmup, end of the offered period), per second of that window; 202, shed and error rates also
    count answers inside that window.
    """
    start = log.t0_ns + int(warmup_s * 1e9)
    end = log.t0_ns + int(log.offered_s * 1e9)
    window_s = (end - start) / 1e9
    in_window = [s for s in log.samples if start <= s.ended_ns < end]
    accepted_panics = [s for s in log.samples if s.kind == "panic" and s.status == 202]
    published_in_window = sum(
        1 for s in accepted_panics if s.alert_id in arrivals and start <= arrivals[s.alert_id] < end
    )
    published = [arrivals[s.alert_id] for s in accepted_panics if s.alert_id in arrivals]
    last = max(published) if published else end
    first = min(published) if published else end
    busy_s = (last - first) / 1e9
    return {
        "busy_per_s": round((len(published) - 1) / busy_s, 1) if busy_s > 0 else None,
        "busy_s": round(busy_s, 2),
        "window_s": round(window_s, 2),
        "stored_and_published_per_s": round(published_in_window / window_s, 1),
        "accepted_per_s": round(sum(1 for s in in_window if s.status == 202) / window_s, 1),
        "shed_per_s": round(sum(1 for s in in_window if s.status in SHED) / window_s, 1),
        "errors_per_s": round(sum(1 for s in in_window if s.status == 0) / window_s, 1),
        "other_status_per_s": round(sum(1 for s in in_window if s.status not in (0, 202, *SHED)) / window_s, 1),
        "total_accepted_published": len(published),
        "overall_per_s": round(len(published) / ((last - log.t0_ns) / 1e9), 1) if last > log.t0_ns else None,
        "drain_after_offer_s": round(max(0, last - end) / 1e9, 2),
    }


def by_kind(log: RunLog, arrivals: Mapping[str, int]) -> dict[str, Any]:
    """Per event kind: answers, how fast shed answers came, whether accepted panics still went through."""
    out: dict[str, Any] = {}
    for kind in ("panic", "heartbeat"):
        samples = [s for s in log.samples if s.kind == kind]
        if not samples:
            continue
        shed = [s for s in samples if s.status in SHED]
        accepted = [s for s in samples if s.status == 202]
        entry: dict[str, Any] = {
            "requests": len(samples),
            "statuses": status_counts(samples),
            "accepted_share": round(len(accepted) / len(samples), 4),
            "shed_share": round(len(shed) / len(samples), 4),
            "shed_ms": percentiles([_ms(s.ended_ns - s.started_ns) for s in shed]),
            "shed_with_retry_after": sum(1 for s in shed if s.retry_after),
            "accepted_http_ms": percentiles([_ms(s.ended_ns - s.started_ns) for s in accepted]),
        }
        if kind == "panic":
            e2e = [_ms(arrivals[s.alert_id] - s.started_ns) for s in accepted if s.alert_id in arrivals]
            entry["accepted_published"] = len(e2e)
            entry["e2e_ms"] = percentiles(e2e)
        out[kind] = entry
    return out
