"""HTTP ingest: department systems POST batches of records and get a verdict per record.

For departments that can neither hand over exports nor open a database to the platform,
this connector is a small web service. A department posts its records in its own
column names, as its mapping file expects, and learns for each record whether it was
accepted (with its event id) or rejected (with every reason)::

    curl -sS http://127.0.0.1:8401/v1/records/licence \\
      -H "Authorization: Bearer $HZ_HEALTH_TOKEN" \\
      -H "Content-Type: application/json" \\
      -d '{"records": [{
            "记录编号": "XK-2026-0001", "版本": "1",
            "统一社会信用代码": "91330106MA2CD7Q4XU",
            "行政相对人名称": "杭州示例餐饮有限公司", "法定代表人": "王敏",
            "许可文书号": "杭卫公许〔2026〕1号", "许可类别": "普通",
            "许可证编号": "330100-2026-0001", "许可内容": "公共场所卫生许可（餐厅）",
            "许可决定日期": "2026年3月1日", "有效期自": "2026年3月1日",
            "有效期至": "长期", "当前状态": "有效"}]}'

    {"request_id": "0b6f…", "accepted": 1, "rejected": 0,
     "results": [{"index": 0, "status": "accepted", "event_id": "5d1e…"}]}

What it guarantees:

* **The department is the token's.** The bearer token is the department's registry API
  token (``xietong registry issue-token <department>``), verified through the registry's
  service layer (:class:`~registry.directory.RegistryDirectory`, the same check as the
  registry API's and the credit check's) against the registry database
  (``DATABASE_URL``); a verified token is trusted for ``TOKEN_CACHE_SECONDS``, so a
  revocation takes effect within that time. Whatever the body says, records are
  published as the token's department's, and only for the record types that department
  has a mapping file for. Every mapping's department must be registered in the registry.
* **An answer means the broker has it.** Accepted records are on their record type's
  topic and rejected ones on the dead-letter topic, acknowledged by Kafka, before the
  200 is sent. A client that gets no answer, or a 503, sends the batch again; event ids
  come from the department, record type, source record id and version, so re-sent
  records keep their ids (at-least-once, deduplicated downstream by event id).
* **Nothing is lost.** ``accepted + rejected`` is the number of records posted.

In Kafka Connect's terms the source partition is ``http:<department USCC>`` and the
source offset ``<request id>:<index>``. No offsets are committed: the client keeps its
records until it is answered. Refusals are the platform's error bodies
(:mod:`xietong.http_errors`). ``/openapi.json`` and ``/docs`` are the contract;
``/metrics`` serves the connector metrics for Prometheus.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi import Path as PathParameter
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client import Counter as MetricCounter
from pydantic import BaseModel, Field

from connectors.base import BATCH_SECONDS, DeliveryFailed, Publisher
from connectors.config import ConnectorConfig, HttpIngestConfig
from connectors.mapping import DepartmentMapping
from connectors.records import RecordVerdict, SourceRecord
from connectors.validation import Problem
from registry.directory import RegistryDirectory
from registry.settings import get_registry_settings
from schemas import CANONICAL_RECORD_TYPES
from xietong.http_errors import (
    ApiError,
    ForbiddenError,
    NotFoundError,
    ServiceUnavailableError,
    error_responses,
    install_error_handlers,
)
from xietong.kafka import KafkaClients
from xietong.logs import log_event

logger = logging.getLogger(__name__)

#: How long a request waits for the broker's acknowledgement before answering 503.
ACKNOWLEDGEMENT_TIMEOUT_SECONDS = 30.0
#: What a 503 asks the client to wait before sending the batch again.
RETRY_AFTER_SECONDS = 5
#: How long a verified token is trusted without asking the registry database again.
TOKEN_CACHE_SECONDS = 5.0


def log(event: str, **fields: Any) -> None:
    """One structured line per significant event."""
    log_event(logger, event, **fields)


REQUESTS = MetricCounter(
    "xietong_connector_http_requests",
    "Batches posted to the HTTP ingest, by HTTP status of the answer",
    ("connector", "department_uscc", "record_type", "status"),
)


# -- the contract: request and response bodies ------------------------------------------------


class RecordBatch(BaseModel):
    """A batch of one department's records of one record type."""

    records: list[Any] = Field(
        description=(
            "The records, each a JSON object keyed by the department's own column names as"
            " its mapping file expects. An item that is not an object is rejected on its own"
            " (reason json.not_object); the others are still processed."
        ),
        examples=[[{"记录编号": "XK-2026-0001", "统一社会信用代码": "91330106MA2CD7Q4XU"}]],
    )


class Rejection(BaseModel):
    """One reason a record was rejected (拒收原因)."""

    field: str = Field(description="The canonical field at fault; '' for the whole record.")
    code: str = Field(description="Machine-readable: uscc.check_character, date.invalid, …")
    message: str = Field(description="What was found and what was expected.")


class RecordAccepted(BaseModel):
    index: int = Field(description="Position of the record in the posted batch, from 0.")
    status: Literal["accepted"] = "accepted"
    event_id: str = Field(
        description="The record's event id on the platform; the same when the record is re-sent."
    )


class RecordRejected(BaseModel):
    index: int = Field(description="Position of the record in the posted batch, from 0.")
    status: Literal["rejected"] = "rejected"
    reasons: list[Rejection] = Field(
        description="Every problem found; the record is kept on the dead-letter topic."
    )


class BatchResult(BaseModel):
    """The verdict on every record of a batch, acknowledged by the broker."""

    request_id: str = Field(description="This request's id (UUID), as in the source offsets.")
    accepted: int
    rejected: int
    results: list[Annotated[RecordAccepted | RecordRejected, Field(discriminator="status")]]

    @classmethod
    def of(cls, request_id: str, verdicts: Sequence[RecordVerdict]) -> BatchResult:
        results: list[RecordAccepted | RecordRejected] = [
            RecordAccepted(index=index, event_id=verdict.event_id)
            if verdict.event_id is not None
            else RecordRejected(
                index=index, reasons=[Rejection(**p.as_dict()) for p in verdict.problems]
            )
            for index, verdict in enumerate(verdicts)
        ]
        accepted = sum(isinstance(result, RecordAccepted) for result in results)
        return cls(
            request_id=request_id,
            accepted=accepted,
            rejected=len(results) - accepted,
            results=results,
        )


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    connector: str


# -- who may post what --------------------------------------------------------------------------


def load_mappings(
    paths: Sequence[Path], registered: dict[str, str]
) -> dict[tuple[str, str], DepartmentMapping]:
    """The mapping files by (department USCC, record type), each department one the
    registry knows (``registered``: USCC → department code)."""
    mappings: dict[tuple[str, str], DepartmentMapping] = {}
    for path in paths:
        mapping = DepartmentMapping.load(path)
        department = mapping.department
        if department.uscc not in registered:
            raise ValueError(
                f"mapping file {path}: department {department.uscc} ({department.name}) is"
                " not registered in the registry, so it holds no token to post with; register"
                " it (xietong registry, POST /departments) or drop the mapping"
            )
        key = (department.uscc, mapping.record_type.name)
        if key in mappings:
            raise ValueError(
                f"mapping file {path}: department {department.uscc} already has a"
                f" {mapping.record_type.name} mapping in {mappings[key].origin}; keep one"
            )
        mappings[key] = mapping
    if not mappings:
        raise ValueError("no mapping files: list at least one under source.mappings")
    return mappings


# -- publishing a batch -------------------------------------------------------------------------


def _json_kind(item: Any) -> str:
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "boolean"
    if isinstance(item, int | float):
        return "number"
    return "string" if isinstance(item, str) else "array"


def source_record(department: str, request_id: str, index: int, item: Any) -> SourceRecord:
    """One posted record as a :class:`SourceRecord`; a non-object gets a read problem."""
    fields = item if isinstance(item, dict) else None
    problem = None
    if fields is None:
        problem = Problem(
            "",
            "json.not_object",
            f"record {index} is a JSON {_json_kind(item)}; each record must be an object of"
            " the department's columns",
        )
    return SourceRecord(
        source_partition=f"http:{department}",
        source_offset=f"{request_id}:{index}",
        position=f"request {request_id}, record {index}",
        raw=json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode(),
        fields=fields,
        read_problem=problem,
    )


@dataclass
class Intake:
    """One department's intake of one record type.

    The lock keeps the batches of one publisher apart: a publisher collects delivery
    failures for everything it produced, so a batch must be flushed and its failures
    taken before the next batch of that publisher is produced.
    """

    publisher: Publisher
    lock: threading.Lock


class HttpIngest:
    """The state of one HTTP ingest connector: who may post, and where records go.

    Built once at startup: one :class:`Publisher` per mapping file, all sharing one
    idempotent producer, and the registry's directory that verifies the tokens. Refuses
    (ValueError naming the file) a configuration that is not an HTTP source, or a
    mapping whose department the registry does not know (or a registry that does not
    answer).
    """

    def __init__(
        self, config: ConnectorConfig, clients: KafkaClients, directory: RegistryDirectory
    ) -> None:
        source = config.source
        if not isinstance(source, HttpIngestConfig):
            raise ValueError(f"connector {config.name}: its source is {source.kind}, not http")
        self.name = config.name
        self.max_batch = source.max_batch
        self.directory = directory
        try:
            registered = directory.departments_by_uscc()
        except ServiceUnavailableError as error:
            raise ValueError(f"connector {config.name}: {error.message}") from None
        mappings = load_mappings(source.mappings, registered)
        self.producer = clients.producer()
        self.intakes = {
            key: Intake(Publisher(config.name, mapping, clients, self.producer), threading.Lock())
            for key, mapping in mappings.items()
        }

    def record_types_of(self, department: str) -> list[str]:
        return sorted(record_type for uscc, record_type in self.intakes if uscc == department)

    def publish_batch(
        self, request_id: str, department: str, intake: Intake, records: Sequence[Any]
    ) -> BatchResult:
        """Publish every record, wait for the broker; raises DeliveryFailed if it did not ack."""
        with intake.lock, BATCH_SECONDS.labels(self.name).time():
            verdicts = [
                intake.publisher.publish(source_record(department, request_id, index, item))
                for index, item in enumerate(records)
            ]
            intake.publisher.flush(ACKNOWLEDGEMENT_TIMEOUT_SECONDS)
        return BatchResult.of(request_id, verdicts)

    def close(self) -> None:
        """On shutdown: give records of timed-out requests a last chance, then disconnect.

        Whatever is still undelivered after that was answered with 503, so its department
        sends it again; it is dropped rather than holding the shutdown.
        """
        undelivered = self.producer.flush(ACKNOWLEDGEMENT_TIMEOUT_SECONDS)
        if undelivered:
            log("undelivered_at_shutdown", connector=self.name, records=undelivered)
            self.producer.purge()
        self.producer.close()


# -- the web service ----------------------------------------------------------------------------

BEARER = HTTPBearer(
    auto_error=False,
    description="The department's registry API token. The registry keeps only its SHA-256.",
)

router = APIRouter()


def current_ingest(request: Request) -> HttpIngest:
    ingest: HttpIngest = request.app.state.ingest
    return ingest


def authenticated_department(
    ingest: Annotated[HttpIngest, Depends(current_ingest)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> str:
    """The USCC of the department whose registry token was presented; 401 for no token or
    an unknown or revoked one, 403 for an administrator's (it is no department's)."""
    try:
        token = None if credentials is None else credentials.credentials
        holder = (token and ingest.directory.cached(token)) or ingest.directory.verify(token)
    except ApiError as error:
        REQUESTS.labels(ingest.name, "", "", str(error.status)).inc()
        log("refused", status=error.status, reason=error.message)
        raise
    return holder.uscc


class BatchTooLargeError(ApiError):
    """More records in one request than the connector's ``max_batch``."""

    status = 413
    code = "batch_too_large"


@router.post(
    "/v1/records/{record_type}",
    summary="Publish a batch of one record type",
    responses=error_responses(
        {
            401: "No token, or an unknown or revoked one.",
            403: "An administrator's token, or the department has no mapping for this record type.",
            404: "Not a record type of the platform.",
            413: "More records than the connector's max_batch.",
            503: "The broker did not acknowledge the batch, or the registry database (which"
            " holds the tokens) does not answer: send it again after Retry-After seconds.",
        }
    ),
)
def post_records(
    record_type: Annotated[
        str,
        PathParameter(
            description="The canonical record type the records become.",
            json_schema_extra={"enum": list(CANONICAL_RECORD_TYPES)},
        ),
    ],
    batch: RecordBatch,
    department: Annotated[str, Depends(authenticated_department)],
    ingest: Annotated[HttpIngest, Depends(current_ingest)],
) -> BatchResult:
    """Map, validate and publish each record; answer per record once Kafka has them all.

    Accepted records go to the record type's topic, rejected ones to the dead-letter
    topic with every reason. Without an answer, or on 503, send the same batch again:
    re-sent records keep their event ids.
    """
    # A plain function: FastAPI runs it in its threadpool, so waiting for the broker's
    # acknowledgement never blocks the event loop.
    started = time.perf_counter()
    request_id = str(uuid.uuid4())
    context = {"request_id": request_id, "department": department, "record_type": record_type}

    def refuse(error: ApiError) -> ApiError:
        REQUESTS.labels(ingest.name, department, record_type, str(error.status)).inc()
        log("refused", **context, status=error.status, reason=error.message)
        return error

    if record_type not in CANONICAL_RECORD_TYPES:
        raise refuse(
            NotFoundError(
                f"{record_type!r} is not a record type; record types are"
                f" {', '.join(CANONICAL_RECORD_TYPES)}",
                field="record_type",
            )
        )
    intake = ingest.intakes.get((department, record_type))
    if intake is None:
        allowed = ", ".join(ingest.record_types_of(department)) or "none yet"
        raise refuse(
            ForbiddenError(
                f"department {department} has no mapping for record type {record_type!r};"
                f" it may post: {allowed}",
                field="record_type",
            )
        )
    if len(batch.records) > ingest.max_batch:
        raise refuse(
            BatchTooLargeError(
                f"{len(batch.records)} records in one request; at most {ingest.max_batch} are"
                " accepted: split the batch",
                field="records",
            )
        )
    try:
        result = ingest.publish_batch(request_id, department, intake, batch.records)
    except DeliveryFailed as error:
        raise refuse(
            ServiceUnavailableError(
                f"request {request_id}: the broker did not acknowledge every record ({error});"
                f" send the whole batch again in {RETRY_AFTER_SECONDS} s — re-sent records"
                " keep their event ids",
                retry_after=RETRY_AFTER_SECONDS,
                code="not_acknowledged",
            )
        ) from error
    REQUESTS.labels(ingest.name, department, record_type, "200").inc()
    log(
        "batch",
        **context,
        records=len(batch.records),
        accepted=result.accepted,
        rejected=result.rejected,
        seconds=round(time.perf_counter() - started, 3),
    )
    return result


@router.get("/health", summary="Liveness")
def health(ingest: Annotated[HttpIngest, Depends(current_ingest)]) -> Health:
    return Health(connector=ingest.name)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(
    config: ConnectorConfig, clients: KafkaClients, directory: RegistryDirectory
) -> FastAPI:
    """The web service of one HTTP ingest connector, its tokens verified by ``directory``;
    refuses a bad configuration at once."""
    ingest = HttpIngest(config, clients, directory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ingest.close()

    app = FastAPI(
        title=f"Xietong HTTP ingest ({config.name})",
        summary="Department systems publish their records to the platform.",
        description=__doc__ or "",
        version="1",
        lifespan=lifespan,
    )
    app.state.ingest = ingest
    app.include_router(router)
    install_error_handlers(app)
    return app


def serve(config: ConnectorConfig, clients: KafkaClients) -> None:
    """Run the connector's web service until SIGINT or SIGTERM (``xietong connect run``)."""
    source = config.source
    if not isinstance(source, HttpIngestConfig):
        raise ValueError(f"connector {config.name}: its source is {source.kind}, not http")
    directory = RegistryDirectory(
        clients.settings.database_url,
        get_registry_settings().admin_token_sha256,
        TOKEN_CACHE_SECONDS,
    )
    app = create_app(config, clients, directory)
    # Our structured lines only; uvicorn configures its own loggers.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    log(
        "serving",
        connector=config.name,
        address=f"http://{source.host}:{source.port}",
        intakes=[f"{uscc}/{record_type}" for uscc, record_type in app.state.ingest.intakes],
    )
    uvicorn.run(app, host=source.host, port=source.port)
