"""The gateway's MQTT link to the command center: publishes alert state and events, receives acknowledgements.

One background task owns the connection: it connects (TLS, credentials, last will), announces the
gateway online, runs `on_connected` (the gateway republishes every open alert's retained state, which
a broker restarted after a crash may have lost), then serves until the connection drops, and
reconnects forever with exponential backoff and jitter. A second task hands acknowledgements to
`on_ack` one at a time, so a slow callback never stalls the connection.

`publish` awaits the broker's PUBACK; any number of publishes may be awaited at once (up to
`max_inflight` are on the wire, the rest wait their turn). When there is no session, or the
session drops before the PUBACK, it raises LinkDown and the caller's outbox retries later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import aiomqtt
import structlog

from gateway.commandcenter import const, topics
from gateway.commandcenter.errors import LinkDown, LinkDownReason
from gateway.commandcenter.payloads import (
    Acknowledgement,
    AckRejection,
    AckRejectReason,
    GatewayStatus,
    event_payload,
    parse_ack,
    state_payload,
    status_payload,
)
from gateway.config import MqttSettings
from gateway.core.incident import IncidentView

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")

AckCallback = Callable[[Acknowledgement], Awaitable[None]]
ConnectedCallback = Callable[[], Awaitable[None]]


def reconnect_delay(failures: int, minimum_s: float, maximum_s: float, jitter: float) -> float:
    """Seconds to wait after `failures` consecutive failures: exponential, capped, with jitter.

    The ceiling doubles with each failure from `minimum_s` up to `maximum_s`; the delay is drawn
    uniformly between `minimum_s` and that ceiling (`jitter` in [0, 1)), so gateways that lost the
    same broker do not all come back in the same instant.
    """
    ceiling = max(minimum_s, min(maximum_s, minimum_s * 2.0 ** min(failures, const.MAX_BACKOFF_DOUBLINGS)))
    return minimum_s + (ceiling - minimum_s) * jitter


def package_version() -> str:
    """The installed gateway's version, for the status topic."""
    try:
        return importlib.metadata.version("panic-gateway")
    except importlib.metadata.PackageNotFoundError:
        return const.UNKNOWN_VERSION


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """A client TLS context: verify the broker against `ca_file` (or the system store), present the client cert.

    Reads files: call it off the event loop.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    if settings.cert_file is not None and settings.key_file is not None:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    context.sslsocket_class = _HandshakeClosingSocket
    return context


class _HandshakeClosingSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails: paho 2.2 drops the socket unclosed then, and every
    reconnect to an untrusted broker would leak a file descriptor until garbage collection."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class LinkStats:
    """Counters of one link, for metrics and tests (monotonic while the link lives)."""

    #: Sessions established (CONNACK accepted).
    connects: int = 0
    #: Connection attempts that failed before a session was up.
    connect_failures: int = 0
    #: Sessions that ended without a shutdown.
    connections_lost: int = 0
    #: Valid acknowledgements received.
    acks_received: int = 0
    #: Refused acknowledgements, by reason.
    acks_invalid: collections.Counter[AckRejectReason] = field(default_factory=collections.Counter)
    #: Valid acknowledgements dropped because the queue to on_ack was full.
    acks_dropped: int = 0
    #: on_ack raised.
    ack_callback_errors: int = 0
    #: on_connected raised (the session is dropped and retried).
    connected_callback_errors: int = 0


@dataclass(slots=True, eq=False)
class _Session:
    """One live broker connection. `lost` resolves (with the cause, if any) when it drops or is closed."""

    client: aiomqtt.Client
    lost: asyncio.Future[BaseException | None]


class CommandCenterLink:
    """Async context manager over the MQTT connection to the command center.

    settings: broker address, TLS, credentials, topic prefix, timings.
    gateway_id: names this process in the status topic and the MQTT client id.
    on_ack: awaited for each valid acknowledgement, one at a time; exceptions are logged and counted.
    on_connected: awaited after every (re)connect, before `is_connected` turns true; may publish
        (but must not wait for `wait_connected`). If it raises, the session is dropped and retried
        with backoff, so "connected" always means "retained state restored".
    version: reported in the status topic (default: the installed package's version).
    clock: source of "now" for the status timestamps.
    """

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        *,
        on_ack: AckCallback,
        on_connected: ConnectedCallback | None = None,
        version: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if settings.host == const.EMBEDDED_HOST:
            raise ValueError("host 'embedded' must be resolved with EmbeddedBroker.settings_for() first")
        self._settings = settings
        self._gateway_id = gateway_id
        self._prefix = settings.topic_prefix
        self._status_topic = topics.gateway_status_topic(self._prefix, gateway_id)
        self._ack_filter = topics.ack_filter(self._prefix)
        self._on_ack = on_ack
        self._on_connected = on_connected
        self._version = version if version is not None else package_version()
        self._clock = clock
        self._log = _log.bind(gateway_id=gateway_id)
        self._random = random.SystemRandom()  # jitter; os.urandom costs nothing at this rate
        self._stats = LinkStats()
        self._connected = asyncio.Event()
        self._session: _Session | None = None
        self._acks: asyncio.Queue[Acknowledgement] = asyncio.Queue(maxsize=const.ACK_QUEUE_MAX)
        self._inflight = asyncio.Semaphore(settings.max_inflight)
        self._stopping = False
        self._connection_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._connection_task is not None:
            raise RuntimeError("a CommandCenterLink can be entered once")
        name = f"commandcenter-link[{self._gateway_id}]"
        self._dispatch_task = asyncio.create_task(self._dispatch_acks(), name=f"{name}.acks")
        self._connection_task = asyncio.create_task(self._maintain_connection(), name=name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Publish "offline", disconnect cleanly, give queued acks to on_ack, stop both tasks."""
        self._stopping = True
        if self._connection_task is not None:
            # The session's clean-up publishes "offline" before the DISCONNECT (see _serve).
            await self._stop(self._connection_task)
        if self._dispatch_task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(const.ACK_DRAIN_TIMEOUT_S):
                    await self._acks.join()
            if self._acks.qsize():
                self._log.error("commandcenter.acks_abandoned", count=self._acks.qsize())
            await self._stop(self._dispatch_task)

    async def _stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        # asyncio.wait does not raise the task's CancelledError into us, only our own cancellation.
        await asyncio.wait({task})
        if not task.cancelled() and (error := task.exception()) is not None:
            self._log.error("commandcenter.task_failed", task=task.get_name(), error=repr(error))

    # -- state -----------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True while a session is up and on_connected has completed for it."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once the link is connected (at once if it is). Wrap in asyncio.timeout to bound it."""
        await self._connected.wait()

    @property
    def stats(self) -> LinkStats:
        """Live counters."""
        return self._stats

    @property
    def topic_prefix(self) -> str:
        """The contract's topic prefix in use."""
        return self._prefix

    @property
    def client_id(self) -> str:
        """The MQTT client id (stable per gateway id; the broker keeps its session between connects)."""
        return const.CLIENT_ID_PREFIX + self._gateway_id

    # -- publishing ------------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish with QoS 1 and return once the broker acknowledged it (PUBACK).

        Works from the moment a session is up, so on_connected can use it. Raises LinkDown when
        there is no session, the session drops first (also while waiting for an in-flight slot), or
        no PUBACK came within PUBLISH_TIMEOUT_S of sending.
        """
        session = self._session
        if session is None or session.lost.done():
            raise LinkDown(
                f"not connected to the broker; {topic} not published", topic=topic, reason=LinkDownReason.NOT_CONNECTED
            )
        await self._publish_on(session, topic, payload, retain=retain, timeout_s=const.PUBLISH_TIMEOUT_S)

    async def publish_state(self, view: IncidentView) -> None:
        """Publish the retained state of an alert."""
        await self.publish(topics.alert_state_topic(self._prefix, view.alert_id), state_payload(view), retain=True)

    async def publish_event(
        self,
        *,
        event_id: str,
        alert_id: str,
        revision: int,
        event_type: str,
        at: datetime,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Publish one event of an alert (not retained); see payloads.event_payload."""
        payload = event_payload(
            event_id=event_id, alert_id=alert_id, revision=revision, event_type=event_type, at=at, detail=detail
        )
        await self.publish(topics.alert_events_topic(self._prefix, alert_id), payload, retain=False)

    async def _publish_on(
        self, session: _Session, topic: str, payload: bytes, *, retain: bool, timeout_s: float
    ) -> None:
        try:
            await self._until_lost(session, self._publish_bounded(session, topic, payload, retain, timeout_s), topic)
        except aiomqtt.MqttCodeError as exc:
            raise LinkDown(f"publish to {topic} refused: {exc}", topic=topic, reason=LinkDownReason.REFUSED) from exc
        except aiomqtt.MqttError as exc:  # aiomqtt's only plain MqttError from publish is its timeout
            raise LinkDown(
                f"no PUBACK for {topic} within {timeout_s} s", topic=topic, reason=LinkDownReason.TIMEOUT
            ) from exc

    async def _publish_bounded(
        self, session: _Session, topic: str, payload: bytes, retain: bool, timeout_s: float
    ) -> None:
        # At most max_inflight publishes inside aiomqtt at once: it scans every pending call on each
        # new one, so an unbounded gather of thousands would cost quadratic time.
        async with self._inflight:
            await session.client.publish(topic, payload, qos=const.QOS, retain=retain, timeout=timeout_s)

    async def _until_lost(self, session: _Session, call: Coroutine[Any, Any, _T], topic: str) -> _T:
        """Await `call`, but raise LinkDown as soon as the session drops.

        aiomqtt leaves a PUBACK or SUBACK waiter pending until its timeout when the connection
        drops; racing it against `lost` gives the caller its answer (and the outbox its retry) at once.
        """
        task = asyncio.ensure_future(call)
        try:
            await asyncio.wait((task, session.lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():  # a PUBACK that raced the drop still counts as delivered
            return task.result()
        raise LinkDown(
            f"connection lost before the broker acknowledged {topic}",
            topic=topic,
            reason=LinkDownReason.CONNECTION_LOST,
        )

    # -- the connection loop ---------------------------------------------------------------------

    async def _maintain_connection(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0  # consecutive, reset by a stable session
        while not self._stopping:
            started = loop.time()
            connected_before = self._stats.connects
            error: BaseException | None
            try:
                error = await self._serve()
            except Exception as exc:
                error = exc
            current = asyncio.current_task()
            if self._stopping or (current is not None and current.cancelling()):
                # aiomqtt's exit can turn our cancellation into an MqttError; never loop on after a stop.
                return
            had_session = self._stats.connects > connected_before
            if had_session and loop.time() - started >= const.STABLE_SESSION_S:
                failures = 0
            delay = reconnect_delay(
                failures, self._settings.reconnect_min_s, self._settings.reconnect_max_s, self._random.random()
            )
            failures += 1
            if had_session:
                self._stats.connections_lost += 1
                self._log.warning("commandcenter.connection_lost", error=_describe(error), retry_in_s=round(delay, 3))
            else:
                self._stats.connect_failures += 1
                self._log.warning(
                    "commandcenter.connect_failed",
                    attempt=failures,
                    host=self._settings.host,
                    port=self._settings.port,
                    error=_describe(error),
                    retry_in_s=round(delay, 3),
                )
            await asyncio.sleep(delay)

    def _client(self, tls: ssl.SSLContext | None, connected_at: datetime) -> aiomqtt.Client:
        settings = self._settings
        will = aiomqtt.Will(
            topic=self._status_topic,
            payload=status_payload(
                gateway_id=self._gateway_id, status=GatewayStatus.OFFLINE, at=connected_at, version=self._version
            ),
            qos=const.QOS,
            retain=True,
        )
        client = aiomqtt.Client(
            settings.host,
            settings.port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password is not None else None,
            identifier=self.client_id,
            # A persistent session: the broker queues acks (QoS 1) while we are away.
            clean_session=False,
            will=will,
            keepalive=settings.keepalive_s,
            timeout=const.CONNECT_TIMEOUT_S,
            max_inflight_messages=settings.max_inflight,
            tls_context=tls,
        )
        # aiomqtt logs a warning above 10 pending calls; pipelining has up to max_inflight by design.
        client.pending_calls_threshold = settings.max_inflight + const.ACK_QUEUE_MAX
        return client

    async def _serve(self) -> BaseException | None:
        """One session: connect, announce, serve until it drops. Returns the cause of the drop; raises when
        the attempt fails (connect refused, TLS, on_connected).

        A fresh aiomqtt.Client per attempt: publishes that were in flight when the last session
        dropped have already raised LinkDown and are retried by their outbox, so the client library
        must not resend them on its own.
        """
        loop = asyncio.get_running_loop()
        tls = await asyncio.to_thread(tls_context, self._settings) if self._settings.tls else None
        client = self._client(tls, self._clock())
        try:
            await client.__aenter__()
        except BaseException:
            await _abandon_connect(client)
            raise
        try:
            self._stats.connects += 1
            session = _Session(client=client, lost=loop.create_future())
            reader = asyncio.create_task(self._read(session), name=f"commandcenter-link[{self._gateway_id}].read")
            self._session = session
            try:
                await self._announce(session)
                self._connected.set()
                self._log.info("commandcenter.connected", host=self._settings.host, port=self._settings.port)
                await asyncio.wait({reader})
            finally:
                self._connected.clear()
                self._session = None
                if not session.lost.done():
                    # We are leaving a live session (shutdown, or on_connected failed): a clean
                    # DISCONNECT discards the will, so say "offline" ourselves first.
                    await self._say_offline(session)
                    session.lost.set_result(None)
                reader.cancel()
                await asyncio.wait({reader})
            return session.lost.result()
        finally:
            await client.__aexit__(None, None, None)

    async def _announce(self, session: _Session) -> None:
        granted = await self._until_lost(
            session,
            session.client.subscribe(self._ack_filter, qos=const.QOS, timeout=const.SUBSCRIBE_TIMEOUT_S),
            self._ack_filter,
        )
        if any(_refused(code) for code in granted):
            # Publishing alerts matters more than receiving acks: log loudly and carry on.
            self._log.error("commandcenter.ack_subscription_refused", topic=self._ack_filter)
        online = status_payload(
            gateway_id=self._gateway_id, status=GatewayStatus.ONLINE, at=self._clock(), version=self._version
        )
        await self._publish_on(session, self._status_topic, online, retain=True, timeout_s=const.PUBLISH_TIMEOUT_S)
        if self._on_connected is not None:
            try:
                await self._on_connected()
            except LinkDown:
                raise  # the session dropped under it; logged as such by the loop
            except Exception:
                self._stats.connected_callback_errors += 1
                self._log.exception("commandcenter.on_connected_failed")
                raise
        if session.lost.done():
            raise LinkDown(
                "connection lost during on_connected", topic=self._status_topic, reason=LinkDownReason.CONNECTION_LOST
            )

    async def _say_offline(self, session: _Session) -> None:
        offline = status_payload(
            gateway_id=self._gateway_id, status=GatewayStatus.OFFLINE, at=self._clock(), version=self._version
        )
        try:
            await self._publish_on(
                session, self._status_topic, offline, retain=True, timeout_s=const.OFFLINE_PUBLISH_TIMEOUT_S
            )
        except LinkDown as exc:
            self._log.warning("commandcenter.offline_not_published", reason=exc.reason.value)

    # -- receiving -------------------------------------------------------------------------------

    async def _read(self, session: _Session) -> None:
        """Hand each incoming message to _receive until the connection drops; then resolve `lost`."""
        cause: BaseException | None = None
        try:
            async for message in session.client.messages:
                self._receive(message)
        except aiomqtt.MqttError as exc:
            cause = exc
        finally:
            if not session.lost.done():
                session.lost.set_result(cause)

    def _receive(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        alert_id = topics.parse_ack_topic(self._prefix, topic)
        result: Acknowledgement | AckRejection
        if alert_id is None:
            result = AckRejection(AckRejectReason.BAD_TOPIC, "not an acknowledgement topic of this prefix")
        else:
            result = parse_ack(alert_id, bytes(payload))
        if isinstance(result, AckRejection):
            self._stats.acks_invalid[result.reason] += 1
            self._log.warning(
                "commandcenter.ack_rejected",
                topic=topic,
                reason=result.reason.value,
                detail=result.detail,
                size=len(payload),
            )
            return
        self._stats.acks_received += 1
        try:
            self._acks.put_nowait(result)
        except asyncio.QueueFull:
            self._stats.acks_dropped += 1
            self._log.error("commandcenter.ack_dropped", alert_id=result.alert_id, queued=self._acks.qsize())

    async def _dispatch_acks(self) -> None:
        while True:
            ack = await self._acks.get()
            try:
                await self._on_ack(ack)
            except Exception:
                self._stats.ack_callback_errors += 1
                self._log.exception("commandcenter.on_ack_failed", alert_id=ack.alert_id)
            finally:
                self._acks.task_done()


async def _abandon_connect(client: aiomqtt.Client) -> None:
    """Close the socket of a connect that got no CONNACK (timed out, or cancelled at shutdown).

    aiomqtt 2.5 leaves that socket open with its reader and keepalive task (until paho's keepalive
    check gives up on it), and after a cancellation its `_connected` future is cancelled, which makes
    paho's disconnect callback raise before paho closes the socket. A fresh future lets paho's own
    DISCONNECT path close it, which ends the keepalive task within a few loop turns; wait for that so
    no task outlives the attempt. Harmless when there is no socket (refused, TLS failure). A connect
    still in its executor thread cannot be reached; paho's keepalive check closes it later.
    """
    client._connected = asyncio.get_running_loop().create_future()
    client._client.disconnect()
    if client._misc_task is not None:
        await asyncio.wait({client._misc_task}, timeout=const.ABANDON_CONNECT_TIMEOUT_S)


def _refused(code: object) -> bool:
    # SUBACK codes from 0x80 are failures; paho gives ints or ReasonCode objects (with .value).
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "disconnected"
    if isinstance(error, aiomqtt.MqttError) and error.__cause__ is not None:
        return f"{error} ({error.__cause__})"
    return str(error) or type(error).__name__
