"""The approval queue's rows: read in two plain queries and written out in Python.

The queue is the page approvers keep open, so it is built for speed. A page's request ids come from one query, its
SQL kept for the next view of the same queue (the paginator counts that list instead of asking the database again),
the rows' fields from a second, as plain values rather than model instances, and each row is one string format of
values escaped once, instead of a template fragment with a form, a CSRF tag and two `{% url %}` tags per row, which
cost most of the page.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from django.contrib.auth.models import User
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeData, SafeString, mark_safe
from django.utils.timesince import TIME_STRINGS, timesince

from accessreq import access, scopes
from accessreq.models import AccessRequest, ClientKind, KeyVaultDelivery, RequestStatus
from accessreq.views import listing

FIELDS = (
    "pk", "token_name", "team", "purpose", "client_kind", "rules", "created_at", "status",
    "requester__username", "owner__username", "registry__name",
    "key_vault_delivery__vault_url", "key_vault_delivery__secret_name",
    "key_vault_delivery__rotate_every_days", "key_vault_delivery__rotate_before_expiry_days",
)


@dataclass(frozen=True)
class QueueRow:
    """What the queue shows of one request, worked out once."""

    pk: int
    status: str
    token_name: str
    who: str
    purpose: str
    registry: str
    rules: list[dict]
    risks: list[str]
    delivery: KeyVaultDelivery | None
    created_at: Any
    waiting: str


class _Unit:
    """One of `timesince`'s unit strings ("%(num)d minutes"), translated once per number per page: the lazy
    `ngettext` it stands for looks up the active translation on every `%`, 25 rows times two units a page."""

    def __init__(self, lazy: Any) -> None:
        self.lazy = lazy
        self.done: dict[int, str] = {}

    def __mod__(self, values: dict[str, int]) -> str:
        num = values["num"]
        if (found := self.done.get(num)) is None:
            found = self.done[num] = self.lazy % values
        return found


def _time_strings() -> dict[str, Any]:
    return {unit: _Unit(lazy) for unit, lazy in TIME_STRINGS.items()}


@cache
def _row_values() -> QuerySet[AccessRequest, dict[str, Any]]:
    """The rows' columns and joins, resolved once per process: resolving fifteen field paths cost as much as running
    the query. Never evaluated itself; each page narrows a copy."""
    return AccessRequest.objects.values(*FIELDS)


def rows_for(ids: Iterable[int]) -> list[QueueRow]:
    """The rows for these request ids, in the order given."""
    ids = list(ids)
    found = {v["pk"]: v for v in _row_values().filter(pk__in=ids)}
    kinds = dict(ClientKind.choices)
    now = timezone.now()
    units = _time_strings()
    rows = []
    for pk in ids:
        if (v := found.get(pk)) is None:
            continue  # decided and gone between the two queries
        delivery = None
        if v["key_vault_delivery__vault_url"] is not None:
            delivery = KeyVaultDelivery(
                vault_url=v["key_vault_delivery__vault_url"],
                secret_name=v["key_vault_delivery__secret_name"],
                rotate_every_days=v["key_vault_delivery__rotate_every_days"],
                rotate_before_expiry_days=v["key_vault_delivery__rotate_before_expiry_days"],
            )
        kind = kinds.get(v["client_kind"], v["client_kind"])
        rows.append(
            QueueRow(
                pk=pk,
                status=v["status"],
                token_name=v["token_name"],
                who=f"{v['requester__username']} for {v['owner__username']} ({v['team']}) · {kind}",
                purpose=v["purpose"],
                registry=v["registry__name"],
                rules=v["rules"],
                risks=scopes.risks(v["rules"], v["client_kind"]),
                delivery=delivery,
                created_at=v["created_at"],
                waiting=timesince(v["created_at"], now, time_strings=units),
            )
        )
    return rows


# Compiled SQL of the queue's id query by what it is built from. Building and compiling that query (a grouped
# subquery, an exclusion across a relation, the filters) cost more than the rest of the rows together; running it
# is a fraction of that. The SQL is a function of the key alone, so a hit is as fresh as a rebuild: only the rows
# it reads change, and they are read every time. Bounded, as the key holds what people type in the search boxes.
_SQL_KEPT = 512
_sql: OrderedDict[Hashable, tuple[str, str, tuple[Any, ...]] | None] = OrderedDict()
_sql_lock = threading.Lock()
_MISSING = object()


def queue_ids(user: User, found: listing.Listing, build: Callable[[], QuerySet[AccessRequest]]) -> list[int]:
    """The ids of the queue `build` makes for this user and these filters and sort, in its order.

    `build` must read nothing but the user's pk, their group ids and `found`: those are the key its SQL is kept
    under. One query, the one `build()` makes, and none when it can match nothing."""
    key = (user.pk, access.roles_for(user).group_ids, tuple(found.values.items()), found.sort)
    with _sql_lock:
        compiled = _sql.get(key, _MISSING)
        if compiled is not _MISSING:
            _sql.move_to_end(key)
    if compiled is _MISSING:
        qs = build().values_list("pk", flat=True)
        try:
            sql, params = qs.query.get_compiler(qs.db).as_sql()
            compiled = (qs.db, sql, tuple(params))
        except EmptyResultSet:
            compiled = None
        with _sql_lock:
            _sql[key] = compiled
            while len(_sql) > _SQL_KEPT:
                _sql.popitem(last=False)
    if compiled is None:
        return []
    alias, sql, params = cast(tuple[str, str, tuple[Any, ...]], compiled)
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return [pk for (pk,) in cursor.fetchall()]


def pk_url(name: str) -> Callable[[int], str]:
    """One reverse() per page, then string formatting per row: the route's shape is read from a sample address."""
    sample = 8_675_309_123
    head, tail = reverse(name, args=[sample]).split(str(sample))
    return lambda pk: f"{head}{pk}{tail}"


def _html(value: object) -> str:
    """`conditional_escape` without its lazy-string wrapper and `SafeString` per call: a row has a dozen values and
    a page 25 rows. The same text: Django's `escape` is `html.escape` of `str(value)`."""
    if isinstance(value, SafeData):
        return str(value)
    return html.escape(str(value))


def render_rows(
    rows: Iterable[QueueRow], csrf: str, *, error: str = "", decided: bool = False, comment: str = ""
) -> SafeString:
    """The rows' <tr>s. `error`, `decided` and `comment` are for the one row answered after a decision.

    Each value from the database or the request is escaped here exactly once, then the row is put together with
    plain `str.format` and marked safe once for the page: `format_html` per piece escaped its already-safe parts
    again and built a `SafeString` for each, which cost more than the rest of the row."""
    detail, decide = pk_url("request_detail"), pk_url("request_decide")
    statuses = dict(RequestStatus.choices)
    # Read once per page, not once per row as `timezone.localtime` does.
    zone = timezone.get_current_timezone()
    csrf, error, comment = _html(csrf), _html(error), _html(comment)
    out = []
    for row in rows:
        summary = "".join(f"<li>{_html(line)}</li>" for line in scopes.describe(row.rules))
        exact = "".join(
            f"<li><code>{_html(r['repository'])}</code>: {_html(', '.join(r['actions']))}</li>" for r in row.rules
        )
        delivery = (
            DELIVERY.format(_html(row.delivery.destination), _html(row.delivery.policy)) if row.delivery else ""
        )
        risks = "".join(
            f'<p class="risk-line"><span class="badge badge-risk">{_html(risk)}</span> '
            f'<span class="help">{_html(meaning)}</span></p>'
            for risk, meaning in scopes.explain_risks(row.risks)
        ) or '<span class="muted">read only</span>'
        if decided:
            decision = DECIDED.format(_html(row.status), _html(statuses.get(row.status, row.status)))
        else:
            decision = FORM.format(url=_html(decide(row.pk)), csrf=csrf, pk=row.pk, comment=comment)
        if error:
            decision = f'<p class="field-error" role="alert">{error}</p>{decision}'
        # An ISO date-time is digits and -:+T. only, so it goes in unescaped.
        out.append(
            ROW.format(
                pk=row.pk, url=_html(detail(row.pk)), token_name=_html(row.token_name), who=_html(row.who),
                purpose=_html(row.purpose), registry=_html(row.registry), summary=summary, exact=exact,
                delivery=delivery, created=row.created_at.astimezone(zone).isoformat(), waiting=_html(row.waiting),
                risks=risks, decision=decision,
            )
        )
    return mark_safe("".join(out))  # noqa: S308  (every value above went through _html once)


ROW = """<tr id="queue-row-{pk}">
  <td data-label="Request"><a href="{url}">#{pk} <code>{token_name}</code></a><br>
    <span class="muted">{who}</span><br>{purpose}</td>
  <td data-label="Access">{registry}<div class="permissions">
    <ul class="plain-summary">{summary}</ul>
    <details class="raw-actions"><summary>Exact actions</summary><ul class="rules">{exact}</ul></details>
  </div>{delivery}</td>
  <td data-label="Waiting"><time datetime="{created}">{waiting}</time></td>
  <td data-label="Risk">{risks}</td>
  <td data-label="Decision" class="decision">{decision}</td>
</tr>
"""

DECIDED = '<p role="status"><span class="badge badge-{}">{}</span> Your decision is recorded.</p>'

DELIVERY = '<p class="delivery">Password goes to Key Vault secret <code>{}</code>, nobody sees it; rotated {}.</p>'

# A plain form, so the queue works without JavaScript; the CSRF value is read once per page.
FORM = """<form method="post" action="{url}" hx-post="{url}" hx-target="closest tr" hx-swap="outerHTML">
      <input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">
      <input type="hidden" name="next" value="queue">
      <label for="comment-{pk}" class="visually-hidden">Comment on request #{pk}</label>
      <textarea name="comment" id="comment-{pk}" rows="2" placeholder="Comment (needed to reject)">{comment}</textarea>
      <div class="actions-row">
        <button type="submit" name="decision" value="approve" class="button primary small">Approve<span
          class="visually-hidden"> request #{pk}</span></button>
        <button type="submit" name="decision" value="reject" class="button danger small">Reject<span
          class="visually-hidden"> request #{pk}</span></button>
      </div>
    </form>"""
