"""The pages people use every day: what a newcomer's first walk through the portal tripped on."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from accessreq import flow, scopes
from accessreq.models import AccessRequest, PasswordSlot, SlotStatus
from tests.conftest import login, request_data

API = "/api/v1"

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(requester, approver, second_approver):
    return login(requester)


def test_it_adds_a_repository_without_complaining(alice, registry) -> None:
    # Half a form, as a person has it when they want a second repository: nothing is wrong with it yet.
    data = request_data(registry, purpose="", team="")
    response = alice.post("/requests/new", {**data, "add_rule": "1"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "was not filed" not in body
    assert "This field is required" not in body and 'aria-invalid="true"' not in body
    # The new, empty repository field takes the focus, and the values typed so far stay.
    assert 'id="id_rules-1-repository"' in body
    new_field = body.split('id="id_rules-1-repository"')[1].split(">")[0]
    assert "autofocus" in new_field
    assert body.count("autofocus") == 1
    assert 'value="myapp/api"' in body
    # The preview still says what the first repository will be.
    assert "repositories/myapp/api/content/read" in body
    assert not AccessRequest.objects.exists()


def test_it_shows_a_refused_decision_in_its_row(alice, registry, approver) -> None:
    assert alice.post("/requests/new", request_data(registry)).status_code == 302
    req = AccessRequest.objects.get()
    bob = login(approver)
    response = bob.post(f"/requests/{req.pk}/decide", {"decision": "reject", "comment": ""}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    # A 200 that htmx swaps in place (a 4xx it would drop, and the browser would log as a failed request).
    assert response.status_code == 200 and response["HX-Reswap"] == "outerHTML"
    assert response["X-Refused-Status"] == "400"
    assert body.startswith(f'<tr id="queue-row-{req.pk}"')  # the row alone, never a whole document
    assert 'role="alert"' in body and "Say why you reject it" in body
    assert "<form" in body  # the approver can try again in place
    req.refresh_from_db()
    assert req.status == "pending"
    # Without htmx, the same refusal goes back to the page with its message.
    plain = bob.post(f"/requests/{req.pk}/decide", {"decision": "reject", "comment": ""})
    assert plain.status_code == 302


def test_it_accepts_the_fields_of_the_largest_request(alice, registry) -> None:
    # Every rule a repository and every action: the form's fields and the request's own stay under the limit.
    fields = flow.MAX_RULES * (1 + len(scopes.ACTIONS)) + len(request_data(registry))
    assert fields <= settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    data = request_data(registry, **{"rules-TOTAL_FORMS": str(flow.MAX_RULES)})
    for i in range(flow.MAX_RULES):
        data[f"rules-{i}-repository"] = f"myapp/r{i}"
        data[f"rules-{i}-actions"] = list(scopes.ACTIONS)
    response = alice.post("/requests/new", data)
    assert response.status_code == 200  # refused in the portal's words, not by Django
    assert "scope map holds at most 500" in response.content.decode()


def test_it_states_the_rule_limit_in_its_own_words(alice, registry) -> None:
    page = alice.get("/requests/new").content.decode()
    assert f"At most {flow.MAX_RULES} repositories" in page
    assert "at most 90 days" in page  # the registry's password lifetime, before anyone meets it as an error
    data = request_data(registry, **{"rules-TOTAL_FORMS": str(flow.MAX_RULES + 1)})
    for i in range(flow.MAX_RULES + 1):
        data[f"rules-{i}-repository"] = f"myapp/r{i}"
        data[f"rules-{i}-actions"] = ["content/read"]
    body = alice.post("/requests/new", data).content.decode()
    assert "Please submit at most" not in body
    assert flow.TOO_MANY_RULES in body


def test_it_states_the_rule_limit_in_the_api(requester, registry) -> None:
    from accessreq import apikeys

    _, key = apikeys.create(requester, "tests")
    body = {
        "registry": registry.name,
        "rules": [{"repository": f"myapp/r{i}", "actions": ["content/read"]} for i in range(flow.MAX_RULES + 1)],
        "purpose": "The payments CI pipeline pulls the base image.",
        "client_kind": "ci",
        "team": "Payments",
        "password_lifetime_days": 30,
        "retire_on": "2099-01-01",
    }
    client = Client(headers={"Authorization": f"Bearer {key}"})
    response = client.post(f"{API}/requests", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"]["rules"] == [flow.TOO_MANY_RULES]


def test_it_links_each_waiting_password_from_home(ready_request, requester) -> None:
    client = login(requester)
    body = client.get("/").content.decode()
    assert 'href="#to-reveal"' in body
    token = ready_request.token
    assert f'href="/requests/{ready_request.pk}/"' in body.split('id="to-reveal"')[1]
    assert token.name in body.split('id="to-reveal"')[1]
    # A rotated password waits on the token's page, and says it was rotated.
    PasswordSlot.objects.filter(token=token).update(status=SlotStatus.REVEALED)
    PasswordSlot.objects.create(
        token=token, name="password2", status=SlotStatus.AWAITING_REVEAL, requested_by=requester, generation=1
    )
    waiting = client.get("/").content.decode().split('id="to-reveal"')[1]
    assert f'href="/tokens/{token.pk}/#token-slots"' in waiting
    assert "password2" in waiting and "rotated" in waiting
    assert "password1" not in waiting


def test_it_previews_the_verdict_filing_gives(alice, registry) -> None:
    # Nobody but carol... here nobody at all can approve a write to shared/*: the preview says so, as filing does.
    data = request_data(
        registry, **{"rules-0-repository": "shared/*", "rules-0-actions": ["content/read", "content/write"]}
    )
    preview = alice.post("/requests/preview", data, HTTP_HX_REQUEST="true").content.decode()
    filed = alice.post("/requests/new", data)
    assert filed.status_code == 200 and not AccessRequest.objects.exists()
    assert "Cannot be filed as it is" in preview
    assert "shared-owners must give 2 approvals" in preview
    assert "shared-owners must give 2 approvals" in filed.content.decode()


def test_it_says_why_a_name_is_left_out_of_the_preview(alice, registry) -> None:
    data = request_data(registry, **{"rules-0-repository": "MyApp/API"})
    preview = alice.post("/requests/preview", data, HTTP_HX_REQUEST="true").content.decode()
    assert "Repository 1 (MyApp/API): Repository names are lowercase." in preview


def test_it_previews_a_change_with_the_tokens_own_name(ready_request, requester) -> None:
    token = ready_request.token
    page = login(requester).get(f"/requests/new?renew={token.pk}").content.decode()
    preview = page.split('id="preview"')[1]
    assert token.name in preview
    assert "-N<" not in preview and "given when it is filed" not in preview


def test_the_demo_lets_writes_to_every_pattern_be_filed(acr, settings) -> None:
    from django.contrib.auth.models import User

    from accessreq.models import Registry

    settings.DEBUG = True
    call_command("seed_demo", stdout=io.StringIO())
    alice = User.objects.get(username="alice")
    registry = Registry.objects.get(name="contosodemo")
    for pattern in ("shared/*", "*", "myapp/*"):
        found = flow.review(
            alice,
            registry=registry,
            rules=[scopes.Rule.of(pattern, ["content/read", "content/write"])],
            purpose="A pipeline pushes its images.",
            client_kind="ci",
            owner="alice",
            team="payments",
            password_days=30,
            retire_on=None,
        )
        assert "rules" not in found.errors, (pattern, found.errors)


def test_it_refreshes_reconcile_findings_while_the_job_runs(registry, security) -> None:
    from accessreq import reconcile

    sam = login(security)
    # The worker is not running here: the job is queued and the page waits for it.
    started = sam.post(f"/registries/{registry.pk}/reconcile")
    url = started["Location"]
    page = sam.get(url).content.decode()
    assert 'hx-trigger="every 2s"' in page and "refreshes" in page
    assert sam.get(url, HTTP_HX_REQUEST="true").status_code == 204  # still running: nothing to swap
    reconcile.reconcile(registry, security.pk)
    done = sam.get(url, HTTP_HX_REQUEST="true")
    assert done.status_code == 200 and done["HX-Redirect"] == url
    page = sam.get(url).content.decode()
    assert "finished" in page and 'hx-trigger="every 2s"' not in page


def test_it_explains_a_reveal_address_opened_without_the_button(ready_request, requester, outsider) -> None:
    response = login(requester).get(f"/requests/{ready_request.pk}/reveal")
    body = response.content.decode()
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert "revealed with a button" in body and f'href="/requests/{ready_request.pk}/"' in body
    token = ready_request.token
    response = login(requester).get(f"/tokens/{token.pk}/reveal/password1")
    assert response.status_code == 405 and f"/tokens/{token.pk}/" in response.content.decode()
    assert login(outsider).get(f"/requests/{ready_request.pk}/reveal").status_code == 404
    # Nothing was revealed by looking.
    assert PasswordSlot.objects.get(token=token).status == SlotStatus.AWAITING_REVEAL


def test_it_links_a_ready_request_to_its_token(ready_request, requester) -> None:
    body = login(requester).get(f"/requests/{ready_request.pk}/").content.decode()
    assert f'href="/tokens/{ready_request.token.pk}/"' in body


def test_it_tells_the_owner_to_rotate_when_the_password_is_gone(ready_request, requester) -> None:
    alice = login(requester)
    assert alice.post(f"/requests/{ready_request.pk}/reveal").status_code == 200
    again = alice.post(f"/requests/{ready_request.pk}/reveal")
    body = again.content.decode()
    assert again.status_code == 410
    assert "ask the token's owner" not in body
    assert f'href="/tokens/{ready_request.token.pk}/#token-slots"' in body and "Rotate" in body


def test_it_asks_before_disabling_retiring_transferring_or_revoking(ready_request, requester) -> None:
    from accessreq import apikeys
    from accessreq.models import Token, TokenStatus

    alice = login(requester)
    token = ready_request.token
    page = alice.get(f"/tokens/{token.pk}/").content.decode()
    for action in ("disable", "retire", "transfer"):
        assert f'action="/tokens/{token.pk}/confirm/{action}"' in page
        assert f'data-confirm-action="/tokens/{token.pk}/{action}"' in page
    # Without script the form posts to a page that asks, carrying what was typed, and changes nothing.
    asked = alice.post(f"/tokens/{token.pk}/confirm/disable", {"reason": "leaked"})
    body = asked.content.decode()
    assert asked.status_code == 200 and f"Disable {token.name}?" in body
    assert f'action="/tokens/{token.pk}/disable"' in body and 'value="leaked"' in body
    assert Token.objects.get(pk=token.pk).status == TokenStatus.ACTIVE
    key, _ = apikeys.create(requester, "laptop")
    keys = alice.get("/api-keys/").content.decode()
    assert f'action="/api-keys/{key.pk}/confirm-revoke"' in keys
    assert "Revoke the API key laptop" in alice.get(f"/api-keys/{key.pk}/confirm-revoke").content.decode()


def test_it_leaves_no_empty_manage_card(ready_request, requester) -> None:
    from accessreq import tokens

    token = ready_request.token
    tokens.retire(token, requester, "done with it", None)
    body = login(requester).get(f"/tokens/{token.pk}/").content.decode()
    assert 'id="manage-title"' not in body


def test_it_offers_one_click_sign_in_in_demo_mode_only(settings, requester) -> None:
    from django.test import Client

    settings.DEMO = False
    assert "Sign in as" not in Client().get("/accounts/login/").content.decode()
    settings.DEMO = True
    page = Client().get("/accounts/login/").content.decode()
    assert "Sign in as alice" in page and "Try the whole flow" in page
    assert "Sign in as bob" not in page  # only the demo's people who exist


def test_the_demo_setting_needs_debug() -> None:
    from tests.test_settings import _production, _settings

    demo = _settings("DEMO", DEBUG="1", PORTAL_DEMO="1")
    assert demo.returncode == 0 and demo.stdout.strip() == "True", demo.stderr
    deployed = _settings("DEMO", **_production(PORTAL_DEMO="1"))
    assert deployed.returncode == 0 and deployed.stdout.strip() == "False", deployed.stderr


def test_the_demo_prints_one_line_per_email(settings, tmp_path, capsys) -> None:
    from django.core import mail

    settings.EMAIL_BACKEND = "portal.mail.OneLineBackend"
    settings.VAR_DIR = tmp_path
    mail.send_mail("Request #7 waits for you", "line one\nline two\nline three", None, ["bob@example.com"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("e-mail to bob@example.com: Request #7 waits for you")
    saved = list((tmp_path / "mail").glob("*.eml"))
    assert len(saved) == 1 and "line three" in saved[0].read_text()
