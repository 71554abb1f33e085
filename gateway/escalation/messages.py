"""What people read and hear: SMS texts and call scripts of the escalation ladder (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from gateway.core.ladder import Purpose
from gateway.protocol import GpsFix

#: Two concatenated SMS segments (GSM-7: 2 x 153): enough for who, where, when, notes and the code.
MAX_SMS_CHARS: Final = 306
#: Notes for responders are cut to this in an SMS (the full text is on the console and in the call).
SMS_NOTES_CHARS: Final = 80


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What a message says about an incident.

    alert_id / short_code: the incident and the digits that acknowledge it by SMS.
    event: panic, fall or test.
    wearer / site: who and where they belong; place: a human place text when known (room, address).
    gps: the latest fix, if any.
    raised_at: when the gateway accepted the press.
    notes: notes for responders ("" when none).
    """

    alert_id: str
    short_code: str
    event: str
    wearer: str
    site: str
    place: str | None
    gps: GpsFix | None
    raised_at: datetime
    notes: str = ""


def where(facts: AlertFacts) -> str:
    """Place text, then coordinates with their accuracy; "location unknown" when there is neither."""
    parts = []
    if facts.place:
        parts.append(facts.place)
    elif facts.site:
        parts.append(f"site {facts.site}")
    if facts.gps is not None:
        gps = facts.gps
        parts.append(f"{gps.lat:.5f},{gps.lon:.5f} (+/-{gps.accuracy_m} m)")
    elif not facts.place:
        parts.append("location unknown")
    return ", ".join(parts)


def local_time(moment: datetime, time_zone: str) -> str:
    """Hour and minute in the site's zone, with the zone's abbreviation (17:42 CET)."""
    local = moment.astimezone(ZoneInfo(time_zone))
    return f"{local:%H:%M} {local.tzname()}"


def _headline(facts: AlertFacts) -> str:
    kind = {"panic": "PANIC", "fall": "FALL", "test": "TEST (no action)"}.get(facts.event, facts.event.upper())
    return f"{kind}: {facts.wearer}"


def sms_text(purpose: Purpose, facts: AlertFacts, time_zone: str) -> str:
    """The SMS for one notification; at most MAX_SMS_CHARS characters."""
    when = local_time(facts.raised_at, time_zone)
    code = facts.short_code
    if purpose is Purpose.CANCELLED:
        text = f"CANCELLED by the wearer: {facts.wearer}, alert of {when} ({code}). Stand down."
    else:
        lead = "NOBODY ANSWERED. " if purpose is Purpose.BROADCAST else ""
        notes = f" Notes: {_cut(facts.notes, SMS_NOTES_CHARS)}." if facts.notes else ""
        text = f"{lead}{_headline(facts)} at {where(facts)}, {when}.{notes} Reply {code} to acknowledge."
    return _cut(text, MAX_SMS_CHARS)


def call_script(facts: AlertFacts, time_zone: str) -> str:
    """What the call says before asking for a digit."""
    when = local_time(facts.raised_at, time_zone)
    notes = f" Notes: {facts.notes}." if facts.notes else ""
    kind = {"panic": "Panic alert", "fall": "Fall alert", "test": "Test alert, no action needed"}.get(
        facts.event, "Alert"
    )
    return f"{kind}. {facts.wearer} needs help at {where(facts)}, since {when}.{notes}"


#: Spoken after the script: the two answers a responder can give.
CALL_PROMPT: Final = "Press 1 to acknowledge and take this alert. Press 2 to pass it to the next responder."
CALL_ACKNOWLEDGED: Final = "You have the alert. The command center is informed. Goodbye."
CALL_PASSED: Final = "Passed to the next responder. Goodbye."
CALL_TOO_LATE: Final = "This alert is already taken or closed. Thank you. Goodbye."
CALL_NO_INPUT: Final = "No answer was given. The alert goes to the next responder. Goodbye."


def sms_reply_acknowledged(facts: AlertFacts) -> str:
    return f"You have it: {facts.wearer} at {where(facts)} ({facts.short_code}). The command center is informed."


def sms_reply_already(facts: AlertFacts, by: str | None) -> str:
    who = f" by {by}" if by else ""
    return f"Alert {facts.short_code} for {facts.wearer} is already taken{who}."


def sms_reply_closed(facts: AlertFacts, state: str) -> str:
    return f"Alert {facts.short_code} for {facts.wearer} is {state}: nothing to acknowledge."


SMS_REPLY_UNKNOWN: Final = "No open alert you were sent matches that code. Reply with the 4 digits from the alert."


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
