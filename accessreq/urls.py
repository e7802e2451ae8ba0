from __future__ import annotations

from django.urls import path

from accessreq.views import api_keys, confirm, health, requests, security, tokens

urlpatterns = [
    path("", requests.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("requests/", requests.request_list, name="request_list"),
    path("requests/new", requests.request_new, name="request_new"),
    path("requests/preview", requests.request_preview, name="request_preview"),
    path("requests/<int:pk>/", requests.request_detail, name="request_detail"),
    path("requests/<int:pk>/status", requests.request_progress, name="request_progress"),
    path("requests/<int:pk>/cancel", requests.request_cancel, name="request_cancel"),
    path("requests/<int:pk>/retry", requests.request_retry, name="request_retry"),
    path("requests/<int:pk>/decide", requests.request_decide, name="request_decide"),
    path("requests/<int:pk>/reveal", requests.reveal, name="reveal"),
    path("requests/<int:pk>/new-password", requests.new_password, name="new_password"),
    path("approvals/", requests.approval_queue, name="approval_queue"),
    path("tokens/", tokens.token_list, name="token_list"),
    path("tokens/<int:pk>/", tokens.token_detail, name="token_detail"),
    path("tokens/<int:pk>/rotate", tokens.token_rotate, name="token_rotate"),
    path("tokens/<int:pk>/confirm-switch", tokens.token_confirm_switch, name="token_confirm_switch"),
    path("tokens/<int:pk>/reveal/<str:slot>", tokens.token_reveal, name="token_reveal"),
    path("tokens/<int:pk>/retry/<str:slot>", tokens.slot_retry, name="slot_retry"),
    path("tokens/<int:pk>/disable", tokens.token_disable, name="token_disable"),
    path("tokens/<int:pk>/enable", tokens.token_enable, name="token_enable"),
    path("tokens/<int:pk>/retire", tokens.token_retire, name="token_retire"),
    path("tokens/<int:pk>/transfer", tokens.token_transfer, name="token_transfer"),
    path("tokens/<int:pk>/let-expire", tokens.token_let_expire, name="token_let_expire"),
    path("tokens/<int:pk>/restore", tokens.token_restore, name="token_restore"),
    path("security/", security.security_dashboard, name="security"),
    path("audit/", security.audit_log, name="audit_log"),
    path("registries/<int:pk>/reconcile", security.registry_reconcile, name="registry_reconcile"),
    path("unmanaged/<int:pk>/adopt", security.unmanaged_adopt, name="unmanaged_adopt"),
    path("unmanaged/<int:pk>/disable", security.unmanaged_disable, name="unmanaged_disable"),
    path("api-keys/", api_keys.api_keys, name="api_keys"),
    path("api-keys/<int:pk>/revoke", api_keys.api_key_revoke, name="api_key_revoke"),
    # Asking first, for browsers without script (static/confirm.js asks in a dialog).
    path("tokens/<int:pk>/confirm/<str:action>", confirm.token_confirm, name="token_confirm"),
    path("api-keys/<int:pk>/confirm-revoke", confirm.api_key_confirm_revoke, name="api_key_confirm_revoke"),
]
