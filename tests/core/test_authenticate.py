"""Authentication decisions, each with its precise reason; cheap checks before the signature."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.authenticate import AuthenticatedSignal, AuthRules, DeviceCredentials, authenticate
from gateway.protocol import AlertFrame, EventType, SignedFrame, parse_signed_frame, sign_frame
from gateway.rejection import Rejection, RejectReason

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
RULES = AuthRules(max_clock_ahead=timedelta(seconds=300), delayed_after=timedelta(seconds=60))
KEY = ec.generate_private_key(ec.SECP256R1())


def creds(**changes: object) -> DeviceCredentials:
    base = DeviceCredentials(
        device_id="wb-1",
        public_key=KEY.public_key(),
        fingerprint="ab" * 32,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=365),
        revoked=False,
        wearer="Ada",
        site="north",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def signed(offset_s: float = 0, key: ec.EllipticCurvePrivateKey = KEY, device_id: str = "wb-1") -> SignedFrame:
    ts = int((NOW.timestamp() + offset_s) * 1000)
    parsed = parse_signed_frame(sign_frame(AlertFrame(device_id, 1, ts, EventType.PANIC), key))
    assert isinstance(parsed, SignedFrame)
    return parsed


def reason(result: AuthenticatedSignal | Rejection) -> RejectReason | None:
    return result.reason if isinstance(result, Rejection) else None


def test_valid_signal() -> None:
    result = authenticate(signed(), creds(), transport="https", now=NOW, rules=RULES)
    assert isinstance(result, AuthenticatedSignal)
    assert not result.delayed
    assert result.device_time == NOW


@pytest.mark.parametrize(
    ("frame_kw", "cred_kw", "peer", "want"),
    [
        ({}, None, None, RejectReason.UNKNOWN_DEVICE),
        ({}, {"revoked": True}, None, RejectReason.REVOKED),
        ({}, {"not_after": NOW - timedelta(seconds=1)}, None, RejectReason.CERT_INVALID),
        ({}, {"not_before": NOW + timedelta(seconds=1)}, None, RejectReason.CERT_INVALID),
        ({}, {}, "wb-2", RejectReason.DEVICE_MISMATCH),
        ({"key": ec.generate_private_key(ec.SECP256R1())}, {}, None, RejectReason.BAD_SIGNATURE),
        ({"offset_s": 301}, {}, None, RejectReason.CLOCK_SKEW),
        ({"offset_s": 10**12}, {}, None, RejectReason.CLOCK_SKEW),
        ({}, {"trust_problem": Rejection(RejectReason.CERT_INVALID, "chain")}, None, RejectReason.CERT_INVALID),
    ],
)
def test_refusals(frame_kw: dict, cred_kw: dict | None, peer: str | None, want: RejectReason) -> None:  # type: ignore[type-arg]
    device = None if cred_kw is None else creds(**cred_kw)
    result = authenticate(signed(**frame_kw), device, transport="https", now=NOW, rules=RULES, peer_device_id=peer)
    assert reason(result) is want


def test_late_press_is_accepted_and_marked_delayed() -> None:
    result = authenticate(signed(offset_s=-3600), creds(), transport="https", now=NOW, rules=RULES)
    assert isinstance(result, AuthenticatedSignal)
    assert result.delayed


def test_revoked_is_decided_before_the_signature_is_checked() -> None:
    forged = signed(key=ec.generate_private_key(ec.SECP256R1()))
    assert (
        reason(authenticate(forged, creds(revoked=True), transport="https", now=NOW, rules=RULES))
        is RejectReason.REVOKED
    )
