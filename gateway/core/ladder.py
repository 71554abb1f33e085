"""The escalation ladder of one incident (sans-I/O): who is notified how and when, until someone acknowledges.

This module holds the value types shared by the policy directory (which resolves a policy into a `Plan`) and
the state machine (which walks the plan). No I/O, no clock reads: every input carries `now` (timezone-aware),
and every function returns a `Transition`: the new `LadderState` and the `Action`s the runner carries out in
order (`Notify`: create one SMS or call; `Record`: append to the incident's log; `StateChanged`: mirror the
incident's `AlertState`). An input that does not apply returns the same state and no actions.

Rules:

- `start` (RAISED, before any step) -> NOTIFYING and enters step 0. The command center already heard of the
  incident over MQTT when it was raised.
- Entering a step records "step-started", sends one ALERT `Notify` per distinct target of an SMS or VOICE step
  and waits `wait_s` from `now`. An MQTT step notifies nobody: it only waits for the operator. A step that
  sends nothing (MQTT, no targets, cap reached) still waits its full `wait_s`: the command center may ack.
- `on_timer` at or after the deadline ends the step ("step-ended", why "timeout") and enters the next one;
  one step per call, and the next deadline counts from `now`, so a late timer never skips a step. After the
  last step the ladder is exhausted.
- `on_send_outcome` records "send-result" for every key of this incident, even late ones (the log shows every
  delivery status), but only the current step's keys count. A final outcome is never replaced. Once every
  ALERT of the current step has a final outcome (failed, no answer, busy, hung up, passed), the step ends at
  once ("step-ended", why "all-final"). A step that sent nothing never ends early.
- Exhausted: EXHAUSTED, "exhausted" with a one-line summary, and one BROADCAST SMS per `plan.broadcast` target.
- `on_acknowledge` (RAISED, NOTIFYING, EXHAUSTED) -> ACKNOWLEDGED and stops the ladder; the first ack wins.
- `on_cancel` (the wearer) -> CANCELLED: a CANCELLED SMS to everyone who got an ALERT or BROADCAST; after an
  ack, only to the phone target who acknowledged.
- `on_resolve` (any state but RESOLVED, CANCELLED included) -> RESOLVED with a `ResolveReason`.
- Cap: at most `plan.max_messages` SMS plus calls per incident, broadcast and stand-down notices included.
  Once reached, nothing more is sent and "cap-reached" is recorded once. Runaway protection wins over the
  stand-down notice: a withheld "cancelled" SMS costs a wasted trip, an unbounded loop costs everyone's phone.
- Every `AlertState` change satisfies `gateway.core.incident.can_transition`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from gateway.core.incident import AlertState, can_transition

#: Layout version of `LadderState.to_json`: a stored ladder of another layout is refused, not misread.
STATE_VERSION: Final = 1


class Channel(enum.StrEnum):
    """How a step reaches people."""

    #: The command center (already notified at once when the alert is raised): the step only waits for an ack.
    MQTT = "mqtt"
    SMS = "sms"
    VOICE = "voice"


@dataclass(frozen=True, slots=True)
class Target:
    """A person a step notifies, resolved from the directory.

    key: stable id within the incident ("responder:ana", "contact:dev-1:0", "supervisor:sam"); part of send keys.
    name: shown in the incident's timeline and spoken in calls.
    phone: E.164 number (+ and 8..15 digits).
    """

    key: str
    name: str
    phone: str


@dataclass(frozen=True, slots=True)
class Step:
    """One rung: notify `targets` over `channel`, then wait `wait_s` seconds for an acknowledgement."""

    channel: Channel
    targets: tuple[Target, ...]
    wait_s: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A policy resolved for one incident.

    policy: the policy's id (for the timeline).
    steps: at least one.
    broadcast: who gets the "nobody answered" SMS when the ladder is exhausted (every responder of the site
        and the supervisor); may be empty.
    supervisor: the supervisor's target, also in `broadcast` (named in the exhausted event), or None.
    max_messages: cap on SMS plus calls for the incident (runaway protection), at least 1.
    """

    policy: str
    steps: tuple[Step, ...]
    broadcast: tuple[Target, ...]
    supervisor: Target | None
    max_messages: int


class Purpose(enum.StrEnum):
    """Why a message is sent; the runner picks the text."""

    #: A ladder step's notification.
    ALERT = "alert"
    #: Exhausted: nobody answered.
    BROADCAST = "broadcast"
    #: The wearer cancelled: stand down.
    CANCELLED = "cancelled"


class SendOutcome(enum.StrEnum):
    """What Twilio status callbacks and DTMF tell about one `Notify`."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    #: Permanent send error (invalid number, undelivered SMS, failed call).
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    #: The call ended without an acknowledgement.
    COMPLETED = "completed"
    #: The callee pressed 2: pass to the next step.
    PASSED = "passed"

    @property
    def is_final(self) -> bool:
        """This message can no longer lead to an acknowledgement (a delivered SMS still can: it may be read)."""
        return self in _FINAL_OUTCOMES


_FINAL_OUTCOMES: Final = frozenset(
    {SendOutcome.FAILED, SendOutcome.NO_ANSWER, SendOutcome.BUSY, SendOutcome.COMPLETED, SendOutcome.PASSED}
)


class ResolveReason(enum.StrEnum):
    """Why an operator closed an incident."""

    FALSE_ALARM = "false-alarm"
    HANDLED = "handled"
    DISPATCHED = "dispatched"


class RecordType(enum.StrEnum):
    """The `Record.type`s this machine emits."""

    NOTIFYING = "notifying"
    STEP_STARTED = "step-started"
    STEP_ENDED = "step-ended"
    SEND_RESULT = "send-result"
    CAP_REACHED = "cap-reached"
    EXHAUSTED = "exhausted"
    ACKNOWLEDGED = "acknowledged"
    CANCELLED = "cancelled"
    RESOLVED = "resolved"


class StepEnd(enum.StrEnum):
    """Why a step ended (the "why" of a "step-ended" record)."""

    #: Its wait ran out.
    TIMEOUT = "timeout"
    #: Every message of the step got a final outcome.
    ALL_FINAL = "all-final"


@dataclass(frozen=True, slots=True)
class Notify:
    """Action: create one SMS or call.

    key: unique per incident and stable, so a runner that retries after a crash sends it at most once:
        "{incident}:{step}:{channel}:{target}" for ALERT, "{incident}:broadcast:{target}",
        "{incident}:cancelled:{target}".
    step: the step's index; -1 for broadcast and stand-down notices.
    channel: SMS or VOICE, never MQTT.
    """

    key: str
    step: int
    channel: Channel
    target: Target
    purpose: Purpose


@dataclass(frozen=True, slots=True)
class Record:
    """Action: append an event to the incident's log and MQTT event stream.

    type: a `RecordType` value.
    detail: JSON-serialisable only; names, never phone numbers (the event stream leaves the gateway).
    """

    type: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Action: the incident's `AlertState` changes (the runner mirrors it to the incident row)."""

    state: AlertState


Action = Notify | Record | StateChanged


@dataclass(frozen=True, slots=True)
class LadderState:
    """Where one incident's ladder stands. Persist it with `to_json`; restore it with `from_json`.

    state: RAISED before `start`.
    step: -1 before start; the current step's index; len(plan.steps) once exhausted.
    deadline: when `on_timer` should be called next (UTC), or None when no timer is pending.
    outcomes: latest outcome per ALERT key of the current step, in send order.
    notified: every target sent an ALERT or a BROADCAST so far (who must hear a cancel), by key, in order.
    messages: SMS plus calls created so far (every `Notify`).
    acknowledged_by: display name of who acknowledged; acknowledged_via: "mqtt", "sms", "voice" or "rest".
    acknowledged_target: the phone target who acknowledged (sms, voice), else None.
    capped: the per-incident message cap withheld a message.
    resolution: the `ResolveReason` value once resolved.
    """

    incident_id: str
    plan: Plan
    state: AlertState
    step: int
    deadline: datetime | None
    outcomes: tuple[tuple[str, SendOutcome], ...]
    notified: tuple[Target, ...]
    messages: int
    acknowledged_by: str | None
    acknowledged_via: str | None
    acknowledged_target: Target | None
    capped: bool
    resolution: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict, plan included; datetimes as ISO 8601 with offset."""
        return {
            "version": STATE_VERSION,
            "incident_id": self.incident_id,
            "plan": {
                "policy": self.plan.policy,
                "steps": [
                    {"channel": s.channel.value, "targets": [_target_json(t) for t in s.targets], "wait_s": s.wait_s}
                    for s in self.plan.steps
                ],
                "broadcast": [_target_json(t) for t in self.plan.broadcast],
                "supervisor": None if self.plan.supervisor is None else _target_json(self.plan.supervisor),
                "max_messages": self.plan.max_messages,
            },
            "state": self.state.value,
            "step": self.step,
            "deadline": None if self.deadline is None else self.deadline.isoformat(),
            "outcomes": [[key, outcome.value] for key, outcome in self.outcomes],
            "notified": [_target_json(t) for t in self.notified],
            "messages": self.messages,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_via": self.acknowledged_via,
            "acknowledged_target": None if self.acknowledged_target is None else _target_json(self.acknowledged_target),
            "capped": self.capped,
            "resolution": self.resolution,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LadderState:
        """The inverse of `to_json`. Raises ValueError for another layout version (and KeyError, TypeError or
        ValueError for data `to_json` did not write)."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"ladder state version {data.get('version')!r}, expected {STATE_VERSION}")
        plan = data["plan"]
        supervisor = plan["supervisor"]
        acknowledged_target = data["acknowledged_target"]
        deadline = data["deadline"]
        return cls(
            incident_id=str(data["incident_id"]),
            plan=Plan(
                policy=str(plan["policy"]),
                steps=tuple(
                    Step(
                        channel=Channel(s["channel"]),
                        targets=tuple(_target_from_json(t) for t in s["targets"]),
                        wait_s=float(s["wait_s"]),
                    )
                    for s in plan["steps"]
                ),
                broadcast=tuple(_target_from_json(t) for t in plan["broadcast"]),
                supervisor=None if supervisor is None else _target_from_json(supervisor),
                max_messages=int(plan["max_messages"]),
            ),
            state=AlertState(data["state"]),
            step=int(data["step"]),
            deadline=None if deadline is None else _aware(datetime.fromisoformat(deadline)),
            outcomes=tuple((str(key), SendOutcome(outcome)) for key, outcome in data["outcomes"]),
            notified=tuple(_target_from_json(t) for t in data["notified"]),
            messages=int(data["messages"]),
            acknowledged_by=data["acknowledged_by"],
            acknowledged_via=data["acknowledged_via"],
            acknowledged_target=None if acknowledged_target is None else _target_from_json(acknowledged_target),
            capped=bool(data["capped"]),
            resolution=data["resolution"],
        )


class Transition(NamedTuple):
    """What one input did."""

    #: The ladder after the input (the same object when the input did not apply).
    state: LadderState
    #: What the runner must do, in order; empty when the input did not apply.
    actions: tuple[Action, ...]


def new_ladder(incident_id: str, plan: Plan) -> LadderState:
    """A ladder in RAISED, not yet started. Raises ValueError for a plan the machine cannot walk."""
    if not incident_id:
        raise ValueError("incident_id must not be empty")
    if not plan.steps:
        raise ValueError("a plan needs at least one step")
    if plan.max_messages < 1:
        raise ValueError("max_messages must be at least 1")
    for step in plan.steps:
        if not (math.isfinite(step.wait_s) and step.wait_s >= 0):
            raise ValueError(f"wait_s must be finite and not negative, got {step.wait_s!r}")
    return LadderState(
        incident_id=incident_id,
        plan=plan,
        state=AlertState.RAISED,
        step=-1,
        deadline=None,
        outcomes=(),
        notified=(),
        messages=0,
        acknowledged_by=None,
        acknowledged_via=None,
        acknowledged_target=None,
        capped=False,
        resolution=None,
    )


def is_active(ladder: LadderState) -> bool:
    """The ladder is not started yet or is notifying: a start, timer or outcome can still move it."""
    return ladder.state in (AlertState.RAISED, AlertState.NOTIFYING)


def start(ladder: LadderState, now: datetime) -> Transition:
    """RAISED -> NOTIFYING, entering step 0."""
    _check_now(now)
    if ladder.state is not AlertState.RAISED or ladder.step != -1:
        return Transition(ladder, ())
    walk = _Walk(ladder, now)
    walk.change(AlertState.NOTIFYING)
    walk.record(RecordType.NOTIFYING, policy=ladder.plan.policy)
    _enter(walk, 0)
    return walk.result()


def on_timer(ladder: LadderState, now: datetime) -> Transition:
    """At or after the deadline, end the current step and enter the next (or exhaust the ladder)."""
    _check_now(now)
    if ladder.state is not AlertState.NOTIFYING or ladder.deadline is None or now < ladder.deadline:
        return Transition(ladder, ())
    walk = _Walk(ladder, now)
    walk.record(RecordType.STEP_ENDED, step=ladder.step, why=StepEnd.TIMEOUT.value)
    _enter(walk, ladder.step + 1)
    return walk.result()


def on_send_outcome(ladder: LadderState, key: str, outcome: SendOutcome, now: datetime) -> Transition:
    """A delivery status for one of this incident's messages; may end the current step early."""
    _check_now(now)
    if not key.startswith(ladder.incident_id + ":"):
        return Transition(ladder, ())  # another incident's message: not ours to log
    walk = _Walk(ladder, now)
    walk.record(RecordType.SEND_RESULT, key=key, outcome=outcome.value)
    current = dict(ladder.outcomes)
    previous = current.get(key)
    if previous is None or previous.is_final:
        return walk.result()  # an earlier step's key, or a late status after the final one
    current[key] = outcome
    walk.ladder = replace(walk.ladder, outcomes=tuple(current.items()))
    if ladder.state is AlertState.NOTIFYING and all(o.is_final for o in current.values()):
        walk.record(RecordType.STEP_ENDED, step=ladder.step, why=StepEnd.ALL_FINAL.value)
        _enter(walk, ladder.step + 1)
    return walk.result()


def on_acknowledge(
    ladder: LadderState, *, by: str, via: str, now: datetime, target: Target | None = None
) -> Transition:
    """Someone took the incident: ACKNOWLEDGED, the ladder stops. The first ack wins; later ones do nothing.

    target: the phone target who acknowledged by SMS or call; None for the command center or REST.
    """
    _check_now(now)
    if ladder.state not in (AlertState.RAISED, AlertState.NOTIFYING, AlertState.EXHAUSTED):
        return Transition(ladder, ())
    walk = _Walk(ladder, now)
    walk.change(AlertState.ACKNOWLEDGED)
    walk.record(RecordType.ACKNOWLEDGED, by=by, via=via)
    walk.ladder = replace(
        walk.ladder, deadline=None, acknowledged_by=by, acknowledged_via=via, acknowledged_target=target
    )
    return walk.result()


def on_cancel(ladder: LadderState, now: datetime) -> Transition:
    """The wearer cancelled: CANCELLED, and tell whoever may be on the way to stand down."""
    _check_now(now)
    if ladder.state in (AlertState.RAISED, AlertState.NOTIFYING, AlertState.EXHAUSTED):
        after_ack = False
        recipients = ladder.notified
    elif ladder.state is AlertState.ACKNOWLEDGED:
        # Once someone took it, only they are on the way.
        after_ack = True
        recipients = () if ladder.acknowledged_target is None else (ladder.acknowledged_target,)
    else:
        return Transition(ladder, ())
    walk = _Walk(ladder, now)
    walk.change(AlertState.CANCELLED)
    walk.record(RecordType.CANCELLED, by="wearer", after_ack=after_ack)
    walk.send(
        Notify(f"{ladder.incident_id}:cancelled:{t.key}", -1, Channel.SMS, t, Purpose.CANCELLED) for t in recipients
    )
    walk.ladder = replace(walk.ladder, deadline=None)
    return walk.result()


def on_resolve(ladder: LadderState, *, reason: str, by: str, now: datetime) -> Transition:
    """An operator closed the incident (a cancelled one too). Raises ValueError for an unknown reason."""
    _check_now(now)
    resolution = ResolveReason(reason).value  # the adapters validate first: a bad reason is a bug
    if ladder.state is AlertState.RESOLVED:
        return Transition(ladder, ())
    walk = _Walk(ladder, now)
    walk.change(AlertState.RESOLVED)
    walk.record(RecordType.RESOLVED, reason=resolution, by=by)
    walk.ladder = replace(walk.ladder, deadline=None, resolution=resolution)
    return walk.result()


class _Walk:
    """One transition being built: the evolving ladder and the actions emitted so far, in order."""

    __slots__ = ("actions", "ladder", "now")

    def __init__(self, ladder: LadderState, now: datetime) -> None:
        self.ladder = ladder
        self.now = now
        self.actions: list[Action] = []

    def result(self) -> Transition:
        return Transition(self.ladder, tuple(self.actions))

    def record(self, type_: RecordType, **detail: Any) -> None:
        self.actions.append(Record(type_.value, detail))

    def change(self, state: AlertState) -> None:
        assert can_transition(self.ladder.state, state), (self.ladder.state, state)
        self.ladder = replace(self.ladder, state=state)
        self.actions.append(StateChanged(state))

    def split(self, notices: Iterable[Notify]) -> tuple[list[Notify], list[Notify]]:
        """The distinct notices the cap lets through, and those it withholds."""
        unique = list({n.key: n for n in notices}.values())
        room = max(0, self.ladder.plan.max_messages - self.ladder.messages)
        return unique[:room], unique[room:]

    def send(self, notices: Iterable[Notify]) -> list[Notify]:
        """Emit the notices the cap allows (recording the first withheld one); returns those sent."""
        sent, withheld = self.split(notices)
        self.actions.extend(sent)
        self.ladder = replace(self.ladder, messages=self.ladder.messages + len(sent))
        if withheld and not self.ladder.capped:
            self.ladder = replace(self.ladder, capped=True)
            self.record(RecordType.CAP_REACHED, max_messages=self.ladder.plan.max_messages)
        return sent


def _enter(walk: _Walk, index: int) -> None:
    """Enter step `index`, or exhaust the ladder past the last step."""
    ladder = walk.ladder
    if index >= len(ladder.plan.steps):
        _exhaust(walk)
        return
    step = ladder.plan.steps[index]
    targets = _distinct(step.targets)
    notices = (
        []
        if step.channel is Channel.MQTT
        else [
            Notify(f"{ladder.incident_id}:{index}:{step.channel.value}:{t.key}", index, step.channel, t, Purpose.ALERT)
            for t in targets
        ]
    )
    sent, withheld = walk.split(notices)
    walk.record(
        RecordType.STEP_STARTED,
        step=index,
        channel=step.channel.value,
        targets=[t.name for t in targets],
        wait_s=step.wait_s,
        not_sent=[n.target.name for n in withheld],
    )
    walk.send(notices)
    walk.ladder = replace(
        walk.ladder,
        step=index,
        deadline=walk.now.astimezone(UTC) + timedelta(seconds=step.wait_s),
        outcomes=tuple((n.key, SendOutcome.QUEUED) for n in sent),
        notified=_distinct((*walk.ladder.notified, *(n.target for n in sent))),
    )


def _exhaust(walk: _Walk) -> None:
    """Nobody acknowledged any step: EXHAUSTED, and tell the broadcast list."""
    ladder = walk.ladder
    plan = ladder.plan
    walk.change(AlertState.EXHAUSTED)
    notices = [
        Notify(f"{ladder.incident_id}:broadcast:{t.key}", -1, Channel.SMS, t, Purpose.BROADCAST) for t in plan.broadcast
    ]
    sent, withheld = walk.split(notices)
    walk.record(
        RecordType.EXHAUSTED,
        broadcast_to=[n.target.name for n in sent],
        not_sent=[n.target.name for n in withheld],
        supervisor=None if plan.supervisor is None else plan.supervisor.name,
        text=_exhausted_text(len(plan.steps), sent, withheld, plan.supervisor),
    )
    walk.send(notices)
    walk.ladder = replace(
        walk.ladder,
        step=len(plan.steps),
        deadline=None,
        outcomes=(),
        notified=_distinct((*walk.ladder.notified, *(n.target for n in sent))),
    )


def _exhausted_text(steps: int, sent: Sequence[Notify], withheld: Sequence[Notify], supervisor: Target | None) -> str:
    text = f"Nobody acknowledged after {steps} step{'' if steps == 1 else 's'}: "
    if sent:
        text += f"broadcast to {len(sent)} {'person' if len(sent) == 1 else 'people'}"
        if supervisor is not None and any(n.target.key == supervisor.key for n in sent):
            text += f" including supervisor {supervisor.name}"
    elif withheld:
        text += "no broadcast sent"
    else:
        text += "nobody to broadcast to"
    if withheld:
        text += f"; message cap reached, {len(withheld)} not sent"
    return text


def _distinct(targets: Iterable[Target]) -> tuple[Target, ...]:
    """Targets deduplicated by key, first occurrence kept, in order."""
    first: dict[str, Target] = {}
    for target in targets:
        first.setdefault(target.key, target)
    return tuple(first.values())


def _check_now(now: datetime) -> None:
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")


def _aware(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} in ladder state")
    return value


def _target_json(target: Target) -> dict[str, str]:
    return {"key": target.key, "name": target.name, "phone": target.phone}


def _target_from_json(data: dict[str, Any]) -> Target:
    return Target(key=str(data["key"]), name=str(data["name"]), phone=str(data["phone"]))
