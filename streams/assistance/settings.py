"""The 行政协助 processor's settings: ``XIETONG_ASSISTANCE_*``.

A listed item's time limit is the list's (``registry.assistance-items``: days, or working
days); a request outside the list (清单外) runs for the days it asks for, else for
``unlisted_time_limit_days``. Either counts as the law counts periods, on the business
clock (:mod:`xietong.clock`): from the day after the request, ending at 24:00 of the last
(working) day in the province (:meth:`~xietong.clock.BusinessClock.period_end`,
:meth:`~xietong.clock.BusinessClock.working_period_end`). ``time_scale`` shrinks every
limit for a rehearsal (``PT1M``: one day lasts a minute, counted from the request).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streams.settings import ProcessorSettings, WorkingCalendarSettings
from xietong.clock import business_clock


class AssistanceSettings(ProcessorSettings, WorkingCalendarSettings):
    """The province's 行政协助 rules, from ``XIETONG_ASSISTANCE_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="XIETONG_ASSISTANCE_", extra="ignore")

    unlisted_time_limit_days: int = Field(
        default=10,
        gt=0,
        description="协助时限 of a request outside the list (清单外) that names none.",
    )
    unlisted_working_days: bool = Field(
        default=True, description="Whether that limit counts working days (工作日)."
    )
    max_unlisted_time_limit_days: int = Field(
        default=60, gt=0, description="The longest limit a request outside the list may ask."
    )
    action_clock_skew: timedelta = Field(
        default=timedelta(minutes=5),
        description="How far an action's acted_at may be ahead of the platform's clock.",
    )
    time_scale: timedelta | None = Field(
        default=None,
        description="A rehearsal's day: every time limit's day lasts this long, counted from"
        " the request's instant (unset: days as the law counts them).",
    )
    metrics_port: int | None = Field(
        default=9470, description="Port of the Prometheus /metrics endpoint; unset: none."
    )

    def deadline(self, requested_at: int, days: int, working_days: bool) -> int:
        """The end (epoch ms) of a time limit of ``days`` (working) days from a request
        made at ``requested_at``."""
        if self.time_scale is not None:
            return requested_at + int(self.time_scale.total_seconds() * 1000) * days
        clock = business_clock()
        if working_days:
            return clock.working_period_end(requested_at, days, self.working_calendar)
        return clock.period_end(requested_at, days)
