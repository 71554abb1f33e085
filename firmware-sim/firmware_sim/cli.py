"""The `panic-sim` command: enrol virtual wearables, press their buttons, inject faults, drive a fleet, run phones."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from rich.console import Console

from firmware_sim import const
from firmware_sim.errors import SimError
from firmware_sim.faults import FaultKind, make_fault, send_fault
from firmware_sim.fleet import Fleet, FleetAir, fleet_uplinks, run_scenario
from firmware_sim.scenario import Scenario, load_scenario
from firmware_sim.transport import HttpUplink, UplinkResult
from firmware_sim.wearable import Issuer, VirtualWearable, enroll
from gateway.errors import GatewayError
from gateway.protocol import EventType, GpsFix

#: Exit codes: the gateway accepted (or, for a fault, answered as expected); it did not, or the command failed;
#: the command line was wrong (argparse's own code).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
#: Time to (re)start a gateway with the receivers a BLE fleet run prints (their ports are new each run).
FLEET_BLE_WAIT_S = 120.0

_SIGNALS: dict[str, Callable[[VirtualWearable, argparse.Namespace], bytes]] = {
    "press": lambda w, args: w.press(EventType[args.event.upper().replace("-", "_")], silent=args.silent),
    "cancel": lambda w, args: w.cancel(),
    "heartbeat": lambda w, args: w.heartbeat(),
    "test": lambda w, args: w.test(),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (errors are one line on stderr, never a traceback)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        command: Callable[[argparse.Namespace], int] = args.func
        return command(args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print("panic-sim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SimError, GatewayError, ValueError) as exc:
        print(f"panic-sim: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"panic-sim: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED


def describe(result: UplinkResult) -> str:
    """One line saying what the gateway answered, as a wearable's display would."""
    if result.accepted:
        delayed = ", delayed" if result.delayed else ""
        event = EventType.__members__.get((result.event or "").upper().replace("-", "_"))
        if result.incident_id is not None and event is not None and event.raises_incident:
            return f"alert received: incident {result.incident_id} ({result.status}{delayed})"
        incident = f"incident {result.incident_id}, " if result.incident_id is not None else ""
        return f"{result.event or 'signal'} received ({incident}{result.status}{delayed})"
    if result.final:
        what = result.reason or "refused"
        code = f" ({result.status_code})" if result.status_code is not None else ""
        return f"refused: {what}{code}: {result.detail}"
    return f"no answer: gave up after {result.attempts} attempt(s) in {result.latency_s:.1f} s: {result.label}: " + (
        result.detail
    )


# --- commands ---------------------------------------------------------------------------------------------------


def _enroll(args: argparse.Namespace) -> int:
    wearable = enroll(args.dir, args.device_id, _device_ca_issuer(args.ca_dir, args.days))
    cert = wearable.certificate
    print(
        f"enrolled {wearable.device_id} in {args.dir}: serial {cert.serial_number:#x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    )
    return EXIT_OK


def _signal(args: argparse.Namespace) -> int:
    wearable = VirtualWearable.load(args.device_dir, battery=args.battery, gps=args.gps)
    signed = _SIGNALS[args.command](wearable, args)
    result = asyncio.run(_send_one(args, wearable, signed))
    print(describe(result))
    return EXIT_OK if result.accepted else EXIT_FAILED


async def _send_one(args: argparse.Namespace, wearable: VirtualWearable, signed: bytes) -> UplinkResult:
    async with _uplink(args, wearable) as uplink:
        return await uplink.send(signed, args.deadline)


def _fault(args: argparse.Namespace) -> int:
    wearable = VirtualWearable.load(args.device_dir, battery=args.battery, gps=args.gps)
    fault = make_fault(FaultKind(args.kind), wearable, event=EventType[args.event.upper().replace("-", "_")])

    async def run() -> int:
        async with _uplink(args, wearable) as uplink:
            outcome = await send_fault(uplink, fault, args.deadline)
        for index, result in enumerate(outcome.prelude, 1):
            if not result.accepted:
                print(f"fault {fault.kind}: prelude signal {index} was not accepted: {describe(result)}")
        verdict = "as expected" if fault.expected.matches(outcome.result) else f"expected {fault.expected}"
        print(f"fault {fault.kind}: {verdict}: {describe(outcome.result)}")
        return EXIT_OK if outcome.ok else EXIT_FAILED

    return asyncio.run(run())


def _fleet(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    issue = _device_ca_issuer(args.ca_dir, args.days) if args.ca_dir is not None else None
    fleet = Fleet.open(args.dir, scenario.device_ids(), issue=issue)
    if fleet.enrolled:
        print(f"enrolled {len(fleet.enrolled)} new device(s) in {args.dir}", file=sys.stderr)
    if args.enroll_only:
        for wearable in fleet.wearables:
            print(wearable.client_certificate.cert_file)
        return EXIT_OK
    if args.url is None:
        print("panic-sim fleet: error: --url is required unless --enroll-only is given", file=sys.stderr)
        return EXIT_USAGE
    if scenario.ble_devices and args.ca_dir is None:
        print("panic-sim fleet: error: BLE wearables need --ca-dir (the fleet and ack public keys)", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> bool:
        async with AsyncExitStack() as stack:
            air = None
            if scenario.ble_devices:
                air = await stack.enter_async_context(_fleet_air(scenario, fleet, args.ca_dir))
                _print_receivers(air)
                if air.receivers:
                    print(
                        f"waiting up to {args.ble_wait:g} s for a gateway to scan on these receivers", file=sys.stderr
                    )
                    try:
                        await asyncio.wait_for(air.receivers_listening(), args.ble_wait)
                    except TimeoutError:
                        silent = ", ".join(air.silent_receivers())
                        print(
                            f"panic-sim fleet: error: no gateway scans on receiver(s) {silent} after "
                            f"{args.ble_wait:g} s: start it with the [[ble.receivers]] above",
                            file=sys.stderr,
                        )
                        return False
                    print("the gateway listens on every receiver: starting", file=sys.stderr)
            uplink_for = await stack.enter_async_context(
                fleet_uplinks(args.url, fleet, ca_file=args.ca, mtls=args.mtls, keep_alive=scenario.keep_alive)
            )
            report = await run_scenario(scenario, fleet, uplink_for, air=air)
        report.render(Console(highlight=False))
        return report.ok

    return EXIT_OK if asyncio.run(run()) else EXIT_FAILED


def _fleet_air(scenario: Scenario, fleet: Fleet, ca_dir: Path) -> FleetAir:
    """The scenario's BLE wearables, provisioned with the public keys of the gateway's PKI in `ca_dir`."""
    from gateway.identity.pki import PkiLayout, load_public_key

    layout = PkiLayout(ca_dir)
    return FleetAir(scenario, fleet, load_public_key(layout.fleet_public), load_public_key(layout.ack_public))


def _print_receivers(air: FleetAir) -> None:
    """The in-process air's receivers as the gateway's TOML wants them, on stderr (stdout is the summary)."""
    for receiver in air.receivers:
        where = receiver.position
        print(
            f'[[ble.receivers]]\nname = "{receiver.name}"\ntransport = "{receiver.transport}"\n'
            f'site = "{where.site}"\nfloor = {where.floor}\nx = {where.x:g}\ny = {where.y:g}\n',
            file=sys.stderr,
        )


def _uplink(args: argparse.Namespace, wearable: VirtualWearable) -> HttpUplink:
    return HttpUplink(
        args.url,
        ca_file=args.ca,
        client_cert=wearable.client_certificate if args.mtls else None,
        keep_alive=False,  # one signal: a modem opens one connection for it
    )


def _device_ca_issuer(ca_dir: Path, valid_days: int | None) -> Issuer:
    """Issue with the gateway's device CA in `ca_dir` (imported here: only enrolment needs the gateway's PKI)."""
    from gateway.identity.pki import PkiLayout, issue_device_certificate, load_device_ca

    ca = load_device_ca(PkiLayout(ca_dir))

    def issuer(csr: x509.CertificateSigningRequest) -> x509.Certificate:
        if valid_days is None:
            return issue_device_certificate(ca, csr, now=datetime.now(UTC))
        return issue_device_certificate(ca, csr, valid_days, datetime.now(UTC))

    return issuer


# --- arguments --------------------------------------------------------------------------------------------------


def _gps(text: str) -> GpsFix:
    try:
        lat, lon, accuracy = (part.strip() for part in text.split(","))
        fix = GpsFix(float(lat), float(lon), int(accuracy))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LON,ACCURACY_M (e.g. 48.8584,2.2945,10)") from None
    if not (-90 <= fix.lat <= 90 and -180 <= fix.lon <= 180 and 0 <= fix.accuracy_m <= 0xFFFF):
        raise argparse.ArgumentTypeError(f"{text!r}: latitude -90..90, longitude -180..180, accuracy 0..65535 m")
    return fix


def _battery(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a battery level 0..100")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _event_name(event: EventType) -> str:
    return event.name.lower().replace("_", "-")


def _gateway_options(parser: argparse.ArgumentParser, *, url_required: bool = True) -> None:
    parser.add_argument("--url", required=url_required, help="the gateway's base URL, e.g. https://localhost:8443")
    parser.add_argument("--ca", type=Path, metavar="FILE", help="CA bundle the gateway's certificate chains to")
    parser.add_argument("--mtls", action="store_true", help="present the device certificate (mutual TLS)")


def _device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device-dir", type=Path, required=True, metavar="DIR", help="the enrolled device")
    _gateway_options(parser)
    parser.add_argument("--gps", type=_gps, metavar="LAT,LON,ACC", help="GPS fix to include (accuracy in m)")
    parser.add_argument(
        "--battery", type=_battery, default=const.DEFAULT_BATTERY_PERCENT, metavar="PCT", help="battery level 0..100"
    )
    parser.add_argument(
        "--deadline",
        type=_seconds,
        default=const.DEFAULT_DEADLINE_S,
        metavar="S",
        help=f"retry until this many seconds have passed (default {const.DEFAULT_DEADLINE_S:g})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panic-sim", description="Virtual panic-alert wearables.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    events = [_event_name(e) for e in EventType]

    enroll_cmd = commands.add_parser("enroll", help="create a device: key, CSR, certificate from the device CA")
    enroll_cmd.add_argument("device_id", metavar="DEVICE_ID", help="1-32 chars of [A-Za-z0-9._-]")
    enroll_cmd.add_argument("--dir", type=Path, required=True, help="the device's directory (created)")
    enroll_cmd.add_argument("--ca-dir", type=Path, required=True, metavar="CERTS_DIR", help="the gateway's PKI")
    enroll_cmd.add_argument("--days", type=int, metavar="N", help="certificate validity (default: the CA's)")
    enroll_cmd.set_defaults(func=_enroll)

    helps = {
        "press": "press the panic button",
        "cancel": "cancel the alarm",
        "heartbeat": "send a heartbeat",
        "test": "send a test alarm",
    }
    for name, help_text in helps.items():
        signal = commands.add_parser(name, help=help_text)
        _device_options(signal)
        if name == "press":
            signal.add_argument("--event", choices=events, default="panic", help="what the press reports")
            signal.add_argument("--silent", action="store_true", help="silent alarm (no buzzer on the wearable)")
        signal.set_defaults(func=_signal)

    fault = commands.add_parser("fault", help="send a fault and check the gateway's answer")
    fault.add_argument("kind", choices=[str(k) for k in FaultKind], metavar="KIND", help=", ".join(FaultKind))
    _device_options(fault)
    fault.add_argument("--event", choices=events, default="heartbeat", help="event the faulty frames carry")
    fault.set_defaults(func=_fault)

    fleet = commands.add_parser("fleet", help="run a scenario with a fleet of wearables")
    fleet.add_argument("--scenario", type=Path, required=True, metavar="FILE", help="scenario TOML")
    fleet.add_argument("--dir", type=Path, required=True, help="fleet directory: one sub-directory per device")
    _gateway_options(fleet, url_required=False)
    fleet.add_argument("--ca-dir", type=Path, metavar="CERTS_DIR", help="the gateway's PKI, to enrol missing devices")
    fleet.add_argument("--days", type=int, metavar="N", help="certificate validity of new devices")
    fleet.add_argument(
        "--enroll-only", action="store_true", help="enrol missing devices, print their certificate files, send nothing"
    )
    fleet.add_argument(
        "--ble-wait",
        type=_seconds,
        default=FLEET_BLE_WAIT_S,
        metavar="S",
        help="with BLE wearables on the in-process air: after printing its receivers (for the gateway's "
        "[[ble.receivers]]), how long to wait for a gateway to scan on all of them before giving up "
        f"(default {FLEET_BLE_WAIT_S:g})",
    )
    fleet.set_defaults(func=_fleet)

    demo = commands.add_parser(
        "demo", help="gateway on embedded defaults + simulated wearables + live command-center view"
    )
    demo.add_argument("--workdir", type=Path, default=Path("var/demo"), help="database and device state (wiped)")
    demo.add_argument("--certs", type=Path, default=Path("certs/dev"), help="development PKI (made once, kept)")
    demo.add_argument("--seed", type=int, default=None, help="make the presses reproducible")
    demo.set_defaults(func=_demo)

    air = commands.add_parser("air", help="virtual BLE air: controllers on one link, exposed over tcp-server")
    air.add_argument("--nodes", nargs="+", required=True, metavar="NAME=SITE:FLOOR:X:Y", help="radios to expose")
    air.add_argument("--background", nargs="*", default=[], metavar="NAME=SITE:FLOOR:X:Y", help="foreign beacons")
    air.add_argument("--noise-db", type=float, default=0.0, help="shadowing noise (standard deviation, dB)")
    air.add_argument("--range-m", type=float, default=30.0, help="beyond this distance nothing is heard")
    air.add_argument("--seed", type=int, default=None, help="reproducible noise")
    air.set_defaults(func=_air)

    phones = commands.add_parser(
        "phones", help="local Twilio-compatible phone network for a gateway: handsets, SMS, calls, webhooks"
    )
    phones.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="phones TOML (see firmware-sim/phones.example.toml)"
    )
    phones.add_argument("--host", default="127.0.0.1", help="address to serve the API on (default 127.0.0.1)")
    phones.add_argument("--port", type=_port, default=0, help="port to serve the API on (default 0: any free port)")
    phones.add_argument(
        "--auth-token-env",
        metavar="NAME",
        help="read the auth token from this environment variable instead of the file's auth_token",
    )
    phones.set_defaults(func=_phones)
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port 0..65535")
    return value


def _placement(text: str) -> tuple[str, Any]:
    """NAME=SITE:FLOOR:X:Y -> (name, Position); ValueError with the offending text."""
    from firmware_sim.air import Position

    try:
        name, where = text.split("=", 1)
        site, floor, x, y = where.split(":")
        return name, Position(site, int(floor), float(x), float(y))
    except ValueError:
        raise ValueError(f"{text!r} is not NAME=SITE:FLOOR:X:Y") from None


def _air(args: argparse.Namespace) -> int:
    import json

    from firmware_sim.air import PathLossModel, VirtualAir

    nodes = [_placement(t) for t in args.nodes]
    background = [_placement(t) for t in args.background]

    async def run() -> None:
        model = PathLossModel(noise_sigma_db=args.noise_db, range_m=args.range_m)
        async with VirtualAir(model, seed=args.seed) as air:
            exposed = {}
            for name, position in nodes:
                node = await air.add_node(name, position)
                exposed[name] = node.transport_spec
            for name, position in background:
                await air.add_background_advertiser(name, position)
            print(json.dumps(exposed), flush=True)
            await asyncio.Event().wait()  # until Ctrl-C

    asyncio.run(run())
    return 0


def _phones(args: argparse.Namespace) -> int:
    import os

    from firmware_sim.phonenet_cli import PhonesFileError, load_phones, serve_phones
    from gateway.config import LogSettings
    from gateway.observability import configure_logging

    try:
        setup = load_phones(args.config, auth_token_env=args.auth_token_env, environ=os.environ)
    except PhonesFileError as exc:
        print(f"panic-sim phones: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(LogSettings(level="WARNING"))  # on stderr: stdout is the base URL, then the events
    asyncio.run(serve_phones(setup, host=args.host, port=args.port))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from firmware_sim.demo import main as demo_main

    return demo_main(args.workdir, args.certs, args.seed)


if __name__ == "__main__":
    sys.exit(main())
