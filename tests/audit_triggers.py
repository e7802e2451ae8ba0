"""Lifting the audit tables' append-only triggers for one transaction, as the tables' owner could.

The tests' attacks use it, and so does the flush that empties the database after a transactional test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction

AUDIT_TABLES = ("accessreq_auditevent", "accessreq_auditanchor")


@contextmanager
def triggers_lifted(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    connection = connections[using]
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            # The setting the trigger function reads (migration 0005). SET LOCAL would outlive this block when it
            # is a savepoint inside a test's transaction, so it is switched off again on the way out.
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('accessreq.audit_maintenance', 'on', true)")
            try:
                yield
            finally:
                if not connection.needs_rollback:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT set_config('accessreq.audit_maintenance', 'off', true)")
            return
        # SQLite: no setting a trigger could read, so drop them and make them again, all in this transaction.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN (%s, %s)", AUDIT_TABLES
            )
            triggers = cursor.fetchall()
            for name, _ in triggers:
                cursor.execute(f'DROP TRIGGER "{name}"')
        yield
        with connection.cursor() as cursor:
            for _, sql in triggers:
                cursor.execute(sql)


def tamper(sql: str, params: tuple[object, ...] = (), using: str = DEFAULT_DB_ALIAS) -> None:
    """Run SQL on the audit tables as an attacker with the owner's access would."""
    with triggers_lifted(using), connections[using].cursor() as cursor:
        cursor.execute(sql, params)
