"""Firmware simulator: virtual wearables that enrol, sign alert frames and send them to the gateway."""

from firmware_sim.errors import DeviceStateError, EnrollmentError, ScenarioError, SimError
from firmware_sim.faults import Expectation, Fault, FaultKind, FaultOutcome, make_fault, send_fault
from firmware_sim.fleet import BleRecord, Fleet, FleetAir, FleetReport, SignalRecord, fleet_uplinks, run_scenario
from firmware_sim.phonenet import Behaviour, PhoneNetwork
from firmware_sim.scenario import Scenario, load_scenario, parse_scenario
from firmware_sim.sms_uplink import FallbackUplink, SmsUplink
from firmware_sim.transport import ClientCertificate, HttpUplink, UplinkResult
from firmware_sim.wearable import Clock, Issuer, VirtualWearable, enroll

__all__ = [
    "Behaviour",
    "BleRecord",
    "ClientCertificate",
    "Clock",
    "DeviceStateError",
    "EnrollmentError",
    "Expectation",
    "FallbackUplink",
    "Fault",
    "FaultKind",
    "FaultOutcome",
    "Fleet",
    "FleetAir",
    "FleetReport",
    "HttpUplink",
    "Issuer",
    "PhoneNetwork",
    "Scenario",
    "ScenarioError",
    "SignalRecord",
    "SimError",
    "SmsUplink",
    "UplinkResult",
    "VirtualWearable",
    "enroll",
    "fleet_uplinks",
    "load_scenario",
    "make_fault",
    "parse_scenario",
    "run_scenario",
    "send_fault",
]
