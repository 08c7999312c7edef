"""One delivery: the body and headers of an inbox item's POST, what its answer means, and
when to try again. Pure functions and values: the worker (:mod:`connectors.webhooks.worker`)
does the I/O.

The headers are the Standard Webhooks ones (https://www.standardwebhooks.com)::

    webhook-id: 5e0f…            the item's deterministic id: the receiver's idempotency key
    webhook-timestamp: 1733560000 seconds since the epoch, when this attempt was signed
    webhook-signature: v1,K5oZ…= HMAC-SHA256 over "<id>.<timestamp>.<body>", base64

signed with :mod:`standardwebhooks` (the spec's own library). After a secret rotation both
the new and the previous secret sign, space-separated, so a receiver verifies either.

An answer is one of three outcomes (:func:`outcome_of`): **delivered** (2xx), **retry**
(a timeout, a connection error, 408, 429, 5xx; ``Retry-After`` is honoured), or **give
up** (any other status: the endpoint refused the item, and asking again will not change
that). A retry waits exponentially longer with full jitter (:class:`Backoff`): attempt
*n* waits a random time in [0, min(cap, base·2ⁿ⁻¹)], so endpoints recovering from an
outage are not hit by every worker at the same instant.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from standardwebhooks.webhooks import Webhook

from xietong.ids import deterministic_id

JSON = "application/json"
CLOUDEVENTS_JSON = "application/cloudevents+json"

#: HTTP statuses worth asking again: the request timed out, too many requests.
RETRYABLE_STATUSES = frozenset({408, 429})


def wire_now() -> datetime:
    """Real time, for what crosses the wire: ``webhook-timestamp`` (receivers check it
    against their own clocks, within minutes), ``Retry-After`` dates, the broker's record
    timestamps and the retry window measured from them. Not the business clock: a
    rehearsal's offset (``XIETONG_CLOCK_OFFSET``) moves deadlines, and must not make every
    receiver refuse the signatures."""
    return datetime.fromtimestamp(time.time(), UTC)


# -- the item and its body ------------------------------------------------------------------


@dataclass(frozen=True)
class InboxItem:
    """An item read from a department's inbox, decoded.

    ``record_name`` is its Avro record's full name
    (``cn.gov.xietong.dualnotice.DualNoticePush``); ``record`` its fields.
    """

    department: str
    topic: str
    offset: int
    record_name: str
    record: Mapping[str, Any]
    #: When the processor wrote it to the inbox (the broker's timestamp, epoch ms).
    written_ms: int

    @property
    def item_id(self) -> str:
        """The record's own id: its first ``…_id`` field (push_id, notice_id, hit_id …)."""
        for name, value in self.record.items():
            if name.endswith("_id") and isinstance(value, str):
                return value
        return f"{self.topic}@{self.offset}"

    @property
    def revision(self) -> str:
        """What tells two records of one item apart: a push is republished at each change
        of state (a new ``version``), a hit at each change of ``status``."""
        for name in ("version", "state", "status"):
            if name in self.record:
                return f"{name}={self.record[name]}"
        return ""

    @property
    def webhook_id(self) -> str:
        """The idempotency key: the same record of the same item always gets it, even
        written twice to the inbox (a processor's retry) or delivered twice (a worker's)."""
        return deterministic_id(
            f"webhook|{self.department}|{self.record_name}|{self.item_id}|{self.revision}"
        )


def json_value(value: Any) -> Any:
    """Avro's decoded values as JSON: instants and dates in ISO 8601, decimals as text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON")


def body_of(item: InboxItem, sent_at: datetime, *, cloudevents: bool) -> tuple[bytes, str]:
    """The POST body and its Content-Type.

    Plain (the Standard Webhooks payload)::

        {"type": "cn.gov.xietong.dualnotice.DualNoticePush", "timestamp": "…Z",
         "department": "hz-health", "id": "<webhook-id>", "data": {…the record…}}

    CloudEvents 1.0 structured mode: ``specversion``, ``id`` (the webhook-id),
    ``source`` (``/xietong/departments/<code>/inbox``), ``type``, ``time``,
    ``datacontenttype`` and ``data``.
    """
    moment = json_value(sent_at)
    if cloudevents:
        document: dict[str, Any] = {
            "specversion": "1.0",
            "id": item.webhook_id,
            "source": f"/xietong/departments/{item.department}/inbox",
            "type": item.record_name,
            "subject": item.item_id,
            "time": json_value(datetime.fromtimestamp(item.written_ms / 1000, UTC)),
            "datacontenttype": JSON,
            "data": item.record,
        }
    else:
        document = {
            "type": item.record_name,
            "timestamp": moment,
            "department": item.department,
            "id": item.webhook_id,
            "data": item.record,
        }
    body = json.dumps(document, default=json_value, ensure_ascii=False, separators=(",", ":"))
    return body.encode(), CLOUDEVENTS_JSON if cloudevents else JSON


def signed_headers(
    webhook_id: str, sent_at: datetime, body: bytes, secrets: Sequence[str], content_type: str
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed with every secret given
    (the current one first; a rotated-out one while its grace lasts)."""
    signatures = " ".join(Webhook(secret).sign(webhook_id, sent_at, body) for secret in secrets)
    return {
        "content-type": content_type,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signatures,
        "user-agent": "xietong-webhooks/1",
    }


# -- what an answer means -------------------------------------------------------------------


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Answer:
    """What one attempt got: an HTTP status (None: no answer) and why it failed."""

    status: int | None
    reason: str  # 'HTTP 503', 'timeout after 5 s', 'connection refused' …
    retry_after: timedelta | None = None

    @property
    def failure_kind(self) -> str:
        """For the failure metric: ``http_503``, ``timeout``, ``connection``."""
        if self.status is not None:
            return f"http_{self.status}"
        return "timeout" if self.reason.startswith("timeout") else "connection"


def outcome_of(answer: Answer) -> Outcome:
    status = answer.status
    if status is None:
        return Outcome.RETRY  # a timeout or connection error: the endpoint may come back
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in RETRYABLE_STATUSES or status >= 500:
        return Outcome.RETRY
    return Outcome.GIVE_UP


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` header as a delay: seconds, or an HTTP date (RFC 9110 §10.2.3);
    None when absent or unreadable (then the backoff decides)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(moment - now, timedelta(0))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, bounded by ``cap``."""

    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(minutes=10)

    def ceiling(self, failures: int) -> timedelta:
        """The longest wait after the ``failures``-th failure (1, 2, 4 … × base, ≤ cap)."""
        exponent = min(max(failures - 1, 0), 60)  # beyond, any base is past any cap
        seconds = self.base.total_seconds() * 2.0**exponent
        return min(self.cap, timedelta(seconds=min(seconds, self.cap.total_seconds())))

    def delay(self, failures: int, answer: Answer, draw: random.Random | None = None) -> timedelta:
        """How long to wait before the next attempt: the endpoint's ``Retry-After`` when
        it gave one, else a random time up to :meth:`ceiling` (full jitter)."""
        if answer.retry_after is not None:
            return answer.retry_after
        ceiling = self.ceiling(failures).total_seconds()
        return timedelta(seconds=(draw or random).uniform(0, ceiling))
