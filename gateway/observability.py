"""Logging (structlog) and Prometheus metrics, one registry per gateway instance."""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.config import LogFormat, LogSettings

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def configure_logging(settings: LogSettings) -> None:
    """JSON lines in production, readable console lines in development; both to stderr."""
    level = logging.getLevelNamesMapping().get(settings.level.upper(), logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.format is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


class Metrics:
    """The gateway's Prometheus metrics, served at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.signals_accepted = Counter(
            "panic_signals_accepted", "Signals accepted (stored)", ["event", "transport", "outcome"], registry=r
        )
        self.signals_rejected = Counter(
            "panic_signals_rejected", "Signals refused, by reason", ["reason", "transport"], registry=r
        )
        self.ingest_latency = Histogram(
            "panic_ingest_latency_seconds",
            "Receipt to answer (stored or refused)",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "panic_commit_batch_size",
            "Signals per database transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.commit_latency = Histogram(
            "panic_commit_latency_seconds", "Duration of one group commit", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.publish_latency = Histogram(
            "panic_publish_latency_seconds",
            "Stored to PUBACK from the command-center broker",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.published = Counter(
            "panic_mqtt_published", "MQTT messages acknowledged by the broker", ["kind"], registry=r
        )
        self.publish_failures = Counter("panic_mqtt_publish_failures", "Publishes that must be retried", registry=r)
        self.republished = Counter(
            "panic_mqtt_republished", "Open-alert states republished after a (re)connect", registry=r
        )
        self.outbox_held = Gauge("panic_outbox_held", "Outbox messages held in memory awaiting delivery", registry=r)
        self.mqtt_connected = Gauge("panic_mqtt_connected", "1 when the command-center link is up", registry=r)
        self.acks = Counter(
            "panic_acknowledgements", "Acknowledgements received, by result", ["channel", "result"], registry=r
        )
        self.notifications = Counter(
            "panic_notifications",
            "SMS and call requests to the phone network, by result",
            ["channel", "result"],
            registry=r,
        )
        self.send_latency = Histogram(
            "panic_notification_request_seconds",
            "Time the phone network took to accept a send",
            ["channel"],
            registry=r,
        )
        self.webhooks = Counter(
            "panic_twilio_webhooks", "Phone network webhooks, by kind and result", ["kind", "result"], registry=r
        )
        self.locations = Counter(
            "panic_location_passes",
            "Location passes, by winning source and whether they were news",
            ["source", "result"],
            registry=r,
        )
        self.ladder_changes = Counter(
            "panic_ladder_changes", "Escalation ladder inputs applied, by input", ["input"], registry=r
        )
        self.store_errors = Counter("panic_store_errors", "Database operations that failed", ["operation"], registry=r)
        self.queue_depth = Gauge("panic_ingest_queue_depth", "Signals waiting for the group commit", registry=r)
        self.ble_adverts = Counter(
            "panic_ble_adverts",
            "BLE adverts heard, by receiver and what became of them "
            "(foreign, repeat, malformed, unknown-eid, bad-signature, accepted, duplicate, rejected, dropped)",
            ["receiver", "result"],
            registry=r,
        )
        self.ble_receiver_up = Gauge(
            "panic_ble_receiver_up", "1 when the BLE receiver is scanning", ["receiver"], registry=r
        )
        self.ble_receiver_restarts = Counter(
            "panic_ble_receiver_failures",
            "BLE receiver transport failures (each followed by a restart)",
            ["receiver"],
            registry=r,
        )
        self.ble_advert_keys = Gauge("panic_ble_advert_keys", "Devices whose advert keys the gateway holds", registry=r)
        self.api_refusals = Counter(
            "panic_api_refusals",
            "REST and console requests refused: unauthorized, forbidden, csrf-failed, too-many-attempts, invalid",
            ["reason"],
            registry=r,
        )
        self.console_streams = Gauge("panic_console_streams", "Open live streams (/v1/stream)", registry=r)
