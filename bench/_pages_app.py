"""The portal as gunicorn serves it, plus one baseline page for the pages benchmark: a primary-key lookup rendered
through the site's base template. The baseline lives here, not in the portal's routes."""

from __future__ import annotations

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

from django.contrib.auth.decorators import login_required  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.shortcuts import get_object_or_404  # noqa: E402
from django.template import engines  # noqa: E402
from django.urls import clear_url_caches, path  # noqa: E402

from accessreq.models import Token  # noqa: E402
from portal import urls  # noqa: E402

TEMPLATE = engines["django"].from_string(
    '{% extends "base.html" %}{% block content %}<h1>{{ token.name }}</h1><p>{{ token.team }}</p>{% endblock %}'
)


@login_required
def baseline(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(Token.objects.select_related("registry"), pk=pk)
    return HttpResponse(TEMPLATE.render({"token": token}, request))


urls.urlpatterns.insert(0, path("bench/pk/<int:pk>/", baseline, name="bench_pk"))
clear_url_caches()
