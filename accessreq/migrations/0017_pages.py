"""A request's risk ("write", "delete", "wildcard" or "partner", from scopes.risks) is stored beside its rules, so the
approval queue filters on it in SQL, with an index for the queue's filter and order. Existing rows are backfilled
from their rules in batches."""

from django.db import migrations, models

from accessreq import scopes

BATCH = 2000


def backfill(apps, schema_editor):
    AccessRequest = apps.get_model("accessreq", "AccessRequest")
    last = 0
    while True:
        batch = list(
            AccessRequest.objects.filter(pk__gt=last).order_by("pk").only("pk", "rules", "client_kind")[:BATCH]
        )
        if not batch:
            return
        risky = [r.pk for r in batch if scopes.is_risky(r.rules, r.client_kind)]
        AccessRequest.objects.filter(pk__in=risky).update(risky=True)
        last = batch[-1].pk


class Migration(migrations.Migration):

    dependencies = [
        ("accessreq", "0016_quota"),
    ]

    operations = [
        migrations.AddField(
            model_name="accessrequest",
            name="risky",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="accessrequest",
            index=models.Index(fields=["status", "risky", "created_at", "id"], name="request_by_risk"),
        ),
    ]
