"""The token lists sorted by last use: an index over live tokens in that order, most recent first and never used
last, read backwards for the other direction. Written per database: PostgreSQL's DESC puts nulls first unless told,
and SQLite refuses NULLS LAST in an index but puts nulls last under DESC anyway."""

from django.db import migrations

LIVE = "('active', 'disabled', 'retiring')"


def create(apps, schema_editor):  # noqa: ANN001, ANN201
    nulls = " NULLS LAST" if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(
        f"CREATE INDEX token_live_by_last_use ON accessreq_token (last_used_at DESC{nulls}, id DESC) "
        f"WHERE status IN {LIVE}"
    )


def drop(apps, schema_editor):  # noqa: ANN001, ANN201
    schema_editor.execute("DROP INDEX IF EXISTS token_live_by_last_use")


class Migration(migrations.Migration):
    dependencies = [
        ("accessreq", "0013_performance"),
    ]

    operations = [migrations.RunPython(create, drop)]
