"""The inbox API (FastAPI): a department system reads its inbox and acts on it over HTTP,
with its registry token — the same inbox topic and inbound topic, the same rules, as a
Kafka client would have (``xietong inbox serve``; the guide is ``connectors/inbox/README.md``).

* ``GET /v1/inbox`` — the department's items (open ones by default), by kind, state and
  business day, in inbox order, paged with an opaque cursor (the inbox topic's offset);
* ``GET /v1/inbox/{item_id}`` — one item, its versions as delivered and the actions on it;
* ``POST /v1/pushes/{push_id}/claim|return|stop``, ``POST /v1/hits/{hit_id}/feedback`` —
  write the DepartmentAction / RestrictionFeedback to ``dept.<code>.inbound`` and answer
  202 with the action's id once the broker acknowledged it (503 if it did not);
* ``GET /v1/actions/{action_id}`` — PENDING, APPLIED, or REJECTED with the reason.

A token needs the scope ``inbox:read`` to read and ``inbox:act`` to act (403 without);
an unknown or revoked token is 401; another department's item is 404, as an unknown one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, Protocol

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from connectors.inbox.actions import RETURN_REASONS, InboxActions, NotDelivered, SentAction
from connectors.inbox.items import ALL_STATES, FilterError, InboxFilter, InboxKind, inbox_action_id
from connectors.inbox.settings import InboxSettings
from connectors.inbox.store import ActionOutcome, InboxItem, InboxItemDetail, InboxStore
from registry.api import RequestMetrics
from registry.directory import RegistryDirectory, TokenHolder
from xietong.clock import BusinessClock
from xietong.http_errors import (
    ErrorBody,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
    error_responses,
    install_error_handlers,
    refuse_undeclared_query,
)
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.web import api_app

logger = logging.getLogger(__name__)

BEARER = HTTPBearer(auto_error=False, description="The department's registry API token.")

READ, ACT = "inbox:read", "inbox:act"

ERROR_RESPONSES = error_responses(
    {
        400: "The body cannot be read as UTF-8 JSON (malformed_body).",
        401: "No bearer token, or an unknown or revoked one.",
        403: "The token lacks the scope (inbox:read to read, inbox:act to act), or is an"
        " administrator's.",
        404: "No such item, push, hit or action of this department (another department's"
        " is not found either).",
        422: "A parameter or a body field is invalid; `field` names it.",
        503: "The broker did not acknowledge the action, or a database does not answer:"
        " send it again with the same Idempotency-Key.",
    }
)


class Departments(Protocol):
    """Who holds a token (:class:`~registry.directory.RegistryDirectory`)."""

    def cached(self, token: str) -> TokenHolder | None: ...

    def verify(self, token: str | None) -> TokenHolder: ...


@dataclass(frozen=True)
class InboxService:
    """What the API reads from and writes to (``app.state.service``)."""

    store: InboxStore
    actions: InboxActions
    departments: Departments
    settings: InboxSettings
    clock: BusinessClock


def _service(request: Request) -> InboxService:
    service: InboxService = request.app.state.service
    return service


def department_with(scope: str) -> Callable[..., Coroutine[Any, Any, TokenHolder]]:
    """The dependency of an operation that needs ``scope``: the token's department."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> TokenHolder:
        departments = _service(request).departments
        token = None if credentials is None else credentials.credentials
        known = None if token is None else departments.cached(token)
        if known is None:
            known = await run_in_threadpool(departments.verify, token)
        if scope not in known.scopes:
            raise ForbiddenError(
                f"this token of {known.code} lacks the scope {scope} (it has"
                f" {', '.join(sorted(known.scopes)) or 'none'}): ask a registry administrator"
                f" for a token with it (xietong registry issue-token {known.code} --scope {scope})"
            )
        refuse_undeclared_query(request)
        return known

    return dependency


Reader = Annotated[TokenHolder, Depends(department_with(READ))]
Acting = Annotated[TokenHolder, Depends(department_with(ACT))]


# -- the contract -------------------------------------------------------------------------------


class ItemOut(BaseModel):
    """One inbox item as it stands."""

    id: str = Field(description="The item's id: the push's or the hit's id, else the record's")
    kind: InboxKind = Field(
        description="push 双告知推送, hit 限制命中, sanction_notice 惩戒告知,"
        " licence_review 许可审查告知, lift_notice 解除惩戒告知,"
        " closure_notice 注销/吊销告知, alert 督办"
    )
    state: str = Field(
        description="The item's state now (a push's PushState, a hit's feedback"
        " state or WITHDRAWN, NOTIFIED for a notice, ACTIVE/WITHDRAWN for an alert)"
    )
    open: bool = Field(description="Whether the department still has something to do on it")
    overdue: bool = Field(description="Open and past its deadline")
    uscc: str = Field(description="统一社会信用代码 of the entity")
    entity_name: str | None = Field(description="主体名称")
    title: str | None = Field(
        description="What it is about: the approval item, the measure, the reason"
    )
    deadline: datetime | None = Field(
        description="认领期限 (a push to claim), 发证期限 (a claimed"
        " push), 反馈期限 (a hit), or the alert's deadline"
    )
    made_at: datetime = Field(description="When the platform made it (business time)")
    made_on: date = Field(description="The province's business day of made_at")
    inbox_offset: int = Field(description="The inbox topic's offset of its latest delivery")

    @classmethod
    def of(cls, item: InboxItem, clock: BusinessClock) -> ItemOut:
        overdue = item.is_open and item.deadline is not None and item.deadline < clock.now()
        return cls(
            id=item.item_id,
            kind=item.kind,
            state=item.state,
            open=item.is_open,
            overdue=overdue,
            uscc=item.uscc,
            entity_name=item.entity_name,
            title=item.title,
            deadline=item.deadline,
            made_at=item.at,
            made_on=clock.day_of(item.at),
            inbox_offset=item.offset,
        )


class PageOut(BaseModel):
    items: list[ItemOut]
    next_cursor: str = Field(
        description="Pass it as cursor= to resume after this page, now or"
        " later (new and changed items come after it)"
    )
    more: bool = Field(description="Whether more items follow now")


class ActionOut(BaseModel):
    """What became of an action."""

    action_id: str
    status: Literal["PENDING", "APPLIED", "REJECTED"] = Field(
        description="PENDING: not received yet, or not applied yet; APPLIED; REJECTED (see reason)"
    )
    received: bool = Field(description="Whether the platform has read it from the inbound topic")
    action: str | None = Field(
        description="CLAIM, RETURN, STOP, FEEDBACK_APPLIED, FEEDBACK_NOT_APPLICABLE"
    )
    item_id: str | None = Field(description="The push or hit it acts on")
    received_at: datetime | None
    reason: str | None = Field(description="The processor's reason, when REJECTED")
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, outcome: ActionOutcome) -> ActionOut:
        return cls(
            action_id=outcome.action_id,
            status=outcome.status,  # type: ignore[arg-type]
            received=outcome.received,
            action=outcome.action,
            item_id=outcome.item_id,
            received_at=outcome.received_at,
            reason=outcome.reason,
            details=outcome.details,
        )


class ItemDetailOut(BaseModel):
    item: ItemOut
    record: dict[str, Any] = Field(
        description="The item's record as it stands (the credit database's row)"
    )
    versions: list[dict[str, Any]] = Field(
        description="Every version, oldest first, with inbox_offset (null: it reached no inbox,"
        " as the department's own claim does not)"
    )
    actions: list[ActionOut] = Field(description="The department's actions on it")


class ActionAccepted(BaseModel):
    """An action the broker acknowledged on the department's inbound topic."""

    action_id: str = Field(description="Follow its outcome at GET /v1/actions/{action_id}")
    action: str
    item_id: str
    status: Literal["PENDING"] = "PENDING"
    inbound_topic: str
    inbound_offset: int

    @classmethod
    def of(cls, sent: SentAction) -> ActionAccepted:
        return cls(
            action_id=sent.action_id,
            action=sent.action,
            item_id=sent.item_id,
            inbound_topic=sent.topic,
            inbound_offset=sent.offset,
        )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operator: str | None = Field(default=None, max_length=100, description="经办人")


class ClaimIn(_Body):
    """认领: the push is the department's."""


class ReturnIn(_Body):
    """退回: the push is not the department's, and why."""

    reason: Literal[RETURN_REASONS] = Field(  # type: ignore[valid-type]
        description="NO_SUCH_ITEM 无此审批事项, SCOPE_NOT_IN_JURISDICTION 经营范围不属本部门,"
        " ADDRESS_NOT_IN_JURISDICTION 住所不属本辖区, OTHER 其他 (say why in reason_text)"
    )
    reason_text: str | None = Field(
        default=None, max_length=2000, validate_default=True, description="说明; required for OTHER"
    )

    @field_validator("reason_text")
    @classmethod
    def _said_for_other(cls, text: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("reason") == "OTHER" and not (text or "").strip():
            raise ValueError("a return for OTHER needs the reason in reason_text")
        return text


class StopIn(_Body):
    """终止推送: the item is not involved after all."""

    reason_text: str | None = Field(default=None, max_length=2000, description="说明")


class FeedbackIn(_Body):
    """反馈 on a restriction hit."""

    outcome: Literal["APPLIED", "NOT_APPLICABLE"] = Field(
        description="APPLIED 已实施限制, NOT_APPLICABLE 不适用 (with the reason)"
    )
    reason: str | None = Field(
        default=None,
        max_length=2000,
        validate_default=True,
        description="说明; required for NOT_APPLICABLE",
    )

    @field_validator("reason")
    @classmethod
    def _said_when_not_applicable(cls, reason: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("outcome") == "NOT_APPLICABLE" and not (reason or "").strip():
            raise ValueError("NOT_APPLICABLE needs the reason why the measure does not apply")
        return reason


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="The client's own key for this action: a POST sent again with the same key"
        " makes the same action id, applied once. Without it every POST is a new action.",
    ),
]
ItemId = Annotated[str, Path(min_length=1, max_length=100, description="The item's id")]


# -- the routes -------------------------------------------------------------------------------

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


@router.get("/inbox", tags=["inbox"], summary="The department's inbox items, in inbox order")
async def list_inbox(
    request: Request,
    department: Reader,
    kind: Annotated[str | None, Query(description="Kinds, comma-separated (push,hit …)")] = None,
    state: Annotated[
        str | None,
        Query(
            description="open (the default), any, or states comma-separated: "
            + ", ".join(ALL_STATES)
        ),
    ] = None,
    since: Annotated[date | None, Query(description="Made on this business day or later")] = None,
    until: Annotated[date | None, Query(description="Made on this business day or earlier")] = None,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of a page")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=500, description="Items per page")] = None,
) -> PageOut:
    service = _service(request)
    try:
        wanted = InboxFilter.parse(kind, state, since, until, cursor)
    except FilterError as error:
        raise InvalidInputError(error.message, field=error.field) from None
    page = await run_in_threadpool(
        _database, service.store.page, department.code, wanted, limit or service.settings.page_size
    )
    return PageOut(
        items=[ItemOut.of(item, service.clock) for item in page.items],
        next_cursor=page.next_cursor,
        more=page.more,
    )


@router.get("/inbox/{item_id}", tags=["inbox"], summary="One item with its history")
async def one_item(request: Request, item_id: ItemId, department: Reader) -> ItemDetailOut:
    service = _service(request)
    found: InboxItemDetail | None = await run_in_threadpool(
        _database, service.store.item, department.code, item_id
    )
    if found is None:
        raise _not_found("item", item_id, department)
    return ItemDetailOut(
        item=ItemOut.of(found.item, service.clock),
        record=found.record,
        versions=found.versions,
        actions=[ActionOut.of(a) for a in found.actions],
    )


@router.get("/actions/{action_id}", tags=["actions"], summary="What became of an action")
async def action_outcome(
    request: Request,
    department: Reader,
    action_id: Annotated[str, Path(min_length=1, max_length=100)],
) -> ActionOut:
    outcome = await run_in_threadpool(
        _database, _service(request).store.action, department.code, action_id
    )
    return ActionOut.of(outcome)


async def _push_action(
    request: Request,
    response: Response,
    department: TokenHolder,
    push_id: str,
    action: str,
    key: str | None,
    **fields: Any,
) -> ActionAccepted:
    service = _service(request)
    push = await _own(service, department, push_id, InboxKind.PUSH)
    action_id = _action_id(department, key)
    sent = await run_in_threadpool(
        _broker, service.actions.act_on_push, department.code, push, action, action_id, **fields
    )
    return _accepted(response, sent)


@router.post("/pushes/{push_id}/claim", tags=["actions"], status_code=202, summary="认领 a push")
async def claim(
    request: Request,
    response: Response,
    department: Acting,
    push_id: ItemId,
    idempotency_key: IdempotencyKey = None,
    body: ClaimIn | None = None,
) -> ActionAccepted:
    """The push is the department's: it must issue (or refuse) the licence by the licence
    deadline."""
    operator = body.operator if body else None
    return await _push_action(
        request, response, department, push_id, "CLAIM", idempotency_key, operator=operator
    )


@router.post("/pushes/{push_id}/return", tags=["actions"], status_code=202, summary="退回 a push")
async def return_push(
    request: Request,
    response: Response,
    department: Acting,
    push_id: ItemId,
    body: ReturnIn,
    idempotency_key: IdempotencyKey = None,
) -> ActionAccepted:
    """The push is not the department's: the registration authority routes it again."""
    return await _push_action(
        request,
        response,
        department,
        push_id,
        "RETURN",
        idempotency_key,
        return_reason=body.reason,
        reason_text=body.reason_text,
        operator=body.operator,
    )


@router.post("/pushes/{push_id}/stop", tags=["actions"], status_code=202, summary="终止 a push")
async def stop_push(
    request: Request,
    response: Response,
    department: Acting,
    push_id: ItemId,
    idempotency_key: IdempotencyKey = None,
    body: StopIn | None = None,
) -> ActionAccepted:
    """The item is not involved: the push ends without a licence."""
    return await _push_action(
        request,
        response,
        department,
        push_id,
        "STOP",
        idempotency_key,
        reason_text=body.reason_text if body else None,
        operator=body.operator if body else None,
    )


@router.post("/hits/{hit_id}/feedback", tags=["actions"], status_code=202, summary="反馈 on a hit")
async def feedback(
    request: Request,
    response: Response,
    department: Acting,
    hit_id: ItemId,
    body: FeedbackIn,
    idempotency_key: IdempotencyKey = None,
) -> ActionAccepted:
    """What the department did about the restriction: the latest feedback of a hit counts."""
    service = _service(request)
    hit = await _own(service, department, hit_id, InboxKind.HIT)
    feedback_id = _action_id(department, idempotency_key)
    sent = await run_in_threadpool(
        _broker,
        service.actions.give_feedback,
        department.code,
        hit,
        feedback_id,
        body.outcome,
        reason=body.reason,
        operator=body.operator,
    )
    return _accepted(response, sent)


async def _own(
    service: InboxService, department: TokenHolder, item_id: str, kind: InboxKind
) -> InboxItem:
    found = await run_in_threadpool(_database, service.store.find, department.code, item_id)
    if found is None or found.kind is not kind:
        raise _not_found(kind.value, item_id, department)
    return found


def _accepted(response: Response, sent: SentAction) -> ActionAccepted:
    """202, with where its outcome will be (``Location``)."""
    response.headers["Location"] = f"/v1/actions/{sent.action_id}"
    return ActionAccepted.of(sent)


def _action_id(department: TokenHolder, key: str | None) -> str:
    return inbox_action_id(department.code, key if key is not None else f"fresh-{uuid.uuid4()}")


def _not_found(what: str, item_id: str, department: TokenHolder) -> NotFoundError:
    return NotFoundError(
        f"no {what} {item_id!r} in the inbox of {department.code}: list it with GET /v1/inbox",
        field=f"{what}_id" if what in ("push", "hit", "item") else "id",
    )


def _database(read: Callable[..., Any], *args: Any) -> Any:
    try:
        return read(*args)
    except sa.exc.OperationalError as error:
        reason = str(getattr(error, "orig", error)).splitlines()[0]
        log_event(logger, "inbox.database_unreachable", reason=reason)
        raise ServiceUnavailableError(
            f"the credit database does not answer ({reason}): retry shortly",
            code="database_unavailable",
        ) from None


def _broker(send: Callable[..., SentAction], *args: Any, **kwargs: Any) -> SentAction:
    try:
        return send(*args, **kwargs)
    except NotDelivered as error:
        raise ServiceUnavailableError(
            f"the action was not acknowledged by the broker ({error}); nothing is confirmed:"
            " send it again with the same Idempotency-Key",
            code="not_delivered",
        ) from None


# -- health, metrics, the application ------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]


def create_app(
    store: InboxStore,
    actions: InboxActions,
    departments: Departments,
    settings: InboxSettings,
    clock: BusinessClock,
) -> FastAPI:
    """The inbox API; the producer's poller starts with the app (uvicorn's lifespan) and
    the producer is flushed when it stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        actions.start()
        try:
            yield
        finally:
            await run_in_threadpool(actions.stop)
            store.close()

    app = api_app(
        title="Xietong inbox API (协同 · 部门收件箱)",
        version="1",
        description=__doc__,
        lifespan=lifespan,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url="/v1/redoc",
    )
    app.state.service = InboxService(store, actions, departments, settings, clock)
    app.include_router(router)
    install_error_handlers(app, on_refusal=_log_refusal)
    metrics = CollectorRegistry()
    requests = Counter(
        "xietong_inbox_requests",
        "Inbox API requests, by route template, method and HTTP status",
        ("route", "method", "status"),
        registry=metrics,
    )
    latency = Histogram(
        "xietong_inbox_request_seconds",
        "Inbox API request latency, by route template and method",
        ("route", "method"),
        registry=metrics,
    )

    @app.get("/health", tags=["service"], summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["service"],
        summary="Whether the credit database answers (503 if not)",
        responses={
            503: {"model": HealthOut, "description": "The credit database does not answer."}
        },
    )
    def ready(response: Response) -> HealthOut:
        try:
            store.ping()
        except sa.exc.SQLAlchemyError as error:
            logger.warning("ready: credit database unreachable: %s", error)
            response.status_code = 503
            return HealthOut(status="degraded", database="unreachable")
        return HealthOut(status="ok", database="ok")

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    def prometheus_metrics() -> Response:
        body = generate_latest(metrics) + generate_latest(REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [route for route in (*router.routes, *app.routes) if hasattr(route, "path")]
    app.add_middleware(RequestMetrics, routes=routes, requests=requests, latency=latency)
    return app


def _log_refusal(request: Request, status: int, body: ErrorBody) -> None:
    if status in (401, 403):
        log_event(
            logger,
            "inbox.refused",
            reason=body.message,
            client=request.client.host if request.client else None,
        )


def build_app(settings: Settings, inbox: InboxSettings | None = None) -> FastAPI:
    """The service as ``xietong inbox serve`` runs it: reading the credit database
    (``CREDIT_DATABASE_URL``) read-only, writing as ``svc-inbox``, tokens checked against the
    registry database (``DATABASE_URL``). Fails at once when the action schemas are not
    registered."""
    from registry.settings import get_registry_settings
    from xietong.clock import clock_from_settings
    from xietong.kafka import KafkaClients

    inbox = inbox or InboxSettings()
    clock = clock_from_settings(settings.time_zone, settings.clock_offset, settings.clock_at)
    kafka = KafkaClients(settings, "inbox")
    actions = InboxActions(kafka, clock, inbox.produce_timeout_seconds)
    actions.check_registered()
    store = InboxStore(settings.credit_database_url, clock)
    directory = RegistryDirectory(
        settings.database_url, get_registry_settings().admin_token_sha256, inbox.token_cache_seconds
    )
    return create_app(store, actions, directory, inbox, clock)


def run_service(settings: Settings, inbox: InboxSettings | None = None) -> None:
    """Serve on ``inbox.host:inbox.port`` until SIGTERM or Ctrl-C."""
    import uvicorn

    from xietong.logs import configure

    configure()
    inbox = inbox or InboxSettings()
    app = build_app(settings, inbox)
    log_event(logger, "inbox.listening", host=inbox.host, port=inbox.port)
    uvicorn.run(
        app,
        host=inbox.host,
        port=inbox.port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )
