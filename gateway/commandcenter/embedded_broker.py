"""An in-process MQTT broker (amqtt) on 127.0.0.1 for `make demo`: no Mosquitto to install.

Not for production: it keeps nothing on disk and allows anonymous clients.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import structlog
from amqtt.broker import Broker

from gateway.config import MqttSettings

_LOOPBACK = "127.0.0.1"
_log = structlog.get_logger(__name__)


class EmbeddedBroker:
    """Async context manager running an amqtt broker on 127.0.0.1.

    port: 0 picks a free port; read the chosen one from `.port` once entered.
    """

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._broker: Any = None

    @property
    def host(self) -> str:
        """Where clients connect."""
        return _LOOPBACK

    @property
    def port(self) -> int:
        """The listening port (valid once entered)."""
        if self._port is None:
            raise RuntimeError("EmbeddedBroker is not running")
        return self._port

    def settings_for(self, settings: MqttSettings) -> MqttSettings:
        """`settings` pointed at this broker (plain TCP, no credentials): what the link of a demo uses."""
        return settings.model_copy(
            update={
                "host": self.host,
                "port": self.port,
                "tls": False,
                "ca_file": None,
                "cert_file": None,
                "key_file": None,
                "username": None,
                "password": None,
            }
        )

    async def __aenter__(self) -> Self:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{_LOOPBACK}:{self._requested_port}"}},
            # Only anonymous auth: the default plugin set also logs every packet and publishes $SYS.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        try:
            # amqtt has no public accessor for the bound address; its listener is an asyncio.Server.
            server = broker._servers["default"].instance
            self._port = int(server.sockets[0].getsockname()[1])
        except BaseException:
            await broker.shutdown()
            self._broker = None
            raise
        _log.info("commandcenter.embedded_broker_started", host=_LOOPBACK, port=self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, self._broker, self._port = self._broker, None, None
        if broker is not None:
            await broker.shutdown()
