"""Gateway settings: one nested model per component, from a TOML file plus PANIC_* environment variables."""

from __future__ import annotations

import enum
import socket
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    """HTTPS ingest for cellular wearables."""

    host: str = "127.0.0.1"
    #: 0 picks a free port (the demo and tests use it).
    port: int = Field(8443, ge=0, le=65535)
    #: Server certificate and key (from `panic-gateway pki server-cert`). Both or neither; without
    #: them the gateway serves plain HTTP, which is only for tests behind a TLS terminator.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: mTLS: when true, devices must present a certificate issued by the device CA.
    require_client_cert: bool = False
    #: A signed frame is at most 256 bytes; anything far larger is refused unread.
    max_body_bytes: int = Field(1024, ge=256, le=65536)
    #: Token bucket per device id: sustained signals per second and burst.
    device_rate_per_s: float = Field(5.0, gt=0)
    device_burst: int = Field(20, ge=1)
    #: Token bucket per client address (a modem pool or NAT may carry many devices).
    address_rate_per_s: float = Field(500.0, gt=0)
    address_burst: int = Field(2000, ge=1)

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.require_client_cert and self.tls_cert is None:
            raise ValueError("require_client_cert needs tls_cert and tls_key")
        return self


class DatabaseSettings(_Section):
    """Where incidents live: a tortoise-orm URL (sqlite://path or postgres://user@host/db)."""

    url: SecretStr = SecretStr("sqlite://var/gateway.sqlite3")
    #: Signals accepted together are committed in one transaction, up to this many.
    max_batch: int = Field(256, ge=1, le=10_000)


class MqttSettings(_Section):
    """The command-center link (MQTT 3.1.1/5, QoS 1)."""

    #: "embedded" runs an in-process broker on a free port (demo); otherwise a host name.
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=0, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    #: TLS: CA bundle that signed the broker's certificate; client cert and key for mTLS.
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "panic/v1"
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_min_s: float = Field(0.2, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    #: PUBACKs awaited at once; pipelining is what lets one link carry thousands of alerts/s.
    max_inflight: int = Field(256, ge=1, le=65535)

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together")
        if (self.cert_file or self.ca_file) and not self.tls:
            raise ValueError("ca_file/cert_file are set but tls is false")
        if "#" in self.topic_prefix or "+" in self.topic_prefix or self.topic_prefix.endswith("/"):
            raise ValueError("topic_prefix must not contain wildcards or end with '/'")
        return self


class PkiSettings(_Section):
    """Trust anchors for devices (see certs/README.md)."""

    directory: Path = Path("certs/dev")
    #: The device CA that issues wearables' certificates (chained to the root).
    device_ca_cert: Path | None = None
    root_ca_cert: Path | None = None
    crl_file: Path | None = None

    def path(self, name: str, explicit: Path | None) -> Path:
        return explicit if explicit is not None else self.directory / name


class AuthSettings(_Section):
    """Replay and clock rules."""

    #: Out-of-order counters accepted behind the highest seen; cellular retries rarely reorder more.
    #: At most 63: the window is a 63-bit mask in a signed BIGINT column.
    replay_window: int = Field(63, ge=1, le=63)
    #: A device clock further ahead than this is refused: it would poison ordering and retention.
    max_clock_ahead_s: int = Field(300, ge=1)
    #: A press older than this is still alerted but marked delayed.
    delayed_after_s: int = Field(60, ge=1)


class ReceiverSettings(_Section):
    """One BLE receiver: a bumble HCI transport and where its antenna is."""

    #: Names the receiver in observations, metrics and MQTT status topics.
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    #: A bumble transport spec: `usb:0`, `serial:/dev/ttyACM0`, `hci-socket:0`, `tcp-client:host:port`.
    transport: str = Field(min_length=1)
    #: Where its antenna is in the site map (docs/LOCATION.md): site, building, floor and room ids.
    site: str = ""
    building: str = ""
    floor: int = 0
    room: str = ""
    #: Position on the building's floor plan, metres from the building's anchor.
    x: float = 0.0
    y: float = 0.0


class BleSettings(_Section):
    """BLE advert ingest: one passive scanner per receiver; no receivers means BLE is off."""

    receivers: list[ReceiverSettings] = []
    #: A receiver whose transport fails is reopened after an exponential, jittered delay between these bounds.
    restart_min_s: float = Field(0.5, gt=0)
    restart_max_s: float = Field(30.0, gt=0)
    #: Devices registered while the gateway runs get advert keys within this many seconds (sooner when
    #: an unknown ephemeral id is heard).
    key_refresh_s: float = Field(10.0, gt=0)
    #: 16-bit Service Data UUID of our adverts (docs/PROTOCOL.md §14).
    service_uuid: int = Field(0xFD00, ge=0, le=0xFFFF)
    #: GATT follow-up of a new press (docs/PROTOCOL.md §15): whole deadline and one connection attempt's bound.
    #: The defaults are the follow-up's own constants; tests shorten them.
    follow_up_deadline_s: float = Field(20.0, gt=0)
    follow_up_connect_timeout_s: float = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _unique_names(self) -> BleSettings:
        names = [r.name for r in self.receivers]
        if len(names) != len(set(names)):
            raise ValueError("receiver names must be unique")
        if self.restart_max_s < self.restart_min_s:
            raise ValueError("restart_max_s must be at least restart_min_s")
        return self


class TwilioSettings(_Section):
    """SMS and voice through Twilio (or, in tests and the demo, the local phone network simulator)."""

    #: Off: ladders still run (MQTT steps, timers) but SMS and call steps are recorded as not sent.
    enabled: bool = False
    account_sid: str = Field("", pattern=r"^(AC[0-9a-fA-F]{32})?$")
    auth_token: SecretStr = SecretStr("")
    #: The gateway's Twilio number: the sender of SMS and calls, and where wearables and responders text.
    from_number: str = Field("", pattern=r"^(\+[1-9][0-9]{7,14})?$")
    #: The Twilio-compatible API's base URL. Absent in production (api.twilio.com); the simulator's URL in tests.
    api_base_url: str | None = None
    #: How Twilio reaches this gateway (the public HTTPS URL of this server, as configured at Twilio): webhooks
    #: and status callbacks are built on it and their signatures are checked against it.
    public_url: str = ""
    #: A send that fails with 429, 5xx or a network error is retried after an exponential, jittered delay
    #: between these bounds, until it has been tried `max_attempts` times (then recorded as failed).
    retry_min_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(8, ge=1, le=100)
    #: Seconds a call rings before Twilio gives up (no-answer).
    ring_timeout_s: int = Field(25, ge=5, le=600)

    @model_validator(mode="after")
    def _complete(self) -> TwilioSettings:
        if self.enabled:
            missing = [
                name
                for name, value in (
                    ("account_sid", self.account_sid),
                    ("auth_token", self.auth_token.get_secret_value()),
                    ("from_number", self.from_number),
                    ("public_url", self.public_url),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"enabled needs {', '.join(missing)}")
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must be at least retry_min_s")
        return self


class EscalationSettings(_Section):
    """Escalation ladders: people and policies (docs/ESCALATION.md)."""

    #: A directory file loaded into the database at start-up when it differs from the current one
    #: (`panic-gateway escalation load` does the same at any time). None: keep what the database has.
    file: Path | None = None
    #: How often due ladder timers are looked for (a step's deadline is met within about this much).
    tick_s: float = Field(0.5, gt=0, le=10)
    #: Site time zone for the times in SMS and calls (IANA name).
    time_zone: str = "UTC"

    @model_validator(mode="after")
    def _known_zone(self) -> EscalationSettings:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"time_zone {self.time_zone!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return self


class LocationSettings(_Section):
    """Where is the wearer: the site map and the passes that locate a press (docs/LOCATION.md)."""

    #: A site map (GeoJSON) loaded into the database at start-up when it differs from the current one
    #: (`panic-gateway sites load` does the same at any time). None: keep what the database has.
    sites_file: Path | None = None


class ApiSettings(_Section):
    """The REST API for command centers and integrators (/v1/incidents...)."""

    #: Bearer tokens by client name: `Authorization: Bearer <token>`; the name is recorded as who acted.
    tokens: dict[str, SecretStr] = {}


class ConsoleSettings(_Section):
    """The operators' web console at /console/ (docs/CONSOLE.md)."""

    enabled: bool = True
    #: Keys the CSRF tokens of sessions; give every gateway behind one address the same secret (at least 32
    #: characters). Unset: a random one per process, so open pages need a reload after a restart.
    secret: SecretStr | None = Field(default=None, min_length=32)
    #: Map tiles ({z}/{x}/{y}); empty: no base map (floor plans, rooms and coordinates still show, offline).
    tile_url: str = ""
    tile_attribution: str = ""
    tile_max_zoom: int = Field(default=19, ge=1, le=24)
    #: Leaflet's dist/ folder (npm package); None: node_modules/leaflet/dist beside the gateway package.
    leaflet_dir: Path | None = None


class LogFormat(enum.StrEnum):
    CONSOLE = "console"
    JSON = "json"


class LogSettings(_Section):
    level: str = "INFO"
    format: LogFormat = LogFormat.CONSOLE


class GatewaySettings(BaseSettings):
    """All of the gateway's settings. Load with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="PANIC_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )
    _toml_file: ClassVar[Path | None] = None

    #: Names this process in MQTT status topics and in outbox leases; stable across restarts.
    gateway_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    mqtt: MqttSettings = MqttSettings()
    pki: PkiSettings = PkiSettings()
    auth: AuthSettings = AuthSettings()
    ble: BleSettings = BleSettings()
    twilio: TwilioSettings = TwilioSettings()
    escalation: EscalationSettings = EscalationSettings()
    location: LocationSettings = LocationSettings()
    api: ApiSettings = ApiSettings()
    console: ConsoleSettings = ConsoleSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


def load_settings(path: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Read settings from a TOML file (optional) and PANIC_* variables; raise ConfigError with every problem."""
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist", problems=[])
    try:
        GatewaySettings._toml_file = path
        return GatewaySettings(**overrides)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"{path or 'settings'}: {len(problems)} problem(s)", problems=problems) from None
    except (OSError, ValueError) as exc:  # TOML syntax errors surface as ValueError
        raise ConfigError(f"{path}: {exc}", problems=[str(exc)]) from None
    finally:
        GatewaySettings._toml_file = None
