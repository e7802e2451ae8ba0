"""The shared bucket of Azure Resource Manager writes, for deployments without Redis."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accessreq", "0013_performance"),
    ]

    operations = [
        migrations.CreateModel(
            name="ArmWriteBudget",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("subscription_id", models.CharField(max_length=64, unique=True)),
                ("tokens", models.FloatField()),
                ("stamp", models.FloatField()),
                ("not_before", models.FloatField(default=0)),
                ("version", models.PositiveBigIntegerField(default=0)),
            ],
        ),
    ]
