from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Device',
            fields=[
                ('device_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32)),
                ('wearer', fields.CharField(max_length=128)),
                ('site', fields.CharField(default='', max_length=64)),
                ('phone', fields.CharField(default='', max_length=32)),
                ('cert_pem', fields.TextField(unique=False)),
                ('cert_fingerprint', fields.CharField(unique=True, max_length=64)),
                ('cert_serial', fields.CharField(max_length=64)),
                ('not_before', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('not_after', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revoked_reason', fields.CharField(null=True, max_length=128)),
                ('counter_high', fields.BigIntField(default=-1)),
                ('counter_mask', fields.BigIntField(default=0)),
                ('last_seen_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('battery', fields.SmallIntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'devices', 'app': 'models', 'pk_attr': 'device_id', 'table_description': 'A registered wearable: who wears it, its certificate, and its replay window.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Incident',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=36)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='device_id', related_name='incidents', on_delete=OnDelete.RESTRICT)),
                ('counter', fields.BigIntField()),
                ('event', fields.CharField(max_length=16)),
                ('state', fields.CharField(db_index=True, max_length=16)),
                ('revision', fields.IntField(default=1)),
                ('device_time', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('delayed', fields.BooleanField(default=False)),
                ('test', fields.BooleanField(default=False)),
                ('battery', fields.SmallIntField(null=True)),
                ('lat', fields.FloatField(null=True)),
                ('lon', fields.FloatField(null=True)),
                ('accuracy_m', fields.IntField(null=True)),
                ('fix_age_s', fields.IntField(null=True)),
                ('transport', fields.CharField(max_length=16)),
                ('acknowledged_by', fields.CharField(null=True, max_length=64)),
                ('acknowledged_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'incidents', 'app': 'models', 'unique_together': (('device', 'counter'),), 'pk_attr': 'id', 'table_description': 'One press that needs a person. Its id is derived from (device, counter), so retries name it again.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='IncidentEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('incident', fields.ForeignKeyField('models.Incident', source_field='incident_id', db_constraint=True, to_field='id', related_name='events', on_delete=OnDelete.RESTRICT)),
                ('event_id', fields.CharField(unique=True, max_length=64)),
                ('revision', fields.IntField()),
                ('type', fields.CharField(max_length=32)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('detail', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
            ],
            options={'table': 'incident_events', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Append-only log of what happened to an incident, never updated or deleted.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OutboxMessage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.CharField(unique=True, max_length=96)),
                ('channel', fields.CharField(max_length=16)),
                ('alert_id', fields.CharField(db_index=True, max_length=36)),
                ('kind', fields.CharField(max_length=16)),
                ('payload', fields.BinaryField()),
                ('retain', fields.BooleanField(default=False)),
                ('revision', fields.IntField(default=0)),
                ('status', fields.CharField(default='pending', max_length=12)),
                ('attempts', fields.IntField(default=0)),
                ('claimed_by', fields.CharField(null=True, max_length=64)),
                ('claimed_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('delivered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'outbox', 'app': 'models', 'indexes': [Index(fields=['status', 'claimed_until'])], 'pk_attr': 'id', 'table_description': 'A side effect to perform at least once (MQTT publish now, SMS and calls later).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Revocation',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('cert_serial', fields.CharField(max_length=64)),
                ('cert_fingerprint', fields.CharField(unique=True, max_length=64)),
                ('device_id', fields.CharField(db_index=True, max_length=32)),
                ('revoked_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('reason', fields.CharField(null=True, max_length=128)),
            ],
            options={'table': 'revocations', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Deny list: a revoked certificate stays denied even if its device is re-registered.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Signal',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='device_id', related_name='signals', on_delete=OnDelete.RESTRICT)),
                ('counter', fields.BigIntField()),
                ('event', fields.CharField(max_length=16)),
                ('frame_digest', fields.CharField(max_length=64)),
                ('frame', fields.BinaryField()),
                ('transport', fields.CharField(max_length=16)),
                ('device_time', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('incident_id', fields.CharField(null=True, max_length=36)),
            ],
            options={'table': 'signals', 'app': 'models', 'unique_together': (('device', 'counter'),), 'pk_attr': 'id', 'table_description': 'Every accepted signal, unique per (device, counter): the authority on replays and retries.'},
            bases=['Model'],
        ),
    ]
