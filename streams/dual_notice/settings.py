"""The 双告知 processor's settings: ``XIETONG_DUAL_NOTICE_*``.

The claim and licence deadlines count as the law counts periods (《民法典》 第二百零一条,
《行政许可法》 第八十二条), on the business clock (:mod:`xietong.clock`): a period of *n*
days that starts at an instant does not count that instant's day in the province; it
ends at 24:00 of the *n*-th day after it. In working days, *n* working days are counted
from the next day, and the period ends at 24:00 of the last. A period of hours, minutes
or seconds (a rehearsal's ``PT1H``) runs from the instant itself, as the law counts
periods of hours.
"""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streams.settings import ProcessorSettings
from xietong.clock import business_clock

DAY = timedelta(days=1)


class DualNoticeSettings(ProcessorSettings):
    """The province's 双告知 rules, from ``XIETONG_DUAL_NOTICE_*`` variables.

    Periods are ISO 8601 durations or seconds: ``XIETONG_DUAL_NOTICE_CLAIM_PERIOD=P15D``,
    ``…=PT30S`` or ``…=30``.
    """

    model_config = SettingsConfigDict(env_prefix="XIETONG_DUAL_NOTICE_", extra="ignore")

    claim_period: timedelta = Field(
        default=timedelta(days=15),
        description="认领期限: from the registration to the claim (Zhejiang used 15 days),"
        " ending at 24:00 of its last day in the province.",
    )
    working_days: bool = Field(
        default=False,
        description="Count the claim period in working days: from the day after the"
        " registration, ending at 24:00 of the last working day in the province.",
    )
    holidays: list[date] = Field(
        default_factory=list, description="法定节假日 on weekdays: not working days."
    )
    extra_working_days: list[date] = Field(
        default_factory=list, description="调休上班日 on weekends: working days."
    )
    licence_period: timedelta = Field(
        default=timedelta(days=60),
        description="From a claim to the 无证经营 risk alert when no licence has arrived,"
        " ending at 24:00 of its last day in the province.",
    )
    metrics_port: int | None = Field(
        default=9465, description="Port of the Prometheus /metrics endpoint; unset: none."
    )

    def claim_deadline(self, start_ms: int) -> int:
        """The end (epoch ms) of the claim period that starts at ``start_ms``."""
        if not self.working_days:
            return period_end(start_ms, self.claim_period)
        clock = business_clock()
        day = clock.day_of(start_ms)
        counted = 0
        while counted < self.claim_period.days:
            day += DAY
            counted += self.is_working_day(day)
        return clock.end_of_day_ms(day)

    def is_working_day(self, day: date) -> bool:
        if day in self.extra_working_days:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def licence_deadline(self, claimed_ms: int) -> int:
        """The end (epoch ms) of the licence period of a claim made at ``claimed_ms``."""
        return period_end(claimed_ms, self.licence_period)


def period_end(start_ms: int, period: timedelta) -> int:
    """The end of ``period`` starting at ``start_ms``: whole days as the law counts them
    (24:00 of the last day in the province), a period with hours, minutes or seconds from
    the instant."""
    if period % DAY:
        return start_ms + int(period.total_seconds() * 1000)
    return business_clock().period_end(start_ms, period.days)
