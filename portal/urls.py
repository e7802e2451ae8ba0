from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accessreq.api import api
from accessreq.auth import sso_enabled
from accessreq.ratelimit import rate_limited
from portal.demo_signin import demo_accounts

admin.site.site_header = "ACR Access Portal administration"

urlpatterns = [
    path(
        "accounts/login/",
        rate_limited("signin")(
            auth_views.LoginView.as_view(
                redirect_authenticated_user=True,
                extra_context={"sso_enabled": sso_enabled, "demo_accounts": demo_accounts},
            )
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # Always routed; the views answer 404 until OIDC_RP_CLIENT_ID is set.
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("api/v1/", api.urls),
    path("", include("accessreq.urls")),
]
