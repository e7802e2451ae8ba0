from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from accessreq.models import (
    AccessRequest,
    AllowedVault,
    ApprovalRule,
    AuditEvent,
    Registry,
    Team,
    Token,
    WebhookDelivery,
    WebhookEndpoint,
)


class ApprovalRuleInline(admin.TabularInline):
    model = ApprovalRule
    extra = 1


@admin.register(Registry)
class RegistryAdmin(admin.ModelAdmin):
    list_display = ["name", "login_server", "sku", "resource_group", "admin_group", "active"]
    list_filter = ["sku", "active"]
    search_fields = ["name", "login_server"]
    inlines = [ApprovalRuleInline]
    fieldsets = [
        (None, {"fields": ["name", "login_server", "subscription_id", "resource_group", "sku", "active"]}),
        ("Usage logs", {"fields": ["log_analytics_workspace_id"]}),
        (
            "Policy",
            {
                "fields": [
                    "max_password_days",
                    "max_retirement_days",
                    "read_approvals",
                    "write_approvals",
                    "admin_group",
                ]
            },
        ),
    ]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    """A team's shared address, where reminders about its tokens go."""

    list_display = ["name", "email"]
    search_fields = ["name", "email"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Changes go through the portal's own flow, which audits them; the admin only shows."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "token_name", "registry", "requester", "owner", "status", "created_at"]
    list_filter = ["status", "registry"]
    list_select_related = ["registry", "requester", "owner"]
    search_fields = ["token_name", "purpose", "team"]


@admin.register(Token)
class TokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "registry", "owner", "team", "status", "retire_on", "created_at"]
    list_filter = ["status", "registry"]
    list_select_related = ["registry", "owner"]
    search_fields = ["name", "team", "purpose"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_name", "action", "target_repr", "source_ip"]
    list_filter = ["action"]
    search_fields = ["actor_name", "target_repr", "action"]


# --- Key Vault delivery ----------------------------------------------------------------------------------------------


class AllowedVaultInline(admin.TabularInline):
    """The vaults requests for this registry may deliver passwords to."""

    model = AllowedVault
    extra = 1


RegistryAdmin.inlines = [ApprovalRuleInline, AllowedVaultInline]
# --- outgoing webhooks ---------------------------------------------------------------------------------------------


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "url", "active", "created_at"]
    list_filter = ["kind", "active"]
    fields = ["name", "url", "kind", "secret", "events", "active"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "event", "endpoint", "status", "attempts", "last_status_code", "delivered_at"]
    list_filter = ["status", "event", "endpoint"]
    list_select_related = ["endpoint"]
