"""Input that could never be valid is a 4xx before any view sees it: bodies too large (413), API bodies that are not
JSON (415), text that cannot be stored (400, naming the field). Bodies go over the wire as raw bytes here, so a test
can send what a browser or script could send, not only what Django's test client would encode."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accessreq import apikeys
from accessreq.models import AccessRequest
from tests.conftest import PASSWORD, request_data

pytestmark = pytest.mark.django_db

API = "/api/v1"
FORM = "application/x-www-form-urlencoded"


def _api(user: User) -> Client:
    _, raw = apikeys.create(user, "tests")
    return Client(headers={"Authorization": f"Bearer {raw}"})


def _signed_in(user: User) -> Client:
    client = Client()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def _json_body(registry: Any, **overrides: object) -> dict[str, object]:
    from datetime import timedelta

    from django.utils import timezone

    body: dict[str, object] = {
        "registry": registry.pk,
        "rules": [{"repository": "myapp/api", "actions": ["content/read", "metadata/read"]}],
        "purpose": "The payments CI pipeline pulls the base image.",
        "client_kind": "ci",
        "team": "Payments",
        "password_lifetime_days": 30,
        "retire_on": (timezone.localdate() + timedelta(days=90)).isoformat(),
    }
    body.update(overrides)
    return body


def _form_bytes(registry: Any, **raw: bytes) -> bytes:
    """The request form, urlencoded, with some fields replaced by raw (already percent-encoded or not) bytes."""
    from urllib.parse import urlencode

    data = request_data(registry)
    for name in raw:
        data.pop(name, None)
    encoded = urlencode(data, doseq=True).encode()
    return b"&".join([encoded, *(name.encode() + b"=" + value for name, value in raw.items())])


# 413: too large


def test_it_refuses_a_body_over_the_limit_by_its_content_length(registry, requester, settings) -> None:
    alice = _api(requester)
    big = _json_body(registry, purpose="x" * (5 * 1024 * 1024))

    response = alice.post(f"{API}/requests", json.dumps(big), content_type="application/json")

    assert response.status_code == 413
    assert "larger than 1048576 bytes" in response.json()["detail"]
    assert not AccessRequest.objects.exists()


def test_it_refuses_a_form_over_the_limit_with_a_page(registry, requester, settings) -> None:
    settings.MAX_REQUEST_BODY_BYTES = 2000
    response = _signed_in(requester).post(
        "/requests/new", _form_bytes(registry, purpose=b"x" * 3000), content_type=FORM
    )
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/html")
    assert b"larger than 2000 bytes" in response.content
    assert not AccessRequest.objects.exists()


def test_it_takes_a_body_just_within_the_limit(registry, requester, approver, settings) -> None:
    body = json.dumps(_json_body(registry)).encode()
    settings.MAX_REQUEST_BODY_BYTES = len(body)
    response = _api(requester).post(f"{API}/requests", body, content_type="application/json")
    assert response.status_code == 201, response.content


def test_it_refuses_a_content_length_that_is_not_a_number(client: Client) -> None:
    response = client.post(f"{API}/requests", b"{}", content_type="application/json", CONTENT_LENGTH="12abc")
    assert response.status_code == 400
    assert response.json() == {"detail": "The Content-Length header is not a number."}


def _asgi_post(path: str, chunks: list[bytes], content_type: str = "application/json") -> tuple[int, bytes]:
    """POST through the ASGI application with a chunked body: no Content-Length, only the bytes themselves."""
    from portal.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", content_type.encode()),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    incoming = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    incoming.append({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # the client stays connected until the answer is sent
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # On a thread of its own: an earlier test (Playwright's sync API) may leave an event loop running on this one.
    runner = threading.Thread(target=asyncio.run, args=(application(scope, receive, send),))
    runner.start()
    runner.join(timeout=60)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_chunked_body_over_the_limit_by_the_bytes_read() -> None:
    chunk = b'{"purpose": "' + b"x" * (256 * 1024)
    status, body = _asgi_post(f"{API}/requests", [chunk] * 5)
    assert status == 413
    assert json.loads(body)["detail"].startswith("The request body is larger than")


@pytest.mark.django_db(transaction=True)
def test_it_passes_a_small_chunked_body_on() -> None:
    # Not refused by the guard: the API itself answers, that the caller is not signed in.
    status, body = _asgi_post(f"{API}/requests", [b'{"purpose":', b' "short"}'])
    assert status == 401, body


# 415: the API takes JSON


def test_it_refuses_an_api_body_that_is_not_json(registry, requester) -> None:
    alice = _api(requester)
    for content_type, body in [(FORM, b"purpose=x"), ("text/plain", b"{}"), ("", b"{}")]:
        response = alice.post(f"{API}/requests", body, content_type=content_type)
        assert response.status_code == 415, content_type
        assert response.json() == {"detail": "Send the request body as JSON, with Content-Type: application/json."}
    assert not AccessRequest.objects.exists()


def test_it_takes_json_with_a_charset_and_a_post_without_a_body(registry, requester, approver) -> None:
    alice = _api(requester)
    body = json.dumps(_json_body(registry))
    response = alice.post(f"{API}/requests", body, content_type="application/json; charset=utf-8")
    assert response.status_code == 201, response.content
    # No body, so no content type to check: cancelling needs none.
    response = alice.generic("POST", f"{API}/requests/{response.json()['id']}/cancel")
    assert response.status_code == 200, response.content


def test_it_takes_an_empty_form_where_no_body_is_needed(registry, requester, approver) -> None:
    alice = _api(requester)
    filed = alice.post(f"{API}/requests", json.dumps(_json_body(registry)), content_type="application/json").json()
    # What Django's own client sends for post(path) with no data: a multipart form without a single field.
    response = alice.post(f"{API}/requests/{filed['id']}/cancel")
    assert response.status_code == 200, response.content
    refused = alice.post(f"{API}/requests/{filed['id']}/cancel", {"reason": "x"})
    assert refused.status_code == 415


def test_it_leaves_pages_their_forms(registry, requester, approver) -> None:
    response = _signed_in(requester).post("/requests/new", _form_bytes(registry), content_type=FORM)
    assert response.status_code == 302
    assert AccessRequest.objects.count() == 1


# 400: text that cannot be stored


def test_it_names_the_api_field_holding_an_unpaired_surrogate(registry, requester) -> None:
    alice = _api(requester)
    # json.dumps escapes it as \ud800: valid JSON, yet no database can store the string it decodes to.
    rules = [{"repository": "myapp/\ud800", "actions": ["content/read"]}]
    body = json.dumps(_json_body(registry, purpose="Pulls \ud800 images.", rules=rules))
    assert "\\ud800" in body

    response = alice.post(f"{API}/requests", body, content_type="application/json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"purpose", "rules[0].repository"}
    assert "UTF-8" in errors["purpose"][0]
    assert not AccessRequest.objects.exists()


def test_it_names_the_api_field_holding_a_null_character(registry, requester) -> None:
    body = json.dumps(_json_body(registry, team="Pay\x00ments"))
    response = _api(requester).post(f"{API}/requests", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"errors": {"team": ["Null characters are not allowed."]}}


def test_it_refuses_an_api_body_that_is_not_utf8(registry, requester) -> None:
    body = json.dumps(_json_body(registry, purpose="PURPOSE")).encode().replace(b"PURPOSE", b"caf\xe9")
    response = _api(requester).post(f"{API}/requests", body, content_type="application/json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["body"]


def test_it_refuses_json_nested_too_deeply_for_any_parser(requester) -> None:
    body = b"[" * 200_000 + b"]" * 200_000
    response = _api(requester).post(f"{API}/requests", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"errors": {"body": ["Nested too deeply."]}}


def test_it_takes_any_text_that_can_be_stored(registry, requester, approver) -> None:
    purpose = "Pulls the café's base images for ünïcode builds 🚀 (第一)."
    response = _api(requester).post(
        f"{API}/requests", json.dumps(_json_body(registry, purpose=purpose)), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert AccessRequest.objects.get().purpose == purpose


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"%ED%A0%80", b"valid UTF-8"),  # a surrogate, UTF-8-encoded: not UTF-8 at all
        (b"caf%E9", b"valid UTF-8"),  # Latin-1
        (b"caf\xe9", b"valid UTF-8"),  # the same byte, not even percent-encoded
        (b"Pulls%00images", b"Null characters are not allowed."),
    ],
)
def test_it_names_the_form_field_holding_text_that_cannot_be_stored(registry, requester, raw, message) -> None:
    response = _signed_in(requester).post("/requests/new", _form_bytes(registry, purpose=raw), content_type=FORM)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert b"<strong>purpose</strong>" in response.content
    assert message in response.content
    assert not AccessRequest.objects.exists()


def test_it_names_the_query_parameter_that_is_not_utf8(requester) -> None:
    alice = _signed_in(requester)
    response = alice.get("/requests/?status=%ED%A0%80")
    assert response.status_code == 400
    assert b"<strong>status</strong>" in response.content
    # Raw bytes, as a WSGI server hands them over (latin-1 in the environ), which Django would turn into U+FFFD.
    response = alice.get("/requests/", QUERY_STRING="status=pend\xe9ing")
    assert response.status_code == 400
    response = _api(requester).get(f"{API}/requests?status=%00")
    assert response.status_code == 400
    assert response.json() == {"errors": {"status": ["Null characters are not allowed."]}}


def test_it_takes_a_query_string_in_utf8(requester) -> None:
    assert _signed_in(requester).get("/requests/?status=caf%C3%A9").status_code == 200


def test_it_keeps_the_security_headers_and_request_id_on_refusals(client: Client) -> None:
    response = client.get("/requests?q=%FF")
    assert response.status_code == 400
    assert response["X-Request-ID"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response["Content-Security-Policy"]


# Booleans where numbers belong: schema work, not the guard's. These pass once the API's schema refuses them.
