"""Lists that stay fast as the token table grows: a token's soonest password expiry, "every password expired" and
its attention rank live on the token row, kept by triggers on password slots (in the same transaction as the slot's
change), and indexes match the lists' filters and orderings."""

from django.conf import settings
from django.db import migrations, models

from accessreq import passwordsummary

def install(apps, schema_editor):
    passwordsummary.install(schema_editor.connection)


def uninstall(apps, schema_editor):
    passwordsummary.uninstall(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ("accessreq", "0012_reliability"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="token",
            name="passwords_expired",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.AddField(
            model_name="token",
            name="next_expiry",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="token",
            name="attention",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Case(
                    models.When(orphaned_at__isnull=False, then=models.Value(0)),
                    models.When(drift_actions__isnull=False, then=models.Value(1)),
                    models.When(passwords_expired=True, then=models.Value(2)),
                    default=models.Value(3),
                ),
                output_field=models.SmallIntegerField(),
            ),
        ),
        migrations.RunPython(install, uninstall),
        migrations.AddIndex(
            model_name="accessrequest",
            index=models.Index(fields=["owner", "-created_at", "-id"], name="request_owner_newest"),
        ),
        migrations.AddIndex(
            model_name="token",
            index=models.Index(
                condition=models.Q(("status__in", ["active", "disabled", "retiring"])),
                fields=["attention", "next_expiry", "retire_on", "id"],
                name="token_live_by_attention",
            ),
        ),
        migrations.AddIndex(
            model_name="token",
            index=models.Index(
                fields=["status", "attention", "next_expiry", "retire_on", "id"], name="token_by_attention"
            ),
        ),
        migrations.AddIndex(
            model_name="token",
            index=models.Index(fields=["team"], name="token_team"),
        ),
    ]
