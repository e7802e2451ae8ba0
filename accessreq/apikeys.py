"""Personal keys for the JSON API: made, checked and revoked here, and nowhere else.

A key looks like `acrp_<prefix>_<secret>`. The prefix finds the row and lets its owner tell keys apart; only a
SHA-256 of the whole key is stored. The secret has 256 bits of entropy, so a plain hash is enough: a slow password
hash would only slow down every API call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django import forms
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from accessreq import audit
from accessreq.models import ApiKey

SCHEME = "acrp"
DEFAULT_DAYS = 90
MAX_DAYS = 365
# Writing last_used_at on every call would turn each read into a write; a minute is precise enough to see use.
TOUCH_INTERVAL = timedelta(minutes=1)
# Compared against when no row has the prefix, so an unknown prefix costs the same as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class KeyRefused(Exception):
    """The key is malformed, unknown, expired, revoked, or its user is inactive (HTTP 401)."""


class NewKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses this key, e.g. the payments pipeline.")
    days = forms.IntegerField(
        label="Valid for (days)",
        min_value=1,
        max_value=MAX_DAYS,
        initial=DEFAULT_DAYS,
        help_text=f"At most {MAX_DAYS}.",
    )

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Give the key a name.")
        return name


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create(
    user: User,
    name: str,
    days: int = DEFAULT_DAYS,
    *,
    actor: User | None = None,
    request: HttpRequest | None = None,
) -> tuple[ApiKey, str]:
    """Make a key and return it with its only plaintext copy. `actor` is who made it, when not the user."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"A key is valid for 1 to {MAX_DAYS} days.")
    prefix = secrets.token_hex(6)
    raw = f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    now = timezone.now()
    with transaction.atomic():
        key = ApiKey.objects.create(
            user=user,
            name=name,
            prefix=prefix,
            key_hash=_digest(raw),
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        audit.record(
            "apikey.created",
            actor=actor if actor is not None else user,
            target=key,
            details={"user": user.get_username(), "name": name, "prefix": prefix, "expires_at": key.expires_at},
            request=request,
        )
    return key, raw


def revoke(key: ApiKey, user: User, request: HttpRequest | None) -> bool:
    """Revoke a key; False when it was already revoked. The caller has checked that it is the user's own."""
    with transaction.atomic():
        moved = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if moved != 1:
            return False
        audit.record(
            "apikey.revoked",
            actor=user,
            target=key,
            details={"user": key.user.get_username(), "name": key.name, "prefix": key.prefix},
            request=request,
        )
    return True


def authenticate(raw: str) -> ApiKey:
    """The usable key for this plaintext, its user loaded, or KeyRefused."""
    scheme, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or not prefix or not secret or len(prefix) > 16 or not prefix.isalnum():
        raise KeyRefused("Malformed API key.")
    key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    matches = hmac.compare_digest(key.key_hash if key else _DUMMY_HASH, _digest(raw))
    if key is None or not matches:
        raise KeyRefused("Invalid API key.")
    if key.revoked_at is not None:
        raise KeyRefused("This API key has been revoked.")
    if key.expires_at <= timezone.now():
        raise KeyRefused("This API key has expired.")
    if not key.user.is_active:
        raise KeyRefused("This API key's user is inactive.")
    _touch(key)
    return key


def _touch(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < TOUCH_INTERVAL:
        return
    # Conditional, so parallel calls from one pipeline write once rather than each.
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOUCH_INTERVAL)
    ).update(last_used_at=now)
    key.last_used_at = now
