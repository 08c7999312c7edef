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
* **A batch is written whole or not at all.** The body is checked whole first — its
  size (``max_body_bytes``, refused with 413 as it arrives), strict JSON (no ``NaN`` or
  ``Infinity``), the contract (422), the number of records (``max_batch``, 413) — and
  every record is mapped, validated and Avro-encoded before anything is produced. Then
  the batch's events and dead letters, and the request's answer, are written in one
  Kafka transaction of the intake's own transactional producer
  (``xietong.connectors.<connector>.<department USCC>.<record type>``, so a restarted
  ingest fences its predecessor). The answer is 200 once it committed; 5xx only when the
  platform failed, and then the transaction was aborted: a ``read_committed`` consumer
  (the sink, the processors) sees nothing of the batch.
* **An Idempotency-Key makes a retry write nothing twice.** A client may send
  ``Idempotency-Key`` (or ``X-Request-Id``); it becomes the request id, so source
  offsets and dead-letter ids are the same on a retry. A request with a key already
  answered, and the same record type and body, gets the first answer back
  (``Idempotent-Replayed: true``) and writes nothing; with another body it is 422; while
  the first is still being written, 409. Answers are kept on the compacted topic
  ``platform.http-ingest-answers`` for its retention (7 days), written in the batch's
  own transaction and read back before the first request is served, so they survive a
  restart. Without a key a client's retry is a new request: its records keep their
  event ids (deduplicated downstream by event id).
* **Nothing is lost.** ``accepted + rejected`` is the number of records posted; a record
  that cannot be mapped or validated — or holds a lone UTF-16 surrogate (``\\ud800``) —
  is rejected on its own with its index and field, and kept on the dead-letter topic.

In Kafka Connect's terms the source partition is ``http:<department USCC>`` and the
source offset ``<request id>:<index>``. No offsets are committed: the client keeps its
records until it is answered. Refusals are the platform's error bodies
(:mod:`xietong.http_errors`). ``/openapi.json`` and ``/docs`` are the contract;
``/metrics`` serves the connector metrics for Prometheus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from confluent_kafka import KafkaError, KafkaException, Producer
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi import Path as PathParameter
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client import Counter as MetricCounter
from pydantic import BaseModel, Field, ValidationError

from connectors.base import BATCH_SECONDS, DeliveryFailed, Publisher
from connectors.config import ConnectorConfig, HttpIngestConfig
from connectors.mapping import DepartmentMapping
from connectors.records import Encoded, RecordEncoder, RecordVerdict, SourceRecord
from connectors.validation import Problem
from registry.directory import RegistryDirectory
from registry.settings import get_registry_settings
from schemas import CANONICAL_RECORD_TYPES
from xietong.http_errors import (
    ApiError,
    ContentTooLargeError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
    error_responses,
    install_error_handlers,
)
from xietong.kafka import KafkaClients, produce
from xietong.logs import configure, log_event
from xietong.topics import HTTP_INGEST_ANSWERS, transactional_id
from xietong.web import api_app

logger = logging.getLogger(__name__)

#: How long a request waits for the broker (acknowledgements, the commit) before 503.
ACKNOWLEDGEMENT_TIMEOUT_SECONDS = 30.0
#: What a 503 asks the client to wait before sending the batch again.
RETRY_AFTER_SECONDS = 5
#: How long a verified token is trusted without asking the registry database again.
TOKEN_CACHE_SECONDS = 5.0
#: What an Idempotency-Key (or X-Request-Id) may be: it becomes the request id, inside
#: source offsets (``<request id>:<index>``) and dead-letter ids.
REQUEST_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def log(event: str, **fields: Any) -> None:
    """One structured line per significant event."""
    log_event(logger, event, **fields)


REQUESTS = MetricCounter(
    "xietong_connector_http_requests",
    "Batches posted to the HTTP ingest, by HTTP status of the answer",
    ("connector", "department_uscc", "record_type", "status"),
)
IDEMPOTENT_REPLAYS = MetricCounter(
    "xietong_connector_http_idempotent_replays",
    "Requests answered again from an earlier answer to the same Idempotency-Key",
    ("connector", "department_uscc", "record_type"),
)
ABORTED_TRANSACTIONS = MetricCounter(
    "xietong_connector_http_aborted_transactions",
    "Batches whose transaction was aborted because the platform failed (answered 5xx)",
    ("connector", "department_uscc", "record_type"),
)


# -- the contract: request and response bodies ------------------------------------------------


class RecordBatch(BaseModel):
    """A batch of one department's records of one record type."""

    records: list[Any] = Field(
        description=(
            "The records, each a JSON object keyed by the department's own column names as"
            " its mapping file expects. An item that is not an object is rejected on its own"
            " (reason json.not_object); the others are still processed. The body is strict"
            " JSON in UTF-8 (no NaN or Infinity) of at most the connector's max_body_bytes."
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
    """The verdict on every record of a batch, committed to the broker."""

    request_id: str = Field(
        description="This request's id, as in the source offsets: its Idempotency-Key (or"
        " X-Request-Id) when it sent one, else a UUID."
    )
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


# -- reading a request whole, before anything is produced --------------------------------------


class BatchTooLargeError(ApiError):
    """More records in one request than the connector's ``max_batch``."""

    status = 413
    code = "batch_too_large"


class RequestInProgressError(ApiError):
    """A request with the same Idempotency-Key is still being written."""

    status = 409
    code = "conflict"


class NotStrictJson(ValueError):
    """A token Python's parser takes but JSON (RFC 8259) does not have."""


def _refuse_constant(token: str) -> None:
    raise NotStrictJson(token)


def parse_batch(body: bytes, max_batch: int) -> list[Any]:
    """The records of a posted body, or the refusal that says what is wrong with it:
    422 for a body that is not strict UTF-8 JSON of the contract, 413 for too many records."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInputError(
            f"the body is not UTF-8: byte 0x{body[error.start]:02x} at byte {error.start}"
            " cannot start or continue a character; send JSON in UTF-8",
            code="invalid_json",
        ) from None
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant)
    except NotStrictJson as error:
        raise InvalidInputError(
            f"the body holds {error.args[0]}, which is not JSON (RFC 8259 has no NaN or"
            " Infinity): send a finite number, or null for no value",
            code="invalid_json",
        ) from None
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"the body is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
            f" (character {error.pos})",
            code="invalid_json",
        ) from None
    except RecursionError:
        raise InvalidInputError(
            "the body nests arrays or objects too deeply to be read; a record is one object"
            " of column → value",
            code="invalid_json",
        ) from None
    except ValueError:  # the only other: an integer of more digits than Python converts
        raise InvalidInputError(
            "the body holds an integer of more than 4300 digits, which no field takes",
            code="invalid_json",
        ) from None
    try:
        batch = RecordBatch.model_validate(parsed)
    except ValidationError as error:
        problems = [(".".join(map(str, e["loc"])), e["msg"]) for e in error.errors()]
        raise InvalidInputError(
            "; ".join(f"{where or 'body'}: {what}" for where, what in problems),
            field=problems[0][0] or None,
            code="validation_error",
        ) from None
    if len(batch.records) > max_batch:
        raise BatchTooLargeError(
            f"{len(batch.records)} records in one request; at most {max_batch} are"
            " accepted: split the batch",
            field="records",
        )
    return batch.records


def _json_kind(item: Any) -> str:
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "boolean"
    if isinstance(item, int | float):
        return "number"
    return "string" if isinstance(item, str) else "array"


def lone_surrogate(record: Mapping[str, Any]) -> tuple[str, str, int] | None:
    """Where a record holds a lone UTF-16 surrogate (JSON's ``\\ud800`` without its pair),
    which no UTF-8 text, Avro string or database column can hold: the first column that
    does, the surrogate, and its position in the text (from 1); None when none does.

    A column's name counts as its own text; values nested in lists or objects count as
    their column's.
    """
    for column, value in record.items():
        pending: list[Any] = [column, value]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                if item.isascii():
                    continue
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as error:
                    return column, item[error.start], error.start + 1
            elif isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
    return None


def source_record(
    department: str,
    request_id: str,
    index: int,
    item: Any,
    fields_by_column: Mapping[str, str] | None = None,
) -> SourceRecord:
    """One posted record as a :class:`SourceRecord`; a record that is not an object, or
    holds a lone surrogate, gets a read problem naming it (and the field of its column,
    from ``fields_by_column``)."""
    fields = item if isinstance(item, dict) else None
    problem = None
    raw_ascii = False
    if fields is None:
        problem = Problem(
            "",
            "json.not_object",
            f"record {index} is a JSON {_json_kind(item)}; each record must be an object of"
            " the department's columns",
        )
    elif (found := lone_surrogate(fields)) is not None:
        column, surrogate, position = found
        problem = Problem(
            (fields_by_column or {}).get(column, ""),
            "text.surrogate",
            f"record {index}, column {column!r}: holds the lone UTF-16 surrogate"
            f" \\u{ord(surrogate):04x} at character {position}, which is no character; send"
            " the character itself (or both halves of its surrogate pair)",
        )
        # The posted text, as JSON escapes: the surrogate has no UTF-8 bytes.
        fields, raw_ascii = None, True
    try:
        raw = json.dumps(item, ensure_ascii=raw_ascii, separators=(",", ":")).encode()
    except RecursionError:  # parsed, only just: nested as deep as Python recurses
        problem = Problem(
            "",
            "json.too_deep",
            f"record {index} nests arrays or objects too deeply to be kept; each record must"
            " be an object of the department's columns",
        )
        fields, raw = None, b""
    return SourceRecord(
        source_partition=f"http:{department}",
        source_offset=f"{request_id}:{index}",
        position=f"request {request_id}, record {index}",
        raw=raw,
        fields=fields,
        read_problem=problem,
    )


def request_fingerprint(record_type: str, body: bytes) -> str:
    """What makes two requests with one Idempotency-Key the same request: the record type
    they post and the body's bytes, as SHA-256."""
    digest = hashlib.sha256(record_type.encode())
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


# -- answered requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A request answered 200: its fingerprint and, for a request with a key of the
    client's, the answer's exact bytes (None without one: nobody can ask for it again)."""

    fingerprint: str
    body: bytes | None
    answered_at_ms: int


class AnsweredRequests:
    """The answers this connector gave, by (department, request id), for replaying them.

    Each answer is written to ``platform.http-ingest-answers`` in the transaction of its
    batch, so an answer is there exactly when its batch is; :meth:`load` reads them back
    (``read_committed``) at the first request after a start or after a commit whose
    outcome was not known. Answers older than the topic's retention are forgotten.

    A request without a key is recorded too, without its answer's bytes: only to learn,
    after a commit whose outcome was not known, whether its batch was written.
    """

    def __init__(self, connector: str, clients: KafkaClients) -> None:
        self.connector = connector
        self.clients = clients
        self.topic = HTTP_INGEST_ANSWERS.name
        self.window_ms = HTTP_INGEST_ANSWERS.retention_ms
        self.loaded = False
        self._answers: OrderedDict[tuple[str, str], Answer] = OrderedDict()
        self._in_flight: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def key(self, department: str, request_id: str) -> bytes:
        return json.dumps([self.connector, department, request_id], ensure_ascii=False).encode()

    def record(
        self, department: str, request_id: str, fingerprint: str, body: bytes | None
    ) -> tuple[bytes, bytes]:
        """The answer's record (key, value) for the topic."""
        value = {"request_sha256": fingerprint, "answer": None if body is None else body.decode()}
        return self.key(department, request_id), json.dumps(value, ensure_ascii=False).encode()

    def get(self, department: str, request_id: str) -> Answer | None:
        with self._lock:
            answer = self._answers.get((department, request_id))
        if answer is None or answer.answered_at_ms < _now_ms() - self.window_ms:
            return None
        return answer

    def remember(
        self, department: str, request_id: str, fingerprint: str, body: bytes | None
    ) -> None:
        self._put((department, request_id), Answer(fingerprint, body, _now_ms()))

    @contextmanager
    def claim(self, department: str, request_id: str) -> Iterator[None]:
        """Hold the request id while its request is answered; 409 while another holds it."""
        key = (department, request_id)
        with self._lock:
            if key in self._in_flight:
                raise RequestInProgressError(
                    f"request {request_id} of department {department} is still being written;"
                    " wait for its answer, then send it again to get that answer",
                    field="Idempotency-Key",
                )
            self._in_flight.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.discard(key)

    def load(self) -> None:
        """Read every committed answer of this connector to the end of the topic."""
        answers: dict[tuple[str, str], Answer] = {}
        oldest = _now_ms() - self.window_ms
        for message in self.clients.read_to_end(self.topic, "http-answers"):
            connector, department, request_id = json.loads(message.key() or b"[]")
            answered_at = message.timestamp()[1]
            value = message.value()
            if connector != self.connector or value is None or answered_at < oldest:
                continue
            stored = json.loads(value)
            body = stored["answer"]
            answers[(department, request_id)] = Answer(
                stored["request_sha256"], None if body is None else body.encode(), answered_at
            )
        with self._lock:
            self._answers = OrderedDict(sorted(answers.items(), key=lambda a: a[1].answered_at_ms))
        self.loaded = True

    def _put(self, key: tuple[str, str], answer: Answer) -> None:
        oldest = answer.answered_at_ms - self.window_ms
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while self._answers:
                first = next(iter(self._answers.values()))
                if first.answered_at_ms >= oldest:
                    break
                self._answers.popitem(last=False)


def _now_ms() -> int:
    # Bookkeeping on the wall clock, like the broker's record timestamps: not business time.
    return time.time_ns() // 1_000_000


# -- writing a batch in one transaction ------------------------------------------------------


class BatchNotWritten(RuntimeError):
    """The platform failed before the batch committed; its transaction was aborted."""


class CommitInDoubt(RuntimeError):
    """The commit was sent but not confirmed: the broker decides whether the batch is there."""


class Intake:
    """One department's intake of one record type: its encoder and its own transactional
    producer, made (``init_transactions``, fencing any predecessor with the same
    transactional id and settling its unfinished transaction) on first use.

    The lock keeps the batches of one intake apart: a transactional producer has one
    transaction at a time.
    """

    def __init__(
        self,
        connector: str,
        mapping: DepartmentMapping,
        clients: KafkaClients,
        answers: AnsweredRequests,
    ) -> None:
        self.connector = connector
        self.mapping = mapping
        self.clients = clients
        self.answers = answers
        self.department = mapping.department.uscc
        self.record_type = mapping.record_type.name
        self.transactional_id = transactional_id(
            clients.service, f"{connector}.{self.department}.{self.record_type}"
        )
        self.encoder = RecordEncoder(connector, mapping, clients)
        self.fields_by_column = {
            rule.column: name for name, rule in mapping.spec.fields.items() if rule.column
        }
        self.lock = threading.Lock()
        self._publisher: Publisher | None = None
        self._labels = (connector, self.department, self.record_type)

    def encode(self, request_id: str, records: Sequence[Any]) -> list[Encoded]:
        """Every record mapped, validated and encoded (pure). None is larger than a Kafka
        message: the encoder makes a record too large for one its dead letter
        (``record.too_large``), so nothing fails inside the transaction for its size."""
        return [
            self.encoder.encode(
                source_record(self.department, request_id, index, item, self.fields_by_column)
            )
            for index, item in enumerate(records)
        ]

    def ready(self) -> Publisher:
        """The intake's publisher on its transactional producer, made if it has none."""
        if self._publisher is None:
            producer = self.clients.producer(**{"transactional.id": self.transactional_id})
            try:
                producer.init_transactions(ACKNOWLEDGEMENT_TIMEOUT_SECONDS)
            except KafkaException:
                _close_producer(producer)
                raise
            self._publisher = Publisher(self.connector, self.mapping, self.clients, producer)
        return self._publisher

    def write(self, encoded: Sequence[Encoded], answer: tuple[bytes, bytes]) -> None:
        """Produce the batch and its answer in one transaction and commit it; on any
        failure abort it (:class:`BatchNotWritten`), or raise :class:`CommitInDoubt`."""
        with self.lock:
            try:
                publisher = self.ready()
            except KafkaException as error:
                raise BatchNotWritten(f"no transactional producer: {error}") from error
            producer = publisher.producer
            try:
                producer.begin_transaction()
                for item in encoded:
                    publisher.send(item)
                key, value = answer
                produce(producer, self.answers.topic, key=key, value=value)
                publisher.flush(ACKNOWLEDGEMENT_TIMEOUT_SECONDS)
            except Exception as error:
                self._abort(publisher)
                # A fatal producer error (fenced) surfaces from inside a delivery report as
                # the SystemError it caused.
                failure = error.__cause__ if isinstance(error, SystemError) else error
                if isinstance(failure, KafkaException | DeliveryFailed):
                    raise BatchNotWritten(str(failure)) from error
                raise
            self._commit(publisher)

    def _commit(self, publisher: Publisher) -> None:
        for attempt in (1, 2):
            try:
                publisher.producer.commit_transaction(ACKNOWLEDGEMENT_TIMEOUT_SECONDS)
                return
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if error.txn_requires_abort():
                    self._abort(publisher)
                    raise BatchNotWritten(f"the commit failed: {error}") from exception
                if not error.retriable() or attempt == 2:
                    self._discard()
                    raise CommitInDoubt(str(error)) from exception

    def _abort(self, publisher: Publisher) -> None:
        ABORTED_TRANSACTIONS.labels(*self._labels).inc()
        try:
            publisher.producer.abort_transaction(ACKNOWLEDGEMENT_TIMEOUT_SECONDS)
        except KafkaException as error:
            # Never committed, so never visible; a new producer aborts it for good.
            log("abort_failed", transactional_id=self.transactional_id, error=str(error))
            self._discard()
            return
        # The aborted records' delivery reports, taken so they count against no later batch.
        with suppress(DeliveryFailed):
            publisher.flush(ACKNOWLEDGEMENT_TIMEOUT_SECONDS)

    def _discard(self) -> None:
        if self._publisher is not None:
            producer: Producer = self._publisher.producer
            self._publisher = None
            _close_producer(producer)

    def close(self) -> None:
        with self.lock:
            self._discard()


def _close_producer(producer: Producer) -> None:
    """Close a producer at shutdown or when it is given up on. Closing one given up on,
    confluent-kafka tries to abort what it was doing and warns that it cannot, or raises
    its fatal error again — which is why it was given up on, and said so in the answer
    and the log."""
    with warnings.catch_warnings(), suppress(KafkaException):
        warnings.simplefilter("ignore", RuntimeWarning)
        producer.close()


class HttpIngest:
    """The state of one HTTP ingest connector: who may post, where records go, and the
    answers given.

    Built once at startup: one :class:`Intake` per mapping file and the registry's
    directory that verifies the tokens. Refuses (ValueError naming the file) a
    configuration that is not an HTTP source, or a mapping whose department the registry
    does not know (or a registry that does not answer). The broker is first needed by
    :meth:`prepare`, at startup or, if it did not answer then, at the next request.
    """

    def __init__(
        self, config: ConnectorConfig, clients: KafkaClients, directory: RegistryDirectory
    ) -> None:
        source = config.source
        if not isinstance(source, HttpIngestConfig):
            raise ValueError(f"connector {config.name}: its source is {source.kind}, not http")
        self.name = config.name
        self.max_batch = source.max_batch
        self.max_body_bytes = source.max_body_bytes
        self.directory = directory
        try:
            registered = directory.departments_by_uscc()
        except ServiceUnavailableError as error:
            raise ValueError(f"connector {config.name}: {error.message}") from None
        mappings = load_mappings(source.mappings, registered)
        self.answers = AnsweredRequests(config.name, clients)
        self.intakes = {
            key: Intake(config.name, mapping, clients, self.answers)
            for key, mapping in mappings.items()
        }
        self._preparing = threading.Lock()

    def record_types_of(self, department: str) -> list[str]:
        return sorted(record_type for uscc, record_type in self.intakes if uscc == department)

    def prepare(self) -> None:
        """Before answering: every intake's producer made (which settles any transaction a
        predecessor or a failed commit left open), then the answers read back — in that
        order, so that an answer committed late is read. Raises KafkaException or
        TimeoutError when the broker does not answer; the next request tries again."""
        if self.answers.loaded:
            return
        with self._preparing:
            if self.answers.loaded:
                return
            for intake in self.intakes.values():
                with intake.lock:
                    intake.ready()
            self.answers.load()

    def earlier_answer(self, department: str, request_id: str, fingerprint: str) -> bytes | None:
        """The answer already given to this request, to give again; None for a new request.
        422 when the request id was answered for another request, or is one the platform
        gave a request without a key (its answer is not kept)."""
        answered = self.answers.get(department, request_id)
        if answered is None:
            return None
        if answered.body is None:
            raise InvalidInputError(
                f"{request_id!r} is the id the platform gave a request sent without an"
                " Idempotency-Key; a retry with a key gets the first answer back only when the"
                " first request sent it — use a key of your own",
                field="Idempotency-Key",
                code="idempotency_key_reused",
            )
        if answered.fingerprint != fingerprint:
            raise InvalidInputError(
                f"Idempotency-Key {request_id!r} was used for another request of department"
                f" {department} (another record type or body); a retry must send the same"
                " body — use a new key for a new batch",
                field="Idempotency-Key",
                code="idempotency_key_reused",
            )
        return answered.body

    def publish_batch(
        self,
        request_id: str,
        keyed: bool,
        fingerprint: str,
        department: str,
        intake: Intake,
        records: Sequence[Any],
    ) -> tuple[BatchResult, bytes]:
        """Encode every record, then write them and the answer (its bytes kept when the
        client ``keyed`` the request) in one transaction; the answer, and its bytes. Raises
        :class:`BatchNotWritten` when nothing was written and :class:`CommitInDoubt` when
        the broker could not be asked whether it was."""
        with BATCH_SECONDS.labels(self.name).time():
            encoded = intake.encode(request_id, records)
            result = BatchResult.of(request_id, [item.verdict for item in encoded])
            body = result.model_dump_json().encode()
            kept = body if keyed else None
            answer = self.answers.record(department, request_id, fingerprint, kept)
            try:
                intake.write(encoded, answer)
            except CommitInDoubt as doubt:
                self.answers.loaded = False
                try:
                    self.prepare()
                except (KafkaException, TimeoutError) as error:
                    raise CommitInDoubt(f"{doubt}; then {error}") from error
                settled = self.answers.get(department, request_id)
                if settled is None or settled.fingerprint != fingerprint:
                    raise BatchNotWritten(f"the commit failed: {doubt}") from doubt
                return result, body
        self.answers.remember(department, request_id, fingerprint, kept)
        return result, body

    def close(self) -> None:
        """On shutdown: every intake's producer closed (no transaction is open between
        requests; one cut short is aborted by the broker)."""
        for intake in self.intakes.values():
            intake.close()


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


async def posted_body(
    request: Request,
    department: Annotated[str, Depends(authenticated_department)],
    ingest: Annotated[HttpIngest, Depends(current_ingest)],
) -> bytes:
    """The request body, read as it arrives and refused (413) as soon as it is larger
    than ``max_body_bytes`` — or declares so in its Content-Length — never buffered whole."""
    limit = ingest.max_body_bytes

    def too_large(size: str) -> ContentTooLargeError:
        record_type = request.path_params.get("record_type", "")
        REQUESTS.labels(ingest.name, department, record_type, "413").inc()
        log("refused", department=department, status=413, reason=f"body of {size} bytes")
        return ContentTooLargeError(
            f"the request body is {size} bytes; this ingest takes at most {limit} bytes"
            " (max_body_bytes): split the batch"
        )

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(declared)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(f"more than {limit}")
    return bytes(body)


def request_key(idempotency_key: str | None, x_request_id: str | None) -> str | None:
    """The client's key of this request, from either header; 422 when they differ."""
    if idempotency_key and x_request_id and idempotency_key != x_request_id:
        raise InvalidInputError(
            f"Idempotency-Key {idempotency_key!r} and X-Request-Id {x_request_id!r} differ;"
            " send one of them",
            field="Idempotency-Key",
        )
    return idempotency_key or x_request_id


KEY_DESCRIPTION = (
    "The client's key of this request (letters, digits, '.', '_', '-'; up to 128), e.g. a"
    " UUID: it becomes the request id, and a retry with the same key, record type and body"
    " writes nothing twice and gets the first answer back (with Idempotent-Replayed: true)."
    " Answers are kept 7 days."
)


@router.post(
    "/v1/records/{record_type}",
    summary="Publish a batch of one record type",
    response_model=BatchResult,
    responses={
        200: {
            "description": "Every record's verdict; the batch is committed.",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "'true' when this is the answer to an earlier request"
                    " with the same Idempotency-Key (nothing was written again).",
                    "schema": {"type": "string"},
                }
            },
        },
        **error_responses(
            {
                401: "No token, or an unknown or revoked one.",
                403: "An administrator's token, or the department has no mapping for this"
                " record type.",
                404: "Not a record type of the platform.",
                409: "A request with the same Idempotency-Key is still being written: wait"
                " for its answer.",
                413: "A body over the connector's max_body_bytes (the message says the"
                " limit), more records than its max_batch, or a record too large for the"
                " broker (field records.<index>). Nothing was written.",
                422: "A body that is not strict JSON in UTF-8 (NaN, Infinity, broken"
                " syntax) or not the contract, an invalid Idempotency-Key, or one already"
                " used for another body. Nothing was written.",
                503: "The broker did not take the batch (nothing of it was written), or the"
                " registry database (which holds the tokens) does not answer: send it"
                " again after Retry-After seconds.",
            }
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/RecordBatch"}}
            },
        }
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
    department: Annotated[str, Depends(authenticated_department)],
    ingest: Annotated[HttpIngest, Depends(current_ingest)],
    body: Annotated[bytes, Depends(posted_body)],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", pattern=REQUEST_KEY_PATTERN, description=KEY_DESCRIPTION),
    ] = None,
    x_request_id: Annotated[
        str | None,
        Header(
            alias="X-Request-Id",
            pattern=REQUEST_KEY_PATTERN,
            description="Taken as the Idempotency-Key when that is not sent.",
        ),
    ] = None,
) -> Response:
    """Map, validate and encode every record, then write them in one transaction; answer
    per record once it committed.

    Accepted records go to the record type's topic, rejected ones to the dead-letter
    topic with every reason. Without an answer, or on 503, send the same batch again —
    with the same Idempotency-Key, it is written once and answered as the first time.
    """
    # A plain function: FastAPI runs it in its threadpool, so waiting for the broker's
    # acknowledgement never blocks the event loop.
    started = time.perf_counter()
    context = {"department": department, "record_type": record_type}

    def refuse(error: ApiError) -> ApiError:
        REQUESTS.labels(ingest.name, department, record_type, str(error.status)).inc()
        log("refused", **context, status=error.status, reason=error.message)
        return error

    def unavailable(message: str) -> ApiError:
        return refuse(
            ServiceUnavailableError(
                f"{message}; send the whole batch again in {RETRY_AFTER_SECONDS} s — with the"
                " same Idempotency-Key it is written once, and re-sent records keep their"
                " event ids",
                retry_after=RETRY_AFTER_SECONDS,
                code="not_acknowledged",
            )
        )

    try:
        key = request_key(idempotency_key, x_request_id)
    except ApiError as error:
        raise refuse(error) from None
    request_id = key or str(uuid.uuid4())
    context["request_id"] = request_id
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
    try:
        ingest.prepare()
    except (KafkaException, TimeoutError) as error:
        raise unavailable(f"request {request_id}: the broker does not answer ({error})") from None
    fingerprint = request_fingerprint(record_type, body)
    try:
        with ingest.answers.claim(department, request_id):
            earlier = ingest.earlier_answer(department, request_id, fingerprint)
            if earlier is not None:
                IDEMPOTENT_REPLAYS.labels(ingest.name, department, record_type).inc()
                REQUESTS.labels(ingest.name, department, record_type, "200").inc()
                log("replayed", **context)
                return Response(
                    earlier, media_type="application/json", headers={"Idempotent-Replayed": "true"}
                )
            records = parse_batch(body, ingest.max_batch)
            result, answer = ingest.publish_batch(
                request_id, key is not None, fingerprint, department, intake, records
            )
    except ApiError as error:
        raise refuse(error) from None
    except BatchNotWritten as error:
        raise unavailable(
            f"request {request_id}: the batch was not written, nothing of it is kept ({error})"
        ) from error
    except CommitInDoubt as error:
        raise unavailable(
            f"request {request_id}: the broker did not confirm the commit ({error})"
        ) from error
    REQUESTS.labels(ingest.name, department, record_type, "200").inc()
    log(
        "batch",
        **context,
        records=len(records),
        accepted=result.accepted,
        rejected=result.rejected,
        seconds=round(time.perf_counter() - started, 3),
    )
    return Response(answer, media_type="application/json")


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
        # Ready before the first request when the broker answers: predecessors fenced,
        # the answers read. When it does not, the first request tries again (503 till then).
        try:
            await run_in_threadpool(ingest.prepare)
        except (KafkaException, TimeoutError) as error:
            log("not_ready", connector=ingest.name, error=str(error))
        yield
        ingest.close()

    app = api_app(
        title=f"Xietong HTTP ingest ({config.name})",
        summary="Department systems publish their records to the platform.",
        description=__doc__ or "",
        version="1",
        lifespan=lifespan,
    )
    app.state.ingest = ingest
    app.include_router(router)
    install_error_handlers(app)
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        # The body is read by posted_body (size first, then strict JSON), not by FastAPI,
        # so its model is added to the document here.
        document = generated()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault(
            "RecordBatch",
            RecordBatch.model_json_schema(ref_template="#/components/schemas/{model}"),
        )
        return document

    app.openapi = openapi  # type: ignore[method-assign]
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
    configure()
    log(
        "serving",
        connector=config.name,
        address=f"http://{source.host}:{source.port}",
        intakes=[f"{uscc}/{record_type}" for uscc, record_type in app.state.ingest.intakes],
    )
    # log_config=None: uvicorn's loggers write through the JSON lines of configure()
    uvicorn.run(app, host=source.host, port=source.port, log_config=None)
