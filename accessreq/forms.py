from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.forms import formset_factory
from django.utils import timezone

from accessreq import routing, scopes
from accessreq.models import LIVE_TOKEN_STATUSES, AccessRequest, ClientKind, Registry, RequestStatus, Token

ACTION_CHOICES = [(a, f"{a} ({scopes.ACTION_LABELS[a]})") for a in scopes.ACTIONS]


class RuleForm(forms.Form):
    repository = forms.CharField(
        required=False,
        max_length=scopes.MAX_REPOSITORY_LENGTH,
        help_text="A repository (myapp/api), a prefix wildcard (myapp/*) or * for every repository.",
    )
    actions = forms.MultipleChoiceField(choices=ACTION_CHOICES, required=False, widget=forms.CheckboxSelectMultiple)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        repository = (data.get("repository") or "").strip()
        actions = data.get("actions") or []
        data["repository"] = repository
        if not repository and not actions:
            return data  # an empty row is ignored
        if not repository:
            self.add_error("repository", "Enter a repository for these actions.")
        elif error := scopes.validate_repository(repository):
            self.add_error("repository", error)
        if not actions:
            self.add_error("actions", "Choose at least one action.")
        elif "content/write" in actions and "content/read" not in actions:
            self.add_error("actions", "Pushing needs pulling too: add content/read.")
        return data

    @property
    def is_blank(self) -> bool:
        return not (self.cleaned_data.get("repository") or self.cleaned_data.get("actions"))


RuleFormSet = formset_factory(RuleForm, extra=0, max_num=200, absolute_max=200, validate_max=True)


class RequestForm(forms.Form):
    registry = forms.ModelChoiceField(queryset=Registry.objects.filter(active=True), empty_label=None)
    purpose = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One sentence: what will use this token, and why.",
    )
    client_kind = forms.ChoiceField(choices=ClientKind.choices, label="Client")
    owner = forms.CharField(
        max_length=150, help_text="The username of the person accountable for this token. Defaults to you."
    )
    team = forms.CharField(max_length=100)
    password_days = forms.IntegerField(label="Password lifetime (days)", min_value=1)
    retire_on = forms.DateField(
        label="Retirement date",
        # A date input understands only ISO dates, whatever the site's locale writes.
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text="When the token should be disabled and removed.",
    )

    def __init__(self, *args: Any, requester: AbstractBaseUser, renews: Token | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requester = requester
        self.renews = renews
        if renews is not None and not self.is_bound:
            self.initial.update(
                registry=renews.registry_id,
                purpose=renews.purpose,
                client_kind=renews.client_kind,
                owner=renews.owner.get_username(),
                team=renews.team,
                password_days=renews.password_days,
                retire_on=renews.retire_on,
            )
        if not self.is_bound:
            self.initial.setdefault("owner", requester.get_username())
            self.initial.setdefault("password_days", 30)
            self.initial.setdefault("retire_on", timezone.localdate() + timedelta(days=180))

    def clean_purpose(self) -> str:
        purpose = " ".join(self.cleaned_data["purpose"].split())
        if len(purpose) < 10:
            raise forms.ValidationError("Say in a sentence what will use this token.")
        return purpose

    def clean_team(self) -> str:
        return self.cleaned_data["team"].strip()

    def clean_owner(self) -> AbstractBaseUser:
        username = self.cleaned_data["owner"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"No active user is called {username!r}.")
        return user

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        registry: Registry | None = data.get("registry")
        if registry is None:
            return data
        days = data.get("password_days")
        if days is not None and days > registry.max_password_days:
            self.add_error(
                "password_days", f"{registry} allows passwords of at most {registry.max_password_days} days."
            )
        retire_on: date | None = data.get("retire_on")
        today = timezone.localdate()
        if retire_on is not None:
            if retire_on <= today:
                self.add_error("retire_on", "Choose a date after today.")
            elif retire_on > today + timedelta(days=registry.max_retirement_days):
                latest = today + timedelta(days=registry.max_retirement_days)
                self.add_error("retire_on", f"{registry} allows retirement dates up to {latest:%Y-%m-%d}.")
        if self.renews is not None and registry != self.renews.registry:
            self.add_error("registry", f"A change to {self.renews.name} stays in {self.renews.registry}.")
        if self.renews is None and _tokens_in_use(registry) >= registry.token_limit:
            self.add_error(
                "registry", f"{registry} has reached its {registry.sku} limit of {registry.token_limit} tokens."
            )
        return data


def _tokens_in_use(registry: Registry) -> int:
    live_tokens = registry.tokens.filter(status__in=LIVE_TOKEN_STATUSES).count()
    live_tokens += registry.unmanaged_tokens.count()
    in_flight = AccessRequest.objects.filter(
        registry=registry, status__in=[RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.PROVISIONING]
    ).count()
    return live_tokens + in_flight


class NewRequest:
    """The request form and its rules together: one `is_valid`, errors next to each field."""

    def __init__(
        self, requester: AbstractBaseUser, data: Any = None, rule_rows: int = 1, renews: Token | None = None
    ) -> None:
        self.requester = requester
        self.renews = renews
        self.form = RequestForm(data, requester=requester, renews=renews)
        initial = None if data is not None else [{}] * rule_rows
        if renews is not None and data is None:
            initial = [{"repository": r["repository"], "actions": r["actions"]} for r in renews.rules] or [{}]
        self.rules = RuleFormSet(data, prefix="rules", initial=initial)
        self.rule_errors: list[str] = []
        self.merged_rules: list[dict] = []
        self.requirements: list[routing.Requirement] = []
        self._valid: bool | None = None

    def is_valid(self) -> bool:
        if self._valid is None:
            self._valid = self._validate()
        return self._valid

    def _validate(self) -> bool:
        if not self.form.is_bound:
            # A form not yet submitted: a change starts from the token's current access, for the preview.
            if self.renews is not None:
                self.merged_rules = self.renews.rules
                self.requirements = routing.requirements(self.renews.registry, self.merged_rules, self.requester)
            return False
        form_ok = self.form.is_valid()
        rules_ok = self.rules.is_valid()
        self.rule_errors = list(self.rules.non_form_errors())
        # Every valid row counts for the preview, even while another row still has an error.
        pairs = [
            (f.cleaned_data["repository"], f.cleaned_data["actions"])
            for f in self.rules.forms
            if f.is_valid() and not f.is_blank
        ]
        self.merged_rules = scopes.merge_rules(pairs)
        if rules_ok and not self.merged_rules:
            self.rule_errors.append("Add at least one repository with its actions.")
        count = len(scopes.scope_map_actions(self.merged_rules))
        if count > scopes.MAX_ACTIONS_PER_SCOPE_MAP:
            self.rule_errors.append(
                f"These rules make {count} scope-map actions; a scope map holds at most "
                f"{scopes.MAX_ACTIONS_PER_SCOPE_MAP}. Use a wildcard such as myapp/* instead of many repositories."
            )
        registry = self.form.cleaned_data.get("registry")
        if registry is not None and self.merged_rules:
            self.requirements = routing.requirements(registry, self.merged_rules, self.requester)
            for req in self.requirements:
                if req.short_of_approvers:
                    self.rule_errors.append(
                        f"{req.group.name} must give {req.count} approval(s) for {', '.join(req.repositories)}, "
                        f"but has only {len(req.eligible)} member(s) other than you who can approve. "
                        "Ask an admin to add approvers."
                    )
        return form_ok and rules_ok and not self.rule_errors

    @property
    def cleaned(self) -> dict[str, Any]:
        return {**self.form.cleaned_data, "rules": self.merged_rules, "renews": self.renews}
