"""A token's life: rotation without downtime, disable/enable, retirement, ownership, expiry, reminders, reconcile.

Jobs that beat runs go through a real Celery worker; time moves with time-machine, never with sleeps.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from accessreq import provisioning, reconcile, reminders, slots, tasks, tokens
from accessreq.errors import Conflict
from accessreq.models import (
    AccessRequest,
    AuditEvent,
    PasswordSlot,
    Reminder,
    RequestStatus,
    SlotStatus,
    Team,
    Token,
    TokenStatus,
    UnmanagedToken,
)
from acr_emulator.dataplane import allowed_actions
from acr_emulator.testing import make_client
from tests.conftest import SUBSCRIPTION, login, request_data, run_on_worker, wait_until

pytestmark = pytest.mark.django_db

RG, REG = "portal-rg", "contosotest"




def _sdk(acr):
    return make_client(acr.url, subscription_id=SUBSCRIPTION)


def _can(acr, token: Token, password: str, repository: str = "myapp/api") -> frozenset[str]:
    return allowed_actions(acr.state, REG, token.name, password, repository)


@pytest.fixture
def token(ready_request, requester) -> tuple[Token, str]:
    """alice's provisioned token, with the password she revealed."""
    response = login(requester).post(f"/requests/{ready_request.pk}/reveal")
    return Token.objects.get(request=ready_request), response.context["revealed"].password


def _handmade_token(acr, name: str, actions: list[str]) -> None:
    """A token made in the registry by hand, on a scope map of its own, as someone with Azure access would."""
    sdk = _sdk(acr)
    sdk.scope_maps.begin_create(RG, REG, f"{name}-map", {"properties": {"actions": actions}}).result()
    registry_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries"
    scope_map_id = f"{registry_id}/{REG}/scopeMaps/{name}-map"
    sdk.tokens.begin_create(RG, REG, name, {"properties": {"scopeMapId": scope_map_id}}).result()


def _slot(token: Token, name: str) -> PasswordSlot:
    return PasswordSlot.objects.get(token=token, name=name)


@pytest.mark.django_db(transaction=True)
def test_it_rotates_without_downtime(celery_worker, token, requester, acr) -> None:
    token, old_password = token
    alice = login(requester)
    assert alice.post(f"/tokens/{token.pk}/rotate").status_code == 302
    wait_until(lambda: _slot(token, "password2").status == SlotStatus.AWAITING_REVEAL)
    assert _slot(token, "password1").retire_after is not None

    response = alice.post(f"/tokens/{token.pk}/reveal/password2")
    assert response.status_code == 200
    assert "60 seconds" in response.content.decode() or "a minute" in response.content.decode()
    new_password = response.context["revealed"].password
    assert _can(acr, token, old_password) and _can(acr, token, new_password)  # both work during the switch

    assert alice.post(f"/tokens/{token.pk}/confirm-switch").status_code == 302
    assert _slot(token, "password1").status == SlotStatus.REVOKED
    assert not _can(acr, token, old_password)
    assert _can(acr, token, new_password) == {"content/read", "metadata/read"}
    assert [p.name for p in _sdk(acr).tokens.get(RG, REG, token.name).credentials.passwords] == ["password2"]
    assert AccessRequest.objects.count() == 1  # no new approval


@pytest.mark.django_db(transaction=True)
def test_it_deletes_the_old_slot_after_the_grace_period(celery_worker, token, requester, acr, settings) -> None:
    token, old_password = token
    tokens.rotate(token, requester, None)
    wait_until(lambda: _slot(token, "password2").status == SlotStatus.AWAITING_REVEAL)
    run_on_worker(tasks.run_job, "finish-rotations")  # nothing to finish yet
    assert _slot(token, "password1").status == SlotStatus.REVEALED
    with time_machine.travel(timezone.now() + timedelta(days=settings.ROTATION_GRACE_DAYS, hours=1)):
        run_on_worker(tasks.run_job, "finish-rotations")
        assert _slot(token, "password1").status == SlotStatus.REVOKED
    assert not _can(acr, token, old_password)
    assert [p.name for p in _sdk(acr).tokens.get(RG, REG, token.name).credentials.passwords] == ["password2"]


def test_it_refuses_a_second_rotation_while_one_is_under_way(token, requester, django_capture_on_commit_callbacks):
    token, _ = token
    with django_capture_on_commit_callbacks():
        tokens.rotate(token, requester, None)
    with pytest.raises(Conflict, match="already under way"):
        tokens.rotate(token, requester, None)


def test_it_lets_only_owners_and_security_rotate(token, approver, outsider, security) -> None:
    token, _ = token
    assert login(approver).get(f"/tokens/{token.pk}/").status_code == 200  # approved it, so may see it
    assert login(approver).post(f"/tokens/{token.pk}/rotate").status_code == 403
    assert login(outsider).post(f"/tokens/{token.pk}/rotate").status_code == 404
    assert login(outsider).get(f"/tokens/{token.pk}/").status_code == 404
    assert login(security).get(f"/tokens/{token.pk}/").status_code == 200
    assert login(security).get(f"/tokens/{token.pk}/rotate").status_code == 405


def test_it_disables_at_once_and_enables(token, requester, approver, outsider, acr) -> None:
    token, password = token
    bob = login(approver)  # approves myapp/*, so may stop the token
    response = bob.post(f"/tokens/{token.pk}/disable", {"reason": ""})
    # Refused beside the reason field, on the token's page.
    assert response.status_code == 400 and Token.objects.get(pk=token.pk).status == TokenStatus.ACTIVE
    assert b'aria-invalid="true"' in response.content
    bob.post(f"/tokens/{token.pk}/disable", {"reason": "Leaked in a build log"})
    assert Token.objects.get(pk=token.pk).status == TokenStatus.DISABLED
    assert _sdk(acr).tokens.get(RG, REG, token.name).status == "disabled"
    assert not _can(acr, token, password)
    assert AuditEvent.objects.get(action="token.disabled").details == {"reason": "Leaked in a build log"}
    assert login(outsider).post(f"/tokens/{token.pk}/enable").status_code == 404
    assert login(requester).post(f"/tokens/{token.pk}/enable").status_code == 302
    assert _sdk(acr).tokens.get(RG, REG, token.name).status == "enabled"
    assert _can(acr, token, password)


@pytest.mark.django_db(transaction=True)
def test_it_retires_on_its_date_and_deletes_after_the_grace(celery_worker, token, acr, settings) -> None:
    token, password = token
    with time_machine.travel(timezone.now() + timedelta(days=91)):
        run_on_worker(tasks.run_job, "retire-due")
        assert Token.objects.get(pk=token.pk).status == TokenStatus.RETIRING
        assert _sdk(acr).tokens.get(RG, REG, token.name).status == "disabled"
        run_on_worker(tasks.run_job, "delete-retired")  # within the grace period: nothing is deleted
    assert _sdk(acr).tokens.get(RG, REG, token.name)
    assert Token.objects.get(pk=token.pk).status == TokenStatus.RETIRING
    with time_machine.travel(timezone.now() + timedelta(days=91 + settings.RETIREMENT_GRACE_DAYS + 1)):
        run_on_worker(tasks.run_job, "delete-retired")
        assert Token.objects.get(pk=token.pk).status == TokenStatus.RETIRED
    assert [t.name for t in _sdk(acr).tokens.list(RG, REG)] == []
    assert not [m for m in _sdk(acr).scope_maps.list(RG, REG) if not m.name.startswith("_")]
    assert Token.objects.filter(pk=token.pk).exists()  # history stays


def test_it_retires_early_at_the_owners_word(token, requester, acr) -> None:
    token, password = token
    assert login(requester).post(f"/tokens/{token.pk}/retire", {"reason": "pipeline replaced"}).status_code == 302
    token.refresh_from_db()
    assert token.status == TokenStatus.RETIRING and token.delete_after > timezone.now()
    assert not _can(acr, token, password)
    retired_list = login(requester).get("/tokens/?status=all")
    assert token in retired_list.context["page"].object_list


def test_it_transfers_ownership_and_tells_both(
    token, requester, second_approver, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    token, _ = token
    alice = login(requester)
    alice.post(f"/tokens/{token.pk}/transfer", {"to": "nobody"})
    assert Token.objects.get(pk=token.pk).owner == requester
    with django_capture_on_commit_callbacks(execute=True):
        alice.post(f"/tokens/{token.pk}/transfer", {"to": "carol"})
    assert Token.objects.get(pk=token.pk).owner == second_approver
    assert sorted(mailoutbox[-1].to) == ["alice@example.com", "carol@example.com"]
    # alice requested it, so she still sees it, but may no longer rotate it.
    assert alice.post(f"/tokens/{token.pk}/rotate").status_code == 403


def test_it_flags_tokens_of_a_deactivated_owner(
    token, requester, security, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    token, _ = token
    Team.objects.create(name="Payments", email="payments@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        requester.is_active = False
        requester.save()
    token.refresh_from_db()
    assert token.orphaned_at is not None
    assert set(mailoutbox[-1].to) == {"payments@example.com", "sam@example.com"}
    assert tokens.flag_orphans() == 0  # once
    listed = login(security).get("/tokens/?flag=orphaned").context["page"].object_list
    assert [t.pk for t in listed] == [token.pk]


def test_it_marks_expired_passwords_and_flags_the_token(token, security) -> None:
    token, _ = token
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        assert slots.mark_expired() == 1
        assert slots.mark_expired() == 0
    assert _slot(token, "password1").status == SlotStatus.EXPIRED
    listed = login(security).get("/tokens/?flag=expired").context["page"].object_list
    assert [t.pk for t in listed] == [token.pk]


@pytest.mark.django_db(transaction=True)
def test_it_sends_each_reminder_once_however_often_beat_runs(celery_worker, token, settings) -> None:
    token, _ = token
    Team.objects.create(name="Payments", email="payments@example.com")
    expiry = _slot(token, "password1").expires_at
    with time_machine.travel(expiry - timedelta(days=13)):
        for _ in range(3):
            run_on_worker(tasks.run_job, "send-reminders")
    sent = [m for m in mail.outbox if "need you soon" in m.subject]
    assert sorted(m.to[0] for m in sent) == ["alice@example.com", "payments@example.com"]
    assert "password1 expires" in sent[0].body
    assert Reminder.objects.filter(days_before=14).count() == 2
    # The next threshold, a week later, is a new reminder: once more.
    with time_machine.travel(expiry - timedelta(days=6)):
        for _ in range(3):
            run_on_worker(tasks.run_job, "send-reminders")
        assert Reminder.objects.filter(days_before=7).count() == 2
    assert len([m for m in mail.outbox if "need you soon" in m.subject]) == 4


def test_it_gathers_a_days_reminders_into_one_digest(token, mailoutbox, django_capture_on_commit_callbacks) -> None:
    token, _ = token
    Token.objects.filter(pk=token.pk).update(retire_on=(_slot(token, "password1").expires_at).date())
    with (
        time_machine.travel(_slot(token, "password1").expires_at - timedelta(days=5)),
        django_capture_on_commit_callbacks(execute=True),
    ):
            assert reminders.send_reminders() == 1
            assert reminders.send_reminders() == 0
    (digest,) = [m for m in mailoutbox if "need you soon" in m.subject]
    assert "password1 expires" in digest.body and "is retired" in digest.body


def test_it_stops_reminders_when_the_owner_lets_it_expire(token, requester, mailoutbox) -> None:
    token, _ = token
    login(requester).post(f"/tokens/{token.pk}/let-expire", {"value": "1"})
    with time_machine.travel(_slot(token, "password1").expires_at - timedelta(days=1)):
        assert reminders.send_reminders() == 0
    assert not [m for m in mailoutbox if "need you soon" in m.subject]


def _second_token(registry, requester, approver) -> Token:
    alice, bob = login(requester), login(approver)
    alice.post("/requests/new", request_data(registry, **{"rules-0-repository": "myapp/web"}))
    req = AccessRequest.objects.latest("pk")
    bob.post(f"/requests/{req.pk}/decide", {"decision": "approve"})
    provisioning.provision(req.pk)
    return Token.objects.get(request=req)


@pytest.mark.django_db(transaction=True)
def test_it_reconciles_unmanaged_drifted_and_deleted_tokens(
    celery_worker, token, registry, requester, approver, security, acr
) -> None:
    token, _ = token
    second = _second_token(registry, requester, approver)
    sdk = _sdk(acr)
    acr.configure(page_size=2)  # every list spans pages
    # Behind the portal's back: a hand-made token, a widened scope map, a deleted token.
    _handmade_token(acr, "legacy-puller", ["repositories/legacy/app/content/read"])
    widened = [*token.approved_actions, "repositories/myapp/api/content/delete"]
    sdk.scope_maps.begin_update(RG, REG, token.scope_map_name, {"properties": {"actions": widened}}).result()
    sdk.tokens.begin_delete(RG, REG, second.name).result()

    run_on_worker(tasks.run_job, "reconcile")
    unmanaged = UnmanagedToken.objects.get()
    assert (unmanaged.name, unmanaged.actions) == ("legacy-puller", ["repositories/legacy/app/content/read"])
    assert sorted(Token.objects.get(pk=token.pk).drift_actions) == sorted(widened)
    assert Token.objects.get(pk=second.pk).status == TokenStatus.GONE
    assert AuditEvent.objects.get(action="registry.reconciled").details == {
        "seen": 2, "unmanaged": 1, "drifted": 1, "gone": 1, "broken": 0
    }

    sam = login(security)
    assert sam.get("/security/").status_code == 200
    sam.post(f"/tokens/{token.pk}/restore")
    assert sorted(sdk.scope_maps.get(RG, REG, token.scope_map_name).actions) == sorted(token.approved_actions)
    assert Token.objects.get(pk=token.pk).drift_actions is None
    retire_on = (timezone.localdate() + timedelta(days=60)).isoformat()
    response = sam.post(f"/unmanaged/{unmanaged.pk}/adopt", {"owner": "bob", "team": "Legacy", "retire_on": retire_on})
    adopted = Token.objects.get(name="legacy-puller")
    assert response["Location"] == adopted.get_absolute_url()
    assert (adopted.owner, adopted.team, adopted.request) == (approver, "Legacy", None)
    assert adopted.rules == [{"repository": "legacy/app", "actions": ["content/read"]}]
    assert not UnmanagedToken.objects.exists()
    # A second reconcile finds nothing new.
    reconcile.reconcile(registry)
    assert not UnmanagedToken.objects.exists()


def test_it_reconciles_what_the_listing_saw_and_nothing_it_could_not(token, registry, acr) -> None:
    token, _ = token
    acr.configure(page_size=1)
    _handmade_token(acr, "stray", ["repositories/x/content/read"])
    # Found by an earlier run, since deleted from the registry by hand.
    UnmanagedToken.objects.create(registry=registry, name="long-gone", scope_map_name="m", actions=[], status="enabled")
    # Made while the listing ran: not in the registry's answer, and not gone for that.
    later = Token.objects.create(
        registry=registry, name="made-meanwhile", scope_map_name="made-meanwhile", owner=token.owner,
        requester=token.requester, team=token.team, purpose="p", rules=token.rules, retire_on=token.retire_on,
        password_days=token.password_days, created_at=timezone.now() + timedelta(seconds=5),
    )
    report = reconcile.reconcile(registry)
    assert (report.seen, report.unmanaged, report.gone) == (2, 1, 0)
    assert list(UnmanagedToken.objects.values_list("name", flat=True)) == ["stray"]
    assert Token.objects.get(pk=later.pk).status == TokenStatus.ACTIVE
    assert Token.objects.get(pk=token.pk).status == TokenStatus.ACTIVE


def test_it_lets_only_security_reconcile_and_adopt(registry, requester, approver) -> None:
    assert login(requester).get("/security/").status_code == 403
    assert login(approver).post(f"/registries/{registry.pk}/reconcile").status_code == 403


def test_it_disables_an_unmanaged_token(registry, security, acr) -> None:
    sdk = _sdk(acr)
    _handmade_token(acr, "stray", ["repositories/x/content/read"])
    reconcile.reconcile(registry)
    stray = UnmanagedToken.objects.get()
    login(security).post(f"/unmanaged/{stray.pk}/disable", {"reason": "nobody claims it"})
    assert sdk.tokens.get(RG, REG, "stray").status == "disabled"


def test_it_changes_access_in_place_through_a_new_request(
    token, requester, approver, second_approver, acr
) -> None:
    token, password = token
    alice = login(requester)
    form = alice.get(f"/requests/new?renew={token.pk}")
    assert form.status_code == 200
    prefilled = [{"repository": "myapp/api", "actions": ["content/read", "metadata/read"]}]
    assert form.context["new"].rules.initial == prefilled
    later = (token.retire_on + timedelta(days=30)).isoformat()
    data = request_data(
        acr_registry := token.registry,
        renew=str(token.pk),
        retire_on=later,
        **{"rules-0-actions": ["content/read", "content/write", "metadata/read"]},
    )
    assert alice.post("/requests/new", data).status_code == 302
    change = AccessRequest.objects.latest("pk")
    assert change.renews == token and change.token_name == token.name
    assert change.requirements.get().count == 2  # a write: the higher threshold
    for user in (approver, second_approver):
        login(user).post(f"/requests/{change.pk}/decide", {"decision": "approve"})
    assert provisioning.provision(change.pk) is None
    assert AccessRequest.objects.get(pk=change.pk).status == RequestStatus.READY
    token.refresh_from_db()
    assert token.retire_on.isoformat() == later
    assert _can(acr, token, password) == {"content/read", "content/write", "metadata/read"}  # same password
    assert Token.objects.count() == 1
    assert [t.name for t in _sdk(acr).tokens.list(RG, REG)] == [token.name]
    assert acr_registry == token.registry


def test_it_refuses_changes_by_others(token, approver, outsider) -> None:
    token, _ = token
    assert login(approver).get(f"/requests/new?renew={token.pk}").status_code == 403  # sees it, may not change
    assert login(outsider).get(f"/requests/new?renew={token.pk}").status_code == 404


def test_it_runs_the_same_actions_from_the_command_line(token, requester, capsys) -> None:
    token, _ = token
    call_command("token", "disable", f"{REG}/{token.name}", "--as", "alice", "--reason", "maintenance")
    assert Token.objects.get(pk=token.pk).status == TokenStatus.DISABLED
    call_command("token", "enable", f"{REG}/{token.name}", "--as", "alice")
    assert Token.objects.get(pk=token.pk).status == TokenStatus.ACTIVE
    call_command("maintenance", "mark-expired", "send-reminders")
    assert "mark-expired: 0" in capsys.readouterr().out
    assert AuditEvent.objects.filter(action="token.disabled", actor_name="alice").exists()


def test_it_keeps_the_token_to_change_in_the_form(token, requester) -> None:
    token, _ = token
    body = login(requester).get(f"/requests/new?renew={token.pk}").content.decode()
    assert f'<input type="hidden" name="renew" value="{token.pk}">' in body
    assert f"Change token <code>{token.name}</code>" in body


@pytest.mark.django_db(transaction=True)
def test_it_reconciles_on_demand_on_the_worker(celery_worker, registry, security) -> None:
    response = login(security).post(f"/registries/{registry.pk}/reconcile")
    assert response.status_code == 302 and response["Location"].startswith(f"/security/?reconciling={registry.pk}&")
    wait_until(lambda: AuditEvent.objects.filter(action="registry.reconciled").exists())
    assert AuditEvent.objects.get(action="registry.reconciled").actor_name == "sam"
