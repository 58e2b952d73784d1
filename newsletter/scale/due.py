"""Which collect and send times of a newsletter fall in a window of UTC time.

procrastinate's periodic tasks run on UTC cron; a newsletter's schedule is in its own timezone ("weekly on monday
at 08:00" in Europe/Paris moves with daylight saving). So a periodic task ticks every minute and asks this module
which of each newsletter's local fire times fall in the minute just ended.

This is a stopgap until newsletter.schedule.cadence (the scheduling work) lands: `due_between` is the one
function the tasks call, and it will defer to cadence.next_fire_times then.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from newsletter.config import Newsletter

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EVERY = re.compile(r"^every (\d+) (minute|hour|day)s?$")
_DAILY = re.compile(r"^daily at (\d{1,2}):(\d{2})$")
_WEEKLY = re.compile(r"^weekly on (\w+) at (\d{1,2}):(\d{2})$")


def _local_fires(phrase: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    text = phrase.strip().lower()
    first = start.astimezone(tz).replace(second=0, microsecond=0)
    out: list[datetime] = []
    if m := _EVERY.match(text):
        step = timedelta(**{m.group(2) + "s": int(m.group(1))})
        midnight = first.replace(hour=0, minute=0)
        t = midnight
        while t.astimezone(UTC) <= end:
            if t.astimezone(UTC) > start:
                out.append(t)
            t += step
        return out
    if m := _DAILY.match(text):
        days, hour, minute = set(range(7)), int(m.group(1)), int(m.group(2))
    elif m := _WEEKLY.match(text):
        if m.group(1) not in DAYS:
            raise ValueError(f"unknown day {m.group(1)!r}")
        days, hour, minute = {DAYS.index(m.group(1))}, int(m.group(2)), int(m.group(3))
    else:
        raise ValueError(f"unsupported schedule {phrase!r}")
    day = first.date() - timedelta(days=1)
    while True:
        t = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
        if t.astimezone(UTC) > end:
            return out
        if day.weekday() in days and t.astimezone(UTC) > start:
            out.append(t)
        day += timedelta(days=1)


def due_between(nl: Newsletter, job: str, start: datetime, end: datetime) -> list[datetime]:
    """The newsletter's `job` ("collect" or "send") fire times in (start, end], as aware local times."""
    phrase = nl.schedule.collect if job == "collect" else nl.schedule.send
    return _local_fires(phrase, ZoneInfo(nl.schedule.timezone), start, end)


def period_key(nl: Newsletter, due: datetime) -> str:
    """The issue period a send time belongs to (ISO week for weekly newsletters, the date otherwise)."""
    local = due.astimezone(ZoneInfo(nl.schedule.timezone))
    if nl.schedule.send.strip().lower().startswith("weekly"):
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return local.strftime("%Y-%m-%d")
