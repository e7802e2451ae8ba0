"""The approval queue's rows: read in two plain queries and written out in Python.

The queue is the page approvers keep open, so it is built for speed. A page's request ids come from one query (the
paginator counts that list instead of asking the database again), the rows' fields from a second, as plain values
rather than model instances, and each row is one `format_html` instead of a template fragment with a form, a CSRF
tag and two `{% url %}` tags per row, which cost most of the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from accessreq import scopes
from accessreq.models import AccessRequest, ClientKind, KeyVaultDelivery, RequestStatus

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


def rows_for(ids: Iterable[int]) -> list[QueueRow]:
    """The rows for these request ids, in the order given."""
    ids = list(ids)
    found = {v["pk"]: v for v in AccessRequest.objects.filter(pk__in=ids).values(*FIELDS)}
    kinds = dict(ClientKind.choices)
    now = timezone.now()
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
                waiting=timesince(v["created_at"], now),
            )
        )
    return rows


def ids_of(qs: QuerySet[AccessRequest]) -> list[int]:
    return list(qs.values_list("pk", flat=True))


def pk_url(name: str) -> Callable[[int], str]:
    """One reverse() per page, then string formatting per row: the route's shape is read from a sample address."""
    sample = 8_675_309_123
    head, tail = reverse(name, args=[sample]).split(str(sample))
    return lambda pk: f"{head}{pk}{tail}"


def render_rows(
    rows: Iterable[QueueRow], csrf: str, *, error: str = "", decided: bool = False, comment: str = ""
) -> SafeString:
    """The rows' <tr>s. `error`, `decided` and `comment` are for the one row answered after a decision."""
    detail, decide = pk_url("request_detail"), pk_url("request_decide")
    statuses = dict(RequestStatus.choices)
    out = []
    for row in rows:
        summary = format_html_join("", "<li>{}</li>", ((line,) for line in scopes.describe(row.rules)))
        exact = format_html_join(
            "", "<li><code>{}</code>: {}</li>", ((r["repository"], ", ".join(r["actions"])) for r in row.rules)
        )
        delivery = (
            format_html(DELIVERY, row.delivery.destination, row.delivery.policy)
            if row.delivery
            else ""
        )
        risks = format_html_join(
            "",
            '<p class="risk-line"><span class="badge badge-risk">{}</span> <span class="help">{}</span></p>',
            scopes.explain_risks(row.risks),
        ) or mark_safe('<span class="muted">read only</span>')
        if decided:
            decision = format_html(
                '<p role="status"><span class="badge badge-{}">{}</span> Your decision is recorded.</p>',
                row.status, statuses.get(row.status, row.status),
            )
        else:
            decision = format_html(
                FORM, url=decide(row.pk), csrf=csrf, pk=row.pk, comment=comment,
            )
        if error:
            decision = format_html('<p class="field-error" role="alert">{}</p>{}', error, decision)
        out.append(
            format_html(
                ROW, pk=row.pk, url=detail(row.pk), token_name=row.token_name, who=row.who, purpose=row.purpose,
                registry=row.registry, summary=summary, exact=exact, delivery=delivery,
                created=timezone.localtime(row.created_at).isoformat(), waiting=row.waiting, risks=risks,
                decision=decision,
            )
        )
    return mark_safe("".join(out))  # noqa: S308  (each part went through format_html)


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
