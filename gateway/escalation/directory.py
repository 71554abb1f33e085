"""The escalation directory: responders, on-call groups, wearers' details and escalation policies (sans-I/O).

The directory is read from a TOML file (format: docs/ESCALATION.md), validated in full and then resolved into a
`gateway.core.ladder.Plan` for each incident. Validation reports every problem at once, each on one line as
"path: problem", e.g. ``policies[0].steps[2].targets[1]: unknown responder 'anna' (known: ana, bo)``.

Errors:

DirectoryError (a GatewayError and a ValueError)   the text or a change to the directory is invalid;
                                                   `.problems` holds one "path: problem" line per problem

Everything here is pure except `load_directory`, which only reads the file and hands its text to `parse_directory`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Final, TypeVar

from gateway.core.ladder import Channel, Plan, Step, Target
from gateway.documents import DocumentChecker, DocumentUnreadable, read_document
from gateway.documents import did_you_mean as _did_you_mean
from gateway.documents import join_path as _join
from gateway.errors import GatewayError
from gateway.identity.const import DEVICE_ID_PATTERN

#: Ids are typed by operators and end up in target keys, send keys and CLI arguments: lowercase ASCII keeps
#: them unambiguous (no "Ana" versus "ana") and safe in every one of those places.
ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: E.164: "+", a country code that never starts with 0, at most 15 digits in all; 8 is the shortest number a
#: carrier will route internationally. Spaces and dashes are refused rather than stripped: what is stored is
#: exactly what is dialled.
PHONE_PATTERN: Final = re.compile(r"\+[1-9][0-9]{7,14}")
#: Names are spoken in calls and printed in SMS and the timeline: long enough for any real name, short
#: enough that a message still has room for the alert.
MAX_NAME_LEN: Final = 128
#: Wearer notes travel in responders' SMS: 500 characters is about three concatenated segments.
MAX_NOTES_LEN: Final = 500
#: "son", "neighbour", "care home front desk": a word or a few.
MAX_RELATION_LEN: Final = 64
#: The device registry's site column is 64 characters (gateway/store/models.py): a longer site could never match.
MAX_SITE_LEN: Final = 64
#: Zones are named like sites.
MAX_ZONE_LEN: Final = 64
#: The site of the fallback policy: it serves every site that has no policy of its own.
ANY_SITE: Final = "*"
#: A rung shorter than a second is a typo; real ladders wait tens of seconds (short rungs keep tests quick).
MIN_WAIT_S: Final = 1.0
#: An hour without escalating is no longer escalation: a rung that long is almost certainly a typo.
MAX_WAIT_S: Final = 3600.0
#: Twenty rungs at even the shortest wait is well past any sensible ladder; a longer one is a mistake.
MAX_STEPS: Final = 20
#: Runaway protection: SMS plus calls for one incident. 20 covers a long ladder with a few targets per rung.
DEFAULT_MAX_MESSAGES: Final = 20
MIN_MAX_MESSAGES: Final = 1
#: Above 500 messages the cap no longer protects anyone's phone bill or phone.
MAX_MAX_MESSAGES: Final = 500
#: Unknown ids are answered with the full list of known ones up to this many; past it, with close matches.
_KNOWN_LISTED: Final = 10

#: The tables a directory file may have, in the order they are validated and written.
_SECTIONS: Final = ("responders", "groups", "wearers", "policies")
_RESPONDER_FIELDS: Final = (("id", "name", "phone"), ("sites", "supervisor", "active"))
_GROUP_FIELDS: Final = (("id", "members"), ())
_WEARER_FIELDS: Final = (("device",), ("name", "notes", "contacts"))
_CONTACT_FIELDS: Final = (("name", "phone"), ("relation",))
_POLICY_FIELDS: Final = (("id", "site", "steps"), ("zone", "supervisor", "max_messages"))
_STEP_FIELDS: Final = (("channel", "wait_s"), ("targets",))
_TARGET_SYNTAX: Final = "responder:<id>, group:<id>, contacts, site-responders or supervisor"
#: The wearer's emergency contacts; everyone whose `sites` include the incident's site; the policy's supervisor.
_CONTACTS: Final = "contacts"
_SITE_RESPONDERS: Final = "site-responders"
_SUPERVISOR: Final = "supervisor"


class DirectoryError(GatewayError, ValueError):
    """The directory text or a change to it is invalid; `problems` has one "path: problem" line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = tuple(problems)


@dataclass(frozen=True, slots=True)
class Responder:
    """A person who can be notified.

    id: unique; referenced as `responder:<id>`, in groups and as a policy's supervisor.
    name: shown in the timeline and spoken in calls.
    phone: E.164.
    sites: the sites whose `site-responders` target and exhaustion broadcast include this person.
    supervisor: may be a policy's supervisor (told when a ladder is exhausted).
    active: inactive people are never notified (on leave, left the company) but stay referenced.
    """

    id: str
    name: str
    phone: str
    sites: tuple[str, ...] = ()
    supervisor: bool = False
    active: bool = True


@dataclass(frozen=True, slots=True)
class Group:
    """An on-call group: `group:<id>` notifies its active members, in this order."""

    id: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EmergencyContact:
    """Someone the wearer asked to be called: family, a neighbour. `relation` is free text ("son"), may be empty."""

    name: str
    phone: str
    relation: str = ""


@dataclass(frozen=True, slots=True)
class WearerInfo:
    """What the directory adds to a registered device (the registry holds its id, wearer name, site and phone).

    device: the device id, as in the registry.
    name: overrides the registry's wearer name in messages; None keeps it.
    notes: for responders ("Diabetic. Spare key in locker 4.").
    contacts: the wearer's emergency contacts, reached by the `contacts` target, in this order.
    """

    device: str
    name: str | None = None
    notes: str = ""
    contacts: tuple[EmergencyContact, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyStep:
    """One rung as written: `targets` are target strings ("group:night-guards", "contacts"), resolved per incident."""

    channel: Channel
    wait_s: float
    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    """An escalation ladder for a site (or, with site "*", for every site without its own).

    zone: "" serves the whole site; a zone name serves incidents located in that zone.
    supervisor: responder id told on exhaustion, or None.
    max_messages: cap on SMS plus calls per incident.
    """

    id: str
    site: str
    steps: tuple[PolicyStep, ...]
    zone: str = ""
    supervisor: str | None = None
    max_messages: int = DEFAULT_MAX_MESSAGES


@dataclass(frozen=True, slots=True)
class Directory:
    """People and policies; build it with `parse_directory` or `load_directory`, which validate it."""

    responders: tuple[Responder, ...] = ()
    groups: tuple[Group, ...] = ()
    wearers: tuple[WearerInfo, ...] = ()
    policies: tuple[Policy, ...] = ()
    # Lookups built once: resolve runs for every incident.
    _responder_by_id: dict[str, Responder] = field(init=False, repr=False, compare=False)
    _group_by_id: dict[str, Group] = field(init=False, repr=False, compare=False)
    _wearer_by_device: dict[str, WearerInfo] = field(init=False, repr=False, compare=False)
    _policy_by_place: dict[tuple[str, str], Policy] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        responders: dict[str, Responder] = {}
        groups: dict[str, Group] = {}
        wearers: dict[str, WearerInfo] = {}
        policies: dict[tuple[str, str], Policy] = {}
        for r in self.responders:
            responders.setdefault(r.id, r)
        for g in self.groups:
            groups.setdefault(g.id, g)
        for w in self.wearers:
            wearers.setdefault(w.device, w)
        for p in self.policies:
            policies.setdefault((p.site, p.zone), p)
        object.__setattr__(self, "_responder_by_id", responders)
        object.__setattr__(self, "_group_by_id", groups)
        object.__setattr__(self, "_wearer_by_device", wearers)
        object.__setattr__(self, "_policy_by_place", policies)

    def policy_for(self, site: str, zone: str = "") -> Policy | None:
        """The policy of (site, zone), else of the whole site, else the fallback ("*"); None when none applies."""
        for place in ((site, zone), (site, ""), (ANY_SITE, "")):
            policy = self._policy_by_place.get(place)
            if policy is not None:
                return policy
        return None

    def wearer(self, device_id: str) -> WearerInfo | None:
        """What the directory says about the device's wearer, if anything."""
        return self._wearer_by_device.get(device_id)

    def responder(self, responder_id: str) -> Responder | None:
        """The responder with this id, if any."""
        return self._responder_by_id.get(responder_id)

    def resolve(self, policy: Policy, *, site: str, device_id: str) -> Plan:
        """The plan of `policy` for an incident of `device_id` at `site`: targets expanded to people."""
        return self.resolve_with_warnings(policy, site=site, device_id=device_id)[0]

    def resolve_with_warnings(self, policy: Policy, *, site: str, device_id: str) -> tuple[Plan, tuple[str, ...]]:
        """`resolve`, plus a line for each person skipped and each rung or broadcast that reaches nobody."""
        warnings: list[str] = []
        steps: list[Step] = []
        for i, step in enumerate(policy.steps):
            where = f"steps[{i}] ({step.channel})"
            warn = _collector(warnings, where)
            chosen: dict[str, Target] = {}
            for ref in step.targets:
                for target in self._expand(ref, policy, site, device_id, warn):
                    chosen.setdefault(target.key, target)
            if step.channel is not Channel.MQTT and not chosen:
                warnings.append(f"{where}: reaches nobody")
            steps.append(Step(channel=step.channel, targets=tuple(chosen.values()), wait_s=step.wait_s))

        broadcast_warning = _collector(warnings, "broadcast")
        supervisor = None
        if policy.supervisor is not None:
            supervisor = next(iter(self._person(policy.supervisor, broadcast_warning, "supervisor")), None)
        broadcast: dict[str, Target] = {t.key: t for t in self._site_responders(site, broadcast_warning)}
        if supervisor is not None:
            broadcast.setdefault(supervisor.key, supervisor)
        if not broadcast:
            broadcast_warning("nobody to tell when the ladder is exhausted")
        plan = Plan(
            policy=policy.id,
            steps=tuple(steps),
            broadcast=tuple(broadcast.values()),
            supervisor=supervisor,
            max_messages=policy.max_messages,
        )
        return plan, tuple(dict.fromkeys(warnings))

    def with_responder(self, responder: Responder) -> Directory:
        """A copy with `responder` added, or replacing the one with its id; validated."""
        responders = [r for r in self.responders if r.id != responder.id]
        index = next((i for i, r in enumerate(self.responders) if r.id == responder.id), len(responders))
        responders.insert(index, responder)
        return _validated(dataclasses.replace(self, responders=tuple(responders)))

    def without_responder(self, responder_id: str) -> Directory:
        """A copy without the responder; refused while a group or policy still names them (each is listed)."""
        if responder_id not in self._responder_by_id:
            raise DirectoryError([f"responders: {_unknown('responder', responder_id, self._responder_by_id)}"])
        problems: list[str] = []
        for gi, group in enumerate(self.groups):
            for mi, member in enumerate(group.members):
                if member == responder_id:
                    problems.append(f"groups[{gi}].members[{mi}]: group {group.id!r} still lists {responder_id!r}")
        ref = f"responder:{responder_id}"
        for pi, policy in enumerate(self.policies):
            if policy.supervisor == responder_id:
                problems.append(f"policies[{pi}].supervisor: policy {policy.id!r} has {responder_id!r} as supervisor")
            for si, step in enumerate(policy.steps):
                for ti, target in enumerate(step.targets):
                    if target == ref:
                        problems.append(
                            f"policies[{pi}].steps[{si}].targets[{ti}]: policy {policy.id!r} still targets {ref!r}"
                        )
        if problems:
            raise DirectoryError(problems)
        responders = tuple(r for r in self.responders if r.id != responder_id)
        return _validated(dataclasses.replace(self, responders=responders))

    def with_wearer(self, info: WearerInfo) -> Directory:
        """A copy with `info` added, or replacing the one for its device; validated."""
        wearers = [w for w in self.wearers if w.device != info.device]
        index = next((i for i, w in enumerate(self.wearers) if w.device == info.device), len(wearers))
        wearers.insert(index, info)
        return _validated(dataclasses.replace(self, wearers=tuple(wearers)))

    def summary(self) -> str:
        """A few lines for people: counts, then each site's policies with their rungs. No phone numbers."""
        supervisors = sum(r.supervisor for r in self.responders)
        inactive = sum(not r.active for r in self.responders)
        with_contacts = sum(bool(w.contacts) for w in self.wearers)
        people = f"{_plural(len(self.responders), 'responder')} ({_plural(supervisors, 'supervisor')}"
        people += f", {inactive} inactive)" if inactive else ")"
        lines = [
            f"{people}, {_plural(len(self.groups), 'group')}, "
            f"{_plural(len(self.wearers), 'wearer')} ({with_contacts} with emergency contacts), "
            f"{_plural(len(self.policies), 'policy', 'policies')}"
        ]
        if not self.policies:
            lines.append("no policies: alerts go to the command center (MQTT) only")
        by_site = sorted(self.policies, key=lambda p: (p.site == ANY_SITE, p.site, p.zone))
        site = None
        for policy in by_site:
            if policy.site != site:
                site = policy.site
                lines.append("any other site:" if site == ANY_SITE else f"site {site}:")
            place = f"zone {policy.zone}" if policy.zone else "whole site"
            supervisor = f"supervisor {policy.supervisor}" if policy.supervisor else "no supervisor"
            lines.append(f"  {policy.id} ({place}): {supervisor}, at most {policy.max_messages} messages")
            for i, step in enumerate(policy.steps):
                to = f" to {', '.join(step.targets)}" if step.targets else ""
                lines.append(f"    steps[{i}] {step.channel}{to}, wait {step.wait_s:g} s")
        return "\n".join(lines)

    def _person(self, responder_id: str, warn: Callable[[str], None], role: str = "responder") -> Iterator[Target]:
        responder = self._responder_by_id.get(responder_id)
        if responder is None:
            warn(f"unknown {role} {responder_id!r}, skipped")
        elif not responder.active:
            warn(f"{role} {responder_id!r} is inactive, skipped")
        else:
            yield _target(responder)

    def _site_responders(self, site: str, warn: Callable[[str], None]) -> Iterator[Target]:
        found = False
        for responder in self.responders:
            if site in responder.sites:
                if responder.active:
                    found = True
                    yield _target(responder)
                else:
                    warn(f"responder {responder.id!r} of site {site!r} is inactive, skipped")
        if not found:
            warn(f"no active responder serves site {site!r}")

    def _expand(
        self, ref: str, policy: Policy, site: str, device_id: str, warn: Callable[[str], None]
    ) -> Iterator[Target]:
        kind, arg = _parse_target(ref)
        if kind == "responder":
            yield from self._person(arg, warn)
        elif kind == "group":
            group = self._group_by_id.get(arg)
            if group is None:
                warn(f"unknown group {arg!r}, skipped")
                return
            for member in group.members:
                yield from self._person(member, lambda m: warn(f"group {arg!r}: {m}"))
        elif kind == _CONTACTS:
            info = self._wearer_by_device.get(device_id)
            if info is None or not info.contacts:
                warn(f"no emergency contacts for device {device_id!r}")
                return
            for i, contact in enumerate(info.contacts):
                yield Target(key=f"contact:{device_id}:{i}", name=contact.name, phone=contact.phone)
        elif kind == _SITE_RESPONDERS:
            yield from self._site_responders(site, warn)
        elif kind == _SUPERVISOR:
            if policy.supervisor is None:
                warn("the policy has no supervisor")
            else:
                yield from self._person(policy.supervisor, warn, "supervisor")
        else:
            warn(f"{ref!r} is not a target, skipped")


#: A gateway without a directory file: no ladder beyond the command center (MQTT).
EMPTY_DIRECTORY: Final = Directory()


def parse_directory(text: str, *, source: str = "<text>") -> Directory:
    """Parse and validate directory TOML; DirectoryError lists every problem. `source` names the text in messages."""
    try:
        document = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise DirectoryError([_toml_problem(str(exc), text, source)]) from None
    return _directory_from_document(document, source)


def load_directory(path: Path) -> Directory:
    """Read (UTF-8) and parse a directory file; DirectoryError also when it cannot be read."""
    try:
        text = read_document(path)
    except DocumentUnreadable as exc:
        raise DirectoryError([exc.problem]) from None
    return parse_directory(text, source=str(path))


def dump_directory(directory: Directory) -> str:
    """The directory as TOML text that `parse_directory` reads back equal (comments are not kept)."""
    lines = ["# Escalation directory: people and escalation policies (format: docs/ESCALATION.md)."]
    document = _document(directory)
    for section in _SECTIONS:
        _write_tables(lines, section, document[section])
    return "\n".join(lines) + "\n"


# --- validation -------------------------------------------------------------------------------------------------


def _validated(directory: Directory) -> Directory:
    return _directory_from_document(_document(directory), "<directory>")


def _directory_from_document(document: Mapping[str, object], source: str) -> Directory:
    check = _Checker()
    for key in document:
        if key not in _SECTIONS:
            check.add(source, f"unknown key {key!r}{_did_you_mean(key, _SECTIONS)} (expected {', '.join(_SECTIONS)})")
    responders = [check.responder(path, t) for path, t in check.tables("", document, "responders")]
    people = _first_by(check, responders, "responders", "id", lambda r: r.id)
    groups = [check.group(path, t, people) for path, t in check.tables("", document, "groups")]
    teams = _first_by(check, groups, "groups", "id", lambda g: g.id)
    wearers = [check.wearer(path, t) for path, t in check.tables("", document, "wearers")]
    _first_by(check, wearers, "wearers", "device", lambda w: w.device)
    policies = [check.policy(path, t, people, teams, wearers) for path, t in check.tables("", document, "policies")]
    _first_by(check, policies, "policies", "id", lambda p: p.id)
    places: dict[tuple[str, str], int] = {}
    for i, policy in enumerate(policies):
        if not policy.site:  # missing or of the wrong type: already a problem
            continue
        first = places.setdefault((policy.site, policy.zone), i)
        if first != i:
            place = f"site {policy.site!r} " + (f"zone {policy.zone!r}" if policy.zone else "(whole site)")
            check.add(
                f"policies[{i}]", f"{place} is already served by policy {policies[first].id!r} (policies[{first}])"
            )
    if check.problems:
        raise DirectoryError(check.problems)
    return Directory(
        responders=tuple(responders), groups=tuple(groups), wearers=tuple(wearers), policies=tuple(policies)
    )


_T = TypeVar("_T")


def _first_by(check: _Checker, items: list[_T], section: str, key: str, get: Callable[[_T], str]) -> dict[str, _T]:
    """Items by id (the first of each); later duplicates are problems."""
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        value = get(item)
        if not value:  # missing or of the wrong type: already a problem
            continue
        j = first.setdefault(value, i)
        if j != i:
            check.add(f"{section}[{i}].{key}", f"duplicate {key} {value!r} (first at {section}[{j}])")
    return {value: items[i] for value, i in first.items()}


class _Checker(DocumentChecker):
    """Reads one directory leniently: every problem is recorded and reading goes on with a placeholder value."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def kind(self, value: object) -> str:
        return _kind(value)

    # -- shapes --

    def array_words(self, where: str) -> str:
        return f"an array of tables ([[{where}]])"

    tables = DocumentChecker.members

    def texts(
        self, path: str, table: Mapping[str, object], key: str, rule: Callable[[str], str | None] | None = None
    ) -> tuple[str, ...]:
        """The strings of the array at `key`, each checked by `rule`; items listed twice are problems."""
        where = _join(path, key)
        value = table.get(key, [])
        if not isinstance(value, list):
            self.add(where, f"expected an array of strings, got {_kind(value)}")
            return ()
        found: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.add(f"{where}[{i}]", f"expected a string, got {_kind(item)}")
                continue
            if item in found:
                self.add(f"{where}[{i}]", f"{item!r} is listed twice")
            elif rule is not None and (problem := rule(item)) is not None:
                self.add(f"{where}[{i}]", problem)
            found.append(item)
        return tuple(found)

    def flag(self, path: str, table: Mapping[str, object], key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.add(_join(path, key), f"expected true or false, got {_kind(value)}")
            return default
        return value

    # -- tables --

    def responder(self, path: str, table: Mapping[str, object]) -> Responder:
        self.fields(path, table, _RESPONDER_FIELDS)
        return Responder(
            id=self.text(path, table, "id", _id_problem) or "",
            name=self.text(path, table, "name", _name_problem) or "",
            phone=self.text(path, table, "phone", _phone_problem) or "",
            sites=self.texts(path, table, "sites", _site_problem),
            supervisor=self.flag(path, table, "supervisor", False),
            active=self.flag(path, table, "active", True),
        )

    def group(self, path: str, table: Mapping[str, object], people: Mapping[str, Responder]) -> Group:
        self.fields(path, table, _GROUP_FIELDS)
        group_id = self.text(path, table, "id", _id_problem) or ""
        members = self.texts(path, table, "members", lambda m: _unknown("responder", m, people, m in people))
        if "members" in table and isinstance(table["members"], list) and not members:
            self.add(f"{path}.members", "must list at least one responder")
        return Group(id=group_id, members=members)

    def wearer(self, path: str, table: Mapping[str, object]) -> WearerInfo:
        self.fields(path, table, _WEARER_FIELDS)
        device = self.text(path, table, "device", _device_problem) or ""
        name = self.text(path, table, "name", _name_problem)
        notes = self.text(path, table, "notes", _notes_problem) or ""
        contacts: list[EmergencyContact] = []
        for where, contact in self.tables(path, table, "contacts"):
            self.fields(where, contact, _CONTACT_FIELDS)
            contacts.append(
                EmergencyContact(
                    name=self.text(where, contact, "name", _name_problem) or "",
                    phone=self.text(where, contact, "phone", _phone_problem) or "",
                    relation=self.text(where, contact, "relation", _relation_problem) or "",
                )
            )
        return WearerInfo(device=device, name=name, notes=notes, contacts=tuple(contacts))

    def policy(
        self,
        path: str,
        table: Mapping[str, object],
        people: Mapping[str, Responder],
        teams: Mapping[str, Group],
        wearers: Sequence[WearerInfo],
    ) -> Policy:
        self.fields(path, table, _POLICY_FIELDS)
        policy_id = self.text(path, table, "id", _id_problem) or ""
        site = self.text(path, table, "site", lambda s: None if s == ANY_SITE else _site_problem(s)) or ""
        zone = self.text(path, table, "zone", _zone_problem) or ""
        if site == ANY_SITE and zone:
            self.add(f"{path}.zone", "the fallback policy (site '*') serves whole sites and cannot have a zone")
        supervisor = self.text(path, table, "supervisor", lambda s: _supervisor_problem(s, people))
        max_messages = self._max_messages(path, table)
        step_tables = self.tables(path, table, "steps")
        if "steps" in table and isinstance(table["steps"], list):
            if not table["steps"]:
                self.add(f"{path}.steps", "at least one step is needed")
            elif len(table["steps"]) > MAX_STEPS:
                self.add(f"{path}.steps", f"{len(table['steps'])} steps, at most {MAX_STEPS}")
        steps = [self._step(where, t, people, teams, supervisor) for where, t in step_tables]
        policy = Policy(
            id=policy_id,
            site=site,
            steps=tuple(step for step, _ in steps),
            zone=zone,
            supervisor=supervisor,
            max_messages=max_messages,
        )
        if all(clean for _, clean in steps):
            reasons = _unreachable(policy, people, teams, wearers)
            if reasons:
                self.add(path, f"no sms or voice step can reach anyone: {'; '.join(reasons)}")
        return policy

    def _max_messages(self, path: str, table: Mapping[str, object]) -> int:
        value = table.get("max_messages", DEFAULT_MAX_MESSAGES)
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(f"{path}.max_messages", f"expected an integer, got {_kind(value)}")
            return DEFAULT_MAX_MESSAGES
        if not MIN_MAX_MESSAGES <= value <= MAX_MAX_MESSAGES:
            self.add(f"{path}.max_messages", f"{value} is out of range ({MIN_MAX_MESSAGES} to {MAX_MAX_MESSAGES})")
        return value

    def _step(
        self,
        path: str,
        table: Mapping[str, object],
        people: Mapping[str, Responder],
        teams: Mapping[str, Group],
        supervisor: str | None,
    ) -> tuple[PolicyStep, bool]:
        """The step, and whether its targets are all well-formed and known."""
        self.fields(path, table, _STEP_FIELDS)
        channel: Channel | None = None
        name = self.text(path, table, "channel")
        if name is not None:
            try:
                channel = Channel(name)
            except ValueError:
                self.add(f"{path}.channel", f"{name!r} is not a channel (mqtt, sms or voice)")
        wait_s = self._wait(path, table)
        before = len(self.problems)
        targets = self.texts(path, table, "targets", lambda t: _target_problem(t, people, teams, supervisor))
        clean = len(self.problems) == before
        if channel is Channel.MQTT and targets:
            self.add(f"{path}.targets", "mqtt steps only wait for the command center and take no targets")
        elif channel is not None and channel is not Channel.MQTT and not targets and clean:
            self.add(f"{path}.targets", f"{channel} steps need at least one target ({_TARGET_SYNTAX})")
        step = PolicyStep(channel=channel or Channel.MQTT, wait_s=wait_s, targets=targets)
        return step, clean

    def _wait(self, path: str, table: Mapping[str, object]) -> float:
        if "wait_s" not in table:
            return MIN_WAIT_S
        value = table["wait_s"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(f"{path}.wait_s", f"expected a number of seconds, got {_kind(value)}")
            return MIN_WAIT_S
        if not MIN_WAIT_S <= value <= MAX_WAIT_S:
            self.add(f"{path}.wait_s", f"{value} is out of range ({MIN_WAIT_S:g} to {MAX_WAIT_S:g} seconds)")
        return float(value)


def _unreachable(
    policy: Policy, people: Mapping[str, Responder], teams: Mapping[str, Group], wearers: Sequence[WearerInfo]
) -> list[str]:
    """Why each sms/voice target reaches nobody, when none can reach anyone; [] when one can, or cannot be judged."""
    reasons: list[str] = []
    for step in policy.steps:
        if step.channel is Channel.MQTT:
            continue
        for ref in step.targets:
            reason = _why_nobody(ref, policy, people, teams, wearers)
            if reason is None:
                return []
            reasons.append(reason)
    return list(dict.fromkeys(reasons))


def _why_nobody(
    ref: str,
    policy: Policy,
    people: Mapping[str, Responder],
    teams: Mapping[str, Group],
    wearers: Sequence[WearerInfo],
) -> str | None:
    """Why the target can reach nobody whatever the incident; None when it may reach someone (or is unknown)."""
    kind, arg = _parse_target(ref)
    if kind == "responder" and arg in people and not people[arg].active:
        return f"{ref} is inactive"
    members = teams[arg].members if kind == "group" and arg in teams else ()
    if members and all(m in people for m in members) and not any(people[m].active for m in members):
        return f"{ref} has no active members"
    supervisor = people.get(policy.supervisor or "")
    if kind == _SUPERVISOR and supervisor is not None and not supervisor.active:
        return f"supervisor {supervisor.id!r} is inactive"
    if kind == _CONTACTS and not any(w.contacts for w in wearers):
        return "contacts: no wearer has emergency contacts"
    if kind == _SITE_RESPONDERS:
        if policy.site == ANY_SITE and not any(r.active and r.sites for r in people.values()):
            return "site-responders: no active responder serves any site"
        if policy.site != ANY_SITE and not any(r.active and policy.site in r.sites for r in people.values()):
            return f"site-responders: no active responder serves site {policy.site!r}"
    return None


def _parse_target(ref: str) -> tuple[str, str]:
    """(kind, id): kind is responder, group, contacts, site-responders or supervisor; ("", "") when malformed."""
    if ref in (_CONTACTS, _SITE_RESPONDERS, _SUPERVISOR):
        return ref, ""
    kind, sep, arg = ref.partition(":")
    if sep and kind in ("responder", "group"):
        return kind, arg
    return "", ""


def _target_problem(
    ref: str, people: Mapping[str, Responder], teams: Mapping[str, Group], supervisor: str | None
) -> str | None:
    kind, arg = _parse_target(ref)
    if kind == "responder":
        return _unknown("responder", arg, people, arg in people)
    if kind == "group":
        return _unknown("group", arg, teams, arg in teams)
    if kind == _SUPERVISOR and supervisor is None:
        return "'supervisor' needs the policy's supervisor field (supervisor = \"<responder id>\")"
    if not kind:
        return f"{ref!r} is not a target ({_TARGET_SYNTAX})"
    return None


def _supervisor_problem(responder_id: str, people: Mapping[str, Responder]) -> str | None:
    responder = people.get(responder_id)
    if responder is None:
        return _unknown("responder", responder_id, people)
    if not responder.supervisor:
        return f"responder {responder_id!r} is not a supervisor (set supervisor = true on them)"
    return None


def _unknown(kind: str, value: str, known: Iterable[str], found: bool = False) -> str | None:
    """None when found; else "unknown <kind> 'x'" with the known ids, or the close ones when there are many."""
    if found:
        return None
    names = sorted(known)
    if not names:
        hint = f"no {kind}s are defined"
    elif len(names) <= _KNOWN_LISTED:
        hint = f"known: {', '.join(names)}"
    else:
        close = difflib.get_close_matches(value, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"{len(names)} {kind}s are defined"
    return f"unknown {kind} {value!r} ({hint})"


def _id_problem(value: str) -> str | None:
    if ID_PATTERN.fullmatch(value):
        return None
    return f"{value!r} is not a valid id (1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)"


def _device_problem(value: str) -> str | None:
    if DEVICE_ID_PATTERN.fullmatch(value):
        return None
    return f"{value!r} is not a device id (1 to 32 of A-Z, a-z, 0-9, '.', '_', '-')"


def _phone_problem(value: str) -> str | None:
    if PHONE_PATTERN.fullmatch(value):
        return None
    return f"{value!r} is not an E.164 number (+ and 8 to 15 digits)"


def _bounded_text(value: str, limit: int, *, required: bool, newlines: bool = False) -> str | None:
    if required and not value:
        return "must not be empty"
    if required and not value.strip():
        return "must not be only spaces"
    if len(value) > limit:
        return f"{len(value)} characters, at most {limit}"
    allowed = "\n\t" if newlines else ""
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
        return "must not contain control characters" + (" (other than new lines and tabs)" if newlines else "")
    return None


def _name_problem(value: str) -> str | None:
    return _bounded_text(value, MAX_NAME_LEN, required=True)


def _relation_problem(value: str) -> str | None:
    return _bounded_text(value, MAX_RELATION_LEN, required=False)


def _notes_problem(value: str) -> str | None:
    return _bounded_text(value, MAX_NOTES_LEN, required=False, newlines=True)


def _site_problem(value: str) -> str | None:
    if value == ANY_SITE:
        return "'*' is not a site: name each site (only a policy's site may be '*')"
    return _bounded_text(value, MAX_SITE_LEN, required=True)


def _zone_problem(value: str) -> str | None:
    return _bounded_text(value, MAX_ZONE_LEN, required=False)


def _kind(value: object) -> str:
    """What a TOML value is, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return type(value).__name__


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _collector(warnings: list[str], prefix: str) -> Callable[[str], None]:
    return lambda message: warnings.append(f"{prefix}: {message}")


def _target(responder: Responder) -> Target:
    return Target(key=f"responder:{responder.id}", name=responder.name, phone=responder.phone)


#: Where tomllib (Python 3.11 to 3.13) puts the position of a syntax error: at the end of its message.
_TOML_POSITION: Final = re.compile(
    r"^(?P<message>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$"
)


def _toml_problem(error: str, text: str, source: str) -> str:
    """tomllib's "Message (at line 4, column 9)" as "source line 4: message (column 9)"."""
    match = _TOML_POSITION.match(error)
    if match is None:
        return f"{source}: {error}"
    message = match["message"]
    message = message[:1].lower() + message[1:]
    if match["line"] is None:
        return f"{source} line {text.count(chr(10)) + 1}: {message} (at the end of the file)"
    return f"{source} line {match['line']}: {message} (column {match['column']})"


# --- writing ----------------------------------------------------------------------------------------------------


def _document(directory: Directory) -> dict[str, list[dict[str, object]]]:
    """The directory as the plain values TOML holds (what parsing reads back), wrong types left as they are."""

    def array(value: object) -> object:
        return list(value) if isinstance(value, tuple) else value

    def wearer(w: WearerInfo) -> dict[str, object]:
        table: dict[str, object] = {"device": w.device}
        if w.name is not None:
            table["name"] = w.name
        if w.notes:
            table["notes"] = w.notes
        if w.contacts:
            table["contacts"] = [
                {"name": c.name, "phone": c.phone, **({"relation": c.relation} if c.relation else {})}
                for c in w.contacts
            ]
        return table

    def policy(p: Policy) -> dict[str, object]:
        table: dict[str, object] = {"id": p.id, "site": p.site, "zone": p.zone}
        if p.supervisor is not None:
            table["supervisor"] = p.supervisor
        table["max_messages"] = p.max_messages
        table["steps"] = [
            {
                "channel": s.channel.value if isinstance(s.channel, Channel) else s.channel,
                "wait_s": s.wait_s,
                **({"targets": array(s.targets)} if s.targets else {}),
            }
            for s in p.steps
        ]
        return table

    return {
        "responders": [
            {
                "id": r.id,
                "name": r.name,
                "phone": r.phone,
                "sites": array(r.sites),
                "supervisor": r.supervisor,
                "active": r.active,
            }
            for r in directory.responders
        ],
        "groups": [{"id": g.id, "members": array(g.members)} for g in directory.groups],
        "wearers": [wearer(w) for w in directory.wearers],
        "policies": [policy(p) for p in directory.policies],
    }


def _write_tables(lines: list[str], name: str, items: Sequence[Mapping[str, object]]) -> None:
    for item in items:
        lines += ["", f"[[{name}]]"]
        nested: list[tuple[str, list[dict[str, object]]]] = []
        for key, value in item.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                nested.append((key, [v for v in value if isinstance(v, dict)]))
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in nested:
            _write_tables(lines, f"{name}.{key}", value)


_TOML_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            _TOML_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
