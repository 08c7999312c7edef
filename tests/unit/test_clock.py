"""The business clock: the province's day, its midnights and the law's periods, whatever
the hour of the run; a rehearsal offset or a frozen instant from the settings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from prometheus_client import REGISTRY

from tests.business_time import INSTANTS, instant_id, instants_on
from xietong import clock as clock_module
from xietong.clock import (
    BusinessClock,
    WorkingCalendar,
    business_clock,
    clock_from_settings,
    epoch_day,
    from_epoch_day,
    millis,
)
from xietong.logs import event_fields
from xietong.settings import Settings, get_settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
CLOCK = BusinessClock()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """The process-wide settings and clock read again from the environment, and after."""
    get_settings.cache_clear()
    business_clock.cache_clear()
    yield
    get_settings.cache_clear()
    business_clock.cache_clear()


# -- days ---------------------------------------------------------------------------------


def test_the_day_turns_at_midnight_in_the_province_not_in_utc() -> None:
    assert CLOCK.day_of(utc(2026, 12, 6, 15, 59, 59, 999_000)) == date(2026, 12, 6)
    assert CLOCK.day_of(utc(2026, 12, 6, 16, 0)) == date(2026, 12, 7)
    assert CLOCK.day_of(millis(utc(2026, 12, 6, 16, 0)) - 1) == date(2026, 12, 6)


def test_a_midnight_is_the_start_of_the_day_in_the_province() -> None:
    midnight = CLOCK.midnight(date(2026, 12, 7))
    assert midnight == utc(2026, 12, 6, 16, 0)
    assert midnight.utcoffset() == timedelta(hours=8)
    assert CLOCK.midnight_ms(epoch_day(date(2026, 12, 7))) == millis(midnight)
    assert CLOCK.end_of_day_ms(date(2026, 12, 7)) == millis(utc(2026, 12, 7, 16, 0))
    assert from_epoch_day(epoch_day(date(2026, 12, 7))) == date(2026, 12, 7)


def test_another_time_zone_is_a_setting() -> None:
    urumqi = clock_from_settings(Settings(time_zone="Asia/Urumqi").time_zone)
    assert urumqi.day_of(utc(2026, 12, 6, 17, 0)) == date(2026, 12, 6)
    assert urumqi.midnight(date(2026, 12, 7)) == utc(2026, 12, 6, 18, 0)


# -- periods, counted as the law counts them ----------------------------------------------


@pytest.mark.parametrize("hour", [0, 9, 23])
def test_a_period_starts_the_next_day_and_ends_at_the_end_of_its_last_day(hour: int) -> None:
    claimed = datetime(2026, 3, 1, hour, 30, tzinfo=SHANGHAI)
    assert CLOCK.last_day(claimed, 15) == date(2026, 3, 16)
    assert CLOCK.period_end(claimed, 15) == millis(datetime(2026, 3, 17, tzinfo=SHANGHAI))


def test_a_period_started_just_after_midnight_in_china_counts_from_the_china_day() -> None:
    # 16:30 UTC on 1 March is 00:30 on 2 March in China: the period counts from 3 March.
    assert CLOCK.last_day(utc(2026, 3, 1, 16, 30), 15) == date(2026, 3, 17)
    assert CLOCK.last_day(utc(2026, 3, 1, 15, 30), 15) == date(2026, 3, 16)


# -- working days: the national calendar, counted as the law counts -----------------------


def end_of(day: date) -> int:
    """24:00 of ``day`` in China."""
    return millis(datetime.combine(day + timedelta(days=1), datetime.min.time(), SHANGHAI))


@pytest.mark.parametrize("instant", INSTANTS, ids=instant_id)
def test_days_and_working_days_both_start_the_next_day_and_end_at_24_00(
    instant: datetime,
) -> None:
    # 15 and 16 June 2026 are a Monday and a Tuesday: the next day is a working day
    next_day = CLOCK.day_of(instant) + timedelta(days=1)
    assert CLOCK.working_period_end(instant, 1) == CLOCK.period_end(instant, 1) == end_of(next_day)


@pytest.mark.parametrize("instant", instants_on(date(2026, 9, 30)), ids=instant_id)
def test_the_national_day_week_is_no_working_days_and_its_make_up_saturday_is_one(
    instant: datetime,
) -> None:
    # 10-01 … 10-07 are 国庆 and 中秋 holidays (a Monday to a Wednesday among them);
    # then 10-08 Thursday, 10-09 Friday and 10-10, a Saturday worked instead (调休)
    assert CLOCK.last_working_day(instant, 3) == date(2026, 10, 10)
    assert CLOCK.working_period_end(instant, 3) == end_of(date(2026, 10, 10))
    assert CLOCK.working_period_end(instant, 4) == end_of(date(2026, 10, 12))


@pytest.mark.parametrize(
    ("instant", "last_day"),
    zip(
        instants_on(date(2026, 10, 9)),
        [date(2026, 10, 10), date(2026, 10, 12), date(2026, 10, 12)],
        strict=True,
    ),
    ids=instant_id,
)
def test_a_make_up_saturday_counts_from_the_day_before_it_in_china(
    instant: datetime, last_day: date
) -> None:
    # at 15:30 UTC it is still Friday 10-09 in China: the 调休 Saturday is the first working
    # day after; from 00:30 on Saturday in China on, Monday 10-12 is
    assert CLOCK.working_period_end(instant, 1) == end_of(last_day)


@pytest.fixture
def nothing_reported_provisional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock_module, "_reported_provisional", set())


@pytest.mark.parametrize(
    ("instant", "last_day"),
    zip(
        instants_on(date(2026, 12, 30)),
        [date(2027, 1, 4), date(2027, 1, 5), date(2027, 1, 5)],
        strict=True,
    ),
    ids=instant_id,
)
def test_a_year_the_calendar_does_not_know_counts_monday_to_friday_said_once(
    instant: datetime,
    last_day: date,
    nothing_reported_provisional: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # chinese-calendar 1.11 knows 2026 and not 2027: 2027-01-01, a Friday, counts as a
    # working day until the package (or the province's override) says otherwise
    with caplog.at_level(logging.INFO, logger="xietong.clock"):
        assert CLOCK.working_period_end(instant, 3) == end_of(last_day)
        CLOCK.working_period_end(instant, 10)

    said = [record for record in caplog.records if "working_calendar_provisional" in record.message]
    assert len(said) == 1 and event_fields(said[0])["year"] == 2027
    assert REGISTRY.get_sample_value("xietong_working_calendar_provisional", {"year": "2027"}) == 1


@pytest.mark.parametrize("instant", instants_on(date(2026, 12, 30)), ids=instant_id)
def test_the_province_s_overrides_decide_a_year_the_calendar_does_not_know(
    instant: datetime, nothing_reported_provisional: None
) -> None:
    new_year = WorkingCalendar(
        extra_holidays=frozenset({date(2027, 1, 1)}),
        extra_working_days=frozenset({date(2027, 1, 2)}),
    )
    day = CLOCK.day_of(instant)
    # China's 12-30 counts 12-31, 01-02 (worked), 01-04; its 12-31 counts 01-02, 01-04, 01-05
    expected = date(2027, 1, 4) if day == date(2026, 12, 30) else date(2027, 1, 5)
    assert CLOCK.working_period_end(instant, 3, new_year) == end_of(expected)


def test_an_override_beats_the_national_calendar() -> None:
    province = WorkingCalendar(
        extra_holidays=frozenset({date(2026, 6, 16)}),
        extra_working_days=frozenset({date(2026, 10, 5)}),
    )
    assert not province.is_working_day(date(2026, 6, 16))
    assert province.is_working_day(date(2026, 10, 5))
    assert WorkingCalendar().is_working_day(date(2026, 6, 16))


# -- now: the wall clock, moved, shifted or frozen ------------------------------------------


@pytest.mark.parametrize(
    ("instant", "today"),
    [
        (utc(2026, 12, 6, 15, 30), date(2026, 12, 6)),
        (utc(2026, 12, 6, 16, 30), date(2026, 12, 7)),
        (utc(2026, 12, 6, 23, 30), date(2026, 12, 7)),
    ],
    ids=["15:30Z", "16:30Z", "23:30Z"],
)
def test_today_is_the_province_s_day_whatever_the_hour_in_utc(
    instant: datetime, today: date
) -> None:
    with time_machine.travel(instant, tick=False):
        assert CLOCK.now_ms() == millis(instant)
        assert CLOCK.today() == today
        assert CLOCK.now().tzinfo == SHANGHAI


def test_an_offset_from_the_settings_shifts_now(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    monkeypatch.setenv("XIETONG_CLOCK_OFFSET", "PT8H")
    with time_machine.travel(utc(2026, 12, 6, 8, 30), tick=False):
        clock = business_clock()
        assert clock.offset == timedelta(hours=8)
        assert clock.now() == utc(2026, 12, 6, 16, 30)
        assert clock.today() == date(2026, 12, 7)


def test_an_offset_in_seconds_may_be_negative(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    monkeypatch.setenv("XIETONG_CLOCK_OFFSET", "-3600")
    with time_machine.travel(utc(2026, 12, 6, 16, 30), tick=False):
        assert business_clock().today() == date(2026, 12, 6)


def test_a_frozen_instant_from_the_settings_stops_the_clock(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    monkeypatch.setenv("XIETONG_CLOCK_AT", "2026-12-06T23:30:00+00:00")
    clock = business_clock()
    first = clock.now_ms()
    with time_machine.travel(utc(2030, 1, 1), tick=False):
        assert clock.now_ms() == first == millis(utc(2026, 12, 6, 23, 30))
    assert clock.today() == date(2026, 12, 7)
