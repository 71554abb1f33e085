"""The escalation directory: every validation rule with its message, policy choice, resolution, round trips."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.ladder import Channel, Plan, Step, Target
from gateway.errors import GatewayError
from gateway.escalation.directory import (
    EMPTY_DIRECTORY,
    MAX_WAIT_S,
    MIN_WAIT_S,
    Directory,
    DirectoryError,
    EmergencyContact,
    Group,
    Policy,
    PolicyStep,
    Responder,
    WearerInfo,
    dump_directory,
    load_directory,
    parse_directory,
)

EXAMPLE: Final = Path(__file__).parents[2] / "deploy" / "escalation.example.toml"
FAST: Final = settings(max_examples=100, deadline=None)

#: A valid directory that tests extend with one more table.
PEOPLE: Final = """
[[responders]]
id = "ana"
name = "Ana Guard"
phone = "+15551230001"
sites = ["north"]

[[responders]]
id = "bo"
name = "Bo Night"
phone = "+15551230002"
sites = ["north"]

[[responders]]
id = "cy"
name = "Cy Away"
phone = "+15551230003"
sites = ["north"]
active = false

[[responders]]
id = "sam"
name = "Sam Supervisor"
phone = "+15551230009"
sites = ["north"]
supervisor = true

[[groups]]
id = "night-guards"
members = ["ana", "bo"]

[[wearers]]
device = "dev-0001"
contacts = [{ name = "Sam Lovelace", phone = "+15557654321", relation = "son" }]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(DirectoryError) as caught:
        parse_directory(text, source="escalation.toml")
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


def policy(steps: str, *, head: str = "") -> str:
    """PEOPLE plus one policy for site north with `head` lines and `steps` (its [[policies.steps]] tables)."""
    return PEOPLE + f'\n[[policies]]\nid = "p"\nsite = "north"\n{head}\n{steps}'


def step(channel: str, targets: str = "", wait_s: str = "30") -> str:
    lines = f'[[policies.steps]]\nchannel = "{channel}"\nwait_s = {wait_s}\n'
    return lines + (f"targets = {targets}\n" if targets else "")


# --- the error type and reading --------------------------------------------------------------------------------


def test_directory_error_is_a_gateway_error_and_a_value_error_with_every_problem() -> None:
    error = DirectoryError(["a: one", "b: two"])
    assert isinstance(error, GatewayError)
    assert isinstance(error, ValueError)
    assert error.problems == ("a: one", "b: two")
    assert str(error) == "a: one\nb: two"


def test_toml_syntax_errors_name_the_source_and_line() -> None:
    assert problems('[[responders]]\nid = "ana"\nname "Ana"\n') == [
        "escalation.toml line 3: expected '=' after a key in a key/value pair (column 6)"
    ]
    assert problems("a = 1\nb = ") == ["escalation.toml line 2: invalid value (at the end of the file)"]
    with pytest.raises(DirectoryError, match=r"^<text> line 1: "):
        parse_directory("x = ")


def test_an_empty_file_is_an_empty_directory() -> None:
    assert parse_directory("") == EMPTY_DIRECTORY
    assert parse_directory("# nothing yet\n") == Directory()


def test_load_directory_reads_utf8_with_or_without_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "escalation.toml"
    path.write_text(PEOPLE, encoding="utf-8-sig")
    assert load_directory(path) == parse_directory(PEOPLE)


def test_load_directory_reports_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(DirectoryError) as caught:
        load_directory(missing)
    assert caught.value.problems == (f"{missing}: cannot read the file (No such file or directory)",)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[[responders]]\nname = "Jos\xe9"\n')
    with pytest.raises(DirectoryError) as caught:
        load_directory(latin)
    assert caught.value.problems == (f"{latin}: not UTF-8 text (invalid byte at offset 26)",)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[responders]\n", encoding="utf-8")
    with pytest.raises(DirectoryError, match=rf"^{broken} line 1: "):
        load_directory(broken)


# --- shape: tables, fields, types ------------------------------------------------------------------------------


def test_unknown_top_level_keys_are_problems() -> None:
    assert problems('[[responder]]\nid = "ana"\nversion = 2\n') == [
        "escalation.toml: unknown key 'responder' (did you mean 'responders'?) "
        "(expected responders, groups, wearers, policies)",
    ]
    assert problems("version = 2\n") == [
        "escalation.toml: unknown key 'version' (expected responders, groups, wearers, policies)"
    ]


def test_sections_must_be_arrays_of_tables() -> None:
    assert problems('responders = "ana"\ngroups = [1]\n') == [
        "responders: expected an array of tables ([[responders]]), got a string",
        "groups[0]: expected a table, got an integer",
    ]


def test_unknown_fields_are_problems_with_a_suggestion_when_one_is_close() -> None:
    assert problems(policy(step("mqtt"), head="wait = 30")) == ["policies[0]: unknown field 'wait'"]
    text = policy('[[policies.steps]]\nchannel = "mqtt"\nwait = 30\n')
    assert problems(text) == [
        "policies[0].steps[0]: unknown field 'wait' (did you mean 'wait_s'?)",
        "policies[0].steps[0]: missing required field 'wait_s'",
    ]


def test_missing_required_fields_are_problems() -> None:
    assert problems('[[responders]]\nid = "ana"\n[[groups]]\nid = "g"\n[[wearers]]\nname = "Ada"\n') == [
        "responders[0]: missing required field 'name'",
        "responders[0]: missing required field 'phone'",
        "groups[0]: missing required field 'members'",
        "wearers[0]: missing required field 'device'",
    ]
    assert problems(PEOPLE + '[[policies]]\nid = "p"\n') == [
        "policies[0]: missing required field 'site'",
        "policies[0]: missing required field 'steps'",
    ]


def test_values_of_the_wrong_type_are_problems() -> None:
    text = PEOPLE.replace('sites = ["north"]\nsupervisor = true', 'sites = "north"\nsupervisor = "yes"')
    text = text.replace('name = "Ana Guard"', "name = 7")
    text += '[[wearers]]\ndevice = "dev-2"\ncontacts = [1]\n'
    assert problems(text) == [
        "responders[0].name: expected a string, got an integer",
        "responders[3].sites: expected an array of strings, got a string",
        "responders[3].supervisor: expected true or false, got a string",
        "wearers[1].contacts[0]: expected a table, got an integer",
    ]
    text = policy(step("sms", '"group:night-guards"', wait_s='"30"'), head="max_messages = 2.5")
    assert problems(text) == [
        "policies[0].max_messages: expected an integer, got a float",
        "policies[0].steps[0].wait_s: expected a number of seconds, got a string",
        "policies[0].steps[0].targets: expected an array of strings, got a string",
    ]
    assert problems(policy(step("sms", "[1979-05-27]"))) == [
        "policies[0].steps[0].targets[0]: expected a string, got a date or time",
    ]


# --- responders ------------------------------------------------------------------------------------------------


def responder(**fields: str) -> str:
    values = {"id": '"zed"', "name": '"Zed"', "phone": '"+15551230099"'} | fields
    return "[[responders]]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


def test_ids_must_be_short_lowercase_names() -> None:
    assert problems(responder(id='"Zed One"')) == [
        "responders[0].id: 'Zed One' is not a valid id (1 to 64 of a-z, 0-9, '.', '_', '-', "
        "starting with a letter or digit)"
    ]
    assert problems(responder(id=f'"{"z" * 65}"'))[0].startswith(f"responders[0].id: '{'z' * 65}' is not a valid id")


@pytest.mark.parametrize(
    "phone", ["+1 555", "15551230001", "+05551230001", "+1555123", "+1234567890123456", "+١٢٣٤٥٦٧٨٩"]
)
def test_phones_must_be_e164(phone: str) -> None:
    assert problems(responder(phone=json.dumps(phone, ensure_ascii=False))) == [
        f"responders[0].phone: {phone!r} is not an E.164 number (+ and 8 to 15 digits)"
    ]


@pytest.mark.parametrize("phone", ["+15551230001", "+4930123456", "+123456789012345"])
def test_valid_phones_pass(phone: str) -> None:
    assert parse_directory(responder(phone=f'"{phone}"')).responders[0].phone == phone


def test_names_are_1_to_128_characters_without_control_characters() -> None:
    assert problems(responder(name='""')) == ["responders[0].name: must not be empty"]
    assert problems(responder(name='"   "')) == ["responders[0].name: must not be only spaces"]
    assert problems(responder(name=f'"{"x" * 129}"')) == ["responders[0].name: 129 characters, at most 128"]
    assert problems(responder(name='"Zed\\nZed"')) == ["responders[0].name: must not contain control characters"]
    assert parse_directory(responder(name=f'"{"é" * 128}"')).responders[0].name == "é" * 128


def test_sites_are_named_each_once_and_never_star() -> None:
    assert problems(responder(sites='["north", "*", "north", ""]')) == [
        "responders[0].sites[1]: '*' is not a site: name each site (only a policy's site may be '*')",
        "responders[0].sites[2]: 'north' is listed twice",
        "responders[0].sites[3]: must not be empty",
    ]
    assert problems(responder(sites=f'["{"s" * 65}"]')) == ["responders[0].sites[0]: 65 characters, at most 64"]


def test_responder_defaults() -> None:
    (zed,) = parse_directory(responder()).responders
    assert zed == Responder(id="zed", name="Zed", phone="+15551230099", sites=(), supervisor=False, active=True)


def test_duplicate_ids_are_problems() -> None:
    text = responder() + responder(name='"Zed Two"') + '[[groups]]\nid = "g"\nmembers = ["zed"]\n' * 2
    assert problems(text) == [
        "responders[1].id: duplicate id 'zed' (first at responders[0])",
        "groups[1].id: duplicate id 'g' (first at groups[0])",
    ]


# --- groups ----------------------------------------------------------------------------------------------------


def test_group_members_must_exist_once_each_and_be_at_least_one() -> None:
    text = PEOPLE + '[[groups]]\nid = "day"\nmembers = ["anna", "bo", "bo"]\n[[groups]]\nid = "none"\nmembers = []\n'
    assert problems(text) == [
        "groups[1].members[0]: unknown responder 'anna' (known: ana, bo, cy, sam)",
        "groups[1].members[2]: 'bo' is listed twice",
        "groups[2].members: must list at least one responder",
    ]


def test_unknown_ids_among_many_suggest_close_matches() -> None:
    many = "".join(responder(id=f'"guard-{n:02}"', phone=f'"+155512300{n:02}"') for n in range(12))
    text = many + '[[groups]]\nid = "g"\nmembers = ["guard-1", "nobody"]\n'
    assert problems(text) == [
        "groups[0].members[0]: unknown responder 'guard-1' (did you mean guard-11, guard-10, guard-01?)",
        "groups[0].members[1]: unknown responder 'nobody' (12 responders are defined)",
    ]


# --- wearers ---------------------------------------------------------------------------------------------------


def test_wearer_fields_are_checked() -> None:
    text = f"""
[[wearers]]
device = "dev 1"
name = ""
notes = "{"n" * 501}"
contacts = [{{ name = "Sam", phone = "555-1234", relation = "{"r" * 65}", email = "x" }}]

[[wearers]]
device = "dev-2"
notes = "Bell\\u0007"
"""
    assert problems(text) == [
        "wearers[0].device: 'dev 1' is not a device id (1 to 32 of A-Z, a-z, 0-9, '.', '_', '-')",
        "wearers[0].name: must not be empty",
        "wearers[0].notes: 501 characters, at most 500",
        "wearers[0].contacts[0]: unknown field 'email'",
        "wearers[0].contacts[0].phone: '555-1234' is not an E.164 number (+ and 8 to 15 digits)",
        "wearers[0].contacts[0].relation: 65 characters, at most 64",
        "wearers[1].notes: must not contain control characters (other than new lines and tabs)",
    ]


def test_wearer_notes_may_have_lines_and_contacts_may_be_tables() -> None:
    text = '[[wearers]]\ndevice = "Dev.7"\nnotes = "Line 1\\nLine 2\\tend"\n'
    text += '[[wearers.contacts]]\nname = "Sam"\nphone = "+15557654321"\n'
    assert parse_directory(text).wearers == (
        WearerInfo(
            device="Dev.7",
            name=None,
            notes="Line 1\nLine 2\tend",
            contacts=(EmergencyContact(name="Sam", phone="+15557654321", relation=""),),
        ),
    )


def test_duplicate_wearers_are_problems() -> None:
    assert problems('[[wearers]]\ndevice = "dev-1"\n[[wearers]]\ndevice = "dev-1"\n') == [
        "wearers[1].device: duplicate device 'dev-1' (first at wearers[0])"
    ]


# --- policies --------------------------------------------------------------------------------------------------


def test_the_policy_supervisor_must_be_a_known_supervisor() -> None:
    assert problems(policy(step("mqtt"), head='supervisor = "sm"')) == [
        "policies[0].supervisor: unknown responder 'sm' (known: ana, bo, cy, sam)"
    ]
    assert problems(policy(step("mqtt"), head='supervisor = "bo"')) == [
        "policies[0].supervisor: responder 'bo' is not a supervisor (set supervisor = true on them)"
    ]


def test_targets_must_be_well_formed_known_and_listed_once() -> None:
    targets = '["responder:anna", "group:nights", "responders:ana", "Contacts", "supervisor", "contacts", "contacts"]'
    assert problems(policy(step("voice", targets))) == [
        "policies[0].steps[0].targets[0]: unknown responder 'anna' (known: ana, bo, cy, sam)",
        "policies[0].steps[0].targets[1]: unknown group 'nights' (known: night-guards)",
        "policies[0].steps[0].targets[2]: 'responders:ana' is not a target "
        "(responder:<id>, group:<id>, contacts, site-responders or supervisor)",
        "policies[0].steps[0].targets[3]: 'Contacts' is not a target "
        "(responder:<id>, group:<id>, contacts, site-responders or supervisor)",
        "policies[0].steps[0].targets[4]: 'supervisor' needs the policy's supervisor field "
        '(supervisor = "<responder id>")',
        "policies[0].steps[0].targets[6]: 'contacts' is listed twice",
    ]


def test_mqtt_steps_take_no_targets_and_other_steps_need_some() -> None:
    text = policy(step("mqtt", '["group:night-guards"]') + step("sms", "[]") + step("voice"))
    assert problems(text) == [
        "policies[0].steps[0].targets: mqtt steps only wait for the command center and take no targets",
        "policies[0].steps[1].targets: sms steps need at least one target "
        "(responder:<id>, group:<id>, contacts, site-responders or supervisor)",
        "policies[0].steps[2].targets: voice steps need at least one target "
        "(responder:<id>, group:<id>, contacts, site-responders or supervisor)",
    ]


def test_channels_are_mqtt_sms_or_voice() -> None:
    assert problems(policy(step("email", '["contacts"]'))) == [
        "policies[0].steps[0].channel: 'email' is not a channel (mqtt, sms or voice)"
    ]


@pytest.mark.parametrize(
    ("wait_s", "ok"),
    [
        (repr(MIN_WAIT_S - 0.1), False),
        (repr(MIN_WAIT_S), True),
        ("12.5", True),
        (repr(MAX_WAIT_S), True),
        (repr(MAX_WAIT_S + 1), False),
        ("nan", False),
        ("-inf", False),
    ],
)
def test_wait_is_within_bounds(wait_s: str, ok: bool) -> None:
    text = policy(step("mqtt", wait_s=wait_s))
    if ok:
        assert parse_directory(text).policies[0].steps[0].wait_s == float(wait_s)
    else:
        assert problems(text) == [
            f"policies[0].steps[0].wait_s: {wait_s} is out of range ({MIN_WAIT_S:g} to {MAX_WAIT_S:g} seconds)"
        ]
    assert MAX_WAIT_S == 3600


@pytest.mark.parametrize(("cap", "ok"), [(0, False), (1, True), (500, True), (501, False)])
def test_max_messages_is_1_to_500(cap: int, ok: bool) -> None:
    text = policy(step("mqtt"), head=f"max_messages = {cap}")
    if ok:
        assert parse_directory(text).policies[0].max_messages == cap
    else:
        assert problems(text) == [f"policies[0].max_messages: {cap} is out of range (1 to 500)"]
    assert parse_directory(policy(step("mqtt"))).policies[0].max_messages == 20


def test_a_policy_has_1_to_20_steps() -> None:
    assert problems(PEOPLE + '[[policies]]\nid = "p"\nsite = "north"\nsteps = []\n') == [
        "policies[0].steps: at least one step is needed"
    ]
    assert problems(policy(step("mqtt") * 21)) == ["policies[0].steps: 21 steps, at most 20"]
    assert len(parse_directory(policy(step("mqtt") * 20)).policies[0].steps) == 20


def test_policy_ids_and_places_are_unique_and_the_fallback_has_no_zone() -> None:
    text = PEOPLE
    for pid, site, zone in [("a", "north", ""), ("a", "north", "lobby"), ("c", "north", ""), ("d", "*", "gate")]:
        text += f'[[policies]]\nid = "{pid}"\nsite = "{site}"\nzone = "{zone}"\n' + step("mqtt")
    assert problems(text) == [
        "policies[3].zone: the fallback policy (site '*') serves whole sites and cannot have a zone",
        "policies[1].id: duplicate id 'a' (first at policies[0])",
        "policies[2]: site 'north' (whole site) is already served by policy 'a' (policies[0])",
    ]
    text = PEOPLE + ('[[policies]]\nid = "z"\nsite = "north"\nzone = "lobby"\n' + step("mqtt")) * 2
    assert problems(text)[-1] == "policies[1]: site 'north' zone 'lobby' is already served by policy 'z' (policies[0])"


def test_policy_sites_are_named_or_star() -> None:
    text = PEOPLE + '[[policies]]\nid = "p"\nsite = ""\nzone = "\\t"\n' + step("mqtt")
    assert problems(text) == [
        "policies[0].site: must not be empty",
        "policies[0].zone: must not contain control characters",
    ]


@pytest.mark.parametrize(
    ("targets", "reason"),
    [
        ('["responder:cy"]', "responder:cy is inactive"),
        ('["group:day"]', "group:day has no active members"),
        ('["supervisor"]', "supervisor 'sam' is inactive"),
        ('["site-responders"]', "site-responders: no active responder serves site 'north'"),
    ],
)
def test_a_policy_that_can_reach_nobody_is_a_problem(targets: str, reason: str) -> None:
    text = PEOPLE.replace('sites = ["north"]', 'sites = ["south"]').replace(
        "supervisor = true", "supervisor = true\nactive = false"
    )
    text += '[[groups]]\nid = "day"\nmembers = ["cy"]\n'
    text += '[[policies]]\nid = "p"\nsite = "north"\nsupervisor = "sam"\n' + step("mqtt") + step("sms", targets)
    assert problems(text) == [f"policies[0]: no sms or voice step can reach anyone: {reason}"]


def test_contacts_reach_nobody_when_no_wearer_has_any_and_reasons_are_all_listed() -> None:
    text = PEOPLE.replace("contacts = [", "# contacts = [")
    text += (
        '[[policies]]\nid = "p"\nsite = "*"\n'
        + step("sms", '["contacts", "responder:cy"]')
        + step("voice", '["contacts"]')
    )
    assert problems(text) == [
        "policies[0]: no sms or voice step can reach anyone: contacts: no wearer has emergency contacts; "
        "responder:cy is inactive"
    ]


def test_one_reachable_target_anywhere_in_the_policy_is_enough() -> None:
    text = policy(step("sms", '["responder:cy"]') + step("voice", '["group:night-guards"]'))
    assert parse_directory(text).policies[0].id == "p"
    assert parse_directory(PEOPLE + '[[policies]]\nid = "m"\nsite = "*"\n' + step("mqtt")).policies[0].site == "*"


def test_every_problem_is_reported_at_once() -> None:
    text = """
[[responders]]
id = "ana"
name = "Ana"
phone = "+1 555"
sites = ["north"]
[[responders]]
id = "ana"
name = "Ana Again"
phone = "+15551230002"
[[groups]]
id = "g"
members = ["anna"]
[[policies]]
id = "p"
site = "north"
supervisor = "ana"
max_messages = 0
[[policies.steps]]
channel = "sms"
targets = ["group:g", "responder:bob"]
wait_s = -1
"""
    assert problems(text) == [
        "responders[0].phone: '+1 555' is not an E.164 number (+ and 8 to 15 digits)",
        "responders[1].id: duplicate id 'ana' (first at responders[0])",
        "groups[0].members[0]: unknown responder 'anna' (known: ana)",
        "policies[0].supervisor: responder 'ana' is not a supervisor (set supervisor = true on them)",
        "policies[0].max_messages: 0 is out of range (1 to 500)",
        f"policies[0].steps[0].wait_s: -1 is out of range ({MIN_WAIT_S:g} to 3600 seconds)",
        "policies[0].steps[0].targets[1]: unknown responder 'bob' (known: ana)",
    ]


# --- choosing and resolving a policy ---------------------------------------------------------------------------


def places(*places: tuple[str, str]) -> Directory:
    return Directory(
        policies=tuple(
            Policy(id=f"{site}/{zone}", site=site, zone=zone, steps=(PolicyStep(Channel.MQTT, 30),))
            for site, zone in places
        )
    )


def test_policy_for_prefers_site_and_zone_then_site_then_fallback() -> None:
    d = places(("north", "lobby"), ("north", ""), ("*", ""), ("south", "lobby"))
    chosen = {
        (site, zone): (p.id if (p := d.policy_for(site, zone)) else None)
        for site, zone in [
            ("north", "lobby"),
            ("north", "gate"),
            ("north", ""),
            ("south", "lobby"),
            ("south", ""),
            ("east", "lobby"),
        ]
    }
    assert chosen == {
        ("north", "lobby"): "north/lobby",
        ("north", "gate"): "north/",
        ("north", ""): "north/",
        ("south", "lobby"): "south/lobby",
        ("south", ""): "*/",
        ("east", "lobby"): "*/",
    }
    assert d.policy_for("north") is d.policy_for("north", "")
    assert places(("north", "")).policy_for("south") is None
    assert EMPTY_DIRECTORY.policy_for("north") is None


ANA: Final = Target("responder:ana", "Ana Guard", "+15551230001")
BO: Final = Target("responder:bo", "Bo Night", "+15551230002")
SAM: Final = Target("responder:sam", "Sam Supervisor", "+15551230009")
SON: Final = Target("contact:dev-0001:0", "Sam Lovelace", "+15557654321")


def test_resolve_expands_dedups_and_skips_inactive_people() -> None:
    text = policy(
        step("mqtt")
        + step("sms", '["responder:bo", "group:night-guards", "responder:cy"]', wait_s="60")
        + step("voice", '["contacts", "site-responders", "supervisor", "responder:ana"]', wait_s="90.5"),
        head='supervisor = "sam"\nmax_messages = 7',
    )
    d = parse_directory(text)
    plan, warnings = d.resolve_with_warnings(d.policies[0], site="north", device_id="dev-0001")
    assert plan == Plan(
        policy="p",
        steps=(
            Step(Channel.MQTT, (), 30.0),
            Step(Channel.SMS, (BO, ANA), 60.0),
            Step(Channel.VOICE, (SON, ANA, BO, SAM), 90.5),
        ),
        broadcast=(ANA, BO, SAM),
        supervisor=SAM,
        max_messages=7,
    )
    assert warnings == (
        "steps[1] (sms): responder 'cy' is inactive, skipped",
        "steps[2] (voice): responder 'cy' of site 'north' is inactive, skipped",
        "broadcast: responder 'cy' of site 'north' is inactive, skipped",
    )
    assert d.resolve(d.policies[0], site="north", device_id="dev-0001") == plan


def test_resolve_for_a_device_without_contacts_and_a_site_without_responders() -> None:
    d = parse_directory(EXAMPLE.read_text(encoding="utf-8"))
    fallback = d.policy_for("east")
    assert fallback is not None
    plan, warnings = d.resolve_with_warnings(fallback, site="east", device_id="dev-9")
    assert plan.broadcast == (SAM,)
    assert plan.supervisor == SAM
    assert warnings == ("broadcast: no active responder serves site 'east'",)
    south = d.policy_for("south")
    assert south is not None
    plan, warnings = d.resolve_with_warnings(south, site="south", device_id="dev-9")
    assert [t.key for t in plan.steps[1].targets] == ["responder:dee"]
    assert warnings == (
        "steps[1] (sms): group 'south-guards': responder 'cy' is inactive, skipped",
        "steps[1] (sms): no emergency contacts for device 'dev-9'",
        "broadcast: responder 'cy' of site 'south' is inactive, skipped",
    )


def test_an_inactive_or_missing_supervisor_is_not_in_the_plan() -> None:
    d = parse_directory(policy(step("sms", '["responder:ana"]'), head='supervisor = "sam"'))
    benched = d.with_responder(Responder("sam", "Sam Supervisor", "+15551230009", ("north",), True, False))
    plan, warnings = benched.resolve_with_warnings(benched.policies[0], site="north", device_id="dev-0001")
    assert plan.supervisor is None
    assert plan.broadcast == (ANA, BO)
    assert "broadcast: supervisor 'sam' is inactive, skipped" in warnings
    plan, warnings = d.resolve_with_warnings(d.policies[0], site="south", device_id="dev-0001")
    assert plan.broadcast == (SAM,)
    unsupervised = parse_directory(policy(step("sms", '["responder:ana"]')))
    plan, warnings = unsupervised.resolve_with_warnings(unsupervised.policies[0], site="south", device_id="x")
    assert (plan.supervisor, plan.broadcast) == (None, ())
    assert warnings == (
        "broadcast: no active responder serves site 'south'",
        "broadcast: nobody to tell when the ladder is exhausted",
    )


def test_resolve_warns_about_steps_that_reach_nobody_and_foreign_policies() -> None:
    d = parse_directory(PEOPLE)
    foreign = Policy(
        id="x",
        site="*",
        steps=(PolicyStep(Channel.SMS, 30, ("responder:zed", "group:zz", "contacts", "supervisor", "bogus")),),
    )
    plan, warnings = d.resolve_with_warnings(foreign, site="north", device_id="dev-2")
    assert plan.steps == (Step(Channel.SMS, (), 30),)
    assert warnings[:6] == (
        "steps[0] (sms): unknown responder 'zed', skipped",
        "steps[0] (sms): unknown group 'zz', skipped",
        "steps[0] (sms): no emergency contacts for device 'dev-2'",
        "steps[0] (sms): the policy has no supervisor",
        "steps[0] (sms): 'bogus' is not a target, skipped",
        "steps[0] (sms): reaches nobody",
    )


def test_the_example_file_validates_and_resolves() -> None:
    d = load_directory(EXAMPLE)
    assert [p.id for p in d.policies] == ["north-default", "north-lobby", "south-default", "fallback"]
    lobby = d.policy_for("north", "lobby")
    assert lobby is not None
    assert lobby.id == "north-lobby"
    north = d.policy_for("north")
    assert north is not None
    plan = d.resolve(north, site="north", device_id="dev-0001")
    assert [[t.key for t in s.targets] for s in plan.steps] == [
        [],
        ["responder:ana", "responder:bo"],
        ["responder:ana", "contact:dev-0001:0", "contact:dev-0001:1", "responder:bo", "responder:sam"],
    ]
    assert [t.key for t in plan.broadcast] == ["responder:ana", "responder:bo", "responder:sam"]
    assert plan.max_messages == 20
    info = d.wearer("dev-0001")
    assert info is not None
    assert info.name == "Ada Lovelace"
    assert d.wearer("dev-9") is None
    assert parse_directory(dump_directory(d)) == d


def test_the_toml_examples_of_the_operators_guide_validate() -> None:
    guide = (EXAMPLE.parents[1] / "docs" / "ESCALATION.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", guide, flags=re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        parse_directory(block)
    everywhere = parse_directory(blocks[-1])
    plan = everywhere.resolve(everywhere.policies[0], site="north", device_id="dev-1")
    assert plan.steps[1].targets == plan.broadcast == (SAM,)


def test_summary() -> None:
    text = load_directory(EXAMPLE).summary()
    assert text.splitlines()[:6] == [
        "5 responders (1 supervisor, 1 inactive), 2 groups, 2 wearers (1 with emergency contacts), 4 policies",
        "site north:",
        "  north-default (whole site): supervisor sam, at most 20 messages",
        "    steps[0] mqtt, wait 30 s",
        "    steps[1] sms to group:night-guards, wait 60 s",
        "    steps[2] voice to responder:ana, contacts, site-responders, wait 90 s",
    ]
    assert text.splitlines()[-4:-2] == [
        "any other site:",
        "  fallback (whole site): supervisor sam, at most 10 messages",
    ]
    assert "+1555" not in text
    assert EMPTY_DIRECTORY.summary() == (
        "0 responders (0 supervisors), 0 groups, 0 wearers (0 with emergency contacts), 0 policies\n"
        "no policies: alerts go to the command center (MQTT) only"
    )


# --- changing the directory ------------------------------------------------------------------------------------


def test_with_responder_adds_or_replaces_in_place_and_validates() -> None:
    d = load_directory(EXAMPLE)
    eve = Responder("eve", "Eve", "+15551230005", ("south",))
    added = d.with_responder(eve)
    assert added.responders[-1] == eve
    assert added.responder("eve") == eve
    renamed = added.with_responder(Responder("ana", "Ana G.", "+15551230001", ("north",)))
    assert [r.id for r in renamed.responders] == [r.id for r in added.responders]
    assert renamed.responders[0].name == "Ana G."
    with pytest.raises(DirectoryError) as caught:
        d.with_responder(Responder("eve", "Eve", "555"))
    assert caught.value.problems == ("responders[5].phone: '555' is not an E.164 number (+ and 8 to 15 digits)",)
    with pytest.raises(DirectoryError) as caught:
        d.with_responder(Responder("sam", "Sam", "+15551230009", ("north", "south"), supervisor=False))
    assert caught.value.problems == tuple(
        f"policies[{i}].supervisor: responder 'sam' is not a supervisor (set supervisor = true on them)"
        for i in range(4)
    )


def test_with_responder_rejects_values_of_the_wrong_type() -> None:
    wrong = Responder("eve", "Eve", "+15551230005", sites="south", active="yes")  # type: ignore[arg-type]
    with pytest.raises(DirectoryError) as caught:
        EMPTY_DIRECTORY.with_responder(wrong)
    assert caught.value.problems == (
        "responders[0].sites: expected an array of strings, got a string",
        "responders[0].active: expected true or false, got a string",
    )


def test_without_responder_refuses_while_referenced_naming_every_reference() -> None:
    d = load_directory(EXAMPLE)
    with pytest.raises(DirectoryError) as caught:
        d.without_responder("ana")
    assert caught.value.problems == (
        "groups[0].members[0]: group 'night-guards' still lists 'ana'",
        "policies[0].steps[2].targets[0]: policy 'north-default' still targets 'responder:ana'",
    )
    with pytest.raises(DirectoryError) as caught:
        d.without_responder("sam")
    assert caught.value.problems[0] == "policies[0].supervisor: policy 'north-default' has 'sam' as supervisor"
    with pytest.raises(DirectoryError) as caught:
        d.without_responder("zed")
    assert caught.value.problems == ("responders: unknown responder 'zed' (known: ana, bo, cy, dee, sam)",)
    extra = d.with_responder(Responder("eve", "Eve", "+15551230005"))
    assert extra.without_responder("eve") == d


def test_without_responder_revalidates_what_is_left() -> None:
    text = responder(id='"ana"', sites='["north"]') + responder(id='"zed"')
    d = parse_directory(text + '[[policies]]\nid = "p"\nsite = "north"\n' + step("sms", '["site-responders"]'))
    with pytest.raises(DirectoryError) as caught:
        d.without_responder("ana")
    assert caught.value.problems == (
        "policies[0]: no sms or voice step can reach anyone: site-responders: no active responder serves site 'north'",
    )
    assert d.without_responder("zed").responders == d.responders[:1]


def test_with_wearer_adds_or_replaces_and_validates() -> None:
    d = load_directory(EXAMPLE)
    info = WearerInfo("dev-0002", notes="Uses a wheelchair.", contacts=(EmergencyContact("Kim", "+15557654322"),))
    changed = d.with_wearer(info)
    assert changed.wearer("dev-0002") == info
    assert [w.device for w in changed.wearers] == ["dev-0001", "dev-0002"]
    assert changed.with_wearer(WearerInfo("dev-0003")).wearers[-1] == WearerInfo("dev-0003")
    with pytest.raises(DirectoryError) as caught:
        d.with_wearer(WearerInfo("dev-0003", contacts=(EmergencyContact("", "+15557654322"),)))
    assert caught.value.problems == ("wearers[2].contacts[0].name: must not be empty",)


# --- round trips and garbage -----------------------------------------------------------------------------------

LOWER: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
IDS: Final = st.builds("{}{}".format, st.sampled_from(LOWER), st.text(LOWER + "._-", max_size=12))
PHONES: Final = st.builds("+{}{}".format, st.integers(1, 9), st.text("0123456789", min_size=7, max_size=14))
DEVICES: Final = st.text(LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-", min_size=1, max_size=32)
NAMES: Final = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=20).filter(str.strip)
NOTES: Final = st.text(st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from('\n\t"\\'), max_size=40)
SITES: Final = ("north", "south", 'Hall "B" / Ost')


@st.composite
def directories(draw: st.DrawFn) -> Directory:
    people = draw(st.lists(IDS, min_size=1, max_size=5, unique=True))
    # The first person is an active supervisor of every site, so that every policy can reach someone.
    responders = [
        Responder(
            id=rid,
            name=draw(NAMES),
            phone=draw(PHONES),
            sites=SITES if i == 0 else tuple(draw(st.lists(st.sampled_from(SITES), unique=True))),
            supervisor=i == 0 or draw(st.booleans()),
            active=i == 0 or draw(st.booleans()),
        )
        for i, rid in enumerate(people)
    ]
    supervisors = [r.id for r in responders if r.supervisor]
    groups = [
        Group(gid, tuple(draw(st.lists(st.sampled_from(people), min_size=1, unique=True))))
        for gid in draw(st.lists(IDS, max_size=3, unique=True))
    ]
    contacts = st.builds(EmergencyContact, NAMES, PHONES, st.just("") | NAMES)
    wearers = [
        WearerInfo(device, draw(st.none() | NAMES), draw(NOTES), tuple(draw(st.lists(contacts, max_size=3))))
        for device in draw(st.lists(DEVICES, max_size=3, unique=True))
    ]
    where = st.tuples(st.sampled_from((*SITES, "*")), st.sampled_from(("", "lobby"))).filter(
        lambda p: p != ("*", "lobby")
    )
    policies = []
    for pid, (site, zone) in zip(
        draw(st.lists(IDS, max_size=4, unique=True)),
        draw(st.lists(where, min_size=4, max_size=4, unique=True)),
        strict=False,
    ):
        supervisor = draw(st.none() | st.sampled_from(supervisors))
        pool = ["contacts", "site-responders", *(f"responder:{r}" for r in people), *(f"group:{g.id}" for g in groups)]
        pool += ["supervisor"] if supervisor else []
        steps = []
        for channel in draw(st.lists(st.sampled_from(Channel), min_size=1, max_size=4)):
            targets: tuple[str, ...] = ()
            if channel is not Channel.MQTT:
                chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
                targets = tuple(dict.fromkeys([f"responder:{people[0]}", *chosen]))
            wait = draw(st.floats(MIN_WAIT_S, MAX_WAIT_S) | st.integers(math.ceil(MIN_WAIT_S), 3600).map(float))
            steps.append(PolicyStep(channel, wait, targets))
        policies.append(Policy(pid, site, tuple(steps), zone, supervisor, draw(st.integers(1, 500))))
    return Directory(tuple(responders), tuple(groups), tuple(wearers), tuple(policies))


@FAST
@given(directories())
def test_dump_then_parse_gives_the_same_directory(directory: Directory) -> None:
    assert parse_directory(dump_directory(directory)) == directory


def test_dump_writes_readable_toml() -> None:
    d = Directory(
        responders=(Responder("ana", 'Ana "A" \\ Guard', "+15551230001", ("north",), True),),
        wearers=(WearerInfo("dev-1", notes="Key\tin locker 4.\nBell: \x7f"),),
    )
    text = dump_directory(d)
    assert '[[responders]]\nid = "ana"\nname = "Ana \\"A\\" \\\\ Guard"\n' in text
    assert 'notes = "Key\\tin locker 4.\\nBell: \\u007F"' in text
    example = load_directory(EXAMPLE)
    assert '[[policies.steps]]\nchannel = "mqtt"\nwait_s = 30.0\n' in dump_directory(example)
    assert '[[wearers.contacts]]\nname = "Sam Lovelace"\nphone = "+15557654321"\nrelation = "son"\n' in dump_directory(
        example
    )


FIELDS: Final = sorted(
    {"id", "name", "phone", "sites", "supervisor", "active", "members", "device", "notes", "contacts", "relation"}
    | {"site", "zone", "max_messages", "steps", "channel", "wait_s", "targets", "wait"}
)
SCALARS: Final = (
    st.booleans()
    | st.integers(-5, 600)
    | st.floats(allow_nan=False)
    | st.text(st.characters(max_codepoint=0xFFFF, codec="utf-8", exclude_characters="\x7f"), max_size=8)
    | st.sampled_from(
        ["ana", "sam", "responder:ana", "group:g", "contacts", "supervisor", "sms", "mqtt", "*", "+15551230001"]
    )
)
VALUES: Final = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5),
    max_leaves=12,
)
TABLES: Final = st.lists(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=7), max_size=3)


def problems_or_none(text: str) -> tuple[str, ...] | None:
    """The problems of `text`, or None when it is a valid directory; anything but DirectoryError propagates."""
    try:
        parse_directory(text)
    except DirectoryError as exc:
        return exc.problems
    return None


def inline(value: object) -> str:
    """TOML for a value, tables inline (test-side writer, independent of dump_directory)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {inline(v)}" for k, v in value.items()) + "}"
    return str(value)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["responders", "groups", "wearers", "policies", "people"]), TABLES | VALUES, max_size=4
    )
)
def test_garbage_documents_give_only_one_line_problems(document: dict[str, object]) -> None:
    text = "".join(f"{key} = {inline(value)}\n" for key, value in document.items())
    found = problems_or_none(text)
    assert found is None or found
    for problem in found or ():
        assert "\n" not in problem
        assert ": " in problem


@FAST
@given(st.text(max_size=200))
def test_garbage_text_gives_only_directory_errors(text: str) -> None:
    found = problems_or_none(text)
    assert found is None or found


def test_names_may_use_any_script() -> None:
    assert parse_directory(responder(name='"Åsa Ölund-Nuñez 李"')).responders[0].name == "Åsa Ölund-Nuñez 李"
