"""Each registry's use of its SKU's token and scope-map limits, its 90-day trend and the projected day it runs out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from accessreq import audit, quota
from accessreq.models import Token, TokenStatus, UnmanagedToken
from tests.conftest import login, request_data

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _tokens(registry, owner, created_at: list[datetime], prefix: str = "t", **extra) -> list[Token]:
    return Token.objects.bulk_create(
        Token(
            registry=registry,
            name=f"{prefix}-{i:05d}",
            scope_map_name=f"{prefix}-{i:05d}-map",
            owner=owner,
            team="Payments",
            requester=owner,
            purpose="test",
            client_kind="ci",
            rules=[{"repository": "myapp/api", "actions": ["content/read"]}],
            retire_on=NOW.date() + timedelta(days=365),
            created_at=when,
            **extra,
        )
        for i, when in enumerate(created_at)
    )


def _only(registry) -> quota.RegistryQuota:
    [found] = quota.forecasts([registry.pk])
    return found


def test_it_projects_a_steady_growth_to_the_day_the_limit_is_reached(registry, requester) -> None:
    days = [NOW - timedelta(days=d) for d in range(quota.HISTORY_DAYS, -1, -1)]
    _tokens(registry, requester, [day for day in days for _ in range(2)])
    with time_machine.travel(NOW, tick=False):
        found = _only(registry)
    tokens = found.tokens
    assert tokens.limit == 500 and tokens.used == 182
    assert tokens.history[0] == 2 and tokens.history[-1] == 182
    assert tokens.slope == pytest.approx(2.0)
    # (500 - 182) / 2 = 159 days from today.
    assert tokens.reaches_on == NOW.date() + timedelta(days=159)
    assert found.scope_maps.used == 182 + 3 and found.scope_maps.limit == 500
    assert "reached about" in tokens.outlook


def test_it_counts_a_retired_token_until_the_day_it_left(registry, requester) -> None:
    [old] = _tokens(registry, requester, [NOW - timedelta(days=200)], status=TokenStatus.RETIRED)
    with time_machine.travel(NOW - timedelta(days=10), tick=False):
        audit.record("token.retired", actor=None, target=old)
    with time_machine.travel(NOW, tick=False):
        found = _only(registry)
    history = found.tokens.history
    assert history[: quota.HISTORY_DAYS - 10] == [1] * (quota.HISTORY_DAYS - 10)
    assert history[-11:] == [0] * 11
    assert found.tokens.used == 0 and found.tokens.slope < 0
    assert found.tokens.outlook == "falling" and found.tokens.reaches_on is None


def test_it_calls_an_unchanging_registry_flat_and_counts_unmanaged_tokens_from_when_they_were_seen(
    registry, requester
) -> None:
    with time_machine.travel(NOW, tick=False):
        found = _only(registry)
        assert found.tokens.outlook == "flat" and found.tokens.used == 0
        assert found.scope_maps.used == 3  # the system scope maps
        UnmanagedToken.objects.create(
            registry=registry, name="handmade", scope_map_name="handmade-map", status="enabled",
            first_seen_at=timezone.now() - timedelta(days=5),
        )
        found = _only(registry)
    assert found.tokens.history[-6:] == [1] * 6 and found.tokens.history[-7] == 0
    assert found.scope_maps.used == 4


def test_it_says_not_within_the_horizon_for_a_slow_growth(registry, requester) -> None:
    registry.sku = "Premium"
    registry.save()
    _tokens(registry, requester, [NOW - timedelta(days=30)])
    with time_machine.travel(NOW, tick=False):
        found = _only(registry)
    assert found.tokens.limit == 50_000 and found.tokens.reaches_on is None
    assert found.tokens.outlook == "not within 5 years"


def test_it_warns_the_request_form_near_the_limit(registry, requester, settings) -> None:
    settings.SECURITY_SUMMARY_SECONDS = 0
    client = login(requester)
    page = client.post("/requests/preview", request_data(registry), HTTP_HX_REQUEST="true").content.decode()
    assert "Registry limits" not in page
    registry.sku = "Basic"
    registry.save()
    _tokens(registry, requester, [timezone.now() - timedelta(days=400)] * 90)
    page = client.post("/requests/preview", request_data(registry), HTTP_HX_REQUEST="true").content.decode()
    assert "Registry limits" in page and "contosotest uses 90 of its 100 tokens (90%)" in page


def test_it_warns_when_the_limit_is_a_month_away(registry, requester) -> None:
    registry.sku = "Basic"
    registry.save()
    days = [NOW - timedelta(days=d) for d in range(quota.HISTORY_DAYS, -1, -1)]
    # 0.5 a day: 45 now, 55 left, 110 days away: no warning yet; 2 a day from 0 to 80: 10 days away.
    _tokens(registry, requester, days[::2])
    with time_machine.travel(NOW, tick=False):
        assert _only(registry).warnings(NOW.date()) == []
    Token.objects.all().delete()
    _tokens(registry, requester, [d for d in days[50:] for _ in range(2)])
    with time_machine.travel(NOW, tick=False):
        found = _only(registry)
    assert found.tokens.used == 82
    # The scope maps, three more with the system ones, run out a few days sooner.
    assert found.warnings(NOW.date()) == [
        f"contosotest is projected to reach its limit of 100 tokens by {found.tokens.reaches_on:%Y-%m-%d}.",
        f"contosotest is projected to reach its limit of 100 scope maps by {found.scope_maps.reaches_on:%Y-%m-%d}.",
    ]


def test_it_shows_the_forecast_to_security(registry, requester, security) -> None:
    _tokens(registry, requester, [timezone.now() - timedelta(days=3)] * 4)
    page = login(security).get("/security/").content.decode()
    assert "Limits and forecast" in page and "4 (0%)" in page and "scope maps" in page
