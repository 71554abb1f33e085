from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Observation',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('incident_id', fields.CharField(null=True, db_index=True, max_length=36)),
                ('device_id', fields.CharField(db_index=True, max_length=32)),
                ('counter', fields.BigIntField()),
                ('event', fields.CharField(max_length=16)),
                ('transport', fields.CharField(max_length=16)),
                ('receiver', fields.CharField(null=True, max_length=64)),
                ('rssi', fields.SmallIntField(null=True)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('gateway_id', fields.CharField(max_length=64)),
            ],
            options={'table': 'observations', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Append-only: every time a press or heartbeat reached this gateway (each receiver, each transport).'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Device',
            name='nearest_counter',
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name='Device',
            name='nearest_receiver',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Device',
            name='nearest_rssi',
            field=fields.SmallIntField(null=True),
        ),
    ]
