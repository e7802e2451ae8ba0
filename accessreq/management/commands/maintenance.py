from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accessreq.jobs import JOBS


class Command(BaseCommand):
    help = "Run the portal's periodic jobs now: all of them, or those named. Beat runs the same jobs by the same names."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("jobs", nargs="*", metavar="JOB", help=", ".join(JOBS))

    def handle(self, *args: object, jobs: list[str], **options: object) -> None:
        unknown = [name for name in jobs if name not in JOBS]
        if unknown:
            raise CommandError(f"Unknown job {', '.join(unknown)}; choose from {', '.join(JOBS)}.")
        for name in jobs or JOBS:
            self.stdout.write(f"{name}: {JOBS[name]()}")
