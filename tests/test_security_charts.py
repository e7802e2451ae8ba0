"""The security page's charts: drawn on the server as SVG, each with its numbers as a table, at a fixed query cost."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accessreq import audit, charts
from accessreq.models import PasswordSlot, SlotStatus, Token, TokenStatus
from accessreq.views.security import REFRESHING_KEY
from tests.conftest import login, wait_until
from tests.test_quota import _tokens

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_it_walks_token_statuses_back_through_creation_and_retirement(registry, requester) -> None:
    _tokens(registry, requester, [NOW - timedelta(days=40)] * 3, prefix="old")
    [leaving] = _tokens(registry, requester, [NOW - timedelta(days=60)], prefix="gone", status=TokenStatus.RETIRED)
    with time_machine.travel(NOW - timedelta(days=20), tick=False):
        audit.record("token.retired", actor=None, target=leaving)
    with time_machine.travel(NOW, tick=False):
        chart = charts.tokens_over_time()
    live, retired, gone = (s.values for s in chart.series)
    # Weekly from 90 days ago: nothing, then one (60 days ago), then four (40), then three and one retired (20).
    assert live[0] == 0 and live[-1] == 3 and max(live) == 4
    assert retired[0] == 0 and retired[-1] == 1 and gone == [0] * len(gone)
    assert chart.labels[-1] == "Jun 1" and len(chart.labels) == 14


def test_it_counts_passwords_expiring_per_week(registry, requester) -> None:
    made = _tokens(registry, requester, [NOW] * 4)
    with time_machine.travel(NOW, tick=False):
        for token, days in zip(made, (1, 2, 9, 100), strict=True):
            PasswordSlot.objects.create(
                token=token, name="password1", status=SlotStatus.REVEALED, expires_at=NOW + timedelta(days=days)
            )
        PasswordSlot.objects.create(
            token=made[0], name="password2", status=SlotStatus.REVOKED, expires_at=NOW + timedelta(days=3)
        )
        chart = charts.passwords_expiring()
    assert chart.series[0].values == [2, 1] + [0] * 10
    assert chart.labels[0] == "From Jun 1" and chart.labels[1] == "From Jun 8"


def test_it_draws_accessible_svgs_without_inline_styles(registry, requester, security, settings) -> None:
    settings.SECURITY_SUMMARY_SECONDS = 0
    _tokens(registry, requester, [timezone.now() - timedelta(days=3)] * 2)
    risky = _tokens(registry, requester, [timezone.now()], prefix="risky")[0]
    Token.objects.filter(pk=risky.pk).update(risky=True, team="Partners")
    page = login(security).get("/security/").content.decode()
    svgs = re.findall(r"<svg class=\"chart-svg\"[^>]*>", page)
    assert len(svgs) == 4
    for svg in svgs:
        assert 'role="img"' in svg and 'width="100%"' in svg and "viewBox=" in svg
    for slug in ("status", "expiring", "teams", "quota"):
        assert f'<title id="chart-{slug}-title">' in page and f'<desc id="chart-{slug}-desc">' in page
    assert page.count("<summary>The numbers") == 4
    assert "style=" not in page and "<style" not in page
    # The team table: Payments 2 live, 0 risky; Partners 1 and 1.
    assert re.search(r"<th scope=\"row\">Payments</th><td>2</td><td>0</td>", page)
    assert re.search(r"<th scope=\"row\">Partners</th><td>1</td><td>1</td>", page)
    assert re.search(r"<th scope=\"row\">contosotest</th><td>1%</td>", page)


def _queries(client) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/security/").status_code == 200
    return len(captured)


def test_it_makes_the_same_queries_for_10_and_500_tokens(registry, requester, security, settings) -> None:
    settings.SECURITY_SUMMARY_SECONDS = 0
    client = login(security)
    days = [timezone.now() - timedelta(days=d % 90) for d in range(500)]
    made = _tokens(registry, requester, days[:10], prefix="few")
    few = _queries(client)
    made += _tokens(registry, requester, days[10:], prefix="many")
    PasswordSlot.objects.bulk_create(
        PasswordSlot(token=t, name="password1", status=SlotStatus.REVEALED, expires_at=timezone.now() + timedelta(
            days=i % 80)) for i, t in enumerate(made)
    )
    assert _queries(client) == few
    # And with the summary cached, the charts cost nothing more.
    settings.SECURITY_SUMMARY_SECONDS = 30
    first = _queries(client)
    assert _queries(client) < first


def _payments_live(client) -> int:
    page = client.get("/security/").content.decode()
    found = re.search(r"<th scope=\"row\">Payments</th><td>(\d+)</td>", page)
    assert found is not None
    return int(found.group(1))


@pytest.mark.django_db(transaction=True)  # the next figures are worked out on a thread with its own connection
def test_it_serves_the_last_summary_while_the_next_is_worked_out(registry, requester, security, settings) -> None:
    settings.SECURITY_SUMMARY_SECONDS = 30
    client = login(security)
    _tokens(registry, requester, [timezone.now()] * 2)
    assert _payments_live(client) == 2
    _tokens(registry, requester, [timezone.now()], prefix="later")
    assert _payments_live(client) == 2  # fresh for 30 seconds
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        assert cache.add(REFRESHING_KEY, 1, 60)
        stale = _queries(client)
        # Another request has the figures being worked out: this one starts nothing.
        assert _payments_live(client) == 2
        assert cache.get(REFRESHING_KEY) == 1
        cache.delete(REFRESHING_KEY)
        # The first to notice is not kept waiting either: it is served the last figures at the same cost, and the
        # next ones are worked out on a thread, which lets the next refresh happen when it is done.
        assert _queries(client) == stale
        wait_until(lambda: cache.get(REFRESHING_KEY) is None)
        assert _payments_live(client) == 3


def test_it_works_the_figures_out_at_once_when_none_are_kept(registry, requester, security, settings) -> None:
    settings.SECURITY_SUMMARY_SECONDS = 30
    _tokens(registry, requester, [timezone.now()] * 2)
    assert _payments_live(login(security)) == 2
    assert cache.get(REFRESHING_KEY) is None
