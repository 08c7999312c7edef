"""The credit-check API (FastAPI): ``GET /v1/checks``, ``/ready`` and ``/metrics``, over
the state (:mod:`~streams.credit_check.state`), the registry's tokens and the matter-event
recorder; :func:`build_app` puts them together as ``xietong credit-check serve`` runs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

import streams.credit_check
from registry.directory import RegistryDirectory
from schemas import MATTER_EVENT
from streams.credit_check.contract import (
    ERROR_RESPONSES,
    CreditCheckOut,
    ListingOut,
    MatterDateParameter,
    MatterOut,
    MatterRefParameter,
    MatterTypeParameter,
    MeasureOut,
    ReadyOut,
    UsccParameter,
)
from streams.credit_check.recorder import MatterEventRecorder
from streams.credit_check.rules import CheckingDepartment, assess, credit_check_id, matter_event
from streams.credit_check.settings import CreditCheckSettings
from streams.credit_check.state import CreditCheckTopics, CreditState
from streams.runtime import RecordWriter
from xietong.clock import BusinessClock, clock_from_settings
from xietong.http_errors import (
    ErrorBody,
    InvalidInputError,
    ServiceUnavailableError,
    install_error_handlers,
    refuse_undeclared_query,
)
from xietong.kafka import KafkaClients
from xietong.logs import log_event
from xietong.settings import Settings
from xietong.uscc import uscc_problems
from xietong.web import api_app

logger = logging.getLogger(__name__)

CHECKS = Counter(
    "xietong_credit_check_checks",
    "Credit checks answered, by checking department, matter type and verdict",
    ("department", "matter_type", "verdict"),
)
CHECK_SECONDS = Histogram(
    "xietong_credit_check_seconds",
    "Time to answer a credit check (token, state lookup, answer), in seconds",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0),
)
REFUSED = Counter(
    "xietong_credit_check_refused",
    "Credit checks refused, by reason (not_authenticated, forbidden, validation_error, not_ready)",
    ("reason",),
)

BEARER = HTTPBearer(auto_error=False, description="The department's registry API token.")


class Departments(Protocol):
    """Who holds a token (:class:`~registry.directory.RegistryDirectory`, or a test's own)."""

    def cached(self, token: str) -> CheckingDepartment | None: ...

    def verify(self, token: str | None) -> CheckingDepartment: ...

    def matter_type_name(self, code: str) -> str | None: ...


@dataclass(frozen=True)
class CreditCheckService:
    """What the API answers from and records to (``app.state.service``)."""

    state: CreditState
    departments: Departments
    recorder: MatterEventRecorder
    rules: CreditCheckSettings
    clock: BusinessClock


def _service(request: Request) -> CreditCheckService:
    service_: CreditCheckService = request.app.state.service
    return service_


async def checking_department(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> CheckingDepartment:
    """The department whose token this is (401/403 otherwise); then, parameters the
    operation does not declare are refused, so a misspelt one never goes unnoticed."""
    departments = _service(request).departments
    token = None if credentials is None else credentials.credentials
    known = None if token is None else departments.cached(token)
    if known is None:
        known = await run_in_threadpool(departments.verify, token)
    refuse_undeclared_query(request)
    return known


router = APIRouter()


@router.get(
    "/v1/checks",
    tags=["checks"],
    summary="Check an entity's credit for a matter (嵌入式联合奖惩)",
    responses=ERROR_RESPONSES,
)
async def check(
    request: Request,
    uscc: UsccParameter,
    matter_type: MatterTypeParameter,
    checker: Annotated[CheckingDepartment, Depends(checking_department)],
    matter_date: MatterDateParameter = None,
    matter_ref: MatterRefParameter = None,
) -> CreditCheckOut:
    """The entity's listings in force on the matter date, the measures that restrict this
    matter type for them, and the verdict; the check is recorded as a matter event
    (source CREDIT_CHECK) on credit.matter-events."""
    started = time.perf_counter()
    service_ = _service(request)
    problems = uscc_problems(uscc)
    if problems:
        raise InvalidInputError(
            f"uscc {uscc!r} is not a valid USCC: {'; '.join(p.message for p in problems)}",
            field="uscc",
        )
    state = service_.state
    await _until_ready(state, service_.rules.ready_wait_seconds)
    catalog = state.catalog()
    matter_name = catalog.matter_type_names.get(matter_type)
    if matter_name is None:
        matter_name = await run_in_threadpool(service_.departments.matter_type_name, matter_type)
        if matter_name is None:
            raise InvalidInputError(
                f"matter_type {matter_type!r} is not in the registry's catalog of matter"
                f" types; those with measures: {', '.join(sorted(catalog.matter_type_names))}",
                field="matter_type",
            )
    day = matter_date or service_.clock.today()
    listings = state.listings.of(uscc)
    found = assess(
        listings,
        catalog.by_matter_type.get(matter_type, ()),
        day,
        sector=checker.sector,
        matter_type=matter_type,
    )
    check_id = credit_check_id(checker.code, uscc, matter_type, matter_ref, day)
    entity_name = listings[-1].entity_name if listings else None
    checked_at = service_.clock.now().astimezone(UTC)
    answer = CreditCheckOut(
        check_id=check_id,
        uscc=uscc,
        entity_name=entity_name,
        department=checker.code,
        matter=MatterOut(
            matter_type=matter_type,
            matter_type_name=matter_name,
            matter_date=day,
            matter_ref=matter_ref,
        ),
        verdict=found.verdict,
        listings=[ListingOut.of(lst, catalog.list_type_names) for lst in found.in_force],
        measures=[MeasureOut.of(hit, checker) for hit in found.hits],
        checked_at=checked_at,
    )
    service_.recorder.record(
        matter_event(
            check_id=check_id,
            department=checker,
            uscc=uscc,
            entity_name=entity_name,
            matter_type=matter_type,
            matter_ref=matter_ref,
            matter_date=day,
            checked_at=checked_at,
        )
    )
    CHECKS.labels(checker.code, matter_type, found.verdict.value).inc()
    CHECK_SECONDS.observe(time.perf_counter() - started)
    return answer


@router.get(
    "/ready",
    tags=["service"],
    summary="Whether the state is loaded to the topics' end (503 while loading)",
    responses={503: {"model": ReadyOut, "description": "Loading, or loading failed."}},
)
def ready(request: Request, response: Response) -> ReadyOut:
    state = _service(request).state
    if state.ready.is_set():
        return ReadyOut(status="ready", **state.progress())
    response.status_code = 503
    status = "failed" if state.failure else "loading"
    return ReadyOut(status=status, reason=state.failure, **state.progress())


@router.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_app(
    state: CreditState,
    departments: Departments,
    recorder: MatterEventRecorder,
    rules: CreditCheckSettings,
    clock: BusinessClock,
) -> FastAPI:
    """The credit-check API over ``state``, answering on ``clock``'s days; loading starts,
    and the recorder with it, when the app starts (uvicorn's lifespan), and both stop
    with it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        recorder.start()
        try:
            yield
        finally:
            await run_in_threadpool(recorder.stop)
            state.stop()

    app = api_app(
        title="Xietong credit check (协同 · 嵌入式联合奖惩)",
        version="1",
        description=streams.credit_check.__doc__,
        lifespan=lifespan,
    )
    app.state.service = CreditCheckService(state, departments, recorder, rules, clock)
    app.include_router(router)
    install_error_handlers(app, on_refusal=_count_refusal)
    return app


async def _until_ready(state: CreditState, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not state.ready.is_set():
        if state.failure is not None:
            raise ServiceUnavailableError(
                f"the credit state could not be loaded: {state.failure}", code="not_ready"
            )
        if time.monotonic() >= deadline:
            progress = state.progress()
            raise ServiceUnavailableError(
                "the credit state is still being loaded"
                f" ({progress['list_entries_read']} list entries read so far): retry shortly",
                code="not_ready",
            )
        await asyncio.sleep(0.02)


# -- the service ------------------------------------------------------------------------------


def build_app(
    settings: Settings,
    rules: CreditCheckSettings | None = None,
    topics: CreditCheckTopics | None = None,
) -> FastAPI:
    """The service as ``xietong credit-check serve`` runs it: connected as ``svc-streams``,
    tokens checked against the registry database (``DATABASE_URL``). Fails at once when
    the matter-event schema is not registered."""
    from registry.settings import get_registry_settings

    rules = rules or CreditCheckSettings()
    topics = topics or CreditCheckTopics()
    kafka = KafkaClients(settings, "streams")
    writer = RecordWriter(kafka, MATTER_EVENT)
    writer.check_registered()
    directory = RegistryDirectory(
        settings.database_url,
        get_registry_settings().admin_token_sha256,
        rules.token_cache_seconds,
    )
    recorder = MatterEventRecorder(
        kafka.producer(), topics.matter_events.name, writer.encode, rules.matter_event_queue
    )
    clock = clock_from_settings(settings.time_zone, settings.clock_offset, settings.clock_at)
    state = CreditState(kafka, topics, clock, rules.load_timeout_seconds)
    return create_app(state, directory, recorder, rules, clock)


def run_service(
    settings: Settings,
    rules: CreditCheckSettings | None = None,
    topics: CreditCheckTopics | None = None,
) -> None:
    """Serve checks on ``rules.host:rules.port`` until SIGTERM or Ctrl-C."""
    import uvicorn

    from xietong.logs import configure

    configure()
    rules = rules or CreditCheckSettings()
    app = build_app(settings, rules, topics)
    log_event(logger, "credit_check.listening", host=rules.host, port=rules.port)
    # No access log: one line per check would cost more than the check; /metrics counts them.
    uvicorn.run(
        app,
        host=rules.host,
        port=rules.port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )


def _count_refusal(request: Request, status: int, body: ErrorBody) -> None:
    REFUSED.labels(body.error).inc()
    if status in (401, 403):
        log_event(
            logger,
            "credit_check.refused",
            reason=body.message,
            client=request.client.host if request.client else None,
        )
