"""Escalation ladders in the database: each change is one transaction over the incident, its ladder, its event
log, the MQTT outbox and the notifications (SMS and calls) the change decided.

The incident row is locked first, then its ladder row: the order of the signal commit too (device, incident, ladder;
a wearer's cancel wakes the ladder), so two gateways or two inputs on one incident serialise and never deadlock, and
a crash leaves either the whole change or none of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from tortoise.exceptions import BaseORMException, IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from gateway.core.incident import AlertState
from gateway.core.ladder import (
    Channel,
    LadderState,
    Notify,
    Plan,
    Record,
    RecordType,
    StateChanged,
    Step,
    Transition,
    is_active,
    new_ladder,
)
from gateway.core.ladder import start as start_ladder
from gateway.errors import StoreUnavailable
from gateway.store.incidents import OutboxItem, _Batch
from gateway.store.models import Device, Incident, Ladder, Notification

log = structlog.get_logger(__name__)

#: The plan of an incident whose site has no escalation policy: the command center alone. Never started: it only
#: carries acknowledgements, cancels and resolutions through the same machine.
NO_POLICY: Final = Plan(policy="", steps=(Step(Channel.MQTT, (), 0.0),), broadcast=(), supervisor=None, max_messages=1)
#: Ladders whose timer is due, handled per sweep (the rest wait for the next sweep, a fraction of a second).
DUE_LIMIT: Final = 200
#: Columns of the incident a ladder change may write.
_INCIDENT_FIELDS: Final = [
    "state",
    "revision",
    "updated_at",
    "acknowledged_by",
    "acknowledged_at",
    "resolution",
    "resolved_by",
    "resolved_at",
]


@dataclass(frozen=True, slots=True)
class LadderContext:
    """What a decision sees: the ladder (started or not), the incident row and its device (both locked)."""

    ladder: LadderState
    started: bool
    incident: Incident
    device: Device


@dataclass(frozen=True, slots=True)
class Applied:
    """The committed result of one ladder change.

    before / after: the ladder's state around the change (compare to learn what an ack did).
    outbox: MQTT messages to publish (new incident state and events).
    notifications: keys of the SMS and calls to make (rows committed, born claimed by this gateway).
    incident: the incident row after the change.
    """

    before: LadderState
    after: LadderState
    outbox: tuple[OutboxItem, ...]
    notifications: tuple[str, ...]
    incident: Incident
    device: Device


#: Decides a change: the transition to apply, or None for no change. Called inside the transaction.
Decide = Callable[[LadderContext], Transition | None]
#: The plan for a new ladder (None: the site has no policy) and the text of each notification.
PlanFor = Callable[[Incident, Device], Plan | None]
Compose = Callable[[Notify, Incident, Device], str]


class LadderStore:
    """Transactions over ladders. Every method raises StoreUnavailable when the database fails."""

    def __init__(self, *, gateway_id: str, outbox_lease: timedelta, plan_for: PlanFor, compose: Compose) -> None:
        self._gateway_id = gateway_id
        self._lease = outbox_lease
        self._plan_for = plan_for
        self._compose = compose

    async def due(self, now: datetime, limit: int = DUE_LIMIT) -> list[str]:
        """Incident ids of active ladders whose timer is due (new ladders are due at once), oldest first."""
        try:
            ids = (
                await Ladder.filter(active=True, next_at__lte=now)
                .order_by("next_at")
                .limit(limit)
                .values_list("incident_id", flat=True)
            )
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return [str(i) for i in ids]

    async def apply(
        self, incident_id: str, now: datetime, decide: Decide, *, create: bool = True, start: bool = False
    ) -> Applied | None:
        """Lock the ladder and the incident, let `decide` pick a transition, and commit it with its effects.

        A ladder that has not started is started first when its incident is still new (raised), with the plan of
        its site; without a policy it stays idle and only records acknowledgements, cancels and resolutions.
        None: no such incident, or (create=False) no ladder. Only `start` (the engine's own sync) starts a ladder:
        an acknowledgement that beats the start finds the ladder unstarted and closes it without a message sent.
        Shielded: a caller cancelled meanwhile (shutdown) never cuts a transaction short.
        """
        return await asyncio.shield(self._apply(incident_id, now, decide, create, start))

    async def _apply(
        self, incident_id: str, now: datetime, decide: Decide, create: bool, start: bool
    ) -> Applied | None:
        try:
            async with in_transaction() as conn:
                incident = await Incident.filter(id=incident_id).select_for_update().using_db(conn).first()
                if incident is None:
                    return None
                row = await Ladder.filter(incident_id=incident_id).select_for_update().using_db(conn).first()
                device = await Device.get(device_id=incident.device_id, using_db=conn)
                if row is None and not create:
                    return None  # its site has no policy: nothing runs
                if row is None:  # no policy when it was raised, or from before ladders existed
                    row = Ladder(incident_id=incident_id, site=device.site, state=None, active=False, updated_at=now)
                    await row.save(using_db=conn, force_create=True)
                actions: list[Any] = []
                if row.state is not None:
                    ladder = LadderState.from_json(row.state)
                    started = True
                else:
                    ladder, actions = self._begin(incident, device, now, start=start and row.active)
                    started = False
                before = ladder
                transition = decide(LadderContext(ladder, started, incident, device))
                if transition is not None:
                    ladder = transition.state
                    actions.extend(transition.actions)
                rows = _Batch()
                keys = await self._carry_out(actions, ladder, incident, device, rows, now, conn)
                await incident.save(using_db=conn, update_fields=_INCIDENT_FIELDS)
                no_policy = ladder.plan.policy == NO_POLICY.policy
                # Not started yet (an input beat the engine's start): stays due, and is planned afresh when it starts.
                unstarted = not no_policy and ladder.state is AlertState.RAISED and ladder.step == -1
                row.state = None if unstarted else ladder.to_json()
                row.active = unstarted or (is_active(ladder) and not no_policy)
                row.next_at = now if unstarted else (ladder.deadline if row.active else None)
                row.updated_at = now
                await row.save(using_db=conn, update_fields=["state", "active", "next_at", "updated_at"])
                await rows.write(conn, self._gateway_id, now + self._lease)
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return Applied(before, ladder, tuple(i for _, i, _ in rows.outbox), keys, incident, device)

    def _begin(
        self, incident: Incident, device: Device, now: datetime, *, start: bool
    ) -> tuple[LadderState, list[Any]]:
        """The ladder of an incident seen for the first time: started when it is still raised and has a plan."""
        plan = self._plan_for(incident, device)
        state = AlertState(incident.state)
        if plan is None:
            log.warning("no escalation policy: command center only", alert_id=incident.id, site=device.site)
            return dataclasses.replace(new_ladder(incident.id, NO_POLICY), state=state), []
        ladder = new_ladder(incident.id, plan)
        if state is not AlertState.RAISED or not start:  # taken or cancelled before it started: nothing to run
            return dataclasses.replace(ladder, state=state), []
        transition = start_ladder(ladder, now)
        return transition.state, list(transition.actions)

    async def _carry_out(
        self,
        actions: Sequence[Any],
        ladder: LadderState,
        incident: Incident,
        device: Device,
        rows: _Batch,
        now: datetime,
        conn: Any,
    ) -> tuple[str, ...]:
        keys: list[str] = []
        for action in actions:
            if isinstance(action, StateChanged):
                self._set_state(incident, action.state, ladder, now)
            elif isinstance(action, Record):
                incident.revision += 1
                incident.updated_at = now
                rows.change(0, incident, device, str(action.type), now, **action.detail)
            elif isinstance(action, Notify):
                if await Notification.filter(key=action.key).using_db(conn).exists():
                    continue  # decided before (at-least-once callers): never a second message
                await Notification.create(
                    using_db=conn,
                    key=action.key,
                    incident_id=incident.id,
                    step=action.step,
                    channel=action.channel.value,
                    purpose=action.purpose.value,
                    target_key=action.target.key,
                    target_name=action.target.name,
                    phone=action.target.phone,
                    body=self._compose(action, incident, device),
                    status="pending",
                    next_attempt_at=now,
                    claimed_by=self._gateway_id,
                    claimed_until=now + self._lease,
                    created_at=now,
                    updated_at=now,
                )
                keys.append(action.key)
        return tuple(keys)

    @staticmethod
    def _set_state(incident: Incident, state: AlertState, ladder: LadderState, now: datetime) -> None:
        if incident.state == state.value:
            return
        incident.state = state.value
        incident.updated_at = now
        if state is AlertState.ACKNOWLEDGED:
            incident.acknowledged_by = ladder.acknowledged_by
            incident.acknowledged_at = now
        elif state is AlertState.RESOLVED:
            incident.resolution = ladder.resolution
            incident.resolved_at = now

    async def record_progress(
        self, incident_id: str, event_id: str, now: datetime, **detail: Any
    ) -> tuple[OutboxItem, ...]:
        """A send's progress (accepted, sent, delivered, ringing, answered) that cannot move the ladder: an event in
        the incident's log and on MQTT, without locking the incident or its ladder. A repeat is a no-op."""
        return await asyncio.shield(self._record_progress(incident_id, event_id, now, detail))

    async def _record_progress(
        self, incident_id: str, event_id: str, now: datetime, detail: dict[str, Any]
    ) -> tuple[OutboxItem, ...]:
        rows = _Batch()
        try:
            async with in_transaction() as conn:
                incident = await Incident.filter(id=incident_id).using_db(conn).first()
                if incident is None:
                    return ()
                rows.note(incident, RecordType.SEND_RESULT.value, now, event_id, **detail)
                await rows.write(conn, self._gateway_id, now + self._lease)
        except IntegrityError:
            return ()  # recorded before (a provider callback raced its own retry)
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return tuple(i for _, i, _ in rows.outbox)

    # --- notifications ------------------------------------------------------------------------------------------

    async def claim_notifications(self, now: datetime, *, include_own: bool, limit: int = DUE_LIMIT) -> list[str]:
        """Keys of sends due (pending, retry time reached) that nobody holds: expired leases, or at start-up this
        gateway's own (including `sending` rows, whose outcome at the provider is unknown)."""
        return await asyncio.shield(self._claim_notifications(now, include_own=include_own, limit=limit))

    async def _claim_notifications(self, now: datetime, *, include_own: bool, limit: int) -> list[str]:
        try:
            async with in_transaction() as conn:
                free = Q(claimed_until__lt=now) | Q(claimed_until__isnull=True)
                if include_own:
                    free |= Q(claimed_by=self._gateway_id)
                rows = (
                    await Notification.filter(free, Q(status="pending", next_attempt_at__lte=now) | Q(status="sending"))
                    .order_by("id")
                    .limit(limit)
                    .select_for_update(skip_locked=True)
                    .using_db(conn)
                )
                if rows:
                    await (
                        Notification.filter(id__in=[r.id for r in rows])
                        .using_db(conn)
                        .update(claimed_by=self._gateway_id, claimed_until=now + self._lease)
                    )
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        return [r.key for r in rows]

    async def notification(self, key: str) -> Notification | None:
        try:
            return await Notification.get_or_none(key=key)
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc

    async def update_notification(self, key: str, now: datetime, **changes: Any) -> None:
        """Record a send's progress (status, provider sid, attempts, retry time, error)."""
        try:
            await Notification.filter(key=key).update(updated_at=now, **changes)
        except (BaseORMException, OSError) as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc

    async def extend_leases(self, now: datetime, keys: Sequence[str]) -> None:
        """Keep the sends this gateway still works on (retrying through a provider outage) from being taken over."""
        if keys:
            await Notification.filter(key__in=list(keys), claimed_by=self._gateway_id).update(
                claimed_until=now + self._lease
            )
