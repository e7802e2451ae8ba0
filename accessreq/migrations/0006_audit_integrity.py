"""The audit log becomes a keyed MAC chain with anchors, and the database refuses to change either table.

Rows written before this migration were hashed with plain SHA-256. Nothing can re-sign them (the table is
append-only and they must keep the hash they were written with), so they are marked, not rewritten: `key_id` is
added with the one-off value "legacy-sha256", which every existing row takes as the column is created and which no
later row can get by default (the model's field has none). That needs no UPDATE of audit rows, which the triggers
below would refuse anyway, and it keeps the marking in the schema change itself, atomic with it. `verify` accepts
legacy rows only before the first keyed one, and anchors cover the legacy prefix like any other row.

The triggers refuse UPDATE and DELETE on both tables (and TRUNCATE on PostgreSQL). They stop the application and
a careless hand; they do not stop the tables' owner, who can drop them. What shows that owner's changes is the MAC
chain and the anchors kept outside the database. On PostgreSQL a transaction may lift them with
`SET LOCAL accessreq.audit_maintenance = 'on'`: the test suite does so to empty the database between tests (Django's
flush TRUNCATEs every table), and an operator who must remove rows can do the same, in the open. Production should
in addition REVOKE UPDATE, DELETE, TRUNCATE on these tables from the application's role (see README).

SQLite keeps no per-session settings a trigger could read, so there the triggers are unconditional and whoever must
lift them (the tests' flush) drops and re-creates them inside one transaction, as an owner could. A later migration
that makes SQLite rebuild either table drops its triggers with it, and must create them again.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

TABLES = ("accessreq_auditevent", "accessreq_auditanchor")

POSTGRESQL_FUNCTION = """
CREATE FUNCTION accessreq_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('accessreq.audit_maintenance', true) = 'on' THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    -- restrict_violation (class 23), so that both databases raise an IntegrityError.
    RAISE EXCEPTION '% on % refused: the audit log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
"""


def _postgresql_triggers(table):
    return [
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION accessreq_audit_append_only();",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION accessreq_audit_append_only();",
    ]


def _sqlite_triggers(table):
    return [
        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{op} on {table} refused: the audit log is append-only'); END;"
        for op in ("UPDATE", "DELETE")
    ]


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_FUNCTION, params=None)  # "%" is plpgsql's, not a placeholder
        for table in TABLES:
            for sql in _postgresql_triggers(table):
                schema_editor.execute(sql)
    elif vendor == "sqlite":
        for table in TABLES:
            for sql in _sqlite_triggers(table):
                schema_editor.execute(sql)


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};")
        schema_editor.execute("DROP FUNCTION IF EXISTS accessreq_audit_append_only();")
    elif vendor == "sqlite":
        for table in TABLES:
            for op in ("update", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op};")


class Migration(migrations.Migration):

    dependencies = [
        ('accessreq', '0005_slot_recovery'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditAnchor',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('event_count', models.PositiveBigIntegerField()),
                ('last_event_id', models.BigIntegerField(help_text='0 when the log was empty.')),
                ('last_hash', models.CharField(max_length=64)),
                ('key_id', models.CharField(max_length=16)),
                ('mac', models.CharField(max_length=64)),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
        # Every row that exists now was hashed without a key: the one-off default marks exactly those.
        migrations.AddField(
            model_name='auditevent',
            name='key_id',
            field=models.CharField(default='legacy-sha256', max_length=16),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='actor',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        # Last, after any table rebuild above, which on SQLite would drop them again.
        migrations.RunPython(create_triggers, drop_triggers, elidable=False),
    ]
