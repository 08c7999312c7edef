"""The 双告知 processor's settings: ``XIETONG_DUAL_NOTICE_*``.

The claim and licence deadlines count as the law counts periods (《民法典》 第二百零一条,
《行政许可法》 第八十二条), on the business clock (:mod:`xietong.clock`): a period of *n*
days that starts at an instant does not count that instant's day in the province; it
ends at 24:00 of the *n*-th day after it. In working days (``working_days``, the claim
period only) the same: *n* working days counted from the next day, ending at 24:00 of the
last, the working days being the national calendar's (``chinese-calendar``: holidays and
调休) with the province's ``extra_holidays`` and ``extra_working_days`` on top
(:meth:`xietong.clock.BusinessClock.working_period_end`). A period of hours, minutes or
seconds (a rehearsal's ``PT1H``) runs from the instant itself in either mode, as the law
counts periods of hours.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streams.settings import ProcessorSettings, WorkingCalendarSettings
from xietong.clock import business_clock

DAY = timedelta(days=1)


class DualNoticeSettings(ProcessorSettings, WorkingCalendarSettings):
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
        " registration, ending at 24:00 of the last working day in the province"
        " (the national calendar of holidays and 调休, with the overrides below).",
    )
    licence_period: timedelta = Field(
        default=timedelta(days=60),
        description="From a claim to the 无证经营 risk alert when no licence has arrived,"
        " ending at 24:00 of its last day in the province.",
    )
    action_clock_skew: timedelta = Field(
        default=timedelta(minutes=5),
        description="How far a department action's acted_at may be ahead of the"
        " platform's clock (the departments' clocks drift); one later is rejected.",
    )
    metrics_port: int | None = Field(
        default=9465, description="Port of the Prometheus /metrics endpoint; unset: none."
    )

    def claim_deadline(self, start_ms: int) -> int:
        """The end (epoch ms) of the claim period that starts at ``start_ms``."""
        if not self.working_days or self.claim_period % DAY:
            return period_end(start_ms, self.claim_period)
        return business_clock().working_period_end(
            start_ms, self.claim_period.days, self.working_calendar
        )

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
