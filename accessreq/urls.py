from __future__ import annotations

from django.urls import path

from accessreq import token_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("requests/", views.request_list, name="request_list"),
    path("requests/new", views.request_new, name="request_new"),
    path("requests/preview", views.request_preview, name="request_preview"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/status", views.request_progress, name="request_progress"),
    path("requests/<int:pk>/cancel", views.request_cancel, name="request_cancel"),
    path("requests/<int:pk>/retry", views.request_retry, name="request_retry"),
    path("requests/<int:pk>/decide", views.request_decide, name="request_decide"),
    path("requests/<int:pk>/reveal", views.reveal, name="reveal"),
    path("requests/<int:pk>/new-password", views.new_password, name="new_password"),
    path("approvals/", views.approval_queue, name="approval_queue"),
    path("audit/", views.audit_log, name="audit_log"),
    path("tokens/", token_views.token_list, name="token_list"),
    path("tokens/<int:pk>/", token_views.token_detail, name="token_detail"),
    path("tokens/<int:pk>/rotate", token_views.token_rotate, name="token_rotate"),
    path("tokens/<int:pk>/confirm-switch", token_views.token_confirm_switch, name="token_confirm_switch"),
    path("tokens/<int:pk>/reveal/<str:slot>", token_views.token_reveal, name="token_reveal"),
    path("tokens/<int:pk>/disable", token_views.token_disable, name="token_disable"),
    path("tokens/<int:pk>/enable", token_views.token_enable, name="token_enable"),
    path("tokens/<int:pk>/retire", token_views.token_retire, name="token_retire"),
    path("tokens/<int:pk>/transfer", token_views.token_transfer, name="token_transfer"),
    path("tokens/<int:pk>/let-expire", token_views.token_let_expire, name="token_let_expire"),
    path("tokens/<int:pk>/restore", token_views.token_restore, name="token_restore"),
    path("security/", token_views.security_dashboard, name="security"),
    path("registries/<int:pk>/reconcile", token_views.registry_reconcile, name="registry_reconcile"),
    path("unmanaged/<int:pk>/adopt", token_views.unmanaged_adopt, name="unmanaged_adopt"),
    path("unmanaged/<int:pk>/disable", token_views.unmanaged_disable, name="unmanaged_disable"),
    path("api-keys/", views.api_keys, name="api_keys"),
    path("api-keys/<int:pk>/revoke", views.api_key_revoke, name="api_key_revoke"),
]
