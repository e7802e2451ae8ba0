from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
# Every CELERY_* setting in portal/settings.py configures the app; the reasons for each are written there.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
