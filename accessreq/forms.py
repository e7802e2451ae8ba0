from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.forms import formset_factory
from django.forms.utils import ErrorDict
from django.utils import timezone

from accessreq import flow, scopes
from accessreq.models import AllowedVault, ClientKind, Registry, Token

ACTION_CHOICES = [(a, f"{a} ({scopes.ACTION_LABELS[a]})") for a in scopes.ACTIONS]


class RuleForm(forms.Form):
    repository = forms.CharField(
        required=False,
        max_length=scopes.MAX_REPOSITORY_LENGTH,
        help_text="A repository (myapp/api), a prefix wildcard (myapp/*) or * for every repository.",
    )
    actions = forms.MultipleChoiceField(choices=ACTION_CHOICES, required=False, widget=forms.CheckboxSelectMultiple)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        repository = (data.get("repository") or "").strip()
        actions = data.get("actions") or []
        data["repository"] = repository
        if not repository and not actions:
            return data  # an empty row is ignored
        for name, messages in scopes.rule_errors(repository, actions).items():
            for message in messages:
                self.add_error(name, message)
        return data

    @property
    def is_blank(self) -> bool:
        return not (self.cleaned_data.get("repository") or self.cleaned_data.get("actions"))


RuleFormSet = formset_factory(
    RuleForm, extra=0, max_num=flow.MAX_RULES, absolute_max=flow.MAX_RULES, validate_max=True
)


class RequestForm(forms.Form):
    """The request's fields as types only; what the values must meet is flow.review's to say."""

    registry = forms.ModelChoiceField(queryset=Registry.objects.filter(active=True), empty_label=None)
    purpose = forms.CharField(
        max_length=flow.MAX_PURPOSE,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One sentence: what will use this token, and why.",
    )
    client_kind = forms.ChoiceField(choices=ClientKind.choices, label="Client")
    owner = forms.CharField(
        max_length=150, help_text="The username of the person accountable for this token. Defaults to you."
    )
    team = forms.CharField(max_length=flow.MAX_TEAM)
    password_days = forms.IntegerField(label="Password lifetime (days)")
    retire_on = forms.DateField(
        label="Retirement date",
        # A date input understands only ISO dates, whatever the site's locale writes.
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text="When the token should be disabled and removed.",
    )
    # Delivery: reveal once to the requester, or write to a Key Vault secret no person reads.
    delivery = forms.ChoiceField(
        required=False,
        choices=[("reveal", "Reveal it once to me"), ("key_vault", "Put it in an Azure Key Vault secret")],
        initial="reveal",
        widget=forms.RadioSelect,
        label="Deliver the password",
        help_text="A Key Vault secret is written by the portal and rotated automatically; nobody sees the password.",
    )
    # A select of the allowed vaults, but any value reaches review, which says what is wrong with it.
    key_vault = forms.CharField(
        required=False,
        max_length=255,
        widget=forms.Select,
        label="Key Vault",
        help_text="Only vaults the registry's admins allow are listed.",
    )
    secret_name = forms.CharField(
        required=False, max_length=200, label="Secret name", help_text="1 to 127 letters, digits and dashes."
    )
    rotate_every_days = forms.IntegerField(
        required=False, min_value=1, label="Rotate every (days)", help_text="Leave empty to rotate before expiry."
    )
    rotate_before_expiry_days = forms.IntegerField(
        required=False,
        min_value=1,
        label="Rotate before expiry (days)",
        help_text="Days before the password expires; empty with no interval above: a third of the lifetime, at most 7.",
    )

    def __init__(self, *args: Any, requester: User, renews: Token | None = None, **kwargs: Any) -> None:
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
        vaults = AllowedVault.objects.filter(registry__active=True).select_related("registry")
        self.fields["key_vault"].widget.choices = [("", "Choose a vault")] + [
            (v.url, f"{v.url} ({v.registry.name})") for v in vaults
        ]
        if renews is not None:
            for name in ("delivery", "key_vault", "secret_name", "rotate_every_days", "rotate_before_expiry_days"):
                del self.fields[name]
        self._state_limits()
        if not self.is_bound:
            self.initial.setdefault("owner", requester.get_username())
            self.initial.setdefault("password_days", 30)
            self.initial.setdefault("retire_on", timezone.localdate() + timedelta(days=180))


    def _state_limits(self) -> None:
        """Each registry's policy beside its fields, before anyone meets it as an error."""
        registries = list(Registry.objects.filter(active=True).order_by("name"))
        if not registries:
            return
        today = timezone.localdate()
        days = "; ".join(f"{r.name}: at most {r.max_password_days} days" for r in registries)
        dates = "; ".join(
            f"{r.name}: up to {today + timedelta(days=r.max_retirement_days):%Y-%m-%d}" for r in registries
        )
        self.fields["password_days"].help_text = f"How long each password works. {days}."
        self.fields["retire_on"].help_text = f"When the token is disabled and then removed. {dates}."
        widgets = self.fields["password_days"].widget.attrs, self.fields["retire_on"].widget.attrs
        widgets[0].update(min=1, max=max(r.max_password_days for r in registries))
        latest = max(r.max_retirement_days for r in registries)
        widgets[1].update(min=f"{today + timedelta(days=1):%Y-%m-%d}", max=f"{today + timedelta(days=latest):%Y-%m-%d}")


class NewRequest:
    """The request form and its rules together: one `is_valid`, errors next to each field, and the review that
    both the preview and filing use."""

    def __init__(
        self,
        requester: User,
        data: Any = None,
        renews: Token | None = None,
        rules: list[dict] | None = None,
    ) -> None:
        self.requester = requester
        self.renews = renews
        # A change's starting rules: the token's own unless others are given (a suggested narrowing).
        self.start_rules = rules if rules is not None else (renews.rules if renews is not None else None)
        self.form = RequestForm(data, requester=requester, renews=renews)
        initial: list[dict[str, Any]] | None = None if data is not None else [{}]
        if self.start_rules is not None and data is None:
            initial = [{"repository": r["repository"], "actions": r["actions"]} for r in self.start_rules] or [{}]
        self.rules = RuleFormSet(
            data, prefix="rules", initial=initial, error_messages={"too_many_forms": flow.TOO_MANY_RULES}
        )
        self.rule_errors: list[str] = []
        self.review: flow.Review | None = None
        self._valid: bool | None = None

    @property
    def merged_rules(self) -> list[dict]:
        return self.review.rules if self.review else []

    @property
    def requirements(self) -> list:
        return self.review.requirements if self.review else []

    def is_valid(self) -> bool:
        if self._valid is None:
            self._valid = self._validate()
        return self._valid

    def _validate(self) -> bool:
        if not self.form.is_bound:
            # A form not yet submitted: a change starts from the token's current access, for the preview.
            if self.renews is not None and self.start_rules is not None:
                self.review = self._review({}, scopes.rules_from_json(self.start_rules))
            return False
        form_ok = self.form.is_valid()
        rules_ok = self.rules.is_valid()
        self.rule_errors = [str(e) for e in self.rules.non_form_errors()]
        rows = [f for f in self.rules.forms if f.is_valid() and not f.is_blank]
        rules = [scopes.Rule.of(f.cleaned_data["repository"], f.cleaned_data["actions"]) for f in rows]
        self.review = self._review(self.form.cleaned_data, rules)
        for name, messages in self.review.errors.items():
            if not rules_ok and name == "rules":
                # "Add a rule" while a row shows its own error says too much.
                messages = [m for m in messages if m != flow.NO_RULES]
            self._place(name, messages, rows)
        return form_ok and rules_ok and not self.review.errors

    def without_errors(self) -> None:
        """A form that comes back only to grow by one rule: keep every value and the preview, say nothing wrong yet.
        Django keeps validation's outcome in private attributes, and offers no public way to clear it: hence the
        ignores below."""
        self.is_valid()
        self.form._errors = ErrorDict()  # type: ignore[attr-defined]
        self.rules._non_form_errors = self.rules.error_class()  # type: ignore[attr-defined]
        for row in self.rules.forms:
            row._errors = ErrorDict()  # type: ignore[attr-defined]
        self.rules._errors = [row._errors for row in self.rules.forms]  # type: ignore[attr-defined]
        self.rule_errors = []

    def _review(self, data: dict[str, Any], rules: list[scopes.Rule]) -> flow.Review:
        initial = self.form.initial
        owner = data.get("owner") if self.form.is_bound else initial.get("owner")
        return flow.review(
            self.requester,
            registry=data.get("registry") if self.form.is_bound else self.renews.registry if self.renews else None,
            rules=rules,
            purpose=data.get("purpose") or "",
            client_kind=data.get("client_kind") or "",
            owner=owner or "",
            team=data.get("team") or "",
            password_days=data.get("password_days"),
            retire_on=data.get("retire_on"),
            renews=self.renews,
            key_vault=self._key_vault(data),
        )

    @staticmethod
    def _key_vault(data: dict[str, Any]) -> flow.KeyVaultTarget | None:
        if data.get("delivery") != "key_vault":
            return None
        return flow.KeyVaultTarget(
            vault_url=data.get("key_vault") or "",
            secret_name=data.get("secret_name") or "",
            rotate_every_days=data.get("rotate_every_days"),
            rotate_before_expiry_days=data.get("rotate_before_expiry_days"),
        )

    def _place(self, name: str, messages: list[str], rows: list[RuleForm]) -> None:
        """Put the review's errors beside their fields, unless the field's own type check already spoke."""
        if name.startswith("rules["):
            index, _, field = name[len("rules[") :].partition("].")
            row = rows[int(index)]
            for message in messages:
                row.add_error(field, message)
            return
        if name == "rules":
            self.rule_errors.extend(messages)
            return
        if name in self.form.fields and name not in self.form.errors:
            for message in messages:
                self.form.add_error(name, message)
