"""Runs every incident's escalation ladder: starts it, keeps its timers, feeds it acknowledgements and outcomes.

Every input goes through `LadderStore.apply` (one transaction) and then its effects leave: MQTT messages to the
outbox publisher, SMS and calls to the notification sender. Timers live in the database (`ladders.next_at`): a
tick finds the due ones, so a restarted gateway (or another one, on a shared PostgreSQL) resumes every ladder at
the step it had reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self

import structlog
from tortoise.exceptions import BaseORMException

from gateway.core.incident import AlertState
from gateway.core.ladder import (
    Channel,
    LadderState,
    Notify,
    Plan,
    Record,
    RecordType,
    ResolveReason,
    SendOutcome,
    Target,
    Transition,
    on_acknowledge,
    on_cancel,
    on_resolve,
    on_send_outcome,
    on_timer,
)
from gateway.errors import StoreUnavailable
from gateway.escalation.directory import (
    ANY_SITE,
    EMPTY_DIRECTORY,
    Directory,
    DirectoryError,
    dump_directory,
    parse_directory,
)
from gateway.escalation.messages import AlertFacts, call_script, sms_text
from gateway.observability import Metrics
from gateway.protocol import GpsFix
from gateway.store.incidents import AckOutcome, AckResult, OutboxItem
from gateway.store.ladders import Applied, LadderContext, LadderStore
from gateway.store.models import Device, DirectoryVersion, Incident, Notification
from gateway.store.versions import latest_version, save_version

log = structlog.get_logger(__name__)

#: How often the directory (people and policies) is re-read: a `panic-gateway escalation load` reaches running
#: gateways within this many seconds.
DIRECTORY_REFRESH_S: Final = 5.0

#: Tells the wearable that an operator has it (BLE: at its next contact): (device_id, alert_id, counter).
OnAcknowledged = Callable[[str, str, int], Awaitable[None]]


class ResolveResult(enum.StrEnum):
    """What a resolution did."""

    RESOLVED = "resolved"
    ALREADY = "already-resolved"
    NOT_FOUND = "not-found"


@dataclass(frozen=True, slots=True)
class ResolveOutcome:
    result: ResolveResult
    state: AlertState | None = None


async def current_directory() -> tuple[int, Directory]:
    """The newest stored directory and its version (0 and the empty directory when none was loaded)."""
    version, document = await latest_version(DirectoryVersion)
    if document is None:
        return 0, EMPTY_DIRECTORY
    return version, parse_directory(document, source=f"version {version}")


async def save_directory(directory: Directory, *, source: str, loaded_by: str) -> int | None:
    """Store `directory` as the newest version unless it equals the current one; the new version, or None."""
    return await save_version(DirectoryVersion, dump_directory(directory), source=source, loaded_by=loaded_by)


class DirectoryCache:
    """The newest escalation directory in the database, re-read when a newer version is loaded."""

    def __init__(self) -> None:
        self.directory: Directory = EMPTY_DIRECTORY
        self.version = 0

    async def refresh(self) -> None:
        latest = await DirectoryVersion.all().order_by("-id").first()
        if latest is None or latest.id == self.version:
            return
        try:
            self.directory = parse_directory(latest.document, source=latest.source)
        except DirectoryError as exc:  # validated when loaded: only a hand-edited row gets here
            log.error("stored escalation directory is invalid: keeping the previous one", problems=exc.problems)
            return
        self.version = latest.id
        log.info("escalation directory loaded", version=latest.id, source=latest.source)

    def escalates(self, site: str) -> bool:
        """Whether incidents of `site` may get a ladder (a policy serves the site, one of its zones, or any site)."""
        return any(p.site in (site, ANY_SITE) for p in self.directory.policies)

    @property
    def has_policies(self) -> bool:
        return bool(self.directory.policies)

    def plan_for(self, incident: Incident, device: Device) -> Plan | None:
        directory = self.directory
        # The zone the wearer is in picks the policy when the press is already located; else the site's.
        policy = directory.policy_for(device.site, incident.place_zone or "")
        if policy is None:
            return None
        return directory.resolve(policy, site=device.site, device_id=device.device_id)

    def facts(self, incident: Incident, device: Device) -> AlertFacts:
        wearer = self.directory.wearer(device.device_id)
        gps = None
        if incident.lat is not None and incident.lon is not None:
            gps = GpsFix(incident.lat, incident.lon, incident.accuracy_m or 0, incident.fix_age_s or 0)
        return AlertFacts(
            alert_id=incident.id,
            short_code=incident.short_code,
            event=incident.event,
            wearer=(wearer.name if wearer is not None and wearer.name else device.wearer),
            site=device.site,
            # Indoors the fused place names the room; outdoors the coordinates and radius say more than a text.
            place=incident.place_text if incident.place_building or incident.place_room else None,
            gps=gps,
            raised_at=incident.received_at,
            notes=wearer.notes if wearer is not None else "",
        )


def compose(cache: DirectoryCache, time_zone: str) -> Callable[[Notify, Incident, Device], str]:
    """The text of each notification: the SMS, or the script a call speaks."""

    def text(notify: Notify, incident: Incident, device: Device) -> str:
        facts = cache.facts(incident, device)
        if notify.channel is Channel.VOICE:
            return call_script(facts, time_zone)
        return sms_text(notify.purpose, facts, time_zone)

    return text


class EscalationEngine:
    """An async context manager running the ladder tick; the entry points for every ladder input."""

    def __init__(
        self,
        store: LadderStore,
        publish: Callable[[Sequence[OutboxItem]], None],
        metrics: Metrics,
        *,
        directory: DirectoryCache,
        tick_s: float,
        on_acknowledged: OnAcknowledged | None = None,
    ) -> None:
        self._store = store
        self._publish = publish
        self._metrics = metrics
        self.directory = directory
        self._tick_s = tick_s
        self._on_acknowledged = on_acknowledged
        self._send: Callable[[Sequence[str]], None] = lambda keys: None
        self._syncing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    def attach_sender(self, send: Callable[[Sequence[str]], None]) -> None:
        """Where decided notifications go (the sender is built after the engine: it reports outcomes to it)."""
        self._send = send

    async def __aenter__(self) -> Self:
        with contextlib.suppress(BaseORMException, OSError):
            await self.directory.refresh()
        self._loops = [
            asyncio.create_task(self._tick_loop(), name="ladder-tick"),
            asyncio.create_task(self._directory_loop(), name="directory-refresh"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- inputs -------------------------------------------------------------------------------------------------

    def poke(self, incident_ids: Sequence[str]) -> None:
        """New or cancelled incidents: start or stop their ladders now (the tick would, a moment later)."""
        if not self.directory.has_policies:
            return  # no ladders at all: nothing to start or stop
        for incident_id in incident_ids:
            if incident_id in self._syncing:
                continue
            self._syncing.add(incident_id)
            task = asyncio.create_task(self._sync_now(incident_id), name=f"ladder-{incident_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def sync(self, incident_id: str) -> Applied | None:
        """Start a new ladder, follow a cancel made by the wearer, or move past a due deadline."""
        now = datetime.now(UTC)

        def decide(ctx: LadderContext) -> Transition | None:
            ladder, actions = _reconciled(ctx, now)
            timed = on_timer(ladder, now)
            return Transition(timed.state, (*actions, *timed.actions))

        return await self._apply(incident_id, now, decide, "sync", create=False, start=True)

    async def acknowledge(
        self, alert_id: str, *, by: str, via: str, note: str = "", target: Target | None = None
    ) -> AckOutcome:
        """First acknowledgement wins, whatever the channel; later ones change nothing."""
        now = datetime.now(UTC)
        seen: list[AlertState] = []

        def decide(ctx: LadderContext) -> Transition:
            ladder, actions = _reconciled(ctx, now)
            seen.append(ladder.state)
            acked = on_acknowledge(ladder, by=by, via=via, now=now, target=target)
            detail = {"operator": by, "note": note}
            extended = tuple(
                Record(a.type, {**a.detail, **detail}) if isinstance(a, Record) else a for a in acked.actions
            )
            return Transition(acked.state, (*actions, *extended))

        applied = await self._apply(alert_id, now, decide, "acknowledge")
        if applied is None:
            return AckOutcome(AckResult.NOT_FOUND)
        state = applied.after.state
        if seen and seen[0] is AlertState.ACKNOWLEDGED:
            return AckOutcome(AckResult.ALREADY, state)
        if state is not AlertState.ACKNOWLEDGED:
            return AckOutcome(AckResult.REFUSED, state)
        incident = applied.incident
        if self._on_acknowledged is not None:
            try:
                await self._on_acknowledged(incident.device_id, incident.id, incident.counter)
            except Exception:
                log.exception("could not tell the wearable", alert_id=incident.id)
        return AckOutcome(AckResult.ACKNOWLEDGED, state, applied.outbox, incident.device_id, incident.counter)

    async def resolve(self, alert_id: str, *, reason: ResolveReason, by: str, note: str = "") -> ResolveOutcome:
        """Close an incident with a reason (false alarm, handled, dispatched)."""
        now = datetime.now(UTC)

        def decide(ctx: LadderContext) -> Transition:
            ladder, actions = _reconciled(ctx, now)
            resolved = on_resolve(ladder, reason=reason.value, by=by, now=now)
            if resolved.actions:
                ctx.incident.resolved_by = by
            extended = tuple(
                Record(a.type, {**a.detail, "note": note}) if isinstance(a, Record) else a for a in resolved.actions
            )
            return Transition(resolved.state, (*actions, *extended))

        applied = await self._apply(alert_id, now, decide, "resolve")
        if applied is None:
            return ResolveOutcome(ResolveResult.NOT_FOUND)
        if applied.before.state is AlertState.RESOLVED:
            return ResolveOutcome(ResolveResult.ALREADY, AlertState.RESOLVED)
        return ResolveOutcome(ResolveResult.RESOLVED, applied.after.state)

    async def send_outcome(self, key: str, outcome: SendOutcome, detail: str | None = None) -> None:
        """A send's fate (accepted, delivery status, call result, digit 2): logged, and may end the step early."""
        row = await Notification.get_or_none(key=key)
        if row is None:
            return
        now = datetime.now(UTC)
        if not outcome.is_final:
            # Progress cannot end a step: logged and published without a ladder transaction (the cheap path
            # that most provider callbacks take).
            event_id = f"{row.incident_id}:n:{hashlib.sha256(f'{key}:{outcome.value}'.encode()).hexdigest()[:16]}"
            extra = {"key": key, "outcome": outcome.value, "channel": row.channel, "to": row.target_name}
            if detail:
                extra["detail"] = detail[:200]
            items = await self._store.record_progress(row.incident_id, event_id, now, **extra)
            self._metrics.ladder_changes.labels("progress").inc()
            if items:
                self._publish(items)
            return

        def decide(ctx: LadderContext) -> Transition:
            ladder, actions = _reconciled(ctx, now)
            result = on_send_outcome(ladder, key, outcome, now)
            extra = {"channel": row.channel, "to": row.target_name}
            if detail:
                extra["detail"] = detail[:200]
            extended = tuple(
                Record(a.type, {**a.detail, **extra})
                if isinstance(a, Record) and a.type == RecordType.SEND_RESULT
                else a
                for a in result.actions
            )
            return Transition(result.state, (*actions, *extended))

        await self._apply(row.incident_id, now, decide, "send-outcome")

    # --- machinery ----------------------------------------------------------------------------------------------

    async def _apply(
        self,
        incident_id: str,
        now: datetime,
        decide: Callable[[LadderContext], Transition | None],
        kind: str,
        *,
        create: bool = True,
        start: bool = False,
    ) -> Applied | None:
        applied = await self._store.apply(incident_id, now, decide, create=create, start=start)
        if applied is None:
            return None
        self._metrics.ladder_changes.labels(kind).inc()
        if applied.outbox:
            self._publish(applied.outbox)
        if applied.notifications:
            self._send(applied.notifications)
        return applied

    async def _sync_now(self, incident_id: str) -> None:
        try:
            await self.sync(incident_id)
        except StoreUnavailable as exc:  # the tick retries it: the ladder row is due
            log.warning("ladder not started yet: database unavailable", alert_id=incident_id, error=str(exc))
        finally:
            self._syncing.discard(incident_id)

    async def _tick_loop(self) -> None:
        while True:
            try:
                self.poke(await self._store.due(datetime.now(UTC)))
            except Exception as exc:
                log.warning("ladder tick failed", error=str(exc))
            await asyncio.sleep(self._tick_s)

    async def _directory_loop(self) -> None:
        while True:
            await asyncio.sleep(DIRECTORY_REFRESH_S)
            try:
                await self.directory.refresh()
            except (BaseORMException, OSError) as exc:
                log.warning("escalation directory not refreshed", error=str(exc))


def _reconciled(ctx: LadderContext, now: datetime) -> tuple[LadderState, tuple[Notify, ...]]:
    """The ladder caught up with its incident: a wearer's cancel is committed with the signal (the incident is
    already cancelled and logged); the ladder stops here and tells who it had notified."""
    ladder = ctx.ladder
    if AlertState(ctx.incident.state) is AlertState.CANCELLED and ladder.state not in (
        AlertState.CANCELLED,
        AlertState.RESOLVED,
    ):
        cancelled = on_cancel(ladder, now)
        return cancelled.state, tuple(a for a in cancelled.actions if isinstance(a, Notify))
    return ladder, ()
