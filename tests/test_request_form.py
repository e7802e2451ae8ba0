"""Filing a request: every bad input gets an error next to its field, and nothing is saved or provisioned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accessreq.models import AccessRequest, ApprovalRequirement, AuditEvent, Token
from tests.conftest import PASSWORD, request_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(requester, approver, second_approver) -> Client:
    client = Client()
    client.login(username="alice", password=PASSWORD)
    return client


def _errors(response) -> dict[str, list[str]]:
    new = response.context["new"]
    errors = {name: list(errs) for name, errs in new.form.errors.items()}
    for i, row in enumerate(new.rules.forms):
        for name, errs in row.errors.items():
            errors[f"rules-{i}-{name}"] = list(errs)
    if new.rule_errors:
        errors["rules"] = list(new.rule_errors)
    return errors


def _assert_refused(alice: Client, acr, data: dict, field: str, fragment: str) -> None:
    before = len(acr.requests())
    response = alice.post("/requests/new", data)
    assert response.status_code == 200
    errors = _errors(response)
    assert field in errors, errors
    assert any(fragment in message for message in errors[field]), errors[field]
    assert 'aria-invalid="true"' in response.content.decode() or field == "rules"
    assert not AccessRequest.objects.exists()
    assert not ApprovalRequirement.objects.exists()
    assert not AuditEvent.objects.exists()
    assert len(acr.requests()) == before  # nothing was sent to the registry


def test_it_files_a_valid_request(alice, registry) -> None:
    response = alice.post("/requests/new", request_data(registry))
    req = AccessRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/requests/{req.pk}/"
    assert req.token_name == f"ci-payments-{req.pk}"
    assert req.rules == [{"repository": "myapp/api", "actions": ["content/read", "metadata/read"]}]
    assert req.requirements.get().group.name == "myapp-owners"
    assert AuditEvent.objects.get().action == "request.submitted"
    assert not Token.objects.exists()


@pytest.mark.parametrize(
    ("repository", "fragment"),
    [
        ("MyApp/API", "lowercase"),
        ("myapp//api", "Use lowercase letters"),
        ("myapp/api-", "Use lowercase letters"),
        ("myapp/*/api", "wildcard"),
        ("myapp/team*", "wildcard"),
        ("myapp/**", "wildcard"),
        ("*/*", "wildcard"),
        ("a" * 257, "at most 256"),
    ],
)
def test_it_rejects_bad_repositories(alice, registry, acr, repository, fragment) -> None:
    data = request_data(registry, **{"rules-0-repository": repository})
    _assert_refused(alice, acr, data, "rules-0-repository", fragment)


def test_it_rejects_unknown_actions(alice, registry, acr) -> None:
    data = request_data(registry, **{"rules-0-actions": ["metadata/delete"]})
    _assert_refused(alice, acr, data, "rules-0-actions", "not one of the available choices")


def test_it_rejects_push_without_pull(alice, registry, acr) -> None:
    data = request_data(registry, **{"rules-0-actions": ["content/write"]})
    _assert_refused(alice, acr, data, "rules-0-actions", "Pushing needs pulling")


def test_it_rejects_a_repository_without_actions(alice, registry, acr) -> None:
    data = request_data(registry, **{"rules-0-actions": []})
    _assert_refused(alice, acr, data, "rules-0-actions", "at least one action")


def test_it_rejects_no_rule(alice, registry, acr) -> None:
    data = request_data(registry, **{"rules-0-repository": "", "rules-0-actions": []})
    _assert_refused(alice, acr, data, "rules", "at least one repository")


def _rows(registry, count: int) -> dict:
    data = request_data(registry, **{"rules-TOTAL_FORMS": str(count)})
    actions = ["content/read", "content/write", "content/delete", "metadata/read", "metadata/write"]
    for i in range(count):
        data[f"rules-{i}-repository"] = f"myapp/service{i}"
        data[f"rules-{i}-actions"] = actions
    return data


def test_it_accepts_exactly_500_actions(alice, registry) -> None:
    assert alice.post("/requests/new", _rows(registry, 100)).status_code == 302
    assert len(AccessRequest.objects.get().scope_map_actions) == 500


def test_it_rejects_more_than_500_actions(alice, registry, acr) -> None:
    _assert_refused(alice, acr, _rows(registry, 101), "rules", "These rules make 505 scope-map actions")


def test_it_rejects_a_lifetime_beyond_policy(alice, registry, acr) -> None:
    _assert_refused(alice, acr, request_data(registry, password_days="91"), "password_days", "at most 90 days")


def test_it_rejects_a_zero_lifetime(alice, registry, acr) -> None:
    _assert_refused(alice, acr, request_data(registry, password_days="0"), "password_days", "at least 1 day")


def test_it_rejects_a_retirement_in_the_past(alice, registry, acr) -> None:
    past = (timezone.localdate() - timedelta(days=1)).isoformat()
    _assert_refused(alice, acr, request_data(registry, retire_on=past), "retire_on", "after today")


def test_it_rejects_a_retirement_beyond_policy(alice, registry, acr) -> None:
    far = (timezone.localdate() + timedelta(days=366)).isoformat()
    _assert_refused(alice, acr, request_data(registry, retire_on=far), "retire_on", "allows retirement dates up to")


def test_it_rejects_an_empty_purpose(alice, registry, acr) -> None:
    _assert_refused(alice, acr, request_data(registry, purpose="   "), "purpose", "required")


def test_it_rejects_an_unknown_owner(alice, registry, acr) -> None:
    _assert_refused(alice, acr, request_data(registry, owner="nobody"), "owner", "No active user")


def test_it_rejects_a_registry_at_its_token_limit(alice, registry, acr) -> None:
    registry.sku = "Basic"
    registry.save()
    AccessRequest.objects.bulk_create(
        AccessRequest(
            registry=registry,
            requester_id=registry.admin_group.user_set.first().pk,
            owner_id=registry.admin_group.user_set.first().pk,
            team="t",
            purpose="filler request",
            client_kind="ci",
            rules=[],
            password_days=1,
            retire_on=timezone.localdate() + timedelta(days=1),
        )
        for _ in range(100)
    )
    response = alice.post("/requests/new", request_data(registry))
    assert any("limit of 100 tokens" in e for e in _errors(response)["registry"])
    assert AccessRequest.objects.count() == 100


def test_it_rejects_when_the_owner_group_cannot_reach_its_count(alice, registry, acr) -> None:
    # shared/* belongs to shared-owners, which has nobody in it.
    data = request_data(registry, **{"rules-0-repository": "shared/sdk"})
    _assert_refused(alice, acr, data, "rules", "shared-owners must give 1 approval")


def test_it_merges_duplicate_rules(alice, registry) -> None:
    data = request_data(
        registry,
        **{
            "rules-TOTAL_FORMS": "3",
            "rules-1-repository": "myapp/api",
            "rules-1-actions": ["content/read", "content/write"],
            "rules-2-repository": "",
        },
    )
    assert alice.post("/requests/new", data).status_code == 302
    assert AccessRequest.objects.get().rules == [
        {"repository": "myapp/api", "actions": ["content/read", "content/write", "metadata/read"]}
    ]


def test_it_adds_a_rule_row_without_javascript(alice, registry) -> None:
    response = alice.post("/requests/new", {**request_data(registry), "add_rule": "1"})
    assert response.status_code == 200
    assert len(response.context["new"].rules.forms) == 2
    assert not AccessRequest.objects.exists()


def test_it_previews_actions_token_and_approvers(alice, registry) -> None:
    data = request_data(
        registry, **{"rules-0-repository": "myapp/*", "rules-0-actions": ["content/read", "content/write"]}
    )
    response = alice.post("/requests/preview", data, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    assert "repositories/myapp/*/content/read" in body
    assert "repositories/myapp/*/content/write" in body
    assert "ci-payments-N" in body
    assert "myapp-owners" in body and "2 approvals" in body
    assert "bob" in body and "carol" in body and "alice" not in body.split("From")[1]
    assert "created later" in body
    assert not AccessRequest.objects.exists()


def test_it_shows_the_form(alice, registry) -> None:
    response = alice.get("/requests/new")
    assert response.status_code == 200
    assert 'name="rules-0-repository"' in response.content.decode()


def test_it_requires_sign_in(client, registry) -> None:
    response = client.post("/requests/new", request_data(registry))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not AccessRequest.objects.exists()


def test_it_rejects_get_on_preview(alice) -> None:
    assert alice.get("/requests/preview").status_code == 405
