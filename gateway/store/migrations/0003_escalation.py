from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_observations')]

    initial = False

    operations = [
        ops.CreateModel(
            name='DirectoryVersion',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('document', fields.TextField(unique=False)),
                ('source', fields.CharField(max_length=255)),
                ('loaded_by', fields.CharField(max_length=64)),
                ('loaded_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'directory_versions', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Every escalation directory (people and policies) loaded, newest wins: the file text as validated.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Ladder',
            fields=[
                ('incident_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=36)),
                ('site', fields.CharField(default='', max_length=64)),
                ('state', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('active', fields.BooleanField(default=True)),
                ('next_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'ladders', 'app': 'models', 'indexes': [Index(fields=['active', 'next_at'])], 'pk_attr': 'incident_id', 'table_description': 'The escalation ladder of one incident: its state machine snapshot and its durable timer.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Notification',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.CharField(unique=True, max_length=200)),
                ('incident_id', fields.CharField(db_index=True, max_length=36)),
                ('step', fields.SmallIntField()),
                ('channel', fields.CharField(max_length=8)),
                ('purpose', fields.CharField(max_length=12)),
                ('target_key', fields.CharField(max_length=128)),
                ('target_name', fields.CharField(max_length=128)),
                ('phone', fields.CharField(db_index=True, max_length=20)),
                ('body', fields.TextField(unique=False)),
                ('status', fields.CharField(default='pending', max_length=16)),
                ('provider_sid', fields.CharField(null=True, db_index=True, max_length=40)),
                ('attempts', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('claimed_by', fields.CharField(null=True, max_length=64)),
                ('claimed_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('error', fields.CharField(null=True, max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'notifications', 'app': 'models', 'indexes': [Index(fields=['status', 'next_attempt_at'])], 'pk_attr': 'id', 'table_description': "One SMS or call the ladder decided to make: an outbox row with the provider's answer and statuses."},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Incident',
            name='resolution',
            field=fields.CharField(null=True, max_length=16),
        ),
        ops.AddField(
            model_name='Incident',
            name='resolved_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Incident',
            name='resolved_by',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Incident',
            name='short_code',
            field=fields.CharField(default='', db_index=True, max_length=8),
        ),
    ]
