"""The 双告知 processor's settings: ``XIETONG_DUAL_NOTICE_*``."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from datetime import time as clock

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streams.runtime import ProcessorSettings

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))


class DualNoticeSettings(ProcessorSettings):
    """The province's 双告知 rules, from ``XIETONG_DUAL_NOTICE_*`` variables.

    Periods are ISO 8601 durations or seconds: ``XIETONG_DUAL_NOTICE_CLAIM_PERIOD=P15D``,
    ``…=PT30S`` or ``…=30``.
    """

    model_config = SettingsConfigDict(env_prefix="XIETONG_DUAL_NOTICE_", extra="ignore")

    claim_period: timedelta = Field(
        default=timedelta(days=15),
        description="认领期限: from the registration to the claim (Zhejiang used 15 days).",
    )
    working_days: bool = Field(
        default=False,
        description="Count the claim period in working days (whole days, China Standard"
        " Time): the deadline is the end of the last working day.",
    )
    holidays: list[date] = Field(
        default_factory=list, description="法定节假日 on weekdays: not working days."
    )
    extra_working_days: list[date] = Field(
        default_factory=list, description="调休上班日 on weekends: working days."
    )
    licence_period: timedelta = Field(
        default=timedelta(days=60),
        description="From a claim to the 无证经营 risk alert when no licence has arrived.",
    )
    metrics_port: int | None = Field(
        default=9465, description="Port of the Prometheus /metrics endpoint; unset: none."
    )

    def claim_deadline(self, start_ms: int) -> int:
        """The end of the claim period that starts at ``start_ms`` (epoch ms)."""
        if not self.working_days:
            return start_ms + _ms(self.claim_period)
        day = datetime.fromtimestamp(start_ms / 1000, CHINA_STANDARD_TIME).date()
        counted = 0
        while counted < self.claim_period.days:
            day += timedelta(days=1)
            counted += self.is_working_day(day)
        end_of_day = datetime.combine(day + timedelta(days=1), clock.min, CHINA_STANDARD_TIME)
        return int(end_of_day.timestamp() * 1000)

    def is_working_day(self, day: date) -> bool:
        if day in self.extra_working_days:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def licence_deadline(self, claimed_ms: int) -> int:
        return claimed_ms + _ms(self.licence_period)


def _ms(period: timedelta) -> int:
    return int(period.total_seconds() * 1000)
