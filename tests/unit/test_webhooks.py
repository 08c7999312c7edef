"""Webhook deliveries without a network: the signature (the Standard Webhooks spec's test
vector), what an answer means, backoff with jitter and Retry-After, the idempotency key,
and the per-department lanes that keep inbox order and never hold one department back
for another."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from connectors.webhooks.delivery import (
    CLOUDEVENTS_JSON,
    Answer,
    Backoff,
    InboxItem,
    Outcome,
    body_of,
    outcome_of,
    retry_after,
    signed_headers,
)
from connectors.webhooks.lanes import Lanes
from registry.webhooks import new_secret
from xietong.clock import business_clock

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


# -- signing -----------------------------------------------------------------------------------

# https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = datetime.fromtimestamp(1614265330, UTC)
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_delivery_is_signed_as_the_standard_webhooks_spec_test_vector_says() -> None:
    headers = signed_headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, [SPEC_SECRET], "application/json")
    assert headers["webhook-signature"] == SPEC_SIGNATURE
    assert headers["webhook-id"] == SPEC_ID
    assert headers["webhook-timestamp"] == "1614265330"


def test_after_a_rotation_both_secrets_sign_and_a_receiver_with_either_verifies() -> None:
    new, old = "whsec_" + "A" * 43 + "=", SPEC_SECRET
    now = business_clock().now()  # the receiver checks the timestamp against its own clock
    headers = signed_headers(SPEC_ID, now, SPEC_BODY, [new, old], "application/json")
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(SPEC_BODY, headers) == {"test": 2432232314}


# -- the item and its body ---------------------------------------------------------------------


def item(**record: object) -> InboxItem:
    fields = {"push_id": "p-1", "version": 1, "state": "PUSHED", **record}
    return InboxItem(
        "hz-health",
        "dept.hz-health.inbox",
        7,
        "cn.gov.xietong.dualnotice.DualNoticePush",
        fields,
        1_765_000_000_000,
    )


def test_the_idempotency_key_is_the_same_for_the_same_record_and_new_for_each_new_version() -> None:
    assert item().webhook_id == item().webhook_id
    assert item(version=2, state="CLAIMED").webhook_id != item().webhook_id
    assert item(push_id="p-2").webhook_id != item().webhook_id


def test_a_cloudevents_body_is_structured_mode_with_the_webhook_id_as_its_id() -> None:
    body, content_type = body_of(item(claimed_at=T0), T0, cloudevents=True)
    event = json.loads(body)
    assert content_type == CLOUDEVENTS_JSON
    assert event["specversion"] == "1.0" and event["id"] == item().webhook_id
    assert event["source"] == "/xietong/departments/hz-health/inbox"
    assert event["data"]["claimed_at"] == "2026-12-07T09:00:00Z"


# -- what an answer means, and when to try again ---------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (None, Outcome.RETRY),  # timeout, connection refused
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (400, Outcome.GIVE_UP),
        (404, Outcome.GIVE_UP),
        (410, Outcome.GIVE_UP),
        (301, Outcome.GIVE_UP),  # redirects are not followed
    ],
)
def test_what_an_answer_means(status: int | None, outcome: Outcome) -> None:
    assert outcome_of(Answer(status, "…")) is outcome


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert retry_after("120", T0) == timedelta(seconds=120)
    assert retry_after("Mon, 07 Dec 2026 09:00:30 GMT", T0) == timedelta(seconds=30)
    assert retry_after("Mon, 07 Dec 2026 08:00:00 GMT", T0) == timedelta(0)  # past: at once
    assert retry_after("soon", T0) is None
    assert retry_after(None, T0) is None


def test_backoff_grows_exponentially_to_its_cap_with_full_jitter() -> None:
    backoff = Backoff(timedelta(seconds=1), timedelta(seconds=60))
    assert [backoff.ceiling(n).total_seconds() for n in (1, 2, 3, 4, 7, 8, 100)] == [
        1,
        2,
        4,
        8,
        60,
        60,
        60,
    ]
    draw = random.Random(3)
    delays = [backoff.delay(5, Answer(503, "HTTP 503"), draw).total_seconds() for _ in range(500)]
    assert all(0 <= delay <= 16 for delay in delays)
    assert min(delays) < 2 and max(delays) > 14  # spread over the whole range, not clustered


def test_retry_after_is_honoured_instead_of_the_backoff() -> None:
    backoff = Backoff(timedelta(seconds=1), timedelta(seconds=60))
    answer = Answer(429, "HTTP 429", retry_after=timedelta(seconds=90))
    assert backoff.delay(1, answer) == timedelta(seconds=90)


# -- per-department scheduling ---------------------------------------------------------------


def test_a_lane_attempts_only_its_head_and_its_items_in_inbox_order() -> None:
    lanes: Lanes[str] = Lanes()
    lane = lanes.assign("hz-health")
    for offset in (10, 11, 12):
        assert lane.offer(offset, f"item {offset}")
    head = lane.due(T0)
    assert head is not None and head.offset == 10
    lane.started(T0)
    assert lane.due(T0) is None  # one at a time
    assert lane.finish().offset == 10
    assert [pending.offset for pending in lane.items] == [11, 12]


def test_an_offset_read_again_after_a_pause_is_not_taken_twice() -> None:
    lane = Lanes[str]().assign("hz-health")
    assert lane.offer(5, "a") and lane.offer(6, "b")
    assert not lane.offer(5, "a") and not lane.offer(6, "b")
    assert lane.offer(7, "c")


def test_a_lane_waiting_for_a_retry_pauses_alone_and_the_others_go_on() -> None:
    lanes: Lanes[str] = Lanes()
    dead, healthy = lanes.assign("dead"), lanes.assign("healthy")
    dead.offer(0, "held")
    dead.started(seconds(0))
    dead.retry_at(seconds(30), 503, "HTTP 503")
    healthy.offer(0, "first")
    healthy.offer(1, "second")

    assert dead.should_pause(seconds(1)) and not healthy.should_pause(seconds(1))
    assert lanes.due(seconds(1)) == [healthy]
    healthy.started(seconds(1))
    healthy.finish()
    assert lanes.due(seconds(2)) == [healthy]  # its next item, while the dead one still waits
    assert lanes.due(seconds(30)) == [dead, healthy]
    assert not dead.should_pause(seconds(30))


def test_a_full_lane_pauses_its_partition_until_it_drains() -> None:
    lane = Lanes[str](capacity=2).assign("hz-health")
    lane.offer(0, "a")
    lane.offer(1, "b")
    assert lane.should_pause(T0)
    lane.started(T0)
    lane.finish()
    assert not lane.should_pause(T0)


def test_a_retry_keeps_the_first_attempt_and_counts_attempts() -> None:
    lane = Lanes[str]().assign("hz-health")
    lane.offer(0, "a")
    lane.started(seconds(0))
    lane.retry_at(seconds(5), None, "timeout after 10 s")
    assert lane.due(seconds(4)) is None and lane.waiting(seconds(4))
    head = lane.started(seconds(5))
    assert head.attempts == 2 and head.first_attempt_at == seconds(0)
    assert head.last_reason == "timeout after 10 s"


def test_the_guide_s_standard_library_verification_accepts_a_delivery_and_refuses_a_forgery() -> (
    None
):
    guide = (Path(__file__).parents[2] / "connectors" / "webhooks" / "README.md").read_text()
    snippet = guide.split("Or by hand, with nothing but the standard library:")[1]
    code = snippet.split("```python")[1].split("```")[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    secret = new_secret()
    body = b'{"type":"cn.gov.xietong.dualnotice.DualNoticePush"}'
    headers = signed_headers("5e0f", business_clock().now(), body, [secret], "application/json")
    assert namespace["verified"](secret, body, headers)
    assert not namespace["verified"](secret, body + b" ", headers)
    assert not namespace["verified"](new_secret(), body, headers)
