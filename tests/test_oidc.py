"""Sign-in with Microsoft Entra ID, against a local OpenID provider that plays Entra.

Each test drives the real flow: the portal sends the browser to the provider, the provider sends it back with a
code, and the portal redeems the code over HTTP, checks the ID token against the provider's keys and signs in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import Group, User
from django.http import HttpResponse
from django.test import Client
from django.utils import timezone

from tests.oidc_provider import Provider

ROOT = Path(__file__).resolve().parent.parent
SECURITY_ID = "5b0e6c1a-0000-4000-8000-000000000001"
OWNERS_ID = "5b0e6c1a-0000-4000-8000-000000000002"
ADMINS_ID = "5b0e6c1a-0000-4000-8000-000000000003"
UNMAPPED_ID = "5b0e6c1a-0000-4000-8000-000000000004"
ALICE = {
    "oid": "a11ce000-0000-4000-8000-000000000000",
    "preferred_username": "Alice@Contoso.example",
    "name": "Alice Andersen",
    "email": "alice@contoso.example",
    "groups": [],
}


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    started = Provider().start()
    yield started
    started.stop()


@pytest.fixture
def sso(provider: Provider, settings: object, db: None) -> Provider:
    """The portal configured as portal/settings.py configures it when OIDC_RP_CLIENT_ID is set."""
    provider.reset()
    provider.user = dict(ALICE)
    settings.OIDC_RP_CLIENT_ID = provider.client_id  # type: ignore[attr-defined]
    settings.OIDC_RP_CLIENT_SECRET = provider.client_secret  # type: ignore[attr-defined]
    for name, value in provider.endpoints().items():
        setattr(settings, name, value)
    settings.OIDC_GROUP_MAP = {SECURITY_ID: "security", OWNERS_ID: "myapp-owners"}  # type: ignore[attr-defined]
    settings.OIDC_ADMIN_GROUPS = [ADMINS_ID]  # type: ignore[attr-defined]
    backends = settings.AUTHENTICATION_BACKENDS  # type: ignore[attr-defined]
    settings.AUTHENTICATION_BACKENDS = [*backends, "accessreq.auth.EntraIDBackend"]  # type: ignore[attr-defined]
    middleware = list(settings.MIDDLEWARE)  # type: ignore[attr-defined]
    middleware.insert(middleware.index("axes.middleware.AxesMiddleware"), "accessreq.auth.SessionRefresh")
    settings.MIDDLEWARE = middleware  # type: ignore[attr-defined]
    return provider


def start(client: Client, provider: Provider, next_url: str = "") -> str:
    """The portal's redirect to the provider, then the provider's back to the portal's callback."""
    response = client.get("/oidc/authenticate/", {"next": next_url} if next_url else {})
    assert response.status_code == 302
    assert response["Location"].startswith(f"{provider.url}/authorize?")
    return provider.authorize(response["Location"])


def callback(client: Client, location: str) -> HttpResponse:
    parts = urlsplit(location)
    assert parts.path == "/oidc/callback/"
    return client.get(f"{parts.path}?{parts.query}")


def sign_in(client: Client, provider: Provider, next_url: str = "") -> HttpResponse:
    return callback(client, start(client, provider, next_url))


def signed_in_user(client: Client) -> User | None:
    user_id = client.session.get(SESSION_KEY)
    return User.objects.get(pk=user_id) if user_id else None


def test_it_creates_the_user_from_the_claims(sso: Provider) -> None:
    client = Client()

    response = sign_in(client, sso)

    assert response.status_code == 302
    assert response["Location"] == "/"
    user = signed_in_user(client)
    assert user is not None
    assert user.username == "alice@contoso.example"
    assert (user.first_name, user.email) == ("Alice Andersen", "alice@contoso.example")
    assert not user.has_usable_password()
    assert not user.is_superuser
    # Everyone signed in is a requester.
    assert client.get("/requests/").status_code == 200


def test_it_sends_pkce_and_a_nonce(sso: Provider) -> None:
    sign_in(Client(), sso)

    [query] = sso.authorize_requests
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] and query["nonce"] and query["state"]
    assert query["redirect_uri"] == "http://testserver/oidc/callback/"
    assert set(query["scope"].split()) == {"openid", "email", "profile"}


def test_it_returns_to_the_page_asked_for(sso: Provider) -> None:
    client = Client()

    response = sign_in(client, sso, next_url="/requests/")

    assert response["Location"] == "/requests/"


def test_it_updates_an_existing_user(sso: Provider) -> None:
    existing = User.objects.create_user("alice@contoso.example", "old@example.com", first_name="Old")
    sso.user = {**ALICE, "given_name": "Alice", "family_name": "Andersen"}
    client = Client()

    sign_in(client, sso)

    user = signed_in_user(client)
    assert user is not None and user.pk == existing.pk
    assert (user.first_name, user.last_name, user.email) == ("Alice", "Andersen", "alice@contoso.example")


def test_it_falls_back_to_the_object_id(sso: Provider) -> None:
    sso.user = {k: v for k, v in ALICE.items() if k != "preferred_username"}
    client = Client()

    sign_in(client, sso)

    user = signed_in_user(client)
    assert user is not None and user.username == ALICE["oid"]


def test_it_maps_groups(sso: Provider) -> None:
    sso.user = {**ALICE, "groups": [SECURITY_ID, OWNERS_ID, UNMAPPED_ID]}
    client = Client()

    sign_in(client, sso)

    user = signed_in_user(client)
    assert user is not None
    assert set(user.groups.values_list("name", flat=True)) == {"security", "myapp-owners"}
    assert Group.objects.filter(name="security").count() == 1
    assert client.get("/audit/").status_code == 200


def test_it_keeps_the_security_view_from_requesters(sso: Provider) -> None:
    client = Client()

    sign_in(client, sso)

    assert client.get("/audit/").status_code == 403


def test_it_makes_admin_group_members_superusers(sso: Provider) -> None:
    sso.user = {**ALICE, "groups": [ADMINS_ID]}
    client = Client()

    sign_in(client, sso)

    user = signed_in_user(client)
    assert user is not None and user.is_superuser and user.is_staff
    assert client.get("/admin/").status_code == 200


def test_it_follows_the_groups_claim_at_every_sign_in(sso: Provider) -> None:
    sso.user = {**ALICE, "groups": [SECURITY_ID, OWNERS_ID, ADMINS_ID]}
    sign_in(Client(), sso)
    user = User.objects.get(username="alice@contoso.example")
    local = Group.objects.create(name="managed-in-the-portal")
    user.groups.add(local)

    sso.user = {**ALICE, "groups": [OWNERS_ID]}
    client = Client()
    sign_in(client, sso)

    user.refresh_from_db()
    assert set(user.groups.values_list("name", flat=True)) == {"myapp-owners", "managed-in-the-portal"}
    assert not user.is_superuser and not user.is_staff
    assert client.get("/audit/").status_code == 403


def test_it_refuses_a_token_signed_with_another_key(sso: Provider) -> None:
    sso.sign_with_stray_key = True
    client = Client()

    response = sign_in(client, sso)

    assert_refused(client, response)


@pytest.mark.parametrize(
    "override",
    [{"aud": "someone-elses-client"}, {"iss": "https://login.example/another-tenant/v2.0"}, {"nonce": "replayed"}],
    ids=["audience", "issuer", "nonce"],
)
def test_it_refuses_a_token_for_something_else(sso: Provider, override: dict[str, str]) -> None:
    sso.token_overrides = override
    client = Client()

    response = sign_in(client, sso)

    assert_refused(client, response)


def test_it_refuses_an_expired_token(sso: Provider) -> None:
    sso.token_overrides = {"exp": int(timezone.now().timestamp()) - 3600}
    client = Client()

    assert_refused(client, sign_in(client, sso))


def test_it_refuses_a_code_without_its_pkce_verifier(sso: Provider) -> None:
    client = Client()
    location = start(client, sso)
    state = parse_qs(urlsplit(location).query)["state"][0]
    session = client.session
    session["oidc_states"][state]["code_verifier"] = None
    session.save()

    response = callback(client, location)

    assert_refused(client, response)
    assert sso.token_errors == ["invalid_grant: PKCE"]


def test_it_refuses_a_code_with_another_pkce_verifier(sso: Provider) -> None:
    client = Client()
    location = start(client, sso)
    state = parse_qs(urlsplit(location).query)["state"][0]
    session = client.session
    session["oidc_states"][state]["code_verifier"] = "x" * 64
    session.save()

    assert_refused(client, callback(client, location))
    assert sso.token_errors == ["invalid_grant: PKCE"]


def test_it_refuses_a_replayed_callback(sso: Provider) -> None:
    client = Client()
    location = start(client, sso)
    callback(client, location)
    client.logout()
    second = start(client, sso)

    # The first state was used up: a replay of its callback is refused, even in a session waiting for a callback.
    assert callback(client, location).status_code == 400
    assert signed_in_user(client) is None
    assert callback(client, second).status_code == 302
    assert signed_in_user(client) is not None


def test_it_refuses_a_callback_from_another_browser(sso: Provider) -> None:
    location = start(Client(), sso)
    other = Client()

    response = callback(other, location)

    assert_refused(other, response)


def test_it_does_not_count_failed_sign_ins_towards_a_password_lockout(sso: Provider, settings: object) -> None:
    client = Client()
    sso.token_overrides = {"aud": "someone-elses-client"}
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):  # type: ignore[attr-defined]
        assert_refused(client, sign_in(client, sso))
    sso.token_overrides = {}

    assert sign_in(client, sso)["Location"] == "/"
    assert AccessAttempt.objects.count() == 0


def test_it_refuses_an_inactive_user(sso: Provider) -> None:
    User.objects.create_user("alice@contoso.example", is_active=False)
    sso.user = {**ALICE, "groups": [ADMINS_ID]}
    client = Client()

    response = sign_in(client, sso)

    assert_refused(client, response)
    assert not User.objects.get(username="alice@contoso.example").is_superuser


def test_it_refuses_a_token_with_too_many_groups(sso: Provider) -> None:
    # Entra's group overage: the claim is left out and points at Graph instead.
    sso.user = {**ALICE, "_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "x"}}}
    client = Client()

    assert_refused(client, sign_in(client, sso))


def test_it_shows_the_provider_refusal(sso: Provider) -> None:
    sso.refuse_with = "access_denied"
    client = Client()

    response = sign_in(client, sso)

    assert_refused(client, response)


def test_it_signs_out_an_account_deactivated_in_the_portal(sso: Provider) -> None:
    client = Client()
    sign_in(client, sso)
    User.objects.filter(username="alice@contoso.example").update(is_active=False)

    response = client.get("/requests/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_renews_the_sign_in_with_the_provider(sso: Provider) -> None:
    client = Client()
    sign_in(client, sso)
    assert client.get("/requests/").status_code == 200

    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        response = client.get("/requests/?page=1")

        assert response.status_code == 302
        assert response["Location"].startswith(f"{sso.url}/authorize?")
        assert parse_qs(urlsplit(response["Location"]).query)["prompt"] == ["none"]
        back = callback(client, sso.authorize(response["Location"]))
        assert back["Location"] == "/requests/?page=1"
        assert client.get("/requests/").status_code == 200


def test_it_does_not_renew_before_the_interval(sso: Provider) -> None:
    client = Client()
    sign_in(client, sso)

    with time_machine.travel(timezone.now() + timedelta(minutes=14), tick=False):
        assert client.get("/requests/").status_code == 200


def test_it_signs_out_when_the_provider_refuses_the_renewal(sso: Provider) -> None:
    client = Client()
    sign_in(client, sso)
    sso.refuse_with = "login_required"  # what Entra answers for a disabled account

    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        response = client.get("/requests/")
        back = callback(client, sso.authorize(response["Location"]))

        assert back["Location"] == "/accounts/login/"
        assert signed_in_user(client) is None
        assert client.get("/requests/").status_code == 302


def test_it_takes_away_groups_at_renewal(sso: Provider) -> None:
    sso.user = {**ALICE, "groups": [SECURITY_ID]}
    client = Client()
    sign_in(client, sso)
    assert client.get("/audit/").status_code == 200
    sso.user = dict(ALICE)

    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        response = client.get("/audit/")
        callback(client, sso.authorize(response["Location"]))

        assert client.get("/audit/").status_code == 403


def test_it_renews_an_htmx_request_with_the_whole_page(sso: Provider) -> None:
    client = Client()
    sign_in(client, sso)

    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        response = client.get(
            "/requests/?page=2", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/requests/"}
        )

        assert response.status_code == 200
        assert response["HX-Redirect"].startswith(f"{sso.url}/authorize?")
        back = callback(client, sso.authorize(response["HX-Redirect"]))
        assert back["Location"] == "/requests/"


def test_it_leaves_local_sessions_alone(sso: Provider, requester: User) -> None:
    client = Client()
    client.force_login(requester)

    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        assert client.get("/requests/").status_code == 200


def test_it_offers_the_button_when_configured(sso: Provider) -> None:
    response = Client().get("/accounts/login/", {"next": "/requests/"})

    assert b"Sign in with Microsoft" in response.content
    assert b'href="/oidc/authenticate/?next=/requests/"' in response.content
    assert b'name="password"' in response.content


def test_it_hides_the_button_when_not_configured(db: None) -> None:
    response = Client().get("/accounts/login/")

    assert b"Sign in with Microsoft" not in response.content
    assert b'name="password"' in response.content


def test_it_answers_404_when_not_configured(db: None) -> None:
    assert Client().get("/oidc/authenticate/").status_code == 404
    assert Client().get("/oidc/callback/?code=x&state=y").status_code == 404


def assert_refused(client: Client, response: HttpResponse) -> None:
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert signed_in_user(client) is None
    assert b"Sign-in with Microsoft did not succeed" in client.get(response["Location"]).content


# Configuration from the environment: settings.py is read once per process, so each case is a fresh interpreter.


def _settings(code: str, **environment: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OIDC_") and k not in {"DEBUG", "SECRET_KEY"}}
    clean.update(DJANGO_SETTINGS_MODULE="portal.settings", **environment)
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings as s; {code}"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_configures_entra_from_the_tenant() -> None:
    code = (
        "print(s.OIDC_OP_AUTHORIZATION_ENDPOINT, s.OIDC_OP_TOKEN_ENDPOINT, s.OIDC_OP_JWKS_ENDPOINT, s.OIDC_OP_ISSUER);"
        "print('accessreq.auth.EntraIDBackend' in s.AUTHENTICATION_BACKENDS, s.MIDDLEWARE[-2:]);"
        "print(s.OIDC_GROUP_MAP, s.OIDC_ADMIN_GROUPS, s.OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS, s.OIDC_USE_PKCE)"
    )
    result = _settings(
        code,
        OIDC_RP_CLIENT_ID="client",
        OIDC_TENANT_ID="tenant-id",
        OIDC_GROUP_MAP=f'{{"{SECURITY_ID}": "security"}}',
        OIDC_ADMIN_GROUPS=ADMINS_ID,
    )

    assert result.returncode == 0, result.stderr
    authority = "https://login.microsoftonline.com/tenant-id"
    assert result.stdout.splitlines() == [
        f"{authority}/oauth2/v2.0/authorize {authority}/oauth2/v2.0/token {authority}/discovery/v2.0/keys "
        f"{authority}/v2.0",
        "True ['accessreq.auth.SessionRefresh', 'axes.middleware.AxesMiddleware']",
        f"{{'{SECURITY_ID}': 'security'}} ['{ADMINS_ID}'] 900 True",
    ]


def test_it_stays_off_without_a_client_id() -> None:
    result = _settings("print('accessreq.auth.EntraIDBackend' in s.AUTHENTICATION_BACKENDS, s.MIDDLEWARE[-1])")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False axes.middleware.AxesMiddleware"


def test_it_requires_a_tenant_with_a_client_id() -> None:
    result = _settings("print(s.DEBUG)", OIDC_RP_CLIENT_ID="client")

    assert result.returncode != 0
    assert "OIDC_TENANT_ID must be set with OIDC_RP_CLIENT_ID." in result.stderr


def test_it_refuses_a_group_map_that_is_not_an_object() -> None:
    result = _settings("print(s.DEBUG)", OIDC_GROUP_MAP='["security"]')

    assert result.returncode != 0
    assert "OIDC_GROUP_MAP must be a JSON object" in result.stderr



def test_it_audits_role_changes_from_entra(sso: Provider) -> None:
    from accessreq.models import AuditEvent

    sso.user = {**ALICE, "groups": [SECURITY_ID, ADMINS_ID]}
    sign_in(Client(), sso)
    assert {"user.created", "user.admin_granted", "user.groups_synced"} <= set(
        AuditEvent.objects.values_list("action", flat=True)
    )
    sso.user = {**ALICE, "groups": []}
    sign_in(Client(), sso)
    assert AuditEvent.objects.filter(action="user.admin_removed").exists()
    synced = AuditEvent.objects.filter(action="user.groups_synced").order_by("-id").first()
    assert synced.details["removed"] == ["security"] and synced.details["added"] == []
