from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accessreq import audit
from accessreq.models import AuditEvent


class Command(BaseCommand):
    help = "Check the audit log's hash chain and name the first event that was changed, inserted or removed."

    def handle(self, *args: object, **options: object) -> None:
        broken = audit.verify()
        if broken is not None:
            raise CommandError(f"The audit chain breaks at event {broken.pk} ({broken}).")
        self.stdout.write(f"The audit chain holds: {AuditEvent.objects.count()} events.")
