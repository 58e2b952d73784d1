"""When a newsletter's jobs happen: its cadences (in `newsletter.config.cadence`'s grammar) as triggers in its
timezone, its approval policy, its periods and how late a missed send may still go out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from newsletter.config import Newsletter
from newsletter.config.cadence import (
    Cadence,
    CadenceError,
    LocalCronTrigger,
    ShiftedTrigger,
    check_build_ahead,
    fire_times,
    last_fire_time,
    local_time,
    parse_cadence,
    parse_duration,
    shortest_gap,
)

__all__ = [
    "Approval", "Cadence", "CadenceError", "LocalCronTrigger", "ShiftedTrigger", "approval_policy", "build_ahead",
    "build_trigger", "check_build_ahead", "collect_trigger", "fire_times", "last_fire_time", "last_send_due",
    "next_fire_times", "next_send_after", "parse_cadence", "parse_duration", "period_key", "send_grace",
    "send_trigger", "shortest_gap", "timezone_of",
]

@dataclass(frozen=True)
class Approval:
    mode: Literal["auto", "required", "auto-after"]
    hours: int = 0


def approval_policy(nl: Newsletter) -> Approval:
    text = " ".join(nl.schedule.approval.lower().split())
    if text in ("auto", "required"):
        return Approval(text)  # type: ignore[arg-type]
    match = re.fullmatch(r"auto after (\d+) hours?", text)
    if match is None:
        raise CadenceError(f"{nl.schedule.approval!r}: use 'auto', 'required' or 'auto after N hours'")
    return Approval("auto-after", int(match[1]))


def timezone_of(nl: Newsletter) -> ZoneInfo:
    return ZoneInfo(nl.schedule.timezone)


def send_trigger(nl: Newsletter) -> BaseTrigger:
    return parse_cadence(nl.schedule.send).trigger(timezone_of(nl))


def collect_trigger(nl: Newsletter) -> BaseTrigger:
    return parse_cadence(nl.schedule.collect).trigger(timezone_of(nl))


def build_ahead(nl: Newsletter) -> timedelta | None:
    """How long before a send its draft is built, or None when the send builds it (approval 'auto')."""
    policy = approval_policy(nl)
    if policy.mode == "auto":
        return None
    if policy.mode == "auto-after":
        return timedelta(hours=policy.hours)  # the editors' window to look and hold
    return parse_duration(nl.schedule.build_ahead)


def build_trigger(nl: Newsletter) -> BaseTrigger | None:
    ahead = build_ahead(nl)
    return ShiftedTrigger(send_trigger(nl), ahead) if ahead else None


def next_fire_times(nl: Newsletter, after: datetime, count: int = 1, *, job: str = "send") -> list[datetime]:
    """The next `count` times the newsletter's `job` (send, collect, build) is due after `after`, local time.

    `after` may be aware or naive UTC. The scale mode turns these into UTC periodic tasks.
    """
    trigger = {"send": send_trigger, "collect": collect_trigger, "build": build_trigger}[job](nl)
    return fire_times(trigger, after, count, timezone_of(nl)) if trigger else []


def last_send_due(nl: Newsletter, now: datetime) -> datetime | None:
    """The most recent scheduled send at or before `now`, in local time."""
    return last_fire_time(send_trigger(nl), now, timezone_of(nl))


def next_send_after(nl: Newsletter, now: datetime) -> datetime | None:
    times = next_fire_times(nl, now, 1)
    return times[0] if times else None


def period_key(nl: Newsletter, due_time: datetime) -> str:
    """The period an issue due at `due_time` belongs to: '2026-W48', '2026-11-29', '2026-11' or a local time.

    The issue table's unique (newsletter, period) key turns this into "one issue per period", whatever the
    scheduler does.
    """
    tz = timezone_of(nl)
    local = local_time(due_time, tz)
    granularity = parse_cadence(nl.schedule.send).granularity
    if granularity == "month":
        return f"{local:%Y-%m}"
    if granularity == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    if granularity == "day":
        return f"{local:%Y-%m-%d}"
    return local.isoformat(timespec="minutes")  # with its UTC offset: unique when the clocks go back


def send_grace(nl: Newsletter) -> timedelta:
    """How late a missed send may still go out: up to a day, and never into the next send's slot."""
    times = next_fire_times(nl, datetime(2026, 1, 5, tzinfo=UTC), 2)
    gap = times[1] - times[0] if len(times) == 2 else timedelta(days=1)
    return max(min(timedelta(days=1), gap - timedelta(seconds=1)), timedelta(seconds=1))
