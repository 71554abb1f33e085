"""What a run produces: machine facts, verdicts against the issue's targets, the summary table, JSON and a plot."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import platform
import ssl
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
from rich.console import Console
from rich.table import Table

from bench import const

PACKAGES = ("aiohttp", "aiomqtt", "paho-mqtt", "cryptography", "tortoise-orm", "asyncpg", "structlog", "matplotlib")

MET = "[green]MET[/green]"
MISSED = "[bold red]MISSED[/bold red]"


async def machine_info(pg_dsn: str, mqtt_host: str, mqtt_port: int) -> dict[str, Any]:
    """Cores, CPU, memory, Python and package versions, OpenSSL, PostgreSQL and Mosquitto versions, git commit."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
        "packages": {p: _version(p) for p in PACKAGES},
        "git": _git(),
    }
    try:
        conn = await asyncpg.connect(pg_dsn)
        try:
            info["postgresql"] = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        info["postgresql"] = f"unknown ({exc})"
    info["mosquitto"] = await _broker_version(mqtt_host, mqtt_port)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(kb / 1024 / 1024, 1)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


async def _broker_version(host: str, port: int) -> str | None:
    try:
        async with aiomqtt.Client(host, port, identifier=f"bench-version-{uuid.uuid4().hex[:8]}") as client:
            await client.subscribe("$SYS/broker/version")
            async with asyncio.timeout(2):
                async for message in client.messages:
                    return bytes(message.payload).decode()  # type: ignore[arg-type]
    except (aiomqtt.MqttError, TimeoutError, OSError):
        return None
    return None


# -- verdicts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """One of the issue's targets: what was measured against what was asked."""

    target: str
    measured: str
    met: bool
    note: str = ""


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    for step in results.get("latency", []):
        if step["offered_per_s"] == const.TARGET_P99_RATE:
            p99 = step["e2e_ms"]["p99"]
            lost = step["accepted_not_published"] + (step["panics"] - step["accepted"])
            out.append(
                Verdict(
                    f"p99 <= {const.TARGET_P99_AT_200_MS:g} ms at {const.TARGET_P99_RATE}/s ({step['mode']})",
                    f"p99 {p99} ms",
                    p99 is not None and p99 <= const.TARGET_P99_AT_200_MS and lost == 0,
                    f"{lost} not accepted or not published" if lost else "",
                )
            )
    if "sustained" in results:
        rate = results["sustained"]["busy_per_s"] or 0.0
        out.append(
            Verdict(
                f"sustained >= {const.TARGET_SUSTAINED_PER_S:g} alerts/s stored and published",
                f"{rate}/s",
                rate >= const.TARGET_SUSTAINED_PER_S,
            )
        )
    if "overload" in results:
        kinds = results["overload"]["by_kind"]
        panic, heartbeat = kinds.get("panic", {}), kinds.get("heartbeat", {})
        shed = [k for k in (panic, heartbeat) if k.get("shed_ms", {}).get("n")]
        worst = max((k["shed_ms"]["p99"] for k in shed), default=None)
        answered = sum(k["shed_ms"]["n"] for k in shed)
        with_retry = sum(k["shed_with_retry_after"] for k in shed)
        offered = results["overload"]["offered_per_s"]
        if worst is None:
            accepted_p99 = panic.get("accepted_http_ms", {}).get("p99")
            out.append(
                Verdict(
                    f"shed (429/503) within {const.TARGET_SHED_MS:g} ms at 2x ({offered}/s)",
                    "nothing shed",
                    False,
                    f"no 429/503 at all; accepted panics' HTTP p99 {accepted_p99} ms (queued instead of shed)",
                )
            )
        else:
            out.append(
                Verdict(
                    f"shed (429/503) within {const.TARGET_SHED_MS:g} ms at 2x ({offered}/s)",
                    f"shed p99 {worst} ms",
                    worst <= const.TARGET_SHED_MS and with_retry == answered,
                    f"{answered - with_retry} shed answers without Retry-After" if with_retry != answered else "",
                )
            )
        published = panic.get("accepted_published", 0)
        accepted = round(panic.get("accepted_share", 0) * panic.get("requests", 0))
        out.append(
            Verdict(
                "accepted panics still get through at 2x",
                f"{published}/{accepted} published, e2e p99 {panic.get('e2e_ms', {}).get('p99')} ms",
                accepted > 0 and published == accepted,
            )
        )
        if heartbeat:
            hb, pn = heartbeat.get("shed_share", 0), panic.get("shed_share", 0)
            # "Before" means a clear order, not a tie: once panics are shed, heartbeats must be shed at least
            # twice as often (or all of them).
            ordered = hb > pn and (pn == 0 or hb >= min(const.SHED_ALL_HEARTBEATS, const.SHED_ORDER_FACTOR * pn))
            out.append(
                Verdict(
                    "heartbeats shed before panics",
                    f"heartbeats shed {hb:.1%}, panics shed {pn:.1%}",
                    ordered,
                    "nothing shed" if hb == pn == 0 else "",
                )
            )
    if "attack" in results:
        valid = results["attack"]["valid"]
        p99 = valid["e2e_ms"]["p99"]
        achieved = results["attack"]["invalid"]["achieved_per_s"]
        lost = valid["panics"] - valid["published"]
        out.append(
            Verdict(
                f"valid p99 <= {const.TARGET_ATTACK_P99_MS:g} ms under {const.ATTACK_INVALID_PER_S} invalid req/s",
                f"p99 {p99} ms (flood achieved {achieved:.0f}/s)",
                p99 is not None and p99 <= const.TARGET_ATTACK_P99_MS and lost == 0,
                f"{lost} valid alerts not published" if lost else "",
            )
        )
    return out


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """How the gateway's numbers compare with the machine's raw limits."""
    out: dict[str, Any] = {}
    raw = results.get("raw", {})
    verify = raw.get("ecdsa_p256", {}).get("parse_and_verify_per_s")
    mqtt = raw.get("mqtt_qos1", {})
    sustained = results.get("sustained", {}).get("busy_per_s")
    if verify and sustained:
        out["sustained_over_verify"] = round(sustained / verify, 3)
    if mqtt.get("pipelined_publish_per_s") and sustained:
        # Each alert is two QoS 1 publishes (retained state and the "raised" event).
        out["sustained_publishes_over_mqtt_pipelined"] = round(2 * sustained / mqtt["pipelined_publish_per_s"], 3)
    rtt = mqtt.get("round_trip_ms", {}).get("p50")
    for step in results.get("latency", []):
        if step["offered_per_s"] == const.TARGET_P99_RATE and step["mode"] == "keep-alive" and rtt:
            p50 = step["e2e_ms"]["p50"]
            if p50:
                out["e2e_p50_at_200_over_mqtt_rtt_p50"] = round(p50 / rtt, 1)
    return out


# -- output -----------------------------------------------------------------------------------------------


def _f(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


def print_summary(console: Console, results: dict[str, Any]) -> None:
    machine = results.get("machine", {})
    console.rule("[bold]panic-gateway benchmark")
    console.print(
        f"{machine.get('cores')} cores ({machine.get('cpu')}), Python {machine.get('python')}, "
        f"{machine.get('openssl')}, PostgreSQL {machine.get('postgresql')}, {machine.get('mosquitto')}; "
        "gateway, database, broker and load generator all share these cores."
    )
    busy = max(results.get("preflight_busy_cores", 0.0), results.get("busiest_other_cores", 0.0))
    if busy > const.QUIET_CORES:
        console.print(
            f"[bold yellow]The machine was not quiet: up to {busy} cores were used by processes outside the bench "
            "(see cpu_cores.other per run). The numbers below are pessimistic.[/bold yellow]"
        )
    if results.get("options", {}).get("quick"):
        console.print("[yellow]--quick: short steps, indicative only; run without --quick for the numbers.[/yellow]")

    raw = results.get("raw")
    if raw:
        t = Table(title="Raw limits on this machine", title_justify="left")
        t.add_column("measure")
        t.add_column("value", justify="right")
        e = raw["ecdsa_p256"]
        m = raw["mqtt_qos1"]
        t.add_row("ECDSA P-256 verify, 1 core (cryptography)", f"{e['raw_verify_per_s']}/s")
        t.add_row("frame parse + verify (gateway code), 1 core", f"{e['parse_and_verify_per_s']}/s")
        rt = m["round_trip_ms"]
        t.add_row("MQTT QoS 1 round trip publish -> subscriber", f"p50 {rt['p50']} ms, p99 {rt['p99']} ms")
        t.add_row(
            f"MQTT QoS 1 pipelined publish ({m['payload_bytes']} B)",
            f"{m['pipelined_publish_per_s']}/s acked, {m['pipelined_delivered_per_s']}/s delivered",
        )
        pg = raw.get("postgres")
        if pg:
            c = pg["commit_ms"]
            t.add_row(
                "PostgreSQL one-row INSERT + COMMIT, sequential",
                f"p50 {c['p50']} ms, p99 {c['p99']} ms, {pg['commits_per_s']}/s",
            )
        console.print(t)

    steps = results.get("latency", [])
    if steps:
        t = Table(title="Press-to-command-center latency, open loop (ms from send start to MQTT arrival)")
        columns = ("mode", "offered/s", "sent/s", "202", "not 202", "p50", "p95", "p99", "p99.9", "max", "HTTP p99")
        for col in columns:
            t.add_column(col, justify="right")
        for col in ("gw cores", "gw ms/req", "batch", "commit ms", "other cores"):
            t.add_column(col, justify="right")
        for s in steps:
            e = s["e2e_ms"]
            t.add_row(
                s["mode"].replace("new-connection", "new-conn"),
                str(s["offered_per_s"]),
                _f(s["achieved_send_per_s"]),
                str(s["statuses"].get("202", 0)),
                _short_statuses(s["statuses"]),
                _f(e["p50"]),
                _f(e["p95"]),
                _f(e["p99"]),
                _f(e["p99.9"]),
                _f(e["max"]),
                _f(s["http_ms"]["p99"]),
                _f(s["cpu_cores"].get("gateway")),
                _f(s.get("gateway_cpu_ms_per_request")),
                _f(s.get("gateway_internals", {}).get("commit_batch_mean")),
                _f(s.get("gateway_internals", {}).get("commit_ms_mean")),
                _f(s["cpu_cores"].get("other")),
            )
        console.print(t)

    if "sustained" in results:
        s = results["sustained"]
        t = Table(title=f"Sustained: offered {s['offered_per_s']}/s (keep-alive), steady window {s['window_s']} s")
        t.add_column("measure")
        t.add_column("value", justify="right")
        t.add_row("stored (202) and published, first to last publication", f"{s['busy_per_s']}/s over {s['busy_s']} s")
        t.add_row("stored (202) and published, steady window", f"{s['stored_and_published_per_s']}/s")
        t.add_row("answered 202", f"{s['accepted_per_s']}/s")
        t.add_row("shed 429/503", f"{s['shed_per_s']}/s")
        t.add_row("no answer (errors, timeouts)", f"{s['errors_per_s']}/s")
        shed = s.get("by_kind", {}).get("panic", {}).get("shed_ms", {})
        t.add_row("shed answers: latency p50 / p99", f"{_f(shed.get('p50'))} / {_f(shed.get('p99'))} ms")
        t.add_row("publications still draining after the offer ended", f"{s['drain_after_offer_s']} s")
        t.add_row("published although the device got no 202 (timeout)", str(s["latency"]["published_not_accepted"]))
        lat = s["latency"]
        t.add_row("accepted: e2e p50 / p99", f"{_f(lat['e2e_ms']['p50'])} / {_f(lat['e2e_ms']['p99'])} ms")
        t.add_row("requests queued in the client (pool too small)", str(lat["client_queued"]))
        t.add_row("CPU cores used", _cores(s["cpu_cores"]))
        t.add_row("gateway CPU per request", f"{_f(s.get('gateway_cpu_ms_per_request'))} ms")
        t.add_row("gateway internals (means)", _internals(s))
        console.print(t)

    if "overload" in results:
        o = results["overload"]
        t = Table(
            title=f"Overload: offered {o['offered_per_s']}/s (2x the best {o['based_on_sustained_per_s']}/s stored "
            "and published in this run), 30% heartbeats"
        )
        for col in (
            "kind",
            "requests",
            "202",
            "shed",
            "shed p50",
            "shed p99",
            "Retry-After",
            "202 HTTP p99",
            "e2e p99",
        ):
            t.add_column(col, justify="right")
        for kind, k in o["by_kind"].items():
            t.add_row(
                kind,
                str(k["requests"]),
                f"{k['accepted_share']:.1%}",
                f"{k['shed_share']:.1%}",
                _f(k["shed_ms"]["p50"]),
                _f(k["shed_ms"]["p99"]),
                f"{k['shed_with_retry_after']}/{k['shed_ms']['n']}",
                _f(k["accepted_http_ms"]["p99"]),
                _f(k.get("e2e_ms", {}).get("p99")),
            )
        console.print(t)
        console.print(f"  CPU cores: {_cores(o['cpu_cores'])}; requests queued in the client {o['client_queued']}")
        console.print(f"  gateway internals (means): {_internals(o)}")

    if "attack" in results:
        a = results["attack"]
        v, inv = a["valid"], a["invalid"]
        t = Table(title="Under attack")
        t.add_column("measure")
        t.add_column("value", justify="right")
        t.add_row(
            "invalid requests (garbage + bad signatures)",
            f"{inv['achieved_per_s']:.0f}/s achieved of {const.ATTACK_INVALID_PER_S}/s, "
            f"skipped {inv['skipped_saturated']}",
        )
        t.add_row("invalid answers", ", ".join(f"{k}:{n}" for k, n in inv["statuses"].items()))
        t.add_row(
            "invalid answer latency p50 / p99", f"{_f(inv['latency_ms']['p50'])} / {_f(inv['latency_ms']['p99'])} ms"
        )
        t.add_row("valid alerts/s", str(v["offered_per_s"]))
        t.add_row("valid statuses", ", ".join(f"{k}:{n}" for k, n in v["statuses"].items()))
        e = v["e2e_ms"]
        t.add_row("valid e2e p50 / p99 / max", f"{_f(e['p50'])} / {_f(e['p99'])} / {_f(e['max'])} ms")
        t.add_row("CPU cores used", _cores(v["cpu_cores"]))
        t.add_row("gateway CPU per request (valid + invalid)", f"{_f(v.get('gateway_cpu_ms_per_request'))} ms")
        console.print(t)

    r = results.get("ratios", {})
    if r:
        console.print("Ratios: " + ", ".join(f"{k} = {v}" for k, v in r.items()))

    t = Table(title="Targets from the issue")
    t.add_column("target")
    t.add_column("measured", justify="right")
    t.add_column("verdict")
    t.add_column("note")
    for v in results.get("verdicts", []):
        t.add_row(v["target"], v["measured"], MET if v["met"] else MISSED, v["note"])
    console.print(t)
    events = results.get("gateway_log_events")
    if events:
        listed = "; ".join(f"{k} x{n}" for k, n in events.items())
        console.print(f"[yellow]gateway log ({results.get('gateway_log')}):[/yellow] {listed}")
    if results.get("error"):
        console.print(f"[bold red]run aborted:[/bold red] {results['error']}")


def _short_statuses(statuses: dict[str, int]) -> str:
    """Everything but 202, by code (503, 429...) or error (timeout...); the problems' reasons are in the JSON."""
    counts: dict[str, int] = {}
    for key, n in statuses.items():
        if key == "202":
            continue
        kind, _, detail = key.partition(":")
        label = (detail.removesuffix("Error").lower() or "error") if kind == "error" else kind
        counts[label] = counts.get(label, 0) + n
    return " ".join(f"{k}x{n}" for k, n in counts.items()) or "-"


def _internals(part: dict[str, Any]) -> str:
    i = part.get("gateway_internals", {})
    if not i:
        return "-"
    return (
        f"commit batch {_f(i.get('commit_batch_mean'))}, commit {_f(i.get('commit_ms_mean'))} ms, "
        f"{_f(i.get('commits_per_s'))} commits/s, stored->PUBACK {_f(i.get('publish_ms_mean'))} ms, "
        f"in-handler {_f(i.get('ingest_ms_mean'))} ms"
    )


def _cores(cores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v}" for k, v in cores.items() if v or k in ("gateway", "machine"))


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def plot(path: Path, results: dict[str, Any]) -> bool:
    """Latency percentiles vs offered rate (keep-alive and new connection) and the CDF of every step."""
    steps = results.get("latency", [])
    if not steps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    styles = {"keep-alive": "-", "new-connection": "--"}
    colours = {"p50": "tab:blue", "p95": "tab:green", "p99": "tab:orange", "p99.9": "tab:red"}
    for mode, style in styles.items():
        mine = [s for s in steps if s["mode"] == mode]
        if not mine:
            continue
        rates = [s["offered_per_s"] for s in mine]
        for q, colour in colours.items():
            values = [s["e2e_ms"][q] for s in mine]
            left.plot(rates, values, style, marker="o", color=colour, label=f"{q} {mode}")
    left.axhline(const.TARGET_P99_AT_200_MS, color="grey", linestyle=":", label="target p99 at 200/s")
    left.set_xlabel("offered alerts/s (open loop)")
    left.set_ylabel("press to command center (ms)")
    left.set_yscale("log")
    left.set_title("Latency percentiles vs offered rate")
    left.legend(fontsize=7, ncol=2)
    left.grid(True, which="both", alpha=0.3)
    for s in steps:
        points = s.get("e2e_cdf") or []
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        right.plot(xs, ys, styles.get(s["mode"], "-"), label=f"{s['mode']} {s['offered_per_s']}/s")
    right.set_xscale("log")
    right.set_xlabel("press to command center (ms)")
    right.set_ylabel("fraction of alerts")
    right.set_title("CDF")
    right.legend(fontsize=7)
    right.grid(True, which="both", alpha=0.3)
    machine = results.get("machine", {})
    fig.suptitle(
        f"panic-gateway bench {results.get('started_at', '')} - {machine.get('cores')} shared cores, "
        f"Python {machine.get('python')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
