"""Outgoing webhooks: the one module that posts to receivers outside the portal.

A body is JSON: the generic shape, or the preset a Microsoft Teams or Slack incoming webhook expects. Each request
carries `X-Portal-Event`, `X-Portal-Delivery`, `X-Portal-Timestamp` and `X-Portal-Signature: sha256=<hex>`, an
HMAC-SHA256 under the endpoint's secret over `<timestamp>.<body>`, so a receiver can check it came from the portal
and refuse a replay. Refusals are split as the rest of the portal splits them: a timeout, a connection error, 429
or 5xx is transient (the task retries with backoff); any other answer is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from accessreq.models import WebhookEndpoint, WebhookKind

TIMEOUT = float(getattr(settings, "WEBHOOK_TIMEOUT", 10))


class WebhookError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Transient(WebhookError):
    """Worth retrying: the receiver was down, slow, or asked us to wait."""


class Permanent(WebhookError):
    """The receiver refused the request itself: retrying the same body will not help."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (and what the tests do)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def body_for(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The generic payload, or the shape a Teams or Slack incoming webhook shows as a message."""
    if kind == WebhookKind.SLACK:
        return {"text": f"*{payload['summary']}*\n`{payload['event']}` at {payload['at']}\n{payload.get('link', '')}"}
    if kind == WebhookKind.TEAMS:
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": payload["summary"],
            "themeColor": "C4314B",
            "title": payload["summary"],
            "sections": [{"facts": [{"name": k, "value": str(v)} for k, v in payload.get("details", {}).items()]}],
            "text": f"`{payload['event']}` at {payload['at']}",
        }
    return payload


def post(endpoint: WebhookEndpoint, delivery_id: int, event: str, payload: dict[str, Any]) -> int:
    """Send one delivery; returns the receiver's status code, or raises Transient or Permanent."""
    body = json.dumps(body_for(endpoint.kind, payload), cls=DjangoJSONEncoder, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        endpoint.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "acr-access-portal-webhooks",
            "X-Portal-Event": event,
            "X-Portal-Delivery": str(delivery_id),
            "X-Portal-Timestamp": timestamp,
            "X-Portal-Signature": sign(endpoint.secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - an admin-set URL
            return response.status
    except urllib.error.HTTPError as exc:
        if exc.code == 429 or exc.code >= 500:
            raise Transient(f"the receiver answered {exc.code}", exc.code) from exc
        raise Permanent(f"the receiver answered {exc.code}", exc.code) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise Transient(f"could not reach the receiver: {getattr(exc, 'reason', exc)}") from exc
