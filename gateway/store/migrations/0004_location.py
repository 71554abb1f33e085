from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_escalation')]

    initial = False

    operations = [
        ops.CreateModel(
            name='CellTower',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('radio', fields.CharField(max_length=8)),
                ('mcc', fields.SmallIntField()),
                ('mnc', fields.SmallIntField()),
                ('area', fields.IntField()),
                ('cell', fields.BigIntField()),
                ('lat', fields.FloatField()),
                ('lon', fields.FloatField()),
                ('range_m', fields.FloatField()),
                ('samples', fields.IntField(default=0)),
            ],
            options={'table': 'cell_towers', 'app': 'models', 'unique_together': (('radio', 'mcc', 'mnc', 'area', 'cell'),), 'pk_attr': 'id', 'table_description': "Offline cell database (OpenCellID's format): where a cell's antenna is believed to be."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SiteMapVersion',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('document', fields.TextField(unique=False)),
                ('source', fields.CharField(max_length=255)),
                ('loaded_by', fields.CharField(max_length=64)),
                ('loaded_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'site_map_versions', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Every site map (sites, zones, buildings, floors, rooms) loaded, newest wins: the GeoJSON as validated.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Incident',
            name='location_source',
            field=fields.CharField(null=True, max_length=16),
        ),
        ops.AddField(
            model_name='Incident',
            name='location_why',
            field=fields.CharField(null=True, max_length=255),
        ),
        ops.AddField(
            model_name='Incident',
            name='place_building',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Incident',
            name='place_floor',
            field=fields.SmallIntField(null=True),
        ),
        ops.AddField(
            model_name='Incident',
            name='place_room',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Incident',
            name='place_site',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Incident',
            name='place_text',
            field=fields.CharField(null=True, max_length=255),
        ),
        ops.AddField(
            model_name='Incident',
            name='place_zone',
            field=fields.CharField(null=True, max_length=64),
        ),
    ]
