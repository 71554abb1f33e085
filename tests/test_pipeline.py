"""The group commit: bounded queue, heartbeats shed before panics, batches committed together."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway.identity.pki import PkiLayout
from gateway.ingest.pipeline import Overloaded, SignalPipeline
from gateway.observability import Metrics
from gateway.protocol import EventType
from gateway.store.db import open_database
from gateway.store.incidents import IncidentStore, OutboxItem, Outcome
from tests.conftest import authenticated_frame, enroll


async def test_heartbeats_are_shed_first_and_panics_still_get_in(pki: PkiLayout, db_url: str) -> None:
    from gateway.identity.trust import load_device_trust
    from gateway.store.registry import DeviceDirectory

    async with open_database(db_url):
        w = await enroll(pki)
        creds = await DeviceDirectory(load_device_trust(pki)).get(w.device_id, datetime.now(UTC))
        assert creds is not None
        store = IncidentStore(gateway_id="t", replay_window=63, outbox_lease=timedelta(seconds=30))
        delivered: list[OutboxItem] = []
        pipeline = SignalPipeline(store, delivered.extend, Metrics(), max_batch=4, max_queue=8)
        # Not entered yet: nothing commits, so the queue fills deterministically.
        heartbeats = [
            asyncio.ensure_future(pipeline.submit(authenticated_frame(w, creds, EventType.HEARTBEAT))) for _ in range(4)
        ]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as shed:
            await pipeline.submit(authenticated_frame(w, creds, EventType.HEARTBEAT))
        assert shed.value.retry_after >= 5, "shed chatter is told to stay away for a while"
        panics = [
            asyncio.ensure_future(pipeline.submit(authenticated_frame(w, creds, EventType.PANIC))) for _ in range(4)
        ]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as shed:
            await pipeline.submit(authenticated_frame(w, creds, EventType.PANIC))
        assert shed.value.retry_after == 1
        async with pipeline:
            outcomes = await asyncio.gather(*heartbeats, *panics)
        assert [o.outcome for o in outcomes] == [Outcome.ACCEPTED] * 8
        assert all(o.incident_id is None for o in outcomes[:4])
        assert len({o.incident_id for o in outcomes[4:]}) == 4
        assert {i.kind for i in delivered} == {"state", "event"}
        assert len(delivered) == 8, "each panic: its retained state and its 'raised' event"


async def test_a_slow_queue_sheds_heartbeats_long_before_panics(pki: PkiLayout, db_url: str) -> None:
    """The decision follows how long the oldest signal has waited, not a model of the database."""
    from gateway.identity.trust import load_device_trust
    from gateway.ingest import pipeline as pipeline_module
    from gateway.store.registry import DeviceDirectory

    async with open_database(db_url):
        w = await enroll(pki)
        creds = await DeviceDirectory(load_device_trust(pki)).get(w.device_id, datetime.now(UTC))
        assert creds is not None
        store = IncidentStore(gateway_id="t", replay_window=63, outbox_lease=timedelta(seconds=30))
        pipeline = SignalPipeline(store, lambda items: None, Metrics(), max_batch=256, max_queue=1024)
        waiting = asyncio.ensure_future(pipeline.submit(authenticated_frame(w, creds, EventType.PANIC)))
        await asyncio.sleep(0)
        assert pipeline.shed(EventType.HEARTBEAT) is None
        # Nothing commits (the pipeline is not running): let the oldest signal age past the chatter limit.
        await asyncio.sleep(pipeline_module.CHATTER_MAX_WAIT_S * 1.5)
        assert pipeline.shed(EventType.HEARTBEAT) == pipeline_module.CHATTER_RETRY_AFTER_S
        assert pipeline.shed(EventType.PANIC) is None
        assert pipeline.shed(EventType.CANCEL) is None
        async with pipeline:
            assert (await waiting).outcome is Outcome.ACCEPTED
        assert pipeline.shed(EventType.HEARTBEAT) is None


async def test_a_conflicting_row_does_not_refuse_its_neighbours(pki: PkiLayout, db_url: str) -> None:
    """A device re-registered by hand (counter reset) collides with its old signals: only its signal fails."""
    from gateway.identity.trust import load_device_trust
    from gateway.store.models import Device
    from gateway.store.registry import DeviceDirectory

    async with open_database(db_url):
        a, b = await enroll(pki), await enroll(pki)
        directory = DeviceDirectory(load_device_trust(pki))
        now = datetime.now(UTC)
        ca, cb = await directory.get(a.device_id, now), await directory.get(b.device_id, now)
        assert ca is not None and cb is not None
        store = IncidentStore(gateway_id="t", replay_window=63, outbox_lease=timedelta(seconds=30))
        first = authenticated_frame(a, ca, EventType.PANIC)
        assert [o.outcome for o in await store.commit_signals([first])] == [Outcome.ACCEPTED]
        await Device.filter(device_id=a.device_id).update(counter_high=-1, counter_mask=0)
        a.counter = 0
        clash, fine = authenticated_frame(a, ca, EventType.TEST), authenticated_frame(b, cb, EventType.PANIC)
        outcomes = await store.commit_signals([clash, fine])
        assert outcomes[0].outcome is Outcome.REJECTED
        assert outcomes[1].outcome is Outcome.ACCEPTED and outcomes[1].incident_id


async def test_overload_is_refused_before_the_device_is_even_looked_up(pki: PkiLayout, db_url: str) -> None:
    """The shared ingest path (HTTPS and GATT frames) sheds after parsing only, with Retry-After on the value."""
    from gateway.identity.trust import load_device_trust
    from gateway.ingest import pipeline as pipeline_module
    from gateway.ingest.frames import accept_signed_frame
    from gateway.rejection import Rejection, RejectReason
    from gateway.store.registry import DeviceDirectory
    from tests.conftest import TEST_RULES

    async with open_database(db_url):
        w = await enroll(pki)
        directory = DeviceDirectory(load_device_trust(pki))
        creds = await directory.get(w.device_id, datetime.now(UTC))
        assert creds is not None
        store = IncidentStore(gateway_id="t", replay_window=63, outbox_lease=timedelta(seconds=30))
        metrics = Metrics()
        pipeline = SignalPipeline(store, lambda items: None, metrics, max_batch=256, max_queue=1024)
        waiting = asyncio.ensure_future(pipeline.submit(authenticated_frame(w, creds, EventType.PANIC)))
        await asyncio.sleep(pipeline_module.CHATTER_MAX_WAIT_S * 1.5)  # nothing commits: the queue ages

        class NoLookups(DeviceDirectory):
            async def get(self, device_id: str, now: datetime):  # type: ignore[no-untyped-def]
                raise AssertionError("an overloaded gateway must not look devices up")

        result = await accept_signed_frame(
            w.frame(EventType.HEARTBEAT),
            transport="https",
            directory=NoLookups(load_device_trust(pki)),
            pipeline=pipeline,
            rules=TEST_RULES,
            metrics=metrics,
            now=datetime.now(UTC),
        )
        assert isinstance(result, Rejection)
        assert result.reason is RejectReason.OVERLOADED
        assert result.retry_after == pipeline_module.CHATTER_RETRY_AFTER_S
        async with pipeline:
            assert (await waiting).outcome is Outcome.ACCEPTED
