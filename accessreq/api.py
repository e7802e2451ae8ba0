"""The JSON API at /api/v1: the same flow as the pages, for pipelines and scripts.

Every endpoint looks its object up through `access` and calls the same domain functions as the pages, and the
domain's refusals map to answers in one place (the exception handlers below): 404 for what the caller may not see,
403 for what they may see but not do, 400 with messages by field for input that can never succeed, 409 for a
transition that no longer applies, 410 for what is gone, 502 when the registry refuses. Filing a request asks the
same review as the page's form, so a bad field gets the page's own message.
"""

# No `from __future__ import annotations` here: ninja reads the endpoints' signatures at run time, and for a
# paginated endpoint it would resolve string annotations in its own module rather than in this one.

import re
from datetime import date, datetime
from typing import Annotated, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from ninja import Field, NinjaAPI, Path, Query, Schema, Status, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.pagination import PaginationBase, paginate
from ninja.parser import Parser
from ninja.security import HttpBearer, SessionAuth
from pydantic import AfterValidator, ConfigDict, StrictInt

from accessreq import access, acr, apikeys, exports, flow, ratelimit, scopes, slots, tokens, usage, whocan
from accessreq.errors import Conflict, Invalid
from accessreq.errors import Gone as GoneError
from accessreq.models import (
    AccessRequest,
    Approval,
    ApprovalRequirement,
    AuditEvent,
    ClientKind,
    PasswordSlot,
    Registry,
    RequestStatus,
    SlotStatus,
    Token,
    TokenStatus,
    TokenUsage,
    UsageAction,
    with_details,
)

# Ids are 64-bit in every database we run on; a larger one would overflow the query instead of finding nothing.
MAX_ID = 2**63 - 1
MAX_PAGE = 100_000
# Rows a list counts past the page asked for, as the pages' lists do: enough to say "more", not every row.
COUNT_AHEAD = 10_000
NO_STORE = "no-store, no-cache, must-revalidate, private, max-age=0"


# Authentication ------------------------------------------------------------------------------------------------


class KeyAuth(HttpBearer):
    """`Authorization: Bearer acrp_...`. When the header is there it decides alone: a bad key is a 401 and never
    falls through to the session, so a pipeline with a stale key is told so rather than acting as someone else."""

    def __call__(self, request: HttpRequest) -> User | None:
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.authenticate(request, raw.strip())

    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        try:
            key = apikeys.authenticate(token)
        except apikeys.KeyRefused as exc:
            raise AuthenticationError(message=str(exc)) from exc
        request.user = key.user
        return key.user


class SignedInSession(SessionAuth):
    """The browser's session, with CSRF checked on unsafe methods. Without a signed-in session there is nothing to
    protect, so the CSRF check is skipped and the caller gets a 401 rather than a CSRF 403."""

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


class _Parser(Parser):
    """An empty body is no options at all: `curl -X POST .../rotate` and a form-encoded POST with no fields both
    mean "the defaults", where JSON's parser would refuse them as unparsable."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        form = request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded")
        if form and not request.POST and not request.FILES:
            return {}
        return super().parse_body(request)


api = NinjaAPI(
    parser=_Parser(),
    title="ACR Access Portal API",
    version="1",
    description=(
        "Ask for, approve and collect Azure Container Registry tokens. Authenticate with a personal API key "
        "(`Authorization: Bearer acrp_...`, made on the API keys page) or, from the browser, with your session."
    ),
    auth=[KeyAuth(), SignedInSession()],
    urls_namespace="api",
    # Swagger's assets ship inside django-ninja and are served as our own static files (with "ninja" installed),
    # and its start-up script is a file, not inline: the page works offline and under a CSP without unsafe-inline.
    docs=Swagger(settings={"persistAuthorization": False}),
    docs_url="/docs",
    openapi_url="/openapi.json",
)


# Errors --------------------------------------------------------------------------------------------------------


class Error(Schema):
    detail: str


class Errors(Schema):
    errors: dict[str, list[str]] = Field(
        description="Messages by field: `purpose`, `rules[0].repository`, `rules` for the rules as a whole."
    )


class Gone(Schema):
    detail: str
    revealed_at: datetime | None


# Pydantic's wording for the commonest cases, replaced by Django's so a field says the same as on the page.
_DJANGO_WORDING = {
    "missing": "This field is required.",
    "int_parsing": "Enter a whole number.",
    "int_type": "Enter a whole number.",
    "int_from_float": "Enter a whole number.",
    "date_parsing": "Enter a valid date.",
    "date_from_datetime_parsing": "Enter a valid date.",
    "date_from_datetime_inexact": "Enter a valid date.",
    "date_type": "Enter a valid date.",
    "extra_forbidden": "Unknown field.",
}
# Fields renamed in the contract: a client sending the old name is told the new one rather than ignored.
_RENAMED = {"password_days": "password_lifetime_days"}


# pydantic names the member of a union that failed ("constrained-int"); the caller named just the field.
_UNION_MEMBER = re.compile(r"^(constrained-)?(int|str|float|bool|date)$")


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "payload", "rules", 0, "repository") -> "rules[0].repository"; ("query", "status") -> "status"
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
        if parts and loc[0] == "body" and parts[0] == "payload":
            parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        elif not _UNION_MEMBER.match(str(part)):
            name += f".{part}" if name else str(part)
    return name or "body"


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    # Ninja answers 422 with pydantic's own list; ours is the page's shape, so clients handle one kind of 400.
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        message = _DJANGO_WORDING.get(error.get("type", ""), error.get("msg") or "Invalid value.")
        name = _field_name(error.get("loc", ()))
        if error.get("type") == "too_long" and name == "rules":
            message = flow.TOO_MANY_RULES
        if error.get("type") == "extra_forbidden" and name in _RENAMED:
            message = f"Unknown field: it is called {_RENAMED[name]}."
        if name in errors and any(_UNION_MEMBER.match(str(part)) for part in error.get("loc", ())):
            errors[name] = ["Give a whole number or a name."]  # one message for the union, not one per member
            continue
        errors.setdefault(name, []).append(message)
    return api.create_response(request, {"errors": errors}, status=400)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    detail = str(exc) if str(exc) != "Unauthorized" else "Authentication required: send a valid API key."
    response = api.create_response(request, {"detail": detail}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:  # a body that is not JSON at all
        return api.create_response(request, {"errors": {"body": [str(exc)]}}, status=400)
    return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Not found."}, status=404)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden."}, status=403)


@api.exception_handler(ratelimit.Limited)
def _limited(request: HttpRequest, exc: ratelimit.Limited) -> HttpResponse:
    response = api.create_response(request, {"detail": str(exc)}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(Invalid)
def _invalid(request: HttpRequest, exc: Invalid) -> HttpResponse:
    errors = {("body" if name == "__all__" else name): messages for name, messages in exc.errors.items()}
    return api.create_response(request, {"errors": errors}, status=400)


@api.exception_handler(Conflict)
def _conflict(request: HttpRequest, exc: Conflict) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=409)


@api.exception_handler(GoneError)
def _gone(request: HttpRequest, exc: GoneError) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc), "revealed_at": exc.revealed_at}, status=410)


@api.exception_handler(acr.AcrError)
def _registry_refused(request: HttpRequest, exc: acr.AcrError) -> HttpResponse:
    return api.create_response(request, {"detail": f"The registry refused: {exc}"}, status=502)


def _responses(ok: dict[int, Any], *codes: int) -> dict[int, Any]:
    errors = {400: Errors, 401: Error, 403: Error, 404: Error, 409: Error, 410: Gone, 429: Error, 502: Error}
    return {**ok, 401: Error, **{code: errors[code] for code in codes}}


# Pagination ----------------------------------------------------------------------------------------------------


def _link(request: HttpRequest, **changes: Any) -> str:
    query = request.GET.copy()
    for name, value in changes.items():
        query[name] = str(value)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


class Pages(PaginationBase):
    """Numbered pages of PAGE_SIZE, with links to the next and previous page: follow `next` until it is null."""

    class Input(Schema):
        page: int = Field(1, ge=1, le=MAX_PAGE)

    class Output(Schema):
        items: list[Any]
        count: int = Field(description="How many there are, counted up to 10,000 past this page (see `more`).")
        more: bool = Field(description="True when there are more than `count`: the count stopped there.")
        next: str | None
        previous: str | None

    def paginate_queryset(
        self, queryset: QuerySet, pagination: Input, request: HttpRequest, **params: Any
    ) -> dict[str, Any]:
        size = settings.PAGE_SIZE
        offset = (pagination.page - 1) * size
        # A COUNT over a LIMITed subquery: a page of 100,000 tokens costs what its offset does, not a full count.
        limit = offset + size + COUNT_AHEAD
        counted = queryset[: limit + 1].count()
        count = min(counted, limit)
        return {
            "items": list(queryset[offset : offset + size]),
            "count": count,
            "more": counted > limit,
            "next": _link(request, page=pagination.page + 1) if offset + size < count or counted > limit else None,
            "previous": _link(request, page=pagination.page - 1) if pagination.page > 1 else None,
        }


class Keyset(PaginationBase):
    """Newest first, `before` an id: stable while rows are added, and no count over a table that only grows."""

    class Input(Schema):
        before: int | None = Field(None, ge=1, le=MAX_ID, description="Only events with a smaller id.")
        limit: int = Field(50, ge=1, le=200)

    class Output(Schema):
        items: list[Any]
        next: str | None
        next_before: int | None = Field(description="The cursor for the next page, or null on the last.")

    def paginate_queryset(
        self, queryset: QuerySet, pagination: Input, request: HttpRequest, **params: Any
    ) -> dict[str, Any]:
        if pagination.before is not None:
            queryset = queryset.filter(id__lt=pagination.before)
        rows = list(queryset.order_by("-id")[: pagination.limit + 1])
        more = len(rows) > pagination.limit
        rows = rows[: pagination.limit]
        cursor = rows[-1].id if more else None
        return {
            "items": rows,
            "next": _link(request, before=cursor) if cursor else None,
            "next_before": cursor,
        }


# Schemas -------------------------------------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("Null characters are not allowed.")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class RegistryOut(Schema):
    id: int
    name: str
    login_server: str
    sku: str
    token_limit: int = Field(description="Tokens the SKU allows in the registry.")
    max_password_days: int
    max_retirement_days: int
    read_approvals: int = Field(description="Approvals each owner group gives for a read-only request.")
    write_approvals: int = Field(description="Approvals for a request with any write, delete or metadata/write.")


class StrictIn(Schema):
    """An input body: a field the schema does not know is a 400 naming it, never silently dropped, so a misspelt
    optional field does not quietly get its default."""

    model_config = ConfigDict(extra="forbid")


class RuleIn(StrictIn):
    repository: Text = Field(max_length=scopes.MAX_REPOSITORY_LENGTH, description="myapp/api, myapp/*, or *.")
    actions: list[Annotated[str, Field(max_length=32, json_schema_extra={"enum": list(scopes.ACTIONS)})]] = Field(
        max_length=len(scopes.ACTIONS)
    )


class DeliveryIn(StrictIn):
    key_vault: Text = Field(max_length=255, description="The vault's URL, one the registry's admins allow.")
    secret_name: Text = Field(max_length=200, description="1 to 127 letters, digits and dashes.")
    rotate_every_days: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = Field(
        None, description="Rotate the password every N days (less than its lifetime)."
    )
    rotate_days_before_expiry: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = Field(
        None, description="Or rotate it N days before it expires; neither: a third of the lifetime, at most 7."
    )


class RequestIn(StrictIn):
    # Strict: JSON true is not the registry 1, nor a lifetime of 1 day.
    registry: Annotated[StrictInt, Field(ge=1, le=MAX_ID)] | Annotated[str, Field(max_length=50)] = Field(
        description="The registry's id or name."
    )
    rules: list[RuleIn] = Field(max_length=flow.MAX_RULES)
    purpose: Text = Field(max_length=flow.MAX_PURPOSE)
    client_kind: str = Field(max_length=16, json_schema_extra={"enum": list(ClientKind.values)})
    team: Text = Field(max_length=flow.MAX_TEAM)
    owner: Text | None = Field(None, max_length=150, description="The accountable person's username; you if left out.")
    password_lifetime_days: Annotated[StrictInt, Field(le=10_000)] = Field(description="Each password's lifetime.")
    retire_on: date
    delivery: DeliveryIn | None = Field(
        None, description="Write the password to a Key Vault secret instead of revealing it once to you."
    )


class Rule(Schema):
    repository: str
    actions: list[str]


class RequirementOut(Schema):
    group: str
    needed: int
    given: int
    repositories: list[str]
    via_admin_group: bool

    @staticmethod
    def resolve_group(obj: ApprovalRequirement) -> str:
        return obj.group.name

    @staticmethod
    def resolve_needed(obj: ApprovalRequirement) -> int:
        return obj.count


class DecisionOut(Schema):
    approver: str
    decision: str
    comment: str
    created_at: datetime

    @staticmethod
    def resolve_approver(obj: Approval) -> str:
        return obj.approver.get_username()


class DeliveryOut(Schema):
    key_vault: str
    secret_name: str
    rotation: str
    secret_id: str | None
    delivered_at: datetime | None
    next_rotation_at: datetime | None


def _delivery_out(obj: AccessRequest | Token) -> dict[str, object] | None:
    delivery = getattr(obj, "key_vault_delivery", None)
    if delivery is None:
        return None
    return {
        "key_vault": delivery.vault_url,
        "secret_name": delivery.secret_name,
        "rotation": delivery.policy,
        "secret_id": delivery.secret_id or None,
        "delivered_at": delivery.delivered_at,
        "next_rotation_at": delivery.next_rotation_at,
    }


class RequestOut(Schema):
    id: int
    status: RequestStatus
    registry: str
    token_name: str
    requester: str
    owner: str
    team: str
    purpose: str
    client_kind: ClientKind
    rules: list[Rule]
    scope_map_actions: list[str]
    password_lifetime_days: int
    retire_on: date
    created_at: datetime
    updated_at: datetime
    decided_at: datetime | None
    approvals_needed: list[RequirementOut] = Field(description="Each owner group's share, and how much is given.")
    decisions: list[DecisionOut]
    token: int | None = Field(description="The token's id once it is provisioned.")
    failure_reason: str | None = Field(description="Why provisioning failed; shown to admins and security only.")
    url: str = Field(description="The request's page.")
    delivery: DeliveryOut | None = Field(description="The Key Vault secret its password goes to; null: revealed once.")

    @staticmethod
    def resolve_registry(obj: AccessRequest) -> str:
        return obj.registry.name

    @staticmethod
    def resolve_delivery(obj: AccessRequest) -> dict[str, object] | None:
        return _delivery_out(obj)

    @staticmethod
    def resolve_password_lifetime_days(obj: AccessRequest) -> int:
        return obj.password_days

    @staticmethod
    def resolve_requester(obj: AccessRequest) -> str:
        return obj.requester.get_username()

    @staticmethod
    def resolve_owner(obj: AccessRequest) -> str:
        return obj.owner.get_username()

    @staticmethod
    def resolve_approvals_needed(obj: AccessRequest) -> list[ApprovalRequirement]:
        return list(obj.requirements.all())

    @staticmethod
    def resolve_decisions(obj: AccessRequest) -> list[Approval]:
        return list(obj.approvals.all())

    @staticmethod
    def resolve_token(obj: AccessRequest) -> int | None:
        token = getattr(obj, "token", None)
        return token.pk if token else None

    @staticmethod
    def resolve_failure_reason(obj: AccessRequest, context: dict[str, Any]) -> str | None:
        return obj.failure_reason if access.sees_failure_reasons(context["request"].user) else None

    @staticmethod
    def resolve_url(obj: AccessRequest, context: dict[str, Any]) -> str:
        return context["request"].build_absolute_uri(obj.get_absolute_url())


class DecisionIn(StrictIn):
    comment: Text = Field("", max_length=2000, description="Required to reject: the requester reads it.")


class Secret(Schema):
    username: str
    password: str
    login_server: str
    expires_at: datetime | None


class PasswordOut(Schema):
    name: str
    status: SlotStatus
    created_at: datetime
    expires_at: datetime | None
    reveal_by: datetime | None
    revealed_at: datetime | None


class CheckOut(Schema):
    repository: str
    action: str
    expected: str = Field(description="allowed or refused: what the approved rules say.")
    result: str = Field(description="allowed or refused: what the registry granted.")

    @staticmethod
    def resolve_expected(obj: dict[str, Any]) -> str:
        return "allowed" if obj["expected"] else "refused"

    @staticmethod
    def resolve_result(obj: dict[str, Any]) -> str:
        return "allowed" if obj["result"] else "refused"


class VerificationOut(Schema):
    checked_at: datetime
    ok: bool
    outdated: bool = Field(False, description="The token's access changed since; its next new password is proven.")
    slot: str
    error: str | None
    checks: list[CheckOut]
class UsageOut(Schema):
    """Pulls, pushes and deletes of one repository, from the registry's logs."""

    repository: str
    action: UsageAction
    last_at: datetime
    count: int


class TokenOut(Schema):
    id: int
    registry: str
    name: str
    status: TokenStatus
    status_reason: str
    request: int | None
    owner: str
    requester: str
    team: str
    purpose: str
    client_kind: ClientKind
    rules: list[Rule]
    retire_on: date
    password_lifetime_days: int
    created_at: datetime
    last_rotated_at: datetime | None
    let_expire: bool
    delete_after: datetime | None
    orphaned_at: datetime | None
    drift_actions: list[str] | None
    passwords: list[PasswordOut]
    verification: VerificationOut | None = Field(
        description="The last proof of a new password at the registry, or null before any."
    )
    delivery: DeliveryOut | None = Field(description="The Key Vault secret its passwords go to; null: revealed once.")
    stored_at: str | None = Field(description="Where the requester says they stored a revealed password.")
    last_used_at: datetime | None
    usage: list[UsageOut]
    never_used_actions: list[str] = Field(
        description="Scope-map actions granted but never exercised since the token was made (content/* only: the "
        "logs show manifests, not metadata)."
    )
    usage_window_days: int = Field(
        description="The window of unused_actions_in_window: `?window_days=` on GET /tokens/{id}, else "
        "LEAST_PRIVILEGE_DAYS."
    )
    unused_actions_in_window: list[str] = Field(
        description="Scope-map actions granted but not exercised within the last usage_window_days days: what a "
        "least-privilege suggestion would drop."
    )

    @staticmethod
    def resolve_registry(obj: Token) -> str:
        return obj.registry.name

    @staticmethod
    def resolve_delivery(obj: Token) -> dict[str, object] | None:
        return _delivery_out(obj)

    @staticmethod
    def resolve_stored_at(obj: Token) -> str | None:
        location = getattr(obj, "storage_location", None)
        return location.location if location is not None else None

    @staticmethod
    def resolve_request(obj: Token) -> int | None:
        return obj.request_id

    @staticmethod
    def resolve_password_lifetime_days(obj: Token) -> int:
        return obj.password_days

    @staticmethod
    def resolve_owner(obj: Token) -> str:
        return obj.owner.get_username()

    @staticmethod
    def resolve_requester(obj: Token) -> str:
        return obj.requester.get_username()

    @staticmethod
    def resolve_passwords(obj: Token) -> list[PasswordSlot]:
        return list(obj.slots.all())

    @staticmethod
    def resolve_usage(obj: Token) -> list[TokenUsage]:
        return list(obj.usage.all())

    @staticmethod
    def resolve_never_used_actions(obj: Token) -> list[str]:
        return usage.never_used_actions(obj, list(obj.usage.all()))

    @staticmethod
    def resolve_usage_window_days(obj: Token) -> int:
        return getattr(obj, "usage_window_days", settings.LEAST_PRIVILEGE_DAYS)

    @staticmethod
    def resolve_unused_actions_in_window(obj: Token) -> list[str]:
        days = getattr(obj, "usage_window_days", settings.LEAST_PRIVILEGE_DAYS)
        return usage.unused_actions_in_window(obj, list(obj.usage.all()), days)


class AuditEventOut(Schema):
    id: int
    created_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    target_repr: str
    details: dict[str, Any]
    source_ip: str | None
    prev_hash: str
    hash: str

    @staticmethod
    def resolve_actor(obj: AuditEvent) -> str:
        return obj.actor_name


def _me(request: HttpRequest) -> User:
    """The caller, whom authentication has made a signed-in user before any endpoint runs."""
    user = request.user
    assert isinstance(user, User)
    return user


# Lookups -------------------------------------------------------------------------------------------------------

Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def _requests(qs: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    # The pages' own query shape, plus the token: a page of requests costs a fixed number of queries.
    return with_details(qs).select_related("token", "key_vault_delivery")


def _get_request_for_user(request: HttpRequest, pk: int) -> AccessRequest:
    return access.get_request_for_user(_me(request), pk, prepare=_requests)


def _reload(pk: int) -> AccessRequest:
    return _requests(AccessRequest.objects.filter(pk=pk)).get()


def _tokens(qs: QuerySet[Token]) -> QuerySet[Token]:
    return qs.select_related(
        "registry", "owner", "requester", "key_vault_delivery", "storage_location"
    ).prefetch_related("slots", "usage")


def _get_token_for_user(request: HttpRequest, pk: int) -> Token:
    return access.get_token_for_user(_me(request), pk, prepare=_tokens)


# Registries ----------------------------------------------------------------------------------------------------


@api.get("/registries", response=_responses({200: list[RegistryOut]}), tags=["registries"])
def list_registries(request: HttpRequest) -> QuerySet[Registry]:
    """The registries you can ask for access to, with their policy limits. A short list, so not paginated."""
    return Registry.objects.filter(active=True).order_by("name")


# Requests ------------------------------------------------------------------------------------------------------


@api.post("/requests", response=_responses({201: RequestOut}, 400, 429), tags=["requests"])
def file_request(request: HttpRequest, payload: RequestIn, response: HttpResponse) -> Status:
    """File a request. It waits for the approvals listed in `approvals_needed`; nothing is saved on a 400."""
    ratelimit.check("request", request)
    try:
        created = _submit(request, payload)
    except Invalid as exc:
        # The domain names fields as the page's form does; the contract names the lifetime differently.
        raise Invalid({_API_FIELD.get(name, name): messages for name, messages in exc.errors.items()}) from exc
    response["Location"] = request.build_absolute_uri(f"{request.path.rstrip('/')}/{created.pk}")
    return Status(201, _reload(created.pk))


_API_FIELD = {
    "password_days": "password_lifetime_days",
    "key_vault": "delivery.key_vault",
    "secret_name": "delivery.secret_name",
    "rotate_every_days": "delivery.rotate_every_days",
    "rotate_before_expiry_days": "delivery.rotate_days_before_expiry",
}


def _submit(request: HttpRequest, payload: RequestIn) -> AccessRequest:
    return flow.submit(
        _me(request),
        registry=flow.find_registry(payload.registry),
        rules=[scopes.Rule.of(rule.repository.strip(), rule.actions) for rule in payload.rules],
        purpose=payload.purpose,
        client_kind=payload.client_kind,
        owner=payload.owner if payload.owner is not None else _me(request).get_username(),
        team=payload.team,
        password_days=payload.password_lifetime_days,
        retire_on=payload.retire_on,
        key_vault=_key_vault(payload.delivery),
        request=request,
    )


def _key_vault(delivery: DeliveryIn | None) -> flow.KeyVaultTarget | None:
    if delivery is None:
        return None
    return flow.KeyVaultTarget(
        vault_url=delivery.key_vault,
        secret_name=delivery.secret_name,
        rotate_every_days=delivery.rotate_every_days,
        rotate_before_expiry_days=delivery.rotate_days_before_expiry,
    )


@api.get("/requests", response=_responses({200: list[RequestOut]}, 400), tags=["requests"])
@paginate(Pages)
def list_requests(request: HttpRequest, status: RequestStatus | None = None) -> QuerySet[AccessRequest]:
    """Your requests, as requester or as owner, newest first."""
    qs = access.my_requests(_me(request))
    if status is not None:
        qs = qs.filter(status=status)
    return _requests(qs).order_by("-created_at", "-id")


@api.get("/requests/{pk}", response=_responses({200: RequestOut}, 400, 404), tags=["requests"])
def get_request(request: HttpRequest, pk: Id) -> AccessRequest:
    """One request you may see: yours, one you own, one routed to your groups, or any for security."""
    return _get_request_for_user(request, pk)


@api.post("/requests/{pk}/cancel", response=_responses({200: RequestOut}, 400, 403, 404, 409), tags=["requests"])
def cancel_request(request: HttpRequest, pk: Id) -> AccessRequest:
    """Withdraw your request while it still waits for approval."""
    access_request = _get_request_for_user(request, pk)
    flow.cancel(access_request, _me(request), request)
    return _reload(pk)


@api.post(
    "/requests/{pk}/reveal", response=_responses({200: Secret}, 400, 403, 404, 410, 429), tags=["requests"]
)
def reveal_password(request: HttpRequest, pk: Id, response: HttpResponse) -> Status:
    """The token's password, exactly once, to the requester. Every later call is a 410 saying when it was revealed."""
    response["Cache-Control"] = NO_STORE
    response["Pragma"] = "no-cache"
    return _secret(access.first_slot_for_requester(_me(request), pk), request)


def _secret(slot: PasswordSlot, request: HttpRequest) -> Status:
    ratelimit.check("reveal", request)
    revealed = slots.reveal(slot, _me(request), request)
    secret = {
        "username": revealed.username,
        "password": revealed.password,
        "login_server": revealed.login_server,
        "expires_at": revealed.expires_at,
    }
    return Status(200, secret)


# Approvals -----------------------------------------------------------------------------------------------------


@api.get("/approvals", response=_responses({200: list[RequestOut]}, 400, 403), tags=["approvals"])
@paginate(Pages)
def list_approvals(request: HttpRequest) -> QuerySet[AccessRequest]:
    """Requests waiting for your approval, oldest first."""
    access.require(access.roles_for(_me(request)).is_approver, "Only approvers have a queue.")
    return _requests(access.approval_queue_for(_me(request))).order_by("created_at", "id")


def _decide(request: HttpRequest, pk: int, payload: DecisionIn | None, decide: Any) -> Status:
    access_request = _get_request_for_user(request, pk)
    comment = payload.comment if payload is not None else ""
    decide(access_request, _me(request), comment, request)
    return Status(200, _reload(pk))


@api.post(
    "/requests/{pk}/approve", response=_responses({200: RequestOut}, 400, 403, 404, 409), tags=["approvals"]
)
def approve_request(request: HttpRequest, pk: Id, payload: DecisionIn | None = None) -> Status:
    """Approve for your owner groups. The request moves on when every group has given its share."""
    return _decide(request, pk, payload, flow.approve)


@api.post(
    "/requests/{pk}/reject", response=_responses({200: RequestOut}, 400, 403, 404, 409), tags=["approvals"]
)
def reject_request(request: HttpRequest, pk: Id, payload: DecisionIn | None = None) -> Status:
    """Reject, with a comment saying why; that ends the request."""
    return _decide(request, pk, payload, flow.reject)


# Tokens --------------------------------------------------------------------------------------------------------


@api.get("/tokens", response=_responses({200: list[TokenOut]}, 400), tags=["tokens"])
@paginate(Pages)
def list_tokens(request: HttpRequest, status: TokenStatus | None = None) -> QuerySet[Token]:
    """Tokens you own or asked for; every token for security."""
    qs = _tokens(access.tokens_for(_me(request)))
    if status is not None:
        qs = qs.filter(status=status)
    # The (registry, name) unique index gives this order without sorting every token.
    return qs.order_by("registry_id", "name")


@api.get("/tokens/{pk}", response=_responses({200: TokenOut}, 400, 404), tags=["tokens"])
def get_token(
    request: HttpRequest,
    pk: Id,
    window_days: Annotated[
        int | None,
        Query(ge=1, le=3650, description="Days for unused_actions_in_window; LEAST_PRIVILEGE_DAYS when absent."),
    ] = None,
) -> Token:
    token = _get_token_for_user(request, pk)
    if window_days is not None:
        token.usage_window_days = window_days  # type: ignore[attr-defined]  # read by TokenOut's resolvers
    return token


class ReachOut(Schema):
    repository: str = Field(description="A repository, a prefix wildcard (`myapp/*`) or `*`.")
    actions: list[str] = Field(description="Scope-map actions, e.g. `content/read`, in a fixed order.")
    via: list[str] = Field(description="The scope-map action strings that grant them.")


@api.get("/tokens/{pk}/access", response=_responses({200: list[ReachOut]}, 400, 404), tags=["tokens"])
def token_access(request: HttpRequest, pk: Id) -> list[dict[str, Any]]:
    """Everything the token reaches in its registry, widest first, as the registry holds its scope map (drift
    included); empty once the token is deleted there. For whoever may see the token."""
    return [reach.as_json() for reach in whocan.reach_now(_get_token_for_user(request, pk))]


class ReasonIn(StrictIn):
    reason: Annotated[str, AfterValidator(_no_nul)] = Field("", max_length=500)


def _lifecycle(request: HttpRequest, pk: int, action: Any, status: int = 200) -> Status:
    """Run one token action on a token the caller may see, and answer with the token as it is now."""
    action(_get_token_for_user(request, pk))
    return Status(status, _get_token_for_user(request, pk))


LIFECYCLE_RESPONSES = _responses({200: TokenOut}, 400, 403, 404, 409, 502)


class RotateIn(StrictIn):
    # No bounds here: the registry's policy sets the upper one, and its refusal names it.
    password_lifetime_days: StrictInt | None = Field(
        None,
        description="The new password's lifetime in days, from 1 to the registry's maximum; without it, the "
        "token's own lifetime.",
    )


@api.post("/tokens/{pk}/rotate", response={**LIFECYCLE_RESPONSES, 202: TokenOut}, tags=["tokens"])
def rotate_token(request: HttpRequest, pk: Id, payload: RotateIn | None = None) -> Status:
    """Generate the free password slot (202: it is being generated). Reveal it once with
    /tokens/{id}/passwords/{slot}/reveal; the old password works until /confirm-switch or the grace period ends.
    An optional `password_lifetime_days` chooses the new password's lifetime within the registry's policy."""
    days = payload.password_lifetime_days if payload is not None else None
    try:
        return _lifecycle(request, pk, lambda t: tokens.rotate(t, _me(request), request, password_days=days), 202)
    except Invalid as exc:
        raise Invalid({_API_FIELD.get(name, name): messages for name, messages in exc.errors.items()}) from exc


@api.post("/tokens/{pk}/confirm-switch", response=LIFECYCLE_RESPONSES, tags=["tokens"])
def confirm_switch(request: HttpRequest, pk: Id) -> Status:
    """Your clients use the new password: delete the old slot now."""
    return _lifecycle(request, pk, lambda t: tokens.confirm_switch(t, _me(request), request))


@api.post("/tokens/{pk}/disable", response=LIFECYCLE_RESPONSES, tags=["tokens"])
def disable_token(request: HttpRequest, pk: Id, payload: ReasonIn) -> Status:
    """Disable at once, saying why: the owner, an approver of its repositories, or security."""
    return _lifecycle(request, pk, lambda t: tokens.disable(t, _me(request), payload.reason, request))


@api.post("/tokens/{pk}/enable", response=LIFECYCLE_RESPONSES, tags=["tokens"])
def enable_token(request: HttpRequest, pk: Id) -> Status:
    return _lifecycle(request, pk, lambda t: tokens.enable(t, _me(request), request))


@api.post("/tokens/{pk}/retire", response=LIFECYCLE_RESPONSES, tags=["tokens"])
def retire_token(request: HttpRequest, pk: Id, payload: ReasonIn | None = None) -> Status:
    """Disable now; the token and its scope map are deleted when the retirement grace period ends."""
    reason = (payload.reason if payload else "").strip() or "retired through the API"
    return _lifecycle(request, pk, lambda t: tokens.retire(t, _me(request), reason, request))


@api.post(
    "/tokens/{pk}/passwords/{slot}/reveal",
    response=_responses({200: Secret}, 400, 403, 404, 410, 429),
    tags=["tokens"],
)
def reveal_token_password(request: HttpRequest, pk: Id, slot: acr.Slot, response: HttpResponse) -> Status:
    """A rotated password, exactly once, to whoever rotated. Later calls are a 410 saying when it was revealed."""
    response["Cache-Control"] = NO_STORE
    response["Pragma"] = "no-cache"
    return _secret(access.slot_for_revealer(_me(request), pk, slot), request)


# Audit ---------------------------------------------------------------------------------------------------------


@api.get("/audit", response=_responses({200: list[AuditEventOut]}, 400, 403), tags=["audit"])
@paginate(Keyset)
def list_audit(
    request: HttpRequest,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
) -> QuerySet[AuditEvent]:
    """The audit trail, newest first, for security staff. `action` filters by prefix, e.g. `password.`."""
    access.require(access.roles_for(_me(request)).is_security, "The audit log is for security staff.")
    qs = AuditEvent.objects.all()
    if action:
        qs = qs.filter(action__startswith=action)
    return qs



# Security's tools ----------------------------------------------------------------------------------------------


class AccessOut(Schema):
    token: str
    owner: str | None = Field(description="The owner's username; null for a token the portal did not make.")
    status: str
    actions: list[str] = Field(description="Among `pull`, `push`, `delete`.")
    via: list[str] = Field(
        description="The scope-map actions that grant them, e.g. `repositories/myapp/*/content/write`."
    )
    managed: bool
    team: str
    scope_map: str
    expires_at: datetime | None
    retire_on: date | None
    last_used_at: datetime | None


@api.get(
    "/registries/{name}/access", response=_responses({200: list[AccessOut]}, 400, 403, 404), tags=["security"]
)
def registry_access(
    request: HttpRequest,
    name: Annotated[str, Path(max_length=50)],
    repository: Annotated[str, Query(max_length=256)],
) -> list[dict[str, Any]]:
    """Every token that can pull, push or delete in `repository` (which need not exist yet), for security staff."""
    registry = access.registry_named_for_security(_me(request), name)
    return [grant.as_json() for grant in whocan.who_can(registry, repository)]


ExportFormat = Annotated[str, Query(pattern=r"^(csv|json)$", description="`csv` or `json` (a JSON array).")]
EXPORTED = {
    "responses": {
        "200": {
            "description": "A streamed attachment: CSV with a header row, or a JSON array of objects.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            },
        }
    }
}


@api.get("/export/tokens", response=_responses({}, 400, 403), tags=["security"], openapi_extra=EXPORTED)
def export_tokens(request: HttpRequest, format: ExportFormat = "csv") -> HttpResponseBase:  # noqa: A002
    """The token inventory as a streamed CSV or JSON attachment, for security staff. No secret is in it."""
    access.require_security(_me(request))
    return exports.export_tokens(format)


@api.get("/export/audit", response=_responses({}, 400, 403), tags=["security"], openapi_extra=EXPORTED)
def export_audit(
    request: HttpRequest,
    format: ExportFormat = "csv",  # noqa: A002
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
) -> HttpResponseBase:
    """The audit log between `since` and `until` (ISO dates or date-times, either end open), oldest first,
    optionally by action prefix, streamed as CSV or JSON, for security staff."""
    access.require_security(_me(request))
    return exports.export_audit(format, since=since, until=until, action=action)
