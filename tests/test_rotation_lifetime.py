"""A rotated password's lifetime chosen through the API and the command, within the registry's policy; a refused
lifetime changes nothing."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from accessreq.models import AuditEvent, PasswordSlot, Token
from tests.test_api import _api
from tests.test_api_lifecycle import _post

pytestmark = pytest.mark.django_db

REG = "contosotest"


@pytest.fixture
def token(ready_request, requester) -> Token:
    assert _post(_api(requester), f"/requests/{ready_request.pk}/reveal").status_code == 200
    return Token.objects.get(request=ready_request)


def _state(token: Token) -> tuple[object, ...]:
    slots = PasswordSlot.objects.filter(token=token).order_by("name")
    return tuple(slots.values_list("name", "status", "retire_after", "lifetime_days")), AuditEvent.objects.count()


def test_it_rotates_with_the_lifetime_asked_for(token, requester, acr) -> None:
    response = _post(_api(requester), f"/tokens/{token.pk}/rotate", {"password_lifetime_days": 7})
    assert response.status_code == 202, response.json()
    assert PasswordSlot.objects.get(token=token, name="password2").lifetime_days == 7


def test_it_rotates_with_the_tokens_own_lifetime_without_a_body(token, requester, acr) -> None:
    assert _post(_api(requester), f"/tokens/{token.pk}/rotate").status_code == 202
    assert PasswordSlot.objects.get(token=token, name="password2").lifetime_days is None


@pytest.mark.parametrize("content_type", ["", "multipart/form-data; boundary=BoUnDaRy", "application/json"])
def test_it_rotates_on_an_empty_post_whatever_its_content_type(token, requester, acr, content_type) -> None:
    # `curl -X POST` sends no body; a form library sends an empty form: both mean "the defaults".
    body = "--BoUnDaRy--\r\n" if content_type.startswith("multipart") else ""
    response = _api(requester).generic("POST", f"/api/v1/tokens/{token.pk}/rotate", body, content_type=content_type)
    assert response.status_code == 202, response.content
    assert PasswordSlot.objects.get(token=token, name="password2").lifetime_days is None


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"password_lifetime_days": 91}, "password_lifetime_days", "at most 90 days"),
        ({"password_lifetime_days": 0}, "password_lifetime_days", "Choose from 1 to 90 days"),
        ({"password_lifetime_days": -3}, "password_lifetime_days", "Choose from 1 to 90 days"),
        ({"password_lifetime_days": True}, "password_lifetime_days", "whole number"),
        ({"password_lifetime_days": "7"}, "password_lifetime_days", "whole number"),
        ({"password_lifetime_days": 7.5}, "password_lifetime_days", "whole number"),
        ({"password_days": 7}, "password_days", "password_lifetime_days"),
        ({"lifetime": 7}, "lifetime", "Unknown field"),
    ],
)
def test_it_refuses_a_bad_lifetime_and_changes_nothing(token, requester, acr, body, field, words) -> None:
    alice = _api(requester)  # its key's making is audited: made before the snapshot
    before = _state(token)
    response = _post(alice, f"/tokens/{token.pk}/rotate", body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == [field], errors
    assert words in " ".join(errors[field])
    assert _state(token) == before


def test_it_documents_the_body(client) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    operation = schema["paths"]["/api/v1/tokens/{pk}/rotate"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]
    name = ref.get("$ref", "").rsplit("/", 1)[-1] or ref["anyOf"][0]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][name]["properties"]
    assert "password_lifetime_days" in properties
    assert "registry's maximum" in properties["password_lifetime_days"]["description"]
    assert not operation["requestBody"].get("required", False)


def test_the_command_rotates_with_days(token, requester, acr, capsys) -> None:
    call_command("token", "rotate", f"{REG}/{token.name}", "--as", "alice", "--days", "14")
    assert PasswordSlot.objects.get(token=token, name="password2").lifetime_days == 14
    assert "password2 is being generated" in capsys.readouterr().out


@pytest.mark.parametrize(("days", "words"), [("91", "at most 90 days"), ("0", "Choose from 1 to 90")])
def test_the_command_refuses_days_out_of_policy(token, requester, acr, days, words) -> None:
    before = _state(token)
    with pytest.raises(CommandError, match=rf"^--days: .*{words}"):
        call_command("token", "rotate", f"{REG}/{token.name}", "--as", "alice", "--days", days)
    assert _state(token) == before


@pytest.mark.parametrize("action", ["disable", "enable", "retire", "confirm-switch"])
def test_the_command_refuses_days_for_other_actions(token, requester, action) -> None:
    before = _state(token)
    status = Token.objects.get(pk=token.pk).status
    with pytest.raises(CommandError, match="applies to rotate only"):
        call_command("token", action, f"{REG}/{token.name}", "--as", "alice", "--days", "7", "--reason", "x")
    assert _state(token) == before
    assert Token.objects.get(pk=token.pk).status == status


def test_the_command_refuses_days_that_are_not_a_number(token, requester) -> None:
    before = _state(token)
    with pytest.raises(CommandError, match="--days"):
        call_command("token", "rotate", f"{REG}/{token.name}", "--as", "alice", "--days", "a week")
    assert _state(token) == before
