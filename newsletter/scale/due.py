"""Which collect, build and send times of a newsletter fall in a window of UTC time.

procrastinate's periodic tasks run on UTC cron; a newsletter's schedule is in its own timezone ("weekly on monday
at 08:00" in Europe/Paris moves with daylight saving). So a periodic task ticks every minute and asks this module
which of each newsletter's local fire times fall in the time since the last tick. The times themselves come from
newsletter.schedule.cadence, as `newsletter run` on one machine computes them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from newsletter.config import Newsletter
from newsletter.schedule import cadence

_PAGE = 32


def due_between(nl: Newsletter, job: str, start: datetime, end: datetime) -> list[datetime]:
    """The newsletter's `job` ("collect", "build" or "send") fire times in (start, end], as aware local times."""
    out: list[datetime] = []
    after = start
    while True:
        times = cadence.next_fire_times(nl, after, _PAGE, job=job)
        for when in times:
            if when.astimezone(UTC) > end:
                return out
            out.append(when)
        if len(times) < _PAGE:
            return out
        after = times[-1]


def period_key(nl: Newsletter, due: datetime) -> str:
    """The issue period a send time belongs to (the issue's unique key with the newsletter)."""
    return cadence.period_key(nl, due)


def send_of_build(nl: Newsletter, build_time: datetime) -> datetime:
    """The send a draft built at `build_time` is for (`build_ahead` / `auto after N hours` before it)."""
    ahead = cadence.build_ahead(nl)
    return build_time + ahead if ahead else build_time
