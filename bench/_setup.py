"""A throwaway portal for a benchmark: its own SQLite file and broker under a temporary folder, an in-process ACR
emulator, and the settings pointing at them. Imported first by every benchmark."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="acr-portal-bench-"))
os.environ.update(
    DJANGO_SETTINGS_MODULE="portal.settings",
    PORTAL_VAR_DIR=str(WORK),
    DEBUG="1",
    ACR_CREDENTIAL="emulator",
    ACR_POLLING_INTERVAL="0",
    LOG_LEVEL="WARNING",
)
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)

import warnings  # noqa: E402

import django  # noqa: E402

# Static files are not collected for a benchmark; whitenoise says so once per process.
warnings.filterwarnings("ignore", "No directory at")

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from acr_emulator.testing import start_emulator  # noqa: E402


def start(page_size: int = 100):
    """Migrate a fresh database and start an emulator; returns the emulator."""
    import logging

    logging.getLogger("acr_emulator").setLevel(logging.WARNING)
    from django.db import reset_queries

    # DEBUG keeps every query in memory, which production does not: measure without it. (Left on, migrate alone
    # would fill Django's capped query log, and counting queries would then always find none.)
    settings.DEBUG = False
    call_command("migrate", verbosity=0)
    reset_queries()
    emulator = start_emulator(page_size=page_size, lro_polls=1)
    settings.ACR_ARM_ENDPOINT = emulator.url
    return emulator
