from __future__ import annotations

from django.apps import AppConfig


class AccessreqConfig(AppConfig):
    name = "accessreq"
    verbose_name = "Access requests"
