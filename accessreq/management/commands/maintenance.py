from __future__ import annotations

from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accessreq import lifecycle, provisioning, tasks

# The same jobs beat runs, under the same names; each is safe to run at any time, as often as wanted.
JOBS: dict[str, Callable[[], int]] = {
    "sweep-stuck": provisioning.sweep_stuck,
    "expire-unrevealed": provisioning.expire_unrevealed,
    "finish-rotations": lifecycle.finish_rotations,
    "mark-expired": lifecycle.mark_expired,
    "retire-due": lifecycle.retire_due,
    "delete-retired": lifecycle.delete_retired,
    "flag-orphans": lifecycle.flag_orphans,
    "send-reminders": lifecycle.send_reminders,
    "reconcile": tasks.reconcile_registries,
}


class Command(BaseCommand):
    help = "Run the portal's periodic jobs now: all of them, or those named."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("jobs", nargs="*", metavar="JOB", help=", ".join(JOBS))

    def handle(self, *args: object, jobs: list[str], **options: object) -> None:
        unknown = [name for name in jobs if name not in JOBS]
        if unknown:
            raise CommandError(f"Unknown job {', '.join(unknown)}; choose from {', '.join(JOBS)}.")
        for name in jobs or JOBS:
            self.stdout.write(f"{name}: {JOBS[name]()}")
