"""The token lists read the token table through indexes, never all of it, once it holds more than a few rows.

PostgreSQL only: SQLite's planner is another matter, and the pages' speed at scale is measured on PostgreSQL (see
bench/pages.py). Seeds 12,000 tokens, ANALYZEs, and reads the plans of the queries the pages and the API run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils import timezone

from accessreq import access
from accessreq.api import _tokens
from accessreq.models import LIVE_TOKEN_STATUSES, PasswordSlot, Registry, SlotStatus, Token
from accessreq.views.tokens import TOKEN_SORTS, annotated, by_attention

pytestmark = pytest.mark.django_db

ROWS = 12_000


@pytest.fixture
def many_tokens(groups: dict[str, Group], requester: User) -> Registry:
    if connection.vendor != "postgresql":
        reason = f"query plans are checked on PostgreSQL only; this run uses {connection.vendor}"
        print(reason)
        pytest.skip(reason)
    registry = Registry.objects.create(
        subscription_id="0", resource_group="rg", name="planregistry", login_server="planregistry.azurecr.io",
        admin_group=groups["admins"],
    )
    owners = User.objects.bulk_create(User(username=f"planowner{i}") for i in range(200))
    now = timezone.now()
    made = Token.objects.bulk_create(
        Token(
            registry=registry, name=f"plan{i}", scope_map_name=f"plan{i}-scope", owner=owners[i % 200],
            requester=owners[i % 200], team=f"team-{i // 500}", purpose="Plans.", client_kind="ci",
            rules=[{"repository": f"team/svc{i}", "actions": ["content/read"]}],
            retire_on=(now + timedelta(days=90)).date(),
            status="retired" if i % 10 == 0 else "active", orphaned_at=now if i % 97 == 0 else None,
            last_used_at=now - timedelta(minutes=i) if i % 3 else None,
        )
        for i in range(ROWS)
    )
    PasswordSlot.objects.bulk_create(
        PasswordSlot(token=t, name="password1", status=SlotStatus.REVEALED, expires_at=now + timedelta(days=i % 90))
        for i, t in enumerate(made)
    )
    Token.objects.filter(pk=made[0].pk).update(owner=requester)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE accessreq_token; ANALYZE accessreq_passwordslot; ANALYZE accessreq_accessrequest;")
    return registry


def _assert_no_token_seq_scan(qs) -> None:  # noqa: ANN001
    plan = qs.explain()
    assert "Seq Scan on accessreq_token" not in plan, plan


def test_the_token_lists_use_indexes(many_tokens, requester, security) -> None:
    for user in (requester, security):
        live = access.tokens_for(user).filter(status__in=LIVE_TOKEN_STATUSES)
        _assert_no_token_seq_scan(by_attention(annotated(live))[:25])
    # The security dashboard's list of what needs a person now.
    attention = annotated(Token.objects.filter(status__in=LIVE_TOKEN_STATUSES)).filter(attention__lt=2)
    _assert_no_token_seq_scan(by_attention(attention)[:10])
    # Sorted by last use, both ways (security sees every token: the last-use index, forwards and backwards).
    for sort in ("used", "unused"):
        for user in (requester, security):
            live = access.tokens_for(user).filter(status__in=LIVE_TOKEN_STATUSES)
            _assert_no_token_seq_scan(annotated(live).order_by(*TOKEN_SORTS[sort][1])[:25])
    # The API's token list, as a requester and as security.
    for user in (requester, security):
        _assert_no_token_seq_scan(_tokens(access.tokens_for(user)).order_by("registry_id", "name")[:25])


def test_it_counts_a_persons_tokens_from_the_ones_they_can_see(many_tokens, requester) -> None:
    # The paginator's count: a lookup by key of each token a person may see, not a join against every live token.
    visible = access.tokens_for(requester).filter(status__in=LIVE_TOKEN_STATUSES).order_by()[:10_001]
    sql, params = visible.values("pk").query.get_compiler(visible.db).as_sql()
    with connection.cursor() as cursor:
        cursor.execute("SHOW random_page_cost")
        assert cursor.fetchone()[0] == "1.1"
        cursor.execute(f"EXPLAIN SELECT COUNT(*) FROM ({sql}) counted", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Hash Join" not in plan and "Seq Scan on accessreq_token" not in plan, plan


def test_the_summary_columns_follow_the_slots(groups, requester) -> None:
    """On either database: the triggers keep a token's soonest expiry, "every password expired" and its rank."""
    registry = Registry.objects.create(
        subscription_id="0", resource_group="rg", name="summaryreg", login_server="x", admin_group=groups["admins"]
    )
    token = Token.objects.create(
        registry=registry, name="t", scope_map_name="t-scope", owner=requester, requester=requester, team="t",
        purpose="p", client_kind="ci", rules=[], retire_on=timezone.localdate() + timedelta(days=9),
    )
    soon = timezone.now() + timedelta(days=3)
    first = PasswordSlot.objects.create(token=token, name="password1", status=SlotStatus.REVEALED, expires_at=soon)
    PasswordSlot.objects.create(
        token=token, name="password2", status=SlotStatus.AWAITING_REVEAL, expires_at=soon + timedelta(days=1)
    )
    token.refresh_from_db()
    assert (token.next_expiry, token.passwords_expired, token.attention) == (soon, False, 3)
    PasswordSlot.objects.filter(token=token).update(status=SlotStatus.EXPIRED)
    token.refresh_from_db()
    assert (token.next_expiry, token.passwords_expired, token.attention) == (None, True, 2)
    Token.objects.filter(pk=token.pk).update(orphaned_at=timezone.now())
    first.delete()
    token.refresh_from_db()
    assert (token.passwords_expired, token.attention) == (True, 0)
