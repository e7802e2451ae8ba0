from __future__ import annotations

from django.apps import AppConfig


class AccessreqConfig(AppConfig):
    name = "accessreq"
    verbose_name = "Access requests"

    def ready(self) -> None:
        from accessreq import signals  # noqa: F401 - connects the receivers
