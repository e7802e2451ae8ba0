from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from accessreq import tokens


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def flag_orphans_on_deactivation(sender: type, instance: object, **kwargs: object) -> None:
    # The hourly job catches deactivations that bypass save() (bulk updates, directory sync); this is the fast path.
    if not getattr(instance, "is_active", True):
        transaction.on_commit(tokens.flag_orphans)
