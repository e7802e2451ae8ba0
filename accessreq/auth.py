"""Signing in: Microsoft Entra ID through OpenID Connect, and local passwords behind a lockout.

Entra decides who someone is and which of their groups matter here; the portal's roles then follow from Django
groups as everywhere else (accessreq.access). Local accounts remain for the demo and for break-glass admins.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import Group, User
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.middleware import SessionRefresh as OIDCSessionRefresh
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accessreq import audit

logger = logging.getLogger(__name__)

# Django's User.first_name and last_name.
NAME_LENGTH = 150


def sso_enabled() -> bool:
    return bool(settings.OIDC_RP_CLIENT_ID)


def username_from_claims(claims: dict[str, Any]) -> str:
    # preferred_username is the UPN people know themselves by; oid, stable and never reused, when there is none.
    return str(claims.get("preferred_username") or claims.get("oid") or "").strip().lower()


class EntraIDBackend(OIDCAuthenticationBackend):
    """Creates and updates users from a verified Entra ID token and mirrors the mapped groups."""

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        # Only the callback view passes a nonce: a password form posted with ?code=&state= must not reach Entra.
        if request is None or not sso_enabled() or "nonce" not in kwargs:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except SuspiciousOperation as exc:
            logger.warning("Sign-in with Microsoft refused: %s", exc)
        except (requests.RequestException, jwt.PyJWTError, KeyError, ValueError):
            # The provider answered with an error (a refused code or PKCE verifier), too slowly, or with nonsense.
            logger.warning("Sign-in with Microsoft failed", exc_info=True)
        return None

    def _verify_jws(self, payload: str, key: Any) -> dict[str, Any]:
        # The library checks the signature alone; the audience and issuer are what tie a token to this portal and
        # this tenant, since any Entra tenant can sign a valid token for an app of its own.
        try:
            algorithm = jwt.get_unverified_header(payload).get("alg")
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"ID token unreadable: {exc}") from exc
        if algorithm != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"ID token signed with {algorithm!r}, not {self.OIDC_RP_SIGN_ALGO}")
        try:
            return jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_OP_ISSUER,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=60,
            )
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from exc

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        # The verified ID token has the groups and oid; Entra's userinfo endpoint has neither.
        return payload

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        if "groups" in (claims.get("_claim_names") or {}):
            # Past 200 groups Entra leaves the claim out and points at Graph instead. Syncing from an absent claim
            # would strip every mapped group, so refuse and say how to fix it.
            logger.warning(
                "Sign-in with Microsoft refused for %s: too many groups for the token; emit only the groups "
                "assigned to the application",
                username_from_claims(claims),
            )
            return False
        return bool(username_from_claims(claims))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        # By username, not by e-mail as the library does: Entra does not verify the e-mail claim.
        return self.UserModel.objects.filter(username__iexact=username_from_claims(claims))

    def create_user(self, claims: dict[str, Any]) -> User:
        with transaction.atomic():
            user = self.UserModel(username=username_from_claims(claims))
            user.set_unusable_password()
            user.save()
            audit.record("user.created", actor=None, target=user, details={"source": "Microsoft Entra ID"})
            return self.update_user(user, claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        if not self.user_can_authenticate(user):
            # Raised rather than returned: the library logs it and signs no one in.
            raise SuspiciousOperation(f"{user.username} is inactive")
        with transaction.atomic():
            self._update_profile(user, claims)
            self._sync_groups(user, set(claims.get("groups") or []))
        return user

    def _update_profile(self, user: User, claims: dict[str, Any]) -> None:
        given, family = claims.get("given_name"), claims.get("family_name")
        if given or family:
            user.first_name, user.last_name = (given or "")[:NAME_LENGTH], (family or "")[:NAME_LENGTH]
        elif claims.get("name"):
            user.first_name, user.last_name = claims["name"][:NAME_LENGTH], ""
        if claims.get("email"):
            user.email = claims["email"]
        is_admin = bool(set(claims.get("groups") or []) & set(settings.OIDC_ADMIN_GROUPS))
        changed = user.is_superuser != is_admin or user.is_staff != is_admin
        user.is_superuser = user.is_staff = is_admin
        user.save()
        if changed:
            logger.info("%s %s admin through Entra groups", user.username, "becomes" if is_admin else "is no longer")
            action = "user.admin_granted" if is_admin else "user.admin_removed"
            audit.record(action, actor=None, target=user, details={"source": "Microsoft Entra ID groups"})

    def _sync_groups(self, user: User, entra_groups: set[str]) -> None:
        group_map: dict[str, str] = settings.OIDC_GROUP_MAP
        # Several Entra groups may map to one portal group: membership of any of them is enough.
        wanted = {name for entra_id, name in group_map.items() if entra_id in entra_groups}
        for name in wanted:
            Group.objects.get_or_create(name=name)
        mapped = set(group_map.values())
        current = set(user.groups.filter(name__in=mapped).values_list("name", flat=True))
        added, removed = sorted(wanted - current), sorted(current - wanted)
        if removed:
            user.groups.remove(*Group.objects.filter(name__in=removed))
        if added:
            user.groups.add(*Group.objects.filter(name__in=added))
        if added or removed:
            # Group membership decides who approves and who is security: a change of role, so it is audited.
            audit.record(
                "user.groups_synced",
                actor=None,
                target=user,
                details={"added": added, "removed": removed, "source": "Microsoft Entra ID groups"},
            )

    def get_user(self, user_id: int) -> User | None:
        # Each request reloads the user through the backend that signed them in; the library's version would keep
        # a deactivated user signed in until the next refresh.
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None


class SignInView(OIDCAuthenticationRequestView):
    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            raise Http404("Single sign-on is not configured.")
        return super().get(request)


class CallbackView(OIDCAuthenticationCallbackView):
    @property
    def failure_url(self) -> str:
        return resolve_url(settings.LOGIN_URL)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            raise Http404("Single sign-on is not configured.")
        return super().get(request)

    def login_failure(self) -> HttpResponse:
        # A failed renewal must end the session it was renewing, whatever the reason.
        if self.request.user.is_authenticated:
            auth.logout(self.request)
        messages.error(self.request, "Sign-in with Microsoft did not succeed. Try again, or ask an administrator.")
        return HttpResponseRedirect(self.failure_url)


class SessionRefresh(OIDCSessionRefresh):
    """Sends someone signed in with Entra back to it every OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        response = super().process_request(request)
        if response is None or request.headers.get("HX-Request") != "true" or not response.has_header("Location"):
            return response
        # htmx would follow the redirect inside its XHR, where the cross-origin hop to Entra fails silently: have
        # the whole page go instead, and come back to the page rather than to the fragment it was polling.
        current = request.headers.get("HX-Current-URL", "")
        if url_has_allowed_host_and_scheme(current, allowed_hosts={request.get_host()}, require_https=False):
            parts = urlsplit(current)
            request.session["oidc_login_next"] = parts.path + (f"?{parts.query}" if parts.query else "")
        return HttpResponseClientRedirect(response["Location"])


class LocalLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check, for password sign-ins made over HTTP only.

    Without a request there is no address to lock and no one attacking: that is code calling authenticate()
    directly, like the test client's login(), which axes would otherwise refuse outright.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None or password is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def is_not_a_password_attempt(request: HttpRequest, credentials: dict[str, Any] | None = None) -> bool:
    return "password" not in (credentials or {})


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """The sign-in page again, saying why and for how long, answered with 429 and Retry-After."""
    cool_off_seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "locked_out": True,
        "cool_off_minutes": max(1, cool_off_seconds // 60),
        "next": request.POST.get("next") or request.GET.get("next", ""),
        "sso_enabled": sso_enabled(),
    }
    response = render(request, "registration/login.html", context, status=settings.AXES_HTTP_RESPONSE_CODE)
    response["Retry-After"] = str(cool_off_seconds)
    return response
