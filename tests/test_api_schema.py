"""The API's OpenAPI schema is served, documented offline, and true: generated calls never get a 5xx and every
response matches what the schema says."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from accessreq import apikeys

pytestmark = pytest.mark.django_db

# Enough to find a crash or a drift from the schema in each operation, while the whole run stays short.
EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_it_serves_the_schema(client: Client) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "ACR Access Portal API"
    assert {"/api/v1/requests", "/api/v1/requests/{pk}/reveal", "/api/v1/audit"} <= set(schema["paths"])
    assert set(schema["components"]["securitySchemes"]) == {"KeyAuth", "SignedInSession"}
    post = schema["paths"]["/api/v1/requests"]["post"]["responses"]
    assert {"201", "400", "401"} <= set(post)


def test_it_documents_the_api_with_local_assets_only(client: Client) -> None:
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    body = response.content.decode()
    assert "swagger-ui-bundle.js" in body
    # Everything from our own static files: the page works offline and under a strict CSP.
    assert "cdn" not in body.lower() and "https://" not in body
    assert "<script>" not in body  # no inline script; the settings are a JSON block, not code


@contextmanager
def _connection_kept_open() -> Iterator[None]:
    # The real WSGI handler closes the database connection after each request, which would end the test's
    # transaction; Django's test client disconnects the same signal for each of its requests, and so reconnects it.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def test_it_keeps_to_its_schema(ready_request, requester, approver, security) -> None:
    # Three callers between them reach 200s, 403s, 404s, 409s and 410s; pinning some ids to real rows lets the
    # calls find something rather than only 404s.
    users = (requester, approver, security)
    callers = [{"Authorization": f"Bearer {apikeys.create(user, 'schema')[1]}"} for user in users]
    real_ids = {"/requests/": ready_request.pk, "/tokens/": ready_request.token.pk}
    with _connection_kept_open():
        schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 11
        for operation in operations:
            real_id = next((pk for part, pk in real_ids.items() if part in operation.path), None)
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                _check_operation(operation.as_strategy(mode), callers)
            if real_id is not None:
                pinned = operation.as_strategy(path_parameters={"pk": real_id})
                _check_operation(pinned, callers)


def _check_operation(strategy: st.SearchStrategy, callers: list[dict[str, str]]) -> None:
    @given(case=strategy, headers=st.sampled_from(callers))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case, headers: dict[str, str]) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()
