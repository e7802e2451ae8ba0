from __future__ import annotations

from django.urls import path

from accessreq import views

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
]
