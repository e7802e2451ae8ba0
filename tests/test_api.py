"""The JSON API: the same flow, roles and messages as the pages, for pipelines."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accessreq import apikeys
from accessreq.forms import NewRequest
from accessreq.models import (
    AccessRequest,
    AuditEvent,
    PasswordSlot,
    Registry,
    RequestStatus,
    SealedPassword,
    SlotStatus,
)
from acr_emulator.dataplane import allowed_actions
from tests.conftest import PASSWORD, make_user, race, request_data, wait_until

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _api(user) -> Client:
    _, raw = apikeys.create(user, "tests")
    return Client(headers={"Authorization": f"Bearer {raw}"})


def _post(client: Client, path: str, body: object = None):
    data = json.dumps(body) if body is not None else ""
    return client.post(f"{API}{path}", data, content_type="application/json")


def _body(reg, **overrides) -> dict[str, object]:
    body: dict[str, object] = {
        "registry": reg.pk,
        "rules": [{"repository": "myapp/api", "actions": ["content/read", "metadata/read"]}],
        "purpose": "The payments CI pipeline pulls the base image.",
        "client_kind": "ci",
        "team": "Payments",
        "password_lifetime_days": 30,
        "retire_on": (timezone.localdate() + timedelta(days=90)).isoformat(),
    }
    body.update(overrides)
    return body


def _file(client: Client, reg, **overrides) -> dict:
    response = _post(client, "/requests", _body(reg, **overrides))
    assert response.status_code == 201, response.json()
    return response.json()


# Registries


def test_it_lists_active_registries_with_their_limits(registry, requester, groups) -> None:
    Registry.objects.create(
        subscription_id="x", resource_group="rg", name="retiredreg", login_server="r.azurecr.io",
        admin_group=groups["admins"], active=False,
    )
    response = _api(requester).get(f"{API}/registries")
    assert response.status_code == 200
    (only,) = response.json()
    assert only["name"] == "contosotest" and only["login_server"] == registry.login_server
    assert only["sku"] == "Standard" and only["token_limit"] == 500
    assert (only["max_password_days"], only["read_approvals"], only["write_approvals"]) == (90, 1, 2)


# Filing


def test_it_files_a_request(registry, requester, approver) -> None:
    response = _post(_api(requester), "/requests", _body(registry))
    assert response.status_code == 201
    body = response.json()
    req = AccessRequest.objects.get()
    assert body["id"] == req.pk and body["status"] == "pending"
    assert body["token_name"] == f"ci-payments-{req.pk}"
    assert body["requester"] == body["owner"] == "alice"
    assert body["approvals_needed"] == [
        {"group": "myapp-owners", "needed": 1, "given": 0, "repositories": ["myapp/api"], "via_admin_group": False}
    ]
    assert body["rules"] == [{"repository": "myapp/api", "actions": ["content/read", "metadata/read"]}]
    assert body["scope_map_actions"] == req.scope_map_actions
    assert body["created_at"] and body["token"] is None
    assert response["Location"].endswith(f"{API}/requests/{req.pk}")
    event = AuditEvent.objects.get(action="request.submitted")
    assert event.actor_name == "alice" and event.source_ip == "127.0.0.1"


def test_it_files_by_registry_name_for_another_owner(registry, requester, approver, outsider) -> None:
    body = _file(_api(requester), registry, registry="contosotest", owner="olive")
    assert body["registry"] == "contosotest" and body["owner"] == "olive"


BAD_FIELDS = [
    ({"purpose": "short"}, "purpose", "Say in a sentence what will use this token."),
    ({"owner": "nobody"}, "owner", "No active user is called 'nobody'."),
    ({"password_lifetime_days": 91}, "password_lifetime_days", "contosotest allows passwords of at most 90 days."),
    ({"password_lifetime_days": 0}, "password_lifetime_days", "A password lives at least 1 day."),
    ({"client_kind": "robot"}, "client_kind", "Select a valid choice. robot is not one of the available choices."),
    (
        {"registry": "nosuchregistry"},
        "registry",
        "No active registry is called 'nosuchregistry'.",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "message"), BAD_FIELDS)
def test_it_answers_bad_fields_with_the_page_messages(registry, requester, approver, overrides, field, message) -> None:
    response = _post(_api(requester), "/requests", _body(registry, **overrides))
    assert response.status_code == 400
    assert response.json() == {"errors": {field: [message]}}
    assert not AccessRequest.objects.exists()


def test_it_names_the_rule_rows_as_the_page_does(registry, requester, approver) -> None:
    rules = [
        {"repository": "MyApp/API", "actions": ["content/read"]},
        {"repository": "myapp/web", "actions": ["content/write"]},
        {"repository": "", "actions": ["content/read"]},
    ]
    response = _post(_api(requester), "/requests", _body(registry, rules=rules))
    assert response.status_code == 400
    errors = response.json()["errors"]
    # The page's own form, given the same rows as form fields, says the same.
    page = NewRequest(
        requester,
        request_data(
            registry,
            **{
                "rules-TOTAL_FORMS": "3",
                "rules-0-repository": "MyApp/API",
                "rules-0-actions": ["content/read"],
                "rules-1-repository": "myapp/web",
                "rules-1-actions": ["content/write"],
                "rules-2-repository": "",
                "rules-2-actions": ["content/read"],
            },
        ),
    )
    assert not page.is_valid()
    assert errors["rules[0].repository"] == page.rules.forms[0].errors["repository"]
    assert errors["rules[1].actions"] == ["Pushing needs pulling too: add content/read."]
    assert errors["rules[2].repository"] == ["Enter a repository for these actions."]
    assert set(errors) == {"rules[0].repository", "rules[1].actions", "rules[2].repository"}
    assert not AccessRequest.objects.exists()


def test_it_needs_at_least_one_rule_and_a_future_date(registry, requester, approver) -> None:
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    response = _post(_api(requester), "/requests", _body(registry, rules=[], retire_on=yesterday))
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "rules": ["Add at least one repository with its actions."],
        "retire_on": ["Choose a date after today."],
    }
    assert not AccessRequest.objects.exists()


def test_it_answers_a_malformed_body_with_400_naming_the_field(registry, requester, approver) -> None:
    alice = _api(requester)
    body = _body(registry, password_lifetime_days="thirty", rules="myapp/api")
    del body["purpose"]
    response = _post(alice, "/requests", body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors["password_lifetime_days"] == ["Enter a whole number."]
    assert errors["purpose"] == ["This field is required."]
    assert "rules" in errors
    response = _post(alice, "/requests", _body(registry, retire_on="2030-02-30"))
    assert response.json() == {"errors": {"retire_on": ["Enter a valid date."]}}
    response = alice.post(f"{API}/requests", "{not json", content_type="application/json")
    assert response.status_code == 400 and list(response.json()["errors"]) == ["body"]
    assert not AccessRequest.objects.exists()


# Authentication


def test_it_answers_401_without_valid_credentials(registry, requester) -> None:
    anonymous = Client()
    for method, path in [("get", "/registries"), ("get", "/requests"), ("post", "/requests"), ("get", "/audit")]:
        response = getattr(anonymous, method)(f"{API}{path}", content_type="application/json")
        assert response.status_code == 401, path
        assert response["WWW-Authenticate"].startswith("Bearer")
    wrong = Client(headers={"Authorization": "Bearer acrp_0123456789ab_not-the-secret"})
    assert wrong.get(f"{API}/registries").status_code == 401
    assert _post(wrong, "/requests", _body(registry)).status_code == 401
    assert not AccessRequest.objects.exists()


def test_it_takes_the_session_with_csrf_for_changes(registry, requester, approver) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.login(username="alice", password=PASSWORD)
    assert browser.get(f"{API}/requests").status_code == 200
    response = _post(browser, "/requests", _body(registry))
    assert response.status_code == 403
    assert not AccessRequest.objects.exists()
    browser.get("/requests/new")  # sets the CSRF cookie, as the page does
    token = browser.cookies["csrftoken"].value
    response = browser.post(
        f"{API}/requests", json.dumps(_body(registry)), content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert response.status_code == 201


def test_it_lets_a_bad_key_fail_even_beside_a_session(registry, requester) -> None:
    browser = Client(headers={"Authorization": "Bearer acrp_0123456789ab_stale"})
    browser.login(username="alice", password=PASSWORD)
    response = browser.get(f"{API}/requests")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key."}


# Reading requests


def test_it_lists_my_requests_paginated_and_filtered(registry, requester, approver, outsider, settings) -> None:
    settings.PAGE_SIZE = 2
    alice = _api(requester)
    ids = [_file(alice, registry)["id"] for _ in range(2)]
    ids.append(_file(_api(outsider), registry, owner="alice")["id"])  # alice owns it
    _file(_api(outsider), registry)  # not hers
    _post(alice, f"/requests/{ids[0]}/cancel")

    first = alice.get(f"{API}/requests").json()
    assert first["count"] == 3 and first["previous"] is None
    assert [r["id"] for r in first["items"]] == [ids[2], ids[1]]
    second = alice.get(first["next"]).json()
    assert [r["id"] for r in second["items"]] == [ids[0]] and second["next"] is None
    assert second["previous"]

    cancelled = alice.get(f"{API}/requests", {"status": "cancelled"}).json()
    assert [r["id"] for r in cancelled["items"]] == [ids[0]]
    response = alice.get(f"{API}/requests", {"status": "nonsense"})
    assert response.status_code == 400 and "status" in response.json()["errors"]


def test_it_shows_a_request_to_those_who_may_see_it(registry, requester, approver, security, outsider) -> None:
    pk = _file(_api(requester), registry)["id"]
    assert _api(requester).get(f"{API}/requests/{pk}").status_code == 200
    assert _api(approver).get(f"{API}/requests/{pk}").status_code == 200  # routed to his group
    assert _api(security).get(f"{API}/requests/{pk}").status_code == 200
    response = _api(outsider).get(f"{API}/requests/{pk}")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such request."}
    assert _api(requester).get(f"{API}/requests/{pk + 1000}").status_code == 404


def test_it_shows_the_failure_reason_only_to_admins_and_security(registry, requester, approver, security) -> None:
    pk = _file(_api(requester), registry)["id"]
    AccessRequest.objects.filter(pk=pk).update(status=RequestStatus.FAILED, failure_reason="quota")
    assert _api(requester).get(f"{API}/requests/{pk}").json()["failure_reason"] is None
    assert _api(security).get(f"{API}/requests/{pk}").json()["failure_reason"] == "quota"


# Cancelling


def test_it_lets_only_the_requester_cancel_while_pending(registry, requester, approver, outsider) -> None:
    alice = _api(requester)
    pk = _file(alice, registry)["id"]
    response = _post(_api(approver), f"/requests/{pk}/cancel")
    assert response.status_code == 403
    assert response.json() == {"detail": "Only the requester can cancel a request."}
    assert _post(_api(outsider), f"/requests/{pk}/cancel").status_code == 404
    response = _post(alice, f"/requests/{pk}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = _post(alice, f"/requests/{pk}/cancel")
    assert again.status_code == 409
    assert again.json() == {"detail": "Only a request still waiting for approval can be cancelled."}


# Approving


def test_it_queues_and_approves(registry, requester, approver, django_capture_on_commit_callbacks) -> None:
    pk = _file(_api(requester), registry)["id"]
    bob = _api(approver)
    queue = bob.get(f"{API}/approvals").json()
    assert [r["id"] for r in queue["items"]] == [pk] and queue["count"] == 1
    with django_capture_on_commit_callbacks() as callbacks:
        response = _post(bob, f"/requests/{pk}/approve", {"comment": "Fine for CI."})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "approved"
    assert body["approvals_needed"][0]["given"] == 1
    assert body["decisions"][0]["approver"] == "bob" and body["decisions"][0]["comment"] == "Fine for CI."
    assert callbacks  # provisioning is queued on commit
    assert bob.get(f"{API}/approvals").json()["items"] == []
    again = _post(bob, f"/requests/{pk}/approve")
    assert again.status_code == 409


def test_it_refuses_approvals_from_those_who_may_not(registry, requester, approver, second_approver, outsider,
                                                     security, groups) -> None:
    pk = _file(_api(requester), registry)["id"]
    response = _post(_api(requester), f"/requests/{pk}/approve")
    assert response.status_code == 403
    assert _post(_api(security), f"/requests/{pk}/approve").status_code == 403
    assert _post(_api(outsider), f"/requests/{pk}/approve").status_code == 404
    assert _post(_api(outsider), f"/requests/{pk}/reject", {"comment": "no"}).status_code == 404
    assert _api(requester).get(f"{API}/approvals").status_code == 403
    # bob files for his own group's repositories: he cannot approve it however his groups stand.
    make_user("erin", groups["owners"])
    own = _file(_api(approver), registry)["id"]
    response = _post(_api(approver), f"/requests/{own}/approve")
    assert response.status_code == 403
    assert response.json() == {"detail": "You cannot approve your own request."}
    assert AccessRequest.objects.get(pk=pk).status == RequestStatus.PENDING


def test_it_rejects_with_a_comment_only(registry, requester, approver) -> None:
    pk = _file(_api(requester), registry)["id"]
    bob = _api(approver)
    response = _post(bob, f"/requests/{pk}/reject", {"comment": "  "})
    assert response.status_code == 400
    assert response.json() == {"errors": {"comment": ["Say why you reject it: the requester will read this."]}}
    response = _post(bob, f"/requests/{pk}/reject", {"comment": "Use the shared pull token."})
    assert response.status_code == 200 and response.json()["status"] == "rejected"


def test_it_answers_409_for_approving_a_cancelled_request(registry, requester, approver) -> None:
    pk = _file(_api(requester), registry)["id"]
    _post(_api(requester), f"/requests/{pk}/cancel")
    response = _post(_api(approver), f"/requests/{pk}/approve", {"comment": "ok"})
    assert response.status_code == 409
    assert response.json() == {"detail": "This request is cancelled, not waiting for approval."}


def test_it_rejects_wrong_methods(registry, requester, ready_request) -> None:
    alice = _api(requester)
    assert alice.get(f"{API}/requests/{ready_request.pk}/reveal").status_code == 405
    assert alice.delete(f"{API}/requests/{ready_request.pk}").status_code == 405
    assert alice.put(f"{API}/registries").status_code == 405
    assert SealedPassword.objects.count() == 1


# Revealing


def test_it_reveals_once_with_no_store(ready_request, requester, acr) -> None:
    alice = _api(requester)
    response = _post(alice, f"/requests/{ready_request.pk}/reveal")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert set(body) == {"username", "password", "login_server", "expires_at"}
    assert body["username"] == ready_request.token_name
    assert allowed_actions(acr.state, "contosotest", body["username"], body["password"], "myapp/api")
    again = _post(alice, f"/requests/{ready_request.pk}/reveal")
    assert again.status_code == 410
    assert again.json()["detail"] == "This password has already been revealed."
    assert again.json()["revealed_at"]
    assert body["password"] not in again.content.decode()


def test_it_lets_only_the_requester_reveal(ready_request, approver, security, outsider) -> None:
    assert _post(_api(approver), f"/requests/{ready_request.pk}/reveal").status_code == 403
    assert _post(_api(security), f"/requests/{ready_request.pk}/reveal").status_code == 403
    assert _post(_api(outsider), f"/requests/{ready_request.pk}/reveal").status_code == 404
    assert SealedPassword.objects.count() == 1


def test_it_has_no_password_to_reveal_before_provisioning(registry, requester, approver) -> None:
    pk = _file(_api(requester), registry)["id"]
    response = _post(_api(requester), f"/requests/{pk}/reveal")
    assert response.status_code == 404
    assert response.json() == {"detail": "This request has no password yet."}


@pytest.mark.django_db(transaction=True)
def test_it_reveals_to_exactly_one_of_two_simultaneous_calls(ready_request, requester) -> None:
    _, raw = apikeys.create(requester, "race")

    def attempt() -> int:
        client = Client(headers={"Authorization": f"Bearer {raw}"})
        return _post(client, f"/requests/{ready_request.pk}/reveal").status_code

    assert sorted(race(attempt, attempt)) == [200, 410]
    assert AuditEvent.objects.filter(action="password.revealed").count() == 1
    assert PasswordSlot.objects.get().status == SlotStatus.REVEALED


# Tokens


def test_it_lists_tokens_to_their_people_and_security(ready_request, requester, approver, security, outsider) -> None:
    token = ready_request.token
    mine = _api(requester).get(f"{API}/tokens").json()
    assert [t["id"] for t in mine["items"]] == [token.pk] and mine["next"] is None
    assert mine["items"][0]["passwords"][0]["status"] == "awaiting"
    assert mine["items"][0]["request"] == ready_request.pk
    assert [t["id"] for t in _api(security).get(f"{API}/tokens").json()["items"]] == [token.pk]
    assert _api(outsider).get(f"{API}/tokens").json()["items"] == []
    # bob approved it, and approvers of a token's repositories may need to stop it: he sees it, as on the pages.
    assert [t["id"] for t in _api(approver).get(f"{API}/tokens").json()["items"]] == [token.pk]
    detail = _api(requester).get(f"{API}/tokens/{token.pk}")
    assert detail.status_code == 200 and detail.json()["name"] == ready_request.token_name
    assert _api(outsider).get(f"{API}/tokens/{token.pk}").status_code == 404
    assert _api(requester).get(f"{API}/requests/{ready_request.pk}").json()["token"] == token.pk


# Audit


def test_it_shows_the_audit_trail_to_security_with_a_cursor(ready_request, requester, security) -> None:
    sam = _api(security)
    events = list(AuditEvent.objects.order_by("-id").values_list("id", flat=True))
    first = sam.get(f"{API}/audit", {"limit": 2}).json()
    assert [e["id"] for e in first["items"]] == events[:2]
    assert first["next_before"] == events[1]
    second = sam.get(first["next"]).json()
    assert [e["id"] for e in second["items"]] == events[2:4]
    last = sam.get(f"{API}/audit", {"before": events[-1] + 1, "limit": 2}).json()
    assert [e["id"] for e in last["items"]] == events[-1:] and last["next"] is None
    only = sam.get(f"{API}/audit", {"action": "request."}).json()
    assert only["items"] and all(e["action"].startswith("request.") for e in only["items"])
    response = _api(requester).get(f"{API}/audit")
    assert response.status_code == 403
    assert response.json() == {"detail": "The audit log is for security staff."}


# The whole flow


@pytest.mark.django_db(transaction=True)
def test_it_runs_the_whole_flow_over_the_api(celery_worker, registry, requester, approver, acr) -> None:
    alice, bob = _api(requester), _api(approver)
    pk = _file(alice, registry, registry="contosotest")["id"]
    assert _post(bob, f"/requests/{pk}/approve", {"comment": "ok"}).status_code == 200
    wait_until(lambda: alice.get(f"{API}/requests/{pk}").json()["status"] == "ready")
    response = _post(alice, f"/requests/{pk}/reveal")
    assert response.status_code == 200
    secret = response.json()
    assert secret["login_server"] == registry.login_server
    assert allowed_actions(acr.state, registry.name, secret["username"], secret["password"], "myapp/api") == {
        "content/read",
        "metadata/read",
    }


def test_it_files_with_the_documented_lifetime_field(registry, requester, approver) -> None:
    response = _post(_api(requester), "/requests", _body(registry, password_lifetime_days=14))
    assert response.status_code == 201
    assert response.json()["password_lifetime_days"] == 14
    assert AccessRequest.objects.get().password_days == 14


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"pasword_lifetime_days": 14}, "pasword_lifetime_days", "Unknown field."),
        ({"password_days": 14}, "password_days", "Unknown field: it is called password_lifetime_days."),
        ({"registry": True}, "registry", None),
        ({"password_lifetime_days": True}, "password_lifetime_days", None),
        ({"password_lifetime_days": "30"}, "password_lifetime_days", None),
    ],
)
def test_it_refuses_unknown_fields_and_booleans_for_numbers(
    registry, requester, approver, overrides, field, message
) -> None:
    response = _post(_api(requester), "/requests", _body(registry, **overrides))
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in errors
    if message:
        assert errors[field] == [message]
    assert not AccessRequest.objects.exists()


def test_it_refuses_unknown_fields_in_a_rule(registry, requester) -> None:
    body = _body(registry, rules=[{"repository": "myapp/api", "actions": ["content/read"], "tag": "latest"}])
    response = _post(_api(requester), "/requests", body)
    assert response.status_code == 400
    assert response.json()["errors"] == {"rules[0].tag": ["Unknown field."]}


def test_it_counts_a_long_list_only_a_little_past_the_page(ready_request, requester, settings, monkeypatch) -> None:
    from accessreq import api as api_module

    monkeypatch.setattr(api_module, "COUNT_AHEAD", 0)
    settings.PAGE_SIZE = 1
    AccessRequest.objects.bulk_create(
        AccessRequest(
            registry=ready_request.registry, requester=requester, owner=requester, team="t", purpose="Counting.",
            client_kind="ci", rules=ready_request.rules, password_days=30, retire_on=ready_request.retire_on,
        )
        for _ in range(3)
    )
    first = _api(requester).get(f"{API}/requests").json()
    assert (first["count"], first["more"]) == (1, True) and first["next"]
    last = _api(requester).get(f"{API}/requests?page=4").json()
    assert (last["count"], last["more"], last["next"]) == (4, False, None)
