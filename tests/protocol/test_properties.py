"""Property tests of the v1 codecs: round trips, garbage never raises, tampering never verifies."""

from __future__ import annotations

import hashlib
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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

#: Signing and verifying cost ~0.1 ms each; these keep the whole module well under a few seconds.
FAST: Final = settings(max_examples=300, deadline=None)
CRYPTO: Final = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Fixed keys (the RFC 6979 A.2.5 scalar and another): generating keys per example would dominate the runtime.
KEY: Final = ec.derive_private_key(0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721, ec.SECP256R1())
OTHER_KEY: Final = ec.derive_private_key(0x0123456789ABCDEF, ec.SECP256R1())

DEVICE_ID_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

device_ids = st.text(DEVICE_ID_ALPHABET, min_size=1, max_size=const.MAX_DEVICE_ID_LEN)
counters = st.integers(0, 2**32 - 1)
timestamps = st.one_of(st.integers(0, 2**63 - 1), st.integers(1_600_000_000_000, 2_000_000_000_000))
flags = st.sampled_from([Flags(v) for v in range(4)])
batteries = st.one_of(st.none(), st.integers(0, 100))
# On-wire units (1e-7 degree) mapped to the floats the decoder produces, so round trips are exact.
latitudes = st.integers(-90 * const.GPS_SCALE, 90 * const.GPS_SCALE).map(lambda v: v / const.GPS_SCALE)
longitudes = st.integers(-180 * const.GPS_SCALE, 180 * const.GPS_SCALE).map(lambda v: v / const.GPS_SCALE)
gps_fixes = st.builds(
    GpsFix, lat=latitudes, lon=longitudes, accuracy_m=st.integers(0, 0xFFFF), fix_age_s=st.integers(0, 0xFFFF)
)
frames = st.builds(
    AlertFrame,
    device_id=device_ids,
    counter=counters,
    timestamp_ms=timestamps,
    event=st.sampled_from(EventType),
    flags=flags,
    battery=batteries,
    gps=st.one_of(st.none(), gps_fixes),
)


def _optional_tlvs(draw: st.DrawFn, room: int) -> list[bytes]:
    types = draw(st.lists(st.integers(const.TLV_OPTIONAL_FROM, 0xFF), unique=True, max_size=4))
    out = []
    for t in types:
        if room < 2:
            break
        value = draw(st.binary(max_size=min(room - 2, 40)))
        out.append(bytes((t, len(value))) + value)
        room -= 2 + len(value)
    return out


@st.composite
def frames_with_optional_extensions(draw: st.DrawFn) -> tuple[AlertFrame, bytes]:
    """A frame and an encoding of it with unknown optional TLVs shuffled around its GPS extension."""
    frame = draw(frames)
    canonical = encode_frame(frame)
    id_end = const.HEADER_SIZE + len(frame.device_id)
    body, known = canonical[:id_end], canonical[id_end:]
    extra = _optional_tlvs(draw, const.MAX_FRAME_SIZE - len(canonical))
    tlvs = draw(st.permutations([known, *extra] if known else extra))
    return frame, body + b"".join(tlvs)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few random edits: flips, overwrites, inserts, deletions, truncation."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if op == "insert" or not data:
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
            continue
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


def _check_decoded(data: bytes, result: AlertFrame | Rejection) -> None:
    """What decode_frame may return: a frame that survives re-encoding, or a documented rejection."""
    if isinstance(result, Rejection):
        assert result.reason in (RejectReason.MALFORMED, RejectReason.UNSUPPORTED_VERSION)
        assert isinstance(result.detail, str)
        assert result.detail
    else:
        assert isinstance(result, AlertFrame)
        assert len(data) <= const.MAX_FRAME_SIZE
        assert decode_frame(encode_frame(result)) == result


def _check_parsed(data: bytes, result: SignedFrame | Rejection) -> None:
    if isinstance(result, Rejection):
        assert result.reason in (RejectReason.MALFORMED, RejectReason.UNSUPPORTED_VERSION)
        assert result.detail
    else:
        assert isinstance(result, SignedFrame)
        assert result.frame_bytes + result.signature == data
        assert len(result.signature) == const.SIGNATURE_SIZE
        assert result.digest == hashlib.sha256(result.frame_bytes).digest()
        assert decode_frame(result.frame_bytes) == result.frame


# --- frame round trips --------------------------------------------------------------------------------------


@FAST
@given(frames)
def test_encode_decode_round_trip(frame: AlertFrame) -> None:
    data = encode_frame(frame)
    assert const.HEADER_SIZE + 1 <= len(data) <= const.MAX_FRAME_SIZE
    assert decode_frame(data) == frame
    assert encode_frame(frame) == data


@FAST
@given(frames.map(encode_frame))
def test_decode_encode_round_trip(data: bytes) -> None:
    frame = decode_frame(data)
    assert isinstance(frame, AlertFrame)
    assert encode_frame(frame) == data


@FAST
@given(frames_with_optional_extensions())
def test_unknown_optional_extensions_are_skipped(case: tuple[AlertFrame, bytes]) -> None:
    frame, data = case
    assert decode_frame(data) == frame


@FAST
@given(frames, st.integers(0x02, const.TLV_OPTIONAL_FROM - 1), st.binary(max_size=8))
def test_unknown_critical_extension_is_rejected(frame: AlertFrame, tlv_type: int, value: bytes) -> None:
    result = decode_frame(encode_frame(frame) + bytes((tlv_type, len(value))) + value)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.MALFORMED


@FAST
@given(
    st.builds(
        GpsFix,
        lat=st.floats(-90, 90),
        lon=st.floats(-180, 180),
        accuracy_m=st.integers(0, 10**6),
        fix_age_s=st.integers(0, 10**6),
    )
)
def test_gps_encoding_quantises_to_a_hundred_nanodegrees(gps: GpsFix) -> None:
    frame = AlertFrame("wb-1", 1, 0, EventType.PANIC, gps=gps)
    decoded = decode_frame(encode_frame(frame))
    assert isinstance(decoded, AlertFrame)
    assert decoded.gps is not None
    assert abs(decoded.gps.lat - gps.lat) <= 0.5 / const.GPS_SCALE + 1e-12
    assert abs(decoded.gps.lon - gps.lon) <= 0.5 / const.GPS_SCALE + 1e-12
    assert decoded.gps.accuracy_m == min(gps.accuracy_m, 0xFFFF)
    assert decoded.gps.fix_age_s == min(gps.fix_age_s, 0xFFFF)


# --- garbage never raises -----------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=2 * const.MAX_SIGNED_FRAME_SIZE))
def test_decode_random_bytes_never_raises(data: bytes) -> None:
    _check_decoded(data, decode_frame(data))


@FAST
@given(st.binary(min_size=const.HEADER_SIZE - 1, max_size=80).map(lambda b: bytes([const.FRAME_VERSION]) + b))
def test_decode_random_v1_looking_bytes_never_raises(data: bytes) -> None:
    _check_decoded(data, decode_frame(data))


@FAST
@given(mutated(st.one_of(frames.map(encode_frame), frames_with_optional_extensions().map(lambda c: c[1]))))
def test_decode_mutated_frame_never_raises(data: bytes) -> None:
    _check_decoded(data, decode_frame(data))


@FAST
@given(st.binary(max_size=2 * const.MAX_SIGNED_FRAME_SIZE))
def test_parse_random_bytes_never_raises(data: bytes) -> None:
    _check_parsed(data, parse_signed_frame(data))


@FAST
@given(mutated(frames.map(lambda f: encode_frame(f) + bytes(range(const.SIGNATURE_SIZE)))))
def test_parse_mutated_signed_frame_never_raises(data: bytes) -> None:
    _check_parsed(data, parse_signed_frame(data))


# --- signatures ---------------------------------------------------------------------------------------------


@CRYPTO
@given(frames)
def test_sign_parse_verify_round_trip(frame: AlertFrame) -> None:
    signed = sign_frame(frame, KEY)
    parsed = parse_signed_frame(signed)
    assert isinstance(parsed, SignedFrame)
    assert parsed.frame == frame
    assert parsed.frame_bytes == encode_frame(frame)
    assert verify_signature(parsed, KEY.public_key())
    assert not verify_signature(parsed, OTHER_KEY.public_key())


@CRYPTO
@given(frames)
def test_re_signing_names_the_same_frame(frame: AlertFrame) -> None:
    """ECDSA signatures are randomised; the digest names the frame, so a re-signed retry is recognised."""
    first, second = parse_signed_frame(sign_frame(frame, KEY)), parse_signed_frame(sign_frame(frame, KEY))
    assert isinstance(first, SignedFrame)
    assert isinstance(second, SignedFrame)
    assert first.signature != second.signature
    assert first.digest == second.digest


@CRYPTO
@given(frames, st.data())
def test_flipped_bit_never_verifies(frame: AlertFrame, data: st.DataObject) -> None:
    signed = bytearray(sign_frame(frame, KEY))
    bit = data.draw(st.integers(0, len(signed) * 8 - 1))
    signed[bit // 8] ^= 1 << (bit % 8)
    parsed = parse_signed_frame(bytes(signed))
    assert isinstance(parsed, Rejection) or not verify_signature(parsed, KEY.public_key())


def test_every_single_bit_flip_of_a_signed_frame_fails() -> None:
    frame = AlertFrame(
        "wb-0001", 42, 1767225600000, EventType.PANIC, Flags.SILENT, 87, GpsFix(48.8583701, 2.2944813, 8, 3)
    )
    signed = sign_frame(frame, KEY)
    for bit in range(len(signed) * 8):
        flipped = bytearray(signed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        parsed = parse_signed_frame(bytes(flipped))
        assert isinstance(parsed, Rejection) or not verify_signature(parsed, KEY.public_key()), bit


@CRYPTO
@given(frames, st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1))
def test_arbitrary_signature_values_never_raise(frame: AlertFrame, r: int, s: int) -> None:
    """Zero, out-of-range (>= n) and random r, s are refused by verify_signature, never raised."""
    parsed = parse_signed_frame(encode_frame(frame) + r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    assert isinstance(parsed, SignedFrame)
    assert verify_signature(parsed, KEY.public_key()) is False
