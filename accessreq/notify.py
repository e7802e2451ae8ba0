"""E-mails about requests. They carry links to the portal, never a password."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.urls import reverse

from accessreq.models import AccessRequest, FailedLoginBurst, Token

log = logging.getLogger(__name__)


def _link(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def _send(subject: str, body: str, recipients: list[str]) -> None:
    recipients = sorted({r for r in recipients if r})
    if not recipients:
        return
    try:
        send_mail(f"[{settings.SITE_NAME}] {subject}", body, settings.DEFAULT_FROM_EMAIL, recipients)
    except Exception:  # noqa: BLE001 - the change is committed already; a lost e-mail must not undo it
        log.exception("could not send %r to %s", subject, recipients)


def _describe(req: AccessRequest) -> str:
    rules = "\n".join(f"  - {r['repository']}: {', '.join(r['actions'])}" for r in req.rules)
    return (
        f"Registry: {req.registry}\nToken: {req.token_name}\nRequested by: {req.requester.get_username()}\n"
        f"Owner: {req.owner.get_username()} ({req.team})\nPurpose: {req.purpose}\nAccess:\n{rules}\n"
    )


def waiting_for_approval(req: AccessRequest, approvers: list[User]) -> None:
    _send(
        f"Request #{req.pk} waits for your approval",
        f"{_describe(req)}\nReview it: {_link(reverse('approval_queue'))}\n",
        [u.email for u in approvers],
    )


def approved(req: AccessRequest) -> None:
    _send(
        f"Request #{req.pk} is approved",
        f"Your request was approved; the token is being created.\n\n{_describe(req)}\n"
        f"Follow it: {_link(req.get_absolute_url())}\n",
        [req.requester.email],
    )


def rejected(req: AccessRequest, by: User, comment: str) -> None:
    _send(
        f"Request #{req.pk} was rejected",
        f"{by.get_username()} rejected your request:\n\n  {comment}\n\n{_describe(req)}\n"
        f"Details: {_link(req.get_absolute_url())}\n",
        [req.requester.email],
    )


def ready(req: AccessRequest) -> None:
    _send(
        f"Token {req.token_name} is ready",
        f"Your token exists in {req.registry}. Its password can be revealed once, by you, on this page:\n"
        f"{_link(req.get_absolute_url())}\n\nIt is revoked if not revealed within "
        f"{settings.REVEAL_TTL_HOURS} hours.\n",
        [req.requester.email],
    )


def failed(req: AccessRequest, reason: str) -> None:
    admins = get_user_model().objects.filter(is_superuser=True, is_active=True).values_list("email", flat=True)
    _send(
        f"Request #{req.pk} could not be provisioned",
        f"{_describe(req)}\nWhat went wrong: {reason}\n\nAn admin can retry it here: {_link(req.get_absolute_url())}\n",
        [req.requester.email, *admins],
    )


def token_changed(token: Token, what: str) -> None:
    _send(
        f"Token {token.name} {what}",
        f"Token {token.name} in {token.registry} {what}.\n\nDetails: {_link(token.get_absolute_url())}\n",
        [token.owner.email],
    )


def transferred(token: Token, previous: User, new_owner: User, by: User) -> None:
    _send(
        f"Token {token.name} has a new owner",
        f"{by.get_username()} handed token {token.name} in {token.registry} from {previous.get_username()} "
        f"to {new_owner.get_username()}.\n\nDetails: {_link(token.get_absolute_url())}\n",
        [previous.email, new_owner.email],
    )


def orphaned(token: Token, team_email: str, security: list[str]) -> None:
    _send(
        f"Token {token.name} has lost its owner",
        f"The account of {token.owner.get_username()}, owner of token {token.name} in {token.registry} "
        f"(team {token.team}), was deactivated. Hand the token to someone else or retire it:\n"
        f"{_link(token.get_absolute_url())}\n",
        [team_email, *security],
    )


def reminder_digest(address: str, items: list) -> None:
    lines = []
    for item in sorted(items, key=lambda i: i.due):
        if item.subject == "unused":
            since = f"since {item.due:%Y-%m-%d}" if item.token.last_used_at else "ever"
            lines.append(
                f"- {item.token.name} in {item.token.registry} has not been used {since}: retire it? "
                f"{_link(item.token.get_absolute_url())}"
            )
            continue
        if item.subject == "least-privilege":
            lines.append(
                f"- {item.token.name} in {item.token.registry} holds more than it uses: {item.detail} "
                f"Ask for the narrower access from its page: {_link(item.token.get_absolute_url())}"
            )
            continue
        what = "is retired" if item.subject == "retirement" else f"password {item.subject} expires"
        lines.append(
            f"- {item.token.name} in {item.token.registry} {what} on {item.due:%Y-%m-%d} "
            f"(in {item.days_before} day{'s' if item.days_before != 1 else ''} or less): "
            f"{_link(item.token.get_absolute_url())}"
        )
    _send(
        "Tokens that need you soon",
        "These tokens need attention. Rotate a password, ask for a later retirement, or mark a token "
        "'let it expire' to stop these reminders.\n\n" + "\n".join(lines) + "\n",
        [address],
    )


def delivery_failed(token: Token, destination: str, reason: str, security: list[str]) -> None:
    """A delivered token's new password did not reach its vault; the old one is still there and still works."""
    _send(
        f"Token {token.name}: new password not delivered",
        f"The portal could not put a new password for token {token.name} in {token.registry} into "
        f"{destination}.\nWhat went wrong: {reason}\n\nThe previous password stays in the vault and keeps working "
        f"until it expires. An admin can retry: {_link(token.get_absolute_url())}\n",
        [token.owner.email, *security],
    )


def failed_login_burst(token: Token, burst: FailedLoginBurst, security: list[str]) -> None:
    _send(
        f"Failed logins for token {token.name}",
        f"The registry {token.registry} refused {burst.count} logins as token {token.name} "
        f"between {burst.started_at:%Y-%m-%d %H:%M} and {burst.last_at:%H:%M} UTC.\n"
        "Something holds an old or wrong password (or someone is guessing). Find the client, give it the current "
        f"password, or rotate:\n{_link(token.get_absolute_url())}\n",
        [token.owner.email, *security],
    )
