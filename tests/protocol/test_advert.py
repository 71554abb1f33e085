"""BLE advert v1: the vectors of docs/PROTOCOL.md §14, round trips, garbage, tampering and privacy."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections import Counter
from typing import Final

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import EventType
from gateway.protocol.advert import (
    ADVERT_SIZE,
    ADVERT_WINDOW_S,
    LEGACY_ADV_DATA_MAX,
    PAYLOAD_SIZE,
    AdvertKeys,
    AdvertSignal,
    ParsedAdvert,
    derive_advert_keys,
    device_advert_keys,
    encode_advert,
    gateway_advert_keys,
    open_advert,
    parse_advert,
    window_of,
)
from gateway.rejection import Rejection, RejectReason
from tests.docvectors import PROTOCOL_TEXT as DOC_TEXT
from tests.docvectors import Vector, doc_vectors

FAST: Final = settings(max_examples=300, deadline=None)

VECTORS: Final = doc_vectors("advert-vector")
KEY_SETS: Final = {v["name"]: v for v in VECTORS if v["kind"] == "keys"}
ADVERTS: Final = {v["name"]: v for v in VECTORS if v["kind"] == "advert"}
INVALID: Final = [v for v in VECTORS if v["kind"] == "invalid"]
VARIANTS: Final = [v for v in VECTORS if v["kind"] == "variant"]


def _params(vectors: list[Vector]) -> list[object]:
    return [pytest.param(v, id=v["name"]) for v in vectors]


def _scalar_key(hex_scalar: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(hex_scalar, 16), ec.SECP256R1())


def vector_keys(name: str) -> AdvertKeys:
    k = KEY_SETS[name]
    return device_advert_keys(
        _scalar_key(k["device_private_key"]), _scalar_key(k["fleet_private_key"]).public_key(), k["device_id"]
    )


def _aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _signal(v: Vector) -> AdvertSignal:
    return AdvertSignal(
        KEY_SETS[v["keys"]]["device_id"],
        int(v["counter"]),
        EventType[v["event"].upper()],
        None if v["battery"] == "unknown" else int(v["battery"]),
        int(v["window"]),
    )


# --- the vectors of §14.8 -----------------------------------------------------------------------------------


def test_vector_set_covers_the_required_cases() -> None:
    assert len({v["name"] for v in VECTORS}) == len(VECTORS)
    assert {v["kind"] for v in VECTORS} == {"keys", "advert", "invalid", "variant"}
    assert {EventType[v["event"].upper()] for v in ADVERTS.values()} >= {
        EventType.PANIC,
        EventType.CANCEL,
        EventType.HEARTBEAT,
        EventType.LOW_BATTERY,
        EventType.FALL,
    }
    assert {v["result"] for v in INVALID} >= {"not-ours", "malformed", "unsupported-version", "bad-signature"}


@pytest.mark.parametrize("k", _params(list(KEY_SETS.values())))
def test_key_vector_steps(k: Vector) -> None:
    device, fleet = _scalar_key(k["device_private_key"]), _scalar_key(k["fleet_private_key"])
    for priv, name in ((device, "device_public_key"), (fleet, "fleet_public_key")):
        point = priv.public_key().public_numbers()
        assert k[name] == f"04{point.x:064x}{point.y:064x}"
    z = device.exchange(ec.ECDH(), fleet.public_key())
    assert z.hex() == k["shared_secret"] == fleet.exchange(ec.ECDH(), device.public_key()).hex()
    okm = HKDF(
        algorithm=hashes.SHA256(), length=48, salt=b"panic-advert/v1", info=b"keys" + k["device_id"].encode()
    ).derive(z)
    assert (okm[:16].hex(), okm[16:32].hex(), okm[32:].hex()) == (k["k_eid"], k["k_enc"], k["k_mac"])
    keys = vector_keys(k["name"])
    assert (keys.eid_key.hex(), keys.enc_key.hex(), keys.mac_key.hex()) == (k["k_eid"], k["k_enc"], k["k_mac"])
    assert keys == gateway_advert_keys(fleet, device.public_key(), k["device_id"])


@pytest.mark.parametrize("v", _params(list(ADVERTS.values())))
def test_advert_vector_steps_follow_the_text(v: Vector) -> None:
    """Each step recomputed from §14.2-14.4 with plain primitives, not with the module under test."""
    k = KEY_SETS[v["keys"]]
    k_eid, k_enc, k_mac = (bytes.fromhex(k[n]) for n in ("k_eid", "k_enc", "k_mac"))
    window = int(v["window"])
    assert window == int(v["unix_time"]) // 900
    w = window.to_bytes(4, "big")
    eid = _aes_block(k_eid, b"EID" + w + bytes(9))[:8]
    assert eid.hex() == v["eid"]
    s = _signal(v)
    plaintext = s.counter.to_bytes(4, "big") + bytes((s.event, 0xFF if s.battery is None else s.battery))
    assert plaintext.hex() == v["plaintext"]
    mac_input = b"\x01" + eid + w + plaintext
    assert mac_input.hex() == v["mac_input"]
    tag = hmac.digest(k_mac, mac_input, "sha256")[:8]
    assert tag.hex() == v["tag"]
    counter_block = tag + w + bytes(4)
    assert counter_block.hex() == v["counter_block"]
    ctr = Cipher(algorithms.AES(k_enc), modes.CTR(counter_block)).encryptor()
    keystream = ctr.update(bytes(6))
    assert keystream.hex() == v["keystream"] == _aes_block(k_enc, counter_block)[:6].hex()
    sealed = bytes(a ^ b for a, b in zip(plaintext, keystream, strict=True))
    assert sealed.hex() == v["sealed"]
    assert v["advert"] == "0201061a1600fd01" + eid.hex() + sealed.hex() + tag.hex()


@pytest.mark.parametrize("v", _params(list(ADVERTS.values())))
def test_advert_vector_encodes_and_opens(v: Vector) -> None:
    keys, s = vector_keys(v["keys"]), _signal(v)
    assert window_of(int(v["unix_time"])) == s.window
    assert encode_advert(keys, s.counter, s.event, s.battery, s.window).hex() == v["advert"]
    parsed = parse_advert(bytes.fromhex(v["advert"]))
    assert isinstance(parsed, ParsedAdvert)
    assert parsed.eid.hex() == v["eid"] == keys.ephemeral_id(s.window).hex()
    assert open_advert(parsed, keys, s.window) == s


@pytest.mark.parametrize("v", _params(INVALID))
def test_invalid_vector_result(v: Vector) -> None:
    parsed = parse_advert(bytes.fromhex(v["advert"]))
    if v["result"] == "not-ours":
        assert parsed is None
        return
    reason = RejectReason(v["result"])
    if "keys" in v:
        assert isinstance(parsed, ParsedAdvert)
        keys = vector_keys(v["keys"])
        assert parsed.eid == keys.ephemeral_id(int(v["window"]))
        opened = open_advert(parsed, keys, int(v["window"]))
        assert isinstance(opened, Rejection)
        assert opened.reason is reason
    else:
        assert isinstance(parsed, Rejection)
        assert parsed.reason is reason


@pytest.mark.parametrize("v", _params(VARIANTS))
def test_variant_vector_opens_like_its_original(v: Vector) -> None:
    original = ADVERTS[v["same_as"]]
    parsed = parse_advert(bytes.fromhex(v["advert"]))
    assert parsed == parse_advert(bytes.fromhex(original["advert"]))
    assert isinstance(parsed, ParsedAdvert)
    assert open_advert(parsed, vector_keys(original["keys"]), int(original["window"])) == _signal(original)


def test_documented_layout_matches_the_code() -> None:
    assert ADVERT_WINDOW_S == 900
    assert f"exactly these {ADVERT_SIZE} bytes" in DOC_TEXT
    assert f"{PAYLOAD_SIZE}-byte payload" in DOC_TEXT
    assert ADVERT_SIZE <= LEGACY_ADV_DATA_MAX


# --- properties ---------------------------------------------------------------------------------------------

KEYS: Final = derive_advert_keys(hashlib.sha256(b"device one").digest(), "wb-0001")
OTHER: Final = derive_advert_keys(hashlib.sha256(b"device two").digest(), "wb-0002")

counters = st.integers(0, 2**32 - 1)
events = st.sampled_from(list(EventType))
batteries = st.one_of(st.none(), st.integers(0, 100))
windows = st.integers(0, 2**32 - 1)


def _open(data: bytes, keys: AdvertKeys, window: int) -> AdvertSignal | Rejection | None:
    parsed = parse_advert(data)
    if not isinstance(parsed, ParsedAdvert):
        return parsed
    return open_advert(parsed, keys, window)


@FAST
@given(counters, events, batteries, windows)
def test_round_trip(counter: int, event: EventType, battery: int | None, window: int) -> None:
    data = encode_advert(KEYS, counter, event, battery, window)
    assert len(data) == ADVERT_SIZE <= LEGACY_ADV_DATA_MAX
    assert _open(data, KEYS, window) == AdvertSignal("wb-0001", counter, event, battery, window)


@FAST
@given(st.binary(max_size=64), windows)
def test_random_bytes_never_raise(data: bytes, window: int) -> None:
    result = _open(data, KEYS, window)
    assert result is None or isinstance(result, Rejection)


@FAST
@given(st.binary(max_size=40))
def test_bytes_around_our_marker_never_raise(noise: bytes) -> None:
    """Garbage that does contain our UUID marker exercises the AD walk itself."""
    for data in (noise + b"\x16\x00\xfd", b"\x16\x00\xfd" + noise, noise[:5] + b"\x1a\x16\x00\xfd\x01" + noise[5:]):
        result = _open(data, KEYS, 7)
        assert result is None or isinstance(result, Rejection)


@FAST
@given(counters, events, batteries, windows, st.data())
def test_mutations_never_raise_and_never_change_the_signal(
    counter: int, event: EventType, battery: int | None, window: int, data: st.DataObject
) -> None:
    original = encode_advert(KEYS, counter, event, battery, window)
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        if op == "flip" and mutated:
            mutated[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and mutated:
            mutated[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del mutated[pos:]
        else:
            mutated.insert(pos, data.draw(st.integers(0, 255)))
    result = _open(bytes(mutated), KEYS, window)
    assert result is None or isinstance(result, (Rejection, AdvertSignal))
    if isinstance(result, AdvertSignal):
        # Only changes outside the authenticated bytes survive (e.g. the flags value, padding).
        assert result == AdvertSignal("wb-0001", counter, event, battery, window)


@FAST
@given(counters, events, batteries, windows, st.integers(8 * 8, 30 * 8 - 1))
def test_any_flipped_bit_of_eid_sealed_or_tag_is_refused(
    counter: int, event: EventType, battery: int | None, window: int, bit: int
) -> None:
    data = bytearray(encode_advert(KEYS, counter, event, battery, window))
    data[bit // 8] ^= 1 << (bit % 8)
    parsed = parse_advert(bytes(data))
    assert isinstance(parsed, ParsedAdvert)
    if bit < 16 * 8:  # a changed EID no longer resolves to this device and window
        assert parsed.eid != KEYS.ephemeral_id(window)
    result = open_advert(parsed, KEYS, window)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.BAD_SIGNATURE


@FAST
@given(counters, events, batteries, windows)
def test_another_devices_keys_cannot_open(counter: int, event: EventType, battery: int | None, window: int) -> None:
    parsed = parse_advert(encode_advert(KEYS, counter, event, battery, window))
    assert isinstance(parsed, ParsedAdvert)
    assert parsed.eid != OTHER.ephemeral_id(window)
    result = open_advert(parsed, OTHER, window)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.BAD_SIGNATURE


@FAST
@given(counters, events, batteries, windows, windows)
def test_another_window_cannot_open(
    counter: int, event: EventType, battery: int | None, window: int, other: int
) -> None:
    parsed = parse_advert(encode_advert(KEYS, counter, event, battery, window))
    assert isinstance(parsed, ParsedAdvert)
    result = open_advert(parsed, KEYS, other)
    assert isinstance(result, AdvertSignal) == (window == other)


# --- privacy ------------------------------------------------------------------------------------------------

#: Flags AD (3), Service Data AD header (4) and version (1): the only bytes every advert shares.
CONSTANT_PREFIX: Final = 8


@FAST
@given(counters, events, batteries, windows, st.integers(1, 1000))
def test_same_content_in_another_window_shares_no_field(
    counter: int, event: EventType, battery: int | None, window: int, step: int
) -> None:
    other = (window + step) % 2**32
    a = encode_advert(KEYS, counter, event, battery, window)
    b = encode_advert(KEYS, counter, event, battery, other)
    assert a[:CONSTANT_PREFIX] == b[:CONSTANT_PREFIX]
    assert a[8:16] != b[8:16], "EID"
    assert a[16:22] != b[16:22], "sealed: the same counter gives another ciphertext"
    assert a[22:] != b[22:], "tag"


def test_no_byte_position_links_adverts_across_windows() -> None:
    """Random-looking bytes match by chance (1/256 per position), so the test is statistical: across 512
    windows no position outside the constant prefix is constant, and any two windows' adverts agree on
    about as many positions as two random strings (expected 22/256 ~ 0.09; fail at 3x that)."""
    adverts = [encode_advert(KEYS, 1234, EventType.HEARTBEAT, 80, 1_963_584 + i) for i in range(512)]
    assert len({a[:CONSTANT_PREFIX] for a in adverts}) == 1
    for pos in range(CONSTANT_PREFIX, ADVERT_SIZE):
        values = Counter(a[pos] for a in adverts)
        assert max(values.values()) < 12, f"byte {pos} is biased: {values.most_common(1)}"
    pairs = list(itertools.pairwise(adverts))
    same = sum(x == y for a, b in pairs for x, y in zip(a[CONSTANT_PREFIX:], b[CONSTANT_PREFIX:], strict=True))
    assert same / len(pairs) < 3 * (ADVERT_SIZE - CONSTANT_PREFIX) / 256
    assert len({a[8:16] for a in adverts}) == len(adverts)


def test_adverts_in_one_window_differ_by_counter() -> None:
    """The keystream is never reused: two counters in one window give unrelated sealed fields."""
    a = encode_advert(KEYS, 10, EventType.HEARTBEAT, 80, 5)
    b = encode_advert(KEYS, 11, EventType.HEARTBEAT, 80, 5)
    assert a[8:16] == b[8:16]
    xor_sealed = bytes(x ^ y for x, y in zip(a[16:22], b[16:22], strict=True))
    assert xor_sealed != bytes((0, 0, 0, 10 ^ 11, 0, 0))


def test_vector_pair_in_two_windows_shares_only_the_prefix() -> None:
    a, b = (bytes.fromhex(ADVERTS[n]["advert"]) for n in ("advert-panic", "advert-panic-next-window"))
    assert a[:CONSTANT_PREFIX] == b[:CONSTANT_PREFIX]
    assert all(x != y for x, y in zip(a[CONSTANT_PREFIX:], b[CONSTANT_PREFIX:], strict=True))


# --- keys ---------------------------------------------------------------------------------------------------


def test_device_and_gateway_derive_the_same_keys() -> None:
    device, fleet = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    mine = device_advert_keys(device, fleet.public_key(), "wb-0042")
    assert mine == gateway_advert_keys(fleet, device.public_key(), "wb-0042")
    assert mine != gateway_advert_keys(fleet, device.public_key(), "wb-0043"), "the id is bound in"
    other = ec.generate_private_key(ec.SECP256R1())
    assert mine != gateway_advert_keys(fleet, other.public_key(), "wb-0042")


def test_keys_are_not_in_repr_and_bad_inputs_are_refused() -> None:
    assert KEYS.eid_key.hex() not in repr(KEYS)
    assert "wb-0001" in repr(KEYS)
    with pytest.raises(ValueError, match="device id"):
        derive_advert_keys(bytes(32), "not valid!")
    with pytest.raises(ValueError, match="32-byte"):
        derive_advert_keys(bytes(31), "wb-0001")
    with pytest.raises(ValueError, match="P-256"):
        device_advert_keys(ec.generate_private_key(ec.SECP384R1()), _scalar_key("01").public_key(), "wb-0001")


@pytest.mark.parametrize(
    ("counter", "battery", "window"), [(-1, 50, 0), (2**32, 50, 0), (0, 101, 0), (0, 254, 0), (0, 50, -1)]
)
def test_encoder_refuses_unencodable_values(counter: int, battery: int, window: int) -> None:
    with pytest.raises(ValueError, match=r"range|battery"):
        encode_advert(KEYS, counter, EventType.PANIC, battery, window)


# --- the AD walk --------------------------------------------------------------------------------------------

SAMPLE: Final = encode_advert(KEYS, 7, EventType.PANIC, 50, 100)
OUR_AD: Final = SAMPLE[3:]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x05\x09name" + OUR_AD, id="local-name-first"),
        pytest.param(OUR_AD + b"\x02\x01\x06", id="flags-last"),
        pytest.param(OUR_AD, id="no-flags"),
        pytest.param(SAMPLE + b"\x00" + b"\xff\xff", id="padding-after-zero-length"),
        pytest.param(b"\x03\x16\xaa\xfe" + OUR_AD, id="other-service-data"),
    ],
)
def test_other_layouts_parse_the_same(data: bytes) -> None:
    assert parse_advert(data) == parse_advert(SAMPLE)
    assert _open(data, KEYS, 100) == AdvertSignal("wb-0001", 7, EventType.PANIC, 50, 100)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(SAMPLE + OUR_AD, RejectReason.MALFORMED, id="two-of-ours"),
        pytest.param(SAMPLE + b"\x05\x09ab", RejectReason.MALFORMED, id="overrun-after-ours"),
        pytest.param(b"\x09\x09ab" + OUR_AD, RejectReason.MALFORMED, id="overrun-before-ours"),
        pytest.param(b"\x03\x16\x00\xfd", RejectReason.MALFORMED, id="empty-payload"),
        pytest.param(b"\x05\x16\x00\xfd\x01\x00", RejectReason.MALFORMED, id="short-payload"),
        pytest.param(SAMPLE[:3] + b"\x1b" + OUR_AD[1:] + b"\x00", RejectReason.MALFORMED, id="long-payload"),
        pytest.param(b"\x04\x16\x00\xfd\x09", RejectReason.UNSUPPORTED_VERSION, id="version-9"),
        pytest.param(b"\x16\x00\xfd" * 600, RejectReason.MALFORMED, id="oversized"),
    ],
)
def test_malformed_layouts_are_rejected(data: bytes, reason: RejectReason) -> None:
    result = parse_advert(data)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert result.detail


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x02\x01\x06\x1a\xff\x4c\x00" + bytes(24), id="ibeacon"),
        pytest.param(b"\x03\x16\xaa\xfe\x00", id="eddystone-truncated"),
        pytest.param(b"\x02\x01\x06\x03\x16\x00\xfe", id="other-uuid"),
        pytest.param(b"\x02\x01\x06\x04\x09\x16\x00\xfd", id="marker-inside-a-name"),
    ],
)
def test_foreign_adverts_are_not_ours(data: bytes) -> None:
    assert parse_advert(data) is None


def test_another_service_uuid_can_be_configured() -> None:
    moved = SAMPLE[:5] + (0xFCF1).to_bytes(2, "little") + SAMPLE[7:]
    assert parse_advert(moved) is None
    assert parse_advert(moved, service_uuid=0xFCF1) == parse_advert(SAMPLE)


def test_open_refuses_wrong_sizes_without_raising() -> None:
    result = open_advert(ParsedAdvert(b"", b"", b""), KEYS, 0)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.MALFORMED
    parsed = parse_advert(SAMPLE)
    assert isinstance(parsed, ParsedAdvert)
    assert isinstance(open_advert(parsed, KEYS, 2**32), Rejection)
