"""What responders read and hear: short, complete, in the site's time zone, never cut mid-word without a mark."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.core.ladder import Purpose
from gateway.escalation.messages import MAX_SMS_CHARS, AlertFacts, call_script, local_time, sms_text, where
from gateway.protocol import GpsFix

AT = datetime(2026, 1, 15, 16, 42, tzinfo=UTC)


def facts(**changes: object) -> AlertFacts:
    values: dict[str, object] = {
        "alert_id": "a-1",
        "short_code": "0427",
        "event": "panic",
        "wearer": "Ada Lovelace",
        "site": "north",
        "place": None,
        "gps": GpsFix(52.520301, 13.404901, 6, 1),
        "raised_at": AT,
        "notes": "Diabetic. Key in locker 4.",
    }
    values.update(changes)
    return AlertFacts(**values)  # type: ignore[arg-type]


def test_an_alert_sms_says_who_where_when_and_how_to_acknowledge() -> None:
    text = sms_text(Purpose.ALERT, facts(), "Europe/Berlin")
    assert text == (
        "PANIC: Ada Lovelace at site north, 52.52030,13.40490 (+/-6 m), 17:42 CET. "
        "Notes: Diabetic. Key in locker 4.. Reply 0427 to acknowledge."
    )


def test_place_text_wins_over_the_site_and_unknown_location_is_said() -> None:
    assert where(facts(place="Building B, floor 2, room 214", gps=None)) == "Building B, floor 2, room 214"
    assert where(facts(gps=None)) == "site north, location unknown"


def test_broadcast_and_cancel_texts() -> None:
    assert sms_text(Purpose.BROADCAST, facts(), "UTC").startswith("NOBODY ANSWERED. PANIC: Ada Lovelace")
    assert sms_text(Purpose.CANCELLED, facts(), "UTC") == (
        "CANCELLED by the wearer: Ada Lovelace, alert of 16:42 UTC (0427). Stand down."
    )


@pytest.mark.parametrize("event", ["panic", "fall", "test"])
def test_long_notes_never_make_an_sms_longer_than_two_segments(event: str) -> None:
    text = sms_text(Purpose.ALERT, facts(event=event, notes="x" * 500, wearer="W" * 128), "UTC")
    assert len(text) <= MAX_SMS_CHARS
    assert text.endswith("Reply 0427 to acknowledge.") or text.endswith("...")


def test_a_test_press_says_no_action_is_needed() -> None:
    assert sms_text(Purpose.ALERT, facts(event="test"), "UTC").startswith("TEST (no action): Ada Lovelace")
    assert call_script(facts(event="test"), "UTC").startswith("Test alert, no action needed.")


def test_times_follow_the_site_zone_across_daylight_saving() -> None:
    assert local_time(datetime(2026, 7, 1, 12, 0, tzinfo=UTC), "Europe/Berlin") == "14:00 CEST"
    assert local_time(datetime(2026, 1, 1, 12, 0, tzinfo=UTC), "America/New_York") == "07:00 EST"
