"""Exports of the token inventory and the audit log: streamed, filtered, without secrets, safe in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import timedelta

import pytest
from django.utils import timezone

from accessreq import audit, exports
from accessreq.models import AuditEvent, SealedPassword, Token
from tests.conftest import login

pytestmark = pytest.mark.django_db
API = "/api/v1"


def body(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode()


def add_events(count: int, start_id: int = 0, when=None) -> None:
    """Valid-looking rows written straight to the table (the chain need not verify here)."""
    when = when or timezone.now()
    batch = []
    for i in range(start_id, start_id + count):
        batch.append(
            AuditEvent(
                created_at=when,
                actor_name="bulk",
                action="token.disabled" if i % 2 else "request.approved",
                target_type="accessreq.token",
                target_id=str(i),
                target_repr=f"contosotest/token-{i}",
                details={"reason": '=HYPERLINK("http://evil")' if i == start_id else "routine"},
                prev_hash=f"{i:064x}",
                hash=f"{i + 1:064x}",
                key_id="bulk",
            )
        )
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)


def test_it_exports_tokens_as_csv_and_json_without_secrets(ready_request, security) -> None:
    token = Token.objects.get(request=ready_request)
    Token.objects.filter(pk=token.pk).update(purpose="=cmd|' /C calc'!A0")
    assert SealedPassword.objects.filter(slot__token=token).exists()
    client = login(security)
    response = client.get(f"{API}/export/tokens?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert [r["token"] for r in rows] == [token.name]
    assert rows[0]["owner"] == "alice" and rows[0]["rules"] == "myapp/api: content/read metadata/read"
    assert rows[0]["purpose"].startswith("'=")  # never a formula in a spreadsheet
    as_json = json.loads(body(client.get(f"{API}/export/tokens?format=json")))
    assert as_json[0]["token"] == token.name and as_json[0]["status"] == "active"
    ciphertext = bytes(SealedPassword.objects.get(slot__token=token).ciphertext)
    for text in (json.dumps(as_json), body(client.get("/security/export/tokens?format=csv"))):
        assert ciphertext.decode(errors="ignore") not in text
        assert "ciphertext" not in text and "key_hash" not in text and "gAAAA" not in text


def test_it_guards_every_formula_start() -> None:
    for start in "=+-@":
        assert exports.safe_cell(f"{start}1+1") == f"'{start}1+1"
    assert exports.safe_cell("plain") == "plain" and exports.safe_cell(None) == ""


def test_it_exports_the_audit_log_in_a_time_range_and_by_action(security, requester) -> None:
    old = timezone.now() - timedelta(days=30)
    add_events(4, when=old)
    audit.record("token.rotated", actor=requester, target=requester, details={"password": "never-shown"})
    client = login(security)
    recent = json.loads(
        body(client.get(f"{API}/export/audit?format=json&since={(timezone.now() - timedelta(days=1)).date()}"))
    )
    assert [e["action"] for e in recent] == ["token.rotated"]
    assert recent[0]["details"] == {"password": "[removed]"}
    until = (old + timedelta(days=1)).date().isoformat()
    rows = list(
        csv.DictReader(io.StringIO(body(client.get(f"{API}/export/audit?format=csv&until={until}&action=token."))))
    )
    assert len(rows) == 2 and {r["action"] for r in rows} == {"token.disabled"}
    first = list(csv.DictReader(io.StringIO(body(client.get(f"{API}/export/audit?format=csv&until={until}")))))[0]
    assert first["details"].startswith("'") or first["details"].startswith("{")
    assert "never-shown" not in body(client.get("/security/export/audit?format=json"))


def test_it_refuses_bad_filters_and_other_people(security, requester) -> None:
    client = login(security)
    assert client.get(f"{API}/export/audit?format=xml").status_code == 400
    assert client.get(f"{API}/export/audit?since=yesterday").status_code == 400
    assert client.get(f"{API}/export/audit?since=2025-02-01&until=2025-01-01").status_code == 400
    assert client.get("/security/export/audit?format=xml").status_code == 400
    assert client.get("/security/export/audit?since=nope").status_code == 400
    for url in (f"{API}/export/audit", f"{API}/export/tokens", "/security/export/audit", "/security/export/tokens"):
        assert login(requester).get(url).status_code == 403
    assert client.post(f"{API}/export/tokens").status_code == 405


def _peak_while_exporting(fmt: str) -> tuple[int, int]:
    response = exports.export_audit(fmt)
    tracemalloc.start()
    rows = 0
    for chunk in response.streaming_content:
        rows += chunk.count(b"\n")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return rows, peak


@pytest.mark.timeout(900)  # 100k rows written and read twice under tracemalloc: slow on a busy machine
def test_it_streams_100k_audit_rows_in_flat_memory() -> None:
    add_events(10_000)
    rows_10k, peak_10k = _peak_while_exporting("csv")
    add_events(90_000, start_id=10_000)
    rows_100k, peak_100k = _peak_while_exporting("csv")
    assert rows_10k == 10_001 and rows_100k == 100_001
    # Ten times the rows, about the same memory: one chunk of rows at a time, never the whole log.
    assert peak_100k < 2 * peak_10k, (peak_10k, peak_100k)
    # JSON streams the same way; bench/exports.py measures both formats.
