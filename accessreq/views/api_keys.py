"""The page where people make and revoke their personal API keys."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accessreq import apikeys
from accessreq.models import ApiKey
from accessreq.views.common import AuthedRequest


def _api_keys_page(
    request: AuthedRequest, form: apikeys.NewKeyForm, new_key: tuple[ApiKey, str] | None = None
) -> HttpResponse:
    keys = ApiKey.objects.filter(user=request.user).order_by("-created_at", "-id")
    return render(request, "accessreq/api_keys.html", {"keys": keys, "form": form, "new_key": new_key})


# never_cache sends no-store: the page that shows a new key must not be kept by the browser or a proxy.
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: AuthedRequest) -> HttpResponse:
    if request.method == "GET":
        return _api_keys_page(request, apikeys.NewKeyForm())
    form = apikeys.NewKeyForm(request.POST)
    if not form.is_valid():
        return _api_keys_page(request, form)
    # Rendered rather than redirected: the key exists in plaintext only in this response, never in the session.
    new_key = apikeys.create(request.user, form.cleaned_data["name"], form.cleaned_data["days"], request=request)
    return _api_keys_page(request, apikeys.NewKeyForm(), new_key=new_key)


@login_required
@require_POST
def api_key_revoke(request: AuthedRequest, pk: int) -> HttpResponse:
    key = ApiKey.objects.filter(user=request.user, pk=pk).first()
    if key is None:
        raise Http404("No such key.")
    if apikeys.revoke(key, request.user, request):
        messages.success(request, f"The key {key.name} ({key.prefix}) is revoked.")
    else:
        messages.error(request, f"The key {key.name} ({key.prefix}) was already revoked.")
    return redirect("api_keys")
