"""The registry as the services that are not the registry read it: departments' tokens,
the departments and the matter-type catalog.

The credit check and the HTTP ingest accept a department's registry API token (``xietong
registry issue-token <department>``) and act as that department. They verify it through
the registry's service layer (:func:`registry.service.verify_token`, the registry API's
own check) against the registry database, and remember a verified token for a few
seconds so a busy service does not ask the database on every request::

    directory = RegistryDirectory(database_url, admin_token_sha256, cache_seconds=5)
    department = directory.cached(token) or directory.verify(token)  # verify blocks

An unknown or revoked token is :class:`~xietong.http_errors.NotAuthenticatedError`
(401), an administrator token :class:`~xietong.http_errors.ForbiddenError` (403: it
has no department), a database that does not answer
:class:`~xietong.http_errors.ServiceUnavailableError` (503, not 401: the token may be
good). A revocation takes effect within ``cache_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from registry import db, service
from xietong.http_errors import ForbiddenError, ServiceUnavailableError
from xietong.logs import log_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenHolder:
    """The department a verified token belongs to."""

    code: str
    uscc: str
    name: str
    sector: str
    #: What the token may be used for (``inbox:read``, ``inbox:act``: registry.models).
    scopes: frozenset[str] = frozenset()


class RegistryDirectory:
    """Department tokens, departments and the matter-type catalog, read from the registry
    database through the registry's service layer; ``cache_seconds`` 0 asks every time."""

    def __init__(
        self, database_url: str, admin_token_sha256: str | None, cache_seconds: float
    ) -> None:
        self.sessions = db.session_factory(database_url)
        self.admin_token_sha256 = admin_token_sha256
        self.cache_seconds = cache_seconds
        self._tokens: dict[str, tuple[float, TokenHolder]] = {}
        self._matter_types: tuple[float, dict[str, str]] = (0.0, {})

    def cached(self, token: str) -> TokenHolder | None:
        """The token's department if it was verified less than ``cache_seconds`` ago."""
        held = self._tokens.get(service.token_digest(token))
        if held is None or held[0] < time.monotonic():
            return None
        return held[1]

    def verify(self, token: str | None) -> TokenHolder:
        """Ask the registry database whose ``token`` this is (blocking; None: the request
        had no bearer token)."""
        with self._registry("verify the token") as session:
            actor = service.verify_token(session, token, self.admin_token_sha256)
            if actor.department_code is None:
                raise ForbiddenError(
                    f"{actor} has no department: only a department's own registry token is"
                    " accepted here, and the department acts as itself"
                )
            row = service.get_department(session, actor.department_code)
            scopes = service.token_scopes(session, token) if token is not None else frozenset()
            holder = TokenHolder(row.code, row.uscc, row.name, row.sector_code, scopes)
        if self.cache_seconds > 0 and token is not None:
            expires = time.monotonic() + self.cache_seconds
            self._tokens[service.token_digest(token)] = (expires, holder)
        return holder

    def departments_by_uscc(self) -> dict[str, str]:
        """USCC → code of every department the registry knows (blocking, never cached)."""
        with self._registry("list the departments") as session:
            return {row.uscc: row.code for row in service.list_departments(session)}

    def matter_type_name(self, code: str) -> str | None:
        """The name of a matter type of the registry's catalog (re-read at most every
        ``cache_seconds``); None when the registry does not know it."""
        read_at, names = self._matter_types
        if code not in names and time.monotonic() - read_at > self.cache_seconds:
            with self._registry("look the matter type up") as session:
                names = {row.code: row.name for row in service.list_matter_types(session)}
            self._matter_types = (time.monotonic(), names)
        return names.get(code)

    @contextmanager
    def _registry(self, doing: str) -> Iterator[Session]:
        try:
            with db.transaction(self.sessions) as session:
                yield session
        except sa.exc.SQLAlchemyError as error:
            where = self.sessions.kw["bind"].url.render_as_string(hide_password=True)
            reason = str(getattr(error, "orig", error)).splitlines()[0]
            log_event(logger, "registry.unreachable", database=where, reason=reason)
            raise ServiceUnavailableError(
                f"the registry database cannot be reached to {doing} ({reason}): retry shortly",
                code="registry_unavailable",
            ) from None
