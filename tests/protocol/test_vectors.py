"""The test vectors of docs/PROTOCOL.md, parsed from the document itself and checked against the code."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Final

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.protocol import (
    AlertFrame,
    EventType,
    Flags,
    GpsFix,
    SignedFrame,
    const,
    decode_frame,
    encode_frame,
    parse_signed_frame,
    sign_frame,
    verify_signature,
)
from gateway.rejection import Rejection, RejectReason
from tests.docvectors import PROTOCOL_TEXT, Vector, doc_vectors

_GPS_FIELDS: Final = ("gps_lat", "gps_lon", "gps_accuracy_m", "gps_fix_age_s")

DOC_TEXT: Final = PROTOCOL_TEXT
VECTORS: Final = doc_vectors("vector")
KEYS: Final = {v["name"]: v for v in VECTORS if v["kind"] == "key"}
VALID: Final = [v for v in VECTORS if v["kind"] == "valid"]
INVALID: Final = [v for v in VECTORS if v["kind"] == "invalid"]
_NAMESPACE_MATCH: Final = re.search(r"namespace = ([0-9a-f-]{36})", DOC_TEXT)
assert _NAMESPACE_MATCH is not None, "PROTOCOL.md §9 must state the incident id namespace"
INCIDENT_NAMESPACE: Final = uuid.UUID(_NAMESPACE_MATCH.group(1))


def _params(vectors: list[Vector]) -> list[object]:
    return [pytest.param(v, id=v["name"]) for v in vectors]


def private_key(v: Vector) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(KEYS[v["key"]]["private_key"], 16), ec.SECP256R1())


def public_key(v: Vector) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(KEYS[v["key"]]["public_key"]))


def expected_frame(v: Vector) -> AlertFrame:
    """The AlertFrame a vector's field lines describe."""
    if v.get("gps") == "none":
        assert not any(f in v for f in _GPS_FIELDS), "'gps: none' excludes the gps_* fields"
        gps = None
    else:
        gps = GpsFix(
            lat=float(v["gps_lat"]),
            lon=float(v["gps_lon"]),
            accuracy_m=int(v["gps_accuracy_m"]),
            fix_age_s=int(v["gps_fix_age_s"]),
        )
    return AlertFrame(
        device_id=v["device_id"],
        counter=int(v["counter"]),
        timestamp_ms=int(v["timestamp_ms"]),
        event=EventType[v["event"].upper()],
        flags=Flags(int(v["flags"], 16)),
        battery=None if v["battery"] == "unknown" else int(v["battery"]),
        gps=gps,
    )


def raw_signature(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --- the set of vectors itself ------------------------------------------------------------------------------


def test_vector_set_covers_the_required_cases() -> None:
    assert len({v["name"] for v in VECTORS}) == len(VECTORS), "vector names must be unique"
    assert all(v["kind"] in {"key", "valid", "invalid"} for v in VECTORS)
    frames = {v["name"]: expected_frame(v) for v in VALID}
    assert any(f.event is EventType.PANIC and f.gps is not None for f in frames.values())
    assert any(f.event is EventType.CANCEL for f in frames.values())
    assert any(f.event is EventType.HEARTBEAT and f.battery is None for f in frames.values())
    assert any(f.event is EventType.TEST and f.flags != Flags.NONE for f in frames.values())
    reasons = {v["reason"] for v in INVALID}
    assert {"malformed", "unsupported-version", "bad-signature"} <= reasons
    assert len(INVALID) >= 4


def test_test_key_pair_is_consistent() -> None:
    assert KEYS, "PROTOCOL.md must define a test key"
    for k in KEYS.values():
        priv = ec.derive_private_key(int(k["private_key"], 16), ec.SECP256R1())
        point = priv.public_key().public_numbers()
        assert k["public_key"] == "04" + f"{point.x:064x}" + f"{point.y:064x}"


# --- valid vectors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", _params(VALID))
def test_valid_vector_decodes_to_its_fields(v: Vector) -> None:
    assert decode_frame(bytes.fromhex(v["frame"])) == expected_frame(v)


@pytest.mark.parametrize("v", _params(VALID))
def test_valid_vector_encodes_to_its_hex(v: Vector) -> None:
    encoded = encode_frame(expected_frame(v))
    if v["canonical"] == "yes":
        assert encoded.hex() == v["frame"]
    else:
        assert v["canonical"] == "no"
        assert encoded.hex() != v["frame"]
        assert decode_frame(encoded) == expected_frame(v)


@pytest.mark.parametrize("v", _params(VALID))
def test_valid_vector_signed_frame_parses(v: Vector) -> None:
    frame, signature, signed = (bytes.fromhex(v[k]) for k in ("frame", "signature", "signed_frame"))
    assert signed == frame + signature
    assert len(signature) == const.SIGNATURE_SIZE
    parsed = parse_signed_frame(signed)
    assert parsed == SignedFrame(
        frame=expected_frame(v), frame_bytes=frame, signature=signature, digest=hashlib.sha256(frame).digest()
    )


@pytest.mark.parametrize("v", _params(VALID))
def test_valid_vector_signature_verifies(v: Vector) -> None:
    frame = bytes.fromhex(v["frame"])
    assert hashlib.sha256(const.SIGNATURE_CONTEXT + frame).hexdigest() == v["message_sha256"]
    parsed = parse_signed_frame(bytes.fromhex(v["signed_frame"]))
    assert isinstance(parsed, SignedFrame)
    assert verify_signature(parsed, public_key(v))


@pytest.mark.parametrize("v", _params(VALID))
def test_valid_vector_signature_is_reproducible(v: Vector) -> None:
    message = const.SIGNATURE_CONTEXT + bytes.fromhex(v["frame"])
    der = private_key(v).sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    assert raw_signature(der).hex() == v["signature"]
    if "signature_der" in v:
        assert der.hex() == v["signature_der"]
        sig = bytes.fromhex(v["signature"])
        assert encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")) == der


@pytest.mark.parametrize("v", _params([v for v in VALID if v["canonical"] == "yes"]))
def test_sign_frame_of_vector_fields_verifies(v: Vector) -> None:
    signed = sign_frame(expected_frame(v), private_key(v))
    assert signed[: -const.SIGNATURE_SIZE].hex() == v["frame"]
    parsed = parse_signed_frame(signed)
    assert isinstance(parsed, SignedFrame)
    assert verify_signature(parsed, public_key(v))


@pytest.mark.parametrize("v", _params(VALID))
def test_valid_vector_incident_id(v: Vector) -> None:
    frame = expected_frame(v)
    if frame.event.raises_incident:
        expected = uuid.uuid5(INCIDENT_NAMESPACE, f"{frame.device_id}:{frame.counter}")
        assert v["incident_id"] == str(expected)
    else:
        assert "incident_id" not in v


def test_incident_id_example_in_text() -> None:
    example = uuid.uuid5(INCIDENT_NAMESPACE, "wb-0001:42")
    assert f"`wb-0001` counter `42` gives `{example}`" in DOC_TEXT


# --- invalid vectors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", _params(INVALID))
def test_invalid_vector_is_rejected_with_its_reason(v: Vector) -> None:
    reason = RejectReason(v["reason"])
    assert "frame" in v or "signed_frame" in v
    if "frame" in v:
        decoded = decode_frame(bytes.fromhex(v["frame"]))
        if reason is RejectReason.BAD_SIGNATURE:
            assert isinstance(decoded, AlertFrame)
        else:
            assert isinstance(decoded, Rejection)
            assert decoded.reason is reason
            assert decoded.detail
    if "signed_frame" in v:
        parsed = parse_signed_frame(bytes.fromhex(v["signed_frame"]))
        if reason is RejectReason.BAD_SIGNATURE:
            assert isinstance(parsed, SignedFrame)
            assert not verify_signature(parsed, public_key(v))
        else:
            assert isinstance(parsed, Rejection)
            assert parsed.reason is reason


@pytest.mark.parametrize("v", _params([v for v in INVALID if "frame" in v]))
def test_invalid_frame_carries_a_valid_signature(v: Vector) -> None:
    """The defect is the listed one only: the signature over the bad frame is genuine."""
    frame, signed = bytes.fromhex(v["frame"]), bytes.fromhex(v["signed_frame"])
    assert signed[: -const.SIGNATURE_SIZE] == frame
    sig = signed[-const.SIGNATURE_SIZE :]
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    public_key(v).verify(der, const.SIGNATURE_CONTEXT + frame, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("v", _params([v for v in VALID if "incident_id" in v]))
def test_gateway_names_incidents_as_documented(v: Vector) -> None:
    from gateway.store.incidents import incident_id_for  # the store owns the ids; imported late (tortoise)

    assert incident_id_for(v["device_id"], int(v["counter"])) == v["incident_id"]
