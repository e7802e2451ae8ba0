"""Every page and verb, for every kind of user: what each may see (else 404), do (else 403), and how (else 405).

Denials come first in each row and change nothing; the one allowed user acts last.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accessreq import apikeys, reviews
from accessreq.models import AccessRequest, Token, UnmanagedToken, WebhookDelivery, WebhookEndpoint
from tests.conftest import make_user, request_data

pytestmark = pytest.mark.django_db

USERS = ["anonymous", "alice", "dave", "bob", "carol", "sam", "root"]


@pytest.fixture
def scenario(ready_request, requester, approver, second_approver, security, admin_user, registry) -> dict:
    """alice's provisioned request Q with token T, her pending request R, an unmanaged token U, bob's API key K."""
    users = {
        "alice": requester,
        "dave": make_user("dave"),
        "bob": approver,
        "carol": second_approver,
        "sam": security,
        "root": admin_user,
    }
    alice = Client()
    alice.force_login(requester)
    assert alice.post("/requests/new", request_data(registry)).status_code == 302
    pending = AccessRequest.objects.latest("pk")
    unmanaged = UnmanagedToken.objects.create(
        registry=registry, name="stray-token", scope_map_name="x", status="enabled"
    )
    key, _ = apikeys.create(approver, "matrix")
    hook = WebhookEndpoint.objects.create(name="SOC", url="http://127.0.0.1:9/hook", secret="s")
    failed = WebhookDelivery.objects.create(endpoint=hook, event="token.drift_found", payload={}, status="failed")
    review = reviews.start(security, name="matrix", scope="all", due_on=timezone.localdate() + timedelta(days=7))
    ids = {
        "R": pending.pk,
        "Q": ready_request.pk,
        "T": Token.objects.get(request=ready_request).pk,
        "G": registry.pk,
        "U": unmanaged.pk,
        "K": key.pk,
        "V": review.pk,
        "I": review.items.get(token__request=ready_request).pk,
        "W": failed.pk,
    }
    return {"users": users, "ids": ids}


LOGIN = 302  # anonymous: sent to sign in
ALL_SIGNED_IN = dict.fromkeys(USERS[1:], 200)
SECURITY_ONLY = {"alice": 403, "dave": 403, "bob": 403, "carol": 403, "sam": 200, "root": 200}
REQUEST_R = {"alice": 200, "dave": 404, "bob": 200, "carol": 200, "sam": 200, "root": 200}
TOKEN_T = {"alice": 200, "dave": 404, "bob": 200, "carol": 200, "sam": 200, "root": 200}

GETS = [
    ("/", ALL_SIGNED_IN),
    ("/requests/", ALL_SIGNED_IN),
    ("/requests/?status=pending", ALL_SIGNED_IN),
    ("/requests/new", ALL_SIGNED_IN),
    ("/requests/{R}/", REQUEST_R),
    ("/requests/{R}/status", REQUEST_R),
    ("/approvals/", {"alice": 403, "dave": 403, "bob": 200, "carol": 200, "sam": 403, "root": 403}),
    ("/audit/", SECURITY_ONLY),
    ("/tokens/", ALL_SIGNED_IN),
    ("/tokens/{T}/", TOKEN_T),
    ("/requests/new?renew={T}", {"alice": 200, "dave": 404, "bob": 403, "carol": 403, "sam": 200, "root": 200}),
    ("/security/", SECURITY_ONLY),
    ("/security/suggestions", SECURITY_ONLY),
    ("/security/suggestions?kind=retire&team=pay&q=ci&sort=unused&page=2", SECURITY_ONLY),
    ("/api-keys/", ALL_SIGNED_IN),
    # Security's tools
    ("/security/who-can", SECURITY_ONLY),
    ("/security/who-can?registry=contosotest&repository=myapp/api", SECURITY_ONLY),
    ("/security/who-can?token={T}", SECURITY_ONLY),
    ("/security/export/tokens?format=json", SECURITY_ONLY),
    ("/security/export/audit?format=csv", SECURITY_ONLY),
    ("/security/webhooks", SECURITY_ONLY),
    ("/security/webhooks?status=failed", SECURITY_ONLY),
    ("/reviews/", SECURITY_ONLY),
    ("/reviews/mine", ALL_SIGNED_IN),
    ("/reviews/{V}/", SECURITY_ONLY),
    ("/reviews/{V}/export?format=csv", SECURITY_ONLY),
    # Confirmation pages change nothing: GET and POST both only ask.
    ("/tokens/{T}/confirm/disable", {"alice": 200, "dave": 404, "bob": 200, "carol": 200, "sam": 200, "root": 200}),
    ("/tokens/{T}/confirm/retire", {"alice": 200, "dave": 404, "bob": 403, "carol": 403, "sam": 200, "root": 200}),
    ("/tokens/{T}/confirm/transfer", {"alice": 200, "dave": 404, "bob": 403, "carol": 403, "sam": 200, "root": 200}),
    ("/tokens/{T}/confirm/nonsense", {"alice": 404, "dave": 404, "bob": 404, "carol": 404, "sam": 404, "root": 404}),
    ("/api-keys/{K}/confirm-revoke", {"alice": 404, "dave": 404, "bob": 200, "carol": 404, "sam": 404, "root": 404}),
]

# (path, body, {user: status}) in the order the users act: the allowed, state-changing one last.
POSTS = [
    ("/requests/preview", {}, {"alice": 200, "dave": 200, "bob": 200}),
    ("/requests/{R}/cancel", {}, {"dave": 404, "bob": 403, "carol": 403, "sam": 403, "root": 403, "alice": 302}),
    (
        "/requests/{R}/decide",
        {"decision": "approve"},
        {"dave": 404, "alice": 403, "sam": 403, "root": 403, "bob": 302},
    ),
    ("/requests/{Q}/reveal", {}, {"dave": 404, "bob": 403, "carol": 403, "sam": 403, "root": 403, "alice": 200}),
    ("/requests/{Q}/retry", {}, {"dave": 404, "alice": 403, "bob": 403, "sam": 403, "root": 302}),
    ("/requests/{Q}/new-password", {}, {"dave": 404, "bob": 403, "sam": 403, "alice": 302}),
    ("/tokens/{T}/rotate", {}, {"dave": 404, "bob": 403, "carol": 403, "sam": 403, "root": 403, "alice": 302}),
    ("/tokens/{T}/confirm-switch", {}, {"dave": 404, "bob": 403, "alice": 302}),
    ("/tokens/{T}/reveal/password1", {}, {"dave": 404, "bob": 403, "sam": 403, "root": 403, "alice": 200}),
    ("/tokens/{T}/retry/password1", {}, {"dave": 404, "alice": 403, "bob": 403, "sam": 403, "root": 302}),
    ("/tokens/{T}/disable", {"reason": "matrix"}, {"dave": 404, "bob": 302}),
    ("/tokens/{T}/enable", {}, {"dave": 404, "carol": 302}),
    ("/tokens/{T}/let-expire", {"value": "1"}, {"dave": 404, "bob": 403, "alice": 302}),
    ("/tokens/{T}/transfer", {"to": "carol"}, {"dave": 404, "bob": 403, "alice": 302}),
    ("/tokens/{T}/storage", {"location": "CI vault"}, {"dave": 404, "bob": 403, "sam": 403, "alice": 302}),
    ("/tokens/{T}/restore", {}, {"dave": 404, "alice": 403, "bob": 403, "sam": 302}),
    ("/tokens/{T}/retire", {}, {"dave": 404, "bob": 403, "carol": 403, "sam": 302}),
    ("/registries/{G}/reconcile", {}, {"alice": 403, "dave": 403, "bob": 403, "root": 302}),
    ("/unmanaged/{U}/disable", {"reason": "x"}, {"alice": 403, "bob": 403}),
    ("/unmanaged/{U}/adopt", {}, {"alice": 403, "dave": 403, "bob": 403, "sam": 302}),
    ("/api-keys/{K}/revoke", {}, {"alice": 404, "sam": 404, "bob": 302}),
    ("/security/webhooks/{W}/retry", {}, {"alice": 403, "dave": 403, "bob": 403, "carol": 403, "sam": 302}),
    ("/reviews/start", {"name": "x"}, {"alice": 403, "dave": 403, "bob": 403, "sam": 400}),
    ("/reviews/items/{I}/keep", {"justification": "still used"}, {"dave": 404, "bob": 404, "alice": 302}),
    ("/reviews/items/{I}/change", {}, {"dave": 404, "bob": 404, "alice": 302}),
    ("/reviews/items/{I}/retire", {}, {"dave": 404, "bob": 404, "carol": 404, "alice": 302}),
]


def _client(scenario: dict, who: str) -> Client:
    client = Client()
    if who != "anonymous":
        client.force_login(scenario["users"][who])
    return client


@pytest.mark.parametrize(("path", "expected"), GETS, ids=[p for p, _ in GETS])
def test_it_answers_each_get_as_expected(scenario, path, expected) -> None:
    url = path.format(**scenario["ids"])
    got = {who: _client(scenario, who).get(url).status_code for who in USERS}
    assert got == {"anonymous": LOGIN, **expected}


@pytest.mark.parametrize(("path", "body", "expected"), POSTS, ids=[p for p, _, _ in POSTS])
def test_it_answers_each_post_as_expected(scenario, path, body, expected) -> None:
    url = path.format(**scenario["ids"])
    assert Client().post(url, body).status_code == LOGIN
    got = {who: _client(scenario, who).post(url, body).status_code for who in expected}
    assert got == expected
    # The same URL refuses other verbs.
    assert _client(scenario, "alice").get(url).status_code == 405
    assert _client(scenario, "alice").put(url).status_code == 405


# Open to everyone, signed in or not.
PUBLIC = {"/healthz"}


def test_it_covers_every_page() -> None:
    """Every route of the portal is in the matrix above, so none can be added without saying who may use it."""
    from accessreq.urls import urlpatterns

    def shape(path: str) -> str:
        return re.sub(r"\{[A-Z]\}|<[^>]+>|password[12]|(?<=/confirm/)[a-z]+", "*", "/" + path.split("?")[0].lstrip("/"))

    covered = {shape(p) for p, _ in GETS} | {shape(p) for p, _, _ in POSTS} | PUBLIC
    routes = {shape(str(pattern.pattern)) for pattern in urlpatterns}
    assert routes - covered == set()
