"""Virtual wearables: enrolment files, signed frames, and a counter that never repeats, even across crashes."""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_sim import DeviceStateError, EnrollmentError, VirtualWearable, enroll
from firmware_sim import const as sim_const
from firmware_sim.wearable import Issuer
from gateway.protocol import EventType, Flags, GpsFix, SignedFrame, parse_signed_frame, verify_signature
from tests.firmware_sim.conftest import ThrowawayCa


def parsed(signed: bytes) -> SignedFrame:
    result = parse_signed_frame(signed)
    assert isinstance(result, SignedFrame), result
    return result


def test_enrol_writes_a_private_key_a_csr_a_certificate_and_counter_zero(
    wearable: VirtualWearable, ca: ThrowawayCa
) -> None:
    device_dir = wearable.device_dir
    assert device_dir is not None
    assert stat.S_IMODE((device_dir / sim_const.KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(device_dir.stat().st_mode) == 0o700
    csr = x509.load_pem_x509_csr((device_dir / sim_const.CSR_FILE).read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "w-0001"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:dev:w-0001"]
    cert = x509.load_pem_x509_certificate((device_dir / sim_const.CERT_FILE).read_bytes())
    cert.verify_directly_issued_by(ca.cert)
    assert cert.public_key() == wearable.public_key
    state = json.loads((device_dir / sim_const.STATE_FILE).read_text())
    assert state == {"version": 1, "device_id": "w-0001", "counter": 0}
    assert not list(device_dir.glob("*.tmp"))


def test_enrol_refuses_an_enrolled_directory_a_bad_id_and_a_certificate_for_another_key(
    tmp_path: Path, issue: Issuer, wearable: VirtualWearable, ca: ThrowawayCa
) -> None:
    assert wearable.device_dir is not None
    with pytest.raises(EnrollmentError, match="already holds an enrolled device"):
        enroll(wearable.device_dir, "w-0001", issue)
    with pytest.raises(EnrollmentError, match="not 1-32 characters"):
        enroll(tmp_path / "bad", "bad id!", issue)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(EnrollmentError, match="another key"):
        enroll(tmp_path / "x", "w-x", lambda csr: ca.issue(_csr_with_key(csr, other)))
    # The failed enrolment left a key but no state: a second try says so instead of reusing half a device.
    with pytest.raises(EnrollmentError, match="incomplete enrolment"):
        enroll(tmp_path / "x", "w-x", issue)


def _csr_with_key(
    csr: x509.CertificateSigningRequest, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(csr.subject).sign(key, hashes.SHA256())


def test_frames_verify_with_the_device_key_and_carry_what_the_device_knows(tmp_path: Path, issue: Issuer) -> None:
    clock_ms = [1_700_000_000_000]
    gps = GpsFix(48.8584, 2.2945, 12)
    device = enroll(tmp_path / "d", "w-clock", issue, clock=lambda: clock_ms[0], battery=42, gps=gps)
    for method, event, flags in (
        (device.press, EventType.PANIC, Flags.NONE),
        (device.cancel, EventType.CANCEL, Flags.NONE),
        (device.heartbeat, EventType.HEARTBEAT, Flags.NONE),
        (device.test, EventType.TEST, Flags.NONE),
        (lambda: device.press(EventType.FALL, silent=True), EventType.FALL, Flags.SILENT),
    ):
        clock_ms[0] += 1000
        signed = parsed(method())
        assert verify_signature(signed, device.public_key)
        cert_key = device.certificate.public_key()
        assert isinstance(cert_key, ec.EllipticCurvePublicKey)
        assert verify_signature(signed, cert_key)
        frame = signed.frame
        assert (frame.device_id, frame.event, frame.flags) == ("w-clock", event, flags)
        assert (frame.timestamp_ms, frame.battery, frame.counter) == (clock_ms[0], 42, device.counter)
        assert frame.gps is not None and abs(frame.gps.lat - gps.lat) < 1e-7 and frame.gps.accuracy_m == 12
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not verify_signature(parsed(device.heartbeat()), other)


def test_counter_persists_across_reload(wearable: VirtualWearable) -> None:
    assert wearable.device_dir is not None
    counters = [parsed(wearable.heartbeat()).frame.counter for _ in range(3)]
    assert counters == [1, 2, 3]
    again = VirtualWearable.load(wearable.device_dir)
    assert again.counter == 3
    assert parsed(again.press()).frame.counter == 4


def test_a_crash_between_persist_and_send_skips_the_counter_instead_of_reusing_it(wearable: VirtualWearable) -> None:
    device_dir = wearable.device_dir
    assert device_dir is not None
    reserved = wearable.next_frame(EventType.PANIC)  # persisted; the process "dies" before signing or sending
    del wearable
    reloaded = VirtualWearable.load(device_dir)
    assert parsed(reloaded.press()).frame.counter == reserved.counter + 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(st.sampled_from(["send", "reserve-then-crash", "reload"]), min_size=1, max_size=25),
    block=st.integers(min_value=1, max_value=5),
)
def test_counters_strictly_increase_whatever_the_crashes(ca: ThrowawayCa, ops: list[str], block: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        device_dir = Path(tmp) / "d"
        device = enroll(device_dir, "w-prop", ca.issue, counter_block=block)
        used: list[int] = []
        for op in ops:
            if op == "send":
                used.append(parsed(device.heartbeat()).frame.counter)
            elif op == "reserve-then-crash":
                used.append(device.next_frame(EventType.HEARTBEAT).counter)  # never sent: still never reused
                device = VirtualWearable.load(device_dir, counter_block=block)
            else:
                device = VirtualWearable.load(device_dir, counter_block=block)
        used.append(device.next_frame(EventType.HEARTBEAT).counter)
        assert used == sorted(set(used))
        state = json.loads((device_dir / sim_const.STATE_FILE).read_text())
        assert state["counter"] >= used[-1]  # the high-water mark covers every counter handed out


def test_a_counter_block_writes_the_state_once_per_block(tmp_path: Path, issue: Issuer) -> None:
    device = enroll(tmp_path / "d", "w-block", issue, counter_block=10)
    state_file = tmp_path / "d" / sim_const.STATE_FILE
    device.heartbeat()
    assert json.loads(state_file.read_text())["counter"] == 10
    before = state_file.stat().st_mtime_ns, state_file.stat().st_ino
    for _ in range(9):
        device.heartbeat()
    assert (state_file.stat().st_mtime_ns, state_file.stat().st_ino) == before
    assert device.counter == 10
    device.heartbeat()
    assert json.loads(state_file.read_text())["counter"] == 20
    # A crash now loses counters 12..20, and the next device starts above them.
    assert parsed(VirtualWearable.load(tmp_path / "d").heartbeat()).frame.counter == 21


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / sim_const.STATE_FILE).unlink(), "holds no enrolled device"),
        (lambda d: (d / sim_const.STATE_FILE).write_text("{not json"), "cannot read the device state"),
        (lambda d: (d / sim_const.STATE_FILE).write_text('{"version": 9}'), "not a version 1 device state"),
        (
            lambda d: (d / sim_const.STATE_FILE).write_text('{"version": 1, "device_id": "w-0001", "counter": true}'),
            "counter is missing",
        ),
        (
            lambda d: (d / sim_const.STATE_FILE).write_text('{"version": 1, "device_id": "other", "counter": 1}'),
            "its CN is 'w-0001', not 'other'",
        ),
        (lambda d: (d / sim_const.KEY_FILE).write_text("nope"), "cannot read the device key"),
        (lambda d: (d / sim_const.CERT_FILE).unlink(), "cannot read the device certificate"),
    ],
)
def test_load_names_what_is_wrong_with_a_device_directory(
    wearable: VirtualWearable, damage: object, message: str
) -> None:
    assert wearable.device_dir is not None and callable(damage)
    damage(wearable.device_dir)
    with pytest.raises(DeviceStateError, match=message):
        VirtualWearable.load(wearable.device_dir)


def test_load_refuses_a_certificate_for_another_key(wearable: VirtualWearable, tmp_path: Path, issue: Issuer) -> None:
    other = enroll(tmp_path / "other", "w-0001", issue)
    assert wearable.device_dir is not None and other.device_dir is not None
    (wearable.device_dir / sim_const.CERT_FILE).write_bytes((other.device_dir / sim_const.CERT_FILE).read_bytes())
    with pytest.raises(DeviceStateError, match="another key"):
        VirtualWearable.load(wearable.device_dir)


def test_an_exhausted_counter_is_an_error_not_a_wrap(wearable: VirtualWearable) -> None:
    assert wearable.device_dir is not None
    state = {"version": 1, "device_id": "w-0001", "counter": sim_const.MAX_COUNTER}
    (wearable.device_dir / sim_const.STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(DeviceStateError, match="used every counter"):
        VirtualWearable.load(wearable.device_dir).press()
