"""The workbench's pages (FastAPI, Jinja2 templates, plain HTML forms).

=======================================  ==============================================
page                                     what
=======================================  ==============================================
``GET /signin``, ``POST /signin``        登录: the department's registry token, 经办人
``POST /signout``                        退出
``GET /``                                收件箱: the department's items, its figures
``GET /items/{id}``                      one item: registration, items needed, history,
                                         the forms 认领 / 退回 / 终止推送, or 反馈
``POST /pushes/{id}/claim|return|stop``  an action on a 双告知 push
``POST /hits/{id}/feedback``             反馈 on a restriction hit
``GET /static/…``                        the stylesheet (nothing comes from elsewhere)
``GET /ready``, ``GET /metrics``         health, Prometheus
=======================================  ==============================================

Everything a page shows and does goes through the :class:`Desk` — the inbox's read and
act sides (``connectors/inbox``); the pages only render and parse forms. An action
answers with a redirect to the item's page, which shows the action's outcome as the
processor decides it (待处理 until then). Another department's item is 404, a form
field the desk refuses is 422 naming the field, on a page a clerk can read.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Form, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from starlette.middleware.sessions import SessionMiddleware

from app.workbench.sessions import CSRF_FIELD, Clerk, ClerkSessions, CsrfError, check_csrf
from app.workbench.sessions import csrf_token as csrf_token_of
from app.workbench.settings import WorkbenchSettings
from app.workbench.view import (
    LABELS,
    RETURN_REASONS,
    Figures,
    InboxPage,
    Item,
    Outcome,
    state_label,
)
from xietong.clock import BusinessClock
from xietong.http_errors import ApiError
from xietong.logs import log_event

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent

REQUESTS = Counter(
    "xietong_workbench_requests",
    "Workbench requests, by route template, method and status",
    ("route", "method", "status"),
)
SIGN_INS = Counter(
    "xietong_workbench_sign_ins",
    "Sign-ins to the workbench, by department and outcome (ok, refused)",
    ("department", "outcome"),
)
ACTIONS = Counter(
    "xietong_workbench_actions",
    "Actions clerks sent from the workbench, by department and action"
    " (CLAIM, RETURN, STOP, FEEDBACK)",
    ("department", "action"),
)
SIGNED_IN = Gauge("xietong_workbench_signed_in", "Clerks signed in now")

#: Every answer's: the browser loads nothing from elsewhere and runs no script (the pages
#: have none), posts forms only here, shows the pages in no other site's frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class Desk(Protocol):
    """What the pages read and do, as one department (the clerk's token)."""

    def verify(self, token: str) -> tuple[str, str]:
        """The department (code, name) whose registry token this is; an ApiError (401,
        403) otherwise."""

    def inbox(
        self, clerk: Clerk, kind: str | None, state: str | None, cursor: str | None, limit: int
    ) -> InboxPage: ...

    def item(self, clerk: Clerk, item_id: str) -> Item:
        """One of the department's items; NotFoundError (404) for any other."""

    def claim(self, clerk: Clerk, push_id: str, key: str) -> str:
        """认领: the action's id (``key`` makes a re-sent form one action)."""

    def return_push(
        self, clerk: Clerk, push_id: str, reason: str, text: str | None, key: str
    ) -> str: ...

    def stop(self, clerk: Clerk, push_id: str, text: str | None, key: str) -> str: ...

    def feedback(
        self, clerk: Clerk, hit_id: str, outcome: str, reason: str | None, key: str
    ) -> str: ...

    def outcome(self, clerk: Clerk, action_id: str) -> Outcome: ...

    def figures(self, clerk: Clerk) -> Figures: ...

    def ping(self) -> None:
        """Raise ServiceUnavailableError (503) if the inbox cannot be read."""


@dataclass(frozen=True)
class Workbench:
    """What the pages answer from (``app.state.workbench``)."""

    desk: Desk
    sessions: ClerkSessions
    settings: WorkbenchSettings
    clock: BusinessClock
    templates: Jinja2Templates


def _workbench(request: Request) -> Workbench:
    workbench: Workbench = request.app.state.workbench
    return workbench


class SignInNeeded(Exception):
    """A page asked for without a signed-in clerk: to the sign-in page."""


def _clerk(request: Request) -> Clerk:
    clerk = _workbench(request).sessions.clerk(request)
    if clerk is None:
        raise SignInNeeded
    return clerk


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    workbench = _workbench(request)
    return workbench.templates.TemplateResponse(
        request,
        template,
        {
            "clerk": workbench.sessions.clerk(request),
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token_of(request),
            "labels": LABELS,
            "return_reasons": RETURN_REASONS,
            "now": workbench.clock.now(),
            "clock": workbench.clock,
            "status_code": status,
            **context,
        },
        status_code=status,
    )


async def _desk(call: Callable[..., Any], *args: Any) -> Any:
    """A desk call off the event loop (it reads the database, or waits for the broker)."""
    return await run_in_threadpool(call, *args)


def create_app(
    desk: Desk,
    settings: WorkbenchSettings,
    clock: BusinessClock,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The workbench over ``desk``; ``lifespan`` starts and stops what the desk needs."""
    app = FastAPI(
        title="Xietong workbench (协同 · 经办人工作台)",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["when"] = lambda moment: _when(clock, moment)
    templates.env.globals["state_label"] = state_label
    sessions = ClerkSessions(settings.session_idle_minutes * 60)
    app.state.workbench = Workbench(desk, sessions, settings, clock, templates)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _routes(app)
    _errors(app)

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"  # a page shows a department's items
        route = request.scope.get("route")
        template = getattr(route, "path", None) or (
            "/static" if request.url.path.startswith("/static/") else "unmatched"
        )
        REQUESTS.labels(template, request.method, str(response.status_code)).inc()
        return response

    # Outermost, so the handlers above see the session. The key is made at every start:
    # sessions live in this process's memory and end with it.
    app.add_middleware(
        SessionMiddleware,
        secret_key=secrets.token_urlsafe(32),
        session_cookie="xietong_workbench",
        max_age=None,
        same_site="strict",
        https_only=settings.secure_cookie,
    )
    return app


def _when(clock: BusinessClock, moment: Any) -> str:
    """An instant (a datetime, epoch milliseconds or ISO 8601 text) as a clerk reads it:
    the province's local time, to the minute; a dash for none."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if not isinstance(moment, datetime | int) or isinstance(moment, bool):
        return "—"
    return str(clock.local_time(moment).strftime("%Y-%m-%d %H:%M"))


def _routes(app: FastAPI) -> None:
    @app.get("/signin", response_class=HTMLResponse, include_in_schema=False)
    async def signin_page(request: Request) -> HTMLResponse:
        return _page(request, "signin.html")

    @app.post("/signin", response_class=HTMLResponse, include_in_schema=False)
    async def signin(
        request: Request,
        token: Annotated[str, Form(min_length=1)],
        operator: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> Response:
        workbench = _workbench(request)
        check_csrf(request, csrf_token)
        try:
            code, name = await _desk(workbench.desk.verify, token.strip())
        except ApiError as error:
            SIGN_INS.labels("", "refused").inc()
            log_event(logger, "workbench.sign_in_refused", reason=error.message)
            return _page(
                request, "signin.html", status=error.status, error=error.message, field="token"
            )
        clerk = Clerk(token.strip(), code, name, operator.strip() or None)
        workbench.sessions.sign_in(request, clerk)
        SIGN_INS.labels(code, "ok").inc()
        SIGNED_IN.set(workbench.sessions.signed_in())
        log_event(logger, "workbench.signed_in", department=code, operator=clerk.operator)
        return RedirectResponse("/", status_code=303)

    @app.post("/signout", include_in_schema=False)
    async def signout(
        request: Request, csrf_token: Annotated[str, Form()] = ""
    ) -> RedirectResponse:
        check_csrf(request, csrf_token)
        workbench = _workbench(request)
        workbench.sessions.sign_out(request)
        SIGNED_IN.set(workbench.sessions.signed_in())
        return RedirectResponse("/signin", status_code=303)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def inbox(
        request: Request,
        kind: str | None = None,
        state: str | None = None,
        cursor: str | None = None,
    ) -> HTMLResponse:
        clerk = _clerk(request)
        desk = _workbench(request).desk
        limit = _workbench(request).settings.page_size
        page = await _desk(desk.inbox, clerk, kind or None, state or None, cursor, limit)
        figures = await _desk(desk.figures, clerk)
        return _page(
            request, "inbox.html", page=page, figures=figures, kind=kind or "", state=state or ""
        )

    @app.get("/items/{item_id}", response_class=HTMLResponse, include_in_schema=False)
    async def item(request: Request, item_id: str, action: str | None = None) -> HTMLResponse:
        clerk = _clerk(request)
        desk = _workbench(request).desk
        found = await _desk(desk.item, clerk, item_id)
        outcome = None if action is None else await _desk(desk.outcome, clerk, action)
        return _page(request, "item.html", item=found, outcome=outcome)

    @app.post("/pushes/{push_id}/claim", include_in_schema=False)
    async def claim(
        request: Request, push_id: str, csrf_token: Annotated[str, Form()] = ""
    ) -> RedirectResponse:
        clerk = _acting(request, csrf_token)
        desk = _workbench(request).desk
        action_id = await _desk(desk.claim, clerk, push_id, csrf_token + push_id)
        return _acted(clerk, "CLAIM", push_id, action_id)

    @app.post("/pushes/{push_id}/return", include_in_schema=False)
    async def return_push(
        request: Request,
        push_id: str,
        reason: Annotated[str, Form()] = "",
        reason_text: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        clerk = _acting(request, csrf_token)
        desk = _workbench(request).desk
        action_id = await _desk(
            desk.return_push,
            clerk,
            push_id,
            reason,
            reason_text.strip() or None,
            csrf_token + push_id + reason,
        )
        return _acted(clerk, "RETURN", push_id, action_id)

    @app.post("/pushes/{push_id}/stop", include_in_schema=False)
    async def stop(
        request: Request,
        push_id: str,
        reason_text: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        clerk = _acting(request, csrf_token)
        desk = _workbench(request).desk
        action_id = await _desk(
            desk.stop, clerk, push_id, reason_text.strip() or None, csrf_token + push_id
        )
        return _acted(clerk, "STOP", push_id, action_id)

    @app.post("/hits/{hit_id}/feedback", include_in_schema=False)
    async def feedback(
        request: Request,
        hit_id: str,
        outcome: Annotated[str, Form()] = "",
        reason: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        clerk = _acting(request, csrf_token)
        desk = _workbench(request).desk
        action_id = await _desk(
            desk.feedback,
            clerk,
            hit_id,
            outcome,
            reason.strip() or None,
            csrf_token + hit_id + outcome,
        )
        return _acted(clerk, "FEEDBACK", hit_id, action_id)

    @app.get("/ready", include_in_schema=False)
    async def ready(request: Request) -> Response:
        """200 once the inbox (the credit database) can be read; 503 with the reason."""
        try:
            await _desk(_workbench(request).desk.ping)
        except ApiError as error:
            return JSONResponse({"status": "unavailable", "reason": error.message}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _acting(request: Request, csrf_token: str) -> Clerk:
    clerk = _clerk(request)
    check_csrf(request, csrf_token)
    return clerk


def _acted(clerk: Clerk, action: str, item_id: str, action_id: str) -> RedirectResponse:
    ACTIONS.labels(clerk.department_code, action).inc()
    log_event(
        logger,
        "workbench.acted",
        department=clerk.department_code,
        operator=clerk.operator,
        action=action,
        item_id=item_id,
        action_id=action_id,
    )
    return RedirectResponse(f"/items/{item_id}?action={action_id}", status_code=303)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(SignInNeeded)
    async def sign_in_first(request: Request, _: SignInNeeded) -> Response:
        return RedirectResponse("/signin", status_code=303)

    @app.exception_handler(CsrfError)
    async def stale_form(request: Request, error: CsrfError) -> Response:
        return _page(request, "error.html", status=403, message=str(error), field=CSRF_FIELD)

    @app.exception_handler(ApiError)
    async def refused(request: Request, error: ApiError) -> Response:
        if error.status == 401:
            # The token was revoked since sign-in: the clerk signs in again.
            _workbench(request).sessions.sign_out(request)
            return _page(request, "signin.html", status=401, error=error.message, field="token")
        return _page(
            request, "error.html", status=error.status, message=error.message, field=error.field
        )

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, error: RequestValidationError) -> Response:
        problems = [
            (".".join(str(part) for part in problem["loc"][1:]), problem["msg"])
            for problem in error.errors()
        ]
        message = "; ".join(f"{where}: {what}" for where, what in problems)
        return _page(
            request,
            "error.html",
            status=422,
            message=message,
            field=problems[0][0] if problems else None,
        )

    @app.exception_handler(404)
    async def no_such_page(request: Request, _: Exception) -> Response:
        if request.url.path.startswith("/static/"):
            return PlainTextResponse("not found", status_code=404)
        return _page(request, "error.html", status=404, message=f"{request.url.path}: 没有这个页面")
