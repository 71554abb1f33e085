"""BLE receivers: one passive bleak scanner per configured radio, each restarted on its own when its transport fails.

Each `BleReceiver` owns a `BumbleRadio` on its transport and a `BleakScanner` on it (bumble backend), and hands
every advert carrying our Service Data to the advert ingest as an `AdvertObservation`. When the transport drops
(or cannot be opened) the receiver reports itself down, waits an exponential, jittered delay and opens it again;
the other receivers are not affected. `BleReceivers` runs them all and reports their status in the metrics and,
retained, over MQTT at `{prefix}/gateways/{gateway_id}/receivers/{name}/status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self

import structlog
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bumble import core

from gateway.commandcenter.link import reconnect_delay
from gateway.commandcenter.payloads import format_utc
from gateway.config import BleSettings, ReceiverSettings
from gateway.errors import GatewayError
from gateway.ingest.ble.adverts import AdvertObservation
from gateway.ingest.ble.bumble_backend import BumbleRadio, BumbleScanner, BumbleTransportLostError
from gateway.observability import Metrics

log = structlog.get_logger(__name__)

#: The 16-bit Service Data AD type followed by the UUID is what every advert of ours contains.
_AD_TYPE_SERVICE_DATA_16: Final = 0x16
#: A receiver that scanned this long before failing starts its backoff from the minimum again.
STABLE_AFTER_S: Final = 30.0

Publish = Callable[[str, bytes], Awaitable[None]]


class ReceiverStatus(enum.StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """A receiver's latest status (the retained MQTT document)."""

    receiver: str
    status: ReceiverStatus
    at: datetime
    error: str | None

    def payload(self) -> bytes:
        document = {
            "receiver": self.receiver,
            "status": self.status.value,
            "at": format_utc(self.at),
            "error": self.error,
        }
        return json.dumps(document, separators=(",", ":")).encode()


def receiver_status_topic(prefix: str, gateway_id: str, receiver: str) -> str:
    """Retained status of one BLE receiver of one gateway."""
    return f"{prefix}/gateways/{gateway_id}/receivers/{receiver}/status"


class BleReceiver:
    """One radio, scanning passively; an async context manager that owns its supervisor task."""

    def __init__(
        self,
        settings: ReceiverSettings,
        on_advert: Callable[[AdvertObservation], None],
        on_status: Callable[[ReceiverReport], None],
        *,
        restart_min_s: float,
        restart_max_s: float,
        service_uuid: int,
    ) -> None:
        self.settings = settings
        self._on_advert = on_advert
        self._on_status = on_status
        self._restart_min_s = restart_min_s
        self._restart_max_s = restart_max_s
        self._marker = bytes((_AD_TYPE_SERVICE_DATA_16,)) + service_uuid.to_bytes(2, "little")
        self._task: asyncio.Task[None] | None = None
        self._radio: BumbleRadio | None = None
        self.failures = 0
        self.status = ReceiverStatus.DOWN

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def radio(self) -> BumbleRadio | None:
        """The open radio while the receiver is up (GATT follow-ups connect through it), else None."""
        radio = self._radio
        return None if radio is None or radio.is_lost else radio

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._supervise(), name=f"ble-receiver-{self.name}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _is_ours(self, raw: bytes) -> bool:
        """The scanner's prefilter: other vendors' adverts are dropped before bumble and bleak parse them."""
        return self._marker in raw

    def _detected(self, device: BLEDevice, advert: AdvertisementData) -> None:
        raw, _ = advert.platform_data
        if self._marker not in raw:  # the prefilter let it through, so this only guards the contract
            return
        self._on_advert(AdvertObservation(self.name, advert.rssi, datetime.now(UTC), bytes(raw), device.address))

    def _report(self, status: ReceiverStatus, error: str | None) -> None:
        self.status = status
        self._on_status(ReceiverReport(self.name, status, datetime.now(UTC), error))

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._scan()
                error = "transport lost"
            except (BleakError, OSError, core.BaseBumbleError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
            if loop.time() - started >= STABLE_AFTER_S:
                self.failures = 0
            self.failures += 1
            delay = reconnect_delay(
                self.failures - 1,
                self._restart_min_s,
                self._restart_max_s,
                random.random(),  # noqa: S311 - jitter, not cryptography
            )
            log.warning("ble receiver down", receiver=self.name, error=error, retry_in_s=round(delay, 2))
            self._report(ReceiverStatus.DOWN, error)
            await asyncio.sleep(delay)

    async def _scan(self) -> None:
        """Scan until the transport drops (returns) or fails to open (raises)."""
        async with BumbleRadio(self.settings.transport, name=f"panic-gateway-{self.name}") as radio:
            scanner = BleakScanner(
                self._detected,
                scanning_mode="passive",
                backend=BumbleScanner,
                bumble_radio=radio,
                bumble_prefilter=self._is_ours,
            )
            async with scanner:
                log.info("ble receiver up", receiver=self.name, transport=self.settings.transport)
                self._radio = radio
                self._report(ReceiverStatus.UP, None)
                try:
                    with contextlib.suppress(BumbleTransportLostError):
                        await radio.lost
                finally:
                    self._radio = None


class BleReceivers:
    """Every configured receiver, with their status in the metrics and retained over MQTT."""

    def __init__(
        self,
        settings: BleSettings,
        on_advert: Callable[[AdvertObservation], None],
        metrics: Metrics,
        *,
        publish: Publish,
        topic_prefix: str,
        gateway_id: str,
    ) -> None:
        self._metrics = metrics
        self._publish = publish
        self._prefix = topic_prefix
        self._gateway_id = gateway_id
        self._reports: dict[str, ReceiverReport] = {}
        self._publishing: set[asyncio.Task[None]] = set()
        self.receivers: Sequence[BleReceiver] = [
            BleReceiver(
                r,
                on_advert,
                self._on_status,
                restart_min_s=settings.restart_min_s,
                restart_max_s=settings.restart_max_s,
                service_uuid=settings.service_uuid,
            )
            for r in settings.receivers
        ]
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        for receiver in self.receivers:
            self._metrics.ble_receiver_up.labels(receiver.name).set(0)
            await self._stack.enter_async_context(receiver)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
        for task in list(self._publishing):
            task.cancel()
        await asyncio.gather(*self._publishing, return_exceptions=True)

    def radio_of(self, receiver: str) -> BumbleRadio | None:
        """The open radio of the named receiver, None when it is down or not configured."""
        for r in self.receivers:
            if r.name == receiver:
                return r.radio
        return None

    def reports(self) -> dict[str, ReceiverReport]:
        """The latest status of each receiver that reported one."""
        return dict(self._reports)

    def _on_status(self, report: ReceiverReport) -> None:
        previous = self._reports.get(report.receiver)
        self._reports[report.receiver] = report
        self._metrics.ble_receiver_up.labels(report.receiver).set(1 if report.status is ReceiverStatus.UP else 0)
        if report.status is ReceiverStatus.DOWN:
            self._metrics.ble_receiver_restarts.labels(report.receiver).inc()
        if previous is not None and previous.status is report.status:
            return  # each failed reopen is counted, but only a change of status is published
        task = asyncio.create_task(self._send(report), name=f"receiver-status-{report.receiver}")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _send(self, report: ReceiverReport) -> None:
        topic = receiver_status_topic(self._prefix, self._gateway_id, report.receiver)
        try:
            await self._publish(topic, report.payload())
        except GatewayError as exc:  # link down: republish() after the reconnect sends the latest
            log.info("receiver status not published", receiver=report.receiver, error=str(exc))

    async def republish(self) -> None:
        """Publish every receiver's latest status again (after the MQTT link reconnects)."""
        for report in list(self._reports.values()):
            await self._send(report)
