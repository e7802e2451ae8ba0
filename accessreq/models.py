from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from accessreq import scopes

User = settings.AUTH_USER_MODEL


class Sku(models.TextChoices):
    BASIC = "Basic"
    STANDARD = "Standard"
    PREMIUM = "Premium"


class Registry(models.Model):
    subscription_id = models.CharField(max_length=64)
    resource_group = models.CharField(max_length=90)
    name = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(r"^[a-zA-Z0-9]{5,50}$", "5 to 50 letters and digits.")],
        help_text="The registry's name in Azure; names are global, so unique here too.",
    )
    login_server = models.CharField(max_length=255)
    sku = models.CharField(max_length=16, choices=Sku.choices, default=Sku.STANDARD)
    max_password_days = models.PositiveIntegerField(
        default=90, validators=[MinValueValidator(1)], help_text="Longest password lifetime a request may ask for."
    )
    max_retirement_days = models.PositiveIntegerField(
        default=365, validators=[MinValueValidator(1)], help_text="Furthest retirement date a request may ask for."
    )
    read_approvals = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(5)],
        help_text="Distinct approvers each owner group must give for read-only requests.",
    )
    write_approvals = models.PositiveSmallIntegerField(
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(5)],
        help_text="Distinct approvers for requests with any write, delete or metadata/write action.",
    )
    admin_group = models.ForeignKey(
        Group,
        on_delete=models.PROTECT,
        related_name="administered_registries",
        help_text="Approves requests for repositories that no approval rule covers.",
    )
    active = models.BooleanField(default=True)
    log_analytics_workspace_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="The Log Analytics workspace (its id, a GUID) that this registry's diagnostic settings send "
        "ContainerRegistryLoginEvents and ContainerRegistryRepositoryEvents to. Empty: token usage is not collected.",
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "registries"

    def __str__(self) -> str:
        return self.name

    @property
    def token_limit(self) -> int:
        return scopes.SKU_TOKEN_LIMITS[self.sku]

    def approvals_needed(self, actions: set[str]) -> int:
        return self.write_approvals if actions & scopes.WRITE_ACTIONS else self.read_approvals


class ApprovalRule(models.Model):
    """Who owns which repositories: like a CODEOWNERS line, the most specific pattern wins."""

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="approval_rules")
    pattern = models.CharField(
        max_length=256, help_text="A repository (myapp/api), a prefix wildcard (myapp/*) or * for everything."
    )
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="approval_rules")

    class Meta:
        ordering = ["registry", "pattern"]
        constraints = [models.UniqueConstraint(fields=["registry", "pattern"], name="one_owner_per_pattern")]

    def __str__(self) -> str:
        return f"{self.registry}: {self.pattern} → {self.group}"

    def clean(self) -> None:
        error = scopes.validate_repository(self.pattern)
        if error:
            raise ValidationError({"pattern": error})


class ClientKind(models.TextChoices):
    CI = "ci", "CI pipeline"
    CLUSTER = "cluster", "Cluster"
    PARTNER = "partner", "Partner"
    DEVICE = "device", "Device"
    PERSON = "person", "Person"
    OTHER = "other", "Other"


class RequestStatus(models.TextChoices):
    PENDING = "pending", "Waiting for approval"
    APPROVED = "approved", "Approved"
    PROVISIONING = "provisioning", "Provisioning"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"


# Filed and not yet finished: counted against the registry's token limit, shown as "open".
OPEN_REQUEST_STATUSES = [RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.PROVISIONING]
# Approved and on the worker's side of the line.
IN_PROGRESS_REQUEST_STATUSES = [RequestStatus.APPROVED, RequestStatus.PROVISIONING]


def with_details(qs: models.QuerySet[AccessRequest]) -> models.QuerySet[AccessRequest]:
    """What a page or an API answer shows of each request, in a fixed number of queries however many rows."""
    return qs.select_related("registry", "requester", "owner", "key_vault_delivery").prefetch_related(
        models.Prefetch(
            "requirements",
            queryset=ApprovalRequirement.objects.select_related("group").annotate(given=models.Count("approvals")),
        ),
        models.Prefetch("approvals", queryset=Approval.objects.select_related("approver")),
    )


class AccessRequest(models.Model):
    registry = models.ForeignKey(Registry, on_delete=models.PROTECT, related_name="requests")
    requester = models.ForeignKey(User, on_delete=models.PROTECT, related_name="access_requests")
    owner = models.ForeignKey(User, on_delete=models.PROTECT, related_name="owned_requests")
    team = models.CharField(max_length=100)
    purpose = models.CharField(max_length=500)
    client_kind = models.CharField(max_length=16, choices=ClientKind.choices)
    # [{"repository": "myapp/api", "actions": ["content/read", ...]}, ...], merged and sorted.
    rules = models.JSONField()
    password_days = models.PositiveIntegerField()
    retire_on = models.DateField()
    token_name = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    provision_attempts = models.PositiveSmallIntegerField(default=0)
    failure_reason = models.TextField(blank=True)
    # A change to an existing token (new scope or a later retirement): approved like any request, applied in place.
    renews = models.ForeignKey(
        "Token", null=True, blank=True, on_delete=models.PROTECT, related_name="renewals"
    )
    # The run provisioning it now: `claimed_at` is refreshed by its heartbeat, so a claim older than
    # CLAIM_LEASE_SECONDS belongs to a worker that died and is taken over. `claim_token` tells runs apart.
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    # When the next attempt is due after a transient error; overdue by a lease, its message was lost.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # scopes.risks() of rules and client kind, written on every save, so the queue filters risky requests in SQL.
    risky = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["requester", "-created_at", "-id"]),
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["owner", "-created_at", "-id"], name="request_owner_newest"),
            # The approval queue: pending requests, narrowed by risk, oldest first.
            models.Index(fields=["status", "risky", "created_at", "id"], name="request_by_risk"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.token_name or self.purpose[:30]}"

    def get_absolute_url(self) -> str:
        return reverse("request_detail", args=[self.pk])

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.risky = scopes.is_risky(self.rules, self.client_kind)
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "risky"}
        super().save(*args, **kwargs)

    @property
    def actions(self) -> set[str]:
        return {action for rule in self.rules for action in rule["actions"]}

    @property
    def scope_map_actions(self) -> list[str]:
        return scopes.scope_map_actions(self.rules)

    @property
    def risks(self) -> list[str]:
        return scopes.risks(self.rules, self.client_kind)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_REQUEST_STATUSES

    @property
    def is_in_progress(self) -> bool:
        return self.status in IN_PROGRESS_REQUEST_STATUSES


class RequirementQuerySet(models.QuerySet):
    def unmet(self) -> RequirementQuerySet:
        return self.annotate(given=models.Count("approvals")).filter(given__lt=models.F("count"))


class ApprovalRequirement(models.Model):
    """One owner group's share of a request's approval, fixed when the request is filed."""

    objects = RequirementQuerySet.as_manager()

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="requirements")
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    count = models.PositiveSmallIntegerField()
    repositories = models.JSONField()
    via_admin_group = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["request", "group"], name="one_requirement_per_group")]


class Decision(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"


class Approval(models.Model):
    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(User, on_delete=models.PROTECT, related_name="approvals")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The owner groups this approval counted for, as the approver's memberships stood when they approved.
    requirements = models.ManyToManyField(ApprovalRequirement, related_name="approvals", blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["request", "approver"], name="one_decision_per_approver")]


class TokenStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DISABLED = "disabled", "Disabled"
    RETIRING = "retiring", "Retiring (disabled, to be deleted)"
    RETIRED = "retired", "Retired"
    GONE = "gone", "Deleted outside the portal"


LIVE_TOKEN_STATUSES = [TokenStatus.ACTIVE, TokenStatus.DISABLED, TokenStatus.RETIRING]


class Team(models.Model):
    """A team's shared address, for reminders about the tokens it owns. Tokens name their team in free text."""

    name = models.CharField(max_length=100, unique=True)
    email = models.EmailField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Token(models.Model):
    """A token in a registry that the portal made, with who owns it and until when."""

    registry = models.ForeignKey(Registry, on_delete=models.PROTECT, related_name="tokens")
    name = models.CharField(max_length=50)
    scope_map_name = models.CharField(max_length=50)
    # The request that made it; none for a token adopted from the registry by security.
    request = models.OneToOneField(
        AccessRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="token"
    )
    owner = models.ForeignKey(User, on_delete=models.PROTECT, related_name="owned_tokens")
    team = models.CharField(max_length=100)
    requester = models.ForeignKey(User, on_delete=models.PROTECT, related_name="requested_tokens")
    purpose = models.CharField(max_length=500)
    client_kind = models.CharField(max_length=16, choices=ClientKind.choices)
    rules = models.JSONField()
    # scopes.risks() of rules and client kind, kept beside them so lists can filter and count risky tokens in SQL.
    risky = models.BooleanField(default=False)
    retire_on = models.DateField()
    password_days = models.PositiveIntegerField(default=30, help_text="Lifetime of each new password.")
    status = models.CharField(max_length=16, choices=TokenStatus.choices, default=TokenStatus.ACTIVE)
    status_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_rotated_at = models.DateTimeField(null=True, blank=True)
    let_expire = models.BooleanField(default=False, help_text="The owner wants no more reminders.")
    delete_after = models.DateTimeField(null=True, blank=True)
    orphaned_at = models.DateTimeField(null=True, blank=True)
    # What reconcile last found in the registry's scope map, when it differs from what was approved.
    drift_actions = models.JSONField(null=True, blank=True)
    drift_seen_at = models.DateTimeField(null=True, blank=True)
    # The last proof of a new password at the registry: {"checked_at", "ok", "slot", "error", "checks": [...]}.
    verification = models.JSONField(null=True, blank=True)
    # Its outcome, kept beside it so lists can filter: None until a password was checked.
    verified_ok = models.BooleanField(null=True, blank=True)
    # The last successful login or repository operation seen in the registry's logs (accessreq/usage.py).
    last_used_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # The registry's provisioningState when reconcile last found it other than Succeeded ("Failed", "Creating"):
    # such a token authenticates nothing. Empty when it is Succeeded.
    registry_state = models.CharField(max_length=16, blank=True)
    # Kept by database triggers on password slots, in the transaction that changes a slot, so lists can sort and
    # filter on them with an index: the soonest expiry of a password in use, and "every password expired".
    next_expiry = models.DateTimeField(null=True, blank=True, editable=False)
    passwords_expired = models.BooleanField(default=False, editable=False)
    # How urgently a person should look: 0 owner gone, 1 scope map drifted, 2 every password expired, 3 otherwise.
    attention = models.GeneratedField(
        expression=models.Case(
            models.When(orphaned_at__isnull=False, then=models.Value(0)),
            models.When(drift_actions__isnull=False, then=models.Value(1)),
            models.When(passwords_expired=True, then=models.Value(2)),
            default=models.Value(3),
        ),
        output_field=models.SmallIntegerField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["registry", "name"]
        constraints = [models.UniqueConstraint(fields=["registry", "name"], name="one_token_per_name")]
        indexes = [
            # The token lists' default order ("needs attention first") over live tokens, read in index order.
            models.Index(
                fields=["attention", "next_expiry", "retire_on", "id"],
                name="token_live_by_attention",
                condition=models.Q(status__in=["active", "disabled", "retiring"]),
            ),
            models.Index(fields=["status", "attention", "next_expiry", "retire_on", "id"], name="token_by_attention"),
            # token_live_by_last_use (the lists sorted by last use) is made by migration 0015 in SQL: SQLite
            # refuses NULLS LAST in an index, where its DESC already puts nulls last.
            models.Index(fields=["team"], name="token_team"),
        ]

    def __str__(self) -> str:
        return f"{self.registry}/{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("token_detail", args=[self.pk])

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.risky = bool(scopes.risks(self.rules, self.client_kind))
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "risky"}
        super().save(*args, **kwargs)

    @property
    def approved_actions(self) -> list[str]:
        return scopes.scope_map_actions(self.rules)

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_TOKEN_STATUSES

    @property
    def approvers(self) -> list[str]:
        if self.request is None:
            return []
        return [a.approver.get_username() for a in self.request.approvals.all() if a.decision == Decision.APPROVE]


class SlotStatus(models.TextChoices):
    GENERATING = "generating", "Being generated"
    AWAITING_REVEAL = "awaiting", "Waiting to be revealed"
    REVEALED = "revealed", "In use"
    EXPIRED = "expired", "Expired"
    REVOKING = "revoking", "Being deleted"
    REVOKED = "revoked", "Deleted"
    FAILED = "failed", "Could not be generated"
    DELIVERED = "delivered", "In Key Vault"


# Slots whose password may be in use by a client: the ones a rotation must not overwrite.
SLOTS_IN_USE = [SlotStatus.GENERATING, SlotStatus.AWAITING_REVEAL, SlotStatus.REVEALED, SlotStatus.DELIVERED]


class PasswordSlot(models.Model):
    token = models.ForeignKey(Token, on_delete=models.CASCADE, related_name="slots")
    name = models.CharField(max_length=9, choices=[("password1", "password1"), ("password2", "password2")])
    status = models.CharField(max_length=10, choices=SlotStatus.choices, default=SlotStatus.GENERATING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    reveal_by = models.DateTimeField(null=True, blank=True)
    revealed_at = models.DateTimeField(null=True, blank=True)
    revealed_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Who may reveal it: the requester for the first password, whoever rotated for a later one.
    requested_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # After a rotation, the old slot stays valid until its owner confirms the switch or this time passes.
    retire_after = models.DateTimeField(null=True, blank=True)
    generation = models.PositiveIntegerField(default=0, help_text="How many times this slot was generated.")
    # The lifetime chosen for this slot's next password at rotation; empty means the token's own.
    lifetime_days = models.PositiveIntegerField(null=True, blank=True)
    # Set while one worker generates the password: generateCredentials replaces the password in the registry, so
    # two overlapping runs would leave the registry holding a value other than the one sealed for the reveal.
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    # When generation was last queued: the sweep re-queues a slot whose message was lost, as it does for requests.
    queued_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Generation attempts since it was queued.")
    failure_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["token", "name"], name="one_row_per_slot")]

    def __str__(self) -> str:
        return f"{self.token} {self.name}"


class Reminder(models.Model):
    """A reminder sent: each (token, subject, due date, days before) once per address, however often the job runs."""

    token = models.ForeignKey(Token, on_delete=models.CASCADE, related_name="reminders")
    # "retirement", or a slot name for a password's expiry; `due` tells one expiry from the next after rotation.
    subject = models.CharField(max_length=16)
    due = models.DateTimeField()
    days_before = models.PositiveSmallIntegerField()
    email = models.EmailField()
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["token", "subject", "due", "days_before", "email"], name="one_reminder_each"
            )
        ]


class Digest(models.Model):
    """One reminder e-mail per address per day."""

    email = models.EmailField()
    day = models.DateField()
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["email", "day"], name="one_digest_per_day")]


class UnmanagedToken(models.Model):
    """A token found in a registry that the portal did not make. Security adopts or disables it."""

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="unmanaged_tokens")
    name = models.CharField(max_length=50)
    scope_map_name = models.CharField(max_length=50)
    actions = models.JSONField(default=list)
    status = models.CharField(max_length=16)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["registry", "name"]
        constraints = [models.UniqueConstraint(fields=["registry", "name"], name="one_unmanaged_per_name")]

    def __str__(self) -> str:
        return f"{self.registry}/{self.name} (unmanaged)"


class SealedPassword(models.Model):
    """A generated password, encrypted, waiting for its one reveal. Deleted in the transaction that reveals it."""

    slot = models.OneToOneField(PasswordSlot, on_delete=models.CASCADE, related_name="sealed")
    ciphertext = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)


class AuditEvent(models.Model):
    """Append-only, MAC-chained: each row's hash is keyed and covers the previous row's, so an edit or a gap shows."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # PROTECT, not SET_NULL: the actor's id is part of what the row's MAC covers, and the table refuses updates, so
    # an account with a history is deactivated rather than deleted.
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    actor_name = models.CharField(max_length=150, help_text="Kept even if the account is deleted.")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=255)
    details = models.JSONField(default=dict)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # Which AUDIT_KEYS key made `hash` (see accessreq.audit), so keys can rotate; "legacy-sha256" for rows hashed
    # without a key, before keys existed.
    key_id = models.CharField(max_length=16)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target_repr}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise PermissionError("Audit events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit events cannot be deleted.")


class AuditAnchor(models.Model):
    """The audit log's head at one moment, MAC'd, and also written outside the database (a log line, a file), so
    that removing or rewriting the newest events shows against an anchor the attacker could not also rewrite."""

    created_at = models.DateTimeField(default=timezone.now)
    event_count = models.PositiveBigIntegerField()
    last_event_id = models.BigIntegerField(help_text="0 when the log was empty.")
    last_hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16)
    mac = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.event_count} events up to {self.last_event_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise PermissionError("Audit anchors cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit anchors cannot be deleted.")



class ApiKey(models.Model):
    """A personal key for the JSON API. Only a hash is kept; the key is shown once, when it is made."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The key's public first part, to find its row and to let its owner tell keys apart.
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


# --- Key Vault delivery ----------------------------------------------------------------------------------------------


class AllowedVault(models.Model):
    """A Key Vault that requests for this registry may deliver passwords to. The portal's identity holds
    "Key Vault Secrets Officer" on it."""

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="allowed_vaults")
    url = models.CharField(
        max_length=255, help_text="The vault's URL, e.g. https://contoso-ci.vault.azure.net (no path)."
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["registry", "url"]
        constraints = [models.UniqueConstraint(fields=["registry", "url"], name="allowed_vault_unique")]

    def __str__(self) -> str:
        return self.url

    def clean(self) -> None:
        from accessreq.keyvault import normalize_vault_url

        try:
            self.url = normalize_vault_url(self.url)
        except ValueError as exc:
            raise ValidationError({"url": str(exc)}) from exc


class KeyVaultDelivery(models.Model):
    """Where a request's passwords go instead of a reveal: a secret in an allowed vault, and its rotation policy.
    Made with the request; the token is attached when it exists."""

    request = models.OneToOneField(AccessRequest, on_delete=models.CASCADE, related_name="key_vault_delivery")
    token = models.OneToOneField(
        Token, null=True, blank=True, on_delete=models.SET_NULL, related_name="key_vault_delivery"
    )
    vault_url = models.CharField(max_length=255)
    secret_name = models.CharField(max_length=127)
    # Exactly one of these is set: rotate every N days, or N days before the password expires.
    rotate_every_days = models.PositiveIntegerField(null=True, blank=True)
    rotate_before_expiry_days = models.PositiveIntegerField(null=True, blank=True)
    secret_id = models.CharField(max_length=500, blank=True, help_text="The current version's id.")
    secret_version = models.CharField(max_length=64, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    next_rotation_at = models.DateTimeField(null=True, blank=True)
    rotation_started_at = models.DateTimeField(null=True, blank=True)
    rotations = models.PositiveIntegerField(default=0)
    last_failure = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.destination

    @property
    def destination(self) -> str:
        return f"{self.vault_url}/secrets/{self.secret_name}"

    @property
    def policy(self) -> str:
        if self.rotate_every_days:
            return f"every {self.rotate_every_days} days"
        return f"{self.rotate_before_expiry_days} days before the password expires"


class StorageLocation(models.Model):
    """Where the requester says they stored a revealed password (a vault, a CI variable group, ...)."""

    token = models.OneToOneField(Token, on_delete=models.CASCADE, related_name="storage_location")
    location = models.CharField(max_length=500)
    recorded_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.location
# Token usage, collected from the registries' diagnostic logs (accessreq/usage.py).


class UsageAction(models.TextChoices):
    PULL = "pull", "Pull"
    PUSH = "push", "Push"
    DELETE = "delete", "Delete"


class TokenUsage(models.Model):
    """How often, and when last, a token pulled, pushed or deleted in one repository."""

    token = models.ForeignKey(Token, on_delete=models.CASCADE, related_name="usage")
    repository = models.CharField(max_length=255)
    action = models.CharField(max_length=8, choices=UsageAction.choices)
    count = models.PositiveBigIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        ordering = ["repository", "action"]
        constraints = [
            models.UniqueConstraint(fields=["token", "repository", "action"], name="one_usage_per_repository_action")
        ]

    def __str__(self) -> str:
        return f"{self.token} {self.action} {self.repository}"


class TokenUsageDay(models.Model):
    """A token's operations and failed logins on one day (UTC), for its 30-day sparkline."""

    token = models.ForeignKey(Token, on_delete=models.CASCADE, related_name="usage_days")
    day = models.DateField()
    operations = models.PositiveIntegerField(default=0)
    failed_logins = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["day"]
        constraints = [models.UniqueConstraint(fields=["token", "day"], name="one_usage_day_per_token")]


class UsageCursor(models.Model):
    """How far collect-usage has read one log table of one registry: events up to `watermark`, and the keys of
    those within the overlap read again next time (so they are not counted twice)."""

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="usage_cursors")
    table = models.CharField(max_length=64)
    watermark = models.DateTimeField(null=True, blank=True)
    recent_keys = models.JSONField(default=dict, help_text="Event key -> its time, for events in the overlap.")
    version = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["registry", "table"], name="one_cursor_per_table")]


class SuggestionKind(models.TextChoices):
    DROP = "drop", "Drop unused access"
    NARROW = "narrow", "Narrow a wildcard"
    RETIRE = "retire", "Retire (unused)"


class TokenSuggestion(models.Model):
    """What usage suggests for a token (accessreq/usage.advise), as collect-usage last worked it out, so security
    can list, count, search and sort every suggestion without computing each token's advice per page view."""

    token = models.ForeignKey(Token, on_delete=models.CASCADE, related_name="suggestions")
    kind = models.CharField(max_length=8, choices=SuggestionKind.choices)
    text = models.CharField(max_length=1000)
    # First found: kept while the same suggestion stands, so the owner's digest mentions it once.
    since = models.DateTimeField()

    class Meta:
        ordering = ["token", "kind", "text"]
        indexes = [models.Index(fields=["kind", "token"], name="suggestion_by_kind")]

    def __str__(self) -> str:
        return f"{self.token}: {self.text}"


class FailedLoginBurst(models.Model):
    """Failed logins for one token close together; its owner and security are alerted once per burst."""

    token = models.ForeignKey(Token, on_delete=models.CASCADE, related_name="failed_login_bursts")
    started_at = models.DateTimeField()
    last_at = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    recent = models.JSONField(default=list, help_text="Times of the latest failures, at most the alert threshold.")
    alerted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_at"]
        indexes = [models.Index(fields=["token", "last_at"])]
# --- access reviews ------------------------------------------------------------------------------------------------


class ReviewScope(models.TextChoices):
    REGISTRY = "registry", "One registry"
    TEAM = "team", "One team"
    ALL = "all", "Every token"


class ReviewRecurrence(models.TextChoices):
    NONE = "none", "Once"
    QUARTERLY = "quarterly", "Every quarter"


class UnansweredOutcome(models.TextChoices):
    FLAG = "flag", "Flag it for security"
    DISABLE = "disable", "Disable the token"


class ReviewState(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class AccessReview(models.Model):
    """Security asks every owner in a scope whether each token is still needed, by a due date."""

    name = models.CharField(max_length=120)
    scope = models.CharField(max_length=16, choices=ReviewScope.choices)
    registry = models.ForeignKey(Registry, null=True, blank=True, on_delete=models.PROTECT, related_name="reviews")
    team = models.CharField(max_length=100, blank=True)
    due_on = models.DateField()
    recurrence = models.CharField(max_length=16, choices=ReviewRecurrence.choices, default=ReviewRecurrence.NONE)
    unanswered = models.CharField(max_length=16, choices=UnansweredOutcome.choices, default=UnansweredOutcome.FLAG)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=16, choices=ReviewState.choices, default=ReviewState.OPEN)
    closed_at = models.DateTimeField(null=True, blank=True)
    previous = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="next_review"
    )
    # Days before the due date whose reminder went out, so the job sends each once.
    reminders_sent = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("review_detail", args=[self.pk])


class ReviewDecision(models.TextChoices):
    KEEP = "keep", "Keep"
    CHANGE = "change", "Change"
    RETIRE = "retire", "Retire"


class ReviewItem(models.Model):
    """One token in one review, for its owner to answer."""

    review = models.ForeignKey(AccessReview, on_delete=models.CASCADE, related_name="items")
    token = models.ForeignKey(Token, on_delete=models.PROTECT, related_name="review_items")
    owner = models.ForeignKey(User, on_delete=models.PROTECT, related_name="review_items")
    recommendation = models.CharField(max_length=300, blank=True)
    decision = models.CharField(max_length=8, choices=ReviewDecision.choices, blank=True)
    justification = models.CharField(max_length=200, blank=True)
    decided_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    # What the due date did to an unanswered item: "flagged" or "disabled".
    outcome = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["review", "id"]
        constraints = [models.UniqueConstraint(fields=["review", "token"], name="one_item_per_token")]

    def __str__(self) -> str:
        return f"{self.review}: {self.token}"


# --- outgoing webhooks ---------------------------------------------------------------------------------------------


class WebhookKind(models.TextChoices):
    GENERIC = "generic", "Generic JSON"
    TEAMS = "teams", "Microsoft Teams incoming webhook"
    SLACK = "slack", "Slack incoming webhook"


class WebhookEndpoint(models.Model):
    """Where security events are posted, signed with HMAC-SHA256 under `secret`. Registered by an admin."""

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    secret = models.CharField(
        max_length=200, help_text="Signs each payload (X-Portal-Signature); the receiver checks it with the same value."
    )
    kind = models.CharField(max_length=16, choices=WebhookKind.choices, default=WebhookKind.GENERIC)
    # Event names to send, e.g. ["password.reveal_refused"]; empty sends every security event.
    events = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint, and how sending it went."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the worker tries a pending delivery again after a transient failure; empty when no retry is planned.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "-created_at", "-id"], name="delivery_by_status")]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint}"


class OutboxMessage(models.Model):
    """A task to send, written in the transaction that calls for it: the change and the intent commit together. It is
    sent once the transaction commits, and again by the relay job (`relay-outbox`) if the broker was down then."""

    task = models.CharField(max_length=100)
    args = models.JSONField(default=list)
    # task and args as one string: an unsent duplicate is not written twice.
    key = models.CharField(max_length=200, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    send_attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["sent_at", "id"])]

    def __str__(self) -> str:
        return f"{self.task}{tuple(self.args)}"


class ArmWriteBudget(models.Model):
    """The portal's share of Azure Resource Manager's write budget for one subscription, as a token bucket every
    worker takes from (when there is no Redis): `tokens` as of `stamp`, refilled at ARM_WRITES_PER_SECOND, and no
    write before `not_before` (set from a 429's Retry-After). `version` makes each change a conditional update."""

    subscription_id = models.CharField(max_length=64, unique=True)
    tokens = models.FloatField()
    stamp = models.FloatField()  # seconds since the epoch
    not_before = models.FloatField(default=0)
    version = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"ARM writes in {self.subscription_id}: {self.tokens:.1f}"
