"""Topics of the contract: built and parsed by pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.commandcenter import (
    ParsedTopic,
    TopicKind,
    ack_filter,
    alert_ack_topic,
    alert_events_topic,
    alert_state_topic,
    gateway_status_topic,
    parse_ack_topic,
    parse_topic,
)
from gateway.commandcenter.topics import is_topic_id, is_topic_prefix

PREFIX = "panic/v1"
ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
).filter(lambda s: not any(c in "/+#" for c in s) and is_topic_id(s))


def test_topics_of_the_contract() -> None:
    assert alert_state_topic(PREFIX, "al-1") == "panic/v1/alerts/al-1/state"
    assert alert_events_topic(PREFIX, "al-1") == "panic/v1/alerts/al-1/events"
    assert alert_ack_topic(PREFIX, "al-1") == "panic/v1/alerts/al-1/ack"
    assert ack_filter(PREFIX) == "panic/v1/alerts/+/ack"
    assert gateway_status_topic(PREFIX, "gw.site-1") == "panic/v1/gateways/gw.site-1/status"


@given(alert_id=ids)
def test_alert_topics_parse_back(alert_id: str) -> None:
    assert parse_topic(PREFIX, alert_state_topic(PREFIX, alert_id)) == ParsedTopic(TopicKind.ALERT_STATE, alert_id)
    assert parse_topic(PREFIX, alert_events_topic(PREFIX, alert_id)) == ParsedTopic(TopicKind.ALERT_EVENTS, alert_id)
    assert parse_ack_topic(PREFIX, alert_ack_topic(PREFIX, alert_id)) == alert_id


def test_status_topic_parses_back() -> None:
    topic = gateway_status_topic("site/a/panic/v1", "gw-1")
    assert parse_topic("site/a/panic/v1", topic) == ParsedTopic(TopicKind.GATEWAY_STATUS, "gw-1")
    assert parse_ack_topic("site/a/panic/v1", topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "panic/v1/alerts/+/ack",  # a filter, not a topic
        "panic/v1/alerts/#",
        "panic/v1/alerts//ack",  # empty alert id
        "panic/v1/alerts/a/b/ack",  # an id cannot span levels
        "panic/v1/alerts/al-1/ack/",
        "panic/v1/alerts/al-1/state",  # another channel
        "panic/v2/alerts/al-1/ack",  # another prefix
        "panic/v1x/alerts/al-1/ack",
        "panic/v1/gateways/gw/ack",
        "panic/v1/alerts/al 1/ack",  # whitespace
        "panic/v1/alerts/al\x00/ack",
        "panic/v1/alerts/" + "a" * 129 + "/ack",
        "panic/v1",
        "",
    ],
)
def test_parse_refuses_what_is_not_an_ack_topic(topic: str) -> None:
    assert parse_ack_topic(PREFIX, topic) is None


@pytest.mark.parametrize("bad_id", ["", "a/b", "+", "#", "a+", "with space", "tab\t", "x" * 129, "nul\x00"])
def test_builders_refuse_ids_that_are_not_one_level(bad_id: str) -> None:
    with pytest.raises(ValueError, match="topic level"):
        alert_state_topic(PREFIX, bad_id)
    with pytest.raises(ValueError, match="topic level"):
        gateway_status_topic(PREFIX, bad_id)


@pytest.mark.parametrize("bad_prefix", ["", "/panic", "panic/", "panic//v1", "panic/+", "panic/#", "$SYS/x", "a b"])
def test_builders_refuse_bad_prefixes(bad_prefix: str) -> None:
    assert not is_topic_prefix(bad_prefix)
    with pytest.raises(ValueError, match="prefix"):
        alert_ack_topic(bad_prefix, "al-1")
    with pytest.raises(ValueError, match="prefix"):
        ack_filter(bad_prefix)


@given(prefix=st.text(max_size=30), topic=st.text(max_size=80))
def test_parse_never_raises(prefix: str, topic: str) -> None:
    parsed = parse_topic(prefix, topic)
    assert parsed is None or is_topic_id(parsed.id)
