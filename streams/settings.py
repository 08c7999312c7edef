"""What the settings of every stream processor have: its timer, its look for departments
onboarded since it started, and its metrics port. Each processor's settings extend
:class:`ProcessorSettings` under their own prefix (``XIETONG_<PROCESSOR>_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


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
