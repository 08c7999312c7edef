"""Per-department scheduling: one lane per inbox, its items in inbox order, one at a time.

Every department's inbox has one partition, so a lane is a partition. A lane holds the
items read from it and not yet finished; only its head is ever being delivered, so a
department receives its items in inbox order. The head is *delivered*, *retried* after a
backoff, or *given up* (dead-lettered); then its offset may be committed and the next
item becomes the head. Lanes never wait for each other: a department whose head waits
for a retry holds back its own items only.

The worker asks, on every turn of its loop::

    lanes.due(now)               # heads to attempt now (none already in flight)
    lane.waiting(now)            # its head waits for a retry: pause the partition
    lane.full                    # it holds as many items as it may: pause it too

and tells a lane what became of its head (:meth:`Lane.started`, :meth:`Lane.retry_at`,
:meth:`Lane.finish`). Pure: time is passed in, so the unit tests drive it with a dict
of made-up instants.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class Pending(Generic[Item]):
    """An item of a lane and how its delivery goes."""

    offset: int
    item: Item
    attempts: int = 0
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None  # None: at once
    last_status: int | None = None
    last_reason: str = ""


@dataclass
class Lane(Generic[Item]):
    """One department's inbox partition: its unfinished items, oldest first."""

    key: str  # the department code
    capacity: int = 100
    items: deque[Pending[Item]] = field(default_factory=deque)
    in_flight: bool = False
    #: The next offset this lane expects: an item read again (after a resume) is dropped.
    next_offset: int | None = None
    #: Whether the worker has paused the partition (it keeps track; the lane only advises).
    paused: bool = False

    def offer(self, offset: int, item: Item) -> bool:
        """Take an item read from the partition; False for one it holds or finished
        already (the consumer may hand an offset out again after a pause)."""
        if self.next_offset is not None and offset < self.next_offset:
            return False
        self.items.append(Pending(offset, item))
        self.next_offset = offset + 1
        return True

    @property
    def head(self) -> Pending[Item] | None:
        return self.items[0] if self.items else None

    @property
    def full(self) -> bool:
        return len(self.items) >= self.capacity

    def due(self, now: datetime) -> Pending[Item] | None:
        """The head, when it is time to attempt it and it is not being attempted."""
        head = self.head
        if head is None or self.in_flight:
            return None
        if head.next_attempt_at is not None and head.next_attempt_at > now:
            return None
        return head

    def waiting(self, now: datetime) -> bool:
        """Its head failed and waits for its next attempt."""
        head = self.head
        return (
            head is not None
            and not self.in_flight
            and head.next_attempt_at is not None
            and head.next_attempt_at > now
        )

    def should_pause(self, now: datetime) -> bool:
        return self.full or self.waiting(now)

    def started(self, now: datetime) -> Pending[Item]:
        """The head's attempt begins."""
        head = self.items[0]
        self.in_flight = True
        head.attempts += 1
        if head.first_attempt_at is None:
            head.first_attempt_at = now
        return head

    def retry_at(self, moment: datetime, status: int | None, reason: str) -> None:
        """The head's attempt failed; try it again at ``moment``."""
        head = self.items[0]
        self.in_flight = False
        head.next_attempt_at = moment
        head.last_status, head.last_reason = status, reason

    def finish(self) -> Pending[Item]:
        """The head is done (delivered, given up, or skipped): the next item is the head;
        the finished offset + 1 is what to commit."""
        self.in_flight = False
        return self.items.popleft()


class Lanes(Generic[Item]):
    """The lanes of the partitions assigned to the worker, by department."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self._lanes: dict[str, Lane[Item]] = {}

    def assign(self, key: str, next_offset: int | None = None) -> Lane[Item]:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key, self.capacity, next_offset=next_offset)
        return lane

    def revoke(self, key: str) -> None:
        """The partition went to another worker: forget what was read and not finished
        (it is read again there, from the committed offset)."""
        self._lanes.pop(key, None)

    def get(self, key: str) -> Lane[Item] | None:
        return self._lanes.get(key)

    def __iter__(self) -> Iterator[Lane[Item]]:
        return iter(list(self._lanes.values()))

    def due(self, now: datetime) -> list[Lane[Item]]:
        """Every lane whose head may be attempted now."""
        return [lane for lane in self._lanes.values() if lane.due(now) is not None]
