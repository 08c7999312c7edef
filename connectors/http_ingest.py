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

* **The department is the token's.** The credentials file lists, per department, the
  SHA-256 of its bearer token (the platform never stores tokens)::

      # credentials.yaml — token_sha256 is `printf %s "$TOKEN" | sha256sum`
      - department_uscc: 11330100EUHUXQEE4F
        token_sha256: 3f0c…

  Whatever the body says, records are published as the authenticated department's,
  and only for the record types that department has a mapping file for.
* **An answer means the broker has it.** Accepted records are on their record type's
  topic and rejected ones on the dead-letter topic, acknowledged by Kafka, before the
  200 is sent. A client that gets no answer, or a 503, sends the batch again; event ids
  come from the department, record type, source record id and version, so re-sent
  records keep their ids (at-least-once, deduplicated downstream by event id).
* **Nothing is lost.** ``accepted + rejected`` is the number of records posted.

In Kafka Connect's terms the source partition is ``http:<department USCC>`` and the
source offset ``<request id>:<index>``. No offsets are committed: the client keeps its
records until it is answered. ``/openapi.json`` and ``/docs`` are the contract;
``/metrics`` serves the connector metrics for Prometheus.
"""

from __future__ import annotations

import hashlib
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
import yaml
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParameter
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client import Counter as MetricCounter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.base import BATCH_SECONDS, DeliveryFailed, Publisher
from connectors.config import ConnectorConfig, HttpIngestConfig
from connectors.mapping import DepartmentMapping
from connectors.records import RecordVerdict, SourceRecord
from connectors.validation import Problem, check_uscc
from schemas import CANONICAL_RECORD_TYPES
from xietong.kafka import KafkaClients
from xietong.logs import log_event

logger = logging.getLogger(__name__)

#: How long a request waits for the broker's acknowledgement before answering 503.
ACKNOWLEDGEMENT_TIMEOUT_SECONDS = 30.0
#: What a 503 asks the client to wait before sending the batch again.
RETRY_AFTER_SECONDS = 5


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


class ErrorMessage(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    connector: str


# -- who may post what --------------------------------------------------------------------------


class Credential(BaseModel):
    """One entry of the credentials file: a department and the digest of one of its tokens."""

    model_config = ConfigDict(extra="forbid")

    department_uscc: str
    token_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")

    @field_validator("department_uscc")
    @classmethod
    def _valid_uscc(cls, value: str) -> str:
        problems = check_uscc("department_uscc", value)
        if problems:
            raise ValueError("; ".join(problem.message for problem in problems))
        return value

    @field_validator("token_sha256")
    @classmethod
    def _lower_case(cls, value: str) -> str:
        return value.lower()


class DepartmentCredentials:
    """Token digests → department USCC, read from the connector's credentials file.

    A department may have several tokens (to rotate them); a token belongs to one
    department only.
    """

    def __init__(self, path: Path, departments_by_digest: dict[str, str]) -> None:
        self.path = path
        self._departments_by_digest = departments_by_digest
        self.departments = frozenset(departments_by_digest.values())

    @classmethod
    def load(cls, path: Path) -> DepartmentCredentials:
        """Read the file; a ValueError names the file, the entry and what to change."""
        try:
            entries = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"credentials file {path}: {error}") from error
        if not isinstance(entries, list):
            raise ValueError(
                f"credentials file {path}: expected a list of"
                " {department_uscc, token_sha256} entries"
            )
        departments_by_digest: dict[str, str] = {}
        for number, entry in enumerate(entries, 1):
            where = f"credentials file {path}, entry {number}"
            if isinstance(entry, dict) and "token" in entry:
                raise ValueError(
                    f"{where}: holds a token; store only token_sha256, the SHA-256 of the"
                    ' token (printf %s "$TOKEN" | sha256sum)'
                )
            try:
                credential = Credential.model_validate(entry)
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in e['loc']) or 'entry'}: {e['msg']}"
                    for e in error.errors()
                )
                raise ValueError(f"{where}: {problems}") from None
            holder = departments_by_digest.setdefault(
                credential.token_sha256, credential.department_uscc
            )
            if holder != credential.department_uscc:
                raise ValueError(
                    f"{where}: the same token digest is listed for {holder} and"
                    f" {credential.department_uscc}; each department needs its own token"
                )
        return cls(path, departments_by_digest)

    def department_of(self, token: str) -> str | None:
        """The USCC of the department holding ``token``, or None for an unknown token."""
        return self._departments_by_digest.get(hashlib.sha256(token.encode()).hexdigest())


def load_mappings(
    paths: Sequence[Path], credentials: DepartmentCredentials
) -> dict[tuple[str, str], DepartmentMapping]:
    """The mapping files by (department USCC, record type), checked against the credentials."""
    mappings: dict[tuple[str, str], DepartmentMapping] = {}
    for path in paths:
        mapping = DepartmentMapping.load(path)
        department = mapping.department
        if department.uscc not in credentials.departments:
            raise ValueError(
                f"mapping file {path}: department {department.uscc} ({department.name}) has no"
                f" credential in {credentials.path}; add its token_sha256 there or drop the mapping"
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

    Built once at startup: the credentials file, one :class:`Publisher` per mapping file,
    all sharing one idempotent producer. Refuses (ValueError naming the file) a
    configuration that is not an HTTP source, an unreadable credentials file, or a
    mapping whose department has no credential.
    """

    def __init__(self, config: ConnectorConfig, clients: KafkaClients) -> None:
        source = config.source
        if not isinstance(source, HttpIngestConfig):
            raise ValueError(f"connector {config.name}: its source is {source.kind}, not http")
        self.name = config.name
        self.max_batch = source.max_batch
        self.credentials = DepartmentCredentials.load(source.credentials)
        mappings = load_mappings(source.mappings, self.credentials)
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
    description="The department's token. The platform keeps only its SHA-256.",
)

router = APIRouter()


def current_ingest(request: Request) -> HttpIngest:
    ingest: HttpIngest = request.app.state.ingest
    return ingest


def authenticated_department(
    ingest: Annotated[HttpIngest, Depends(current_ingest)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> str:
    """The USCC of the department whose bearer token was presented; 401 otherwise."""
    if credentials is None:
        detail = "no bearer token: send Authorization: Bearer <your department's token>"
    else:
        department = ingest.credentials.department_of(credentials.credentials)
        if department is not None:
            return department
        detail = "unknown token: ask the platform team to register your token's SHA-256"
    REQUESTS.labels(ingest.name, "", "", "401").inc()
    log("refused", status=401, reason=detail)
    raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


@router.post(
    "/v1/records/{record_type}",
    summary="Publish a batch of one record type",
    responses={
        401: {
            "model": ErrorMessage,
            "description": "No token, or a token the platform does not know.",
        },
        403: {
            "model": ErrorMessage,
            "description": "The department has no mapping for this record type.",
        },
        404: {"model": ErrorMessage, "description": "Not a record type of the platform."},
        413: {"model": ErrorMessage, "description": "More records than the connector's max_batch."},
        503: {
            "model": ErrorMessage,
            "description": "The broker did not acknowledge the batch: send it again"
            " after Retry-After seconds.",
        },
    },
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

    def refuse(status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
        REQUESTS.labels(ingest.name, department, record_type, str(status)).inc()
        log("refused", **context, status=status, reason=detail)
        return HTTPException(status, detail, headers=headers)

    if record_type not in CANONICAL_RECORD_TYPES:
        raise refuse(
            404,
            f"{record_type!r} is not a record type; record types are"
            f" {', '.join(CANONICAL_RECORD_TYPES)}",
        )
    intake = ingest.intakes.get((department, record_type))
    if intake is None:
        allowed = ", ".join(ingest.record_types_of(department)) or "none yet"
        raise refuse(
            403,
            f"department {department} has no mapping for record type {record_type!r};"
            f" it may post: {allowed}",
        )
    if len(batch.records) > ingest.max_batch:
        raise refuse(
            413,
            f"{len(batch.records)} records in one request; at most {ingest.max_batch} are"
            " accepted: split the batch",
        )
    try:
        result = ingest.publish_batch(request_id, department, intake, batch.records)
    except DeliveryFailed as error:
        raise refuse(
            503,
            f"request {request_id}: the broker did not acknowledge every record ({error});"
            f" send the whole batch again in {RETRY_AFTER_SECONDS} s — re-sent records keep"
            " their event ids",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
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


def create_app(config: ConnectorConfig, clients: KafkaClients) -> FastAPI:
    """The web service of one HTTP ingest connector; refuses a bad configuration at once."""
    ingest = HttpIngest(config, clients)

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
    return app


def serve(config: ConnectorConfig, clients: KafkaClients) -> None:
    """Run the connector's web service until SIGINT or SIGTERM (``xietong connect run``)."""
    source = config.source
    if not isinstance(source, HttpIngestConfig):
        raise ValueError(f"connector {config.name}: its source is {source.kind}, not http")
    app = create_app(config, clients)
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
