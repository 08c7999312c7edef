"""The registry's domain errors: what went wrong, about which record, and what to do.

Each error has a stable machine-readable ``code`` and the HTTP status the API answers
with; the API returns ``{"error": code, "message": ..., "field": ...}`` and the CLI
prints the message. ``field`` names the request field at fault, where there is one.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of the registry's domain errors."""

    status = 400
    code = "registry_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class NotFoundError(RegistryError):
    """A referenced department, resource, subscription or catalog entry does not exist."""

    status = 404
    code = "not_found"


class NotAuthenticatedError(RegistryError):
    status = 401
    code = "not_authenticated"


class ForbiddenError(RegistryError):
    """The actor may not see or change this: it is not its own."""

    status = 403
    code = "forbidden"


class ConflictError(RegistryError):
    """The request contradicts what is stored: a duplicate code, an open subscription."""

    status = 409
    code = "conflict"


class InvalidTransitionError(ConflictError):
    """A subscription cannot go from its state by the attempted action."""

    code = "invalid_transition"


class InvalidInputError(RegistryError):
    """A value is well-formed but not acceptable (unknown field, past date, not shared)."""

    status = 422
    code = "invalid_input"
