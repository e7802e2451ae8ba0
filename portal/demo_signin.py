"""One-click sign-in for the demo: the sign-in page lists the demo's people, each a button that signs in through the
ordinary sign-in form with the demo's published password. Only in demo mode (settings.DEMO, which needs DEBUG)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model

# What each demo person does in the guide, in the order they appear in it.
ROLES = {
    "alice": "asks for access and reveals the password",
    "bob": "approves (owns myapp/* and shared/*)",
    "carol": "approves too: a push needs two approvals",
    "sam": "security: every token, the audit log",
    "admin": "superuser",
}


def demo_accounts() -> list[dict[str, str]]:
    if not settings.DEMO:
        return []
    from accessreq.management.commands.seed_demo import PASSWORD

    active = set(
        get_user_model().objects.filter(username__in=ROLES, is_active=True).values_list("username", flat=True)
    )
    return [
        {"username": name, "role": role, "password": PASSWORD} for name, role in ROLES.items() if name in active
    ]
