"""Personal API keys: made on a page or with a command, shown once, stored hashed, expiring and revocable."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accessreq import apikeys
from accessreq.models import ApiKey, AuditEvent
from tests.conftest import login

pytestmark = pytest.mark.django_db

API = "/api/v1"




def _bearer(raw: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {raw}"})


def test_it_authenticates_and_notes_use_at_most_once_a_minute(requester) -> None:
    key, raw = apikeys.create(requester, "ci")
    assert raw.startswith(f"acrp_{key.prefix}_")
    assert _bearer(raw).get(f"{API}/requests").status_code == 200
    key.refresh_from_db()
    first_use = key.last_used_at
    assert first_use is not None
    _bearer(raw).get(f"{API}/requests")
    key.refresh_from_db()
    assert key.last_used_at == first_use
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        _bearer(raw).get(f"{API}/requests")
    key.refresh_from_db()
    assert key.last_used_at > first_use


def test_it_stores_only_a_hash(requester) -> None:
    key, raw = apikeys.create(requester, "ci")
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    secret = raw.rsplit("_", 1)[1]
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert all(secret not in str(value) for value in stored.values())
    assert all(secret not in str(e.details) for e in AuditEvent.objects.all())


def test_it_refuses_unknown_and_malformed_keys(requester) -> None:
    key, raw = apikeys.create(requester, "ci")
    for bad, detail in [
        (raw[:-1] + ("A" if raw[-1] != "A" else "B"), "Invalid API key."),
        (f"acrp_ffffffffffff_{raw.rsplit('_', 1)[1]}", "Invalid API key."),
        ("not-a-key", "Malformed API key."),
        ("", "Malformed API key."),
    ]:
        response = _bearer(bad).get(f"{API}/requests")
        assert response.status_code == 401, bad
        assert response.json() == {"detail": detail}


def test_it_refuses_an_expired_key(requester) -> None:
    _, raw = apikeys.create(requester, "ci", days=1)
    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=1)):
        response = _bearer(raw).get(f"{API}/requests")
    assert response.status_code == 401
    assert response.json() == {"detail": "This API key has expired."}


def test_it_refuses_a_revoked_key(requester) -> None:
    key, raw = apikeys.create(requester, "ci")
    assert apikeys.revoke(key, requester, None) is True
    assert apikeys.revoke(key, requester, None) is False
    response = _bearer(raw).get(f"{API}/requests")
    assert response.status_code == 401
    assert response.json() == {"detail": "This API key has been revoked."}


def test_it_refuses_the_key_of_an_inactive_user(requester) -> None:
    _, raw = apikeys.create(requester, "ci")
    requester.is_active = False
    requester.save()
    assert _bearer(raw).get(f"{API}/requests").status_code == 401


# The page


def test_it_lists_only_my_keys(requester, approver) -> None:
    apikeys.create(requester, "alice-pipeline")
    apikeys.create(approver, "bob-pipeline")
    response = login(requester).get("/api-keys/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "alice-pipeline" in body and "bob-pipeline" not in body
    assert "no-store" in response["Cache-Control"]
    assert 'href="/api-keys/"' in body  # the nav link


def test_it_makes_a_key_and_shows_it_once(requester) -> None:
    alice = login(requester)
    response = alice.post("/api-keys/", {"name": "payments pipeline", "days": "30"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = response.context["new_key"][1]
    body = response.content.decode()
    assert raw in body and 'hx-history="false"' in body
    key = ApiKey.objects.get()
    assert key.name == "payments pipeline" and key.user == requester
    assert timedelta(days=29, hours=23) < key.expires_at - key.created_at <= timedelta(days=30)
    event = AuditEvent.objects.get(action="apikey.created")
    assert event.actor_name == "alice" and event.details["prefix"] == key.prefix
    assert raw not in alice.get("/api-keys/").content.decode()
    assert _bearer(raw).get(f"{API}/registries").status_code == 200


@pytest.mark.parametrize("days", ["0", "366", "soon"])
def test_it_refuses_a_lifetime_out_of_bounds(requester, days) -> None:
    response = login(requester).post("/api-keys/", {"name": "ci", "days": days})
    assert response.status_code == 200
    assert response.context["form"].errors["days"]
    assert "The key was not made" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_it_offers_ninety_days_by_default(requester) -> None:
    response = login(requester).get("/api-keys/")
    assert response.context["form"]["days"].value() == 90


def test_it_revokes_my_key(requester) -> None:
    key, raw = apikeys.create(requester, "ci")
    response = login(requester).post(f"/api-keys/{key.pk}/revoke")
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.get(action="apikey.revoked").actor_name == "alice"
    assert _bearer(raw).get(f"{API}/requests").status_code == 401
    assert "Revoked" in login(requester).get("/api-keys/").content.decode()


def test_it_hides_other_peoples_keys(requester, outsider) -> None:
    key, raw = apikeys.create(requester, "ci")
    assert login(outsider).post(f"/api-keys/{key.pk}/revoke").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_it_rejects_get_on_revoke(requester) -> None:
    key, _ = apikeys.create(requester, "ci")
    assert login(requester).get(f"/api-keys/{key.pk}/revoke").status_code == 405


def test_it_needs_a_signed_in_user(requester) -> None:
    response = Client().get("/api-keys/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# The command


def test_it_prints_a_key_that_works(requester) -> None:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "alice", "--days", "7", "--name", "deploy bot", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert raw.startswith("acrp_")
    key = ApiKey.objects.get()
    assert key.name == "deploy bot" and key.user == requester
    assert key.expires_at - key.created_at == timedelta(days=7)
    assert key.prefix in err.getvalue() and raw not in err.getvalue()
    assert _bearer(raw).get(f"{API}/requests").status_code == 200
    assert AuditEvent.objects.get(action="apikey.created").details["user"] == "alice"


def test_it_refuses_an_unknown_user_or_lifetime(requester) -> None:
    with pytest.raises(CommandError, match="No active user"):
        call_command("create_api_key", "nobody", stdout=StringIO())
    with pytest.raises(CommandError, match="--days"):
        call_command("create_api_key", "alice", "--days", "400", stdout=StringIO())
    assert not ApiKey.objects.exists()
