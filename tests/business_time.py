"""The instants the clock-sensitive tests run at, whatever the hour of the run.

Midnight in China is 16:00 UTC: at 15:30 UTC the province and UTC have the same day, at
16:30 and 23:30 UTC the province is a day ahead. A test parametrised over
:data:`INSTANTS` proves its rule on both sides of the province's midnight::

    @pytest.mark.parametrize("instant", INSTANTS, ids=instant_id)
    def test_...(instant: datetime) -> None: ...

Services started by a test rehearse an instant with ``XIETONG_CLOCK_OFFSET``
(:func:`offset_to`): the business clock of every process then reads that instant, and
moves on from it in real time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

#: The hours (UTC) of the instants: before and after midnight in China.
HOURS_UTC = (time(15, 30), time(16, 30), time(23, 30))


def instants_on(day: date) -> list[datetime]:
    return [datetime.combine(day, hour, UTC) for hour in HOURS_UTC]


#: The instants on a fixed day, for pure rules (which take ``now`` as an argument).
INSTANTS = instants_on(date(2026, 6, 15))


def instants_today() -> list[datetime]:
    """The instants on today's UTC date, for services rehearsing them (recent enough that
    the stack's data and the services' windows hold them)."""
    return instants_on(datetime.now(UTC).date())


def offset_to(instant: datetime) -> timedelta:
    """The ``XIETONG_CLOCK_OFFSET`` that makes a business clock read ``instant`` now."""
    return instant - datetime.now(UTC)


def instant_id(instant: datetime) -> str:
    return instant.strftime("%H:%MZ")
