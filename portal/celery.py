from __future__ import annotations

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# filesystem:// is kombu's filesystem transport, but writing each message whole before a worker can see it
# (portal/broker.py): with kombu's own, a worker that lists the folder mid-write takes an empty message and stops.
TRANSPORT_ALIASES["filesystem"] = "portal.broker:AtomicFilesystemTransport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
# Every CELERY_* setting in portal/settings.py configures the app; the reasons for each are written there.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
