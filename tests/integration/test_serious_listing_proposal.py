"""经营异常名录届满三年, end to end through the timer: a worker of ``xietong streams
joint-punishment`` whose business clock (``XIETONG_CLOCK_OFFSET``) reads a minute before
midnight in China, and an 经营异常 listing whose three years end that day. The proposal is
not sent while the day lasts; the first timer tick after 00:00 in the province sends it,
once. (Listings read after their three years are proposed at once:
tests/integration/test_joint_punishment.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta

import pytest

from streams.joint_punishment.escalation import serious_listing_proposal_id
from tests.joint_punishment_records import list_entry
from tests.stream_worker import (
    Onboarding,
    Platform,
    Watch,
    Worker,
    barrier,
    publish_catalog,
    skip_backlog,
    streams_group,
    until_group_empty,
)
from xietong import topics
from xietong.clock import BusinessClock, months_later
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

#: How long before the province's midnight the worker's clock starts.
BEFORE_MIDNIGHT = timedelta(seconds=75)


@dataclass(frozen=True)
class Rehearsal:
    """The worker's business clock, and the midnight in China it reaches soon after."""

    clock: BusinessClock
    midnight: datetime


@pytest.fixture(scope="module")
def rehearsal() -> Rehearsal:
    """Real time, shifted to 75 s before the next midnight in China (16:00 UTC)."""
    real = BusinessClock()
    midnight = real.midnight(real.today() + timedelta(days=1))
    return Rehearsal(BusinessClock(offset=midnight - BEFORE_MIDNIGHT - real.now()), midnight)


@pytest.fixture(scope="module")
def platform(
    registry_databases: Callable[[], str],
    stack_settings: Settings,
    kafka: KafkaClients,
    rehearsal: Rehearsal,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    publish_catalog(registry_databases(), stack_settings, kafka)
    onboarding = Onboarding(kafka, stack_settings)
    onboarding.onboard("hz-xh-amr")
    group = streams_group("joint-punishment")
    until_group_empty(kafka, group)
    skip_backlog(kafka, group, [topics.CREDIT_LIST_ENTRIES.name, topics.MATTER_EVENTS.name])
    worker = Worker.of("joint-punishment", tmp_path_factory.mktemp("jp-timer") / "worker.log")
    worker.env["XIETONG_CLOCK_OFFSET"] = str(rehearsal.clock.offset.total_seconds())
    try:
        worker.start()
        yield Platform(kafka, onboarding)
    finally:
        worker.stop()
        onboarding.offboard_all()


def test_the_proposal_is_sent_by_the_first_tick_after_midnight_in_the_province_once(
    platform: Platform, kafka: KafkaClients, rehearsal: Rehearsal
) -> None:
    clock, midnight = rehearsal.clock, rehearsal.midnight
    last_day = midnight.date() - timedelta(days=1)  # the three years end at 24:00 that day
    uscc = make_uscc("91", "330106")
    proposals = Watch(kafka, topics.PUNISHMENT_SERIOUS_LISTING_PROPOSALS.name, uscc)
    listing = list_entry(
        uscc,
        f"YC-{uscc}",
        list_type="ABNORMAL_OPERATION",
        listed_on=months_later(last_day, -36),
        authority="hz-xh-amr",
    )
    assert months_later(listing["listed_on"], 36) == last_day

    platform.list(listing)
    # Everything the listing made is out once a listing of a partition mate made its notices.
    barrier(
        kafka,
        uscc,
        lambda mate: platform.list(list_entry(mate, f"E-{mate}", listed_on=last_day)),
        topics.PUNISHMENT_SANCTION_NOTICES.name,
        division="330106",
    )
    if clock.now() < midnight:  # the day still lasts for the worker (as it should by far)
        assert proposals.records() == []

    [proposal] = proposals.until(bool, timeout=BEFORE_MIDNIGHT.total_seconds() + 60)

    assert clock.now() >= midnight
    assert proposal["proposal_id"] == serious_listing_proposal_id(listing["entry_id"])
    assert proposal["proposed_at"] == midnight
    assert proposal["last_day"] == last_day
    assert proposal["due_on"] == last_day + timedelta(days=1)
    assert proposal["department"]["code"] == "hz-xh-amr"
    # nothing again by the time a later record of the partition is handled (ticks go on)
    barrier(
        kafka,
        uscc,
        lambda mate: platform.list(list_entry(mate, f"E2-{mate}", listed_on=last_day)),
        topics.PUNISHMENT_SANCTION_NOTICES.name,
        division="330106",
    )
    assert len(proposals.records()) == 1
    assert datetime.combine(proposal["due_on"], time.min, clock.zone) == midnight
