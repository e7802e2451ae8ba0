"""Make a personal API key for a user and print it, once. For bootstrapping pipelines and for admins."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accessreq import apikeys


class Command(BaseCommand):
    help = "Create an API key for a user and print it. The key is shown only this once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--days", type=int, default=apikeys.DEFAULT_DAYS, help="Days until it expires.")
        parser.add_argument("--name", default="created with manage.py", help="What the key is for.")

    def handle(self, *args: Any, username: str, days: int, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user is called {username!r}.")
        if not 1 <= days <= apikeys.MAX_DAYS:
            raise CommandError(f"--days must be between 1 and {apikeys.MAX_DAYS}.")
        name = " ".join(name.split())[:100]
        if not name:
            raise CommandError("--name must not be empty.")
        key, raw = apikeys.create(user, name, days)
        # Only the key on stdout, so `$(manage.py create_api_key ...)` captures it; the rest goes to stderr.
        self.stdout.write(raw)
        self.stderr.write(f"Key {key.prefix} for {username}, valid until {key.expires_at:%Y-%m-%d %H:%M %Z}.")
