"""Ladders in the database: who starts them, and what an input that beats the start does (nothing sent)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.core.incident import AlertState
from gateway.core.ladder import Channel, Plan, Step, Target, Transition, on_acknowledge, on_timer
from gateway.identity.pki import PkiLayout
from gateway.identity.trust import load_device_trust
from gateway.protocol import EventType
from gateway.store.db import open_database
from gateway.store.incidents import IncidentStore
from gateway.store.ladders import LadderContext, LadderStore
from gateway.store.models import Incident, Ladder, Notification
from gateway.store.registry import DeviceDirectory
from tests.conftest import authenticated_frame, enroll

PLAN = Plan(
    policy="north",
    steps=(Step(Channel.SMS, (Target("responder:ana", "Ana", "+15551230001"),), 30.0),),
    broadcast=(),
    supervisor=None,
    max_messages=5,
)
LEASE = timedelta(seconds=30)


def ladder_store(plan: Plan | None) -> LadderStore:
    return LadderStore(
        gateway_id="gw-1", outbox_lease=LEASE, plan_for=lambda incident, device: plan, compose=lambda n, i, d: "text"
    )


async def raise_one(pki: PkiLayout, *, escalates: bool) -> str:
    w = await enroll(pki)
    creds = await DeviceDirectory(load_device_trust(pki)).get(w.device_id, datetime.now(UTC))
    assert creds is not None
    store = IncidentStore(gateway_id="gw-1", replay_window=63, outbox_lease=LEASE, escalates=lambda site: escalates)
    (outcome,) = await store.commit_signals([authenticated_frame(w, creds, EventType.PANIC)])
    assert outcome.incident_id is not None
    return outcome.incident_id


def acknowledge(ctx: LadderContext) -> Transition:
    return on_acknowledge(ctx.ladder, by="op-1", via="mqtt", now=datetime.now(UTC))


def tick(ctx: LadderContext) -> Transition:
    return on_timer(ctx.ladder, datetime.now(UTC))


async def test_an_acknowledgement_that_beats_the_start_sends_nothing_and_the_ladder_never_starts(
    pki: PkiLayout, db_url: str
) -> None:
    async with open_database(db_url):
        alert_id = await raise_one(pki, escalates=True)
        assert (await Ladder.get(incident_id=alert_id)).active  # due at once: the engine starts it
        store = ladder_store(PLAN)
        applied = await store.apply(alert_id, datetime.now(UTC), acknowledge)
        assert applied is not None and applied.after.state is AlertState.ACKNOWLEDGED
        assert applied.notifications == ()
        started = await store.apply(alert_id, datetime.now(UTC), tick, create=False, start=True)
        assert started is not None and started.notifications == ()
        assert await Notification.filter(incident_id=alert_id).count() == 0
        ladder = await Ladder.get(incident_id=alert_id)
        assert not ladder.active and ladder.next_at is None
        assert (await Incident.get(id=alert_id)).state == "acknowledged"


async def test_only_the_engine_sync_starts_a_ladder_and_a_site_without_policy_gets_none(
    pki: PkiLayout, db_url: str
) -> None:
    async with open_database(db_url):
        alert_id = await raise_one(pki, escalates=True)
        store = ladder_store(PLAN)
        started = await store.apply(alert_id, datetime.now(UTC), tick, create=False, start=True)
        assert started is not None and len(started.notifications) == 1
        assert started.after.state is AlertState.NOTIFYING

        quiet = await raise_one(pki, escalates=False)
        assert not await Ladder.exists(incident_id=quiet)
        assert await ladder_store(None).apply(quiet, datetime.now(UTC), tick, create=False, start=True) is None
        acked = await ladder_store(None).apply(quiet, datetime.now(UTC), acknowledge)
        assert acked is not None and acked.after.state is AlertState.ACKNOWLEDGED
        idle = await Ladder.get(incident_id=quiet)
        assert not idle.active and idle.next_at is None
