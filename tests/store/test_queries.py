"""The REST lists' query parsing and cursors (gateway/store/queries.py), without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.incident import AlertState
from gateway.store.queries import (
    DEFAULT_LIMIT,
    EXPIRING_WITHIN,
    MAX_LIMIT,
    CertificateStatus,
    DeviceQuery,
    EventQuery,
    IncidentCursor,
    IncidentQuery,
    QueryProblem,
    certificate_status,
    decode_cursor,
    device_cursor,
    encode_cursor,
    event_cursor,
    incident_cursor,
    parse_device_query,
    parse_event_query,
    parse_incident_query,
    parse_limit,
    parse_time,
)

NOW = datetime(2026, 11, 21, 9, 14, 3, 120_456, tzinfo=UTC)
OPEN = (AlertState.RAISED, AlertState.NOTIFYING, AlertState.ACKNOWLEDGED, AlertState.EXHAUSTED)


def params(**values: str) -> dict[str, list[str]]:
    return {name: [value] for name, value in values.items()}


def test_defaults() -> None:
    assert parse_incident_query({}) == IncidentQuery()
    assert parse_event_query({}) == EventQuery()
    assert parse_device_query({}) == DeviceQuery()
    assert IncidentQuery().limit == DEFAULT_LIMIT == 50


@pytest.mark.parametrize(("raw", "limit"), [("1", 1), ("50", 50), (str(MAX_LIMIT), 200)])
def test_limits(raw: str, limit: int) -> None:
    assert parse_limit(raw) == limit


@pytest.mark.parametrize("raw", ["0", "201", "-1", "1.5", "", " 5", "ten", "٣"])
def test_bad_limits_name_the_parameter(raw: str) -> None:
    refused = parse_limit(raw)
    assert isinstance(refused, QueryProblem) and refused.parameter == "limit" and "limit" in refused.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-21T09:14:03Z", datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC)),
        ("2026-11-21T09:14:03.120456Z", datetime(2026, 11, 21, 9, 14, 3, 120_456, tzinfo=UTC)),
        ("2026-11-21T10:14:03+01:00", datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC)),
        ("2026-11-21T10:14:03 01:00", datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC)),  # '+' decoded to a space
        ("2026-11-21T10:14:03.5 01:00", datetime(2026, 11, 21, 9, 14, 3, 500_000, tzinfo=UTC)),
        ("2026-11-21 09:14:03Z", datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC)),
    ],
)
def test_times_are_read_as_utc(raw: str, expected: datetime) -> None:
    parsed = parse_time("since", raw)
    assert parsed == expected and isinstance(parsed, datetime) and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "raw", ["2026-11-21T09:14:03", "yesterday", "", "2026-13-01T00:00:00Z", "0001-01-01T00:00+01:00"]
)
def test_bad_times_name_the_parameter(raw: str) -> None:
    refused = parse_time("until", raw)
    assert isinstance(refused, QueryProblem) and refused.parameter == "until" and "until" in refused.detail


def test_states_and_open() -> None:
    assert parse_incident_query(params(state="open")) == IncidentQuery(states=OPEN)
    both = parse_incident_query(params(state="resolved, open,raised"))
    assert isinstance(both, IncidentQuery) and both.states == (AlertState.RESOLVED, *OPEN)
    for bad in ("lost", "open,", "OPEN", ""):
        refused = parse_incident_query(params(state=bad))
        assert isinstance(refused, QueryProblem) and refused.parameter == "state", bad


def test_each_parameter_once_and_not_empty() -> None:
    twice = parse_incident_query({"state": ["open", "resolved"]})
    assert twice == QueryProblem("state", "state is given more than once")
    for name in ("site", "device"):
        refused = parse_incident_query(params(**{name: " "}))
        assert isinstance(refused, QueryProblem) and refused.parameter == name
    long = parse_incident_query(params(device="x" * 300))
    assert isinstance(long, QueryProblem) and long.parameter == "device"
    assert parse_incident_query(params(unknown="ignored")) == IncidentQuery()


def test_incident_cursor_round_trip_to_the_microsecond() -> None:
    cursor = incident_cursor(NOW, "d8434618-ecde-5f97-b6ea-c4008ac36406")
    assert cursor.isascii() and "=" not in cursor and "+" not in cursor and "/" not in cursor
    query = parse_incident_query(params(cursor=cursor, limit="2"))
    assert query == IncidentQuery(after=IncidentCursor(NOW, "d8434618-ecde-5f97-b6ea-c4008ac36406"), limit=2)
    other_zone = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert incident_cursor(other_zone, "x") == incident_cursor(NOW, "x")


def test_cursors_of_one_list_are_refused_by_another() -> None:
    incidents, events, devices = incident_cursor(NOW, "a"), event_cursor(42), device_cursor("wb-1")
    assert parse_event_query(params(cursor=events)) == EventQuery(after=42)
    assert parse_device_query(params(cursor=devices)) == DeviceQuery(after="wb-1")
    for parse, foreign in (
        (parse_incident_query, events),
        (parse_incident_query, devices),
        (parse_event_query, incidents),
        (parse_device_query, events),
    ):
        refused = parse(params(cursor=foreign))
        assert isinstance(refused, QueryProblem) and refused.parameter == "cursor"


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "e30",  # {}
        encode_cursor("i", "not-a-number", "a"),
        encode_cursor("i", 1),
        encode_cursor("i", 10**30, "a"),
        encode_cursor("e", -1),
        encode_cursor("e", 2**63),
        "W3RydWVd",  # [true]
        "!!!!",
    ],
)
def test_damaged_cursors_are_refused(cursor: str) -> None:
    for parse in (parse_incident_query, parse_event_query, parse_device_query):
        refused = parse(params(cursor=cursor))
        assert isinstance(refused, QueryProblem) and refused.parameter == "cursor"


@given(st.text(max_size=300))
def test_garbage_cursors_never_raise(cursor: str) -> None:
    for kind in ("i", "e", "d"):
        decode_cursor(kind, cursor)
    for parse in (parse_incident_query, parse_event_query, parse_device_query):
        parse(params(cursor=cursor))


@given(st.dictionaries(st.sampled_from(["state", "since", "until", "limit", "type", "q", "status"]), st.text()))
def test_garbage_parameters_never_raise(values: dict[str, str]) -> None:
    for parse in (parse_incident_query, parse_event_query, parse_device_query):
        parse(params(**values))


def test_event_filters() -> None:
    query = parse_event_query(params(type="note, acknowledged,note", incident="abc", since="2026-11-21T09:14:03Z"))
    assert query == EventQuery(("note", "acknowledged"), "abc", datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC))
    for bad in ("Note", "", "a b", "x" * 33):
        refused = parse_event_query(params(type=bad))
        assert isinstance(refused, QueryProblem) and refused.parameter == "type", bad
    # An incident's timeline takes only the page parameters.
    assert parse_event_query(params(type="Bad", incident=" ", limit="3"), filters=False) == EventQuery(limit=3)


def test_device_filters() -> None:
    query = parse_device_query(params(site="north", status="expiring,revoked", q=" Ada "))
    assert query == DeviceQuery("north", (CertificateStatus.EXPIRING, CertificateStatus.REVOKED), "Ada")
    for name, value in (("status", "fine"), ("q", " "), ("q", "x" * 129)):
        refused = parse_device_query(params(**{name: value}))
        assert isinstance(refused, QueryProblem) and refused.parameter == name


def test_certificate_status() -> None:
    assert certificate_status(NOW + EXPIRING_WITHIN, None, NOW) is CertificateStatus.VALID
    assert (
        certificate_status(NOW + EXPIRING_WITHIN - timedelta(microseconds=1), None, NOW) is CertificateStatus.EXPIRING
    )
    assert certificate_status(NOW, None, NOW) is CertificateStatus.EXPIRING
    assert certificate_status(NOW - timedelta(microseconds=1), None, NOW) is CertificateStatus.EXPIRED
    assert certificate_status(NOW + timedelta(days=400), NOW, NOW) is CertificateStatus.REVOKED
    assert certificate_status(NOW - timedelta(days=1), NOW, NOW) is CertificateStatus.REVOKED
