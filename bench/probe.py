"""What the gateway says about itself: deltas of its Prometheus metrics over one run."""

from __future__ import annotations

import contextlib
import ssl
from typing import Final

import aiohttp

#: Histograms whose mean over a run explains where the time went (name -> key in the results).
HISTOGRAMS: Final = {
    "panic_commit_batch_size": "commit_batch_mean",
    "panic_commit_latency_seconds": "commit_ms_mean",
    "panic_publish_latency_seconds": "publish_ms_mean",
    "panic_ingest_latency_seconds": "ingest_ms_mean",
}

Scrape = dict[str, float]


async def scrape(base_url: str, ssl_context: ssl.SSLContext) -> Scrape:
    """Every sample of /metrics summed over its labels; empty when the gateway does not answer."""
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context), timeout=aiohttp.ClientTimeout(total=10)
            ) as http,
            http.get(f"{base_url}/metrics") as r,
        ):
            return parse(await r.text())
    return {}


def parse(text: str) -> Scrape:
    out: Scrape = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def delta(before: Scrape, after: Scrape, seconds: float) -> dict[str, float]:
    """Means of the histograms above over the run, and commits per second."""
    out: dict[str, float] = {}
    if not before or not after:
        return out
    for name, key in HISTOGRAMS.items():
        count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
        if count > 0:
            scale = 1000.0 if name.endswith("_seconds") else 1.0
            out[key] = round(total / count * scale, 2)
    commits = after.get("panic_commit_batch_size_count", 0.0) - before.get("panic_commit_batch_size_count", 0.0)
    if seconds > 0:
        out["commits_per_s"] = round(commits / seconds, 1)
    return out
