"""Helpers of the stream processors' integration tests: the registry's catalog on its
topics, departments onboarded as themselves, a worker of ``xietong streams <name>`` as a
process of its own, what the tests send as the connectors and the departments would,
reading what an entity got on a topic, and the barrier that shows nothing more is coming.

A processor's test module runs one worker for the whole module (starting one takes
seconds); the kill test kills and restarts that same worker.

**Proving an absence.** "Nothing more came" is shown by a barrier, never by a pause: a
worker reads each partition of an input topic in order and sends what it makes in that
order through one producer, so once the output of a record sent *after* the input has
arrived, everything the input made has arrived too. :func:`barrier` sends that record
about another entity whose USCC falls in the same partition (:func:`partition_mate`) and
waits for what it makes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partialmethod
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialDeletion,
)
from confluent_kafka.schema_registry import record_subject_name_strategy
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import SecretStr

from registry.acl import department_acls, issue_kafka_password, service_acls_on_department_topics
from registry.audit import Actor
from registry.db import session_factory, transaction
from registry.grants import DepartmentGrant, inbound_topic
from registry.publisher import OutboxRelay
from registry.service import load_catalog
from schemas import (
    CREDIT_LIST_ENTRY,
    DEPARTMENT_ACTION,
    LICENCE,
    MATTER_EVENT,
    PENALTY,
    REGISTRATION,
    RESTRICTION_FEEDBACK,
    RecordType,
    register_all,
)
from streams.runtime import uscc_partition
from tests.kafka_helpers import ReadMessage, TopicWindow, eventually
from xietong import topics
from xietong.access import Grant, reconcile
from xietong.kafka import KafkaClients, schema_registry_credentials
from xietong.settings import Settings
from xietong.topics import DEPARTMENT_TOPICS, STREAMS_INTERNAL_TOPIC_PREFIX, apply_topics
from xietong.uscc import make_uscc


def publish_catalog(registry_url: str, settings: Settings, kafka: KafkaClients) -> None:
    """The sample province's catalog and departments, loaded into a fresh registry database
    and published to the registry's topics by the registry's own relay."""
    apply_topics(kafka.admin(), settings)
    register_all(kafka.schema_registry())
    with transaction(session_factory(registry_url)) as session:
        load_catalog(session, Actor.system("test-streams"))
    relay = OutboxRelay(session_factory(registry_url), KafkaClients(settings, "registry"))
    while relay.publish_pending(limit=500):
        pass


class Onboarding:
    """Departments given a Kafka principal, their two topics, their ACLs and the services'
    side of them — added to what the broker holds, never replacing it (other tests' and
    the registry's grants stay), and taken away again at the end."""

    def __init__(self, kafka: KafkaClients, settings: Settings) -> None:
        self.admin = kafka.admin()
        self.settings = settings
        self.clients: dict[str, KafkaClients] = {}
        self._acls: set[Grant] = set()

    def onboard(self, code: str) -> KafkaClients:
        password = issue_kafka_password(self.admin, code)
        self.clients[code] = KafkaClients(
            self.settings.model_copy(
                update={"kafka_username": f"dept-{code}", "kafka_password": SecretStr(password)}
            )
        )
        apply_topics(self.admin, self.settings, [t.spec(code) for t in DEPARTMENT_TOPICS])
        acls = department_acls(DepartmentGrant.for_department(code))
        acls |= service_acls_on_department_topics(code)
        for future in self.admin.create_acls([grant.binding() for grant in acls]).values():
            future.result()
        self._acls |= acls
        return self.clients[code]

    def remove_topics(self, code: str) -> None:
        """Delete a department's two topics (one onboarded during a test, or left by an
        interrupted run)."""
        names = [topic.name(code) for topic in DEPARTMENT_TOPICS]
        present = self.admin.list_topics(timeout=10).topics
        doomed = [name for name in names if name in present]
        if doomed:
            for future in self.admin.delete_topics(doomed).values():
                future.result()

    def offboard_all(self) -> None:
        # Nothing is desired of the grants this onboarding made: they are deleted.
        reconcile(self.admin, (), owns=self._acls.__contains__)
        deletions: list[UserScramCredentialAlteration] = [
            UserScramCredentialDeletion(f"dept-{code}", ScramMechanism.SCRAM_SHA_512)
            for code in self.clients
        ]
        if deletions:
            for future in self.admin.alter_user_scram_credentials(deletions).values():
                future.result()


def until_ready(
    process: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool], timeout: float
) -> None:
    """Until ``ready()`` holds for a process just started; if it exits first, or is not
    ready in ``timeout`` seconds (it is killed then), fail with the end of its log."""
    deadline = time.monotonic() + timeout
    while not ready():
        problem = None
        if process.poll() is not None:
            problem = f"pid {process.pid} exited"
        elif time.monotonic() > deadline:
            problem = f"pid {process.pid} was not ready in {timeout} s"
            process.kill()
            process.wait(10)
        if problem:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise AssertionError(f"{problem}; {log} ends with:\n{tail}")
        time.sleep(0.2)


def stop_process(
    process: subprocess.Popen[bytes], grace: float, how: signal.Signals = signal.SIGTERM
) -> None:
    """Stop a process this run started: ``how``, then SIGKILL if it has not exited within
    ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(how)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def schema_registry_environment(settings: Settings) -> dict[str, str]:
    """The variables that give a process with a home of its own the schema registry
    credentials the stack's clients send (none when the registry asks for none)."""
    credentials = schema_registry_credentials(settings)
    if credentials is None:
        return {}
    username, password = credentials
    return {
        "XIETONG_SCHEMA_REGISTRY_USERNAME": username,
        "XIETONG_SCHEMA_REGISTRY_PASSWORD": password,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: A test worker's timers, quick enough for a test to wait on them.
QUICK_TIMERS = {"TICK_INTERVAL": "0.5", "INBOX_REFRESH_INTERVAL": "2"}


@dataclass
class Worker:
    """``xietong streams <command>`` as a process of its own; ready when its log has one
    more ``ready_event`` line."""

    command: str
    ready_event: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def of(cls, processor: str, log: Path, **settings: str) -> Worker:
        """A worker of ``processor`` (``dual-notice``, ``joint-punishment``) with quick
        timers, its metrics on a free port, and its ``settings`` (names without the
        processor's ``XIETONG_<PROCESSOR>_`` prefix)."""
        prefix = f"XIETONG_{processor.upper().replace('-', '_')}_"
        wanted = {**QUICK_TIMERS, "METRICS_PORT": str(free_port()), **settings}
        return cls(
            processor,
            f"{processor.replace('-', '_')}_ready",
            log,
            {prefix + name: value for name, value in wanted.items()},
        )

    @property
    def metrics_port(self) -> int:
        prefix = f"XIETONG_{self.command.upper().replace('-', '_')}_"
        return int(self.env[f"{prefix}METRICS_PORT"])

    def start(self) -> None:
        ready_before = self._ready_lines()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "app.cli",
                    "streams",
                    self.command,
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=log,
                env={**os.environ, **self.env},
                cwd=Path(__file__).parents[1],
            )
        # Killed if it is late: no second worker may start beside it (its tables are locked).
        until_ready(self.process, self.log, lambda: self._ready_lines() > ready_before, 90)

    def _ready_lines(self) -> int:
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count(f'"event": "{self.ready_event}"')

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=30)


@contextmanager
def running(processor: str, log: Path, **settings: str) -> Iterator[Worker]:
    """A started :meth:`Worker.of`, stopped at the end: a test module's worker fixture."""
    worker = Worker.of(processor, log, **settings)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


class Platform:
    """What the tests send: records as the connectors (and the credit check) publish
    them, and what departments write to their own inbound topics, as themselves."""

    def __init__(self, kafka: KafkaClients, departments: Onboarding) -> None:
        self.kafka = kafka
        self.departments = departments
        self._producer = kafka.producer()
        self._serializers: dict[tuple[str, str], Any] = {}

    def _serializer(self, clients: KafkaClients, record_type: RecordType) -> Any:
        """One serializer per principal and record type; a record that many topics carry
        is registered under its record name."""
        key = (clients.settings.kafka_username or "", record_type.name)
        if key not in self._serializers:
            options = {}
            if record_type.subject_name:
                options["subject.name.strategy"] = record_subject_name_strategy
            self._serializers[key] = clients.avro_serializer(record_type.schema_str, **options)
        return self._serializers[key]

    def send(self, record_type: RecordType, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` on its record type's topic, keyed by its USCC; acknowledged."""
        topic = record_type.topic.name
        serialize = self._serializer(self.kafka, record_type)
        value = serialize(record, SerializationContext(topic, MessageField.VALUE))
        self._producer.produce(topic, key=record["uscc"].encode(), value=value)
        assert self._producer.flush(10) == 0, f"{topic}: {record['uscc']} not acknowledged"
        return record

    def send_aborted(self, record_type: RecordType, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` on its topic inside a transaction that is then aborted: what the HTTP
        ingest leaves of a batch it answered 5xx (its department sends it again)."""
        topic = record_type.topic.name
        serialize = self._serializer(self.kafka, record_type)
        producer = self.kafka.producer(**{"transactional.id": f"test-aborted-{uuid.uuid4()}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(
            topic,
            key=record["uscc"].encode(),
            value=serialize(record, SerializationContext(topic, MessageField.VALUE)),
        )
        assert producer.flush(10) == 0, f"{topic}: {record['uscc']} not acknowledged"
        producer.abort_transaction(30)
        return record

    def write_inbound(
        self,
        record_type: RecordType,
        department: str,
        record: dict[str, Any],
        key: str | None = None,
    ) -> dict[str, Any]:
        """The department writes ``record`` to its own inbound topic, as itself, keyed by
        ``key`` (by default the record's USCC)."""
        clients = self.departments.clients[department]
        topic = inbound_topic(department)
        serialize = self._serializer(clients, record_type)
        producer = clients.producer()
        errors: list[Any] = []
        producer.produce(
            topic,
            key=(key or record["uscc"]).encode(),
            value=serialize(record, SerializationContext(topic, MessageField.VALUE)),
            on_delivery=lambda error, _: errors.append(error),
        )
        producer.flush(10)
        assert errors == [None], f"{topic}: {errors}"
        return record

    # 双告知: registrations and licences in, department actions from the inbound topics;
    # 联合惩戒: list entries, penalties and matters in, 反馈 from the inbound topics.
    register = partialmethod(send, REGISTRATION)
    license = partialmethod(send, LICENCE)
    act = partialmethod(write_inbound, DEPARTMENT_ACTION)
    list = partialmethod(send, CREDIT_LIST_ENTRY)
    penalize = partialmethod(send, PENALTY)
    matter = partialmethod(send, MATTER_EVENT)
    feed_back = partialmethod(write_inbound, RESTRICTION_FEEDBACK)


class SteadyFeed:
    """Records sent on their record type's topic from a thread of their own, ``batch`` at
    a time with a short pause between — the load a worker is killed under — and where
    each one landed, (partition, offset) by USCC."""

    def __init__(
        self,
        kafka: KafkaClients,
        record_type: RecordType,
        records: list[dict[str, Any]],
        batch: int,
    ) -> None:
        self.topic = record_type.topic.name
        self.records = records
        self.batch = batch
        self.positions: dict[str, tuple[int, int]] = {}
        self._serialize = kafka.avro_serializer(record_type.schema_str)
        self._producer = kafka.producer(**{"linger.ms": 0})
        self._thread = threading.Thread(target=self._send)

    def _produced(self, error: Any, message: Any) -> None:
        assert error is None, f"{self.topic}: {error}"
        self.positions[message.key().decode()] = (message.partition(), message.offset())

    def _send(self) -> None:
        context = SerializationContext(self.topic, MessageField.VALUE)
        for index, record in enumerate(self.records):
            self._producer.produce(
                self.topic,
                key=record["uscc"].encode(),
                value=self._serialize(record, context),
                on_delivery=self._produced,
            )
            if index % self.batch == self.batch - 1:
                self._producer.flush(10)
                time.sleep(0.05)
        self._producer.flush(10)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()


class Watch:
    """What a test's entity got on a topic since the watch began."""

    def __init__(self, kafka: KafkaClients, topic: str, key: str) -> None:
        self.window = TopicWindow(kafka, topic)
        self.key = key.encode()

    def records(self) -> list[dict[str, Any]]:
        return [m.value for m in self.window.read() if m.key == self.key]

    def until(
        self, holds: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        return eventually(
            self.records,
            holds,
            timeout,
            lambda found: f"{self.window.topic}: not within {timeout}s: {found}",
        )


def partition_mate(kafka: KafkaClients, uscc: str, division: str | None = None) -> str:
    """A new entity of ``division`` (by default ``uscc``'s) whose records share ``uscc``'s
    partition on every USCC-keyed topic (the platform's partitioner, CRC-32 of the key)."""
    partitions = kafka.settings.uscc_partitions
    wanted = uscc_partition(uscc.encode(), partitions)
    while True:
        mate = make_uscc(uscc[:2], division or uscc[2:8])
        if mate != uscc and uscc_partition(mate.encode(), partitions) == wanted:
            return mate


def of_the_same_entity(sent: dict[str, Any], message: ReadMessage) -> bool:
    return message.key == sent["uscc"].encode()


def barrier(
    kafka: KafkaClients,
    uscc: str,
    send: Callable[[str], dict[str, Any]],
    topic: str,
    made: Callable[[dict[str, Any], ReadMessage], bool] = of_the_same_entity,
    division: str | None = None,
    timeout: float = 30.0,
) -> ReadMessage:
    """Once this returns, everything that the records sent so far about ``uscc`` on one
    input topic made is on the output topics.

    ``send`` gets a :func:`partition_mate` of ``uscc`` (of ``division``, if given),
    sends one record about it on that input topic and returns it; the barrier waits
    until what the worker makes of it is on ``topic``: a message that ``made`` (the
    record sent, the message) says is its output, by default any keyed by the mate's
    USCC. That message it returns."""
    window = TopicWindow(kafka, topic)
    sent = send(partition_mate(kafka, uscc, division))
    [output, *_] = eventually(
        lambda: [message for message in window.read() if made(sent, message)],
        bool,
        timeout,
        lambda _: f"{topic}: the barrier record about {sent['uscc']} made nothing in {timeout}s",
    )
    return output


def until_ids(
    window: TopicWindow, field_name: str, wanted: set[str], minimum: int, timeout: float
) -> list[ReadMessage]:
    """Read ``window`` until at least ``minimum`` of the ``wanted`` ids are on it."""

    def seen(found: list[ReadMessage]) -> set[str]:
        return {str(m.value.get(field_name)) for m in found} & wanted

    return eventually(
        window.read,
        lambda found: len(seen(found)) >= minimum,
        timeout,
        lambda found: f"{len(seen(found))} of {len(wanted)} ids within {timeout} s",
    )


def streams_group(app_name: str) -> str:
    return f"{STREAMS_INTERNAL_TOPIC_PREFIX}{app_name}"


COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def until_group_empty(kafka: KafkaClients, group: str, timeout: float = 30) -> None:
    """Wait until a killed worker's group has given it up (its session timed out)."""
    admin = kafka.admin()
    deadline = time.monotonic() + timeout
    while True:
        [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
        try:
            if not future.result(timeout=15).members:
                return
        except KafkaException as error:
            # A new broker has no group coordinator until its offsets topic is made.
            if error.args[0].code() not in COORDINATOR_NOT_READY:
                raise
        assert time.monotonic() < deadline, f"{group} still has members after {timeout} s"
        time.sleep(0.5)


def committed_offsets(kafka: KafkaClients, group: str, topic: str) -> dict[int, int]:
    """What ``group`` had committed on ``topic``, by partition."""
    admin = kafka.admin()  # kept until the answer is in: a dropped client drops it
    request = ConsumerGroupTopicPartitions(group)
    [future] = admin.list_consumer_group_offsets([request], request_timeout=15).values()
    return {
        tp.partition: max(tp.offset, 0)
        for tp in future.result(timeout=20).topic_partitions
        if tp.topic == topic
    }


def skip_backlog(kafka: KafkaClients, group: str, topics: list[str]) -> None:
    """Commit the end of ``topics`` for ``group`` (which must have no members): a worker
    under test starts at the records its tests send, not behind whatever earlier test
    modules published there (thousands of sample licences and penalties, on a slow
    machine more than a rule-shaped test waits for)."""
    from confluent_kafka import TopicPartition

    consumer = kafka.consumer(group)
    try:
        ends = []
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
            for partition in partitions:
                end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
                ends.append(TopicPartition(topic, partition, end[1]))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


#: What each processor reads that the tests publish to: the backlog a test module skips
#: (:func:`start_where_the_tests_start`).
PROCESSOR_INPUTS: dict[str, tuple[topics.TopicSpec, ...]] = {
    "dual-notice": (topics.REGISTRATIONS, topics.LICENCES),
    "joint-punishment": (
        topics.CREDIT_LIST_ENTRIES,
        topics.LICENCES,
        topics.PENALTIES,
        topics.MATTER_EVENTS,
        topics.REGISTRATIONS,
    ),
}


def start_where_the_tests_start(kafka: KafkaClients, *processors: str) -> None:
    """The workers of ``processors`` (none running) start at the end of their inputs: they
    read what this module sends, not what earlier modules left (:func:`skip_backlog`)."""
    for processor in processors:
        group = streams_group(processor)
        until_group_empty(kafka, group)
        skip_backlog(kafka, group, [topic.name for topic in PROCESSOR_INPUTS[processor]])


def sink_starts_at_the_end(kafka: KafkaClients, credit_database_url: str) -> None:
    """A sink into the (fresh) credit database at ``credit_database_url`` starts at the end
    of every topic it reads: this module's records only, however many earlier modules
    published."""
    from connectors.sink import db as credit_db
    from connectors.sink.tables import TABLES_BY_TOPIC
    from xietong.topics import DepartmentTopic

    consumer = kafka.consumer(f"test-sink-start-{uuid.uuid4()}")
    try:
        listed = consumer.list_topics(timeout=10).topics
        ends = [
            (name, p, consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1])
            for name, metadata in listed.items()
            if name in TABLES_BY_TOPIC or DepartmentTopic.INBOX.code_of(name)
            for p in metadata.partitions
        ]
    finally:
        consumer.close()
    conn = credit_db.connect(credit_database_url)
    with conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO sink_offsets (topic, partition, next_offset) VALUES (%s, %s, %s)", ends
        )
    conn.close()
