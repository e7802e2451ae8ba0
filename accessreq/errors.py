"""The domain's one vocabulary of refusals. Domain functions raise these; each surface has one mapper.

| error      | pages                           | API  |
|------------|---------------------------------|------|
| Forbidden  | 403 page                        | 403  |
| Invalid    | the message beside its field    | 400 `{"errors": {field: [...]}}` |
| Conflict   | a message; the page shows as is | 409  |
| Gone       | a page saying why               | 410  |

A bare `ValueError` or `KeyError` is a programming error and stays a 500: nothing catches it broadly.
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import PermissionDenied

# The key for an error about the whole input rather than one field, as Django's forms use it.
WHOLE = "__all__"


class Forbidden(PermissionDenied):
    """The user may see the object but not do this to it. A PermissionDenied, so Django answers 403 itself."""


class DomainError(Exception):
    """A refusal whose message is written for the person who asked."""


class Invalid(DomainError):
    """The input can never succeed as given. Carries messages by field name (`purpose`, `rules[0].repository`)."""

    def __init__(self, errors: dict[str, list[str]] | str, field: str = WHOLE) -> None:
        self.errors = {field: [errors]} if isinstance(errors, str) else errors
        super().__init__(" ".join(message for messages in self.errors.values() for message in messages))


class Conflict(DomainError):
    """The object moved on: it is no longer in a state where this applies (a second click, a race, a retry)."""


class Gone(DomainError):
    """What was asked for existed once and cannot be had again, like a password already revealed."""

    def __init__(self, message: str, revealed_at: datetime | None = None) -> None:
        super().__init__(message)
        self.revealed_at = revealed_at
