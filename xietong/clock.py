"""The business clock: the one definition of "now", "today" and every deadline.

The province's time zone (``XIETONG_TIME_ZONE``, default ``Asia/Shanghai``) decides which
day an instant falls on, where a day starts and when a period ends, in every service and
every test. No other module computes a local day by itself: they ask the clock::

    from xietong.clock import business_clock

    clock = business_clock()
    clock.today()                       # the day it is in the province now
    clock.day_of(1_765_040_400_000)     # the day an instant (epoch ms) falls on there
    clock.midnight(date(2026, 12, 7))   # 00:00 of that day there (aware datetime)
    clock.period_end(claimed_at, 15)    # the end of a 15-day period that starts then
    clock.working_period_end(registered_at, 5)  # … of 5 working days

**Periods count as the law counts them** (《行政许可法》 and 《民法典》 第二百零一条): a
period of *n* days that starts on a day does not count that day; it starts the next day
and ends at the end of its last day, so a claim made at any hour of 1 March with a
15-day period is due at 24:00 on 16 March. A period of months or years (《民法典》
第二百零二条) ends at the end of the corresponding day of its last month
(:func:`months_later`; the month's last day where it has none): listed on 1 March 2023,
three years end at 24:00 on 1 March 2026 (:meth:`BusinessClock.months_end`).

**Working days** (《行政许可法》 第八十二条: periods in working days exclude 法定节假日)
count the same way: a period of *n* working days starts the day after its event, counts
only working days, and ends at 24:00 of its *n*-th working day
(:meth:`BusinessClock.working_period_end`). Which days are working days is the State
Council's yearly calendar of holidays and 调休 make-up working days, as the maintained
``chinese-calendar`` package knows it (:class:`WorkingCalendar`), with the province's own
overrides on top. For a year the package does not know yet (the calendar is published
each November, a release may follow later) Monday–Friday count, with those overrides:
the State Council's published days belong there until the package catches up. Such
deadlines are provisional; the clock says so once per year in the log
(``working_calendar_provisional``) and in ``xietong_working_calendar_provisional{year}``.

**Rehearsals.** A deployment can rehearse another hour or day without touching the
machine's clock (libfaketime hangs the Kafka broker): ``XIETONG_CLOCK_OFFSET`` shifts
every service's business clock by a duration (seconds, or ISO 8601 such as ``PT8H``),
and ``XIETONG_CLOCK_AT`` freezes it at one instant (for one-shot commands and tests:
a frozen clock never reaches a deadline). The suite uses both to run its clock-sensitive
tests on either side of midnight in China whatever the hour of the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from functools import lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar
from prometheus_client import Gauge

from xietong.logs import log_event

logger = logging.getLogger(__name__)

DEFAULT_TIME_ZONE = "Asia/Shanghai"
#: Avro's ``date`` counts days from here.
EPOCH_DAY = date(1970, 1, 1)
DAY_MS = 86_400_000


def epoch_day(day: date | int) -> int:
    """A day as Avro's ``date`` holds it: days since 1970-01-01 (an int passes through)."""
    return day if isinstance(day, int) else (day - EPOCH_DAY).days


def from_epoch_day(day: int) -> date:
    return EPOCH_DAY + timedelta(days=day)


def months_later(day: date, months: int) -> date:
    """The corresponding day ``months`` months after ``day`` (the last day of a period of
    that many months that starts on ``day``, 《民法典》 第二百零二条): the same day of the
    month, or the month's last day where it has none (29 February → 28 February)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    following = date(year + month // 12, month % 12 + 1, 1)
    return date(year, month, min(day.day, (following - timedelta(days=1)).day))


def millis(moment: datetime | int) -> int:
    """An instant in epoch milliseconds (an int passes through; a naive datetime is UTC)."""
    if isinstance(moment, int):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


PROVISIONAL_YEARS = Gauge(
    "xietong_working_calendar_provisional",
    "1 for a year whose working days are counted Monday–Friday plus the province's"
    " overrides, the maintained calendar not knowing it yet",
    ("year",),
)
#: The years already reported provisional by this process: once each, not per deadline.
_reported_provisional: set[int] = set()


@dataclass(frozen=True)
class WorkingCalendar:
    """工作日: which days are working days in the province.

    The national calendar (法定节假日 and 调休上班日) from ``chinese-calendar``, then the
    province's overrides: ``extra_holidays`` are not working days, ``extra_working_days``
    are. For a year the package does not know, Monday–Friday with the overrides.
    """

    extra_holidays: frozenset[date] = frozenset()
    extra_working_days: frozenset[date] = frozenset()

    def is_working_day(self, day: date) -> bool:
        if day in self.extra_working_days:
            return True
        if day in self.extra_holidays:
            return False
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:  # the package knows 2004 to its release's next year
            _report_provisional(day.year)
            return day.weekday() < 5


def _report_provisional(year: int) -> None:
    if year in _reported_provisional:
        return
    _reported_provisional.add(year)
    PROVISIONAL_YEARS.labels(str(year)).set(1)
    log_event(
        logger,
        "working_calendar_provisional",
        year=year,
        reason=f"chinese-calendar {chinese_calendar.__version__} has no holidays for {year}:"
        " its working days are Monday–Friday plus the province's extra_holidays and"
        " extra_working_days, and deadlines counted in them are provisional until the"
        " package is upgraded",
    )


#: The national calendar without overrides.
NATIONAL_CALENDAR = WorkingCalendar()


@dataclass(frozen=True)
class BusinessClock:
    """The province's clock: real time (or a rehearsed one) read in the province's zone.

    ``offset`` shifts real time; ``at`` freezes it; ``wall`` is the source of real time
    (``time.time``, which ``time-machine`` moves in unit tests).
    """

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIME_ZONE))
    offset: timedelta = timedelta(0)
    at: datetime | None = None
    wall: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    # -- now ----------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The current instant, epoch milliseconds."""
        if self.at is not None:
            return millis(self.at)
        return int((self.wall() + self.offset.total_seconds()) * 1000)

    def now(self) -> datetime:
        """The current instant as an aware datetime in the province's zone."""
        return datetime.fromtimestamp(self.now_ms() / 1000, self.zone)

    def today(self) -> date:
        """The day it is in the province now."""
        return self.now().date()

    def local_time(self, moment: datetime | int) -> datetime:
        """An instant (aware datetime, or epoch ms) as an aware datetime in the province."""
        return datetime.fromtimestamp(millis(moment) / 1000, self.zone)

    # -- days -----------------------------------------------------------------------------
    def day_of(self, moment: datetime | int) -> date:
        """The day an instant (aware datetime, or epoch ms) falls on in the province."""
        return datetime.fromtimestamp(millis(moment) / 1000, self.zone).date()

    def epoch_day_of(self, moment: datetime | int) -> int:
        """:meth:`day_of` as days since 1970-01-01 (Avro's ``date``)."""
        return epoch_day(self.day_of(moment))

    def midnight(self, day: date | int) -> datetime:
        """00:00 in the province at the start of ``day`` (a date or an epoch day)."""
        if isinstance(day, int):
            day = from_epoch_day(day)
        return datetime.combine(day, clock_time.min, self.zone)

    def midnight_ms(self, day: date | int) -> int:
        """:meth:`midnight` in epoch milliseconds."""
        return millis(self.midnight(day))

    def end_of_day_ms(self, day: date | int) -> int:
        """24:00 of ``day`` in the province (the next day's midnight), epoch ms."""
        if isinstance(day, int):
            day = from_epoch_day(day)
        return self.midnight_ms(day + timedelta(days=1))

    # -- periods -------------------------------------------------------------------------
    def period_end(self, start: datetime | int, days: int) -> int:
        """The end (epoch ms) of a period of ``days`` days that starts at ``start``.

        The day of ``start`` does not count; the period ends at 24:00 of its last day.
        """
        return self.end_of_day_ms(self.day_of(start) + timedelta(days=days))

    def months_end(self, start: datetime | int, months: int) -> int:
        """The end (epoch ms) of a period of ``months`` months (12 a year) that starts at
        ``start``: as :meth:`period_end`, at 24:00 of its last day, the corresponding day
        (:func:`months_later`)."""
        return self.end_of_day_ms(months_later(self.day_of(start), months))

    def last_day(self, start: datetime | int, days: int) -> date:
        """The last day of a period of ``days`` days that starts at ``start``."""
        return self.day_of(start) + timedelta(days=days)

    def working_period_end(
        self, start: datetime | int, days: int, calendar: WorkingCalendar = NATIONAL_CALENDAR
    ) -> int:
        """The end (epoch ms) of a period of ``days`` working days that starts at ``start``.

        As :meth:`period_end`: the day of ``start`` does not count; the period ends at
        24:00 of its last working day in ``calendar``.
        """
        return self.end_of_day_ms(self.last_working_day(start, days, calendar))

    def last_working_day(
        self, start: datetime | int, days: int, calendar: WorkingCalendar = NATIONAL_CALENDAR
    ) -> date:
        """The last day of a period of ``days`` working days that starts at ``start``."""
        day, counted = self.day_of(start), 0
        while counted < days:
            day += timedelta(days=1)
            counted += calendar.is_working_day(day)
        return day


def clock_from_settings(
    time_zone: str = DEFAULT_TIME_ZONE,
    offset: timedelta = timedelta(0),
    at: datetime | None = None,
) -> BusinessClock:
    return BusinessClock(zone=ZoneInfo(time_zone), offset=offset, at=at)


@lru_cache(maxsize=1)
def business_clock() -> BusinessClock:
    """The process-wide business clock, from the settings (``XIETONG_TIME_ZONE``,
    ``XIETONG_CLOCK_OFFSET``, ``XIETONG_CLOCK_AT``)."""
    from xietong.settings import get_settings

    settings = get_settings()
    return clock_from_settings(settings.time_zone, settings.clock_offset, settings.clock_at)
