"""Consumer lag: how far each consumer group of the platform is behind its topics.

    xietong lag serve             # /metrics on 127.0.0.1:9460 (XIETONG_LAG_EXPORTER_PORT)
    xietong lag show              # one measurement, as a table

Every few seconds (``XIETONG_LAG_EXPORTER_INTERVAL``, default 5) the exporter asks the
broker, with the admin client, for every consumer group whose id starts with one of the
platform's prefixes — the services' groups ``xietong.<service>.*`` and the Faust apps'
groups ``xietong.streams.<processor>`` — their committed offsets, and the end offset
(the last stable offset, so a transaction's records count once committed) of every
partition of every topic. A scrape returns the latest measurement; it never waits for
the broker, and a group or partition that is gone is gone from the next scrape.

Metrics:

* ``xietong_consumer_lag{group,topic,partition}`` — end offset minus committed offset;
* ``xietong_consumer_committed_offset{group,topic,partition}`` and
  ``xietong_consumer_end_offset{group,topic,partition}``;
* ``xietong_consumer_group_members{group,state}`` — 0 members: nobody consumes;
* ``xietong_topic_end_offset{topic,partition}`` — every topic, consumed or not: its rate
  is the topic's write rate (``platform.dead-letter`` included);
* ``xietong_lag_exporter_rounds_total{outcome}``, ``…_round_seconds`` and
  ``…_last_success_timestamp_seconds`` — the exporter's own health.

The admin principal (``xietong-admin``) may describe every group and topic; another
principal needs DESCRIBE on the groups and topics it should see.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from xietong.logs import log_event

logger = logging.getLogger(__name__)

#: Whose groups are measured by default: every platform service and processor.
PLATFORM_GROUP_PREFIXES = ("xietong.",)

ROUNDS = Counter(
    "xietong_lag_exporter_rounds", "Lag measurements, by outcome (ok, failed)", ("outcome",)
)
ROUND_SECONDS = Histogram(
    "xietong_lag_exporter_round_seconds",
    "Time to measure every group's offsets and every partition's end offset",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAST_SUCCESS = Gauge(
    "xietong_lag_exporter_last_success_timestamp_seconds",
    "When the exporter last measured the lag (Unix time)",
)


@dataclass(frozen=True)
class PartitionLag:
    """One partition a group has committed an offset for, and how far behind it is."""

    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        """Records written but not yet consumed (never negative: the end offset is read
        after the committed one, so it can only be newer)."""
        return max(0, self.end - self.committed)


@dataclass(frozen=True)
class GroupMembers:
    """A consumer group's state (``STABLE``, ``EMPTY`` …) and how many consumers it has."""

    group: str
    state: str
    members: int


@dataclass(frozen=True)
class LagMeasurement:
    """What one round measured."""

    taken_at: float
    partitions: tuple[PartitionLag, ...]
    groups: tuple[GroupMembers, ...]
    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def total_lag(self, group: str) -> int:
        return sum(p.lag for p in self.partitions if p.group == group)


def measure(
    admin: AdminClient,
    prefixes: Sequence[str] = PLATFORM_GROUP_PREFIXES,
    timeout: float = 10.0,
) -> LagMeasurement:
    """Ask the broker for the groups, their committed offsets and the end offsets now.

    Raises :class:`KafkaException` when the broker cannot be asked at all; a group that
    vanishes between the calls is simply left out.
    """
    listed = admin.list_consumer_groups(request_timeout=timeout).result()
    group_ids = sorted(g.group_id for g in listed.valid if g.group_id.startswith(tuple(prefixes)))
    # Committed offsets first: the end offsets read after them can only be newer.
    committed = _committed_offsets(admin, group_ids, timeout)
    groups = _describe(admin, group_ids, timeout)
    end_offsets = _end_offsets(admin, timeout)
    partitions = tuple(
        PartitionLag(group, topic, partition, offset, end_offsets[(topic, partition)])
        for (group, topic, partition), offset in sorted(committed.items())
        if (topic, partition) in end_offsets
    )
    return LagMeasurement(time.time(), partitions, groups, end_offsets)


def _committed_offsets(
    admin: AdminClient, group_ids: Iterable[str], timeout: float
) -> dict[tuple[str, str, int], int]:
    # The API takes one group per request; they are all sent before any is awaited.
    futures: dict[str, Future[Any]] = {}
    for group in group_ids:
        futures |= admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
        )
    committed = {}
    for group, future in futures.items():
        try:
            result = future.result()
        except KafkaException as error:
            logger.debug("offsets of group %s: %s", group, error)
            continue
        for tp in result.topic_partitions or ():
            if tp.error is None and tp.offset >= 0:
                committed[(group, tp.topic, tp.partition)] = tp.offset
    return committed


def _describe(admin: AdminClient, group_ids: list[str], timeout: float) -> tuple[GroupMembers, ...]:
    if not group_ids:
        return ()
    described = []
    for group, future in admin.describe_consumer_groups(group_ids, request_timeout=timeout).items():
        try:
            description = future.result()
        except KafkaException as error:
            logger.debug("group %s: %s", group, error)
            continue
        described.append(
            GroupMembers(group, description.state.name, len(description.members or ()))
        )
    return tuple(sorted(described, key=lambda g: g.group))


def _end_offsets(admin: AdminClient, timeout: float) -> dict[tuple[str, int], int]:
    """The last stable offset of every partition of every topic but the broker's own."""
    metadata = admin.list_topics(timeout=timeout)
    wanted = {
        TopicPartition(name, partition): OffsetSpec.latest()
        for name, topic in metadata.topics.items()
        if not name.startswith("__") and topic.error is None
        for partition in topic.partitions
    }
    if not wanted:
        return {}
    answers = admin.list_offsets(
        wanted, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
    )
    ends = {}
    for tp, future in answers.items():
        try:
            ends[(tp.topic, tp.partition)] = future.result().offset
        except KafkaException as error:
            logger.debug("end offset of %s[%d]: %s", tp.topic, tp.partition, error)
    return ends


class LagExporter(Collector):
    """Measures every ``interval`` seconds (:meth:`run`); a Prometheus collector of the
    latest measurement (:meth:`collect`).

    Example::

        exporter = LagExporter(clients("admin").admin(), interval=5)
        exporter.register()                 # on prometheus_client's default registry
        start_http_server(9460)
        exporter.run(threading.Event())     # until the event is set
    """

    def __init__(
        self,
        admin: AdminClient,
        prefixes: Sequence[str] = PLATFORM_GROUP_PREFIXES,
        interval: float = 5.0,
    ) -> None:
        self.admin = admin
        self.prefixes = tuple(prefixes)
        self.interval = interval
        self.latest: LagMeasurement | None = None
        self._failing = False

    def register(self, registry: CollectorRegistry = REGISTRY) -> LagExporter:
        registry.register(self)
        return self

    def measure_once(self) -> LagMeasurement | None:
        """One round: the measurement, kept for the next scrape; None if the broker failed
        (the previous measurement is dropped rather than served as if current)."""
        started = time.perf_counter()
        try:
            measurement = measure(self.admin, self.prefixes, timeout=max(self.interval, 5.0))
        except KafkaException as error:
            ROUNDS.labels("failed").inc()
            self.latest = None
            if not self._failing:
                log_event(logger, "lag_measurement_failed", error=str(error))
            self._failing = True
            return None
        ROUND_SECONDS.observe(time.perf_counter() - started)
        ROUNDS.labels("ok").inc()
        LAST_SUCCESS.set(measurement.taken_at)
        if self._failing or self.latest is None:
            log_event(
                logger,
                "lag_measured",
                groups=len(measurement.groups),
                partitions=len(measurement.partitions),
            )
        self._failing = False
        self.latest = measurement
        return measurement

    def run(self, stop: threading.Event) -> None:
        """Measure until ``stop`` is set."""
        while not stop.is_set():
            self.measure_once()
            stop.wait(self.interval)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        measurement = self.latest
        per_partition = ("group", "topic", "partition")
        lag = GaugeMetricFamily(
            "xietong_consumer_lag",
            "Records written to a partition that the group has not committed yet",
            labels=per_partition,
        )
        committed = GaugeMetricFamily(
            "xietong_consumer_committed_offset",
            "The group's committed offset of the partition",
            labels=per_partition,
        )
        end = GaugeMetricFamily(
            "xietong_consumer_end_offset",
            "The partition's end offset (last stable offset) when the lag was measured",
            labels=per_partition,
        )
        members = GaugeMetricFamily(
            "xietong_consumer_group_members",
            "Consumers in the group, by group state (0: nobody consumes)",
            labels=("group", "state"),
        )
        topic_end = GaugeMetricFamily(
            "xietong_topic_end_offset",
            "End offset of every partition of every topic: its rate is the write rate",
            labels=("topic", "partition"),
        )
        if measurement is not None:
            for p in measurement.partitions:
                labels = [p.group, p.topic, str(p.partition)]
                lag.add_metric(labels, p.lag)
                committed.add_metric(labels, p.committed)
                end.add_metric(labels, p.end)
            for g in measurement.groups:
                members.add_metric([g.group, g.state], g.members)
            for (topic, partition), offset in sorted(measurement.end_offsets.items()):
                topic_end.add_metric([topic, str(partition)], offset)
        yield from (lag, committed, end, members, topic_end)
