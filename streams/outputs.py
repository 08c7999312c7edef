"""What a processor's rules decide for one event, as plain values.

The rules of every processor (``streams/<name>/rules.py``) are pure: plain values in, a
:class:`RuleOutput` out, no Faust and no Kafka. The processor's app sends what they
return (:class:`streams.runtime.OutputProducer`)::

    output = RuleOutput()
    output.send("sanction_notice", uscc, notice, "hz-xh-finance")
    [sent] = output.outgoing   # Outgoing("sanction_notice", uscc, notice, ("hz-xh-finance",))

On a compacted topic a record is removed by a tombstone (``output.remove(...)``): its key
with a null value, which the sender publishes in place of the record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outgoing:
    """One record to publish on its platform topic, and the inboxes it is delivered to;
    or, ``tombstone``, the removal of ``key`` from a compacted topic (a null value is sent;
    ``value`` is the record it removes, for the log and the tests)."""

    record_type: str  # a key of the processor's record types, or "dead_letter"
    key: str
    value: dict[str, Any]
    inboxes: tuple[str, ...] = ()
    tombstone: bool = False


@dataclass
class RuleOutput:
    """What a processor's rules decided for one event: the records to send. Each
    processor extends it with what else an event starts (deadlines, due times)."""

    outgoing: list[Outgoing] = field(default_factory=list)

    def send(self, record_type: str, key: str, value: dict[str, Any], *inboxes: str) -> None:
        self.outgoing.append(Outgoing(record_type, key, value, inboxes))

    def remove(self, record_type: str, key: str, value: dict[str, Any]) -> None:
        """A tombstone of ``key`` on the record type's compacted topic (``value``: what
        it removes, never sent)."""
        self.outgoing.append(Outgoing(record_type, key, value, tombstone=True))
