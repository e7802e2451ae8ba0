from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accessreq import health


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    # Anyone may ask whether the portal is up; only staff learn which vendors and versions answer, and how.
    body, status = health.summary(health.run_checks(), detailed=request.user.is_staff)
    return JsonResponse(body, status=status)
