"""Replaying a connector's dead letters through its mapping, once the mapping is fixed.

A department's export changes (a new date format, a renamed code) and its records go to
``platform.dead-letter``, each with its fields as read and every reason. Once the
mapping file is fixed (``xietong connect validate`` passes), ``xietong connect replay
<connector.yaml>`` sends those records through the connector again::

    report = DeadLetterReplay(ConnectorConfig.load(path), clients("connectors")).run()
    report.replayed, report.dead_lettered, report.not_replayable

The dead-letter topic is the replay's *source partition* in the Kafka Connect sense
(:mod:`connectors.base`): the replay reads the connector's dead letters after the
offsets it committed last time (by dead-letter partition, in ``platform.connector-offsets``
under the connector's name and :data:`REPLAY_PARTITION`), together with those it left
refused last time; publishes each record that its mapping now accepts; and, once the
broker has acknowledged everything, commits the offsets it reached and the dead letters
still refused (:class:`ReplayState`). So a second replay publishes nothing again and
changes nothing; a replay killed midway sends again only what it had not committed,
under the same event ids.

Each record keeps its original source partition, offset and position: the canonical
event names where the department's record came from, and once it is acknowledged the
replay writes beside the dead letter a record settling it (same dead letter id, no
reasons, ``replayed_event_id``: :func:`xietong.dead_letters.settled`), so the credit
database shows it REPLAYED. A record refused for the same
reasons as before writes nothing (its dead letter says so already); one refused for
other reasons is dead-lettered again under its first dead letter's id, with today's
reasons. Either stays for the next replay, after the next fix. Only the latest dead
letter of a record is replayed. A dead letter whose record could not be decoded at all
(no fields) cannot be mapped again: it is counted as not replayable, and the source must
send it again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.serialization import MessageField, SerializationContext

from connectors.base import DeliveryFailed, OffsetStore, Publisher
from connectors.config import ConnectorConfig, HttpIngestConfig
from connectors.mapping import DepartmentMapping
from connectors.records import SourceRecord
from schemas import DEAD_LETTER_RECORD
from xietong.dead_letters import settled
from xietong.kafka import KafkaClients, produce
from xietong.logs import log_event

logger = logging.getLogger(__name__)

#: The source partition under which a connector's replay offsets are committed.
REPLAY_PARTITION = DEAD_LETTER_RECORD.topic.name


@dataclass
class ReplayReport:
    """What one replay did: ``replayed`` records are now canonical events; the mapping
    still refuses the ``still_refused`` for the same reasons (nothing is written for them)
    and the ``dead_lettered`` for others (a new dead letter says which)."""

    connector: str
    dead_letters: int = 0  # the connector's dead letters read (latest per record)
    replayed: int = 0
    dead_lettered: int = 0  # refused for other reasons than before: a new dead letter
    still_refused: int = 0  # refused as before: nothing written
    not_replayable: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # of the records failing again
    offsets: dict[int, int] = field(default_factory=dict)  # committed: partition → next

    def as_dict(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "dead_letters": self.dead_letters,
            "replayed": self.replayed,
            "dead_lettered": self.dead_lettered,
            "still_refused": self.still_refused,
            "not_replayable": self.not_replayable,
            "reasons": dict(sorted(self.reasons.items())),
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
        }


class DeadLetterReplay:
    """Sends a connector's dead letters through its (fixed) mapping files again."""

    def __init__(self, config: ConnectorConfig, clients: KafkaClients) -> None:
        self.name = config.name
        self.clients = clients
        source = config.source
        paths = source.mappings if isinstance(source, HttpIngestConfig) else [config.mapping]
        # A connector's dead letters name their department and record type: the mapping
        # they were refused by (an HTTP ingest has one per department and record type).
        self.mappings = {
            (mapping.department.uscc, mapping.record_type.name): mapping
            for mapping in (DepartmentMapping.load(path) for path in paths if path is not None)
        }
        self.offsets = OffsetStore(clients)
        self._deserialize = clients.avro_deserializer(DEAD_LETTER_RECORD.schema_str)
        self._serialize = clients.avro_serializer(DEAD_LETTER_RECORD.schema_str)
        self._context = SerializationContext(REPLAY_PARTITION, MessageField.VALUE)

    def committed(self) -> ReplayState:
        """Where the last replay stopped, and which dead letters it left refused."""
        stored = self.offsets.load(self.name, REPLAY_PARTITION)
        return ReplayState.from_json(stored) if stored else ReplayState()

    def pending(self, state: ReplayState) -> tuple[list[Letter], dict[int, int]]:
        """The connector's dead letters still to replay (the latest of each record, in topic
        order): those after ``state``'s offsets and those it left refused; and the offsets
        reached."""
        reached = dict(state.offsets)
        latest: dict[str, Letter] = {}
        start = state.start()
        for message in self.clients.read_to_end(REPLAY_PARTITION, "replay", start=start):
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None  # a message read, not an event
            reached[partition] = offset + 1
            value = message.value()
            if value is None or not state.wants(partition, offset):
                continue
            decoded: dict[str, Any] | None = self._deserialize(value, self._context)  # type: ignore[assignment]
            if decoded is None or decoded["connector"] != self.name:
                continue
            letter = Letter(partition, offset, decoded)
            latest.pop(letter.id, None)  # a later one replaces it, in order
            latest[letter.id] = letter
        # A dead letter whose latest record says a replay settled it is done with.
        pending = [x for x in latest.values() if x.value.get("replayed_event_id") is None]
        return pending, reached

    def run(self) -> ReplayReport:
        """Replay what is pending and commit; what was done."""
        report = ReplayReport(self.name)
        letters, reached = self.pending(self.committed())
        report.dead_letters = len(letters)
        refused: list[tuple[int, int]] = []
        accepted: list[tuple[Letter, str]] = []
        publishers: dict[tuple[str, str], Publisher] = {}
        for letter in letters:
            value = letter.value
            key = (value["source_department_uscc"], value["record_type"])
            mapping = self.mappings.get(key)
            record = source_record(value)
            if mapping is None or record is None:
                report.not_replayable += 1
                log_event(
                    logger,
                    "dead_letter_not_replayable",
                    connector=self.name,
                    dead_letter_id=letter.id,
                    position=value["position"],
                    reason="no mapping of the connector reads it"
                    if mapping is None
                    else "its record could not be decoded: the source must send it again",
                )
                continue
            if key not in publishers:
                publishers[key] = Publisher(self.name, mapping, self.clients)
            publisher = publishers[key]
            encoded = publisher.encoder.encode(record)
            if not encoded.problems:
                publisher.send(encoded, record)
                accepted.append((letter, encoded.event_id))
                report.replayed += 1
                continue
            refused.append((letter.partition, letter.offset))
            if reasons_of(encoded.problems) == reasons_of(value["reasons"]):
                # Refused as before: its dead letter says so already; nothing is written.
                report.still_refused += 1
                continue
            publisher.send(encoded, record)  # refused for other reasons: today's dead letter
            report.dead_lettered += 1
            for problem in encoded.problems:
                report.reasons[problem.code] = report.reasons.get(problem.code, 0) + 1
        for publisher in publishers.values():
            publisher.flush()  # the events acknowledged before anything says they were sent
        self._settle(accepted)
        state = ReplayState(reached, refused)
        self.offsets.commit(self.name, REPLAY_PARTITION, state.to_json())
        report.offsets = reached
        log_event(logger, "dead_letters_replayed", **report.as_dict())
        return report

    def _settle(self, accepted: list[tuple[Letter, str]]) -> None:
        """Write, beside each dead letter now replayed, the record that settles it (the
        sink shows it REPLAYED, with the event's id), acknowledged before returning."""
        if not accepted:
            return
        producer = self.clients.producer()
        for letter, event_id in accepted:
            value = settled(letter.value, event_id)
            produce(
                producer,
                REPLAY_PARTITION,
                # The department's key, as the connector's dead letters: the same partition,
                # so the settling record comes after the dead letter it settles.
                key=value["source_department_uscc"].encode(),
                value=self._serialize(value, self._context),
            )
        if producer.flush(30):
            raise DeliveryFailed(f"{self.name}: the replay's settling records not acknowledged")


@dataclass(frozen=True)
class Letter:
    """A dead letter as read from the topic, with where it is."""

    partition: int
    offset: int
    value: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.value["dead_letter_id"])


@dataclass
class ReplayState:
    """What a replay commits: the dead-letter offsets it read to (partition → next), and
    the dead letters it left refused (partition, offset), which the next replay reads
    again."""

    offsets: dict[int, int] = field(default_factory=dict)
    refused: list[tuple[int, int]] = field(default_factory=list)

    def start(self) -> dict[int, int]:
        """Where to read from: the offsets reached, or the oldest dead letter left refused."""
        start = dict(self.offsets)
        for partition, offset in self.refused:
            start[partition] = min(start.get(partition, offset), offset)
        return start

    def __post_init__(self) -> None:
        self._refused = set(self.refused)

    def wants(self, partition: int, offset: int) -> bool:
        """Whether the dead letter at ``partition``/``offset`` is still to replay."""
        return offset >= self.offsets.get(partition, 0) or (partition, offset) in self._refused

    def to_json(self) -> str:
        return json.dumps(
            {
                "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
                "refused": sorted(self.refused),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ReplayState:
        stored = json.loads(text)
        return cls(
            {int(p): int(o) for p, o in stored["offsets"].items()},
            [(int(p), int(o)) for p, o in stored["refused"]],
        )


def reasons_of(reasons: Any) -> set[tuple[str, str, str]]:
    """Reasons compared by field, code and message (a Problem or a dead letter's reason)."""
    return {
        (r["field"], r["code"], r["message"])
        if isinstance(r, dict)
        else (r.field, r.code, r.message)
        for r in reasons
    }


def source_record(letter: dict[str, Any]) -> SourceRecord | None:
    """The department's record as its dead letter keeps it (fields as read, bytes, where
    it was), or None when it kept no fields (the record could not be decoded)."""
    if letter.get("payload_json") is None:
        return None
    fields = json.loads(letter["payload_json"])
    if not isinstance(fields, dict):
        return None
    return SourceRecord(
        source_partition=letter["source_partition"],
        source_offset=letter["source_offset"],
        position=letter["position"],
        raw=letter["payload"],
        fields=fields,
    )
