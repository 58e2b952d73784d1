"""The cadence grammar of schedule files: schedule phrases and cron expressions to APScheduler 3 triggers.

Pure functions of a phrase, a timezone and a given time, so config validation, the single-process runner, the
scale mode (periodic tasks in UTC) and the tests all agree on the same fire times without waiting for a clock.

Friendly forms (times are local to the newsletter's timezone):

    every 30 minutes | every 1 hour | every 2 days
    daily at 07:00 | weekdays at 07:30 | weekly on monday at 08:00 | monthly on day 1 at 09:00

or a 5-field cron expression (`minute hour day month day-of-week`, day of week 0 or 7 = Sunday as in cron).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

Granularity = Literal["month", "week", "day", "fire"]


DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


CRON_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: 0 = Sunday


_UNITS = {"minute": "minutes", "hour": "hours", "day": "days"}


_TIME = r"(?P<hh>\d{1,2}):(?P<mm>\d{2})"


_FORMS = {
    "interval": re.compile(r"every\s+(?P<n>\d+)\s+(?P<unit>minute|hour|day)s?"),
    "interval1": re.compile(r"every\s+(?P<unit>minute|hour|day)"),
    "daily": re.compile(rf"daily\s+at\s+{_TIME}"),
    "weekdays": re.compile(rf"weekdays\s+at\s+{_TIME}"),
    "weekly": re.compile(rf"weekly\s+on\s+(?P<day>[a-z]+)\s+at\s+{_TIME}"),
    "monthly": re.compile(rf"monthly\s+on\s+day\s+(?P<dom>\d{{1,2}})\s+at\s+{_TIME}"),
}


_DURATION = re.compile(r"(?P<n>\d+)\s*(?P<unit>minute|hour|day)s?")


_LOOKBACKS = (timedelta(hours=2), timedelta(days=2), timedelta(days=8), timedelta(days=32), timedelta(days=367))


_INTERVAL_ANCHOR = datetime(2000, 1, 3)  # a Monday at midnight, local: "every 2 days" keeps the same days


class CadenceError(ValueError):
    """A schedule phrase or cron expression that cannot be understood; the message says how to write it."""


@dataclass(frozen=True)
class Cadence:
    """A parsed schedule phrase: the keyword arguments of its trigger and the period it names."""

    text: str
    kind: Literal["cron", "interval"]
    fields: tuple[tuple[str, str | int], ...]
    granularity: Granularity

    def trigger(self, tz: ZoneInfo) -> BaseTrigger:
        kwargs = dict(self.fields)
        if self.kind == "interval":
            return IntervalTrigger(**kwargs, start_date=_INTERVAL_ANCHOR.replace(tzinfo=tz), timezone=tz)
        return LocalCronTrigger(**kwargs, timezone=tz)

    @property
    def every(self) -> timedelta | None:
        return timedelta(**dict(self.fields)) if self.kind == "interval" else None  # type: ignore[arg-type]


class LocalCronTrigger(CronTrigger):
    """A CronTrigger that keeps local wall-clock times through daylight-saving changes, each at most once.

    APScheduler 3 matches the cron fields against the wall clock and then attaches the zone, so around a change
    it yields both instants of a repeated time (the clocks go back) and, for a time that does not exist (the
    clocks go forward), an instant an hour later on the wall clock, or none at all when asked from inside that
    hour: a runner started at 03:10 on the spring-forward day was told "tomorrow" for a 02:30 send.

    Here the fields are matched on a naive wall clock (the same fields in UTC, which has no changes), and each
    matching wall time W becomes one instant:

    - W exists once: that instant;
    - W happens twice (the clocks went back): the first of them, never the repeat;
    - W does not exist (the clocks went forward): the first valid instant after it, the moment the clocks
      jumped (02:30 in Paris on the last Sunday of March goes out at 03:00 CEST). Several skipped times
      (a cron every 15 minutes) fall on that one instant and fire once.

    Wall time to instant is non-decreasing, so the next fire time is the first matching W whose instant is not
    before the cursor. The twin trigger is rebuilt on demand and not pickled: the job store's state stays
    APScheduler's own (and `repr`, which the runner compares, is unchanged).
    """

    def _wall_trigger(self) -> CronTrigger:
        twin = getattr(self, "_wall", None)
        if twin is None:
            twin = CronTrigger.__new__(CronTrigger)
            twin.__setstate__({"version": 2, "timezone": UTC, "start_date": None, "end_date": None,
                               "fields": self.fields, "jitter": None})
            self._wall = twin
        return twin

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        tz = self.timezone
        cursor = now.astimezone(UTC)
        if previous_fire_time is not None:  # the first fire after the previous one (APScheduler catches up so)
            cursor = previous_fire_time.astimezone(UTC) + timedelta(microseconds=1)
        if self.start_date is not None:
            cursor = max(cursor, self.start_date.astimezone(UTC))
        # The wall clock just before the cursor, plus that microsecond: exactly at the end of a gap this is the
        # start of the gap, so a skipped time due at that very instant is still found.
        one = timedelta(microseconds=1)
        wall = ((cursor - one).astimezone(tz).replace(tzinfo=None) + one).replace(tzinfo=UTC)
        twin = self._wall_trigger()
        for _ in range(10_000):  # only the repeated hour is stepped over, one matching minute at a time
            match = twin.get_next_fire_time(None, wall)
            if match is None:
                return None
            instant = wall_instant(match.replace(tzinfo=None), tz)
            if self.end_date is not None and instant > self.end_date.astimezone(UTC):
                return None
            if instant >= cursor:
                return instant.astimezone(tz)
            wall = match + one  # the repeat of a time that already fired (the clocks went back): look past it
        return None


def wall_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The one UTC instant a schedule means by the naive local time `wall`: itself, the first of a repeated
    time, or the end of the gap for a time the clocks skipped."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first <= second:  # exists once (equal), or twice (the first is earlier)
        return first
    # Skipped: fold=0 reads it with the offset before the change (the later instant), fold=1 with the one after.
    # The clocks jumped between the two; find that instant to the second (zoneinfo does not list transitions).
    after = first.astimezone(tz).utcoffset()
    lo, hi = int(second.timestamp()), int(first.timestamp())  # offset before at lo, after at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _clock(match: re.Match[str], text: str) -> tuple[int, int]:
    hh, mm = int(match["hh"]), int(match["mm"])
    if hh > 23 or mm > 59:
        raise CadenceError(f"{text!r}: {hh:02d}:{mm:02d} is not a time of day (use 00:00 to 23:59)")
    return hh, mm


def parse_cadence(text: str) -> Cadence:
    """Understand a schedule phrase or a 5-field cron expression; CadenceError says what is wrong."""
    raw = text
    text = " ".join(text.strip().lower().split())
    if not text:
        raise CadenceError("empty: write e.g. 'weekly on monday at 08:00' or a cron expression '0 8 * * 1'")
    for form, pattern in _FORMS.items():
        match = pattern.fullmatch(text)
        if match is None:
            continue
        if form in ("interval", "interval1"):
            n = int(match["n"]) if form == "interval" else 1
            if n < 1:
                raise CadenceError(f"{raw!r}: the interval must be at least 1 {match['unit']}")
            return Cadence(raw, "interval", ((_UNITS[match["unit"]], n),), "fire")
        hh, mm = _clock(match, raw)
        at = (("hour", str(hh)), ("minute", str(mm)))
        if form == "daily":
            return Cadence(raw, "cron", at, "day")
        if form == "weekdays":
            return Cadence(raw, "cron", (("day_of_week", "mon-fri"), *at), "day")
        if form == "weekly":
            day = _weekday(match["day"], raw)
            return Cadence(raw, "cron", (("day_of_week", day[:3]), *at), "week")
        dom = int(match["dom"])
        if not 1 <= dom <= 28:
            raise CadenceError(f"{raw!r}: use a day from 1 to 28, which every month has")
        return Cadence(raw, "cron", (("day", str(dom)), *at), "month")
    parts = text.split()
    if len(parts) == 5 and all(re.fullmatch(r"[0-9a-z*,/\-]+", p) for p in parts):
        return _parse_cron(raw, parts)
    raise CadenceError(
        f"{raw!r} is not a schedule: use 'every 30 minutes', 'every 1 hour', 'daily at 07:00', "
        "'weekdays at 07:30', 'weekly on monday at 08:00', 'monthly on day 1 at 09:00', "
        "or a 5-field cron expression such as '0 8 * * 1'"
    )


def _weekday(word: str, raw: str) -> str:
    for day in DAYS:
        if word in (day, day[:3]):
            return day
    raise CadenceError(f"{raw!r}: {word!r} is not a day of the week (monday ... sunday)")


def _cron_days(field: str, raw: str) -> str:
    """Cron's day-of-week field (0 or 7 = Sunday) as names, because APScheduler 3 counts 0 as Monday."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()

    def number(token: str) -> int:
        if token.isdigit() and 0 <= int(token) <= 7:
            return int(token) % 7
        if token[:3] in CRON_DAY_NAMES:
            return CRON_DAY_NAMES.index(token[:3])
        raise CadenceError(f"{raw!r}: day of week {token!r} is not 0-7 or a day name")

    for item in field.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise CadenceError(f"{raw!r}: bad step {step_text!r} in the day of week")
        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            a, b = body.split("-", 1)
            first, last = number(a), number(b)
            if b.strip() == "7":
                last = 7  # "5-7" means Friday to Sunday
        else:
            first = last = number(body)
            if step:
                last = 6
        if last < first:
            raise CadenceError(f"{raw!r}: the day-of-week range {body!r} runs backwards")
        days.update(d % 7 for d in range(first, last + 1, step or 1))
    return ",".join(CRON_DAY_NAMES[d] for d in sorted(days))


def _parse_cron(raw: str, parts: list[str]) -> Cadence:
    minute, hour, day, month, dow = parts
    if day not in ("*", "?") and dow not in ("*", "?"):
        # Cron runs when EITHER matches, APScheduler when BOTH do: refuse rather than guess.
        raise CadenceError(f"{raw!r}: give a day of the month or a day of the week, not both")
    fields = (("minute", minute), ("hour", hour), ("day", "*" if day == "?" else day), ("month", month),
              ("day_of_week", _cron_days(dow, raw)))
    try:
        CronTrigger(**dict(fields), timezone=UTC)
    except ValueError as exc:
        raise CadenceError(f"{raw!r}: {exc}") from None
    single = re.compile(r"\d+")
    granularity: Granularity = "fire"
    if single.fullmatch(minute) and single.fullmatch(hour):  # at most once a day
        granularity = "day"
        if day in ("*", "?") and re.fullmatch(r"[a-z]{3}", fields[4][1]):
            granularity = "week"
        elif dow in ("*", "?") and single.fullmatch(day):
            granularity = "month"
    return Cadence(raw, "cron", fields, granularity)


def parse_duration(text: str) -> timedelta:
    """'24 hours', '90 minutes', '2 days'."""
    match = _DURATION.fullmatch(" ".join(text.strip().lower().split()))
    if match is None:
        raise CadenceError(f"{text!r} is not a duration: use e.g. '24 hours', '90 minutes' or '2 days'")
    return timedelta(**{_UNITS[match["unit"]]: int(match["n"])})


class ShiftedTrigger(BaseTrigger):
    """Another trigger's fire times moved earlier by a fixed offset (the draft before the send)."""

    def __init__(self, base: BaseTrigger, offset: timedelta) -> None:
        self.base = base
        self.offset = offset

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # In UTC: local arithmetic would move by wall-clock hours across a change and drop the fold of a
        # repeated hour (an aware datetime plus a timedelta keeps the wall time, not the instant).
        prev = _utc(previous_fire_time) + self.offset if previous_fire_time else None
        fire = self.base.get_next_fire_time(prev, _utc(now) + self.offset)
        return _utc(fire) - self.offset if fire else None

    def __str__(self) -> str:
        return f"{self.base} minus {self.offset}"

    def __repr__(self) -> str:
        return f"<ShiftedTrigger ({self.base!r}, offset={self.offset!r})>"


def local_time(value: datetime, tz: ZoneInfo) -> datetime:
    """In local time, canonical: via UTC, because astimezone() to the same zone would keep a time that does
    not exist (APScheduler's 02:30+01:00 on a spring-forward night) as it is."""
    if value.tzinfo is None:  # the database's naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).astimezone(tz)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def fire_times(trigger: BaseTrigger, after: datetime, count: int, tz: ZoneInfo) -> list[datetime]:
    """The next `count` fire times strictly after `after`, in local time.

    Stepped in UTC: `local + timedelta` keeps the wall time and resets the fold, so inside the repeated hour
    it would step back an hour and offer a time already past.
    """
    out: list[datetime] = []
    cursor = _utc(after) + timedelta(microseconds=1)
    prev: datetime | None = None
    while len(out) < count:
        fire = trigger.get_next_fire_time(prev, cursor.astimezone(tz))
        if fire is None:
            break
        fire = local_time(fire, tz)
        out.append(fire)
        prev, cursor = fire, _utc(fire) + timedelta(microseconds=1)
    return out


def last_fire_time(trigger: BaseTrigger, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The latest fire time at or before `now` (local), looking back at most about a year."""
    limit = _utc(now)  # compare in UTC: same-zone comparison ignores fold and gets the repeated hour wrong
    for back in _LOOKBACKS:  # widening windows: a minutely cron walks 120 fire times, not a year's worth
        found: datetime | None = None
        cursor, prev = limit - back, None
        while True:
            fire = trigger.get_next_fire_time(prev, cursor.astimezone(tz))
            if fire is None or _utc(fire) > limit:
                break
            found, prev, cursor = fire, fire, _utc(fire) + timedelta(microseconds=1)
        if found is not None:
            return local_time(found, tz)
    return None


def shortest_gap(text: str, tz: ZoneInfo) -> timedelta:
    """The shortest time between two consecutive fire times of a cadence, over a year of them (or 400)."""
    trigger = parse_cadence(text).trigger(tz)
    times = fire_times(trigger, datetime(2026, 1, 1, tzinfo=UTC), 400, tz)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return min(gaps) if gaps else timedelta(days=366)


def check_build_ahead(send: str, timezone: str, approval: str, build_ahead: str) -> None:
    """The draft must come after the previous send, or it would be built for the wrong one."""
    text = " ".join(approval.lower().split())
    match = re.fullmatch(r"auto after (\d+) hours?", text)
    if text == "required":
        ahead, field = parse_duration(build_ahead), "build_ahead"
    elif match:
        ahead, field = timedelta(hours=int(match[1])), "approval"
    else:
        return
    gap = shortest_gap(send, ZoneInfo(timezone))
    if ahead >= gap:
        raise CadenceError(f"{field}: the draft would be built {ahead} before a send, but sends can be only "
                           f"{gap} apart ('{send}'): use less than {gap}")
