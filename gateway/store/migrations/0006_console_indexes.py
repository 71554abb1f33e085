from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0005_operators')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='Incident',
            index=Index(fields=['updated_at']),
        ),
        ops.AddIndex(
            model_name='Incident',
            index=Index(fields=['received_at']),
        ),
    ]
