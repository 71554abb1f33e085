"""OpenCellID rows: streaming parse, problems as values, the header check, keys, the in-memory lookup, the writer."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.location.cells import (
    OPENCELLID_HEADER,
    CellImportError,
    CellKey,
    CellLookup,
    CellRow,
    CellRowProblem,
    CellTable,
    cell_key,
    parse_cell_rows,
    write_cell_csv,
)
from gateway.location.model import CellObservation, CellSite

HEADER = "radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal\n"
GOOD = "LTE,262,1,4711,26017793,0,13.405,52.52,1000,12,1,1459692342,1693564233,0\n"

ROWS = [
    CellRow(CellKey("lte", 262, 1, 4711, 26017793), CellSite(52.52, 13.405, 1000.0, 12)),
    CellRow(CellKey("gsm", 262, 2, 801, 5121), CellSite(-33.8688, 151.2093, 2500.5, 1)),
    CellRow(CellKey("umts", 1, 0, 65535, 268435455), CellSite(0.0, -180.0, 1.0, 0)),
    CellRow(CellKey("nr", 999, 999, (1 << 24) - 1, (1 << 36) - 1), CellSite(90.0, 180.0, 100_000.0, 3)),
]


def test_header_matches_opencellid() -> None:
    assert ",".join(OPENCELLID_HEADER) + "\n" == HEADER


def test_a_generated_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "cell_towers.csv"
    with path.open("w", encoding="ascii", newline="") as out:
        assert write_cell_csv(ROWS, out) == 4
    with path.open(encoding="ascii", newline="") as lines:
        assert list(parse_cell_rows(lines)) == ROWS


def test_a_real_looking_row() -> None:
    assert list(parse_cell_rows([HEADER, GOOD])) == [ROWS[0]]


def test_crlf_bom_blank_lines_and_header_case_are_accepted() -> None:
    lines = ["\ufeff" + HEADER.upper().replace("\n", "\r\n"), "\r\n", GOOD.replace("\n", "\r\n"), "   \n"]
    assert list(parse_cell_rows(lines)) == [ROWS[0]]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("CDMA,310,4,1,2,0,13.4,52.5,1000,1,1,0,0,0", "unknown radio 'CDMA'"),
        ("WIFI,262,1,1,1,0,13.4,52.5,1000,1,1,0,0,0", "unknown radio 'WIFI'"),
        ("LTE,262,1,1,1,0,13.4,52.5,1000,1,1,0,0", "expected 14 fields, got 13"),
        ("LTE,26x,1,1,1,0,13.4,52.5,1000,1,1,0,0,0", "mcc '26x' is not a number"),
        ("LTE,-262,1,1,1,0,13.4,52.5,1000,1,1,0,0,0", "mcc '-262' is not a number"),
        ("LTE,1000,1,1,1,0,13.4,52.5,1000,1,1,0,0,0", "mcc 1000 is out of range (0..999)"),
        ("LTE,262,,1,1,0,13.4,52.5,1000,1,1,0,0,0", "net '' is not a number"),
        ("LTE,262,1,16777216,1,0,13.4,52.5,1000,1,1,0,0,0", "area 16777216 is out of range (0..16777215)"),
        ("LTE,262,1,1,68719476736,0,13.4,52.5,1000,1,1,0,0,0", "cell 68719476736 is out of range (0..68719476735)"),
        ("LTE,262,1,1,1,0,13.4,91.5,1000,1,1,0,0,0", "lat 91.5 is out of range (-90..90)"),
        ("LTE,262,1,1,1,0,-180.5,52.5,1000,1,1,0,0,0", "lon -180.5 is out of range (-180..180)"),
        ("LTE,262,1,1,1,0,13.4,nan,1000,1,1,0,0,0", "lat 'nan' is not a number"),
        ("LTE,262,1,1,1,0,inf,52.5,1000,1,1,0,0,0", "lon 'inf' is not a number"),
        ("LTE,262,1,1,1,0,13.4,52.5,abc,1,1,0,0,0", "range 'abc' is not a number"),
        ("LTE,262,1,1,1,0,13.4,52.5,0,1,1,0,0,0", "range 0 m is not positive"),
        ("LTE,262,1,1,1,0,13.4,52.5,-5,1,1,0,0,0", "range -5 m is not positive"),
        ("LTE,262,1,1,1,0,13.4,52.5,100001,1,1,0,0,0", "range 100001 m is absurd (over 100 km)"),
        ("LTE,262,1,1,1,0,13.4,52.5,1000,many,1,0,0,0", "samples 'many' is not a number"),
        ("LTE,262,1,1,1,0,13.4,52.5,1000,1,1,0,0,0,extra", "expected 14 fields, got 15"),
    ],
)
def test_bad_rows_are_problem_values(line: str, message: str) -> None:
    assert list(parse_cell_rows([HEADER, GOOD, line, GOOD])) == [ROWS[0], CellRowProblem(3, message), ROWS[0]]


def test_problem_messages_cut_a_huge_field_short() -> None:
    [problem] = parse_cell_rows([HEADER, "LTE," + "9" * 10_000 + ",1,1,1,0,13.4,52.5,1000,1,1,0,0,0"])
    assert problem == CellRowProblem(2, "mcc '" + "9" * 40 + "...' is not a number")


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [""],
        [GOOD],
        ["radio,mcc,net,area,cell,unit,lat,lon,range,samples,changeable,created,updated,averageSignal\n", GOOD],
        ["radio,mcc,net,area,cell\n", GOOD],
    ],
)
def test_a_missing_or_wrong_header_raises(lines: list[str]) -> None:
    rows = parse_cell_rows(lines)
    with pytest.raises(CellImportError) as caught:
        next(rows)
    assert isinstance(caught.value, GatewayError)
    assert caught.value.found == (lines[0].strip() if lines else None)


def test_parsing_streams_without_reading_ahead() -> None:
    read = 0

    def endless() -> Iterator[str]:
        nonlocal read
        yield HEADER
        for _ in itertools.count():
            read += 1
            yield GOOD

    assert list(itertools.islice(parse_cell_rows(endless()), 3)) == [ROWS[0]] * 3
    assert read == 3


def test_cell_key_lowercases_the_radio() -> None:
    assert cell_key(CellObservation("LTE", 262, 1, 4711, 26017793, -90, True)) == ROWS[0].key


def test_cell_table_looks_up_and_a_later_row_wins() -> None:
    moved = CellRow(ROWS[0].key, CellSite(52.6, 13.5, 500.0, 30))
    table = CellTable([*ROWS, moved])
    assert len(table) == 4
    assert table.get(ROWS[1].key) == ROWS[1].site
    assert table.get(ROWS[0].key) == moved.site
    assert table.get(CellKey("lte", 262, 1, 4711, 1)) is None


def test_a_mapping_is_a_cell_lookup() -> None:
    lookup: CellLookup = {row.key: row.site for row in ROWS}
    assert lookup.get(ROWS[2].key) == ROWS[2].site


@given(st.lists(st.text(max_size=200), max_size=30))
def test_arbitrary_lines_after_a_header_never_raise(lines: list[str]) -> None:
    results = list(parse_cell_rows([HEADER, *lines]))
    assert all(isinstance(r, (CellRow, CellRowProblem)) for r in results)
    assert len(results) == sum(1 for line in lines if line.strip())
    numbers = [r.line_number for r in results if isinstance(r, CellRowProblem)]
    assert numbers == sorted(numbers) and all(2 <= n <= len(lines) + 1 for n in numbers)


FIELD = st.one_of(
    st.text(alphabet="0123456789.-+eE,naifNINF x", max_size=12), st.integers().map(str), st.floats().map(repr)
)


@given(st.lists(st.lists(FIELD, min_size=14, max_size=14).map(",".join), max_size=20))
def test_near_miss_rows_never_raise(lines: list[str]) -> None:
    for result in parse_cell_rows([HEADER, *lines]):
        if isinstance(result, CellRow):
            site = result.site
            assert -90 <= site.lat <= 90 and -180 <= site.lon <= 180 and 0 < site.range_m <= 100_000


ROW = st.builds(
    CellRow,
    st.builds(
        CellKey,
        st.sampled_from(["gsm", "umts", "lte", "nr"]),
        st.integers(0, 999),
        st.integers(0, 999),
        st.integers(0, (1 << 24) - 1),
        st.integers(0, (1 << 36) - 1),
    ),
    st.builds(
        CellSite,
        st.floats(-90, 90),
        st.floats(-180, 180),
        st.floats(0.001, 100_000).filter(lambda r: r > 0),
        st.integers(0, 10**9),
    ),
)


@given(st.lists(ROW, max_size=20))
def test_written_rows_parse_back_unchanged(rows: list[CellRow]) -> None:
    out = io.StringIO()
    write_cell_csv(rows, out)
    assert list(parse_cell_rows(io.StringIO(out.getvalue()))) == rows
