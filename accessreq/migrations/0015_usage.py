"""What usage suggests, kept per token for security's list of suggestions; and the token lists sorted by last use:
an index over live tokens in that order, most recent first and never used last, read backwards for the other
direction. The index is written per database: PostgreSQL's DESC puts nulls first unless told, and SQLite refuses
NULLS LAST in an index but puts nulls last under DESC anyway."""

import django.db.models.deletion
from django.db import migrations, models

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
        ("accessreq", "0014_write_budget"),
    ]

    operations = [
        migrations.RunPython(create, drop),
        migrations.CreateModel(
            name="TokenSuggestion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("drop", "Drop unused access"),
                            ("narrow", "Narrow a wildcard"),
                            ("retire", "Retire (unused)"),
                        ],
                        max_length=8,
                    ),
                ),
                ("text", models.CharField(max_length=1000)),
                ("since", models.DateTimeField()),
                (
                    "token",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="suggestions",
                        to="accessreq.token",
                    ),
                ),
            ],
            options={
                "ordering": ["token", "kind", "text"],
                "indexes": [models.Index(fields=["kind", "token"], name="suggestion_by_kind")],
            },
        ),
    ]
