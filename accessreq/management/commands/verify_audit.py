from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accessreq import audit
from accessreq.models import AuditEvent

# One edit early in a long log can break every MAC after it; past this many, only the count is told.
SHOWN = 50


class Command(BaseCommand):
    help = (
        "Check the audit log's MAC chain against its anchors and report every event that was changed, inserted or "
        "removed, and newest events that were removed or rewritten. Exits non-zero when anything is found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--anchor-file",
            type=Path,
            help="also check against the anchors in this file (AUDIT_ANCHOR_FILE, or a copy kept elsewhere)",
        )
        parser.add_argument(
            "--anchor", action="store_true", help="when the log holds, record its head as a new anchor"
        )

    def handle(self, *args: object, anchor_file: Path | None, **options: object) -> None:
        if anchor_file is not None and not anchor_file.is_file():
            raise CommandError(f"No anchor file at {anchor_file}.")
        found = 0
        for problem in audit.verify(anchor_file):
            found += 1
            if found <= SHOWN:
                self.stderr.write(str(problem))
        if found:
            more = f" ({found - SHOWN} not shown)" if found > SHOWN else ""
            raise CommandError(f"The audit log does not hold: {found} problems{more}.")
        self.stdout.write(f"The audit chain holds: {AuditEvent.objects.count()} events.")
        if options["anchor"]:
            row = audit.anchor()
            self.stdout.write(f"Anchored: {row.event_count} events up to event {row.last_event_id}.")
