"""The audit log: every change lands through one function, chained so that a quiet edit shows."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accessreq import audit
from accessreq.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_it_chains_events(registry, requester) -> None:
    first = audit.record("test.one", actor=requester, target=registry, details={"n": 1})
    second = audit.record("test.two", actor=None, target=registry)
    assert first.prev_hash == audit.GENESIS
    assert second.prev_hash == first.hash
    assert second.actor_name == "system"
    assert audit.verify() is None
    call_command("verify_audit")


def test_it_detects_a_quiet_edit(registry, requester) -> None:
    audit.record("test.one", actor=requester, target=registry)
    edited = audit.record("test.two", actor=requester, target=registry, details={"amount": 1})
    audit.record("test.three", actor=requester, target=registry)
    AuditEvent.objects.filter(pk=edited.pk).update(details={"amount": 2})  # bypasses the model, as SQL would
    assert audit.verify() == edited
    with pytest.raises(CommandError, match=f"event {edited.pk}"):
        call_command("verify_audit")


def test_it_detects_a_removed_event(registry, requester) -> None:
    audit.record("test.one", actor=requester, target=registry)
    removed = audit.record("test.two", actor=requester, target=registry)
    after = audit.record("test.three", actor=requester, target=registry)
    AuditEvent.objects.filter(pk=removed.pk)._raw_delete(AuditEvent.objects.db)
    assert audit.verify() == after


def test_it_refuses_changes_through_the_model(registry, requester) -> None:
    event = audit.record("test.one", actor=requester, target=registry)
    event.action = "test.other"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()


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
