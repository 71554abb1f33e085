"""`make demo`: the gateway on embedded defaults, simulated wearables and phones, and a live command-center view."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import secrets
import shutil
import signal
import socket
import ssl
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import aiomqtt
from pydantic import SecretStr
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from firmware_sim.phonenet import Behaviour, EventKind, NetEvent, PhoneNetwork
from firmware_sim.phonenet_cli import event_line
from firmware_sim.sms_uplink import FallbackUplink, SmsUplink
from firmware_sim.transport import HttpUplink, UplinkResult
from firmware_sim.wearable import VirtualWearable, enroll
from gateway.app import running_gateway
from gateway.config import (
    DatabaseSettings,
    EscalationSettings,
    GatewaySettings,
    HttpSettings,
    LogSettings,
    MqttSettings,
    PkiSettings,
    TwilioSettings,
)
from gateway.console.auth import Role
from gateway.console.store import add_operator
from gateway.identity.pki import PkiLayout, init_pki, issue_device_certificate, load_device_ca
from gateway.identity.trust import load_device_trust
from gateway.observability import configure_logging
from gateway.protocol import EventType, GpsFix
from gateway.store.registry import DeviceRegistry

#: The cast of the demo: wearer, site, and where they are (outdoors with GPS, or indoors without).
WEARERS: Final = [
    ("Ada Lovelace", "plant-north", GpsFix(52.5203, 13.4049, 6, 1)),
    ("Grace Hopper", "plant-north", None),
    ("Katherine Johnson", "depot-east", GpsFix(52.5151, 13.4541, 12, 3)),
    ("Alan Turing", "depot-east", None),
    ("Hedy Lamarr", "hq", GpsFix(52.5075, 13.3903, 25, 8)),
]
#: What responders read about each wearer, and whom the "contacts" target reaches (name, phone, relation).
WEARER_NOTES: Final = {
    "Ada Lovelace": ("Diabetic: glucose gel in the first-aid box at gate 2.", ("Anne Lovelace", "daughter")),
    "Grace Hopper": ("Works alone on night shifts in hall B.", ("Vincent Hopper", "husband")),
    "Katherine Johnson": ("Asthma: inhaler in locker 12.", ("Joylette Johnson", "daughter")),
    "Alan Turing": ("Runs the yard; no known conditions.", ("Ethel Turing", "mother")),
    "Hedy Lamarr": ("Hard of hearing: prefer SMS.", ("Anthony Loder", "son")),
}
#: Seconds between simulated presses (random in this range): a steady, readable stream.
PRESS_EVERY_S: Final = (2.0, 5.0)
#: The simulated operator takes every third new alert over MQTT after this long: inside the ladders' first
#: (MQTT) rung, so those never reach a phone, and the other alerts show the ladder.
OPERATOR_EVERY: Final = 3
OPERATOR_DELAY_S: Final = 3.0
#: Share of presses made by a wearable without data: its HTTPS attempts fail, and it texts the frame instead.
NO_DATA_SHARE: Final = 0.2
#: How long a wearable without data tries HTTPS before texting: short, so the fallback shows on screen at once.
NO_DATA_HTTPS_S: Final = 2.0
#: Rows and lines the board shows: with the banner and the panels' frames it fits a 120x40 terminal.
ALERT_ROWS: Final = 8
LOG_LINES: Final = 6
PHONE_LINES: Final = 12
STATE_STYLE: Final = {
    "raised": "bold white on red",
    "notifying": "bold black on yellow",
    "acknowledged": "bold black on green",
    "cancelled": "dim",
    "resolved": "dim green",
    "exhausted": "bold white on magenta",
}

# --- the phone side: the gateway's number, responders, their handsets and the ladders -------------------------

#: The gateway's Twilio number (the simulated network's own number).
GATEWAY_NUMBER: Final = "+15550000000"


class Responder(NamedTuple):
    """A person of the demo's escalation directory, and how their simulated phone behaves."""

    id: str
    name: str
    phone: str
    sites: tuple[str, ...]
    behaviour: Behaviour
    supervisor: bool = False


#: Every way a phone can answer appears: Nora texts the code back, Nils and Devi answer and press 1, Hal lets it
#: ring out, Hugo is busy, Eli's phone is off (texts undelivered); the others read texts and do nothing.
#: Delays are a person's, not a test's: the board shows each step. Numbers differ in their last four digits, the
#: part a masked number keeps.
RESPONDERS: Final = (
    Responder("nora", "Nora Quinn", "+15551110011", ("plant-north",), Behaviour(reply="ok {code}", reply_after_s=3.0)),
    Responder("ned", "Ned Park", "+15551110012", ("plant-north",), Behaviour()),
    Responder(
        "nils", "Nils Berg", "+15551110013", ("plant-north",), Behaviour(call="answer", answer_after_s=2.0, press="1")
    ),
    Responder("dana", "Dana Cruz", "+15552220021", ("depot-east",), Behaviour()),
    Responder("eli", "Eli Moss", "+15552220022", ("depot-east",), Behaviour(sms="undeliverable")),
    Responder(
        "devi", "Devi Rao", "+15552220023", ("depot-east",), Behaviour(call="answer", answer_after_s=2.5, press="1")
    ),
    Responder("hana", "Hana Sato", "+15553330031", ("hq",), Behaviour()),
    Responder("hal", "Hal Ortiz", "+15553330032", ("hq",), Behaviour(call="no-answer")),
    Responder("hugo", "Hugo Weiss", "+15553330033", ("hq",), Behaviour(call="busy")),
    Responder("sam", "Sam Okafor", "+15559990099", ("plant-north", "depot-east", "hq"), Behaviour(), supervisor=True),
)
GROUPS: Final = {"north-on-call": ("nora", "ned"), "east-on-call": ("dana", "eli"), "hq-on-call": ("hana",)}
#: One ladder per site: the command center has 5 s, then the on-call group is texted, then someone is called.
#: plant-north ends with Nora's reply, depot-east with Devi's key press; hq's calls fail and the ladder runs out.
POLICIES: Final = {
    "plant-north": (("mqtt", 5, ()), ("sms", 8, ("group:north-on-call",)), ("voice", 8, ("responder:nils",))),
    "depot-east": (("mqtt", 5, ()), ("sms", 8, ("group:east-on-call",)), ("voice", 8, ("responder:devi",))),
    "hq": (
        ("mqtt", 5, ()),
        ("sms", 8, ("group:hq-on-call", "contacts")),
        ("voice", 8, ("responder:hal", "responder:hugo")),
    ),
}


def device_id(index: int) -> str:
    """The demo's device ids: demo-001 for WEARERS[0]."""
    return f"demo-{index + 1:03d}"


def wearer_phone(index: int) -> str:
    """The phone each demo wearable is registered with (and texts from when it has no data)."""
    return f"+1555700{index + 101:04d}"


def contact_phone(index: int) -> str:
    return f"+1555710{index + 201:04d}"


def escalation_directory() -> str:
    """The demo's escalation directory as TOML (docs/ESCALATION.md)."""
    lines: list[str] = []
    for r in RESPONDERS:
        lines += [
            "[[responders]]",
            f"id = {_toml(r.id)}",
            f"name = {_toml(r.name)}",
            f"phone = {_toml(r.phone)}",
            f"sites = {_toml(list(r.sites))}",
            f"supervisor = {_toml(r.supervisor)}",
            "",
        ]
    for group, members in GROUPS.items():
        lines += ["[[groups]]", f"id = {_toml(group)}", f"members = {_toml(list(members))}", ""]
    for index, (wearer, _, _) in enumerate(WEARERS):
        notes, (contact, relation) = WEARER_NOTES[wearer]
        lines += [
            "[[wearers]]",
            f"device = {_toml(device_id(index))}",
            f"notes = {_toml(notes)}",
            "[[wearers.contacts]]",
            f"name = {_toml(contact)}",
            f"phone = {_toml(contact_phone(index))}",
            f"relation = {_toml(relation)}",
            "",
        ]
    for site, steps in POLICIES.items():
        lines += ["[[policies]]", f"id = {_toml(site + '-default')}", f"site = {_toml(site)}", 'supervisor = "sam"', ""]
        for channel, wait_s, targets in steps:
            lines += ["[[policies.steps]]", f"channel = {_toml(channel)}", f"wait_s = {wait_s}"]
            lines += [f"targets = {_toml(list(targets))}", ""] if targets else [""]
    return "\n".join(lines)


def _toml(value: str | bool | list[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # a JSON string or array of strings is the same in TOML


def phone_names() -> dict[str, str]:
    """Who holds each number of the demo, for the phone panel."""
    names = {GATEWAY_NUMBER: "gateway"}
    names.update({r.phone: r.name for r in RESPONDERS})
    for index, (wearer, _, _) in enumerate(WEARERS):
        names[wearer_phone(index)] = f"{wearer}'s wearable"
        names[contact_phone(index)] = f"{WEARER_NOTES[wearer][1][0]} ({wearer}'s {WEARER_NOTES[wearer][1][1]})"
    return names


# --- the board --------------------------------------------------------------------------------------------------


@dataclass
class Board:
    """What the command-center view shows: alerts and their ladders from MQTT, the phones from the network."""

    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The ladder's current rung per alert ("sms 2/3"), from its "step-started" events.
    rungs: dict[str, str] = field(default_factory=dict)
    #: How each acknowledged alert was taken ("sms", "voice", "mqtt"), from its "acknowledged" event.
    acked_via: dict[str, str] = field(default_factory=dict)
    log: deque[Text] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    phone: deque[Text] = field(default_factory=lambda: deque(maxlen=PHONE_LINES))
    gateway: str = "connecting..."

    def say(self, markup: str) -> None:
        """A line for the wearables-and-operator panel, newest first."""
        when = datetime.now(UTC).strftime("%H:%M:%S")
        line = Text.from_markup(f"{when} {markup}", overflow="ellipsis")
        line.no_wrap = True
        self.log.appendleft(line)

    def render(self, banner: str) -> Group:
        table = Table(
            title="Command center: live alerts (from MQTT)",
            expand=True,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            collapse_padding=True,
            pad_edge=False,
        )
        for col, width in (("code", 4), ("time", 8), ("wearer", 17), ("site", 11), ("event", 12)):
            table.add_column(col, no_wrap=True, min_width=width)
        table.add_column("location", no_wrap=True, overflow="ellipsis", max_width=20)
        table.add_column("ladder", no_wrap=True, min_width=9)
        table.add_column("state", no_wrap=True, overflow="ellipsis", min_width=24)
        ordered = sorted(self.alerts.values(), key=lambda a: a["received_at"], reverse=True)[:ALERT_ROWS]
        for a in ordered:
            loc = a.get("location")
            where = "unknown"
            if loc:
                lon, lat = loc["geometry"]["coordinates"]
                where = f"{lat:.3f},{lon:.3f} ±{loc['properties']['accuracy_m']}m"
            state = a["state"]
            if a.get("acknowledged_by"):
                via = self.acked_via.get(a["alert_id"])
                state = f"acked by {a['acknowledged_by']}" + (f" ({via})" if via else "")
            event = (
                a["event"] + (" (delayed)" if a.get("delayed") else "") + (" by SMS" if a["transport"] == "sms" else "")
            )
            table.add_row(
                a.get("short_code") or a["alert_id"][:4],
                a["received_at"][11:19],
                a["device"]["wearer"],
                a["device"]["site"],
                event,
                where,
                self.rungs.get(a["alert_id"], ""),
                Text(state, style=STATE_STYLE.get(a["state"], "")),
            )
        log = Panel(
            Group(*self.log) if self.log else Text("waiting for presses..."),
            title="wearables and operator (newest first)",
            height=LOG_LINES + 2,
        )
        phone = Panel(
            Group(*self.phone) if self.phone else Text("no SMS or call yet"),
            title="phone network: SMS and calls (simulated Twilio, newest first)",
            height=PHONE_LINES + 2,
        )
        top = Text(banner, no_wrap=True, overflow="ellipsis")
        return Group(top, Text(f"gateway status: {self.gateway}", no_wrap=True), table, log, phone)

    def follow(self, event: NetEvent, names: Mapping[str, str]) -> None:
        """Add a phone-network event to the phone panel, if it is one a person would notice."""
        style = _phone_style(event)
        if style is None:
            return
        when = event.at.astimezone(UTC).strftime("%H:%M:%S")
        line = Text(f"{when} ", overflow="ellipsis", no_wrap=True)
        line.append(event_line(event, names, with_sid=False), style=style)
        self.phone.appendleft(line)


def _phone_style(event: NetEvent) -> str | None:
    """How a network event is shown on the phone panel; None: not shown (delivery receipts, webhooks that worked)."""
    d = event.detail
    kind = event.kind
    if kind is EventKind.HANDSET_SMS:
        body = str(d.get("body", ""))
        if body.startswith("NOBODY ANSWERED"):
            return "bold magenta"
        return "green" if body.startswith(("You have it", "Alert received")) else "cyan"
    if kind is EventKind.MESSAGE_CREATED and d.get("direction") == "inbound":
        return "bold yellow" if event.from_.startswith("+1555700") else "bold green"
    if kind is EventKind.MESSAGE_STATUS:
        return "red" if d.get("status") in ("undelivered", "failed") else None
    if kind is EventKind.CALL_STATUS:
        return {
            "ringing": "yellow",
            "in-progress": "green",
            "completed": "dim",
            "canceled": "dim",
            "no-answer": "red",
            "busy": "red",
            "failed": "red",
        }.get(str(d.get("status")))
    if kind is EventKind.CALL_DIGITS:
        return "bold green"
    if kind is EventKind.WEBHOOK:
        status = d.get("status")
        return "bold red" if status is None or status >= 400 else None
    if kind in (EventKind.TWIML_ERROR, EventKind.API_REJECTED):
        return "bold red"
    return None


# --- wearables and the command center ----------------------------------------------------------------------------


class DemoWearable(NamedTuple):
    wearable: VirtualWearable
    wearer: str
    site: str
    #: Its SMS path, for presses without data.
    sms: SmsUplink


async def _enroll_fleet(layout: PkiLayout, workdir: Path, net: PhoneNetwork) -> list[DemoWearable]:
    device_ca = load_device_ca(layout)
    registry = DeviceRegistry(load_device_trust(layout))
    fleet = []
    for index, (wearer, site, gps) in enumerate(WEARERS):
        wearable = enroll(
            workdir / "devices" / device_id(index),
            device_id(index),
            lambda csr: issue_device_certificate(device_ca, csr),
            gps=gps,
        )
        phone = wearer_phone(index)
        await registry.add(wearable.certificate, wearer=wearer, site=site, phone=phone, now=datetime.now(UTC))
        fleet.append(DemoWearable(wearable, wearer, site, SmsUplink(net, phone=phone, gateway_number=GATEWAY_NUMBER)))
    return fleet


async def _watch(board: Board, host: str, port: int, prefix: str) -> None:
    pending: set[asyncio.Task[None]] = set()
    seen: set[str] = set()
    async with aiomqtt.Client(host, port, identifier="demo-command-center") as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        async for msg in client.messages:
            if not isinstance(msg.payload, bytes | bytearray) or not msg.payload:
                continue
            doc = json.loads(msg.payload)
            kind = str(msg.topic).rsplit("/", 1)[-1]
            if kind == "state":
                alert_id = doc["alert_id"]
                old = board.alerts.get(alert_id)
                if old is None or doc["revision"] >= old["revision"]:
                    board.alerts[alert_id] = doc
                if alert_id not in seen:
                    seen.add(alert_id)
                    if len(seen) % OPERATOR_EVERY == 0:
                        task = asyncio.create_task(_ack(client, prefix, doc, board))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
            elif kind == "events":
                _follow_ladder(board, doc)
            elif kind == "status":
                board.gateway = f"{doc['gateway_id']} {doc['status']} since {doc['at'][11:19]}"


def _follow_ladder(board: Board, doc: dict[str, Any]) -> None:
    alert_id, detail = doc["alert_id"], doc.get("detail") or {}
    if doc["type"] == "step-started":
        site = (board.alerts.get(alert_id) or {}).get("device", {}).get("site", "")
        steps = len(POLICIES.get(site, ())) or "?"
        board.rungs[alert_id] = f"{detail.get('channel')} {int(detail.get('step', 0)) + 1}/{steps}"
    elif doc["type"] == "exhausted":
        board.rungs[alert_id] = "ran out"
        board.say(f"[magenta]nobody answered {_code(board, alert_id)}: told the site and the supervisor[/magenta]")
    elif doc["type"] == "acknowledged":
        via = str(detail.get("via", ""))
        board.acked_via[alert_id] = via
        if via != "mqtt":
            board.say(f"[green]{detail.get('by')} acknowledged {_code(board, alert_id)} by {via}[/green]")


def _code(board: Board, alert_id: str) -> str:
    return str((board.alerts.get(alert_id) or {}).get("short_code") or alert_id[:8])


async def _ack(client: aiomqtt.Client, prefix: str, doc: dict[str, Any], board: Board) -> None:
    """The simulated operator takes the alert after a moment (a real one clicks in the console)."""
    await asyncio.sleep(OPERATOR_DELAY_S)
    body = json.dumps({"operator": "operator-1", "note": "dispatching security"}).encode()
    await client.publish(f"{prefix}/alerts/{doc['alert_id']}/ack", body, qos=1)
    board.say(f"[green]operator-1 acknowledged {_code(board, doc['alert_id'])} over MQTT[/green]")


async def _press_loop(
    fleet: list[DemoWearable], https: HttpUplink, no_data: HttpUplink, board: Board, rng: random.Random
) -> None:
    for demo in _rotation(fleet, rng):
        await asyncio.sleep(rng.uniform(*PRESS_EVERY_S))
        event = EventType.PANIC if rng.random() < 0.85 else EventType.FALL
        without_data = rng.random() < NO_DATA_SHARE
        uplink = FallbackUplink(no_data if without_data else https, demo.sms, primary_deadline_s=NO_DATA_HTTPS_S)
        if without_data:
            board.say(
                f"{demo.wearer} pressed {event.name.lower()} [yellow]with no data: trying HTTPS, then SMS[/yellow]"
            )
        result = await uplink.send(demo.wearable.press(event))
        board.say(_pressed(demo.wearer, event, result))


def _rotation(fleet: list[DemoWearable], rng: random.Random) -> Iterator[DemoWearable]:
    """Every wearer in turn, in a shuffled order: each site's ladder shows within a few presses."""
    return itertools.cycle(rng.sample(fleet, len(fleet)))


def _pressed(wearer: str, event: EventType, result: UplinkResult) -> str:
    if not result.accepted:
        return f"{wearer}: [red]{result.label}[/red] {result.detail}"
    if result.transport == "sms":
        return (
            f"{wearer} pressed {event.name.lower()}: wearable shows [bold]alert received[/bold] "
            f"[yellow]by SMS[/yellow] ({result.latency_s:.1f} s, HTTPS first)"
        )
    return (
        f"{wearer} pressed {event.name.lower()}: wearable shows [bold]alert received[/bold] "
        f"({(result.incident_id or '')[:8]}, {result.latency_s * 1000:.0f} ms)"
    )


def prepare(workdir: Path, certs: Path, console: Console) -> PkiLayout:
    """A development PKI (made once, kept) and a fresh working directory (database, device state, directory)."""
    layout = PkiLayout(certs)
    if not layout.device_ca_cert.exists():
        console.print(f"creating a development PKI in {certs} (keys mode 0600, ignored by git)")
        init_pki(layout)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return layout


def main(workdir: Path = Path("var/demo"), certs: Path = Path("certs/dev"), seed: int | None = None) -> int:
    """Run until Ctrl-C: gateway (SQLite + embedded broker, free ports), phone network, wearables, live board."""
    console = Console()
    configure_logging(LogSettings(level="WARNING"))
    layout = prepare(workdir, certs, console)
    rng = random.Random(seed)  # noqa: S311 - picks who presses, no security role
    asyncio.run(run_demo(layout, workdir, console, rng))
    return 0


def _free_port() -> int:
    """A port nothing listens on now: the gateway's (its public URL is needed before it starts), or a dead one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(layout: PkiLayout, workdir: Path, console: Console, rng: random.Random) -> None:
    certs = layout.directory
    directory = workdir / "escalation.toml"
    directory.write_text(escalation_directory(), encoding="utf-8")
    # Made up per run: the simulated network and the gateway share them, nothing else does.
    account_sid, auth_token = "AC" + secrets.token_hex(16), secrets.token_urlsafe(24)
    port = _free_port()
    public_url = f"https://127.0.0.1:{port}"
    webhook_ssl = ssl.create_default_context(cafile=str(layout.root_ca_cert))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with PhoneNetwork(account_sid, auth_token, ssl_context=webhook_ssl) as net:
        net.own_number(GATEWAY_NUMBER, sms_url=f"{public_url}/v1/twilio/sms")
        for r in RESPONDERS:
            net.phone(r.phone, name=r.name, behaviour=r.behaviour)
        settings = GatewaySettings(
            gateway_id="demo-gateway",
            http=HttpSettings(port=port, tls_cert=layout.server_cert, tls_key=layout.server_key),
            database=DatabaseSettings(url=f"sqlite://{workdir / 'gateway.sqlite3'}"),
            mqtt=MqttSettings(host="embedded", port=0, topic_prefix="panic/v1"),
            pki=PkiSettings(directory=certs),
            twilio=TwilioSettings(
                enabled=True,
                account_sid=account_sid,
                auth_token=SecretStr(auth_token),
                from_number=GATEWAY_NUMBER,
                api_base_url=net.base_url,
                public_url=public_url,
            ),
            escalation=EscalationSettings(file=directory),
            log=LogSettings(level="WARNING"),
        )
        async with running_gateway(settings) as gw:
            fleet = await _enroll_fleet(layout, workdir, net)
            password = secrets.token_urlsafe(12)  # a fresh database each run: a fresh password too
            await add_operator("demo", "Demo Operator", Role.SUPERVISOR, password, actor="demo")
            banner = (
                f"panic-gateway demo  HTTPS {gw.http_url}  MQTT {gw.mqtt_host}:{gw.mqtt_port}  "
                f"phones {net.base_url}  Ctrl-C stops"
            )
            console.print(banner)
            console.print(f"database {workdir / 'gateway.sqlite3'}  escalation directory {directory}")
            console.print(
                f"web console {gw.http_url}/console/  sign in as demo / {password}  "
                f"(the browser does not know the dev CA {layout.root_ca_cert}: accept it or import it)"
            )
            board = Board()
            names = phone_names()
            shown = 0
            dead_url = f"https://127.0.0.1:{_free_port()}"  # where a wearable without data cannot connect
            async with (
                HttpUplink(gw.http_url, ca_file=layout.root_ca_cert) as https,
                HttpUplink(dead_url, ca_file=layout.root_ca_cert) as no_data,
            ):
                tasks = [
                    asyncio.create_task(_watch(board, gw.mqtt_host, gw.mqtt_port, "panic/v1")),
                    asyncio.create_task(_press_loop(fleet, https, no_data, board, rng)),
                ]
                with Live(board.render(banner), console=console, refresh_per_second=4, transient=False) as live:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 0.25)
                        for event in net.events[shown:]:
                            board.follow(event, names)
                        shown = len(net.events)
                        live.update(board.render(banner))
                        for t in tasks:
                            if t.done() and t.exception() is not None:
                                raise t.exception()  # type: ignore[misc]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    console.print("demo stopped cleanly")
