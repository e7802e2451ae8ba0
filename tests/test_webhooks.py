"""Outgoing webhooks for security events: signed, retried with backoff by the worker, each delivery logged, and
received here by a real HTTP server on a local socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction

from accessreq import alerts, reconcile, webhooks
from accessreq.models import DeliveryStatus, Token, WebhookDelivery, WebhookEndpoint
from tests.conftest import login, wait_until

SECRET = "shared-with-the-receiver"


class Receiver:
    """A local HTTP server that records what it is sent and answers with the next status in `answers`."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": dict(self.headers), "body": body})
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def endpoint(url: str, **extra) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(name="SOC", url=url, secret=SECRET, **extra)


def check_signature(hit: dict) -> dict:
    headers = hit["headers"]
    assert webhooks.verify(SECRET, headers["X-Portal-Timestamp"], hit["body"], headers["X-Portal-Signature"])
    assert not webhooks.verify(
        "another-secret", headers["X-Portal-Timestamp"], hit["body"], headers["X-Portal-Signature"]
    )
    return json.loads(hit["body"])


def test_the_worker_retries_with_backoff_until_the_receiver_takes_it(celery_worker, receiver, settings) -> None:
    settings.WEBHOOK_RETRY_SECONDS = 0.2
    receiver.answers = [503, 429]
    endpoint(receiver.url)
    with transaction.atomic():
        assert alerts.raise_("token.drift_found", "The scope map of x differs", details={"found": ["a"]}) == 1
    delivery = WebhookDelivery.objects.get()
    wait_until(lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.DELIVERED)
    delivery.refresh_from_db()
    assert delivery.attempts == 3 and delivery.last_status_code == 200 and delivery.delivered_at is not None
    assert len(receiver.received) == 3
    payload = check_signature(receiver.received[-1])
    assert payload["event"] == "token.drift_found" and payload["details"] == {"found": ["a"]}
    assert receiver.received[-1]["headers"]["X-Portal-Event"] == "token.drift_found"


@pytest.mark.django_db
def test_it_gives_up_on_a_refusal_and_after_the_last_attempt(receiver, settings) -> None:
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    settings.WEBHOOK_RETRY_SECONDS = 5
    hook = endpoint(receiver.url)
    receiver.answers = [400]
    refused = WebhookDelivery.objects.create(endpoint=hook, event="e", payload={"event": "e", "summary": "s", "at": ""})
    assert alerts.deliver(refused.pk) is None
    refused.refresh_from_db()
    assert (refused.status, refused.attempts, refused.last_status_code) == ("failed", 1, 400)
    receiver.answers = [500, 500]
    down = WebhookDelivery.objects.create(endpoint=hook, event="e", payload={"event": "e", "summary": "s", "at": ""})
    assert (
        alerts.deliver(down.pk) == settings.WEBHOOK_RETRY_SECONDS if hasattr(settings, "WEBHOOK_RETRY_SECONDS") else 10
    )
    assert alerts.deliver(down.pk) is None
    down.refresh_from_db()
    assert (down.status, down.attempts) == ("failed", 2)
    # Nobody listening: transient, retried.
    gone = endpoint("http://127.0.0.1:9/nothing-here")
    unreachable = WebhookDelivery.objects.create(
        endpoint=gone, event="e", payload={"event": "e", "summary": "s", "at": ""}
    )
    assert alerts.deliver(unreachable.pk) is not None


@pytest.mark.django_db
def test_it_speaks_teams_and_slack(receiver) -> None:
    teams = endpoint(receiver.url, kind="teams")
    slack = endpoint(receiver.url, kind="slack", events=["review.overdue"])
    with transaction.atomic():
        alerts.raise_("review.overdue", "2 tokens were not answered", details={"overdue": 2})
        alerts.raise_("password.reveal_refused", "second reveal")  # slack does not want this one
    assert WebhookDelivery.objects.filter(endpoint=slack).count() == 1
    for delivery in WebhookDelivery.objects.filter(event="review.overdue").order_by("endpoint__kind"):
        alerts.deliver(delivery.pk)
    bodies = [check_signature(hit) for hit in receiver.received]
    assert any(b.get("@type") == "MessageCard" and b["title"] == "2 tokens were not answered" for b in bodies)
    assert any(b.get("text", "").startswith("*2 tokens were not answered*") for b in bodies)
    assert teams.deliveries.filter(status="delivered").exists()


@pytest.mark.django_db
def test_a_second_reveal_attempt_raises_an_alert(ready_request, requester, django_capture_on_commit_callbacks) -> None:
    endpoint("http://127.0.0.1:9/unused")
    alice = login(requester)
    assert alice.post(f"/requests/{ready_request.pk}/reveal").status_code == 200
    assert not WebhookDelivery.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        assert alice.post(f"/requests/{ready_request.pk}/reveal").status_code == 410
    delivery = WebhookDelivery.objects.get()
    assert delivery.event == "password.reveal_refused" and delivery.payload["details"]["by"] == "alice"
    assert "password" not in json.dumps(delivery.payload["details"]).replace("password1", "")


@pytest.mark.django_db
def test_reconcile_raises_drift_and_unmanaged_tokens(ready_request, registry, acr) -> None:
    from acr_emulator.testing import make_client
    from tests.conftest import SUBSCRIPTION

    endpoint("http://127.0.0.1:9/unused")
    token = Token.objects.get(request=ready_request)
    sdk = make_client(acr.url, subscription_id=SUBSCRIPTION, polling_interval=0)
    sdk.scope_maps.begin_update(
        "portal-rg", registry.name, token.scope_map_name, {"properties": {"actions": ["repositories/*/content/write"]}}
    ).result()
    scope_map_id = sdk.scope_maps.get("portal-rg", registry.name, "_repositories_pull").id
    sdk.tokens.begin_create(
        "portal-rg", registry.name, "handmade1", {"properties": {"scopeMapId": scope_map_id}}
    ).result()
    reconcile.reconcile(registry)
    assert set(WebhookDelivery.objects.values_list("event", flat=True)) == {
        "token.drift_found",
        "unmanaged_token.found",
    }
    reconcile.reconcile(registry)  # nothing new: no new alerts
    assert WebhookDelivery.objects.count() == 2
