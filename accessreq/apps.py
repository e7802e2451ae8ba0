from __future__ import annotations

from django.apps import AppConfig


class AccessreqConfig(AppConfig):
    name = "accessreq"
    verbose_name = "Access requests"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from accessreq import passwordsummary, signals  # noqa: F401 - connects the receivers

        connection_created.connect(passwordsummary.on_connect, dispatch_uid="passwordsummary-connect")
        post_migrate.connect(passwordsummary.after_migrate, sender=self, dispatch_uid="passwordsummary-migrate")
