"""Acceptance to first SMS while 50 incidents escalate at once: `python -m bench.escalation` (`--quick`: 2 rounds).

A gateway process (PostgreSQL, Mosquitto, Twilio enabled) escalates by a three-step policy through the phone network
simulator (`firmware_sim.phonenet.PhoneNetwork`), which runs in this process and calls the gateway's webhooks over
HTTPS. Each round, 50 different wearables press within 100 ms; the latency of an incident is the time from the 202
answer to its press until the simulator receives the incident's first SMS request (the Messages create whose body
carries the incident's code, "Reply NNNN to acknowledge"). Every SMS and call is counted per incident against the
policy's: 2 SMS and 1 call, no more (no doubles) and no fewer.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bench import const, probe
from bench.cpu import CpuMeter, CpuSnapshot
from bench.frames import BATTERY, PANIC, Shot
from bench.load import KEEPALIVE, NEW_CONNECTION, LoadClient, RunLog, open_loop
from bench.report import machine_info, write_json
from bench.scenarios import log_events, machine_busy
from bench.stats import percentiles, status_counts
from bench.testbed import MQTT_HOST, MQTT_PORT, PG_ADMIN_DSN, BenchDevice, Testbed
from firmware_sim.phonenet import Behaviour, EventKind, NetEvent, PhoneNetwork
from gateway.config import LogSettings
from gateway.core.incident import short_code_for
from gateway.observability import configure_logging
from gateway.protocol import AlertFrame, EventType, sign_frame
from gateway.store.incidents import incident_id_for

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"

#: The issue's target: the first responder's phone is asked to ring within a second of the press being accepted.
TARGET_P99_MS: Final = 1000.0
#: Incidents escalating at once (a site-wide emergency: every wearer in one wing presses).
DEFAULT_INCIDENTS: Final = 50
#: Rounds of a full run: 10 x 50 = 500 samples, so p99 rests on 5 of them rather than on the maximum.
DEFAULT_ROUNDS: Final = 10
QUICK_ROUNDS: Final = 2
#: The presses of a round are spread over this long (open loop, evenly): "within about 100 ms".
BURST_S: Final = 0.1

#: The simulated Twilio account (any well-formed SID; the token signs the simulator's webhooks).
ACCOUNT_SID: Final = "AC" + "b" * 32
AUTH_TOKEN: Final = "bench-auth-token-0123456789abcdef"
GATEWAY_NUMBER: Final = "+15550000000"
#: The site the testbed enrols every device at; the policy serves it.
SITE: Final = "bench"
#: Responders: (id, name, phone). Ana and Bo get the SMS step, Cy the call step, Sam is the supervisor.
RESPONDERS: Final = (
    ("ana", "Ana Guard", "+15551230001"),
    ("bo", "Bo Guard", "+15551230002"),
    ("cy", "Cy Guard", "+15551230003"),
    ("sam", "Sam Super", "+15551230009"),
)
#: Step 1's wait: an SMS step ends only on its timer (a delivered text may still be read), so every incident's
#: call comes this long after its texts. Long enough that the calls of a round never overlap its SMS burst.
SMS_WAIT_S: Final = 3.0
#: Step 2 (Cy's call) ends with Cy pressing 1; its wait only matters if the acknowledgement is lost.
VOICE_WAIT_S: Final = 5.0
#: Step 3 (an SMS to the supervisor) is never reached when everything works: a ladder left running shows in
#: the counts as a third SMS.
LAST_WAIT_S: Final = 5.0
#: What the policy sends to each incident: step 1's two SMS and step 2's call, then Cy acknowledges.
EXPECTED_SMS: Final = 2
EXPECTED_CALLS: Final = 1
#: An incident whose first SMS has not reached the simulator this long after the round's presses is lost.
FIRST_SMS_TIMEOUT_S: Final = 30.0
#: A round's calls must have ended this long after its texts (ring, answer, TwiML, digit, hang-up take < 1 s).
CALLS_TIMEOUT_S: Final = SMS_WAIT_S + 30.0
#: A round is over once the network has been quiet this long (the last status callbacks have come back) ...
QUIET_S: Final = 1.0
#: ... or after this long, whatever still goes on.
QUIET_MAX_S: Final = 15.0
#: After the last round: long enough for a ladder left running to reach step 3 and send what it should not.
FINAL_SETTLE_S: Final = VOICE_WAIT_S + 2.0
#: The incident's code in its alert SMS (gateway.escalation.messages.sms_text).
CODE_IN_SMS: Final = re.compile(r"Reply (\d{4}) to acknowledge")
#: Outbound messages the gateway asked for (not replies to inbound texts).
OUTBOUND_API: Final = "outbound-api"


@dataclass(frozen=True, slots=True)
class Press:
    """One planned press: its device and counter, the incident id it makes and that incident's SMS code."""

    device_id: str
    counter: int
    alert_id: str
    code: str
    key: ec.EllipticCurvePrivateKey


def plan_presses(devices: Sequence[BenchDevice]) -> list[Press]:
    """One press per device, with counters chosen so that no two incidents of the run share an SMS code.

    Codes are 4 digits derived from the incident id; 500 incidents would share some (the gateway does not mind:
    a reply is matched among its sender's incidents). Choosing the counter makes each body name one incident.
    """
    presses: list[Press] = []
    codes: set[str] = set()
    for device in devices:
        counter = 1
        while (code := short_code_for(incident_id_for(device.device_id, counter))) in codes:
            counter += 1
        codes.add(code)
        key = load_pem_private_key(device.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        alert_id = incident_id_for(device.device_id, counter)
        presses.append(Press(device.device_id, counter, alert_id, code, key))
    return presses


def sign_presses(presses: Sequence[Press]) -> list[Shot]:
    """The round's PANIC frames, signed and timestamped now (just before the clock starts)."""
    timestamp_ms = int(datetime.now(UTC).timestamp() * 1000)
    return [
        Shot(
            sign_frame(AlertFrame(p.device_id, p.counter, timestamp_ms, EventType.PANIC, battery=BATTERY), p.key),
            PANIC,
            p.alert_id,
        )
        for p in presses
    ]


def directory_toml() -> str:
    """The escalation directory: four responders of the site and its three-step policy."""
    people = "".join(
        f'[[responders]]\nid = "{rid}"\nname = "{name}"\nphone = "{phone}"\nsites = ["{SITE}"]\n'
        f"supervisor = {'true' if rid == 'sam' else 'false'}\n\n"
        for rid, name, phone in RESPONDERS
    )
    steps = (
        ("sms", SMS_WAIT_S, '"responder:ana", "responder:bo"'),
        ("voice", VOICE_WAIT_S, '"responder:cy"'),
        ("sms", LAST_WAIT_S, '"supervisor"'),
    )
    policy = f'[[policies]]\nid = "bench"\nsite = "{SITE}"\nsupervisor = "sam"\n\n' + "".join(
        f'[[policies.steps]]\nchannel = "{channel}"\nwait_s = {wait}\ntargets = [{targets}]\n\n'
        for channel, wait, targets in steps
    )
    return people + policy


#: Ana, Bo and Sam receive their texts and never reply; Cy answers every call and presses 1 (acknowledges).
BEHAVIOURS: Final = {"cy": Behaviour(call="answer", press="1")}


@dataclass(slots=True)
class EscalationTestbed(Testbed):
    """The bench's testbed with SMS and calls: Twilio is the phone network simulator, run in this process.

    The simulator starts once the PKI exists (its webhooks trust the PKI's root) and before the gateway (whose
    config names its URL); it stops after the gateway.
    """

    net: PhoneNetwork | None = None
    _net_stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def _start_gateway(self) -> None:
        net = PhoneNetwork(ACCOUNT_SID, AUTH_TOKEN, ssl_context=self.client_ssl())
        self.net = await self._net_stack.enter_async_context(net)
        for rid, name, phone in RESPONDERS:
            net.phone(phone, name=name, behaviour=BEHAVIOURS.get(rid, Behaviour()))
        await Testbed._start_gateway(self)  # zero-argument super() does not work in a slotted dataclass
        net.own_number(GATEWAY_NUMBER, sms_url=f"{self.http_url}/v1/twilio/sms")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await Testbed.__aexit__(self, exc_type, exc, tb)
        finally:
            await self._net_stack.aclose()

    def _config(self, port: int) -> Path:
        assert self.net is not None
        path = Testbed._config(self, port)
        directory = self.workdir / "escalation.toml"
        directory.write_text(directory_toml())
        text = f"""
[twilio]
enabled = true
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
from_number = "{GATEWAY_NUMBER}"
api_base_url = "{self.net.base_url}"
public_url = "https://127.0.0.1:{port}"

[escalation]
file = "{directory}"
"""
        with path.open("a") as config:
            config.write(text)
        return path


@dataclass(slots=True)
class Tally:
    """What the simulator saw of the bench's incidents, indexed as its events come in (monotonic ns).

    Events are read incrementally; each one's wall-clock time is turned into CLOCK_MONOTONIC (the load
    generator's clock) with the offset of the moment it is read, moments after it was recorded.
    """

    alert_by_code: dict[str, str]
    sms_ns: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    sms_to: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    call_ns: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    call_alert: dict[str, str] = field(default_factory=dict)
    #: Incidents one of whose calls has ended (its final status).
    calls_ended: set[str] = field(default_factory=set)
    #: Every outbound SMS request, incidents' or not, for the rate the simulator received.
    all_sms_ns: list[int] = field(default_factory=list)
    unmatched_sms: list[str] = field(default_factory=list)
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    webhooks: collections.Counter[str] = field(default_factory=collections.Counter)
    seen: int = 0

    def update(self, events: Sequence[NetEvent]) -> None:
        offset = time.time_ns() - time.monotonic_ns()
        for event in events[self.seen :]:
            at = round(event.at.timestamp() * 1e9) - offset
            detail = event.detail
            if event.kind == EventKind.MESSAGE_CREATED and detail.get("direction") == OUTBOUND_API:
                self.all_sms_ns.append(at)
                found = CODE_IN_SMS.search(str(detail.get("body", "")))
                alert = self.alert_by_code.get(found.group(1)) if found else None
                if alert is None:
                    self.unmatched_sms.append(str(detail.get("body", ""))[:80])
                    continue
                self.sms_ns[alert].append(at)
                self.sms_to[(alert, event.to)] += 1
            elif event.kind == EventKind.CALL_CREATED:
                alert = _alert_of_call(str(detail.get("url", "")))
                self.call_ns[alert].append(at)
                self.call_alert[event.sid] = alert
            elif event.kind == EventKind.CALL_STATUS and "duration" in detail:  # the final status
                if event.sid in self.call_alert:
                    self.calls_ended.add(self.call_alert[event.sid])
            elif event.kind == EventKind.API_REJECTED:
                self.rejected[f"{detail.get('status')} {detail.get('path')}"] += 1
            elif event.kind == EventKind.WEBHOOK:
                status = detail.get("status")
                self.webhooks[f"{detail.get('purpose')} {status or detail.get('error') or 'no answer'}"] += 1
        self.seen = len(events)

    def first_sms(self, alert: str) -> int | None:
        times = self.sms_ns.get(alert)
        return min(times) if times else None


def _alert_of_call(url: str) -> str:
    """The incident of a call, from its TwiML URL's send key ("{incident}:{step}:voice:{target}")."""
    key = parse_qs(urlsplit(url).query).get("key", [""])[0]
    return key.split(":", 1)[0]


async def _until(net: PhoneNetwork, tally: Tally, done: Callable[[], bool], timeout_s: float) -> bool:
    """Wait until `done()` holds, the tally kept up to date with every event; False on timeout."""

    def check(n: PhoneNetwork) -> bool:
        tally.update(n.events)
        return done()

    try:
        await net.wait_for(check, timeout_s)
    except TimeoutError:
        return False
    return True


async def _quiet(net: PhoneNetwork) -> float:
    """Wait until no event came for QUIET_S (at most QUIET_MAX_S); the seconds waited."""
    started = time.perf_counter()
    count, since = len(net.events), time.perf_counter()
    while time.perf_counter() - since < QUIET_S and time.perf_counter() - started < QUIET_MAX_S:
        await asyncio.sleep(0.1)
        if len(net.events) != count:
            count, since = len(net.events), time.perf_counter()
    return time.perf_counter() - started


@dataclass(slots=True)
class Round:
    """One round: its presses' answers, the CPU snapshots around its burst, and when its first SMS were all in."""

    log: RunLog
    presses: list[Press]
    cpu: list[CpuSnapshot | None]
    first_sms_done: bool
    calls_done: bool
    quiet_s: float

    def accepted(self) -> list[tuple[Press, int]]:
        """(press, monotonic ns of its 202) for every press answered 202."""
        return [(p, s.ended_ns) for p, s in zip(self.presses, self.log.samples, strict=True) if s.status == 202]


async def escalate(net: PhoneNetwork, tally: Tally, client: LoadClient, meter: CpuMeter, presses: list[Press]) -> Round:
    """The presses in BURST_S; wait for every incident's first SMS, then for its call's end, then for quiet."""
    shots = sign_presses(presses)
    before = meter.snapshot()
    log = await open_loop(client, shots, len(shots) / BURST_S)
    alerts = [shot.alert_id for shot, sample in zip(shots, log.samples, strict=True) if sample.status == 202]
    first_done = await _until(
        net, tally, lambda: all(a in tally.sms_ns for a in alerts if a is not None), FIRST_SMS_TIMEOUT_S
    )
    burst = meter.snapshot()  # after every sample of the round was taken: its 4 ms of /proc reading delay nothing
    calls_done = await _until(
        net, tally, lambda: all(a in tally.calls_ended for a in alerts if a is not None), CALLS_TIMEOUT_S
    )
    quiet_s = await _quiet(net)
    tally.update(net.events)
    return Round(log, presses, [before, burst, meter.snapshot()], first_done, calls_done, quiet_s)


def summarise_round(number: int, r: Round, tally: Tally) -> dict[str, Any]:
    """One round's numbers: answers, first-SMS latency, its SMS burst and the cores used."""
    accepted = r.accepted()
    first = [(tally.first_sms(p.alert_id) or 0) - t for p, t in accepted if p.alert_id in tally.sms_ns]
    sms_times = sorted(t for p, _ in accepted for t in tally.sms_ns.get(p.alert_id, []))
    span_s = (sms_times[-1] - sms_times[0]) / 1e9 if len(sms_times) > 1 else 0.0
    before, burst, after = r.cpu
    return {
        "round": number,
        "presses": len(r.presses),
        "statuses": status_counts(r.log.samples),
        "accepted": len(accepted),
        "first_sms_ms": percentiles([ns / 1e6 for ns in first]),
        "lost": [p.alert_id for p, _ in accepted if p.alert_id not in tally.sms_ns],
        "all_first_sms_seen": r.first_sms_done,
        "all_calls_ended": r.calls_done,
        # The round's SMS requests over the time from the first to the last one (the burst the simulator took).
        "sms_requests": len(sms_times),
        "sms_span_s": round(span_s, 3),
        "sms_per_s": round((len(sms_times) - 1) / span_s, 1) if span_s > 0 else None,
        "burst_cores": CpuMeter.cores(before, burst),
        "round_cores": CpuMeter.cores(before, after),
        "burst_s": round(burst.at - before.at, 3) if before and burst else None,
        "round_s": round(after.at - before.at, 3) if before and after else None,
        "quiet_wait_s": round(r.quiet_s, 2),
    }


def weighted_cores(rounds: Sequence[dict[str, Any]], cores: str, seconds: str) -> dict[str, float]:
    """Cores per process group over several windows, weighted by each window's length."""
    total = sum(r[seconds] or 0.0 for r in rounds)
    if total <= 0:
        return {}
    groups = {g for r in rounds for g in r[cores]}
    return {g: round(sum(r[cores].get(g, 0.0) * (r[seconds] or 0.0) for r in rounds) / total, 2) for g in groups}


def peak_per_s(times_ns: Sequence[int]) -> int:
    """The most SMS requests in any one-second window."""
    ordered = sorted(times_ns)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= 1_000_000_000:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def counts_per_incident(presses: Sequence[Press], accepted_ns: dict[str, int], tally: Tally) -> dict[str, Any]:
    """SMS and calls each incident caused, against the policy's; doubles are two sends to one person.

    Each incident off the policy is shown with who got its SMS and when its sends came (ms after its 202).
    """
    sms = collections.Counter(len(tally.sms_ns.get(p.alert_id, [])) for p in presses)
    calls = collections.Counter(len(tally.call_ns.get(p.alert_id, [])) for p in presses)
    who = {phone: rid for rid, _, phone in RESPONDERS}

    def details(alert: str) -> dict[str, Any]:
        t0 = accepted_ns.get(alert, 0)
        return {
            "alert_id": alert,
            "sms_to": {who.get(to, "?"): n for (a, to), n in tally.sms_to.items() if a == alert},
            "sms_ms": [round((t - t0) / 1e6, 1) for t in sorted(tally.sms_ns.get(alert, []))],
            "call_ms": [round((t - t0) / 1e6, 1) for t in sorted(tally.call_ns.get(alert, []))],
        }

    off = [
        details(p.alert_id)
        for p in presses
        if len(tally.sms_ns.get(p.alert_id, [])) != EXPECTED_SMS
        or len(tally.call_ns.get(p.alert_id, [])) != EXPECTED_CALLS
    ]
    doubles = sum(1 for n in tally.sms_to.values() if n > 1) + sum(
        1 for p in presses if len(tally.call_ns.get(p.alert_id, [])) > EXPECTED_CALLS
    )
    return {
        "expected": {"sms": EXPECTED_SMS, "calls": EXPECTED_CALLS},
        "sms_per_incident": {str(k): v for k, v in sorted(sms.items())},
        "calls_per_incident": {str(k): v for k, v in sorted(calls.items())},
        "doubles": doubles,
        "incidents_off_policy": len(off),
        "off_policy_examples": off[:10],
        "match": not off,
    }


async def timeline(database_url: str, alert_id: str) -> list[str]:
    """An incident's events as the gateway stored them: "+ms type detail", ms after the first event."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT type, at, detail FROM incident_events WHERE incident_id = $1 ORDER BY id", alert_id
        )
    finally:
        await conn.close()
    if not rows:
        return []
    t0 = rows[0]["at"]
    return [f"+{(r['at'] - t0).total_seconds() * 1000:.0f} {r['type']} {r['detail']}"[:200] for r in rows]


async def run(args: argparse.Namespace, gateway_log: Path) -> dict[str, Any]:
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    incidents = args.incidents
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {
            "rounds": rounds,
            "incidents": incidents,
            "burst_s": BURST_S,
            "client": args.client,
            "policy": [
                f"sms {SMS_WAIT_S:g} s: ana, bo",
                f"voice {VOICE_WAIT_S:g} s: cy",
                f"sms {LAST_WAIT_S:g} s: sam",
            ],
            "quick": args.quick,
        },
        "machine": await machine_info(PG_ADMIN_DSN, MQTT_HOST, MQTT_PORT),
        "preflight_busy_cores": await machine_busy(const.PREFLIGHT_S),
    }
    if results["preflight_busy_cores"] > const.QUIET_CORES:
        print(f"the machine is not quiet: {results['preflight_busy_cores']} cores busy before the bench started")
    played: list[Round] = []
    summaries: list[dict[str, Any]] = []
    async with EscalationTestbed(rounds * incidents, keep_log=gateway_log) as testbed:
        assert testbed.net is not None
        net = testbed.net
        presses = plan_presses(testbed.devices)
        testbed.alert_ids.update(p.alert_id for p in presses)
        tally = Tally({p.code: p.alert_id for p in presses})
        meter = CpuMeter(testbed.gateway_pid)
        scraped = await probe.scrape(testbed.http_url, testbed.client_ssl())
        first_snapshot = meter.snapshot()
        started = time.perf_counter()
        async with LoadClient(testbed.http_url, testbed.client_ssl(), args.client, incidents) as client:
            await client.warm(incidents)
            for n in range(rounds):
                played.append(await escalate(net, tally, client, meter, presses[n * incidents : (n + 1) * incidents]))
                summaries.append(summarise_round(n + 1, played[-1], tally))
                s = summaries[-1]
                print(
                    f"round {n + 1}/{rounds}: {s['accepted']}/{incidents} accepted, first SMS "
                    f"p50 {s['first_sms_ms']['p50']} ms, max {s['first_sms_ms']['max']} ms, {len(s['lost'])} lost; "
                    f"{s['sms_requests']} SMS requests in {s['sms_span_s']} s"
                )
        print(f"settling {FINAL_SETTLE_S:g} s (a ladder left running would reach its step 3) ...")
        await asyncio.sleep(FINAL_SETTLE_S)
        tally.update(net.events)
        seconds = time.perf_counter() - started
        internals = _internals(scraped, await probe.scrape(testbed.http_url, testbed.client_ssl()), seconds)
        results["busiest_other_cores"] = CpuMeter.busiest_others(first_snapshot, meter.snapshot())
        alive = testbed.gateway_alive()
        tail = testbed.log_tail(20)
        accepted = [pair for r in played for pair in r.accepted()]
        # Only accepted presses made incidents: a refused one (503 overloaded) is in "presses", not here.
        counts = counts_per_incident([p for p, _ in accepted], {p.alert_id: t for p, t in accepted}, tally)
        for example in counts["off_policy_examples"]:  # what the gateway recorded, before its database goes
            example["timeline"] = await timeline(testbed.database_url, example["alert_id"])
    sent = [(p, t) for p, t in accepted if p.alert_id in tally.sms_ns]
    first = percentiles([((tally.first_sms(p.alert_id) or 0) - t) / 1e6 for p, t in sent])
    lost = [a for s in summaries for a in s["lost"]]
    results |= {
        "first_sms_ms": first,
        # 202 to the second SMS of step 1 (both responders asked), and to step 2's call (SMS_WAIT_S later).
        "both_sms_ms": percentiles([(max(tally.sms_ns[p.alert_id]) - t) / 1e6 for p, t in sent]),
        "call_ms": percentiles(
            [(min(tally.call_ns[p.alert_id]) - t) / 1e6 for p, t in accepted if p.alert_id in tally.call_ns]
        ),
        "press_http_ms": percentiles([(s.ended_ns - s.started_ns) / 1e6 for r in played for s in r.log.samples]),
        "presses": {
            "sent": sum(len(r.presses) for r in played),
            "accepted": len(accepted),
            "statuses": _merged([s["statuses"] for s in summaries]),
        },
        "lost": lost,
        "counts": counts,
        "sms_per_s": {
            "median_round": _median([s["sms_per_s"] for s in summaries if s["sms_per_s"]]),
            "peak_1s": peak_per_s(tally.all_sms_ns),
            "requests": len(tally.all_sms_ns),
        },
        "simulator": {
            "api_rejected": dict(tally.rejected),
            "unmatched_sms": tally.unmatched_sms[:10],
            "webhooks": dict(sorted(tally.webhooks.items())),
        },
        # Per process group (bench.cpu): the burst is a round's presses until its last first SMS.
        "cpu_cores": {
            "burst": weighted_cores(summaries, "burst_cores", "burst_s"),
            "round": weighted_cores(summaries, "round_cores", "round_s"),
        },
        "gateway_internals": internals,
        "rounds": summaries,
        "gateway_alive": alive,
        "gateway_log_tail": tail,
    }
    if await asyncio.to_thread(gateway_log.exists):
        results["gateway_log"] = str(gateway_log)
        results["gateway_log_events"] = log_events(await asyncio.to_thread(gateway_log.read_text, errors="replace"))
    p99 = first["p99"]
    results["target"] = {
        "p99_ms": TARGET_P99_MS,
        "met": p99 is not None and p99 <= TARGET_P99_MS and not lost and len(accepted) == len(presses),
    }
    return results


def _merged(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: collections.Counter[str] = collections.Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def _internals(before: probe.Scrape, after: probe.Scrape, seconds: float) -> dict[str, float]:
    """The gateway's own view over the rounds: commit means (bench.probe) and its requests to Twilio."""
    out = probe.delta(before, after, seconds)
    if not before or not after:
        return out

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    requests = grew("panic_notification_request_seconds_count")
    if requests > 0:
        out["twilio_request_ms_mean"] = round(grew("panic_notification_request_seconds_sum") / requests * 1000, 2)
    out["notification_results"] = grew("panic_notifications_total")
    out["webhooks"] = grew("panic_twilio_webhooks_total")
    out["ladder_inputs"] = grew("panic_ladder_changes_total")
    return out


def _cell(value: float | int | None) -> str:
    return f"{value:>9.1f}" if value is not None else f"{'-':>9}"


def print_table(results: dict[str, Any]) -> None:
    options, counts = results["options"], results["counts"]
    print()
    print(
        f"Acceptance -> first SMS at the simulator ({options['rounds']} rounds x {options['incidents']} incidents "
        f"pressed within {options['burst_s'] * 1000:g} ms, {options['client']})"
    )
    print(f"{'':<30}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'n':>6}{'lost':>6}")
    for label, key in (("first SMS (ms)", "first_sms_ms"), ("both SMS of step 1 (ms)", "both_sms_ms")):
        latency = results[key]
        cells = "".join(_cell(latency[k]) for k in ("p50", "p95", "p99", "max"))
        lost = f"{len(results['lost']):>6}" if key == "first_sms_ms" else ""
        print(f"{label:<30}{cells}{latency['n']:>6}{lost}")
    call = results["call_ms"]
    cells = "".join(_cell(call[k]) for k in ("p50", "p95", "p99", "max"))
    print(f"{f'call, step 2 ({SMS_WAIT_S:g} s wait) (ms)':<30}{cells}{call['n']:>6}")
    verdict = "MET" if results["target"]["met"] else "MISSED"
    presses = results["presses"]
    refused = presses["sent"] - presses["accepted"]
    why = f" ({refused} presses refused: not every incident escalated)" if refused else ""
    print(f"{'target p99 <= 1 s':<30}{verdict:>9}{why}")
    print(f"{'presses':<30}{presses['accepted']}/{presses['sent']} accepted {presses['statuses']}")
    print(f"{'SMS per incident':<30}{counts['sms_per_incident']} (policy: {EXPECTED_SMS})")
    print(f"{'calls per incident':<30}{counts['calls_per_incident']} (policy: {EXPECTED_CALLS})")
    match = (
        "yes" if counts["match"] else f"NO: {counts['incidents_off_policy']} incidents off, {counts['doubles']} doubles"
    )
    print(f"{'as the policy says':<30}{match}")
    rate = results["sms_per_s"]
    print(
        f"{'SMS requests/s at simulator':<30}{rate['median_round']} in a round's burst (median), "
        f"{rate['peak_1s']} in the busiest second, {rate['requests']} in all"
    )
    cpu = results["cpu_cores"]
    for label, window in (("CPU cores, bursts", "burst"), ("CPU cores, whole rounds", "round")):
        cores = ", ".join(f"{k} {v}" for k, v in sorted(cpu[window].items()) if v or k == "gateway")
        print(f"{label:<30}{cores}")
    if cpu["round"].get("other", 0.0) > const.QUIET_CORES:
        busiest = ", ".join(results.get("busiest_other_cores", [])) or "short-lived processes"
        print(f"{'':<30}other processes took cores ({busiest}): these numbers are pessimistic")
    internals = results["gateway_internals"]
    if "twilio_request_ms_mean" in internals:
        print(f"{'gateway Twilio request mean':<30}{internals['twilio_request_ms_mean']} ms")
    rejected = results["simulator"]["api_rejected"]
    if rejected:
        print(f"{'simulator refused':<30}{rejected}")
    events = {k: v for k, v in results.get("gateway_log_events", {}).items() if not k.startswith("info")}
    if events:
        print(f"{'gateway log':<30}{events}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.escalation", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds instead of {DEFAULT_ROUNDS}")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--incidents", type=int, default=DEFAULT_INCIDENTS, help="incidents escalating at once")
    parser.add_argument(
        "--client",
        choices=(NEW_CONNECTION, KEEPALIVE),
        default=NEW_CONNECTION,
        help="each press on a new TLS connection (a wearable waking up), or on a warm pool",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    # The simulator logs every message at info: keep this process's console for the bench.
    configure_logging(LogSettings(level="WARNING"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-escalation-quick" if args.quick else "-escalation")
    results = asyncio.run(run(args, args.out / f"{stamp}-gateway.log"))
    print_table(results)
    path = args.out / f"{stamp}.json"
    write_json(path, results)
    print(f"results: {path}")
    return 0 if results["gateway_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
