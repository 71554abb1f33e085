"""Faults: each produces bytes the protocol refuses for the expected reason, and the real gateway's answer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware_sim import Expectation, FaultKind, HttpUplink, VirtualWearable, enroll, make_fault, send_fault
from firmware_sim import const as sim_const
from firmware_sim.faults import unregistered_wearable
from firmware_sim.transport import UplinkResult
from firmware_sim.wearable import Issuer
from gateway.app import RunningGateway
from gateway.identity.pki import PkiLayout
from gateway.protocol import EventType, SignedFrame, parse_signed_frame, verify_signature
from gateway.protocol.const import MEDIA_TYPE
from gateway.rejection import Rejection, RejectReason
from tests.firmware_sim.conftest import ThrowawayCa, revoke

#: What the gateway answers to each fault, reason included where the expectation leaves it open (413, 415).
GATEWAY_ANSWERS = {
    FaultKind.BAD_SIGNATURE: "401 bad-signature",
    FaultKind.REPLAYED: "409 replayed",
    FaultKind.DUPLICATE: "202 duplicate",
    FaultKind.UNKNOWN_DEVICE: "403 unknown-device",
    FaultKind.CLOCK_SKEW: "422 clock-skew",
    FaultKind.TRUNCATED: "400 malformed",
    FaultKind.GARBAGE: "400 malformed",
    FaultKind.WRONG_CONTENT_TYPE: "415 unsupported-media-type",
    FaultKind.OVERSIZED: "413 oversized",
}


def parsed(signed: bytes) -> SignedFrame:
    result = parse_signed_frame(signed)
    assert isinstance(result, SignedFrame), result
    return result


def refused(body: bytes) -> RejectReason:
    result = parse_signed_frame(body)
    assert isinstance(result, Rejection), result
    return result.reason


def test_bad_signature_parses_but_never_verifies(wearable: VirtualWearable) -> None:
    for _ in range(20):
        fault = make_fault(FaultKind.BAD_SIGNATURE, wearable)
        assert not verify_signature(parsed(fault.body), wearable.public_key)
        assert fault.expected == Expectation(401, "bad-signature")


def test_replay_reuses_a_sent_counter_for_another_validly_signed_frame(wearable: VirtualWearable) -> None:
    fault = make_fault(FaultKind.REPLAYED, wearable, event=EventType.PANIC)
    (first,) = fault.prelude
    original, replay = parsed(first), parsed(fault.body)
    assert verify_signature(original, wearable.public_key) and verify_signature(replay, wearable.public_key)
    assert original.frame.counter == replay.frame.counter == wearable.counter
    assert original.frame_bytes != replay.frame_bytes
    assert replay.frame.event is EventType.PANIC
    assert fault.expected == Expectation(409, "replayed")


def test_duplicate_is_the_identical_frame_answered_as_a_duplicate(wearable: VirtualWearable) -> None:
    fault = make_fault(FaultKind.DUPLICATE, wearable)
    assert fault.prelude == (fault.body,)
    assert verify_signature(parsed(fault.body), wearable.public_key)
    assert fault.expected == Expectation(202, status="duplicate")


def test_unknown_device_is_well_formed_and_self_signed_not_from_the_device_ca(
    wearable: VirtualWearable, ca: ThrowawayCa
) -> None:
    fault = make_fault(FaultKind.UNKNOWN_DEVICE, wearable)
    frame = parsed(fault.body).frame
    assert frame.device_id.startswith(sim_const.UNKNOWN_DEVICE_PREFIX) and len(frame.device_id) <= 32
    assert fault.expected == Expectation(403, "unknown-device")
    rogue = unregistered_wearable("rogue-1", clock=wearable.clock)
    assert verify_signature(parsed(rogue.heartbeat()), rogue.public_key)
    rogue.certificate.verify_directly_issued_by(rogue.certificate)  # self-signed...
    with pytest.raises(ValueError, match="does not match"):
        rogue.certificate.verify_directly_issued_by(ca.cert)  # ...and not by the device CA


def test_revoked_is_a_valid_frame_the_gateway_must_refuse(wearable: VirtualWearable) -> None:
    fault = make_fault(FaultKind.REVOKED, wearable)
    assert verify_signature(parsed(fault.body), wearable.public_key)
    assert fault.expected == Expectation(403, "revoked")


def test_clock_skew_dates_a_valid_frame_an_hour_ahead(tmp_path: Path, issue: Issuer) -> None:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    device = enroll(tmp_path / "d", "w-skew", issue, clock=lambda: now_ms)
    fault = make_fault(FaultKind.CLOCK_SKEW, device)
    signed = parsed(fault.body)
    assert verify_signature(signed, device.public_key)
    assert signed.frame.timestamp_ms - now_ms == 3_600_000
    assert fault.expected == Expectation(422, "clock-skew")


@pytest.mark.parametrize("kind", [FaultKind.TRUNCATED, FaultKind.GARBAGE, FaultKind.OVERSIZED])
def test_broken_bodies_are_malformed_to_the_protocol_parser(wearable: VirtualWearable, kind: FaultKind) -> None:
    wearable.gps = None
    for _ in range(50):  # garbage is random: it must be malformed every time
        fault = make_fault(kind, wearable)
        assert refused(fault.body) is RejectReason.MALFORMED
        assert fault.content_type == MEDIA_TYPE
    assert make_fault(FaultKind.OVERSIZED, wearable).expected == Expectation(413)
    assert len(make_fault(FaultKind.OVERSIZED, wearable).body) > 65_536
    assert make_fault(FaultKind.TRUNCATED, wearable).expected == Expectation(400, "malformed")


def test_wrong_content_type_carries_a_valid_frame(wearable: VirtualWearable) -> None:
    fault = make_fault(FaultKind.WRONG_CONTENT_TYPE, wearable)
    assert verify_signature(parsed(fault.body), wearable.public_key)
    assert fault.content_type != MEDIA_TYPE
    assert fault.expected == Expectation(415)


def test_expectation_matches_status_reason_and_status() -> None:
    def result(code: int, reason: str | None = None, status: str | None = None) -> UplinkResult:
        return UplinkResult(code, None, status, reason, "", 1, 0.0, final=True)

    assert Expectation(409, "replayed").matches(result(409, "replayed"))
    assert not Expectation(409, "replayed").matches(result(409, "clock-skew"))
    assert Expectation(413).matches(result(413, "oversized"))
    assert not Expectation(202, status="duplicate").matches(result(202, status="accepted"))
    assert str(Expectation(202, status="duplicate")) == "202 duplicate"


async def test_every_fault_gets_its_expected_answer_from_the_gateway(
    gateway: RunningGateway, registered: VirtualWearable, pki: PkiLayout
) -> None:
    answers: dict[FaultKind, str] = {}
    async with HttpUplink(gateway.http_url, ca_file=pki.root_ca_cert) as uplink:
        for kind in FaultKind:
            if kind is FaultKind.REVOKED:
                continue
            outcome = await send_fault(uplink, make_fault(kind, registered), deadline_s=5)
            assert outcome.ok, (kind, outcome.prelude, outcome.result)
            assert outcome.result.final and outcome.result.attempts == 1, (kind, outcome.result)
            answers[kind] = outcome.result.label
        # A prelude the gateway refuses spoils the fault even when the body's answer matches.
        stranger = unregistered_wearable(clock=registered.clock)
        outcome = await send_fault(uplink, make_fault(FaultKind.DUPLICATE, stranger), deadline_s=5)
        assert outcome.result.label == "403 unknown-device" and not outcome.ok
    assert answers == GATEWAY_ANSWERS


async def test_the_revoked_fault_is_answered_revoked_once_the_device_is_revoked(
    gateway: RunningGateway, registered: VirtualWearable, pki: PkiLayout
) -> None:
    async with HttpUplink(gateway.http_url, ca_file=pki.root_ca_cert) as uplink:
        before = await send_fault(uplink, make_fault(FaultKind.REVOKED, registered), deadline_s=5)
        assert not before.ok and before.result.label == "202 accepted"
        await revoke(pki, registered.device_id)
        after = await send_fault(uplink, make_fault(FaultKind.REVOKED, registered), deadline_s=5)
    assert after.ok and after.result.label == "403 revoked", after.result
