"""Composition root: builds the gateway from settings and runs it until cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web
from tortoise.exceptions import BaseORMException

from gateway.api import ApiDeps, IncidentApi
from gateway.commandcenter import CommandCenterLink, EmbeddedBroker, payloads, topics
from gateway.commandcenter.payloads import Acknowledgement
from gateway.config import GatewaySettings
from gateway.console.access import Access
from gateway.console.feed import IncidentFeed, StreamApi
from gateway.console.web import ConsoleDeps, ConsoleWeb
from gateway.core.authenticate import AuthRules
from gateway.errors import ConfigError, StoreUnavailable
from gateway.escalation.carrier import TwilioCarrier
from gateway.escalation.directory import DirectoryError, load_directory
from gateway.escalation.engine import DirectoryCache, EscalationEngine, compose, save_directory
from gateway.escalation.outbox import OutboxPublisher
from gateway.escalation.sender import NotificationSender
from gateway.escalation.webhooks import TwilioWebhooks, WebhookDeps
from gateway.fleet_api import FleetApi, FleetDeps
from gateway.identity.pki import PkiLayout, load_private_key
from gateway.identity.trust import load_device_trust
from gateway.ingest.ble.adverts import AdvertIngest
from gateway.ingest.ble.bumble_backend import BumbleRadio
from gateway.ingest.ble.contacts import GattContacts
from gateway.ingest.ble.receivers import BleReceivers
from gateway.ingest.http import HttpIngest, IngestDeps, server_ssl_context
from gateway.ingest.pipeline import SignalPipeline
from gateway.location.engine import LocationEngine, SiteMapCache
from gateway.location.model import Place
from gateway.location.sites import SiteMapError, parse_site_map
from gateway.observability import Metrics
from gateway.store.db import open_database
from gateway.store.incidents import IncidentStore, OutboxItem
from gateway.store.ladders import LadderStore
from gateway.store.locations import save_site_map_document
from gateway.store.models import Device
from gateway.store.registry import DeviceDirectory, DeviceRegistry

log = structlog.get_logger(__name__)

#: An outbox row claimed by a gateway that stops renewing it is taken over after this long.
OUTBOX_LEASE: Final = timedelta(seconds=30)
#: Revocations made with the CLI reach the running gateway's cache within this many seconds
#: (the commit transaction re-checks the database, so this only bounds wasted work).
DIRECTORY_REFRESH_S: Final = 2.0
#: Commit queue bound in batches: beyond it devices are told to come back (bounded latency, not a growing queue).
QUEUE_BATCHES: Final = 4

EMBEDDED: Final = "embedded"
#: Topic strings are validated once per alert and kind; an alert's messages reuse them.
TOPIC_CACHE: Final = 65_536


@dataclass(frozen=True, slots=True)
class RunningGateway:
    """Handles of a running gateway (for the demo, tests and the benchmark)."""

    settings: GatewaySettings
    http_url: str
    mqtt_host: str
    mqtt_port: int
    store: IncidentStore
    publisher: OutboxPublisher
    link: CommandCenterLink
    metrics: Metrics
    #: The BLE receivers, None when none are configured.
    receivers: BleReceivers | None = None
    #: Escalation ladders (SMS and calls).
    engine: EscalationEngine | None = None


@asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    """Start every component in dependency order; stop them in reverse on exit."""
    async with AsyncExitStack() as stack:
        mqtt = settings.mqtt
        if mqtt.host == EMBEDDED:
            broker = await stack.enter_async_context(EmbeddedBroker(port=mqtt.port))
            mqtt = broker.settings_for(mqtt)
        metrics = Metrics()
        await stack.enter_async_context(open_database(settings.database.url.get_secret_value()))
        trust = load_device_trust(settings.pki)
        directory = DeviceDirectory(trust)
        directory_cache = DirectoryCache()
        site_map_cache = SiteMapCache(settings.ble.receivers)
        store = IncidentStore(
            gateway_id=settings.gateway_id,
            replay_window=settings.auth.replay_window,
            outbox_lease=OUTBOX_LEASE,
            escalates=directory_cache.escalates,
            zone_of=site_map_cache.zone_of,
        )
        prefix = mqtt.topic_prefix
        publisher_ref: list[OutboxPublisher] = []
        receivers_ref: list[BleReceivers] = []
        contacts_ref: list[GattContacts] = []
        engine_ref: list[EscalationEngine] = []

        async def on_ack(ack: Acknowledgement) -> None:
            if not engine_ref:
                return
            try:
                outcome = await engine_ref[0].acknowledge(
                    ack.alert_id, by=ack.operator, via="mqtt", note=ack.note or ""
                )
            except StoreUnavailable as exc:
                metrics.acks.labels("mqtt", "store-unavailable").inc()
                log.error("acknowledgement not stored", alert_id=ack.alert_id, error=str(exc))
                return
            metrics.acks.labels("mqtt", outcome.result.value).inc()
            log.info("acknowledgement", alert_id=ack.alert_id, operator=ack.operator, result=outcome.result.value)

        async def tell_wearable(device_id: str, alert_id: str, counter: int) -> None:
            if contacts_ref:  # the wearer learns it at its next BLE contact ("operator has it")
                await contacts_ref[0].acknowledge_operator(device_id, alert_id, counter)

        async def on_connected() -> None:
            views = await store.open_incidents()
            if publisher_ref and views:
                await publisher_ref[0].republish([(v.alert_id, v.revision, payloads.state_payload(v)) for v in views])
                log.info("republished open alerts", count=len(views))
            for receivers in receivers_ref:
                await receivers.republish()

        link = await stack.enter_async_context(
            CommandCenterLink(mqtt, gateway_id=settings.gateway_id, on_ack=on_ack, on_connected=on_connected)
        )

        metrics.mqtt_connected.set_function(lambda: 1.0 if link.is_connected else 0.0)

        @functools.lru_cache(maxsize=TOPIC_CACHE)
        def topic_for_alert(kind: str, alert_id: str) -> str:
            if kind == "state":
                return topics.alert_state_topic(prefix, alert_id)
            return topics.alert_events_topic(prefix, alert_id)

        def topic_for(item: OutboxItem) -> str:
            return topic_for_alert(item.kind, item.alert_id)

        def route_for(alert_id: str, payload: bytes) -> str | None:
            """The command-center route of an alert's state: its zone's topic, else its site's (site map)."""
            site_map = site_map_cache.site_map
            if not site_map.sites:
                return None  # no site map: no routes, and no JSON parsing on the publish path
            try:
                document = json.loads(payload)
                place = Place(site=document["device"]["site"] or None, zone=document.get("zone"))
            except (ValueError, KeyError, TypeError):
                return None
            route = site_map.topic_for(place)
            return None if route is None else topics.routed_state_topic(prefix, route, alert_id)

        publisher = await stack.enter_async_context(
            OutboxPublisher(store, link, topic_for, metrics, lease=OUTBOX_LEASE, route_for=route_for)
        )
        publisher_ref.append(publisher)

        def time_zone_of(site: str) -> str | None:
            """The site's IANA time zone from the site map, else the escalation's default."""
            return site_map_cache.site_map.time_zone(site or None) or settings.escalation.time_zone

        feed = await stack.enter_async_context(IncidentFeed(time_zone_of, metrics))

        def enqueue(items: Sequence[OutboxItem]) -> None:
            publisher.enqueue(items)
            feed.poke()  # open consoles see the change now, not at the next poll

        if settings.escalation.file is not None:
            await _load_directory_file(settings.escalation.file, settings.gateway_id)
        ladders = LadderStore(
            gateway_id=settings.gateway_id,
            outbox_lease=OUTBOX_LEASE,
            plan_for=directory_cache.plan_for,
            compose=compose(directory_cache, settings.escalation.time_zone),
        )
        engine = await stack.enter_async_context(
            EscalationEngine(
                ladders,
                enqueue,
                metrics,
                directory=directory_cache,
                tick_s=settings.escalation.tick_s,
                on_acknowledged=tell_wearable,
            )
        )
        engine_ref.append(engine)
        carrier = TwilioCarrier(settings.twilio) if settings.twilio.enabled else None
        sender = await stack.enter_async_context(
            NotificationSender(ladders, carrier, settings.twilio, engine.send_outcome, metrics)
        )
        engine.attach_sender(sender.enqueue)

        if settings.location.sites_file is not None:
            await _load_site_map_file(settings.location.sites_file, settings.gateway_id)
        location = await stack.enter_async_context(LocationEngine(store, enqueue, metrics, sites=site_map_cache))

        def committed(items: Sequence[OutboxItem]) -> None:
            enqueue(items)
            # New and cancelled incidents: their ladders start or stop now, not at the next tick.
            changed = [i.alert_id for i in items if i.kind == "event" and i.key.endswith((":raised", ":cancelled"))]
            if changed:
                engine.poke(changed)
            raised = [i.alert_id for i in items if i.kind == "event" and i.key.endswith(":raised")]
            if raised:
                location.locate_soon(raised)  # never waited for: the alert has gone out already

        pipeline = await stack.enter_async_context(
            SignalPipeline(
                store,
                committed,
                metrics,
                max_batch=settings.database.max_batch,
                max_queue=settings.database.max_batch * QUEUE_BATCHES,
                on_accepted=location.track,
            )
        )

        async def ready() -> dict[str, bool]:
            try:
                await Device.exists()
                database = True
            except (BaseORMException, OSError):
                database = False
            return {"database": database, "mqtt": link.is_connected}

        background: set[asyncio.Task[None]] = set()

        async def republish_one(alert_id: str) -> None:
            try:
                view = await store.get_incident(alert_id)
                if view is not None:
                    await publisher.republish([(view.alert_id, view.revision, payloads.state_payload(view))])
            except Exception as exc:  # link down or database down: the outbox and reconnects still cover it
                log.info("republish on retry deferred", alert_id=alert_id, error=str(exc))

        def ensure_published(alert_id: str) -> None:
            task = asyncio.create_task(republish_one(alert_id), name=f"republish-{alert_id}")
            background.add(task)
            task.add_done_callback(background.discard)

        ca_bundle = _device_ca_bundle(settings) if settings.http.require_client_cert else []
        rules = AuthRules(
            max_clock_ahead=timedelta(seconds=settings.auth.max_clock_ahead_s),
            delayed_after=timedelta(seconds=settings.auth.delayed_after_s),
        )
        deps = IngestDeps(
            settings=settings.http,
            directory=directory,
            pipeline=pipeline,
            rules=rules,
            metrics=metrics,
            ready=ready,
            ensure_published=ensure_published,
            store=store,
        )
        access = Access(settings.api, settings.console, metrics)
        routes: list[web.AbstractRouteDef] = []
        routes += IncidentApi(ApiDeps(access, store, engine, metrics, directory_cache, time_zone_of, enqueue)).routes()
        routes += FleetApi(
            FleetDeps(
                access,
                DeviceRegistry(trust),
                site_map_cache,
                time_zone_of,
                settings.ble.receivers,
                lambda: receivers_ref[0].reports() if receivers_ref else {},
            )
        ).routes()
        routes += StreamApi(feed, access).routes()
        if settings.console.enabled:
            routes += ConsoleWeb(ConsoleDeps(settings.console, access, metrics)).routes()
        if settings.twilio.enabled:
            webhooks = TwilioWebhooks(
                WebhookDeps(
                    engine=engine,
                    public_url=settings.twilio.public_url,
                    auth_token=settings.twilio.auth_token.get_secret_value(),
                    time_zone=settings.escalation.time_zone,
                    directory=directory,
                    pipeline=pipeline,
                    rules=rules,
                    metrics=metrics,
                    ensure_published=ensure_published,
                    device_rate_per_s=settings.http.device_rate_per_s,
                    device_burst=settings.http.device_burst,
                )
            )
            routes += webhooks.routes()
        server = await stack.enter_async_context(
            HttpIngest(deps, server_ssl_context(settings.http, ca_bundle), routes=routes)
        )
        stack.push_async_callback(feed.close)  # open streams end before the server waits for its handlers
        refresher = asyncio.create_task(_refresh_directory(directory), name="directory-refresh")
        stack.push_async_callback(_cancel, refresher)
        receivers: BleReceivers | None = None
        if settings.ble.receivers:
            layout = PkiLayout(settings.pki.directory)

            def radio_of(name: str) -> BumbleRadio | None:
                return receivers_ref[0].radio_of(name) if receivers_ref else None

            contacts = GattContacts(
                ack_key=load_private_key(layout.ack_key),
                radio_of=radio_of,
                receivers=lambda: [r.name for r in settings.ble.receivers],
                directory=directory,
                pipeline=pipeline,
                store=store,
                publish=enqueue,
                rules=rules,
                metrics=metrics,
                deadline_s=settings.ble.follow_up_deadline_s,
                connect_timeout_s=settings.ble.follow_up_connect_timeout_s,
            )
            adverts = await stack.enter_async_context(
                AdvertIngest(
                    fleet_key=load_private_key(layout.fleet_key),
                    directory=directory,
                    pipeline=pipeline,
                    metrics=metrics,
                    key_refresh_s=settings.ble.key_refresh_s,
                    service_uuid=settings.ble.service_uuid,
                    on_heard=contacts.heard,
                )
            )

            async def publish_retained(topic: str, payload: bytes) -> None:
                await link.publish(topic, payload, retain=True)

            receivers = await stack.enter_async_context(
                BleReceivers(
                    settings.ble,
                    adverts.observe,
                    metrics,
                    publish=publish_retained,
                    topic_prefix=prefix,
                    gateway_id=settings.gateway_id,
                )
            )
            receivers_ref.append(receivers)
            location.readings = adverts.readings
            # Entered after the receivers: its contacts are cancelled before their radios close.
            contacts_ref.append(await stack.enter_async_context(contacts))
        log.info("gateway running", gateway_id=settings.gateway_id, http=server.url, mqtt=f"{mqtt.host}:{mqtt.port}")
        yield RunningGateway(
            settings, server.url, mqtt.host, mqtt.port, store, publisher, link, metrics, receivers, engine
        )
        log.info("gateway stopping", gateway_id=settings.gateway_id)


async def _load_site_map_file(path: Path, loaded_by: str) -> None:
    """Make the site map file current when it differs from the stored one (ConfigError when it is invalid)."""
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8-sig")
        parse_site_map(text, source=str(path))
    except OSError as exc:
        raise ConfigError(f"site map {path} cannot be read: {exc.strerror}", problems=[]) from None
    except SiteMapError as exc:
        raise ConfigError(f"site map {path} is invalid", problems=list(exc.problems)) from None
    await save_site_map_document(text, source=str(path), loaded_by=loaded_by)


async def _load_directory_file(path: Path, loaded_by: str) -> None:
    """Make the directory file current when it differs from the stored one (ConfigError when it is invalid)."""
    try:
        directory = load_directory(path)
    except DirectoryError as exc:
        raise ConfigError(f"escalation file {path} is invalid", problems=list(exc.problems)) from None
    await save_directory(directory, source=str(path), loaded_by=loaded_by)


def _device_ca_bundle(settings: GatewaySettings) -> list[str]:
    """PEMs a device's TLS client certificate must chain to (mTLS)."""
    pki = settings.pki
    paths = [pki.path("device-ca.crt", pki.device_ca_cert), pki.path("root-ca.crt", pki.root_ca_cert)]
    return [p.read_text() for p in paths]


async def _refresh_directory(directory: DeviceDirectory) -> None:
    while True:
        await asyncio.sleep(DIRECTORY_REFRESH_S)
        await directory.refresh()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run(settings: GatewaySettings) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_gateway(settings) as gw:
        print(
            f"panic-gateway {settings.gateway_id}: HTTPS {gw.http_url}  MQTT {gw.mqtt_host}:{gw.mqtt_port}", flush=True
        )
        await stop.wait()


__all__ = ["RunningGateway", "run", "running_gateway"]
