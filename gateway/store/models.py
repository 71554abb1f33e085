"""Tortoise models: devices, signals, incidents with their append-only event log, and the outbox."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class Device(Model):
    """A registered wearable: who wears it, its certificate, and its replay window."""

    device_id = fields.CharField(primary_key=True, max_length=32)
    wearer = fields.CharField(max_length=128)
    site = fields.CharField(max_length=64, default="")
    phone = fields.CharField(max_length=32, default="")
    cert_pem = fields.TextField()
    cert_fingerprint = fields.CharField(max_length=64, unique=True)
    cert_serial = fields.CharField(max_length=64)
    not_before = fields.DatetimeField()
    not_after = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    revoked_reason = fields.CharField(max_length=128, null=True)
    # Highest counter accepted, -1 before the first signal.
    counter_high = fields.BigIntField(default=-1)
    # Bit i set = counter (counter_high - i) was accepted; at most 63 bits so it fits a signed BIGINT.
    counter_mask = fields.BigIntField(default=0)
    last_seen_at = fields.DatetimeField(null=True)
    battery = fields.SmallIntField(null=True)
    # BLE receiver that heard the device's latest counter loudest, with that RSSI and counter.
    nearest_receiver = fields.CharField(max_length=64, null=True)
    nearest_rssi = fields.SmallIntField(null=True)
    nearest_counter = fields.BigIntField(null=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "devices"


class Revocation(Model):
    """Deny list: a revoked certificate stays denied even if its device is re-registered."""

    id = fields.BigIntField(primary_key=True)
    cert_serial = fields.CharField(max_length=64)
    cert_fingerprint = fields.CharField(max_length=64, unique=True)
    device_id = fields.CharField(max_length=32, db_index=True)
    revoked_at = fields.DatetimeField()
    reason = fields.CharField(max_length=128, null=True)

    class Meta:
        table = "revocations"


class Incident(Model):
    """One press that needs a person. Its id is derived from (device, counter), so retries name it again."""

    id = fields.CharField(primary_key=True, max_length=36)
    device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name="incidents", on_delete=fields.RESTRICT
    )
    counter = fields.BigIntField()
    event = fields.CharField(max_length=16)
    state = fields.CharField(max_length=16, db_index=True)
    revision = fields.IntField(default=1)
    device_time = fields.DatetimeField()
    received_at = fields.DatetimeField()
    delayed = fields.BooleanField(default=False)
    test = fields.BooleanField(default=False)
    battery = fields.SmallIntField(null=True)
    lat = fields.FloatField(null=True)
    lon = fields.FloatField(null=True)
    accuracy_m = fields.IntField(null=True)
    fix_age_s = fields.IntField(null=True)
    transport = fields.CharField(max_length=16)
    acknowledged_by = fields.CharField(max_length=64, null=True)
    acknowledged_at = fields.DatetimeField(null=True)
    # 4 digits a responder replies by SMS to acknowledge (derived from the id, see short_code_for).
    short_code = fields.CharField(max_length=8, default="", db_index=True)
    # false-alarm, handled or dispatched, with who closed it and when.
    resolution = fields.CharField(max_length=16, null=True)
    resolved_by = fields.CharField(max_length=64, null=True)
    resolved_at = fields.DatetimeField(null=True)
    # The fused location (gateway.location.fusion): what lat, lon and accuracy_m rest on (gps, cell, ble,
    # last-known or none), where in the site model, the place text responders read, and why.
    location_source = fields.CharField(max_length=16, null=True)
    place_site = fields.CharField(max_length=64, null=True)
    place_building = fields.CharField(max_length=64, null=True)
    place_floor = fields.SmallIntField(null=True)
    place_room = fields.CharField(max_length=64, null=True)
    place_zone = fields.CharField(max_length=64, null=True)
    place_text = fields.CharField(max_length=255, null=True)
    location_why = fields.CharField(max_length=255, null=True)
    updated_at = fields.DatetimeField()

    device_id: str

    class Meta:
        table = "incidents"
        unique_together = (("device", "counter"),)
        # The console's live stream reads what changed since a time, its lists page by arrival.
        indexes = (("updated_at",), ("received_at",))


class IncidentEvent(Model):
    """Append-only log of what happened to an incident, never updated or deleted."""

    id = fields.BigIntField(primary_key=True)
    incident: fields.ForeignKeyRelation[Incident] = fields.ForeignKeyField(
        "models.Incident", related_name="events", on_delete=fields.RESTRICT
    )
    event_id = fields.CharField(max_length=64, unique=True)
    revision = fields.IntField()
    type = fields.CharField(max_length=32)
    at = fields.DatetimeField()
    detail: dict[str, Any] = fields.JSONField(default=dict)

    incident_id: str

    class Meta:
        table = "incident_events"


class Signal(Model):
    """Every accepted signal, unique per (device, counter): the authority on replays and retries."""

    id = fields.BigIntField(primary_key=True)
    device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name="signals", on_delete=fields.RESTRICT
    )
    counter = fields.BigIntField()
    event = fields.CharField(max_length=16)
    # SHA-256 of the frame bytes: the same frame retried (even re-signed) has the same digest.
    frame_digest = fields.CharField(max_length=64)
    frame = fields.BinaryField()
    transport = fields.CharField(max_length=16)
    device_time = fields.DatetimeField()
    received_at = fields.DatetimeField()
    incident_id = fields.CharField(max_length=36, null=True)

    device_id: str

    class Meta:
        table = "signals"
        unique_together = (("device", "counter"),)


class Observation(Model):
    """Append-only: every time a press or heartbeat reached this gateway (each receiver, each transport)."""

    id = fields.BigIntField(primary_key=True)
    # The incident the signal belongs to, null for heartbeats.
    incident_id = fields.CharField(max_length=36, null=True, db_index=True)
    device_id = fields.CharField(max_length=32, db_index=True)
    counter = fields.BigIntField()
    event = fields.CharField(max_length=16)
    # https, sms or ble.
    transport = fields.CharField(max_length=16)
    # BLE receiver name and RSSI in dBm, null for other transports.
    receiver = fields.CharField(max_length=64, null=True)
    rssi = fields.SmallIntField(null=True)
    received_at = fields.DatetimeField()
    gateway_id = fields.CharField(max_length=64)

    class Meta:
        table = "observations"


class OutboxMessage(Model):
    """A side effect to perform at least once (MQTT publish now, SMS and calls later)."""

    id = fields.BigIntField(primary_key=True)
    # Idempotency key, unique: the consumer-visible event id or "<alert>:state:<revision>".
    key = fields.CharField(max_length=96, unique=True)
    channel = fields.CharField(max_length=16)
    alert_id = fields.CharField(max_length=36, db_index=True)
    # What to do: "state" (retained alert state) or "event" (alert event stream).
    kind = fields.CharField(max_length=16)
    payload = fields.BinaryField()
    retain = fields.BooleanField(default=False)
    # For state messages: the incident revision, so an older state never overwrites a newer one.
    revision = fields.IntField(default=0)
    status = fields.CharField(max_length=12, default="pending")
    attempts = fields.IntField(default=0)
    claimed_by = fields.CharField(max_length=64, null=True)
    claimed_until = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox"
        indexes = (("status", "claimed_until"),)


class Ladder(Model):
    """The escalation ladder of one incident: its state machine snapshot and its durable timer."""

    incident_id = fields.CharField(primary_key=True, max_length=36)
    site = fields.CharField(max_length=64, default="")
    # gateway.core.ladder.LadderState.to_json(), null until the ladder started (a policy was resolved).
    state: dict[str, Any] | None = fields.JSONField(null=True)
    # True while a timer or a send outcome can still move it.
    active = fields.BooleanField(default=True)
    # When the runner must look at it next (start, step deadline), null when nothing is due.
    next_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "ladders"
        indexes = (("active", "next_at"),)


class Notification(Model):
    """One SMS or call the ladder decided to make: an outbox row with the provider's answer and statuses."""

    id = fields.BigIntField(primary_key=True)
    # Idempotency key from the ladder (incident, step, channel, target): a send is decided once.
    key = fields.CharField(max_length=200, unique=True)
    incident_id = fields.CharField(max_length=36, db_index=True)
    step = fields.SmallIntField()
    # sms or voice.
    channel = fields.CharField(max_length=8)
    # alert, broadcast or cancelled.
    purpose = fields.CharField(max_length=12)
    target_key = fields.CharField(max_length=128)
    target_name = fields.CharField(max_length=128)
    phone = fields.CharField(max_length=20, db_index=True)
    # The SMS text, or what the call says.
    body = fields.TextField()
    # pending, sending (a request may have reached the provider), then the provider's statuses.
    status = fields.CharField(max_length=16, default="pending")
    provider_sid = fields.CharField(max_length=40, null=True, db_index=True)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    claimed_by = fields.CharField(max_length=64, null=True)
    claimed_until = fields.DatetimeField(null=True)
    error = fields.CharField(max_length=255, null=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "notifications"
        indexes = (("status", "next_attempt_at"),)


class DirectoryVersion(Model):
    """Every escalation directory (people and policies) loaded, newest wins: the file text as validated."""

    id = fields.BigIntField(primary_key=True)
    document = fields.TextField()
    source = fields.CharField(max_length=255)
    loaded_by = fields.CharField(max_length=64)
    loaded_at = fields.DatetimeField()

    class Meta:
        table = "directory_versions"


class CellTower(Model):
    """Offline cell database (OpenCellID's format): where a cell's antenna is believed to be."""

    id = fields.BigIntField(primary_key=True)
    # gsm, umts, lte or nr.
    radio = fields.CharField(max_length=8)
    mcc = fields.SmallIntField()
    mnc = fields.SmallIntField()
    # LAC (gsm, umts) or TAC (lte, nr).
    area = fields.IntField()
    cell = fields.BigIntField()
    lat = fields.FloatField()
    lon = fields.FloatField()
    range_m = fields.FloatField()
    samples = fields.IntField(default=0)

    class Meta:
        table = "cell_towers"
        unique_together = (("radio", "mcc", "mnc", "area", "cell"),)


class SiteMapVersion(Model):
    """Every site map (sites, zones, buildings, floors, rooms) loaded, newest wins: the GeoJSON as validated."""

    id = fields.BigIntField(primary_key=True)
    document = fields.TextField()
    source = fields.CharField(max_length=255)
    loaded_by = fields.CharField(max_length=64)
    loaded_at = fields.DatetimeField()

    class Meta:
        table = "site_map_versions"


class Operator(Model):
    """A person who signs in to the web console, with a role that says what they may do."""

    id = fields.BigIntField(primary_key=True)
    # Sign-in name, [a-z0-9._-]{1,64}.
    name = fields.CharField(max_length=64, unique=True)
    display_name = fields.CharField(max_length=128)
    # viewer, operator, supervisor or admin (gateway.console.auth.Role).
    role = fields.CharField(max_length=16)
    # scrypt$n$r$p$salt$hash (gateway.console.auth.hash_password), never the password itself.
    password_hash = fields.CharField(max_length=255)
    disabled = fields.BooleanField(default=False)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "operators"


class OperatorSession(Model):
    """A signed-in console session, found by the SHA-256 of its token (the token itself is never stored)."""

    id = fields.BigIntField(primary_key=True)
    operator: fields.ForeignKeyRelation[Operator] = fields.ForeignKeyField(
        "models.Operator", related_name="sessions", on_delete=fields.CASCADE
    )
    token_digest = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)
    last_seen_at = fields.DatetimeField()
    # Client address at sign-in, for the audit trail.
    address = fields.CharField(max_length=64, default="")

    operator_id: int

    class Meta:
        table = "operator_sessions"


class ApiToken(Model):
    """A bearer token for machines, found by the SHA-256 of its value, with a role like an operator's."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    token_digest = fields.CharField(max_length=64, unique=True)
    role = fields.CharField(max_length=16)
    created_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_tokens"


class AuditEntry(Model):
    """Append-only record of what an operator or token did to what, never updated or deleted."""

    id = fields.BigIntField(primary_key=True)
    at = fields.DatetimeField(db_index=True)
    # Operator name, token name or cli.
    actor = fields.CharField(max_length=64)
    action = fields.CharField(max_length=64)
    target = fields.CharField(max_length=128, default="")
    detail: dict[str, Any] = fields.JSONField(default=dict)

    class Meta:
        table = "audit_log"
