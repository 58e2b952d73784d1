"""Schedules across daylight-saving changes with the real runner: its job store, catch-up and reloads, and
APScheduler's own job processing, stepped on a controlled clock (no waiting: a few days take milliseconds).

The matrix starts the runner across each change, inside the spring-forward window (after the clocks jumped,
before the old "an hour later" time) and inside the repeated autumn hour, in three zones whose changes fall in
different months, for daily, weekly and cron cadences. The cycle there is a recording stand-in (a real cycle
renders and delivers, about half a second each): what is checked is when, and how often, the scheduler runs
it. The expected sends are computed independently (the clocks' jump instants are written out below) from the
rules the README states. Real cycles with real deliveries close the file.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from newsletter.config import Settings
from newsletter.deliver.outbox import OutboxMailer
from newsletter.schedule import jobs
from newsletter.schedule.cadence import next_fire_times, send_grace
from newsletter.schedule.jobs import CycleResult, due_period, record, utc
from newsletter.schedule.runner import Runner
from newsletter.schedule.status import schedule_status
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import IssueRow
from tests.feedserver import FeedServer
from tests.schedule_support import (
    PEOPLE,
    Clock,
    CountingMailer,
    Paper,
    SteppedScheduler,
    clock_apscheduler,
    make_paper,
    next_job_time,
)


@dataclass(frozen=True)
class Zone:
    name: str
    spring: date  # the clocks go forward at 02:00 local to 03:00 ...
    jump: datetime  # ... at this instant
    autumn: date  # and back, repeating an hour
    repeated: str  # a send time inside the repeated hour


ZONES = [
    Zone("Europe/Paris", date(2026, 3, 29), datetime(2026, 3, 29, 1, 0, tzinfo=UTC), date(2026, 10, 25), "02:30"),
    Zone("America/New_York", date(2026, 3, 8), datetime(2026, 3, 8, 7, 0, tzinfo=UTC), date(2026, 11, 1), "01:30"),
    Zone("Australia/Sydney", date(2026, 10, 4), datetime(2026, 10, 3, 16, 0, tzinfo=UTC), date(2026, 4, 5), "02:30"),
]
ZONE_IDS = [z.name.split("/")[1] for z in ZONES]
# Every change falls on a Sunday: the weekly and cron cadences send that day.
CADENCES = {
    "daily": lambda hh, mm: f"daily at {hh:02d}:{mm:02d}",
    "weekly": lambda hh, mm: f"weekly on sunday at {hh:02d}:{mm:02d}",
    "cron": lambda hh, mm: f"{mm} {hh} * * 0,3",
}
# The hourly collect is not what these tests look at: a date none of their windows contain.
QUIET_COLLECT = "monthly on day 15 at 12:00"
SEND_DAYS = {"daily": range(7), "weekly": (6,), "cron": (6, 2)}  # Python weekdays: Monday = 0


def local(zone: Zone, day: date, hhmm: str, fold: int = 0, days: int = 0) -> datetime:
    """A local wall time as a UTC instant; fold=1 is the second of a repeated time."""
    hh, mm = (int(x) for x in hhmm.split(":"))
    wall = datetime.combine(day + timedelta(days=days), time(hh, mm), tzinfo=ZoneInfo(zone.name)).replace(fold=fold)
    return wall.astimezone(UTC)


def expected_dues(zone: Zone, kind: str, hhmm: str, start: date, end: datetime) -> list[datetime]:
    """The send instants the schedule means, written out: the wall time, or, on the spring day, the jump (its
    02:30 does not exist and goes out at the first valid instant after it); in the autumn, the first 02:30."""
    out = []
    day = start
    while local(zone, day, "00:00") <= end:
        if day.weekday() in SEND_DAYS[kind]:
            at = zone.jump if day == zone.spring and hhmm.startswith("02:") else local(zone, day, hhmm)
            if at <= end:
                out.append(at)
        day += timedelta(days=1)
    return out


def period_of(zone: Zone, kind: str, at: datetime) -> str:
    wall = at.astimezone(ZoneInfo(zone.name))
    if kind == "weekly":
        year, week, _ = wall.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{wall:%Y-%m-%d}"


def expected_sends(zone: Zone, kind: str, dues: list[datetime], up: list[tuple[datetime, datetime]],
                   grace: timedelta) -> list[tuple[datetime, str]]:
    """What the README promises: a send due while a runner is up goes out then; one due while none is up goes
    out at the next start if within its grace, and if its period had not ended before the newsletter was first
    seen (the first start, on a fresh database)."""
    first_seen = up[0][0]
    out = []
    for due in dues:
        period = period_of(zone, kind, due)
        if any(a <= due < b for a, b in up):
            out.append((due, period))
            continue
        start = next((a for a, _b in up if a > due), None)
        if start is None or start - due > grace or any(due < d <= start for d in dues):
            continue
        if due >= first_seen or period == period_of(zone, kind, first_seen):
            out.append((start, period))
    return out


@pytest.fixture
def paper(workdir, feed_server) -> Paper:  # noqa: ANN001
    return make_paper(workdir, feed_server)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[tuple[Path, Engine, FeedServer]]:  # noqa: ANN001
    """One database and feed server for the whole matrix: each case is its own newsletter (its own slug,
    schedule folder, job and "first seen" row), so a case still starts on a fresh database for its newsletter,
    without paying for a new database and server each time."""
    root = tmp_path_factory.mktemp("dst")
    server = FeedServer().start()
    try:
        yield root, get_engine(f"sqlite:///{root / 'newsletter.db'}"), server
    finally:
        server.stop()


@pytest.fixture
def desk(shared, request) -> Paper:  # noqa: ANN001
    """A newsletter of its own for one case of the matrix (no readers: the cycle there is the stand-in)."""
    root, engine, server = shared
    slug = f"case{next(_CASES)}"
    folder = root / slug
    (folder / "schedules").mkdir(parents=True)
    settings = Settings(database_url=str(engine.url), outbox_dir=folder / "outbox", schedules_dir=folder / "schedules",
                        secret_key="test-secret-key")
    mailer = CountingMailer(OutboxMailer(settings.outbox_dir))
    return Paper(folder, server, settings, mailer, jobs.Runtime(engine, settings, mailer_factory=lambda _s: mailer),
                 slug=slug)


_CASES = itertools.count(1)


@pytest.fixture
def clock(monkeypatch) -> Clock:  # noqa: ANN001
    c = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    clock_apscheduler(monkeypatch, c)
    return c


@pytest.fixture
def runs(monkeypatch) -> list[tuple[datetime, str]]:  # noqa: ANN001
    """Every cycle the scheduler starts: its moment and period, recorded as the real cycle records it."""
    seen: list[tuple[datetime, str]] = []

    def cycle(rt: jobs.Runtime, slug: str, *, now: datetime | None = None, reason: str = "schedule") -> CycleResult:
        at = utc(now or rt.clock())
        _due, period = due_period(rt.newsletters[slug], at)
        seen.append((at, period))
        record(rt.engine, slug, "cycle", at, "sent", f"{period}: sent ({reason}, by the test's stand-in)")
        return CycleResult(slug, period, "sent")

    monkeypatch.setattr(jobs, "run_cycle", cycle)
    return seen


def start_runner(paper: Paper, clock: Clock, at: datetime) -> Runner:
    clock.at = at
    runner = Runner(paper.rt.engine, paper.settings, clock=clock, scheduler_factory=SteppedScheduler,
                    mailer_factory=paper.rt.mailer_factory)
    runner.start()
    runner.scheduler.step()  # what resume() wakes a background scheduler for
    return runner


def run_until(runner: Runner, clock: Clock, until: datetime) -> None:
    """Move the clock from one due job to the next, as the scheduler's timer would, up to `until`."""
    for _ in range(1000):
        due = next_job_time(runner.scheduler)
        if due is None or due >= until:
            break
        clock.at = max(clock.at, due.astimezone(UTC))
        runner.scheduler.step()
    clock.at = until


def drive(paper: Paper, clock: Clock, up: list[tuple[datetime, datetime]]) -> None:
    for start, stop in up:
        runner = start_runner(paper, clock, start)
        try:
            run_until(runner, clock, stop)
        finally:
            runner.shutdown()


def spell(zone: Zone, sends: list[tuple[datetime, str]]) -> list[str]:
    return [f"{period} at {at.astimezone(ZoneInfo(zone.name)):%a %m-%d %H:%M %Z}" for at, period in sends]


SPRING = {  # when runners are up, relative to the spring-forward day (the send is at 02:30, in the gap)
    "across the change": lambda z: [(local(z, z.spring, "01:00", days=-1), local(z, z.spring, "12:00", days=1))],
    "first started in the window": lambda z: [(local(z, z.spring, "03:10"), local(z, z.spring, "12:00", days=1))],
    "first started at the jump": lambda z: [(z.jump, local(z, z.spring, "12:00", days=1))],
    "restarted in the window": lambda z: [(local(z, z.spring, "01:00", days=-1), local(z, z.spring, "01:50")),
                                          (local(z, z.spring, "03:20"), local(z, z.spring, "12:00", days=1))],
}


@pytest.mark.parametrize("kind", list(CADENCES))
@pytest.mark.parametrize("scenario", list(SPRING))
@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
def test_a_send_in_the_spring_gap_goes_out_once_at_the_first_valid_instant(
        desk: Paper, clock: Clock, runs: list, zone: Zone, scenario: str, kind: str) -> None:
    desk.configure(send=CADENCES[kind](2, 30), timezone=zone.name, collect=QUIET_COLLECT)
    up = SPRING[scenario](zone)
    dues = expected_dues(zone, kind, "02:30", zone.spring - timedelta(days=8), up[-1][1])
    drive(desk, clock, up)
    want = expected_sends(zone, kind, dues, up, send_grace(desk.nl))
    assert spell(zone, runs) == spell(zone, want)
    # The spring day's issue went out exactly once, at 03:00 or, when no runner was up then, at its start.
    day = [at for at, period in runs if period == period_of(zone, kind, zone.jump)]
    assert len(day) == 1 and day[0] >= zone.jump


AUTUMN = {  # relative to the day the clocks go back; the send is at the first of its two wall times
    "across the change": lambda z, t: [(local(z, z.autumn, "01:00", days=-1), local(z, z.autumn, "12:00", days=1))],
    "first started in the repeated hour, before the send": lambda z, t: [
        (local(z, z.autumn, t) - timedelta(minutes=20), local(z, z.autumn, "12:00", days=1))],
    "first started in the repeat, after the send's first time": lambda z, t: [
        (local(z, z.autumn, t, fold=1) - timedelta(minutes=20), local(z, z.autumn, "12:00", days=1))],
    "restarted in the repeat after it was sent": lambda z, t: [
        (local(z, z.autumn, "01:00", days=-1), local(z, z.autumn, t) + timedelta(minutes=5)),
        (local(z, z.autumn, t, fold=1) - timedelta(minutes=20), local(z, z.autumn, "12:00", days=1))],
}


@pytest.mark.parametrize("kind", list(CADENCES))
@pytest.mark.parametrize("scenario", list(AUTUMN))
@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
def test_a_send_in_the_repeated_hour_goes_out_once(desk: Paper, clock: Clock, runs: list, zone: Zone,
                                                   scenario: str, kind: str) -> None:
    hh, mm = (int(x) for x in zone.repeated.split(":"))
    desk.configure(send=CADENCES[kind](hh, mm), timezone=zone.name, collect=QUIET_COLLECT)
    up = AUTUMN[scenario](zone, zone.repeated)
    dues = expected_dues(zone, kind, zone.repeated, zone.autumn - timedelta(days=8), up[-1][1])
    drive(desk, clock, up)
    assert spell(zone, runs) == spell(zone, expected_sends(zone, kind, dues, up, send_grace(desk.nl)))
    assert len([p for _at, p in runs if p == period_of(zone, kind, local(zone, zone.autumn, "12:00"))]) == 1


@pytest.mark.parametrize("kind", list(CADENCES))
@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
def test_editing_the_send_line_in_the_spring_window_still_sends_that_period(
        desk: Paper, clock: Clock, runs: list, zone: Zone, kind: str) -> None:
    """The `send` line changed from 07:00 to 02:30 at 03:10 on the spring day: that day's issue goes out at
    the reload (a moment after its 03:00), not the next day or week; and not again at 07:00."""
    desk.configure(send=CADENCES[kind](7, 0), timezone=zone.name, collect=QUIET_COLLECT)
    edit, end = local(zone, zone.spring, "03:10"), local(zone, zone.spring, "12:00", days=1)
    runner = start_runner(desk, clock, local(zone, zone.spring, "01:00", days=-1))
    try:
        run_until(runner, clock, edit)
        before = len(runs)
        desk.configure(send=CADENCES[kind](2, 30), timezone=zone.name, collect=QUIET_COLLECT)
        runner.reload()  # what a changed file or SIGHUP does on the next tick
        runner.scheduler.step()
        run_until(runner, clock, end)
    finally:
        runner.shutdown()
    after = runs[before:]
    monday = [(local(zone, zone.spring, "02:30", days=1), period_of(zone, kind, end))] if kind == "daily" else []
    assert spell(zone, after) == spell(zone, [(edit, period_of(zone, kind, edit)), *monday])


def test_a_fresh_database_does_not_catch_up_a_period_that_ended_before_it(paper: Paper, clock: Clock) -> None:
    """A new daily newsletter first started at 06:58: its first issue is today's, at 07:00 (it used to get
    yesterday's at 06:58 too, two issues two minutes apart). Real cycles, real deliveries."""
    paper.configure(send="daily at 07:00", timezone="Europe/Paris", collect=QUIET_COLLECT)
    start = datetime(2026, 11, 25, 5, 58, tzinfo=UTC)  # 06:58 in Paris
    paper.publish(start)
    runner = start_runner(paper, clock, start)
    try:
        assert paper.issues() == []  # nothing caught up
        run_until(runner, clock, start + timedelta(hours=1))
    finally:
        runner.shutdown()
    issues = paper.issues()
    assert [(i.period, i.status) for i in issues] == [("2026-11-25", "sent")]
    assert paper.deliveries() == len(PEOPLE) and paper.duplicates() == []


@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
def test_first_started_in_the_spring_window_delivers_that_days_issue_once(paper: Paper, clock: Clock,
                                                                          zone: Zone) -> None:
    paper.configure(send="daily at 02:30", timezone=zone.name, collect=QUIET_COLLECT)
    start = local(zone, zone.spring, "03:10")
    paper.publish(start)
    runner = start_runner(paper, clock, start)
    try:
        run_until(runner, clock, start + timedelta(hours=6))
    finally:
        runner.shutdown()
    assert [(i.period, i.status) for i in paper.issues()] == [(f"{zone.spring:%Y-%m-%d}", "sent")]
    assert paper.deliveries() == len(PEOPLE) and paper.duplicates() == []


def test_a_send_missed_beyond_its_grace_is_said_in_the_log_and_schedule_list(paper: Paper, clock: Clock,
                                                                             runs: list, caplog) -> None:  # noqa: ANN001
    paper.configure(send="daily at 07:00", timezone="Europe/Paris", collect=QUIET_COLLECT)
    monday = datetime(2026, 11, 23, 5, tzinfo=UTC)  # 06:00 in Paris
    drive(paper, clock, [(monday, monday + timedelta(hours=3))])  # Monday's 07:00 goes out
    # Down from Monday 09:00 to Wednesday 09:00: Tuesday's send is two days late, Wednesday's two hours.
    wednesday = monday + timedelta(days=2, hours=3)
    with session_scope(paper.rt.engine) as session:
        listed = schedule_status(session, paper.nl, wednesday)  # said before any runner is up again
    assert "missed: 2026-11-25: the send due Wed 2026-11-25 07:00 CET was missed by 2 hours" not in listed.outcome
    assert "the send due Tue 2026-11-24 07:00 CET was missed by 1 day 2 hours" in listed.outcome, listed
    logger = logging.getLogger("newsletter.schedule")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="newsletter.schedule")
    try:
        drive(paper, clock, [(wednesday, wednesday + timedelta(hours=1))])
    finally:
        logger.removeHandler(caplog.handler)
    # (a set: the record reaches caplog's handler here and, when the logger propagates, at the root too)
    lines = [json.loads(m) for m in {r.getMessage() for r in caplog.records} if m.startswith("{")]
    (missed,) = [line for line in lines if line.get("event") == "missed"]
    assert missed["newsletter"] == "paper" and missed["period"] == "2026-11-24" and missed["outcome"] == "missed"
    assert missed["due"].startswith("2026-11-24T07:00") and missed["grace_seconds"] == 24 * 3600 - 1
    assert "more than its grace of 23 hours 59 minutes" in missed["detail"]
    # Wednesday's send was within its grace: it went out at the start, once; Tuesday's was not sent late.
    assert [p for _at, p in runs] == ["2026-11-23", "2026-11-25"]
    with session_scope(paper.rt.engine) as session:
        listed = schedule_status(session, paper.nl, wednesday + timedelta(hours=1))
    assert listed.last_outcome == "sent" and "missed: 2026-11-24: the send due Tue 2026-11-24" in listed.outcome
    # Said once: a restart does not say it again.
    caplog.clear()
    drive(paper, clock, [(wednesday + timedelta(hours=2), wednesday + timedelta(hours=3))])
    assert '"event": "missed"' not in caplog.text


def test_a_run_dropped_by_apscheduler_past_its_grace_is_said_too(paper: Paper, clock: Clock, runs: list,
                                                                  caplog) -> None:  # noqa: ANN001
    """The process was suspended (a laptop asleep) from Sunday to Wednesday over a Monday send: APScheduler
    drops the run with its own warning; the runner says it in its log and `schedule list` as well."""
    paper.configure(send="weekly on monday at 08:00", timezone="Europe/Paris", collect=QUIET_COLLECT)
    friday = datetime(2026, 11, 20, 11, tzinfo=UTC)
    runner = start_runner(paper, clock, friday)
    try:
        run_until(runner, clock, friday + timedelta(days=2))
        clock.at = friday + timedelta(days=5)  # awake again on Wednesday at noon
        with caplog.at_level(logging.WARNING, logger="apscheduler"):
            runner.scheduler.step()
        assert "was missed by 2 days" in caplog.text  # APScheduler's own warning
    finally:
        runner.shutdown()
    assert runs == []
    with session_scope(paper.rt.engine) as session:
        listed = schedule_status(session, paper.nl, clock.at)
    assert listed.last_outcome == "missed", listed
    assert "2026-W48: the send due Mon 2026-11-23 08:00 CET was missed by 2 days 4 hours" in listed.outcome
    assert "the next send is Mon 2026-11-30 08:00 CET" in listed.outcome


@pytest.mark.parametrize("zone", ZONES, ids=ZONE_IDS)
@pytest.mark.parametrize("send", ["daily at {t}", "weekly on sunday at {t}", "every 30 minutes"])
def test_schedule_list_never_shows_a_next_send_in_the_past_in_the_repeated_hour(desk: Paper, zone: Zone,
                                                                                send: str) -> None:
    desk.configure(send=send.format(t=zone.repeated), timezone=zone.name)
    first = local(zone, zone.autumn, zone.repeated) - timedelta(hours=2)
    for minute in range(0, 4 * 60, 5):  # both occurrences of the hour and around them
        now = first + timedelta(minutes=minute)
        with session_scope(desk.rt.engine) as session:
            shown = schedule_status(session, desk.nl, now).next_send
        assert shown is not None and shown.astimezone(UTC) > now, (now, shown)
        assert next_fire_times(desk.nl, now, 1)[0] == shown


def test_issue_rows_are_one_per_period_after_a_real_autumn_restart(paper: Paper, clock: Clock) -> None:
    """Real cycles: sent at the first 02:30, restarted at the second 02:10; nothing goes out again."""
    zone = ZONES[0]
    paper.configure(send="daily at 02:30", timezone=zone.name, collect=QUIET_COLLECT)
    first = local(zone, zone.autumn, "02:30")
    paper.publish(first - timedelta(hours=1))
    drive(paper, clock, [(first - timedelta(minutes=20), first + timedelta(minutes=5)),
                         (local(zone, zone.autumn, "02:10", fold=1), local(zone, zone.autumn, "04:00"))])
    with session_scope(paper.rt.engine) as session:
        rows = list(session.scalars(select(IssueRow.period)))
    assert rows == ["2026-10-25"]
    assert paper.deliveries() == len(PEOPLE) and paper.duplicates() == []
