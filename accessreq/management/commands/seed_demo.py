"""Fill the database with the demo's people, groups, registry and approval rules.

Safe to run again: every row is looked up by its natural key, then created or brought back to the demo's values.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accessreq import acr
from accessreq.models import AllowedVault, ApprovalRule, Registry, Sku

PASSWORD = "demo-password"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "demo-rg"
REGISTRY = "contosodemo"
LOCATION = "westeurope"

GROUPS = ("myapp-owners", "shared-owners", "registry-admins", "security")
# username: (first name, last name, groups). Every owner group has two members besides the requester, so a write,
# which needs two approvals, can be filed for every pattern, `*` included.
# username: (first name, last name, groups)
PEOPLE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "alice": ("Alice", "Archer", ()),
    "bob": ("Bob", "Baker", ("myapp-owners", "shared-owners", "registry-admins")),
    "carol": ("Carol", "Cooper", ("myapp-owners", "shared-owners", "registry-admins")),
    "sam": ("Sam", "Sentry", ("security",)),
}
RULES = {"myapp/*": "myapp-owners", "shared/*": "shared-owners"}


class Command(BaseCommand):
    help = "Create the demo users, groups, registry and approval rules (idempotent). Needs DEBUG on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--key-vault",
            metavar="URL",
            help="allow requests for the demo registry to deliver passwords to this Key Vault",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="run even with DEBUG off (it sets well-known passwords: never on a real deployment)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The command gives a superuser a published password: a production database must never get one by mistake.
        if not settings.DEBUG and not options["force"]:
            raise CommandError("seed_demo sets well-known passwords; it runs only with DEBUG on (or --force).")

        # Ask the registry first: if the endpoint is down, nothing is half-written to the database.
        ref = SimpleNamespace(subscription_id=SUBSCRIPTION, resource_group=RESOURCE_GROUP, name=REGISTRY)
        try:
            login_server = acr.ensure_registry(ref, LOCATION, Sku.STANDARD)
        except acr.AcrError as exc:
            endpoint = settings.ACR_ARM_ENDPOINT
            raise CommandError(f"could not reach registry {REGISTRY} at {endpoint}: {exc}") from exc

        with transaction.atomic():
            groups = {name: Group.objects.get_or_create(name=name)[0] for name in GROUPS}
            for username, (first, last, member_of) in PEOPLE.items():
                user = self._user(username, first, last)
                user.groups.add(*(groups[name] for name in member_of))
            self._user("admin", "Ada", "Admin", superuser=True)

            registry, _ = Registry.objects.update_or_create(
                name=REGISTRY,
                defaults={
                    "subscription_id": SUBSCRIPTION,
                    "resource_group": RESOURCE_GROUP,
                    "login_server": login_server,
                    "sku": Sku.STANDARD,
                    "admin_group": groups["registry-admins"],
                    # The emulator answers for any workspace id: token usage is collected in the demo too.
                    "log_analytics_workspace_id": "00000000-0000-4000-8000-00000000de70",
                },
            )
            for pattern, group_name in RULES.items():
                ApprovalRule.objects.update_or_create(
                    registry=registry, pattern=pattern, defaults={"group": groups[group_name]}
                )
            if options.get("key_vault"):
                AllowedVault.objects.update_or_create(
                    registry=registry, url=options["key_vault"], defaults={"description": "Demo Key Vault"}
                )

        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready: registry {REGISTRY} ({login_server}), users {', '.join(PEOPLE)} and "
                f"admin, password {PASSWORD!r}."
            )
        )

    def _user(self, username: str, first: str, last: str, superuser: bool = False) -> User:
        user, _ = User.objects.get_or_create(username=username)
        user.first_name = first
        user.last_name = last
        user.email = f"{username}@example.com"
        user.is_active = True
        if superuser:
            user.is_staff = user.is_superuser = True
        # Reset on every run, not only on creation: the demo promises that every account signs in with the
        # published password, even after someone changed it while trying the portal.
        user.set_password(PASSWORD)
        user.save()
        return user
