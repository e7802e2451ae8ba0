"""A token's password summary (soonest expiry of a password in use, "every password expired"), kept on the token
row by database triggers on password slots, in the same transaction as the slot's change, whichever code changes
it. Lists sort and filter on these columns through indexes instead of aggregating every token's slots.

On SQLite, remaking a table (how Django alters one) drops that table's triggers, and renaming the remade table trips
over triggers that name it: connections turn on `legacy_alter_table`, and `install` runs again after every migrate.
"""

from __future__ import annotations

from typing import Any

# SlotStatus values: a password a client may hold (revealed, waiting for its reveal, or delivered to Key Vault), and
# those plus one being made.
IN_USE = "('revealed', 'awaiting', 'delivered')"
HELD = "('revealed', 'awaiting', 'delivered', 'generating')"


def _expiry(token: str) -> str:
    return (
        f"(SELECT MIN(s.expires_at) FROM accessreq_passwordslot s"
        f" WHERE s.token_id = {token} AND s.status IN {IN_USE})"
    )


def _expired(token: str) -> str:
    return (
        f"(NOT EXISTS (SELECT 1 FROM accessreq_passwordslot s WHERE s.token_id = {token} AND s.status IN {HELD})"
        f" AND EXISTS (SELECT 1 FROM accessreq_passwordslot s WHERE s.token_id = {token} AND s.status = 'expired'))"
    )


POSTGRES = f"""
CREATE OR REPLACE FUNCTION accessreq_token_passwords() RETURNS trigger AS $$
DECLARE
    tid bigint;
    expiry timestamptz;
    expired boolean;
BEGIN
    FOR tid IN SELECT DISTINCT x FROM unnest(ARRAY[
        CASE WHEN TG_OP <> 'INSERT' THEN OLD.token_id END,
        CASE WHEN TG_OP <> 'DELETE' THEN NEW.token_id END]) AS x WHERE x IS NOT NULL
    LOOP
        expiry := {_expiry("tid")};
        expired := {_expired("tid")};
        UPDATE accessreq_token SET next_expiry = expiry, passwords_expired = expired
        WHERE id = tid AND (next_expiry IS DISTINCT FROM expiry OR passwords_expired IS DISTINCT FROM expired);
    END LOOP;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS accessreq_passwordslot_summary ON accessreq_passwordslot;
CREATE TRIGGER accessreq_passwordslot_summary
AFTER INSERT OR DELETE OR UPDATE OF status, expires_at, token_id ON accessreq_passwordslot
FOR EACH ROW EXECUTE FUNCTION accessreq_token_passwords();
"""

POSTGRES_DROP = """
DROP TRIGGER IF EXISTS accessreq_passwordslot_summary ON accessreq_passwordslot;
DROP FUNCTION IF EXISTS accessreq_token_passwords();
"""


def _sqlite_trigger(name: str, event: str, row: str) -> str:
    token = f"{row}.token_id"
    return (
        f"CREATE TRIGGER IF NOT EXISTS accessreq_passwordslot_summary_{name}"
        f" AFTER {event} ON accessreq_passwordslot BEGIN "
        f"UPDATE accessreq_token SET next_expiry = {_expiry(token)}, passwords_expired = {_expired(token)} "
        f"WHERE id = {token}; END;"
    )


SQLITE = [
    _sqlite_trigger("insert", "INSERT", "NEW"),
    _sqlite_trigger("update", "UPDATE OF status, expires_at, token_id", "NEW"),
    _sqlite_trigger("update_old", "UPDATE OF token_id", "OLD"),
    _sqlite_trigger("delete", "DELETE", "OLD"),
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS accessreq_passwordslot_summary_{name};"
    for name in ("insert", "update", "update_old", "delete")
]
BACKFILL = (
    f"UPDATE accessreq_token SET next_expiry = {_expiry('accessreq_token.id')}, "
    f"passwords_expired = {_expired('accessreq_token.id')}"
)


def install(connection: Any, backfill: bool = True) -> None:
    vendor = connection.vendor
    if vendor == "postgresql":
        _run(connection, POSTGRES)
    elif vendor == "sqlite":
        for statement in SQLITE:
            _run(connection, statement)
    else:
        raise NotImplementedError(f"No password-slot triggers for {vendor}.")
    if backfill:
        _run(connection, BACKFILL)


def uninstall(connection: Any) -> None:
    if connection.vendor == "postgresql":
        _run(connection, POSTGRES_DROP)
    else:
        for statement in SQLITE_DROP:
            _run(connection, statement)




def _run(connection: Any, sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def installed(connection: Any) -> bool:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT COUNT(*) FROM sqlite_master"
                " WHERE type = 'trigger' AND name LIKE 'accessreq_passwordslot_summary%'"
            )
            return cursor.fetchone()[0] == len(SQLITE)
        cursor.execute("SELECT COUNT(*) FROM pg_trigger WHERE tgname = 'accessreq_passwordslot_summary'")
        return cursor.fetchone()[0] == 1


def after_migrate(using: str = "default", **kwargs: object) -> None:
    """Put back triggers a table remake dropped, and correct the rows written while they were missing."""
    from django.db import connections

    connection = connections[using]
    if connection.vendor not in ("sqlite", "postgresql"):
        return
    tables = connection.introspection.table_names()
    if "accessreq_passwordslot" in tables and "accessreq_token" in tables and not installed(connection):
        with connection.cursor() as cursor:
            columns = {c.name for c in connection.introspection.get_table_description(cursor, "accessreq_token")}
        if "passwords_expired" in columns:
            install(connection)


def on_connect(sender: object, connection: Any, **kwargs: object) -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA legacy_alter_table = ON")
