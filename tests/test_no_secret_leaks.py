"""After the whole flow, the revealed password exists nowhere but in the one response that showed it: not in a log
line, an e-mail, a broker message, a task's arguments, a later page, or any column of any table."""

from __future__ import annotations

import logging

import pytest
from celery.signals import before_task_publish
from django.core import mail
from django.db import connection
from django.test import Client

from accessreq.models import AccessRequest, PasswordSlot, RequestStatus, SlotStatus, Token
from tests.conftest import PASSWORD, request_data, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _every_cell() -> list[str]:
    """Every value of every column of every table, as text, whatever model (or none) owns it."""
    cells = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - names from the schema
            for row in cursor.fetchall():
                cells.extend(bytes(v).decode("latin-1") if isinstance(v, bytes | memoryview) else str(v) for v in row)
    return cells


def test_it_leaves_the_password_nowhere(celery_worker, registry, requester, approver, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    published: list[str] = []

    def capture(body: object = None, headers: object = None, **kwargs: object) -> None:
        published.append(f"{body!r} {headers!r}")

    before_task_publish.connect(capture, weak=False)
    try:
        alice, bob = Client(), Client()
        alice.login(username="alice", password=PASSWORD)
        bob.login(username="bob", password=PASSWORD)
        alice.post("/requests/new", request_data(registry))
        req = AccessRequest.objects.get()
        bob.post(f"/requests/{req.pk}/decide", {"decision": "approve"})
        wait_until(lambda: AccessRequest.objects.get(pk=req.pk).status == RequestStatus.READY)
        password = alice.post(f"/requests/{req.pk}/reveal").context["revealed"].password

        # Rotation too: a second password goes through the worker and is revealed once.
        token = Token.objects.get()
        alice.post(f"/tokens/{token.pk}/rotate")
        wait_until(lambda: PasswordSlot.objects.get(token=token, name="password2").status == SlotStatus.AWAITING_REVEAL)
        rotated = alice.post(f"/tokens/{token.pk}/reveal/password2").context["revealed"].password
        later_pages = [
            alice.get(f"/requests/{req.pk}/").content.decode(),
            alice.get(f"/tokens/{token.pk}/").content.decode(),
            alice.post(f"/requests/{req.pk}/reveal").content.decode(),
            alice.get("/api/v1/tokens").content.decode(),
        ]
    finally:
        before_task_publish.disconnect(capture)

    assert len(password) >= 32 and len(rotated) >= 32 and password != rotated
    assert published, "no task was published: the broker check would prove nothing"
    assert caplog.records, "no log line was captured: the log check would prove nothing"
    places = {
        "logs": [r.getMessage() for r in caplog.records] + [caplog.text],
        "e-mails": [f"{m.subject} {m.body} {m.to}" for m in mail.outbox],
        "broker messages": published,
        "later pages": later_pages,
        "database": _every_cell(),
    }
    assert places["e-mails"], "no e-mail was sent: the e-mail check would prove nothing"
    for where, texts in places.items():
        for secret in (password, rotated):
            assert not [t for t in texts if secret in t], f"a password was found in the {where}"
