"""The escalation ladder state machine: each rule by example, then whole runs of random inputs."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.incident import AlertState, can_transition
from gateway.core.ladder import (
    Action,
    Channel,
    LadderState,
    Notify,
    Plan,
    Purpose,
    Record,
    ResolveReason,
    SendOutcome,
    StateChanged,
    Step,
    Target,
    Transition,
    is_active,
    new_ladder,
    on_acknowledge,
    on_cancel,
    on_resolve,
    on_send_outcome,
    on_timer,
    start,
)

T0 = datetime(2025, 3, 1, 22, 0, tzinfo=UTC)
INCIDENT = "inc-1"

ANA = Target("responder:ana", "Ana Alves", "+15550000001")
BO = Target("responder:bo", "Bo Berg", "+15550000002")
CY = Target("contact:dev-1:0", "Cy Costa", "+15550000003")
SAM = Target("supervisor:sam", "Sam Super", "+15550000004")
DEE = Target("responder:dee", "Dee Diaz", "+15550000005")
POOL = (ANA, BO, CY, SAM, DEE)


def make_plan(
    *steps: Step,
    broadcast: tuple[Target, ...] = (ANA, BO, DEE, SAM),
    supervisor: Target | None = SAM,
    max_messages: int = 20,
) -> Plan:
    if not steps:
        steps = (Step(Channel.SMS, (ANA, BO), 60), Step(Channel.VOICE, (CY, SAM), 45))
    return Plan("night-shift", steps, broadcast, supervisor, max_messages)


def started(plan: Plan | None = None) -> LadderState:
    return start(new_ladder(INCIDENT, plan or make_plan()), T0).state


def tick(ladder: LadderState) -> Transition:
    """The timer firing exactly at the deadline."""
    assert ladder.deadline is not None
    return on_timer(ladder, ladder.deadline)


def notifies(actions: Sequence[Action]) -> list[Notify]:
    return [a for a in actions if isinstance(a, Notify)]


def records(actions: Sequence[Action], type_: str | None = None) -> list[Record]:
    return [a for a in actions if isinstance(a, Record) and (type_ is None or a.type == type_)]


def record_types(actions: Sequence[Action]) -> list[str]:
    return [r.type for r in records(actions)]


def noop(ladder: LadderState, transition: Transition) -> bool:
    return transition.state is ladder and transition.actions == ()


# --- value types ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", list(SendOutcome))
def test_only_outcomes_that_end_a_message_are_final(outcome: SendOutcome) -> None:
    final = {SendOutcome.FAILED, SendOutcome.NO_ANSWER, SendOutcome.BUSY, SendOutcome.COMPLETED, SendOutcome.PASSED}
    assert outcome.is_final is (outcome in final)


def test_wire_values_are_the_ones_the_adapters_use() -> None:
    assert SendOutcome.IN_PROGRESS.value == "in-progress"
    assert SendOutcome.NO_ANSWER.value == "no-answer"
    assert [r.value for r in ResolveReason] == ["false-alarm", "handled", "dispatched"]
    assert [p.value for p in Purpose] == ["alert", "broadcast", "cancelled"]


# --- construction and start ----------------------------------------------------------------------------------


def test_a_new_ladder_waits_to_be_started() -> None:
    ladder = new_ladder(INCIDENT, make_plan())
    assert ladder.state is AlertState.RAISED
    assert (ladder.step, ladder.deadline, ladder.messages, ladder.outcomes, ladder.notified) == (-1, None, 0, (), ())
    assert is_active(ladder)
    assert noop(ladder, on_timer(ladder, T0 + timedelta(days=1)))


@pytest.mark.parametrize(
    ("incident_id", "plan"),
    [
        ("", make_plan()),
        (INCIDENT, Plan("p", (), (), None, 5)),
        (INCIDENT, make_plan(max_messages=0)),
        (INCIDENT, make_plan(Step(Channel.SMS, (ANA,), -1))),
        (INCIDENT, make_plan(Step(Channel.SMS, (ANA,), float("nan")))),
        (INCIDENT, make_plan(Step(Channel.SMS, (ANA,), float("inf")))),
    ],
)
def test_a_plan_the_machine_cannot_walk_is_refused(incident_id: str, plan: Plan) -> None:
    with pytest.raises(ValueError, match=r"."):
        new_ladder(incident_id, plan)


def test_start_notifies_the_first_step() -> None:
    t = start(new_ladder(INCIDENT, make_plan()), T0)
    assert t.actions == (
        StateChanged(AlertState.NOTIFYING),
        Record("notifying", {"policy": "night-shift"}),
        Record(
            "step-started",
            {"step": 0, "channel": "sms", "targets": ["Ana Alves", "Bo Berg"], "wait_s": 60, "not_sent": []},
        ),
        Notify("inc-1:0:sms:responder:ana", 0, Channel.SMS, ANA, Purpose.ALERT),
        Notify("inc-1:0:sms:responder:bo", 0, Channel.SMS, BO, Purpose.ALERT),
    )
    s = t.state
    assert (s.state, s.step, s.deadline, s.messages) == (AlertState.NOTIFYING, 0, T0 + timedelta(seconds=60), 2)
    assert s.outcomes == (
        ("inc-1:0:sms:responder:ana", SendOutcome.QUEUED),
        ("inc-1:0:sms:responder:bo", SendOutcome.QUEUED),
    )
    assert s.notified == (ANA, BO)
    assert is_active(s)


def test_start_runs_once() -> None:
    ladder = started()
    assert noop(ladder, start(ladder, T0 + timedelta(seconds=1)))


def test_a_deadline_is_utc_whatever_the_offset_of_now() -> None:
    now = datetime(2025, 3, 1, 23, 0, tzinfo=timezone(timedelta(hours=1)))
    ladder = start(new_ladder(INCIDENT, make_plan()), now).state
    assert ladder.deadline == T0 + timedelta(seconds=60)
    assert ladder.deadline is not None and ladder.deadline.tzinfo is UTC


# --- walking the steps ---------------------------------------------------------------------------------------


def test_sms_then_voice_then_exhaustion() -> None:
    ladder = started()
    t = tick(ladder)
    assert t.actions == (
        Record("step-ended", {"step": 0, "why": "timeout"}),
        Record(
            "step-started",
            {"step": 1, "channel": "voice", "targets": ["Cy Costa", "Sam Super"], "wait_s": 45, "not_sent": []},
        ),
        Notify("inc-1:1:voice:contact:dev-1:0", 1, Channel.VOICE, CY, Purpose.ALERT),
        Notify("inc-1:1:voice:supervisor:sam", 1, Channel.VOICE, SAM, Purpose.ALERT),
    )
    ladder = t.state
    assert ladder.step == 1
    assert ladder.deadline == T0 + timedelta(seconds=105)
    assert [k for k, _ in ladder.outcomes] == ["inc-1:1:voice:contact:dev-1:0", "inc-1:1:voice:supervisor:sam"]

    t = tick(ladder)
    text = "Nobody acknowledged after 2 steps: broadcast to 4 people including supervisor Sam Super"
    assert t.actions == (
        Record("step-ended", {"step": 1, "why": "timeout"}),
        StateChanged(AlertState.EXHAUSTED),
        Record(
            "exhausted",
            {
                "broadcast_to": ["Ana Alves", "Bo Berg", "Dee Diaz", "Sam Super"],
                "not_sent": [],
                "supervisor": "Sam Super",
                "text": text,
            },
        ),
        *(Notify(f"inc-1:broadcast:{p.key}", -1, Channel.SMS, p, Purpose.BROADCAST) for p in (ANA, BO, DEE, SAM)),
    )
    ladder = t.state
    assert (ladder.state, ladder.step, ladder.deadline, ladder.outcomes) == (AlertState.EXHAUSTED, 2, None, ())
    assert ladder.messages == 8
    assert ladder.notified == (ANA, BO, CY, SAM, DEE)
    assert not is_active(ladder)
    assert noop(ladder, on_timer(ladder, T0 + timedelta(days=1)))


@pytest.mark.parametrize(
    ("steps", "broadcast", "supervisor", "text"),
    [
        (1, (ANA,), None, "Nobody acknowledged after 1 step: broadcast to 1 person"),
        (1, (ANA, SAM), SAM, "Nobody acknowledged after 1 step: broadcast to 2 people including supervisor Sam Super"),
        (2, (ANA, BO), SAM, "Nobody acknowledged after 2 steps: broadcast to 2 people"),
        (2, (), None, "Nobody acknowledged after 2 steps: nobody to broadcast to"),
    ],
)
def test_the_exhausted_record_says_what_happened_in_one_sentence(
    steps: int, broadcast: tuple[Target, ...], supervisor: Target | None, text: str
) -> None:
    plan = make_plan(*[Step(Channel.MQTT, (), 10)] * steps, broadcast=broadcast, supervisor=supervisor)
    ladder = started(plan)
    for _ in range(steps):
        t = tick(ladder)
        ladder = t.state
    assert ladder.state is AlertState.EXHAUSTED
    (exhausted,) = records(t.actions, "exhausted")
    assert exhausted.detail["text"] == text
    assert exhausted.detail["supervisor"] == (None if supervisor is None else supervisor.name)
    assert [n.target for n in notifies(t.actions)] == list(broadcast)


def test_a_broadcast_target_listed_twice_gets_one_sms() -> None:
    ladder = started(make_plan(Step(Channel.MQTT, (), 10), broadcast=(ANA, SAM, ANA)))
    t = tick(ladder)
    assert [n.key for n in notifies(t.actions)] == ["inc-1:broadcast:responder:ana", "inc-1:broadcast:supervisor:sam"]


def test_a_target_listed_twice_in_a_step_is_notified_once() -> None:
    t = start(new_ladder(INCIDENT, make_plan(Step(Channel.SMS, (ANA, BO, ANA), 60))), T0)
    assert [n.target for n in notifies(t.actions)] == [ANA, BO]
    assert records(t.actions, "step-started")[0].detail["targets"] == ["Ana Alves", "Bo Berg"]


def test_a_timer_before_the_deadline_does_nothing() -> None:
    ladder = started()
    assert noop(ladder, on_timer(ladder, T0 + timedelta(seconds=59.999)))


def test_a_late_timer_moves_one_step_and_counts_the_next_wait_from_now() -> None:
    ladder = started()
    late = T0 + timedelta(hours=1)
    ladder = on_timer(ladder, late).state
    assert ladder.step == 1, "a timer hours late still moves one step: none is skipped"
    assert ladder.deadline == late + timedelta(seconds=45)
    assert noop(ladder, on_timer(ladder, late + timedelta(seconds=44)))


def test_an_mqtt_step_notifies_nobody_and_waits_for_the_operator() -> None:
    plan = make_plan(Step(Channel.MQTT, (SAM,), 30), Step(Channel.SMS, (ANA,), 60))
    t = start(new_ladder(INCIDENT, plan), T0)
    assert notifies(t.actions) == []
    assert records(t.actions, "step-started")[0].detail == {
        "step": 0,
        "channel": "mqtt",
        "targets": ["Sam Super"],
        "wait_s": 30,
        "not_sent": [],
    }
    ladder = t.state
    assert (ladder.outcomes, ladder.messages, ladder.notified) == ((), 0, ())
    assert ladder.deadline == T0 + timedelta(seconds=30)
    assert noop(ladder, on_timer(ladder, T0 + timedelta(seconds=29)))
    ladder = tick(ladder).state
    assert ladder.step == 1
    assert [k for k, _ in ladder.outcomes] == ["inc-1:1:sms:responder:ana"]


def test_a_step_without_targets_still_waits() -> None:
    ladder = started(make_plan(Step(Channel.VOICE, (), 20), Step(Channel.SMS, (ANA,), 60)))
    assert (ladder.step, ladder.outcomes, ladder.deadline) == (0, (), T0 + timedelta(seconds=20))
    assert tick(ladder).state.step == 1


# --- send outcomes -------------------------------------------------------------------------------------------

VOICE_THEN_SMS = make_plan(Step(Channel.VOICE, (ANA, BO), 90), Step(Channel.SMS, (CY,), 60))
ANA_CALL = "inc-1:0:voice:responder:ana"
BO_CALL = "inc-1:0:voice:responder:bo"


@pytest.mark.parametrize(
    "pair",
    [
        (SendOutcome.NO_ANSWER, SendOutcome.BUSY),
        (SendOutcome.PASSED, SendOutcome.COMPLETED),
        (SendOutcome.FAILED, SendOutcome.NO_ANSWER),
    ],
)
def test_a_step_ends_early_once_every_call_ended_without_an_ack(pair: tuple[SendOutcome, SendOutcome]) -> None:
    ladder = started(VOICE_THEN_SMS)
    now = T0 + timedelta(seconds=20)
    t = on_send_outcome(ladder, ANA_CALL, pair[0], now)
    assert t.actions == (Record("send-result", {"key": ANA_CALL, "outcome": pair[0].value}),)
    assert t.state.step == 0
    t = on_send_outcome(t.state, BO_CALL, pair[1], now)
    assert record_types(t.actions) == ["send-result", "step-ended", "step-started"]
    assert records(t.actions, "step-ended")[0].detail == {"step": 0, "why": "all-final"}
    assert [n.key for n in notifies(t.actions)] == ["inc-1:1:sms:contact:dev-1:0"]
    assert t.state.step == 1
    assert t.state.deadline == now + timedelta(seconds=60)


def test_a_step_waits_while_one_call_is_still_ringing() -> None:
    ladder = started(VOICE_THEN_SMS)
    now = T0 + timedelta(seconds=5)
    ladder = on_send_outcome(ladder, ANA_CALL, SendOutcome.NO_ANSWER, now).state
    ladder = on_send_outcome(ladder, BO_CALL, SendOutcome.RINGING, now).state
    assert ladder.step == 0
    assert dict(ladder.outcomes) == {ANA_CALL: SendOutcome.NO_ANSWER, BO_CALL: SendOutcome.RINGING}
    assert ladder.deadline == T0 + timedelta(seconds=90)


def test_a_delivered_sms_does_not_end_the_step_it_may_still_be_read() -> None:
    ladder = started(make_plan(Step(Channel.SMS, (ANA,), 60), Step(Channel.SMS, (BO,), 60)))
    t = on_send_outcome(ladder, "inc-1:0:sms:responder:ana", SendOutcome.DELIVERED, T0)
    assert t.state.step == 0
    assert t.state.outcomes == (("inc-1:0:sms:responder:ana", SendOutcome.DELIVERED),)


def test_a_late_progress_status_never_replaces_a_final_one_but_is_logged() -> None:
    ladder = started(VOICE_THEN_SMS)
    ladder = on_send_outcome(ladder, ANA_CALL, SendOutcome.PASSED, T0).state
    for late in (SendOutcome.IN_PROGRESS, SendOutcome.COMPLETED, SendOutcome.PASSED):
        t = on_send_outcome(ladder, ANA_CALL, late, T0)
        assert t.actions == (Record("send-result", {"key": ANA_CALL, "outcome": late.value}),)
        assert t.state == ladder
    assert dict(ladder.outcomes)[ANA_CALL] is SendOutcome.PASSED


def test_progress_statuses_replace_each_other() -> None:
    ladder = started(VOICE_THEN_SMS)
    ladder = on_send_outcome(ladder, ANA_CALL, SendOutcome.RINGING, T0).state
    ladder = on_send_outcome(ladder, ANA_CALL, SendOutcome.IN_PROGRESS, T0).state
    assert dict(ladder.outcomes)[ANA_CALL] is SendOutcome.IN_PROGRESS


def test_an_earlier_steps_outcomes_are_logged_but_do_not_move_the_ladder() -> None:
    ladder = tick(started(VOICE_THEN_SMS)).state
    assert ladder.step == 1
    for key in (ANA_CALL, BO_CALL):
        t = on_send_outcome(ladder, key, SendOutcome.NO_ANSWER, T0 + timedelta(seconds=100))
        assert t.actions == (Record("send-result", {"key": key, "outcome": "no-answer"}),)
        assert t.state == ladder


def test_an_unknown_key_of_this_incident_is_logged_and_nothing_else() -> None:
    ladder = started(VOICE_THEN_SMS)
    t = on_send_outcome(ladder, "inc-1:7:voice:nobody", SendOutcome.FAILED, T0)
    assert t.actions == (Record("send-result", {"key": "inc-1:7:voice:nobody", "outcome": "failed"}),)
    assert t.state == ladder


@pytest.mark.parametrize("key", ["inc-10:0:voice:responder:ana", "inc-2:0:voice:responder:ana", "inc-1", ""])
def test_another_incidents_key_is_ignored(key: str) -> None:
    ladder = started(VOICE_THEN_SMS)
    assert noop(ladder, on_send_outcome(ladder, key, SendOutcome.FAILED, T0))


def test_an_mqtt_step_never_ends_early() -> None:
    ladder = started(make_plan(Step(Channel.MQTT, (), 30), Step(Channel.SMS, (ANA,), 60)))
    t = on_send_outcome(ladder, "inc-1:0:mqtt:x", SendOutcome.FAILED, T0)
    assert t.state == ladder
    assert record_types(t.actions) == ["send-result"]


def test_outcomes_after_the_ack_are_logged_and_move_nothing() -> None:
    ladder = started(VOICE_THEN_SMS)
    ladder = on_acknowledge(ladder, by="Ana Alves", via="voice", now=T0, target=ANA).state
    ladder = on_send_outcome(ladder, ANA_CALL, SendOutcome.COMPLETED, T0).state
    t = on_send_outcome(ladder, BO_CALL, SendOutcome.NO_ANSWER, T0)
    assert record_types(t.actions) == ["send-result"]
    assert (t.state.state, t.state.step) == (AlertState.ACKNOWLEDGED, 0)


# --- acknowledge ---------------------------------------------------------------------------------------------


def test_an_ack_stops_the_ladder() -> None:
    ladder = started()
    now = T0 + timedelta(seconds=12)
    t = on_acknowledge(ladder, by="Ana Alves", via="sms", now=now, target=ANA)
    assert t.actions == (
        StateChanged(AlertState.ACKNOWLEDGED),
        Record("acknowledged", {"by": "Ana Alves", "via": "sms"}),
    )
    acked = t.state
    assert (acked.state, acked.deadline) == (AlertState.ACKNOWLEDGED, None)
    assert (acked.acknowledged_by, acked.acknowledged_via, acked.acknowledged_target) == ("Ana Alves", "sms", ANA)
    assert not is_active(acked)
    assert noop(acked, on_timer(acked, T0 + timedelta(days=1)))
    assert noop(acked, start(acked, now))


def test_the_first_ack_wins() -> None:
    acked = on_acknowledge(started(), by="Command center", via="mqtt", now=T0).state
    assert acked.acknowledged_target is None
    assert noop(acked, on_acknowledge(acked, by="Bo Berg", via="sms", now=T0, target=BO))
    assert acked.acknowledged_by == "Command center"


@pytest.mark.parametrize("before", ["raised", "exhausted"])
def test_an_ack_before_the_start_or_after_exhaustion_counts(before: str) -> None:
    ladder = new_ladder(INCIDENT, make_plan(Step(Channel.MQTT, (), 10)))
    if before == "exhausted":
        ladder = tick(start(ladder, T0).state).state
    assert ladder.state is AlertState(before)
    t = on_acknowledge(ladder, by="Command center", via="rest", now=T0)
    assert t.state.state is AlertState.ACKNOWLEDGED
    assert notifies(t.actions) == []
    assert noop(t.state, start(t.state, T0))


@pytest.mark.parametrize("closing", ["cancel", "resolve"])
def test_an_ack_after_a_cancel_or_resolve_does_nothing(closing: str) -> None:
    ladder = started()
    if closing == "cancel":
        ladder = on_cancel(ladder, T0).state
    else:
        ladder = on_resolve(ladder, reason="handled", by="Ops", now=T0).state
    assert noop(ladder, on_acknowledge(ladder, by="Ana Alves", via="sms", now=T0, target=ANA))


# --- cancel --------------------------------------------------------------------------------------------------


def cancel_notice(target: Target) -> Notify:
    return Notify(f"inc-1:cancelled:{target.key}", -1, Channel.SMS, target, Purpose.CANCELLED)


def test_a_cancel_tells_everyone_already_notified_to_stand_down() -> None:
    ladder = tick(started()).state
    t = on_cancel(ladder, T0 + timedelta(seconds=70))
    assert t.actions == (
        StateChanged(AlertState.CANCELLED),
        Record("cancelled", {"by": "wearer", "after_ack": False}),
        *(cancel_notice(p) for p in (ANA, BO, CY, SAM)),
    )
    assert (t.state.state, t.state.deadline) == (AlertState.CANCELLED, None)
    assert noop(t.state, on_timer(t.state, T0 + timedelta(days=1)))
    assert noop(t.state, on_cancel(t.state, T0))


def test_a_cancel_after_exhaustion_also_tells_the_broadcast_list() -> None:
    ladder = tick(tick(started()).state).state
    t = on_cancel(ladder, T0)
    assert [n.target for n in notifies(t.actions)] == [ANA, BO, CY, SAM, DEE]


def test_a_cancel_before_the_start_tells_nobody() -> None:
    t = on_cancel(new_ladder(INCIDENT, make_plan()), T0)
    assert t.state.state is AlertState.CANCELLED
    assert notifies(t.actions) == []


def test_a_cancel_after_a_phone_ack_tells_only_the_responder() -> None:
    ladder = tick(started()).state
    ladder = on_acknowledge(ladder, by="Cy Costa", via="voice", now=T0, target=CY).state
    t = on_cancel(ladder, T0)
    assert t.actions == (
        StateChanged(AlertState.CANCELLED),
        Record("cancelled", {"by": "wearer", "after_ack": True}),
        cancel_notice(CY),
    )


def test_a_cancel_after_a_command_center_ack_sends_nothing() -> None:
    ladder = on_acknowledge(started(), by="Command center", via="mqtt", now=T0).state
    t = on_cancel(ladder, T0)
    assert t.state.state is AlertState.CANCELLED
    assert notifies(t.actions) == []
    assert records(t.actions, "cancelled")[0].detail["after_ack"] is True


def test_a_cancel_after_resolve_does_nothing() -> None:
    ladder = on_resolve(started(), reason="dispatched", by="Ops", now=T0).state
    assert noop(ladder, on_cancel(ladder, T0))


# --- resolve -------------------------------------------------------------------------------------------------


def ladder_in(state: AlertState) -> LadderState:
    ladder = new_ladder(INCIDENT, make_plan())
    if state is AlertState.RAISED:
        return ladder
    ladder = start(ladder, T0).state
    if state is AlertState.ACKNOWLEDGED:
        return on_acknowledge(ladder, by="Ana Alves", via="sms", now=T0, target=ANA).state
    if state is AlertState.CANCELLED:
        return on_cancel(ladder, T0).state
    if state is AlertState.EXHAUSTED:
        return tick(tick(ladder).state).state
    if state is AlertState.RESOLVED:
        return on_resolve(ladder, reason="handled", by="Ops", now=T0).state
    return ladder


@pytest.mark.parametrize("state", [s for s in AlertState if s is not AlertState.RESOLVED])
def test_resolve_closes_every_state_but_resolved(state: AlertState) -> None:
    ladder = ladder_in(state)
    assert ladder.state is state
    t = on_resolve(ladder, reason="false-alarm", by="Ops Olga", now=T0)
    assert t.actions == (
        StateChanged(AlertState.RESOLVED),
        Record("resolved", {"reason": "false-alarm", "by": "Ops Olga"}),
    )
    assert (t.state.state, t.state.deadline, t.state.resolution) == (AlertState.RESOLVED, None, "false-alarm")
    assert not is_active(t.state)


def test_resolve_twice_does_nothing() -> None:
    ladder = ladder_in(AlertState.RESOLVED)
    assert noop(ladder, on_resolve(ladder, reason="dispatched", by="Ops", now=T0))
    assert ladder.resolution == "handled"


@pytest.mark.parametrize("state", [AlertState.NOTIFYING, AlertState.RESOLVED])
def test_an_unknown_resolve_reason_is_a_programming_error(state: AlertState) -> None:
    with pytest.raises(ValueError, match="solved"):
        on_resolve(ladder_in(state), reason="solved", by="Ops", now=T0)


# --- the message cap -----------------------------------------------------------------------------------------


def test_the_cap_withholds_messages_and_is_recorded_once() -> None:
    plan = make_plan(
        Step(Channel.SMS, (ANA, BO), 60), Step(Channel.VOICE, (CY, SAM), 45), Step(Channel.SMS, (DEE,), 30)
    )
    plan = Plan(plan.policy, plan.steps, plan.broadcast, plan.supervisor, max_messages=3)
    ladder = started(plan)
    t = tick(ladder)
    assert record_types(t.actions) == ["step-ended", "step-started", "cap-reached"]
    assert records(t.actions, "step-started")[0].detail["not_sent"] == ["Sam Super"]
    assert records(t.actions, "cap-reached")[0].detail == {"max_messages": 3}
    assert [n.target for n in notifies(t.actions)] == [CY]
    ladder = t.state
    assert (ladder.messages, ladder.capped) == (3, True)
    assert ladder.notified == (ANA, BO, CY), "a withheld call is not a notification"

    # The one call that went out ends: the step ends early; the next step sends nothing yet waits its time.
    t = on_send_outcome(ladder, "inc-1:1:voice:contact:dev-1:0", SendOutcome.NO_ANSWER, T0)
    assert record_types(t.actions) == ["send-result", "step-ended", "step-started"]
    ladder = t.state
    assert (ladder.step, ladder.outcomes, ladder.deadline) == (2, (), T0 + timedelta(seconds=30))

    t = tick(ladder)
    assert notifies(t.actions) == []
    assert "cap-reached" not in record_types(t.actions)
    (exhausted,) = records(t.actions, "exhausted")
    assert exhausted.detail["broadcast_to"] == []
    assert exhausted.detail["not_sent"] == ["Ana Alves", "Bo Berg", "Dee Diaz", "Sam Super"]
    assert (
        exhausted.detail["text"]
        == "Nobody acknowledged after 3 steps: no broadcast sent; message cap reached, 4 not sent"
    )
    assert t.state.messages == 3


def test_the_cap_can_cut_a_broadcast_short() -> None:
    t = tick(started(make_plan(Step(Channel.SMS, (ANA,), 10), max_messages=3)))
    (exhausted,) = records(t.actions, "exhausted")
    assert exhausted.detail["broadcast_to"] == ["Ana Alves", "Bo Berg"]
    assert exhausted.detail["text"] == (
        "Nobody acknowledged after 1 step: broadcast to 2 people; message cap reached, 2 not sent"
    )
    assert t.state.messages == 3


def test_stand_down_notices_count_toward_the_cap_too() -> None:
    ladder = tick(started(make_plan(max_messages=5))).state
    assert ladder.messages == 4
    t = on_cancel(ladder, T0)
    assert notifies(t.actions) == [cancel_notice(ANA)]
    assert record_types(t.actions) == ["cancelled", "cap-reached"]
    assert t.state.messages == 5


# --- time and persistence ------------------------------------------------------------------------------------

NAIVE = datetime(2025, 3, 1, 22, 0)  # no tzinfo: the point of the test


@pytest.mark.parametrize(
    "call",
    [
        lambda ladder: start(ladder, NAIVE),
        lambda ladder: on_timer(ladder, NAIVE),
        lambda ladder: on_send_outcome(ladder, "inc-1:0:sms:x", SendOutcome.SENT, NAIVE),
        lambda ladder: on_acknowledge(ladder, by="A", via="rest", now=NAIVE),
        lambda ladder: on_cancel(ladder, NAIVE),
        lambda ladder: on_resolve(ladder, reason="handled", by="A", now=NAIVE),
    ],
)
def test_a_naive_now_is_refused(call: Callable[[LadderState], Transition]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(new_ladder(INCIDENT, make_plan()))


def test_the_json_form_is_plain_json_with_offsets() -> None:
    ladder = started()
    data = json.loads(json.dumps(ladder.to_json()))
    assert data["deadline"] == "2025-03-01T22:01:00+00:00"
    assert data["state"] == "notifying"
    assert data["plan"]["steps"][1]["channel"] == "voice"
    assert LadderState.from_json(data) == ladder


def test_a_stored_state_of_another_layout_is_refused() -> None:
    data = started().to_json()
    data["version"] = 99
    with pytest.raises(ValueError, match="version"):
        LadderState.from_json(data)


# --- properties over whole runs ------------------------------------------------------------------------------

targets_st = st.lists(st.sampled_from(POOL), max_size=3).map(tuple)
plans_st = st.builds(
    Plan,
    policy=st.sampled_from(["default", "night-shift"]),
    steps=st.lists(
        st.builds(
            Step,
            channel=st.sampled_from(Channel),
            targets=targets_st,
            wait_s=st.sampled_from([0.0, 0.5, 30.0, 60.0]),
        ),
        min_size=1,
        max_size=4,
    ).map(tuple),
    broadcast=st.lists(st.sampled_from(POOL), max_size=5).map(tuple),
    supervisor=st.sampled_from([None, SAM]),
    max_messages=st.integers(min_value=1, max_value=12),
)
outcome_op = st.tuples(st.just("outcome"), st.booleans(), st.integers(0, 30), st.sampled_from(SendOutcome))
OPS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "tick": st.tuples(st.just("tick")),
    "outcome": outcome_op,
    "timer": st.tuples(st.just("timer"), st.floats(min_value=0, max_value=120)),
    "start": st.tuples(st.just("start")),
    "foreign": st.tuples(st.just("foreign"), st.sampled_from(SendOutcome)),
    "ack": st.tuples(st.just("ack"), st.sampled_from(["mqtt", "sms", "voice", "rest"])),
    "cancel": st.tuples(st.just("cancel")),
    "resolve": st.tuples(st.just("resolve"), st.sampled_from(ResolveReason)),
}
# Ticks and outcomes are common, closing inputs rare: most runs then walk several steps, many to exhaustion.
KINDS = ["tick"] * 6 + ["outcome"] * 10 + ["timer"] * 3 + ["start", "foreign", "ack", "cancel", "resolve"]
ops_st = st.lists(st.sampled_from(KINDS).flatmap(OPS.__getitem__), min_size=6, max_size=40)

Run = list[tuple[str, LadderState, Transition]]


def drive(plan: Plan, ops: Sequence[tuple[Any, ...]], *, start_first: bool = True) -> Run:
    """Apply the inputs in order with a clock that never goes back; returns (input, before, transition)."""
    ladder = new_ladder(INCIDENT, plan)
    now = T0
    issued: list[str] = []
    run: Run = []
    for op in [("start",), *ops] if start_first else ops:
        kind = op[0]
        if kind == "start":
            t = start(ladder, now)
        elif kind == "tick":
            now = max(now, ladder.deadline or now)
            t = on_timer(ladder, now)
        elif kind == "timer":
            now += timedelta(seconds=op[1])
            t = on_timer(ladder, now)
        elif kind == "outcome":
            _, current, index, outcome = op
            keys = [k for k, _ in ladder.outcomes] if current and ladder.outcomes else issued
            t = on_send_outcome(ladder, keys[index % len(keys)] if keys else "inc-1:0:sms:x", outcome, now)
        elif kind == "foreign":
            t = on_send_outcome(ladder, "inc-2:0:sms:responder:ana", op[1], now)
        elif kind == "ack":
            phone = op[1] in ("sms", "voice")
            t = on_acknowledge(ladder, by="Ana Alves", via=op[1], now=now, target=ANA if phone else None)
        elif kind == "cancel":
            t = on_cancel(ladder, now)
        else:
            t = on_resolve(ladder, reason=op[1].value, by="Ops", now=now)
        issued += [n.key for n in notifies(t.actions)]
        run.append((kind, ladder, t))
        ladder = t.state
    return run


@settings(max_examples=300)
@given(plan=plans_st, ops=ops_st, start_first=st.booleans())
def test_random_runs_keep_every_invariant(plan: Plan, ops: list[tuple[Any, ...]], start_first: bool) -> None:
    run = drive(plan, ops, start_first=start_first)
    keys: list[str] = []
    stopped = False  # an ack, cancel or resolve happened
    started_steps: list[int] = []
    for kind, before, (after, actions) in run:
        sent = notifies(actions)
        keys += [n.key for n in sent]
        # (1) once stopped, the only messages are the stand-down notices of the cancel itself.
        for n in sent:
            assert n.channel in (Channel.SMS, Channel.VOICE)
            if n.purpose is Purpose.CANCELLED:
                assert kind == "cancel"
                assert n.target in before.notified or n.target == before.acknowledged_target
            else:
                assert not stopped, (kind, n)
                assert before.state in (AlertState.RAISED, AlertState.NOTIFYING)
        stopped = stopped or after.state in (AlertState.ACKNOWLEDGED, AlertState.CANCELLED, AlertState.RESOLVED)
        # (3) the cap holds, and every message is counted.
        assert after.messages == len(keys) <= plan.max_messages
        # (4) state changes are allowed ones, announced exactly once.
        changes = [a.state for a in actions if isinstance(a, StateChanged)]
        if after.state is before.state:
            assert changes == []
        else:
            assert changes == [after.state]
            assert can_transition(before.state, after.state)
        # A pending timer exactly while notifying; an input that does not apply changes nothing.
        assert (after.deadline is not None) == (after.state is AlertState.NOTIFYING)
        if not actions:
            assert after is before
        # Records are JSON and never carry a phone number (the event stream leaves the gateway).
        for r in records(actions):
            assert "+1555" not in json.dumps(r.detail)
        started_steps += [r.detail["step"] for r in records(actions, "step-started")]
        # (5) the persisted form restores the exact state.
        assert LadderState.from_json(json.loads(json.dumps(after.to_json()))) == after
    # (2) no message is ever created twice.
    assert len(keys) == len(set(keys))
    assert started_steps == list(range(len(started_steps))), "steps are entered in order, none skipped"
    assert sum(r.type == "cap-reached" for _, _, t in run for r in records(t.actions)) <= 1


@settings(max_examples=200)
@given(
    plan=plans_st,
    lateness=st.lists(st.floats(min_value=0, max_value=3600), min_size=4, max_size=4),
    ops=st.lists(outcome_op, max_size=12),
)
def test_without_an_ack_enough_timers_always_exhaust_the_ladder_visiting_every_step(
    plan: Plan, lateness: list[float], ops: list[tuple[Any, ...]]
) -> None:
    # (6) timers late by any amount, and failing calls ending steps early, never skip a step.
    run = drive(plan, ops)
    ladder = run[-1][2].state
    actions = [a for _, _, t in run for a in t.actions]
    for late in lateness:
        if ladder.deadline is None:
            break
        t = on_timer(ladder, ladder.deadline + timedelta(seconds=late))
        actions += t.actions
        ladder = t.state
    assert ladder.state is AlertState.EXHAUSTED
    assert ladder.step == len(plan.steps)
    steps = range(len(plan.steps))
    assert [r.detail["step"] for r in records(actions, "step-started")] == list(steps)
    assert [r.detail["step"] for r in records(actions, "step-ended")] == list(steps)
    assert record_types(actions).count("exhausted") == 1
    keys = [n.key for n in notifies(actions)]
    assert len(keys) == len(set(keys)) == ladder.messages <= plan.max_messages


def test_a_single_timer_per_step_exhausts_the_ladder() -> None:
    plan = make_plan(*[Step(Channel.SMS, (ANA,), 1)] * 4)
    ladder = started(plan)
    for _ in plan.steps:
        ladder = tick(ladder).state
    assert ladder.state is AlertState.EXHAUSTED


deadlines_st = st.one_of(
    st.none(),
    st.datetimes(  # naive bounds: the drawn timezone makes the values aware
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]),
    ),
)
texts_st = st.text(max_size=12)
any_target_st = st.builds(Target, key=texts_st, name=texts_st, phone=texts_st)


@settings(max_examples=150)
@given(
    ladder=st.builds(
        LadderState,
        incident_id=texts_st,
        plan=st.builds(
            Plan,
            policy=texts_st,
            steps=st.lists(
                st.builds(
                    Step,
                    channel=st.sampled_from(Channel),
                    targets=st.lists(any_target_st, max_size=2).map(tuple),
                    wait_s=st.floats(min_value=0, max_value=1e7, allow_nan=False),
                ),
                max_size=3,
            ).map(tuple),
            broadcast=st.lists(any_target_st, max_size=2).map(tuple),
            supervisor=st.none() | any_target_st,
            max_messages=st.integers(min_value=0, max_value=1000),
        ),
        state=st.sampled_from(AlertState),
        step=st.integers(min_value=-1, max_value=5),
        deadline=deadlines_st,
        outcomes=st.lists(st.tuples(texts_st, st.sampled_from(SendOutcome)), max_size=3).map(tuple),
        notified=st.lists(any_target_st, max_size=3).map(tuple),
        messages=st.integers(min_value=0, max_value=1000),
        acknowledged_by=st.none() | texts_st,
        acknowledged_via=st.none() | st.sampled_from(["mqtt", "sms", "voice", "rest"]),
        acknowledged_target=st.none() | any_target_st,
        capped=st.booleans(),
        resolution=st.none() | st.sampled_from([r.value for r in ResolveReason]),
    )
)
def test_any_state_round_trips_through_json_exactly(ladder: LadderState) -> None:
    restored = LadderState.from_json(json.loads(json.dumps(ladder.to_json())))
    assert restored == ladder
    if ladder.deadline is not None:
        assert restored.deadline is not None
        assert restored.deadline.utcoffset() == ladder.deadline.utcoffset()
