"""What every stream processor of the platform shares: its Faust app and its serde.

A processor is one Faust app whose id starts with ``xietong.streams.`` (its consumer
group, and the prefix of the internal topics Faust creates for it: table changelogs,
repartition and timer topics, which ``svc-streams`` may create under that prefix). It is
made here from the one settings object, connects as ``svc-streams``, and gets:

* **co-partitioning with the rest of the platform.** Connectors produce with
  librdkafka, whose default partitioner puts a key in ``crc32(key) % partitions``;
  Faust's client would use murmur2. :func:`make_app` gives Faust the librdkafka
  partitioner, so a USCC lands in the same partition number of every USCC-keyed topic,
  whoever wrote it, and a table keyed by USCC is joined by looking it up.
* **partitions and replication from the settings** for every topic Faust declares.
* **the one serde path.** Records are Avro in the Confluent wire format, written and
  read by confluent-kafka's serializers from :class:`xietong.kafka.KafkaClients`
  (:class:`RecordWriter`, :class:`AvroCodec`); Faust itself only moves bytes.
* **reference tables** (:func:`reference_table`): a GlobalTable over one of the
  registry's compacted topics, every worker holding every key, following changes live.

Example::

    app = make_app(settings, "dual-notice")              # id xietong.streams.dual-notice
    items = reference_table(app, REGISTRY_APPROVAL_ITEMS, clients)
    writer = RecordWriter(clients, DUAL_NOTICE_RECORD_TYPES["dual_notice_push"])
    await app.topic("dualnotice.pushes").send(key=b"9133…", value=writer.encode(push))
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from faust.serializers import codecs
from faust.types.auth import SASLMechanism

from schemas import RecordType
from xietong.kafka import KafkaClients, sasl_config
from xietong.settings import Settings
from xietong.topics import STREAMS_INTERNAL_TOPIC_PREFIX, TopicSpec

STREAMS_SERVICE = "streams"


def uscc_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner gives ``key`` (CRC-32 of the key)."""
    return zlib.crc32(key) % partitions


def _librdkafka_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    if key is None:  # librdkafka spreads unkeyed records; so may we
        return (available or all_partitions)[0]
    return all_partitions[uscc_partition(key, len(all_partitions))]


def _credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    config = sasl_config(settings, STREAMS_SERVICE)
    protocol = config["security.protocol"]
    if not protocol.startswith("SASL"):
        return None
    return faust.SASLCredentials(
        username=config["sasl.username"],
        password=config["sasl.password"],
        mechanism=SASLMechanism(config["sasl.mechanism"]),
        ssl_context=ssl.create_default_context() if protocol == "SASL_SSL" else None,
    )


def make_app(settings: Settings, name: str, **overrides: Any) -> faust.App:
    """The Faust app ``xietong.streams.<name>`` of one processor.

    Its tables live in RocksDB under ``<home>/streams/<name>`` and are backed by their
    changelog topics: a restart reads only what the changelog gained since, a worker
    that takes over a partition rebuilds it from the changelog.
    """
    brokers = [f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")]
    datadir = settings.home / "streams" / name
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    config: dict[str, Any] = {
        "broker": brokers,
        "broker_credentials": _credentials(settings),
        "store": "rocksdb://",
        "processing_guarantee": "at_least_once",
        "topic_partitions": settings.uscc_partitions,
        "topic_replication_factor": settings.replication_factor,
        # Only needed for @app.timer(on_leader=True), which no processor uses.
        "topic_disable_leader": True,
        "producer_partitioner": _librdkafka_partitioner,
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        # A worker that died is noticed, and its partitions handed on, within 10 s (not
        # Faust's 60); heartbeats come from the consumer's own thread every 3 s.
        "broker_session_timeout": 10.0,
        "web_enabled": False,
        "datadir": datadir,
        "key_serializer": "raw",
        "value_serializer": "raw",
        **overrides,
    }
    return faust.App(f"{STREAMS_INTERNAL_TOPIC_PREFIX}{name}", **config)


def commit_start_of_new_partitions(clients: KafkaClients, group: str, topics: list[str]) -> int:
    """Commit the first offset of every partition of ``topics`` that ``group`` never
    committed; the number committed. Call it before the app's first start.

    A faust-streaming 0.15 worker that finds no committed offset for a partition starts
    reading it, then seeks "to the committed offsets" once its tables are recovered, and
    a record fetched in between is never processed (seen on a new group: one record per
    partition lost). With an offset committed there is nothing to lose: the seek goes
    back to it. A group with live members refuses the commit; they have committed then.
    """
    admin = clients.admin()
    present = admin.list_topics(timeout=15).topics
    wanted = [
        TopicPartition(topic, partition)
        for topic in topics
        if topic in present
        for partition in present[topic].partitions
    ]
    if not wanted:
        return 0
    [future] = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, wanted)], request_timeout=15
    ).values()
    missing = [tp for tp in future.result(timeout=30).topic_partitions if tp.offset < 0]
    if not missing:
        return 0
    consumer = clients.consumer(group)
    try:
        starts = [
            TopicPartition(
                tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=15)[0]
            )
            for tp in missing
        ]
        consumer.commit(offsets=starts, asynchronous=False)
    except KafkaException:
        return 0
    finally:
        consumer.close()
    return len(starts)


def changelog_config(settings: Settings) -> dict[str, str]:
    """Extra configuration of a table's changelog topic (Faust sets compaction)."""
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


class DeclaredTopic(faust.Topic):
    """A platform topic declared in :mod:`xietong.topics`: Faust reads or writes it but
    never tries to create it (``xietong topics apply`` does, with its ACLs)."""

    async def maybe_declare(self) -> None:
        return None


def declared_topic(app: faust.App, spec: TopicSpec | str) -> DeclaredTopic:
    """A declared topic (or a department's, by name) carrying raw bytes."""
    name = spec if isinstance(spec, str) else spec.name
    return DeclaredTopic(app, topics=[name], key_serializer="raw", value_serializer="raw")


class _Utf8Codec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return str(obj).encode()

    def _loads(self, s: bytes) -> Any:
        return s.decode()


class AvroCodec(codecs.Codec):
    """Reads Confluent-framed Avro into dicts with confluent-kafka's deserializer (the
    writer's schema by the id in each message). Read-only: processors write records
    with :class:`RecordWriter`."""

    def __init__(self, clients: KafkaClients, topic: str) -> None:
        super().__init__()
        self._deserialize: AvroDeserializer = clients.avro_deserializer()
        self._context = SerializationContext(topic, MessageField.VALUE)

    def _loads(self, s: bytes) -> Any:
        return self._deserialize(s, self._context)

    def _dumps(self, obj: Any) -> bytes:
        raise TypeError("reference data is read-only here: the registry publishes it")


class ReferenceTable(faust.GlobalTable):
    """A GlobalTable whose changelog is a topic someone else writes.

    Faust names a table's changelog ``<app id>-<table>-changelog`` in places even when
    it was given another topic (its assignor, faust-streaming 0.15); this table answers
    with the topic it reads.
    """

    def _changelog_topic_name(self) -> str:
        return str(self.changelog_topic.get_topic_name())


ChangeCallback = Callable[[Any], Awaitable[None]]


def reference_table(
    app: faust.App,
    spec: TopicSpec,
    clients: KafkaClients,
    on_change: ChangeCallback | None = None,
) -> ReferenceTable:
    """The registry's compacted topic ``spec`` as a table: str key → record dict (a
    tombstone removes the key). ``on_change`` is awaited for every record read, before
    it is applied."""
    topic = DeclaredTopic(
        app,
        topics=[spec.name],
        key_serializer=_Utf8Codec(),
        value_serializer=AvroCodec(clients, spec.name),
        partitions=spec.partitions,
    )
    table = ReferenceTable(
        app,
        name=spec.name,
        changelog_topic=topic,
        partitions=spec.partitions,
        # Small, and read whole from its compacted topic at start. (A bare "memory://"
        # is a false URL to Faust, which then takes the app's store.)
        store="memory://reference",
        # As app.GlobalTable does; apply every change as it comes.
        beacon=app.tables.beacon,
        is_global=True,
        recovery_buffer_size=1,
        standby_buffer_size=1,
        on_changelog_event=on_change,
    )
    app.tables.add(table)
    return table


class RecordWriter:
    """Encodes records of one :class:`~schemas.RecordType` in the Confluent wire format,
    under the record type's subject, whichever topic the bytes are then sent to (a
    department's inbox carries the same bytes as the platform topic)."""

    def __init__(self, clients: KafkaClients, record: RecordType) -> None:
        self.record = record
        subject = record.subject
        self._serialize = clients.avro_serializer(
            record.schema_str, **{"subject.name.strategy": lambda *_: subject}
        )
        self._context = SerializationContext(record.topic.name, MessageField.VALUE)

    def encode(self, value: dict[str, Any]) -> bytes:
        encoded = self._serialize(value, self._context)
        assert encoded is not None
        return encoded
