"""What the settings of every stream processor have: its timer, its look for departments
onboarded since it started, its metrics port, and where the province's history ends.
Each processor's settings extend :class:`ProcessorSettings` under their own prefix
(``XIETONG_<PROCESSOR>_*``)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from xietong.clock import WorkingCalendar, business_clock, millis


class ProcessorSettings(BaseSettings):
    """What every processor's settings have: how often its timers look, where its metrics
    are. Each processor's subclass reads them, with its rules, from its own
    ``XIETONG_<PROCESSOR>_*`` variables (and gives its metrics port a default)."""

    tick_interval: float = Field(
        default=5.0, gt=0, description="Seconds between two checks of the deadlines."
    )
    inbox_refresh_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between two looks for departments onboarded since (their"
        " inbound topics are read, their inboxes written, what waited for them sent).",
    )
    metrics_port: int | None = Field(
        default=None, description="Port of the Prometheus /metrics endpoint; unset: none."
    )
    history_until: datetime | None = Field(
        default=None,
        description="The cut-over (``HISTORY_UNTIL``): an ISO instant, or a date (its 00:00),"
        " read in the province's time zone when it names none. A deadline that passed before"
        " it is history: recorded on the platform topics, sent to no inbox and alerted to"
        " nobody (streams/README.md, 'A province's first day'). Unset: no history.",
    )

    @field_validator("history_until", mode="after")
    @classmethod
    def _in_the_province(cls, value: datetime | None) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=business_clock().zone)

    @property
    def history_until_ms(self) -> int | None:
        """The cut-over in epoch milliseconds, or None."""
        return None if self.history_until is None else millis(self.history_until)

    def is_history(self, deadline_ms: int | None) -> bool:
        """Whether a deadline belongs to the province's history: it passed before the
        cut-over (at it or earlier), so what it would send is recorded, not sent."""
        until = self.history_until_ms
        return until is not None and deadline_ms is not None and deadline_ms <= until


class WorkingCalendarSettings(BaseSettings):
    """The province's working days, for a processor that counts periods in them: the
    national calendar (holidays and 调休) with the province's overrides on top."""

    extra_holidays: list[date] = Field(
        default_factory=list,
        description="Days that are not working days whatever the national calendar says:"
        " the province's own, or a year's holidays the chinese-calendar package does not"
        " know yet (published each November).",
    )
    extra_working_days: list[date] = Field(
        default_factory=list,
        description="Days that are working days whatever the national calendar says: a"
        " year's 调休上班日 the package does not know yet.",
    )

    @property
    def working_calendar(self) -> WorkingCalendar:
        """The province's working days: the national calendar with its overrides."""
        return WorkingCalendar(frozenset(self.extra_holidays), frozenset(self.extra_working_days))
