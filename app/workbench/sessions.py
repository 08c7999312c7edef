"""Signed-in clerks, kept on the server; the browser holds only a signed session id.

A clerk signs in with the department's registry token. The token never goes back to the
browser: the workbench keeps it here, in memory, under a random session id, and the
browser's cookie (starlette's ``SessionMiddleware``: signed with itsdangerous, HttpOnly,
SameSite=Strict) carries that id and the session's CSRF token only. A session ends when
the clerk signs out, after ``idle`` seconds without a request, and when the workbench
restarts (the signing key is made afresh at every start, so no old cookie is accepted).

Every form that changes something carries the CSRF token in a hidden field
(:func:`csrf_token`); a POST whose field differs from the cookie's is refused
(:func:`check_csrf`). SameSite=Strict already keeps other sites' forms from sending the
cookie; the token also covers an older browser and the sign-in form itself.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from starlette.requests import Request

#: The hidden form field every POST form of the workbench carries.
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Clerk:
    """A signed-in clerk: the department the token is of, and the clerk's own name
    (经办人), written on every action the clerk takes."""

    token: str = field(repr=False)
    department_code: str
    department_name: str
    operator: str | None


class CsrfError(Exception):
    """A POST without the session's CSRF token: a stale page or another site's form."""


class ClerkSessions:
    """Signed-in clerks by session id, forgotten after ``idle`` seconds unused."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self._clerks: dict[str, tuple[float, Clerk]] = {}
        self._lock = threading.Lock()

    def sign_in(self, request: Request, clerk: Clerk) -> None:
        """A new session for ``clerk`` (any earlier one of this browser ends: a fresh id
        at every sign-in, so a session id planted before it is worth nothing)."""
        self.sign_out(request)
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._clerks[session_id] = (time.monotonic(), clerk)
        request.session["sid"] = session_id
        request.session[CSRF_FIELD] = secrets.token_urlsafe(32)

    def sign_out(self, request: Request) -> None:
        session_id = request.session.pop("sid", None)
        if session_id is not None:
            with self._lock:
                self._clerks.pop(session_id, None)

    def clerk(self, request: Request) -> Clerk | None:
        """The clerk signed in on this browser, or None; each request renews the idle time."""
        session_id = request.session.get("sid")
        if session_id is None:
            return None
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            held = self._clerks.get(session_id)
            if held is None:
                return None
            self._clerks[session_id] = (now, held[1])
            return held[1]

    def signed_in(self) -> int:
        """How many clerks are signed in now (for the metrics)."""
        with self._lock:
            self._expire(time.monotonic())
            return len(self._clerks)

    def _expire(self, now: float) -> None:
        stale = [sid for sid, (seen, _) in self._clerks.items() if now - seen > self.idle]
        for session_id in stale:
            del self._clerks[session_id]


def csrf_token(request: Request) -> str:
    """The session's CSRF token for a form (made on first use: the sign-in page has one
    before anyone signs in)."""
    token = request.session.get(CSRF_FIELD)
    if token is None:
        token = request.session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf(request: Request, sent: str | None) -> None:
    """Refuse a POST whose CSRF field is not the session's token."""
    expected = request.session.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise CsrfError(
            "the form's security token (csrf_token) is missing or out of date: reload the"
            " page and send the form again"
        )
