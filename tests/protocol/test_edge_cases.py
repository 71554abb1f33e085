"""Edge cases of the v1 codecs: every field at and just past its limits."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

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

KEY: Final = ec.derive_private_key(0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721, ec.SECP256R1())
BASE: Final = AlertFrame("wb-0001", 1, 1767225600000, EventType.PANIC)
N_P256: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def round_trip(frame: AlertFrame) -> AlertFrame:
    decoded = decode_frame(encode_frame(frame))
    assert isinstance(decoded, AlertFrame)
    assert decoded == frame
    return decoded


def rejected(data: bytes, reason: RejectReason = RejectReason.MALFORMED) -> None:
    result = decode_frame(data)
    assert isinstance(result, Rejection), result
    assert result.reason is reason


def test_header_is_seventeen_bytes() -> None:
    data = encode_frame(replace(BASE, device_id="x"))
    assert len(data) == const.HEADER_SIZE + 1 == 18
    assert data[0] == const.FRAME_VERSION
    assert data[16] == 1


# --- device id ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", ["a", "Z" * const.MAX_DEVICE_ID_LEN, "0.9_-x", "-", "..."])
def test_device_id_limits_round_trip(device_id: str) -> None:
    round_trip(replace(BASE, device_id=device_id))


@pytest.mark.parametrize("device_id", ["", "a" * (const.MAX_DEVICE_ID_LEN + 1), "wb 1", "wb/1", "wb:1", "é"])
def test_device_id_the_wire_cannot_carry_is_refused_by_encode(device_id: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        encode_frame(replace(BASE, device_id=device_id))


def test_device_id_longer_than_32_on_the_wire_is_malformed() -> None:
    header = encode_frame(BASE)[: const.HEADER_SIZE - 1]
    rejected(header + bytes([33]) + b"a" * 33)


@pytest.mark.parametrize("raw", [b"wb\x00", b"wb\n", b"\xff", b"wb\xc3\xa9"])
def test_device_id_with_non_allowed_bytes_is_malformed(raw: bytes) -> None:
    header = encode_frame(BASE)[: const.HEADER_SIZE - 1]
    rejected(header + bytes([len(raw)]) + raw)


# --- counter, timestamp, battery, event, flags --------------------------------------------------------------


@pytest.mark.parametrize("counter", [0, 1, 2**31, 2**32 - 1])
def test_counter_limits_round_trip(counter: int) -> None:
    data = encode_frame(replace(BASE, counter=counter))
    assert data[4:8] == counter.to_bytes(4, "big")
    round_trip(replace(BASE, counter=counter))


@pytest.mark.parametrize("counter", [-1, 2**32])
def test_counter_out_of_range_is_refused_by_encode(counter: int) -> None:
    with pytest.raises(ValueError, match="counter"):
        encode_frame(replace(BASE, counter=counter))


@pytest.mark.parametrize("timestamp_ms", [0, 1767225600000, 2**63 - 1])
def test_timestamp_limits_round_trip(timestamp_ms: int) -> None:
    round_trip(replace(BASE, timestamp_ms=timestamp_ms))


def test_negative_timestamp_is_malformed() -> None:
    data = bytearray(encode_frame(BASE))
    data[8:16] = (-1).to_bytes(8, "big", signed=True)
    rejected(bytes(data))


@pytest.mark.parametrize("battery", [None, 0, 1, 99, 100])
def test_battery_limits_round_trip(battery: int | None) -> None:
    data = encode_frame(replace(BASE, battery=battery))
    assert data[3] == (const.BATTERY_UNKNOWN if battery is None else battery)
    round_trip(replace(BASE, battery=battery))


@pytest.mark.parametrize("battery", [-1, 101, 254])
def test_battery_out_of_range_is_refused_by_encode(battery: int) -> None:
    with pytest.raises(ValueError, match="battery"):
        encode_frame(replace(BASE, battery=battery))


@pytest.mark.parametrize("raw", [101, 200, 254])
def test_battery_out_of_range_on_the_wire_is_malformed(raw: int) -> None:
    data = bytearray(encode_frame(BASE))
    data[3] = raw
    rejected(bytes(data))


@pytest.mark.parametrize("event", list(EventType))
def test_every_event_round_trips(event: EventType) -> None:
    round_trip(replace(BASE, event=event))


@pytest.mark.parametrize("raw", [0x00, 0x07, 0x80, 0xFF])
def test_unassigned_event_is_malformed(raw: int) -> None:
    data = bytearray(encode_frame(BASE))
    data[1] = raw
    rejected(bytes(data))


@pytest.mark.parametrize("flags", [Flags.NONE, Flags.RETRANSMISSION, Flags.SILENT, Flags.RETRANSMISSION | Flags.SILENT])
def test_known_flags_round_trip(flags: Flags) -> None:
    round_trip(replace(BASE, flags=flags))


@pytest.mark.parametrize("bit", range(2, 8))
def test_each_reserved_flag_bit_is_malformed(bit: int) -> None:
    data = bytearray(encode_frame(BASE))
    data[2] = 1 << bit
    rejected(bytes(data))


@pytest.mark.parametrize("version", [0, 2, 0xFF])
def test_other_versions_are_unsupported(version: int) -> None:
    data = bytearray(encode_frame(BASE))
    data[0] = version
    rejected(bytes(data), RejectReason.UNSUPPORTED_VERSION)


@pytest.mark.parametrize("length", range(const.HEADER_SIZE + 7))
def test_every_truncation_of_a_frame_is_malformed(length: int) -> None:
    rejected(encode_frame(BASE)[:length])


# --- GPS ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(90.0, 180.0), (-90.0, -180.0), (90.0, -180.0), (-90.0, 180.0), (0.0, 0.0), (1e-7, -1e-7)],
)
def test_coordinate_limits_round_trip(lat: float, lon: float) -> None:
    decoded = round_trip(replace(BASE, gps=GpsFix(lat, lon, 5, 0)))
    assert decoded.gps == GpsFix(lat, lon, 5, 0)


@pytest.mark.parametrize(
    ("lat", "lon"), [(90.0000001, 0.0), (-90.0000001, 0.0), (0.0, 180.0000001), (0.0, -180.0000001)]
)
def test_coordinates_out_of_range_are_refused_by_encode(lat: float, lon: float) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_frame(replace(BASE, gps=GpsFix(lat, lon, 5, 0)))


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(900_000_001, 0), (-900_000_001, 0), (0, 1_800_000_001), (0, -1_800_000_001), (2**31 - 1, -(2**31))],
)
def test_coordinates_out_of_range_on_the_wire_are_malformed(lat: int, lon: int) -> None:
    gps = bytes((const.TLV_GPS, const.GPS_TLV_SIZE)) + lat.to_bytes(4, "big", signed=True)
    gps += lon.to_bytes(4, "big", signed=True) + bytes(4)
    rejected(encode_frame(BASE) + gps)


def test_accuracy_and_age_saturate_at_65535() -> None:
    decoded = decode_frame(encode_frame(replace(BASE, gps=GpsFix(1.0, 2.0, 10**6, 10**6))))
    assert isinstance(decoded, AlertFrame)
    assert decoded.gps == GpsFix(1.0, 2.0, 0xFFFF, 0xFFFF)


@pytest.mark.parametrize("length", [0, 11, 13, 255])
def test_gps_of_wrong_length_is_malformed(length: int) -> None:
    rejected(encode_frame(BASE) + bytes((const.TLV_GPS, length)) + bytes(length))


def test_gps_twice_is_malformed() -> None:
    data = encode_frame(replace(BASE, gps=GpsFix(1.0, 2.0, 3, 4)))
    rejected(data + data[-(2 + const.GPS_TLV_SIZE) :])


# --- extensions and sizes -----------------------------------------------------------------------------------


def test_optional_extension_of_length_zero_is_skipped() -> None:
    assert decode_frame(encode_frame(BASE) + bytes((0xFF, 0))) == BASE


def test_frame_of_exactly_max_size_decodes() -> None:
    data = encode_frame(BASE)
    pad = const.MAX_FRAME_SIZE - len(data) - 2
    frame = data + bytes((0x80, pad)) + bytes(pad)
    assert len(frame) == const.MAX_FRAME_SIZE
    assert decode_frame(frame) == BASE


def test_frame_one_byte_over_max_size_is_malformed() -> None:
    data = encode_frame(BASE)
    pad = const.MAX_FRAME_SIZE - len(data) - 1
    rejected(data + bytes((0x80, pad)) + bytes(pad))


def test_largest_encodable_frame_fits() -> None:
    frame = AlertFrame("x" * 32, 2**32 - 1, 2**63 - 1, EventType.FALL, Flags.SILENT, 100, GpsFix(-90.0, 180.0, 1, 1))
    assert len(encode_frame(frame)) == const.HEADER_SIZE + 32 + 2 + const.GPS_TLV_SIZE == 63


def test_signed_frame_size_limits() -> None:
    data = encode_frame(replace(BASE, device_id="a"))
    smallest = data + bytes(const.SIGNATURE_SIZE)
    assert len(smallest) == const.HEADER_SIZE + 1 + const.SIGNATURE_SIZE == 82
    assert isinstance(parse_signed_frame(smallest), SignedFrame)
    too_short = parse_signed_frame(smallest[:-1])
    assert isinstance(too_short, Rejection)
    assert too_short.reason is RejectReason.MALFORMED

    pad = const.MAX_FRAME_SIZE - len(data) - 2
    largest = data + bytes((0x80, pad)) + bytes(pad) + bytes(const.SIGNATURE_SIZE)
    assert len(largest) == const.MAX_SIGNED_FRAME_SIZE == 256
    assert isinstance(parse_signed_frame(largest), SignedFrame)
    too_long = parse_signed_frame(largest + b"\x00")
    assert isinstance(too_long, Rejection)
    assert too_long.reason is RejectReason.MALFORMED


@pytest.mark.parametrize("data", [b"", b"\x01", bytes(81), bytes(const.MAX_SIGNED_FRAME_SIZE + 1)])
def test_signed_frame_of_impossible_size_is_malformed(data: bytes) -> None:
    result = parse_signed_frame(data)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.MALFORMED


# --- signature values ---------------------------------------------------------------------------------------


def _with_signature(signed: SignedFrame, r: int, s: int) -> SignedFrame:
    return replace(signed, signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_signature_values_outside_1_to_n_minus_1_never_verify() -> None:
    signed = parse_signed_frame(sign_frame(BASE, KEY))
    assert isinstance(signed, SignedFrame)
    r, s = int.from_bytes(signed.signature[:32], "big"), int.from_bytes(signed.signature[32:], "big")
    for bad_r, bad_s in [(0, s), (r, 0), (0, 0), (N_P256, s), (r, N_P256), (2**256 - 1, 2**256 - 1)]:
        assert not verify_signature(_with_signature(signed, bad_r, bad_s), KEY.public_key())
    if r + N_P256 < 2**256:
        assert not verify_signature(_with_signature(signed, r + N_P256, s), KEY.public_key())


def test_high_s_form_of_a_signature_also_verifies() -> None:
    """PROTOCOL.md §6: the gateway does not require low-S, so (r, n - s) is accepted too."""
    signed = parse_signed_frame(sign_frame(BASE, KEY))
    assert isinstance(signed, SignedFrame)
    r, s = int.from_bytes(signed.signature[:32], "big"), int.from_bytes(signed.signature[32:], "big")
    assert verify_signature(_with_signature(signed, r, N_P256 - s), KEY.public_key())


def test_signature_by_the_context_free_message_does_not_verify() -> None:
    frame_bytes = encode_frame(BASE)
    r, s = decode_dss_signature(KEY.sign(frame_bytes, ec.ECDSA(hashes.SHA256())))
    parsed = parse_signed_frame(frame_bytes + r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    assert isinstance(parsed, SignedFrame)
    assert not verify_signature(parsed, KEY.public_key())
