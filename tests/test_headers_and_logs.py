"""Security headers on every page, a request id on every response and log line, JSON logs for production."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from portal.middleware import JsonFormatter, RequestIdFilter, request_id

pytestmark = pytest.mark.django_db


def test_it_sends_a_strict_content_security_policy(client: Client, requester) -> None:
    client.force_login(requester)
    for url in ("/", "/accounts/login/", "/requests/new", "/api/v1/docs"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy


def test_it_refuses_framing_and_sniffing(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_it_gives_every_response_a_request_id(client: Client) -> None:
    first, second = client.get("/accounts/login/"), client.get("/accounts/login/")
    assert len(first["X-Request-ID"]) == 32 and first["X-Request-ID"] != second["X-Request-ID"]
    # A proxy's own id is kept; a header that could forge log lines is not.
    assert client.get("/accounts/login/", headers={"X-Request-ID": "lb-1234abcd"})["X-Request-ID"] == "lb-1234abcd"
    forged = client.get("/accounts/login/", headers={"X-Request-ID": "x\nlevel=ERROR"})["X-Request-ID"]
    assert "\n" not in forged


def test_it_logs_json_lines_with_the_request_id() -> None:
    record = logging.LogRecord("accessreq", logging.WARNING, __file__, 1, "slot %s failed", ("7",), None)
    token = request_id.set("abc12345")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "slot 7 failed" and line["request_id"] == "abc12345" and line["level"] == "WARNING"
