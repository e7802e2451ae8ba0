"""An e-mail backend for the demo: one line per message on the console, the whole message in a file.

The console backend prints every message in full, which scrolls everything else away; this one says who got what
and where to read it, so the console stays readable while the mail is still there to look at.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import count

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

_numbers = count(1)
_lock = threading.Lock()


class OneLineBackend(BaseEmailBackend):
    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        folder = settings.VAR_DIR / "mail"
        folder.mkdir(parents=True, exist_ok=True)
        sent = 0
        for message in email_messages:
            with _lock:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                path = folder / f"{stamp}-{os.getpid()}-{next(_numbers):04d}.eml"
            path.write_bytes(message.message().as_bytes())
            to = ", ".join(message.recipients())
            shown = path.relative_to(settings.BASE_DIR) if path.is_relative_to(settings.BASE_DIR) else path
            sys.stdout.write(f"e-mail to {to}: {message.subject}  ({shown})\n")
            sys.stdout.flush()
            sent += 1
        return sent
