"""The cells extension (TLV 0x02, docs/PROTOCOL.md §4.2): its vectors, limits, round trips and garbage."""

from __future__ import annotations

import hashlib
import re
import struct
import uuid
from dataclasses import replace
from typing import Final

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.location.model import CellObservation
from gateway.protocol import (
    AlertFrame,
    EventType,
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
from tests.protocol.test_properties import frames
from tests.protocol.test_vectors import INCIDENT_NAMESPACE, expected_frame, private_key, public_key, raw_signature

FAST: Final = settings(max_examples=300, deadline=None)

CELLS_VALID: Final = doc_vectors("cells-vector")
CELLS_INVALID: Final = [v for v in doc_vectors("vector") if v["name"].startswith("cells-")]

BASE: Final = AlertFrame("wb-0001", 47, 1_767_225_780_000, EventType.PANIC, battery=87)
SERVING: Final = CellObservation("lte", 262, 1, 46003, 26386177, -95, serving=True)
NEIGHBOUR: Final = CellObservation("lte", 262, 1, 46003, 26386178, -101, serving=False)
ID_END: Final = const.HEADER_SIZE + len(BASE.device_id)


def _params(vectors: list[Vector]) -> list[object]:
    return [pytest.param(v, id=v["name"]) for v in vectors]


def _cell(text: str) -> CellObservation:
    fields = dict(pair.split("=", 1) for pair in text.split())
    assert set(fields) == {"radio", "serving", "mcc", "mnc", "area", "cell", "signal_dbm"}, text
    assert fields["serving"] in {"yes", "no"}
    return CellObservation(
        radio=fields["radio"],
        mcc=int(fields["mcc"]),
        mnc=int(fields["mnc"]),
        area=int(fields["area"]),
        cell=int(fields["cell"]),
        signal_dbm=None if fields["signal_dbm"] == "unknown" else int(fields["signal_dbm"]),
        serving=fields["serving"] == "yes",
    )


def cells_frame(v: Vector) -> AlertFrame:
    """The AlertFrame a cells-vector's field lines describe: a §12 valid block plus its cell_<i> lines."""
    numbers = sorted(int(k.removeprefix("cell_")) for k in v if k.startswith("cell_"))
    assert numbers == list(range(1, len(numbers) + 1)), "cell lines are cell_1, cell_2, ... without gaps"
    cells = tuple(_cell(v[f"cell_{i}"]) for i in numbers)
    return replace(expected_frame(v), cells=cells)


def cell_bytes(*values: int) -> bytes:
    """One cell record from its raw wire values (radio, flags, mcc, mnc, area, cell, signal)."""
    radio, flags, mcc, mnc, area, cell, signal = values
    return struct.pack(">BBHHI", radio, flags, mcc, mnc, area) + cell.to_bytes(5, "big") + struct.pack(">b", signal)


def with_cells_value(value: bytes, frame: AlertFrame = BASE) -> bytes:
    return encode_frame(frame) + bytes((const.TLV_CELLS, len(value))) + value


def rejected(data: bytes) -> Rejection:
    result = decode_frame(data)
    assert isinstance(result, Rejection), result
    assert result.reason is RejectReason.MALFORMED
    assert result.detail
    return result


# --- vectors of PROTOCOL.md §12.4 ---------------------------------------------------------------------------


def test_cells_vector_set() -> None:
    assert len(CELLS_VALID) >= 1
    assert all(v["kind"] == "valid" for v in CELLS_VALID)
    frames_ = [cells_frame(v) for v in CELLS_VALID]
    assert any(
        f.cells[0].serving
        and f.cells[0].radio == "lte"
        and len(f.cells) == 3
        and not any(c.serving for c in f.cells[1:])
        and f.gps is None
        for f in frames_
    )
    assert {v["name"] for v in CELLS_INVALID} >= {"cells-truncated", "cells-eight"}
    assert all(v["kind"] == "invalid" and v["reason"] == "malformed" for v in CELLS_INVALID)


@pytest.mark.parametrize("v", _params(CELLS_VALID))
def test_cells_vector_decodes_to_its_fields(v: Vector) -> None:
    assert decode_frame(bytes.fromhex(v["frame"])) == cells_frame(v)


@pytest.mark.parametrize("v", _params(CELLS_VALID))
def test_cells_vector_encodes_to_its_hex(v: Vector) -> None:
    assert v["canonical"] == "yes"
    assert encode_frame(cells_frame(v)).hex() == v["frame"]


@pytest.mark.parametrize("v", _params(CELLS_VALID))
def test_cells_vector_signed_frame_parses_and_verifies(v: Vector) -> None:
    frame, signature, signed = (bytes.fromhex(v[k]) for k in ("frame", "signature", "signed_frame"))
    assert signed == frame + signature
    assert hashlib.sha256(const.SIGNATURE_CONTEXT + frame).hexdigest() == v["message_sha256"]
    parsed = parse_signed_frame(signed)
    assert parsed == SignedFrame(cells_frame(v), frame, signature, hashlib.sha256(frame).digest())
    assert verify_signature(parsed, public_key(v))
    resigned = parse_signed_frame(sign_frame(cells_frame(v), private_key(v)))
    assert isinstance(resigned, SignedFrame)
    assert resigned.frame_bytes == frame
    assert verify_signature(resigned, public_key(v))


@pytest.mark.parametrize("v", _params(CELLS_VALID))
def test_cells_vector_signature_is_rfc6979(v: Vector) -> None:
    message = const.SIGNATURE_CONTEXT + bytes.fromhex(v["frame"])
    der = private_key(v).sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    assert der.hex() == v["signature_der"]
    assert raw_signature(der).hex() == v["signature"]


@pytest.mark.parametrize("v", _params(CELLS_VALID))
def test_cells_vector_incident_id(v: Vector) -> None:
    frame = cells_frame(v)
    assert frame.event.raises_incident
    assert v["incident_id"] == str(uuid.uuid5(INCIDENT_NAMESPACE, f"{frame.device_id}:{frame.counter}"))


@pytest.mark.parametrize("v", _params(CELLS_INVALID))
def test_invalid_cells_vector_is_malformed_because_of_its_cells(v: Vector) -> None:
    assert "cells extension" in rejected(bytes.fromhex(v["frame"])).detail
    parsed = parse_signed_frame(bytes.fromhex(v["signed_frame"]))
    assert isinstance(parsed, Rejection)
    assert parsed.reason is RejectReason.MALFORMED


def test_annotated_cells_extension_is_the_vector_one() -> None:
    section = re.search(r"^### 4\.2 Cells.*?^```\n(.*?)^```", PROTOCOL_TEXT, re.MULTILINE | re.DOTALL)
    assert section is not None
    columns = [re.split(r"\s{2,}", line.strip(), maxsplit=1)[0] for line in section.group(1).splitlines()]
    annotated = bytes.fromhex("".join(c.replace(" ", "") for c in columns))
    vector = next(v for v in CELLS_VALID if v["name"] == "panic-cells")
    frame = bytes.fromhex(vector["frame"])
    assert annotated == frame[const.HEADER_SIZE + len(vector["device_id"]) :]


def test_documented_layout_matches_the_constants() -> None:
    section = re.search(r"^### 4\.2 Cells.*?$(.*?)(?=^#+ )", PROTOCOL_TEXT, re.MULTILINE | re.DOTALL)
    assert section is not None
    lines = [line for line in section.group(1).splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    rows = [line.strip("|").split("|") for line in lines]
    layout = [(int(r[0]), int(r[1])) for r in rows[1:]]
    assert layout == [(0, 1), (1, 1), (2, 2), (4, 2), (6, 4), (10, 5), (15, 1)]
    assert sum(size for _, size in layout) == const.CELL_SIZE
    assert (
        f"`0x{const.TLV_CELLS:02x}` | cells | {const.CELL_SIZE} \N{MULTIPLICATION SIGN} n, n = 1..{const.MAX_CELLS} |"
        in PROTOCOL_TEXT
    )
    for code, radio in const.CELL_RADIOS.items():
        assert f"`{code}` {radio}" in section.group(1)


# --- limits -------------------------------------------------------------------------------------------------


def test_no_cells_means_no_extension() -> None:
    assert encode_frame(BASE) == encode_frame(replace(BASE, cells=()))
    assert len(encode_frame(BASE)) == ID_END


def test_largest_frame_with_cells_fits() -> None:
    cells = (SERVING, *(replace(NEIGHBOUR, cell=NEIGHBOUR.cell + i) for i in range(const.MAX_CELLS - 1)))
    frame = AlertFrame("x" * 32, 1, 0, EventType.PANIC, gps=GpsFix(1.0, 2.0, 3, 4), cells=cells)
    data = encode_frame(frame)
    assert len(data) == const.HEADER_SIZE + 32 + 2 + const.GPS_TLV_SIZE + 2 + const.MAX_CELLS * const.CELL_SIZE
    assert len(data) == 177 <= const.MAX_FRAME_SIZE
    assert decode_frame(data) == frame


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param(CellObservation("gsm", 0, 0, 0, 0, None, serving=False), id="zeros-unknown-signal"),
        pytest.param(CellObservation("gsm", 999, 999, 0xFFFF, 0xFFFF, 0, serving=True), id="gsm-maxima"),
        pytest.param(CellObservation("umts", 1, 2, 0xFFFF, 0xFFF_FFFF, -127, serving=True), id="umts-maxima"),
        pytest.param(CellObservation("lte", 310, 410, 0xFFFF, 0xFFF_FFFF, -44, serving=True), id="lte-maxima"),
        pytest.param(CellObservation("nr", 1, 1, 0xFF_FFFF, 0xF_FFFF_FFFF, -80, serving=True), id="nr-maxima"),
    ],
)
def test_cells_at_their_limits_round_trip(cell: CellObservation) -> None:
    frame = replace(BASE, cells=(cell,))
    assert decode_frame(encode_frame(frame)) == frame


def test_a_list_without_a_serving_cell_is_valid() -> None:
    frame = replace(BASE, cells=(NEIGHBOUR, NEIGHBOUR))
    assert decode_frame(encode_frame(frame)) == frame


def test_weak_signal_saturates_at_minus_127() -> None:
    decoded = decode_frame(encode_frame(replace(BASE, cells=(replace(SERVING, signal_dbm=-156),))))
    assert isinstance(decoded, AlertFrame)
    assert decoded.cells[0].signal_dbm == const.CELL_SIGNAL_MIN_DBM


def test_cells_follow_gps_on_the_wire() -> None:
    data = encode_frame(replace(BASE, gps=GpsFix(1.0, 2.0, 3, 4), cells=(SERVING,)))
    assert data[ID_END] == const.TLV_GPS
    assert data[ID_END + 2 + const.GPS_TLV_SIZE] == const.TLV_CELLS


@pytest.mark.parametrize(
    ("cells", "match"),
    [
        pytest.param((SERVING,) * 8, "8 cells", id="eight-cells"),
        pytest.param((replace(SERVING, radio="wifi"),), "radio", id="unknown-radio"),
        pytest.param((NEIGHBOUR, SERVING), "first cell", id="serving-second"),
        pytest.param((replace(SERVING, mcc=1000),), "mcc", id="mcc"),
        pytest.param((replace(SERVING, mnc=-1),), "mnc", id="mnc"),
        pytest.param((replace(SERVING, area=0x1_0000),), "area", id="lte-area"),
        pytest.param((replace(SERVING, cell=0x1000_0000),), "cell id", id="lte-cell"),
        pytest.param((replace(SERVING, radio="nr", cell=2**36),), "cell id", id="nr-cell"),
        pytest.param((replace(SERVING, signal_dbm=1),), "positive", id="positive-signal"),
    ],
)
def test_encoder_refuses_what_the_wire_cannot_carry(cells: tuple[CellObservation, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_frame(replace(BASE, cells=cells))


GOOD: Final = (3, 1, 262, 1, 46003, 26386177, -95)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        pytest.param(b"", "0 bytes", id="empty"),
        pytest.param(cell_bytes(*GOOD)[:-1], "15 bytes", id="short-cell"),
        pytest.param(cell_bytes(*GOOD) + b"\x00", "17 bytes", id="long-cell"),
        pytest.param(cell_bytes(*GOOD) * 8, "8 cells", id="eight-cells"),
        pytest.param(cell_bytes(0, 1, 262, 1, 1, 1, -95), "cell 1: unknown radio 0x00", id="radio-0"),
        pytest.param(cell_bytes(5, 1, 262, 1, 1, 1, -95), "cell 1: unknown radio 0x05", id="radio-5"),
        pytest.param(cell_bytes(3, 0x03, 262, 1, 1, 1, -95), "cell 1: reserved flag", id="reserved-flag"),
        pytest.param(cell_bytes(*GOOD) * 2, "cell 2: only the first", id="two-serving"),
        pytest.param(cell_bytes(3, 1, 1000, 1, 1, 1, -95), "cell 1: mcc 1000", id="mcc"),
        pytest.param(cell_bytes(3, 1, 262, 1000, 1, 1, -95), "cell 1: mnc 1000", id="mnc"),
        pytest.param(cell_bytes(1, 1, 262, 1, 0x1_0000, 1, -95), "cell 1: gsm area code 65536", id="gsm-lac"),
        pytest.param(cell_bytes(4, 1, 262, 1, 0x100_0000, 1, -95), "cell 1: nr area code", id="nr-tac"),
        pytest.param(cell_bytes(1, 1, 262, 1, 1, 0x1_0000, -95), "cell 1: gsm cell id 65536", id="gsm-ci"),
        pytest.param(cell_bytes(2, 1, 262, 1, 1, 2**28, -95), "cell 1: umts cell id", id="umts-ci"),
        pytest.param(cell_bytes(4, 1, 262, 1, 1, 2**40 - 1, -95), "cell 1: nr cell id", id="nr-nci"),
        pytest.param(cell_bytes(3, 1, 262, 1, 1, 1, 1), "cell 1: signal 1 dBm is positive", id="signal"),
    ],
)
def test_bad_cells_are_malformed_with_a_precise_detail(value: bytes, detail: str) -> None:
    assert detail in rejected(with_cells_value(value)).detail


def test_cells_twice_is_malformed() -> None:
    data = encode_frame(replace(BASE, cells=(SERVING,)))
    assert "appears twice" in rejected(data + data[ID_END:]).detail


# --- properties ---------------------------------------------------------------------------------------------


@st.composite
def cell_observations(draw: st.DrawFn, *, serving: bool) -> CellObservation:
    radio = draw(st.sampled_from(sorted(const.CELL_AREA_MAX)))
    return CellObservation(
        radio=radio,
        mcc=draw(st.integers(0, const.MAX_MCC)),
        mnc=draw(st.integers(0, const.MAX_MNC)),
        area=draw(st.integers(0, const.CELL_AREA_MAX[radio])),
        cell=draw(st.integers(0, const.CELL_ID_MAX[radio])),
        signal_dbm=draw(st.one_of(st.none(), st.integers(const.CELL_SIGNAL_MIN_DBM, 0))),
        serving=serving,
    )


@st.composite
def cell_lists(draw: st.DrawFn) -> tuple[CellObservation, ...]:
    first = draw(cell_observations(serving=draw(st.booleans())))
    rest = draw(st.lists(cell_observations(serving=False), max_size=const.MAX_CELLS - 1))
    return (first, *rest)


@FAST
@given(frames, cell_lists())
def test_round_trip(frame: AlertFrame, cells: tuple[CellObservation, ...]) -> None:
    frame = replace(frame, cells=cells)
    data = encode_frame(frame)
    assert decode_frame(data) == frame
    assert encode_frame(frame) == data


@FAST
@given(st.binary(max_size=255))
def test_any_cells_value_decodes_or_is_malformed(value: bytes) -> None:
    result = decode_frame(with_cells_value(value))
    if isinstance(result, Rejection):
        assert result.reason is RejectReason.MALFORMED
        assert result.detail
    else:
        assert encode_frame(result) == with_cells_value(value)


@FAST
@given(st.lists(st.binary(min_size=const.CELL_SIZE, max_size=const.CELL_SIZE), min_size=1, max_size=const.MAX_CELLS))
def test_any_cell_records_decode_exactly_or_name_the_bad_cell(records: list[bytes]) -> None:
    data = with_cells_value(b"".join(records))
    result = decode_frame(data)
    if isinstance(result, Rejection):
        assert result.reason is RejectReason.MALFORMED
        assert re.match(r"cell [1-7]: ", result.detail), result.detail
    else:
        assert len(result.cells) == len(records)
        assert encode_frame(result) == data


@FAST
@given(st.binary(max_size=const.MAX_SIGNED_FRAME_SIZE + 8))
def test_garbage_after_a_cells_header_never_raises(tail: bytes) -> None:
    data = encode_frame(BASE) + bytes((const.TLV_CELLS,)) + tail
    result = decode_frame(data)
    assert isinstance(result, AlertFrame | Rejection)
    if isinstance(result, Rejection):
        assert result.reason is RejectReason.MALFORMED
    signed = parse_signed_frame(data + bytes(const.SIGNATURE_SIZE))
    assert isinstance(signed, SignedFrame | Rejection)
