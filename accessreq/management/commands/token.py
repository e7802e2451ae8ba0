from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accessreq import acr, tokens
from accessreq.errors import DomainError, Invalid
from accessreq.models import Token


class Command(BaseCommand):
    help = "Act on a token as a named user, through the same checks and audit as the pages."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["rotate", "confirm-switch", "disable", "enable", "retire", "transfer"])
        parser.add_argument("token", help="registry/name, e.g. contosodemo/ci-payments-1")
        parser.add_argument("--as", dest="username", required=True, help="the user acting, e.g. an admin's name")
        parser.add_argument("--reason", default="", help="why (disable, retire)")
        parser.add_argument("--to", default="", help="the new owner's username (transfer)")
        parser.add_argument(
            "--days", type=int, default=None, help="the new password's lifetime in days, within the policy (rotate)"
        )

    def handle(
        self, *args: object, action: str, token: str, username: str, reason: str, to: str, days: int | None, **o: object
    ) -> None:
        if days is not None and action != "rotate":
            raise CommandError(f"--days sets a rotated password's lifetime: it applies to rotate only, not {action}.")
        registry_name, _, name = token.partition("/")
        found = (
            Token.objects.select_related("registry", "owner").filter(registry__name=registry_name, name=name).first()
        )
        if found is None:
            raise CommandError(f"No token {token!r}.")
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {username!r}.")
        try:
            match action:
                case "rotate":
                    slot = tokens.rotate(found, user, None, password_days=days)
                    self.stdout.write(f"{slot.name} is being generated; reveal it on {found.get_absolute_url()}")
                case "confirm-switch":
                    self.stdout.write(f"deleted: {', '.join(tokens.confirm_switch(found, user, None))}")
                case "disable":
                    tokens.disable(found, user, reason, None)
                case "enable":
                    tokens.enable(found, user, None)
                case "retire":
                    tokens.retire(found, user, reason or "retired from the command line", None)
                case "transfer":
                    tokens.transfer(found, user, to, None)
        except Invalid as exc:
            # The domain names the lifetime as the page's form does; here it is --days.
            raise CommandError(f"--days: {exc}" if "password_days" in exc.errors else str(exc)) from exc
        except (DomainError, acr.AcrError, PermissionDenied) as exc:
            raise CommandError(str(exc)) from exc
        found.refresh_from_db()
        self.stdout.write(f"{found}: {found.get_status_display()}")
