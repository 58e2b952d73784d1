"""A send's groups by the readers' own time zones: "send at 07:00" means 07:00 where each reader is.

A scheduled send planned for the instant `due` (07:00 in the newsletter's zone) goes to each reader at the first
moment, from `due` on, when their own clock reads the same time: readers west of the newsletter later that day,
readers east of it (whose 07:00 of that date has already passed) at their next 07:00, so everyone gets it within
a day of `due`, at their morning, and one copy only. Readers without a time zone (or with one this machine does
not know) are in the newsletter's group, at `due`. Zones whose instant is the same (the same UTC offset on that
date, daylight saving included) are one group: one batch walk, one SendGrid `send_at`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def local_instant(due: datetime, zone: ZoneInfo) -> datetime:
    """The first instant at or after `due` when the clock in `zone` reads due's wall-clock time (in its own zone)."""
    wall = due.timetz().replace(tzinfo=None)
    day = due.astimezone(zone).date()
    for offset in (0, 1, 2):
        candidate = datetime.combine(day + timedelta(days=offset), wall, tzinfo=zone)
        # A time skipped by spring-forward goes out at the first valid instant after it (as the scheduler does).
        candidate = candidate.astimezone(UTC).astimezone(zone)
        if candidate >= due:
            return candidate.astimezone(UTC)
    return due.astimezone(UTC)  # not reached: the next day's wall time is always later


def plan_groups(zones: Iterable[str | None], due: datetime,
                before: datetime | None = None) -> list[dict[str, Any]]:
    """The send's groups, soonest first: [{"at": epoch seconds, "zones": [names], "home": bool}].

    `due` is aware, in the newsletter's zone; `home` marks the group at `due` (readers without a zone are in it).
    `before`: the next send of the newsletter. A zone whose time would come at or after it (its 07:00 falls just
    before the newsletter's, or a daylight-saving change shortened the day) goes at `due` instead, with the
    newsletter's own readers: this issue reaches it before the next one, never the same morning as it.
    """
    at_due = int(due.timestamp())
    groups: dict[int, set[str]] = {at_due: set()}
    for name in zones:
        if not name:
            continue
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            groups[at_due].add(name)  # an unknown zone: the newsletter's time, as before
            continue
        at = local_instant(due, zone)
        groups.setdefault(at_due if before is not None and at >= before else int(at.timestamp()), set()).add(name)
    return [{"at": at, "zones": sorted(names), "home": at == at_due} for at, names in sorted(groups.items())]
