"""The registry's domain errors: what went wrong, about which record, and what to do.

They are the platform's API errors (:mod:`xietong.http_errors`), so the registry API
answers them as every API of the platform does, ``{"error": code, "message": ...,
"field": ...}`` with the error's HTTP status, and the CLI prints the message. ``field``
names the request field at fault, where there is one.
"""

from __future__ import annotations

from xietong.http_errors import (
    ApiError,
    ForbiddenError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)

#: Base of the registry's domain errors (what the CLI catches around an operation).
RegistryError = ApiError


class ConflictError(ApiError):
    """The request contradicts what is stored: a duplicate code, an open subscription."""

    status = 409
    code = "conflict"


class InvalidTransitionError(ConflictError):
    """A subscription cannot go from its state by the attempted action."""

    code = "invalid_transition"


__all__ = [
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "InvalidTransitionError",
    "NotAuthenticatedError",
    "NotFoundError",
    "RegistryError",
]
