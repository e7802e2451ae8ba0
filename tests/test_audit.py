"""The audit log: every change lands through one function, MAC-chained and anchored, so that a quiet edit shows.

The attacks below are made as someone with the database owner's access would make them: straight SQL, with the
tables' append-only triggers lifted (tests/audit_triggers.py). What they cannot have is AUDIT_KEYS.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction

from accessreq import audit
from accessreq.models import AuditAnchor, AuditEvent
from tests.audit_triggers import tamper

pytestmark = pytest.mark.django_db

OTHER_KEY = "another-audit-key-for-rotation-" + "r" * 32


def problems(anchor_file: Path | None = None) -> list[tuple[str, int | None]]:
    return [(p.kind, p.event_id) for p in audit.verify(anchor_file)]


def three(registry: object, actor: object) -> tuple[AuditEvent, AuditEvent, AuditEvent]:
    return (
        audit.record("test.one", actor=actor, target=registry, details={"n": 1}),  # type: ignore[arg-type]
        audit.record("test.two", actor=actor, target=registry, details={"amount": 1}),  # type: ignore[arg-type]
        audit.record("test.three", actor=actor, target=registry),  # type: ignore[arg-type]
    )


@pytest.fixture
def anchor_file(settings: object, tmp_path: Path) -> Path:
    settings.AUDIT_ANCHOR_FILE = tmp_path / "anchors.jsonl"  # type: ignore[attr-defined]
    return tmp_path / "anchors.jsonl"


def test_it_chains_events_with_a_keyed_mac(registry, requester, settings) -> None:
    first = audit.record("test.one", actor=requester, target=registry, details={"n": 1})
    second = audit.record("test.two", actor=None, target=registry)
    assert first.prev_hash == audit.GENESIS
    assert second.prev_hash == first.hash
    assert second.actor_name == "system"
    assert first.key_id == second.key_id == audit.key_id(settings.AUDIT_KEYS[0])
    # Not the plain SHA-256 anyone could recompute.
    assert first.hash != audit._legacy_digest(first)
    assert problems() == []
    call_command("verify_audit")


def test_it_refuses_changes_in_the_database(registry, requester) -> None:
    event = audit.record("test.one", actor=requester, target=registry)
    anchor = audit.anchor()
    statements = [
        ("UPDATE accessreq_auditevent SET action = 'test.other' WHERE id = %s", event.pk),
        ("DELETE FROM accessreq_auditevent WHERE id = %s", event.pk),
        ("UPDATE accessreq_auditanchor SET event_count = 0 WHERE id = %s", anchor.pk),
        ("DELETE FROM accessreq_auditanchor WHERE id = %s", anchor.pk),
    ]
    if connection.vendor == "postgresql":
        # The rows' deferred foreign-key checks must have run, or PostgreSQL refuses the TRUNCATE for that.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        statements += [("TRUNCATE accessreq_auditevent, accessreq_auditanchor", None)]
    for sql, pk in statements:
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [pk] if pk is not None else [])
    assert AuditEvent.objects.get(pk=event.pk).action == "test.one"
    assert AuditAnchor.objects.filter(pk=anchor.pk).exists()


def test_it_detects_an_edit(registry, requester) -> None:
    _, edited, _ = three(registry, requester)
    tamper("UPDATE accessreq_auditevent SET details = %s WHERE id = %s", ('{"amount": 2}', edited.pk))
    assert problems() == [("edited", edited.pk)]
    with pytest.raises(CommandError, match="1 problems"):
        call_command("verify_audit")


def test_it_detects_an_edit_whose_hashes_were_all_recomputed(registry, requester) -> None:
    # The attack plain SHA-256 could not see: edit a row, then recompute every hash from there on. Without the key
    # the attacker can only guess one, or claim the rows are legacy ones.
    first, edited, last = three(registry, requester)
    for kind, key_id in (("edited", edited.key_id), ("legacy-after-keyed", audit.LEGACY_KEY_ID)):
        prev = first.hash
        for event in AuditEvent.objects.filter(pk__gte=edited.pk).order_by("id"):
            if event.pk == edited.pk:
                event.details = {"amount": 1000}
            event.prev_hash, event.key_id = prev, key_id
            prev = hashlib.sha256(audit._canonical(audit._fields(event))).hexdigest()
            tamper(
                "UPDATE accessreq_auditevent SET details = %s, prev_hash = %s, hash = %s, key_id = %s WHERE id = %s",
                (json.dumps(event.details), event.prev_hash, prev, key_id, event.pk),
            )
        assert problems() == [(kind, edited.pk), (kind, last.pk)]


def test_it_detects_an_inserted_event(registry, requester) -> None:
    # Slip a row in after the first by writing it and then copying the two real ones after it.
    first, second, third = three(registry, requester)
    tamper("DELETE FROM accessreq_auditevent WHERE id >= %s", (second.pk,))
    forged = AuditEvent(
        created_at=second.created_at, actor_name="mallory", action="token.adopted", target_type="accessreq.token",
        target_id="1", target_repr="backdoor", details={}, prev_hash=first.hash, key_id=first.key_id,
    )
    forged.hash = hashlib.sha256(audit._canonical(audit._fields(forged))).hexdigest()
    forged.save()
    for real in (second, third):
        real.pk = None
        real.save()
    assert problems() == [("edited", forged.pk), ("inserted", forged.pk)]


def test_it_detects_an_event_removed_from_the_middle(registry, requester) -> None:
    _, removed, after = three(registry, requester)
    tamper("DELETE FROM accessreq_auditevent WHERE id = %s", (removed.pk,))
    assert problems() == [("removed", after.pk)]
    with pytest.raises(CommandError, match="does not hold"):
        call_command("verify_audit")


def test_it_detects_the_newest_events_removed(registry, requester, anchor_file, capsys) -> None:
    first, second, third = three(registry, requester)
    audit.anchor()
    # Truncating the tail leaves a chain that holds in itself: only the anchor knows there was more.
    tamper("DELETE FROM accessreq_auditevent WHERE id >= %s", (second.pk,))
    assert problems() == [("truncated", third.pk)]
    with pytest.raises(CommandError):
        call_command("verify_audit")
    assert f"up to event {third.pk}; the log now ends at event {first.pk} with 1" in capsys.readouterr().err


def test_it_detects_the_anchors_removed_too_against_the_anchor_file(
    registry, requester, anchor_file, django_capture_on_commit_callbacks
) -> None:
    _, second, third = three(registry, requester)
    with django_capture_on_commit_callbacks(execute=True):
        audit.anchor()
    tamper("DELETE FROM accessreq_auditevent WHERE id >= %s", (second.pk,))
    tamper("DELETE FROM accessreq_auditanchor")
    assert problems() == []  # the database alone no longer shows it
    assert problems(anchor_file) == [("truncated", third.pk)]
    with pytest.raises(CommandError, match="1 problems"):
        call_command("verify_audit", "--anchor-file", str(anchor_file))


def test_it_detects_a_rewritten_tail(registry, requester) -> None:
    # Remove the newest events and wind the id sequence back, so that the portal's next events take their ids and
    # the count matches again: the anchored hash no longer does.
    first, _, third = three(registry, requester)
    audit.anchor()
    tamper("DELETE FROM accessreq_auditevent WHERE id > %s", (first.pk,))
    if connection.vendor == "postgresql":
        tamper("SELECT setval(pg_get_serial_sequence('accessreq_auditevent', 'id'), %s)", (first.pk,))
    else:
        tamper("UPDATE sqlite_sequence SET seq = %s WHERE name = 'accessreq_auditevent'", (first.pk,))
    audit.record("test.two", actor=requester, target=registry, details={"amount": 0})
    replacement = audit.record("test.three", actor=requester, target=registry)
    assert replacement.pk == third.pk
    assert problems() == [("rewritten", third.pk)]


def test_it_detects_an_event_signed_with_an_unknown_key(registry, requester, settings) -> None:
    ours = settings.AUDIT_KEYS
    audit.record("test.one", actor=requester, target=registry)
    settings.AUDIT_KEYS = [OTHER_KEY]
    unknown = audit.record("test.two", actor=requester, target=registry)
    settings.AUDIT_KEYS = ours
    assert problems() == [("unknown-key", unknown.pk)]
    with pytest.raises(CommandError):
        call_command("verify_audit")


def test_it_keeps_old_rows_verifiable_after_key_rotation(registry, requester, settings, anchor_file) -> None:
    old_key = settings.AUDIT_KEYS[0]
    before = audit.record("test.one", actor=requester, target=registry)
    old_anchor = audit.anchor()
    settings.AUDIT_KEYS = [OTHER_KEY, old_key]  # newest first
    after = audit.record("test.two", actor=requester, target=registry)
    new_anchor = audit.anchor()
    assert before.key_id == old_anchor.key_id == audit.key_id(old_key)
    assert after.key_id == new_anchor.key_id == audit.key_id(OTHER_KEY) != before.key_id
    assert problems() == []
    # Dropping the old key too early leaves its rows and anchors unverifiable, and says so.
    settings.AUDIT_KEYS = [OTHER_KEY]
    assert problems() == [("unknown-key", before.pk), ("bad-anchor", None)]


def test_it_verifies_rows_hashed_before_keys_existed(registry, requester) -> None:
    def legacy(action: str, prev: str) -> AuditEvent:
        event = AuditEvent(
            actor_name="alice", action=action, target_type="accessreq.registry", target_id=str(registry.pk),
            target_repr=str(registry), details={}, prev_hash=prev, key_id=audit.LEGACY_KEY_ID,
        )
        event.hash = audit._legacy_digest(event)
        event.save()
        return event

    old = legacy("test.old", audit.GENESIS)
    older = legacy("test.older", old.hash)
    keyed = audit.record("test.new", actor=requester, target=registry)
    assert keyed.prev_hash == older.hash
    assert problems() == []
    tamper("UPDATE accessreq_auditevent SET action = 'test.other' WHERE id = %s", (old.pk,))
    assert problems() == [("edited", old.pk)]


@pytest.mark.django_db(transaction=True)
def test_it_migrates_rows_from_before_keys_as_legacy_ones() -> None:
    from django.db.migrations.executor import MigrationExecutor
    from django.utils import timezone

    before = [("accessreq", "0004_slot_claim")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    OldEvent = executor.loader.project_state(before).apps.get_model("accessreq", "AuditEvent")
    prev = audit.GENESIS
    for action in ("test.one", "test.two"):
        old = OldEvent(
            created_at=timezone.now(), actor_name="alice", action=action, target_type="accessreq.registry",
            target_id="1", target_repr="contosotest", details={"n": 1}, prev_hash=prev,
        )
        old.hash = prev = hashlib.sha256(audit._canonical(audit._fields(old))).hexdigest()  # as it was hashed
        old.save()

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert list(AuditEvent.objects.values_list("key_id", flat=True)) == [audit.LEGACY_KEY_ID] * 2
    from django.contrib.auth.models import Group

    keyed = audit.record("test.three", actor=None, target=Group.objects.create(name="after"))
    assert keyed.prev_hash == prev and keyed.key_id != audit.LEGACY_KEY_ID
    assert problems() == []


def test_it_anchors_to_the_table_the_log_and_a_file(
    registry, requester, anchor_file, caplog, django_capture_on_commit_callbacks
) -> None:
    _, _, last = three(registry, requester)
    with caplog.at_level("INFO", logger="accessreq.audit"), django_capture_on_commit_callbacks(execute=True):
        row = audit.anchor()
    assert (row.event_count, row.last_event_id, row.last_hash) == (3, last.pk, last.hash)
    line = json.loads(anchor_file.read_text())
    assert line == json.loads(caplog.records[-1].getMessage())
    assert line["anchor"] == row.pk and line["last_hash"] == last.hash and line["mac"] == row.mac
    call_command("verify_audit", "--anchor-file", str(anchor_file))


def test_it_refuses_a_forged_anchor(registry, requester, anchor_file, django_capture_on_commit_callbacks) -> None:
    three(registry, requester)
    with django_capture_on_commit_callbacks(execute=True):
        audit.anchor()
    line = json.loads(anchor_file.read_text())
    line["event_count"] = 2
    anchor_file.write_text(json.dumps(line) + "\n")
    assert problems(anchor_file) == [("bad-anchor", None)]


def test_it_anchors_from_the_command_only_when_the_log_holds(registry, requester) -> None:
    _, edited, _ = three(registry, requester)
    call_command("verify_audit", "--anchor")
    assert AuditAnchor.objects.count() == 1
    tamper("UPDATE accessreq_auditevent SET action = 'test.other' WHERE id = %s", (edited.pk,))
    with pytest.raises(CommandError):
        call_command("verify_audit", "--anchor")
    assert AuditAnchor.objects.count() == 1


def test_it_refuses_changes_through_the_model(registry, requester) -> None:
    event = audit.record("test.one", actor=requester, target=registry)
    event.action = "test.other"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()


def test_it_keeps_the_account_of_an_actor_with_a_history(registry, requester) -> None:
    from django.db.models import ProtectedError

    audit.record("test.one", actor=requester, target=registry)
    with pytest.raises(ProtectedError):
        requester.delete()


def test_it_offers_no_edit_in_the_admin(admin_user, client, registry) -> None:
    event = audit.record("test.one", actor=admin_user, target=registry)
    client.force_login(admin_user)
    assert client.get(f"/admin/accessreq/auditevent/{event.pk}/change/").status_code == 200
    response = client.post(f"/admin/accessreq/auditevent/{event.pk}/change/", {"action": "x"})
    assert response.status_code == 403
    assert client.post(f"/admin/accessreq/auditevent/{event.pk}/delete/").status_code == 403


def test_it_shows_the_log_to_security_only(client, security, requester, approver, registry) -> None:
    audit.record("test.one", actor=requester, target=registry)
    client.force_login(security)
    response = client.get("/audit/")
    assert response.status_code == 200 and "test.one" in response.content.decode()
    for user in (requester, approver):
        client.force_login(user)
        assert client.get("/audit/").status_code == 403
    client.logout()
    assert client.get("/audit/").status_code == 302
