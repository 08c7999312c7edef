"""The stream processors' Faust consumer (streams/runtime.py): what it fetches from, and when
a source partition may be read after a rebalance. Faust's and aiokafka's calls are stubbed
here; the kill tests (tests/integration/test_joint_punishment.py,
tests/integration/test_dual_notice.py) show the same against the broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.runtime import SeekingConsumer, SeekingConsumerThread

SOURCE = TP("credit.list-entries", 2)
OTHER_SOURCE = TP("credit.list-entries", 3)
CHANGELOG = TP("xietong.streams.joint-punishment-entities-changelog", 2)


def consumer_thread(fetched_from: list[Any]) -> SeekingConsumerThread:
    """The aiokafka side, its fetch recorded instead of made."""
    thread = SeekingConsumerThread.__new__(SeekingConsumerThread)

    async def call_thread(_fetch: Any, _consumer: Any, partitions: Any, **_: Any) -> dict[Any, Any]:
        fetched_from.append(partitions)
        return {}

    thread.call_thread = call_thread  # type: ignore[method-assign,assignment]
    thread._ensure_consumer = lambda: SimpleNamespace(_max_poll_records=200)  # type: ignore[method-assign]
    return thread


def test_a_fetch_reads_the_partitions_active_when_it_began_even_if_faust_pauses_them_all() -> None:
    """aiokafka reads an empty set as every assigned partition: the fetch gets a copy, so
    pausing every partition while it waits cannot turn it into a fetch of all of them."""
    fetched_from: list[Any] = []
    active = {CHANGELOG}

    asyncio.run(consumer_thread(fetched_from).getmany(active, 1.0))
    active.clear()  # recovery done: the changelog paused, the sources not resumed yet

    assert fetched_from == [frozenset({CHANGELOG})]


def test_no_partition_active_means_no_fetch() -> None:
    fetched_from: list[Any] = []

    assert asyncio.run(consumer_thread(fetched_from).getmany(set(), 1.0)) == {}
    assert fetched_from == []


def test_a_source_partition_without_a_committed_offset_is_sought_to_its_first_offset() -> None:
    """aiokafka seeks only offsets above 0 and leaves the others where they are, which may
    be past records fetched and dropped during a rebalance; changelogs are recovery's."""
    committed = {SOURCE: None, OTHER_SOURCE: 0, CHANGELOG: None, TP("credit.list-entries", 4): 12}
    rewound: list[tuple[TP, ...]] = []

    async def seek_to_committed() -> dict[TP, int | None]:
        return committed

    async def seek_to_beginning(*partitions: TP) -> bool:
        rewound.append(partitions)
        return True

    thread = SeekingConsumerThread.__new__(SeekingConsumerThread)
    aiokafka_consumer = SimpleNamespace(
        seek_to_committed=seek_to_committed, seek_to_beginning=seek_to_beginning
    )
    thread._ensure_consumer = lambda: aiokafka_consumer  # type: ignore[method-assign]
    thread.consumer = SimpleNamespace(_is_changelog_tp=lambda tp: tp == CHANGELOG)  # type: ignore[assignment]

    assert asyncio.run(thread._seek_to_committed_or_start()) == committed
    assert rewound == [(SOURCE, OTHER_SOURCE)]


def seeking_consumer(active_at_seek: list[set[TP]]) -> SeekingConsumer:
    """Faust's side, with every partition paused (as after an assignment) and the seek to
    the committed offsets recorded instead of made."""
    consumer = SeekingConsumer.__new__(SeekingConsumer)
    consumer._unsought = set()
    consumer._active_partitions = set()
    consumer._paused_partitions = {SOURCE, OTHER_SOURCE, CHANGELOG}
    consumer._read_offset = defaultdict(lambda: None)
    consumer._committed_offset = defaultdict(lambda: None)
    consumer.app = SimpleNamespace(  # type: ignore[assignment]
        tables=SimpleNamespace(changelog_topics={CHANGELOG.topic})
    )

    async def seek_to_committed() -> Mapping[TP, int]:
        active_at_seek.append(set(consumer._active_partitions))
        return {SOURCE: 41, OTHER_SOURCE: 7}

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    return consumer


def test_a_source_partition_faust_resumes_is_read_only_once_sought() -> None:
    """Faust resumes the source partitions, then seeks them to their committed offsets:
    they become active only after the seek, changelogs at once."""
    active_at_seek: list[set[TP]] = []
    consumer = seeking_consumer(active_at_seek)

    consumer.resume_partitions({SOURCE, OTHER_SOURCE, CHANGELOG})
    assert consumer._active_partitions == {CHANGELOG}

    asyncio.run(consumer.perform_seek())

    assert active_at_seek == [{CHANGELOG}]
    assert consumer._active_partitions == {SOURCE, OTHER_SOURCE, CHANGELOG}
    assert consumer._read_offset[SOURCE] == 41


def test_a_source_partition_paused_again_before_the_seek_stays_paused() -> None:
    """A new rebalance between the resume and the seek pauses the partition: the seek does
    not resume it; the next assignment's resume and seek will."""
    consumer = seeking_consumer([])
    consumer.resume_partitions({SOURCE, OTHER_SOURCE})
    consumer.pause_partitions({SOURCE})

    asyncio.run(consumer.perform_seek())

    assert consumer._active_partitions == {OTHER_SOURCE}
