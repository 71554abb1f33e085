"""`make demo`: the gateway on embedded defaults, simulated wearables pressing panic, and a live command-center view."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiomqtt
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from firmware_sim.transport import HttpUplink
from firmware_sim.wearable import VirtualWearable, enroll
from gateway.app import running_gateway
from gateway.config import DatabaseSettings, GatewaySettings, HttpSettings, LogSettings, MqttSettings, PkiSettings
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
#: Seconds between simulated presses (random in this range): a steady, readable stream.
PRESS_EVERY_S: Final = (2.0, 5.0)
#: The simulated operator acknowledges an alert after this long, so every state appears on screen.
OPERATOR_DELAY_S: Final = 6.0
STATE_STYLE: Final = {
    "raised": "bold white on red",
    "notifying": "bold black on yellow",
    "acknowledged": "bold black on green",
    "cancelled": "dim",
    "resolved": "dim green",
    "exhausted": "bold white on magenta",
}


@dataclass
class Board:
    """What the command-center view shows, fed only by MQTT messages."""

    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    gateway: str = "connecting..."

    def render(self, banner: str) -> Group:
        table = Table(title="Command center: live alerts (from MQTT)", expand=True)
        for col in ("alert", "time", "wearer", "device", "site", "event", "location", "state"):
            table.add_column(col)
        ordered = sorted(self.alerts.values(), key=lambda a: a["received_at"], reverse=True)[:15]
        for a in ordered:
            loc = a.get("location")
            where = "unknown"
            if loc:
                lon, lat = loc["geometry"]["coordinates"]
                where = f"{lat:.4f}, {lon:.4f} ±{loc['properties']['accuracy_m']} m"
            state = a["state"] + (f" by {a['acknowledged_by']}" if a.get("acknowledged_by") else "")
            table.add_row(
                a["alert_id"][:8],
                a["received_at"][11:19],
                a["device"]["wearer"],
                a["device"]["id"],
                a["device"]["site"],
                a["event"] + (" (delayed)" if a.get("delayed") else ""),
                where,
                Text(state, style=STATE_STYLE.get(a["state"], "")),
            )
        log = Panel("\n".join(self.log) or "waiting for presses...", title="wearables and operator", height=10)
        return Group(Text(banner), Text(f"gateway status: {self.gateway}"), table, log)


async def _enroll_fleet(layout: PkiLayout, workdir: Path) -> list[tuple[VirtualWearable, str, str]]:
    device_ca = load_device_ca(layout)
    registry = DeviceRegistry(load_device_trust(layout))
    fleet = []
    for n, (wearer, site, gps) in enumerate(WEARERS, start=1):
        device_id = f"demo-{n:03d}"
        wearable = enroll(
            workdir / "devices" / device_id,
            device_id,
            lambda csr: issue_device_certificate(device_ca, csr),
            gps=gps,
        )
        await registry.add(wearable.certificate, wearer=wearer, site=site, phone="", now=datetime.now(UTC))
        fleet.append((wearable, wearer, site))
    return fleet


async def _watch(board: Board, host: str, port: int, prefix: str, acked: set[str]) -> None:
    pending: set[asyncio.Task[None]] = set()
    async with aiomqtt.Client(host, port, identifier="demo-command-center") as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        async for msg in client.messages:
            if not isinstance(msg.payload, bytes | bytearray) or not msg.payload:
                continue
            doc = json.loads(msg.payload)
            kind = str(msg.topic).rsplit("/", 1)[-1]
            if kind == "state":
                old = board.alerts.get(doc["alert_id"])
                if old is None or doc["revision"] >= old["revision"]:
                    board.alerts[doc["alert_id"]] = doc
                if doc["state"] == "raised" and doc["alert_id"] not in acked:
                    acked.add(doc["alert_id"])
                    pending.add(asyncio.create_task(_ack(client, prefix, doc["alert_id"], board)))
            elif kind == "status":
                board.gateway = f"{doc['gateway_id']} {doc['status']} since {doc['at'][11:19]}"


async def _ack(client: aiomqtt.Client, prefix: str, alert_id: str, board: Board) -> None:
    """The simulated operator takes the alert after a moment (a real one clicks in the console)."""
    await asyncio.sleep(OPERATOR_DELAY_S)
    body = json.dumps({"operator": "operator-1", "note": "dispatching security"}).encode()
    await client.publish(f"{prefix}/alerts/{alert_id}/ack", body, qos=1)
    board.log.append(f"[green]operator-1 acknowledged {alert_id[:8]}[/green]")


async def _press_loop(
    fleet: list[tuple[VirtualWearable, str, str]], uplink: HttpUplink, board: Board, rng: random.Random
) -> None:
    while True:
        await asyncio.sleep(rng.uniform(*PRESS_EVERY_S))
        wearable, wearer, _ = rng.choice(fleet)
        event = EventType.PANIC if rng.random() < 0.85 else EventType.FALL
        result = await uplink.send(wearable.press(event))
        when = datetime.now(UTC).strftime("%H:%M:%S")
        if result.accepted:
            board.log.append(
                f"{when} {wearer} pressed {event.name.lower()}: wearable shows "
                f"[bold]alert received[/bold] ({(result.incident_id or '')[:8]}, {result.latency_s * 1000:.0f} ms)"
            )
        else:
            board.log.append(f"{when} {wearer}: [red]{result.label}[/red] {result.detail}")


def prepare(workdir: Path, certs: Path, console: Console) -> PkiLayout:
    """A development PKI (made once, kept) and a fresh working directory (database, device state)."""
    layout = PkiLayout(certs)
    if not layout.device_ca_cert.exists():
        console.print(f"creating a development PKI in {certs} (keys mode 0600, ignored by git)")
        init_pki(layout)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return layout


def main(workdir: Path = Path("var/demo"), certs: Path = Path("certs/dev"), seed: int | None = None) -> int:
    """Run until Ctrl-C: gateway (SQLite + embedded broker, free ports), five wearables, live board."""
    console = Console()
    configure_logging(LogSettings(level="WARNING"))
    layout = prepare(workdir, certs, console)
    rng = random.Random(seed)  # noqa: S311 - picks who presses, no security role
    asyncio.run(run_demo(layout, workdir, console, rng))
    return 0


async def run_demo(layout: PkiLayout, workdir: Path, console: Console, rng: random.Random) -> None:
    certs = layout.directory
    settings = GatewaySettings(
        gateway_id="demo-gateway",
        http=HttpSettings(port=0, tls_cert=layout.server_cert, tls_key=layout.server_key),
        database=DatabaseSettings(url=f"sqlite://{workdir / 'gateway.sqlite3'}"),
        mqtt=MqttSettings(host="embedded", port=0, topic_prefix="panic/v1"),
        pki=PkiSettings(directory=certs),
        log=LogSettings(level="WARNING"),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_gateway(settings) as gw:
        fleet = await _enroll_fleet(layout, workdir)
        banner = (
            f"panic-gateway demo  HTTPS {gw.http_url}  MQTT {gw.mqtt_host}:{gw.mqtt_port} (embedded)  "
            f"database {workdir / 'gateway.sqlite3'}  -  Ctrl-C to stop"
        )
        console.print(banner)
        board = Board()
        acked: set[str] = set()
        async with HttpUplink(gw.http_url, ca_file=layout.root_ca_cert) as uplink:
            tasks = [
                asyncio.create_task(_watch(board, gw.mqtt_host, gw.mqtt_port, "panic/v1", acked)),
                asyncio.create_task(_press_loop(fleet, uplink, board, rng)),
            ]
            with Live(board.render(banner), console=console, refresh_per_second=4, transient=False) as live:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.25)
                    live.update(board.render(banner))
                    for t in tasks:
                        if t.done() and t.exception() is not None:
                            raise t.exception()  # type: ignore[misc]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    console.print("demo stopped cleanly")
