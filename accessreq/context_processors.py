from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from accessreq.access import roles_for


def portal(request: HttpRequest) -> dict[str, object]:
    return {"portal_name": settings.SITE_NAME, "roles": roles_for(request.user)}
