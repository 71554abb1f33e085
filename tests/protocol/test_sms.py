"""The SMS uplink codec: the vectors of docs/PROTOCOL.md §16, round trips, whitespace, garbage and short codes."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import uuid
from typing import Final

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.incident import short_code_for
from gateway.protocol import SignedFrame, const, parse_signed_frame, verify_signature
from gateway.protocol.sms import MAX_SMS_CHARS, MIN_SMS_CHARS, ONE_SMS_CHARS, encode_sms, sms_frame
from gateway.rejection import Rejection, RejectReason
from tests.docvectors import PROTOCOL_TEXT, Vector, doc_vectors

FAST: Final = settings(max_examples=300, deadline=None)

VECTORS: Final = doc_vectors("sms-vector")
VALID: Final = {v["name"]: v for v in VECTORS if v["kind"] == "valid"}
VARIANTS: Final = [v for v in VECTORS if v["kind"] == "variant"]
INVALID: Final = [v for v in VECTORS if v["kind"] == "invalid"]
FRAME_VECTORS: Final = {v["name"]: v for v in doc_vectors("vector")}
#: The document's prose with every run of whitespace as one space (sentences wrap anywhere).
PROSE: Final = " ".join(PROTOCOL_TEXT.split())
_NAMESPACE_MATCH: Final = re.search(r"namespace = ([0-9a-f-]{36})", PROTOCOL_TEXT)
assert _NAMESPACE_MATCH is not None, "PROTOCOL.md §9 must state the incident id namespace"
INCIDENT_NAMESPACE: Final = uuid.UUID(_NAMESPACE_MATCH.group(1))

BASE64_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: What the gateway removes before decoding (PROTOCOL.md §16.1).
WHITESPACE: Final = " \t\r\n"
#: The GSM 03.38 default alphabet's basic table, ASCII part: one septet per character.
GSM7_ASCII: Final = set("@$\n\r _!\"#%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

signed_frames = st.binary(min_size=const.HEADER_SIZE + 1 + const.SIGNATURE_SIZE, max_size=const.MAX_SIGNED_FRAME_SIZE)
#: Texts that look like frames more often than arbitrary text does: base64, padding, whitespace, near misses.
frame_like_texts = st.text(alphabet=BASE64_ALPHABET + "=" + WHITESPACE + "-_.\x0b\u00e9", min_size=0, max_size=400)
any_texts = st.one_of(st.text(max_size=400), frame_like_texts)


def _params(vectors: list[Vector]) -> list[object]:
    return [pytest.param(v, id=v["name"]) for v in vectors]


def _key(name: str) -> ec.EllipticCurvePublicKey:
    encoded = bytes.fromhex(FRAME_VECTORS[name]["public_key"])
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), encoded)


def _with_whitespace(text: str, insertions: list[tuple[int, str]]) -> str:
    chars = list(text)
    for position, blank in sorted(insertions, reverse=True):
        chars.insert(min(position, len(chars)), blank)
    return "".join(chars)


# --- the vectors of PROTOCOL.md §16.7 --------------------------------------------------------------------------


def test_vector_set_covers_the_required_cases() -> None:
    assert len({v["name"] for v in VECTORS}) == len(VECTORS), "vector names must be unique"
    assert all(v["kind"] in {"valid", "variant", "invalid"} for v in VECTORS)
    assert len(VALID) >= 2 and VARIANTS
    assert any("=" in v["text"] and "\n" in v["text"] for v in VARIANTS), "a padded, folded variant"
    results = [v["result"] for v in INVALID]
    assert results.count("not-a-frame") >= 2 and "malformed" in results
    assert VALID["sms-panic-gps"]["signed_frame"] == FRAME_VECTORS["panic-gps"]["signed_frame"]


@pytest.mark.parametrize("v", _params(list(VALID.values())))
def test_valid_vector_encodes_to_its_text_and_back(v: Vector) -> None:
    signed = bytes.fromhex(v["signed_frame"])
    assert encode_sms(signed) == v["text"]
    assert len(v["text"]) == int(v["chars"]) == math.ceil(4 * len(signed) / 3)
    assert sms_frame(v["text"]) == signed


@pytest.mark.parametrize("v", _params(list(VALID.values())))
def test_valid_vector_is_a_genuine_signed_frame_and_names_its_incident(v: Vector) -> None:
    parsed = parse_signed_frame(bytes.fromhex(v["signed_frame"]))
    assert isinstance(parsed, SignedFrame)
    assert verify_signature(parsed, _key(v["key"]))
    frame = parsed.frame
    assert frame.event.raises_incident
    assert v["incident_id"] == str(uuid.uuid5(INCIDENT_NAMESPACE, f"{frame.device_id}:{frame.counter}"))
    assert short_code_for(v["incident_id"]) == v["short_code"]


@pytest.mark.parametrize("v", _params(VARIANTS))
def test_variant_decodes_to_the_same_signed_frame(v: Vector) -> None:
    original = VALID[v["same_as"]]
    assert sms_frame(v["text"]) == bytes.fromhex(original["signed_frame"])
    assert v["text"] != original["text"], "a variant is another text"


@pytest.mark.parametrize("v", _params(INVALID))
def test_invalid_vector_gives_its_result(v: Vector) -> None:
    result = sms_frame(v["text"])
    if v["result"] == "not-a-frame":
        assert result is None
    else:
        assert isinstance(result, Rejection)
        assert result.reason is RejectReason(v["result"])


def test_the_documented_limits_are_the_codes() -> None:
    assert f"a text of {MIN_SMS_CHARS}..{MAX_SMS_CHARS} characters" in PROSE
    assert f"Shorter than {MIN_SMS_CHARS} characters" in PROSE
    assert f"More than {MAX_SMS_CHARS} characters before the padding" in PROSE
    assert len(encode_sms(bytes(const.HEADER_SIZE + 1 + const.SIGNATURE_SIZE))) == MIN_SMS_CHARS
    assert len(encode_sms(bytes(const.MAX_SIGNED_FRAME_SIZE))) == MAX_SMS_CHARS
    assert len(encode_sms(bytes(120))) == ONE_SMS_CHARS < len(encode_sms(bytes(121)))


def test_the_segment_table_matches_the_encoding() -> None:
    section = PROTOCOL_TEXT[PROTOCOL_TEXT.index("### 16.2 Sizes and segments") :]
    rows = re.findall(r"^\| (\d+)\.\.(\d+) bytes \| (\d+)\.\.(\d+) \|", section, re.MULTILINE)
    assert len(rows) == 3
    for low, high, low_chars, high_chars in rows:
        assert (len(encode_sms(bytes(int(low)))), len(encode_sms(bytes(int(high))))) == (
            int(low_chars),
            int(high_chars),
        )
    assert rows[0][1] == "120" and rows[0][3] == str(ONE_SMS_CHARS)


def test_responder_replies_are_not_frames() -> None:
    for reply in ("4821", "ok 4821", "4821 on my way", "OK 4821!", "", "   ", "A" * (MIN_SMS_CHARS - 1)):
        assert sms_frame(reply) is None


# --- properties -------------------------------------------------------------------------------------------------


@FAST
@given(signed_frames)
def test_any_signed_frame_size_round_trips(signed: bytes) -> None:
    text = encode_sms(signed)
    assert MIN_SMS_CHARS <= len(text) <= MAX_SMS_CHARS
    assert set(text) <= set(BASE64_ALPHABET) <= GSM7_ASCII
    assert (len(text) <= ONE_SMS_CHARS) == (len(signed) <= 120)
    assert sms_frame(text) == signed
    assert sms_frame(base64.b64encode(signed).decode("ascii")) == signed  # with padding


@FAST
@given(any_texts)
def test_sms_frame_never_raises(text: str) -> None:
    result = sms_frame(text)
    assert result is None or isinstance(result, bytes | Rejection)
    if isinstance(result, Rejection):
        assert result.reason is RejectReason.MALFORMED
    if isinstance(result, bytes):
        assert len(result) >= const.HEADER_SIZE + 1 + const.SIGNATURE_SIZE - 1  # 108 characters and "=="


@FAST
@given(signed_frames, st.lists(st.tuples(st.integers(0, 400), st.sampled_from(WHITESPACE)), max_size=20))
def test_whitespace_anywhere_does_not_change_a_frame(signed: bytes, insertions: list[tuple[int, str]]) -> None:
    assert sms_frame(_with_whitespace(encode_sms(signed), insertions)) == signed


@FAST
@given(frame_like_texts, st.lists(st.tuples(st.integers(0, 400), st.text(WHITESPACE, min_size=1)), max_size=10))
def test_whitespace_anywhere_does_not_change_any_result(text: str, insertions: list[tuple[int, str]]) -> None:
    assert sms_frame(_with_whitespace(text, insertions)) == sms_frame(text)


@FAST
@given(st.uuids())
def test_short_code_is_four_digits_as_documented(alert_id: uuid.UUID) -> None:
    text = str(alert_id)
    code = short_code_for(text)
    assert re.fullmatch(r"[0-9]{4}", code)
    assert code == f"{int.from_bytes(hashlib.sha256(text.encode('ascii')).digest()[:8], 'big') % 10000:04d}"


def test_short_code_examples_in_the_text_are_the_vectors() -> None:
    for v in VALID.values():
        assert f"`{v['incident_id']}` gives `{v['short_code']}`" in PROSE
