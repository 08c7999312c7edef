"""The platform's HTTP error layer: one body, one set of codes, one way to answer.

Every HTTP API of the platform (the registry, the credit check, the HTTP ingest) refuses
with the same body, so a department's system reads one shape whichever it calls::

    {"error": "validation_error", "message": "uscc: String should have at least 18
     characters", "field": "uscc"}

``error`` is a stable machine-readable code, ``message`` a sentence saying what was
found and what to do, ``field`` the request field at fault (``filters.divisions.0``:
the location without ``query``/``body``), or null. An API installs the layer once::

    app = FastAPI(...)
    install_error_handlers(app, on_refusal=count_refusal)

and raises an :class:`ApiError` (or one of its kinds below) wherever it refuses. A
request FastAPI cannot validate is 422 ``validation_error`` naming the field; a route
or method that does not exist is 404/405; anything unexpected is 500
``internal_error`` with the exception's type only — the stack trace goes to the log,
never to the client.

The handlers never fail on what a client sent: an error body is rendered as JSON even
when its message quotes text JSON cannot hold as UTF-8 (a lone surrogate such as
``\\ud800`` is escaped), and a body that is not JSON is named by where it breaks.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every refusal: a machine-readable code, a sentence for people, the field at fault."""

    error: str = Field(
        description="not_authenticated, forbidden, not_found, conflict, invalid_transition,"
        " invalid_input, not_shared, validation_error",
        examples=["invalid_transition"],
    )
    message: str = Field(examples=["subscription 7 (hz-health → registration) is REJECTED; …"])
    field: str | None = Field(default=None, description="The request field at fault, if any.")


class ApiError(Exception):
    """A refusal an API answers with its ``status`` and an :class:`ErrorBody`.

    Each kind has a default ``code``; ``code=`` gives a more precise one
    (``not_shared``, ``not_ready``) without a class of its own.
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str] | None:
        """Response headers the refusal needs (an authentication challenge, a retry delay)."""
        return None


class NotAuthenticatedError(ApiError):
    """No bearer token, or one nobody holds (unknown or revoked)."""

    status = 401
    code = "not_authenticated"

    @property
    def headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ApiError):
    """The caller is known but may not do this: it is not its own."""

    status = 403
    code = "forbidden"


class NotFoundError(ApiError):
    """A referenced department, resource, subscription or catalog entry does not exist."""

    status = 404
    code = "not_found"


class ServiceUnavailableError(ApiError):
    """The service cannot answer now (loading, a dependency down): retry after a while."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)}


class InvalidInputError(ApiError):
    """A value is well-formed but not acceptable (unknown field, past date, not shared)."""

    status = 422
    code = "invalid_input"


class ContentTooLargeError(ApiError):
    """A request body larger than the service takes; the message says the limit."""

    status = 413
    code = "content_too_large"


class ErrorResponse(JSONResponse):
    """A JSON answer that renders whatever text it holds.

    A message may quote a client's value; a lone surrogate in it cannot be UTF-8, so the
    body falls back to ASCII escapes (``\\ud800``) rather than failing the answer.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of an operation's refusals: status → when it happens."""
    return {
        status: {"model": ErrorBody, "description": description}
        for status, description in descriptions.items()
    }


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An :class:`ErrorBody` answer."""
    body = ErrorBody(error=code, message=message, field=field)
    return ErrorResponse(body.model_dump(), status_code=status, headers=headers)


def field_of(location: Sequence[str | int]) -> str:
    """``("body", "filters", "divisions", 0)`` → ``filters.divisions.0``."""
    parts = list(location)
    if parts and parts[0] in ("body", "path", "query", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(part) for part in parts)


def refuse_undeclared_query(request: Request) -> None:
    """Refuse query parameters the OpenAPI document does not declare for the operation,
    and any given twice: a misspelt filter (``?stauts=APPROVED``) or a second value must
    not silently change what is answered."""
    route = request.scope["route"]
    operation = request.app.openapi()["paths"][route.path][request.method.lower()]
    declared = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"}
    given = Counter(name for name, _ in request.query_params.multi_items())
    unknown = sorted(set(given) - declared)
    if unknown:
        raise InvalidInputError(
            f"unknown query parameter {', '.join(map(repr, unknown))}; {route.path} takes"
            f" {', '.join(sorted(declared)) or 'none'}",
            field=unknown[0],
        )
    repeated = sorted(name for name, count in given.items() if count > 1)
    if repeated:
        raise InvalidInputError(
            f"query parameter {', '.join(map(repr, repeated))} given more than once; give it once",
            field=repeated[0],
        )


def _said(problem: Mapping[str, Any]) -> str:
    """A validation problem in words: for a body that is not JSON, where and why it breaks
    (FastAPI's own message is only "JSON decode error")."""
    if problem.get("type") == "json_invalid":
        position = problem["loc"][-1] if problem.get("loc") else "?"
        reason = (problem.get("ctx") or {}).get("error", "not JSON")
        return f"not JSON at character {position}: {reason}"
    return str(problem["msg"])


#: The codes of the HTTP errors Starlette raises itself (no route, wrong method, bad body).
HTTP_ERROR_CODES = {
    400: "malformed_body",
    404: "not_found",
    405: "method_not_allowed",
    413: "content_too_large",
}

#: Called with each refusal an API answers (an :class:`ApiError` or a request that does
#: not validate) before it is sent: for the service's metrics and log.
RefusalObserver = Callable[[Request, int, ErrorBody], None]


def install_error_handlers(app: FastAPI, on_refusal: RefusalObserver | None = None) -> None:
    """Answer every error of ``app`` with an :class:`ErrorBody`."""

    def refuse(
        request: Request, status: int, body: ErrorBody, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        if on_refusal is not None:
            on_refusal(request, status, body)
        return ErrorResponse(body.model_dump(), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        body = ErrorBody(error=error.code, message=error.message, field=error.field)
        return refuse(request, error.status, body, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        located = [(field_of(problem["loc"]), _said(problem)) for problem in error.errors()]
        message = "; ".join(f"{where or 'body'}: {what}" for where, what in located)
        first = located[0][0] if located else None
        body = ErrorBody(error="validation_error", message=message, field=first or None)
        return refuse(request, 422, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_ERROR_CODES.get(error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail), headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            500, "internal_error", f"{type(error).__name__}: see the service's log"
        )
