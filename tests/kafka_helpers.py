"""Kafka in tests: many records produced at once, what a run added to a topic read back
and decoded, and waiting until what was read shows what a test expects."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Message, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from xietong.kafka import KafkaClients, produce

Reading = TypeVar("Reading")


def produce_all(
    kafka: KafkaClients, messages: Iterable[tuple[str, bytes, bytes]], **config: Any
) -> int:
    """Every (topic, key, value), acknowledged (a full producer queue is waited out by
    :func:`xietong.kafka.produce`); how many. ``config`` goes to the producer."""
    producer = kafka.producer(**config)
    count = 0
    for topic, key, value in messages:
        produce(producer, topic, key=key, value=value)
        producer.poll(0)
        count += 1
    remaining = producer.flush(120)
    assert remaining == 0, f"{remaining} of {count} records not acknowledged"
    return count


def eventually(
    read: Callable[[], Reading],
    holds: Callable[[Reading], bool],
    timeout: float,
    failure: Callable[[Reading], str],
    every: float = 0.3,
) -> Reading:
    """``read()`` again every ``every`` seconds until ``holds`` of what it read, which is
    returned; after ``timeout`` seconds, fail with ``failure`` of the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        reading = read()
        if holds(reading):
            return reading
        assert time.monotonic() < deadline, failure(reading)
        time.sleep(every)


def first_message(kafka: KafkaClients, topic: str, group_id: str, seconds: float) -> Message | None:
    """What a consumer of ``group_id`` subscribed to ``topic`` gets first — a record or an
    error (a refusal is one) — or None within ``seconds``."""
    consumer = kafka.consumer(group_id=group_id)
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None:
                return message
        return None
    finally:
        consumer.close()


@dataclass(frozen=True)
class ReadMessage:
    partition: int
    offset: int
    key: bytes | None
    headers: dict[str, bytes]
    value: dict[str, Any]
    timestamp: int = 0  # milliseconds, as the producer set it


class TopicWindow:
    """The end offsets of a topic now; :meth:`read` returns what was added since."""

    def __init__(self, kafka: KafkaClients, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.start = self._ends()

    def _ends(self) -> dict[int, int]:
        consumer = self.kafka.consumer(group_id=f"test-window-{uuid.uuid4()}")
        try:
            metadata = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            return {
                p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                for p in metadata.partitions
            }
        finally:
            consumer.close()

    def read(self) -> list[ReadMessage]:
        """Every message added since the window opened, decoded with the Avro deserializer."""
        ends = self._ends()
        wanted = {p: end for p, end in ends.items() if end > self.start.get(p, 0)}
        if not wanted:
            return []
        deserialize = self.kafka.avro_deserializer()
        # The end of a partition written in transactions is a commit marker, which is never
        # delivered: the partition's end is where the consumer reports reaching it.
        consumer = self.kafka.consumer(
            group_id=f"test-window-{uuid.uuid4()}", **{"enable.partition.eof": True}
        )
        consumer.assign([TopicPartition(self.topic, p, self.start.get(p, 0)) for p in wanted])
        messages: list[ReadMessage] = []
        try:
            while wanted:
                message = consumer.poll(5.0)
                if message is None:
                    raise AssertionError(f"{self.topic}: stopped short of {wanted}")
                partition, offset = message.partition() or 0, message.offset() or 0
                if message.error():
                    if offset >= wanted.get(partition, offset + 1):
                        wanted.pop(partition, None)
                    continue
                value = deserialize(
                    message.value(), SerializationContext(self.topic, MessageField.VALUE)
                )
                assert isinstance(value, dict)
                raw = message.headers() or []
                pairs = raw.items() if isinstance(raw, dict) else raw
                headers = {
                    str(name): v if isinstance(v, bytes) else str(v or "").encode()
                    for name, v in pairs
                }
                timestamp = message.timestamp()[1]
                messages.append(
                    ReadMessage(partition, offset, message.key(), headers, value, timestamp)
                )
                if offset + 1 >= wanted.get(partition, 0):
                    wanted.pop(partition, None)
        finally:
            consumer.close()
        return messages
