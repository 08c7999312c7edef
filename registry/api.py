"""The registry's HTTP API (FastAPI): departments, resources, subscriptions, catalogs, audit.

    app = create_app(database_url, admin_token_sha256)
    uvicorn.run(app, host="127.0.0.1", port=8410)       # xietong registry serve

Every endpoint but ``/health``, ``/metrics``, ``/openapi.json`` and ``/docs`` needs
``Authorization: Bearer <token>``: an administrator token (its SHA-256 in
``XIETONG_REGISTRY_ADMIN_TOKEN_SHA256``, or an administrator credential) or a
department's token (issued with ``POST /credentials``). A department sees and changes
only its own: its requests, and the decisions on its own resources; anything else is
403. Refusals are ``{"error", "message", "field"}`` bodies (:class:`ErrorBody`) with
401, 403, 404, 409 or 422 — never a 500 for bad input.

Each request runs in one database transaction (:func:`registry.db.transaction`), which
holds the change and its audit entries. The operations themselves are
:mod:`registry.service`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParameter
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client import Counter as MetricCounter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry import db, service, webhooks
from registry.audit import Actor
from registry.contract import (
    ApprovalIn,
    ApprovalItemOut,
    AuditEntryOut,
    CatalogCode,
    CredentialIn,
    CredentialOut,
    CreditListTypeOut,
    DepartmentCode,
    DepartmentIn,
    DepartmentOut,
    DivisionOut,
    GrantOut,
    Health,
    IssuedCredential,
    MatterTypeOut,
    MeasureOut,
    RefusalIn,
    RegisteredWebhookOut,
    ResourceCode,
    ResourceIn,
    ResourceOut,
    SectorOut,
    SubscriptionEventOut,
    SubscriptionIn,
    SubscriptionOut,
    WebhookChange,
    WebhookIn,
    WebhookOut,
)
from registry.errors import ForbiddenError, InvalidInputError
from registry.models import SubscriptionStatus
from registry.settings import get_registry_settings
from xietong.http_errors import (
    error_response,
    error_responses,
    install_error_handlers,
    refuse_undeclared_query,
)
from xietong.web import api_app

logger = logging.getLogger(__name__)

#: PostgreSQL ``integer``: ids beyond it cannot exist, and are refused as input.
MAX_ID = 2**31 - 1

ERROR_RESPONSES = error_responses(
    {
        400: "The body cannot be read (not UTF-8 JSON).",
        401: "No bearer token, or an unknown or revoked one.",
        403: "Not yours: another department's record.",
        404: "No such record.",
        409: "Conflicts with the stored state.",
        422: "A field is invalid; `field` names it.",
    }
)

BEARER = HTTPBearer(
    auto_error=False,
    description="A department's or an administrator's token; the registry keeps only SHA-256.",
)

SubscriptionId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
WebhookId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]


# -- dependencies ---------------------------------------------------------------------------


def database_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the endpoint returns, else rolled back."""
    with db.transaction(request.app.state.sessions) as session:
        yield session


def current_actor(
    request: Request,
    session: Annotated[Session, Depends(database_session)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Actor:
    """Who is calling; 401 without a known, unrevoked token."""
    token = None if credentials is None else credentials.credentials
    return service.verify_token(session, token, request.app.state.admin_token_sha256)


def admin_actor(actor: Annotated[Actor, Depends(current_actor)]) -> Actor:
    if not actor.is_admin:
        raise ForbiddenError(f"{actor} is not an administrator")
    return actor


DatabaseSession = Annotated[Session, Depends(database_session)]
Caller = Annotated[Actor, Depends(current_actor)]
Admin = Annotated[Actor, Depends(admin_actor)]


def declared_query_only(request: Request, caller: Caller) -> None:
    """Once the caller is known: refuse query parameters the operation does not declare
    (:func:`~xietong.http_errors.refuse_undeclared_query`)."""
    refuse_undeclared_query(request)


router = APIRouter(responses=ERROR_RESPONSES, dependencies=[Depends(declared_query_only)])


# -- departments and credentials ------------------------------------------------------------


@router.get("/departments", tags=["departments"], summary="List departments")
def list_departments(session: DatabaseSession, caller: Caller) -> list[DepartmentOut]:
    return [DepartmentOut.of(row) for row in service.list_departments(session)]


@router.get("/departments/{code}", tags=["departments"], summary="One department")
def get_department(
    code: Annotated[DepartmentCode, PathParameter()], session: DatabaseSession, caller: Caller
) -> DepartmentOut:
    return DepartmentOut.of(service.get_department(session, code, field="code"))


@router.post(
    "/departments", tags=["departments"], status_code=201, summary="Register a department [admin]"
)
def create_department(body: DepartmentIn, session: DatabaseSession, admin: Admin) -> DepartmentOut:
    return DepartmentOut.of(
        service.create_department(
            session,
            admin,
            code=body.code,
            uscc=body.uscc,
            name=body.name,
            sector=body.sector,
            roles=[role.value for role in body.roles],
            level=body.level,
            division=body.division,
            contact=body.contact,
        )
    )


@router.get("/credentials", tags=["credentials"], summary="List credentials [admin]")
def list_credentials(session: DatabaseSession, admin: Admin) -> list[CredentialOut]:
    return [CredentialOut.of(row) for row in service.list_credentials(session)]


@router.post(
    "/credentials",
    tags=["credentials"],
    status_code=201,
    summary="Issue a token for a department, or an administrator token [admin]",
)
def issue_credential(
    body: CredentialIn, session: DatabaseSession, admin: Admin
) -> IssuedCredential:
    issued = service.issue_token(session, admin, body.department, scopes=body.scopes)
    return IssuedCredential(**CredentialOut.of(issued.credential).model_dump(), token=issued.token)


@router.post(
    "/credentials/{credential_id}/revoke",
    tags=["credentials"],
    summary="Revoke a credential [admin]",
)
def revoke_credential(
    credential_id: Annotated[int, PathParameter(ge=1, le=MAX_ID)],
    session: DatabaseSession,
    admin: Admin,
) -> CredentialOut:
    return CredentialOut.of(service.revoke_credential(session, admin, credential_id))


# -- data resources -------------------------------------------------------------------------


@router.get("/resources", tags=["resources"], summary="List data resources")
def list_resources(session: DatabaseSession, caller: Caller) -> list[ResourceOut]:
    return [ResourceOut.of(row) for row in service.list_resources(session)]


@router.get("/resources/{code}", tags=["resources"], summary="One data resource")
def get_resource(
    code: Annotated[ResourceCode, PathParameter()], session: DatabaseSession, caller: Caller
) -> ResourceOut:
    return ResourceOut.of(service.get_resource(session, code, field="code"))


@router.post(
    "/resources",
    tags=["resources"],
    status_code=201,
    summary="Declare a data resource [its owner, or admin]",
)
def create_resource(body: ResourceIn, session: DatabaseSession, caller: Caller) -> ResourceOut:
    owner = body.owner or caller.department_code
    if owner is None:
        raise InvalidInputError(
            "owner is required when an administrator declares a resource", field="owner"
        )
    return ResourceOut.of(
        service.create_resource(
            session,
            caller,
            code=body.code,
            name=body.name,
            topic=body.topic,
            owner=owner,
            sharing_class=body.sharing_class,
            fields=body.fields,
            description=body.description,
            schema_subject=body.schema_subject,
        )
    )


# -- subscriptions --------------------------------------------------------------------------


@router.get(
    "/subscriptions",
    tags=["subscriptions"],
    summary="Subscriptions you requested or that concern your resources (admin: all)",
)
def list_subscriptions(
    session: DatabaseSession,
    caller: Caller,
    role: Annotated[
        str | None,
        Query(
            pattern="^(subscriber|owner)$",
            description="subscriber: your requests;"
            " owner: requests for your resources; default both",
        ),
    ] = None,
    status: SubscriptionStatus | None = None,
    department: Annotated[
        DepartmentCode | None, Query(description="Admin only: one department's")
    ] = None,
) -> list[SubscriptionOut]:
    rows = service.list_subscriptions(
        session, caller, department=department, status=status, role=role
    )
    return [SubscriptionOut.of(row) for row in rows]


@router.post(
    "/subscriptions",
    tags=["subscriptions"],
    status_code=201,
    summary="Request a data resource",
)
def request_subscription(
    body: SubscriptionIn, session: DatabaseSession, caller: Caller
) -> SubscriptionOut:
    department = body.department or caller.department_code
    if department is None:
        raise InvalidInputError(
            "department is required when an administrator requests on a department's behalf",
            field="department",
        )
    subscription = service.request_subscription(
        session,
        caller,
        department=department,
        resource=body.resource,
        purpose=body.purpose,
        legal_basis=body.legal_basis,
        fields=body.fields,
        filters=None if body.filters is None else body.filters.model_dump(exclude_none=True),
        valid_until=body.valid_until,
    )
    return SubscriptionOut.of(subscription)


@router.get("/subscriptions/{subscription_id}", tags=["subscriptions"], summary="One subscription")
def get_subscription(
    subscription_id: SubscriptionId, session: DatabaseSession, caller: Caller
) -> SubscriptionOut:
    return SubscriptionOut.of(service.get_subscription(session, caller, subscription_id))


@router.get(
    "/subscriptions/{subscription_id}/history",
    tags=["subscriptions"],
    summary="Every transition of a subscription",
)
def subscription_history(
    subscription_id: SubscriptionId, session: DatabaseSession, caller: Caller
) -> list[SubscriptionEventOut]:
    events = service.subscription_history(session, caller, subscription_id)
    return [SubscriptionEventOut.of(event) for event in events]


@router.post(
    "/subscriptions/{subscription_id}/approve",
    tags=["subscriptions"],
    summary="Approve a request [the resource's owner, or admin]",
)
def approve_subscription(
    subscription_id: SubscriptionId,
    session: DatabaseSession,
    caller: Caller,
    body: ApprovalIn | None = None,
) -> SubscriptionOut:
    body = body or ApprovalIn()
    subscription = service.approve_subscription(
        session, caller, subscription_id, valid_until=body.valid_until, reason=body.reason
    )
    return SubscriptionOut.of(subscription)


@router.post(
    "/subscriptions/{subscription_id}/reject",
    tags=["subscriptions"],
    summary="Reject a request [the resource's owner, or admin]",
)
def reject_subscription(
    subscription_id: SubscriptionId, body: RefusalIn, session: DatabaseSession, caller: Caller
) -> SubscriptionOut:
    return SubscriptionOut.of(
        service.reject_subscription(session, caller, subscription_id, reason=body.reason)
    )


@router.post(
    "/subscriptions/{subscription_id}/revoke",
    tags=["subscriptions"],
    summary="Revoke an approved subscription [the resource's owner, or admin]",
)
def revoke_subscription(
    subscription_id: SubscriptionId, body: RefusalIn, session: DatabaseSession, caller: Caller
) -> SubscriptionOut:
    return SubscriptionOut.of(
        service.revoke_subscription(session, caller, subscription_id, reason=body.reason)
    )


@router.get(
    "/access-grants",
    tags=["subscriptions"],
    summary="What each department may read and write on the broker now [admin]",
)
def access_grants(session: DatabaseSession, admin: Admin) -> list[GrantOut]:
    return [GrantOut.of(grant) for grant in service.access_grants(session, service.utcnow())]


# -- reference catalogs ---------------------------------------------------------------------


@router.get("/catalog/sectors", tags=["catalogs"], summary="部门类别")
def sectors(session: DatabaseSession, caller: Caller) -> list[SectorOut]:
    return [SectorOut(code=row.code, name=row.name) for row in service.list_sectors(session)]


@router.get("/catalog/divisions", tags=["catalogs"], summary="行政区划 (GB/T 2260)")
def divisions(session: DatabaseSession, caller: Caller) -> list[DivisionOut]:
    return [DivisionOut.of(row) for row in service.list_divisions(session)]


@router.get(
    "/catalog/approval-items",
    tags=["catalogs"],
    summary="后置审批事项 with routes and matching rules",
)
def approval_items(session: DatabaseSession, caller: Caller) -> list[ApprovalItemOut]:
    return [ApprovalItemOut.of(row) for row in service.list_approval_items(session)]


@router.get("/catalog/approval-items/{code}", tags=["catalogs"], summary="One approval item")
def approval_item(
    code: Annotated[CatalogCode, PathParameter()], session: DatabaseSession, caller: Caller
) -> ApprovalItemOut:
    return ApprovalItemOut.of(service.get_approval_item(session, code))


@router.get("/catalog/list-types", tags=["catalogs"], summary="名单 (credit lists)")
def list_types(session: DatabaseSession, caller: Caller) -> list[CreditListTypeOut]:
    return [CreditListTypeOut.of(row) for row in service.list_credit_list_types(session)]


@router.get("/catalog/matter-types", tags=["catalogs"], summary="事项类型")
def matter_types(session: DatabaseSession, caller: Caller) -> list[MatterTypeOut]:
    return [
        MatterTypeOut(code=row.code, name=row.name) for row in service.list_matter_types(session)
    ]


@router.get("/catalog/measures", tags=["catalogs"], summary="失信惩戒措施")
def measures(session: DatabaseSession, caller: Caller) -> list[MeasureOut]:
    return [MeasureOut.of(row) for row in service.list_measures(session)]


# -- audit ----------------------------------------------------------------------------------


@router.get("/audit", tags=["audit"], summary="The audit log, newest first [admin]")
def audit_log(
    session: DatabaseSession,
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    entity: Annotated[str | None, Query(pattern="^[a-z_]+$", max_length=63)] = None,
    entity_id: Annotated[str | None, Query(pattern="^[A-Za-z0-9_/-]+$", max_length=100)] = None,
) -> list[AuditEntryOut]:
    rows = service.audit_entries(session, limit=limit, entity=entity, entity_id=entity_id)
    return [AuditEntryOut.of(row) for row in rows]


# -- webhooks -------------------------------------------------------------------------------


@router.get("/webhooks", tags=["webhooks"], summary="List webhook endpoints (yours; admin: all)")
def list_webhooks(session: DatabaseSession, caller: Caller) -> list[WebhookOut]:
    return [WebhookOut.of(row) for row in webhooks.list_webhooks(session, caller)]


@router.post(
    "/webhooks",
    tags=["webhooks"],
    status_code=201,
    summary="Register the department's webhook endpoint; the secret is shown once",
)
def register_webhook(
    body: WebhookIn, request: Request, session: DatabaseSession, caller: Caller
) -> RegisteredWebhookOut:
    department = body.department or caller.department_code
    if department is None:
        raise InvalidInputError("an administrator names the department", field="department")
    made = webhooks.register_webhook(
        session,
        caller,
        department,
        body.url,
        cloudevents=body.cloudevents,
        allow_http=request.app.state.webhook_allow_http,
    )
    return RegisteredWebhookOut(**WebhookOut.of(made.endpoint).model_dump(), secret=made.secret)


@router.get("/webhooks/{webhook_id}", tags=["webhooks"], summary="One webhook endpoint")
def get_webhook(webhook_id: WebhookId, session: DatabaseSession, caller: Caller) -> WebhookOut:
    return WebhookOut.of(webhooks.get_webhook(session, caller, webhook_id))


@router.patch("/webhooks/{webhook_id}", tags=["webhooks"], summary="Change its address or format")
def update_webhook(
    webhook_id: WebhookId,
    body: WebhookChange,
    request: Request,
    session: DatabaseSession,
    caller: Caller,
) -> WebhookOut:
    row = webhooks.update_webhook(
        session,
        caller,
        webhook_id,
        url=body.url,
        cloudevents=body.cloudevents,
        allow_http=request.app.state.webhook_allow_http,
    )
    return WebhookOut.of(row)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    tags=["webhooks"],
    summary="A new secret, shown once; the previous one signs too for 24 h",
)
def rotate_webhook_secret(
    webhook_id: WebhookId, session: DatabaseSession, caller: Caller
) -> RegisteredWebhookOut:
    made = webhooks.rotate_secret(session, caller, webhook_id)
    return RegisteredWebhookOut(**WebhookOut.of(made.endpoint).model_dump(), secret=made.secret)


@router.delete("/webhooks/{webhook_id}", tags=["webhooks"], status_code=204, summary="Stop pushing")
def delete_webhook(webhook_id: WebhookId, session: DatabaseSession, caller: Caller) -> Response:
    webhooks.delete_webhook(session, caller, webhook_id)
    return Response(status_code=204)


# -- the application ------------------------------------------------------------------------


def create_app(
    database_url: str,
    admin_token_sha256: str | None,
    on_change: Callable[[], None] | None = None,
    webhook_allow_http: bool | None = None,
) -> FastAPI:
    """The registry API on the database at ``database_url`` (migrated already).

    ``on_change`` is called after every successful change (a POST answered below 400):
    the access enforcer uses it to reconcile the broker at once rather than on its
    next tick. ``webhook_allow_http`` (default: the setting
    ``XIETONG_REGISTRY_WEBHOOK_ALLOW_HTTP``) accepts http:// webhook endpoints.
    """

    app = api_app(
        title="Xietong registry (协同 · 目录与订阅)",
        version="1",
        description=__doc__,
    )
    app.state.sessions = db.session_factory(database_url)
    app.state.admin_token_sha256 = (admin_token_sha256 or "").lower() or None
    app.state.webhook_allow_http = (
        get_registry_settings().webhook_allow_http
        if webhook_allow_http is None
        else webhook_allow_http
    )
    app.include_router(router)
    _install_error_handlers(app)
    _install_health_and_metrics(app, database_url)
    if on_change is not None:
        _install_change_hook(app, on_change)
    return app


def _install_change_hook(app: FastAPI, on_change: Callable[[], None]) -> None:
    @app.middleware("http")
    async def after_change(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        if request.method == "POST" and response.status_code < 400:
            on_change()
        return response


def _install_error_handlers(app: FastAPI) -> None:
    install_error_handlers(app)

    @app.exception_handler(IntegrityError)
    async def integrity_error(request: Request, error: IntegrityError) -> JSONResponse:
        # A concurrent request won a uniqueness race the service had checked for.
        return error_response(409, "conflict", f"conflicts with a concurrent change: {error.orig}")


def _install_health_and_metrics(app: FastAPI, database_url: str) -> None:
    metrics = CollectorRegistry()
    requests = MetricCounter(
        "xietong_registry_requests",
        "Registry API requests, by route template, method and HTTP status",
        ("route", "method", "status"),
        registry=metrics,
    )
    latency = Histogram(
        "xietong_registry_request_seconds",
        "Registry API request latency, by route template and method",
        ("route", "method"),
        registry=metrics,
    )

    @app.get(
        "/health",
        tags=["service"],
        summary="Liveness and database reachability",
        responses={503: {"model": Health, "description": "The database cannot be reached."}},
    )
    def health(response: Response) -> Health:
        try:
            revision = db.current_revision(database_url)
        except sa.exc.SQLAlchemyError as error:
            logger.warning("health: database unreachable: %s", error)
            response.status_code = 503
            return Health(status="degraded", database="unreachable", migration=None)
        return Health(status="ok", database="ok", migration=revision)

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    def prometheus_metrics() -> Response:
        # The API's own metrics live in a registry per app (tests build many apps); the
        # enforcer's, the outbox relay's and the process's are in the default one.
        body = generate_latest(metrics) + generate_latest(REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # The registry's routes themselves: FastAPI keeps an included router as one entry.
    routes = [route for route in (*router.routes, *app.routes) if hasattr(route, "path")]
    app.add_middleware(RequestMetrics, routes=routes, requests=requests, latency=latency)


class RequestMetrics:
    """ASGI middleware: count and time every request by route template, method and status.

    The route template (``/subscriptions/{subscription_id}``), not the path, keeps the
    label set small; a request no route matches is counted as ``unmatched``.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        requests: MetricCounter,
        latency: Histogram,
    ) -> None:
        self.app = app
        self.routes = routes
        self.requests = requests
        self.latency = latency

    def route_template(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", "unmatched"))
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            route = self.route_template(scope)
            self.requests.labels(route, scope["method"], str(status)).inc()
            self.latency.labels(route, scope["method"]).observe(time.perf_counter() - started)
