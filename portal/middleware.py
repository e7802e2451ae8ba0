"""Cross-cutting HTTP concerns: a request id for every log line, the Content-Security-Policy header, refusing
request bodies and text that could never be valid, and keeping signed-in pages out of caches."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.wsgi import get_bytes_from_wsgi
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.template.loader import render_to_string
from django.utils.cache import add_never_cache_headers

request_id: ContextVar[str] = ContextVar("request_id", default="-")
# A proxy's id is kept when it looks like one, so a request can be followed from the load balancer to the log.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        token = request_id.set(incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex)
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id.get()
            return response
        finally:
            request_id.reset(token)


class ContentSecurityPolicyMiddleware:
    """Everything from this origin only: no inline script or style, no eval, no framing."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


API_PREFIX = "/api/"
BODY_METHODS = {"POST", "PUT", "PATCH"}
NOT_UTF8 = "Enter text that is valid UTF-8: this holds bytes or characters (such as unpaired surrogates) that are not."
# Django's own wording (ProhibitNullCharactersValidator), so a field says the same here as on the page.
NULL_CHARACTER = "Null characters are not allowed."


class Refused(Exception):
    """What the request guard answers instead of passing the request on."""

    def __init__(self, status: int, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or {}


class RequestGuardMiddleware:
    """Refuses, before any view or parser sees it, input that no view could ever accept.

    - A body over MAX_REQUEST_BODY_BYTES is a 413: by its Content-Length when there is one, else by the bytes read.
    - A body sent to the API in anything but JSON is a 415.
    - Text that cannot be stored (invalid UTF-8, unpaired surrogates such as a JSON "\\ud800" escape, NUL) in the
      query string, a form body or an API JSON body is a 400 naming the field. Databases refuse such text only
      when it is written, as a 500 from deep inside the view.

    API answers use the API's shapes ({"detail": ...}, {"errors": {field: [...]}}); pages get a short HTML page.
    It does no schema work: a value of the wrong type is the API's and the forms' business.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            self._guard(request)
        except Refused as refusal:
            return _refusal_response(request, refusal)
        return self.get_response(request)

    def _guard(self, request: HttpRequest) -> None:
        limit = settings.MAX_REQUEST_BODY_BYTES
        length = _content_length(request)
        if length > limit:
            raise Refused(413, f"The request body is larger than {limit} bytes.")
        _check_text_fields(_form_pairs(_query_bytes(request)))
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if length == 0 and not chunked:
            return
        try:
            # Read once here, at most Django's own limit plus one byte; views, CSRF and the API reuse the copy.
            body = request.body
        except RequestDataTooBig as exc:
            raise Refused(413, f"The request body is larger than {limit} bytes.") from exc
        if len(body) > limit:
            raise Refused(413, f"The request body is larger than {limit} bytes.")
        media_type = request.content_type.lower() if request.content_type else ""
        is_api = request.path_info.startswith(API_PREFIX)
        is_json = media_type == "application/json"
        if is_api and request.method in BODY_METHODS and not is_json and not _empty_form(request, media_type):
            raise Refused(415, "Send the request body as JSON, with Content-Type: application/json.")
        if is_api and is_json:
            _check_json(body)
        elif media_type == "application/x-www-form-urlencoded" and _is_utf8_charset(request):
            _check_text_fields(_form_pairs(body))


def _empty_form(request: HttpRequest, media_type: str) -> bool:
    """A form with no fields at all, as many HTTP clients send for a POST given no data: nothing to misread."""
    if media_type not in {"multipart/form-data", "application/x-www-form-urlencoded"}:
        return False
    try:
        return not request.POST and not request.FILES
    except MultiPartParserError:
        return False


def _content_length(request: HttpRequest) -> int:
    raw = request.META.get("CONTENT_LENGTH") or "0"
    if not raw.isascii() or not raw.isdigit():
        raise Refused(400, "The Content-Length header is not a number.")
    return int(raw)


def _query_bytes(request: HttpRequest) -> bytes:
    # Under WSGI, Django has already turned invalid bytes in the query string into U+FFFD; the raw bytes are still
    # in the environ. Under ASGI, Django itself answers 400 to a query string that is not UTF-8.
    environ = getattr(request, "environ", None)
    if environ is not None and "QUERY_STRING" in environ:
        return get_bytes_from_wsgi(environ, "QUERY_STRING", "")
    return request.META.get("QUERY_STRING", "").encode()


def _is_utf8_charset(request: HttpRequest) -> bool:
    charset = request.content_params.get("charset", "utf-8") if request.content_params else "utf-8"
    return charset.lower().replace("_", "-") in {"utf-8", "utf8"}


def _form_pairs(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """Field names and raw values of an application/x-www-form-urlencoded string, percent-decoded, not yet text."""
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        name_bytes = unquote_to_bytes(name.replace(b"+", b" "))
        yield name_bytes.decode("utf-8", "replace"), name_bytes + b"=" + unquote_to_bytes(value.replace(b"+", b" "))


def _check_text_fields(pairs: Iterable[tuple[str, bytes]]) -> None:
    errors: dict[str, list[str]] = {}
    for name, raw in pairs:
        try:
            text = raw.decode("utf-8")  # strict: also refuses UTF-8-encoded surrogates (ED A0 80)
        except UnicodeDecodeError:
            errors.setdefault(name, [NOT_UTF8])
            continue
        if "\x00" in text:
            errors.setdefault(name, [NULL_CHARACTER])
    if errors:
        raise Refused(400, "The request holds text that cannot be stored.", errors)


def _check_json(body: bytes) -> None:
    try:
        text = body.decode("utf-8")  # JSON on the wire is UTF-8 (RFC 8259)
    except UnicodeDecodeError as exc:
        raise Refused(400, "The request body is not UTF-8.", {"body": [NOT_UTF8]}) from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return  # not JSON at all: the API answers that itself, in its own words
    except RecursionError as exc:  # the API's own parser would fail the same way, as a 500
        raise Refused(400, "The request body is nested too deeply.", {"body": ["Nested too deeply."]}) from exc
    errors: dict[str, list[str]] = {}
    for field, value in _strings(document):
        if "\x00" in value:
            errors.setdefault(field, [NULL_CHARACTER])
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            errors.setdefault(field, [NOT_UTF8])
    if errors:
        raise Refused(400, "The request holds text that cannot be stored.", errors)


def _strings(document: Any) -> Iterator[tuple[str, str]]:
    """Every string in a JSON document, keys included, with its field named as the API names it: rules[0].actions."""
    # A stack rather than recursion: the document may be as deep as json.loads allows.
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path or "body", value
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else key
                yield child, key
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))


def _refusal_response(request: HttpRequest, refusal: Refused) -> HttpResponse:
    if request.path_info.startswith(API_PREFIX):
        if refusal.status == 400 and refusal.errors:
            return JsonResponse({"errors": refusal.errors}, status=400)
        return JsonResponse({"detail": refusal.detail}, status=refusal.status)
    context = {"status": refusal.status, "detail": refusal.detail, "errors": refusal.errors}
    # Rendered without the request: the page comes before sessions and sign-in, so it shows neither.
    html = render_to_string("request_refused.html", context)
    return HttpResponse(html, status=refusal.status)


class NoStoreWhenSignedInMiddleware:
    """Whatever a signed-in user sees (a page, a fragment, an API answer) may hold their tokens or the names of
    others' repositories: no browser or proxy may keep a copy. A view that set its own Cache-Control keeps it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # Read after the view: an API key signs its user in only inside the API.
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
