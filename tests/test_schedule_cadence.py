"""Schedule phrases, cron expressions, fire times across daylight-saving changes, and periods. No clock: pure."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.config import ConfigError, load_newsletter
from newsletter.schedule.cadence import (
    CadenceError,
    build_trigger,
    last_send_due,
    next_fire_times,
    parse_cadence,
    parse_duration,
    period_key,
    send_trigger,
)
from tests.conftest import schedule_toml


def newsletter(tmp_path: Path, send: str, tz: str = "UTC", *, extra: str = ""):  # noqa: ANN201
    path = tmp_path / "schedules" / "paper.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(schedule_toml("paper", [("Desk", "https://desk.example/feed")],
                                  f'[schedule]\nsend = "{send}"\ntimezone = "{tz}"\n{extra}'))
    return load_newsletter(path)


def test_friendly_forms_and_cron_fire_when_they_say(tmp_path: Path) -> None:
    after = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday
    cases = {
        "every 30 minutes": ["2026-11-25 12:30", "2026-11-25 13:00", "2026-11-25 13:30"],
        "every 1 hour": ["2026-11-25 13:00", "2026-11-25 14:00", "2026-11-25 15:00"],
        "daily at 07:00": ["2026-11-26 07:00", "2026-11-27 07:00", "2026-11-28 07:00"],
        "weekdays at 07:30": ["2026-11-26 07:30", "2026-11-27 07:30", "2026-11-30 07:30"],
        "weekly on monday at 08:00": ["2026-11-30 08:00", "2026-12-07 08:00", "2026-12-14 08:00"],
        "Weekly on Fri at 18:15": ["2026-11-27 18:15", "2026-12-04 18:15", "2026-12-11 18:15"],
        "monthly on day 1 at 09:00": ["2026-12-01 09:00", "2027-01-01 09:00", "2027-02-01 09:00"],
        # Cron counts Sunday as 0 (and 7); APScheduler 3 would read 0 as Monday if passed through.
        "0 8 * * 0": ["2026-11-29 08:00", "2026-12-06 08:00", "2026-12-13 08:00"],
        "0 8 * * 7": ["2026-11-29 08:00", "2026-12-06 08:00", "2026-12-13 08:00"],
        "30 6 * * 1-5": ["2026-11-26 06:30", "2026-11-27 06:30", "2026-11-30 06:30"],
        "0 9 * * 5-7": ["2026-11-27 09:00", "2026-11-28 09:00", "2026-11-29 09:00"],
        "*/20 * * * *": ["2026-11-25 12:20", "2026-11-25 12:40", "2026-11-25 13:00"],
    }
    for text, expected in cases.items():
        nl = newsletter(tmp_path, text)
        got = [f"{t:%Y-%m-%d %H:%M}" for t in next_fire_times(nl, after, 3)]
        assert got == expected, text


def test_bad_schedules_name_the_file_and_field(tmp_path: Path) -> None:
    bad = {
        'send = "weekly on funday at 08:00"': ("schedule.send", "'funday' is not a day of the week"),
        'send = "daily at 25:00"': ("schedule.send", "25:00 is not a time of day"),
        'send = "0 8 1 * 1"': ("schedule.send", "not both"),
        'send = "0 8 * *"': ("schedule.send", "is not a schedule"),
        'send = "monthly on day 31 at 09:00"': ("schedule.send", "from 1 to 28"),
        'collect = "every 0 minutes"': ("schedule.collect", "at least 1 minute"),
        'collect = "hourly-ish"': ("schedule.collect", "is not a schedule"),
        'send = "61 8 * * *"': ("schedule.send", "'61 8 * * *'"),
        'build_ahead = "soon"': ("schedule.build_ahead", "not a duration"),
        'approval = "after lunch"': ("schedule.approval", "auto after N hours"),
        'timezone = "Mars/Olympus"': ("schedule.timezone", "unknown timezone"),
        'approval = "required"\nbuild_ahead = "8 days"': ("schedule", "build_ahead: the draft would be built"),
        'send = "daily at 09:00"\napproval = "auto after 30 hours"': ("schedule", "approval: the draft would be"),
    }
    path = tmp_path / "ai.toml"
    for line, (field, words) in bad.items():
        path.write_text(schedule_toml("ai", [("Desk", "https://desk.example/feed")], f"[schedule]\n{line}\n"))
        with pytest.raises(ConfigError) as err:
            load_newsletter(path)
        assert f"{path}: {field}: " in str(err.value) and words in str(err.value), (line, str(err.value))


@pytest.mark.parametrize(("tz", "spring", "autumn"), [
    ("Europe/Paris", datetime(2026, 3, 29), datetime(2026, 10, 25)),
    ("America/New_York", datetime(2026, 3, 8), datetime(2026, 11, 1)),
    ("Australia/Sydney", datetime(2026, 10, 4), datetime(2026, 4, 5)),
])
def test_weekly_send_keeps_local_time_across_dst_and_fires_once_a_week(tmp_path: Path, tz: str, spring: datetime,
                                                                       autumn: datetime) -> None:
    zone = ZoneInfo(tz)
    for change in (spring, autumn):
        for send in ("weekly on monday at 08:00", "weekly on sunday at 01:30", "weekly on sunday at 02:30"):
            nl = newsletter(tmp_path, send, tz)
            start = (change - timedelta(days=15)).replace(tzinfo=zone)
            fires = next_fire_times(nl, start, 5)
            local = [f.astimezone(zone) for f in fires]
            # One a week, seven days apart on the calendar, each in its own ISO week.
            assert [(b.date() - a.date()).days for a, b in zip(local, local[1:], strict=False)] == [7] * 4, send
            weeks = [period_key(nl, f) for f in fires]
            assert len(set(weeks)) == 5 and all("-W" in w for w in weeks)
            offsets = {f.utcoffset() for f in local}
            assert len(offsets) == 2, "the five weeks straddle the change"
            wanted = tuple(int(x) for x in send[-5:].split(":"))
            for f in local:
                # The wall-clock time stays put; a time skipped by spring-forward goes out at the first valid
                # instant after it, when the clocks jump to 03:00.
                skipped = f.date() == change.date() and change == spring and wanted[0] == 2
                assert (f.hour, f.minute) == ((3, 0) if skipped else wanted), (send, f)
            utc_hours = {f.astimezone(UTC).hour for f in local if f.date() != change.date()}
            assert len(utc_hours) == 2, "in UTC the send moves by an hour with the change"


def test_daily_send_in_the_repeated_hour_fires_once(tmp_path: Path) -> None:
    # 01:30 happens twice in New York on 2026-11-01; a daily digest goes out at the first.
    nl = newsletter(tmp_path, "daily at 01:30", "America/New_York")
    fires = next_fire_times(nl, datetime(2026, 10, 30, 12, tzinfo=UTC), 4)
    assert [f"{f:%m-%d %H:%M %z}" for f in fires] == [
        "10-31 01:30 -0400", "11-01 01:30 -0400", "11-02 01:30 -0500", "11-03 01:30 -0500"]
    nl = newsletter(tmp_path, "30 2 * * *", "Europe/Paris")
    fires = next_fire_times(nl, datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    assert [f"{f:%m-%d %H:%M %z}" for f in fires] == ["10-25 02:30 +0200", "10-26 02:30 +0100",
                                                      "10-27 02:30 +0100"]
    # Every quarter hour: the repeated hour is not run twice, and "the last send due" is found inside it.
    nl = newsletter(tmp_path, "*/15 * * * *", "America/New_York")
    fires = next_fire_times(nl, datetime(2026, 11, 1, 5, 20, tzinfo=UTC), 4)
    assert [f"{f:%H:%M %z}" for f in fires] == ["01:30 -0400", "01:45 -0400", "02:00 -0500", "02:15 -0500"]
    assert f"{last_send_due(nl, datetime(2026, 11, 1, 6, 20, tzinfo=UTC)):%H:%M %z}" == "01:45 -0400"


def test_periods_name_one_issue_per_week_day_or_month(tmp_path: Path) -> None:
    due = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # Monday 08:00 in Paris
    assert period_key(newsletter(tmp_path, "weekly on monday at 08:00", "Europe/Paris"), due) == "2026-W49"
    assert period_key(newsletter(tmp_path, "0 8 * * 1", "Europe/Paris"), due) == "2026-W49"
    assert period_key(newsletter(tmp_path, "daily at 08:00", "Europe/Paris"), due) == "2026-11-30"
    assert period_key(newsletter(tmp_path, "30 6 * * 1-5", "Europe/Paris"), due) == "2026-11-30"
    assert period_key(newsletter(tmp_path, "monthly on day 1 at 09:00", "Europe/Paris"), due) == "2026-11"
    # Local date, not UTC date: 23:30 UTC on Sunday is already Monday in Paris.
    late = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    assert period_key(newsletter(tmp_path, "daily at 00:30", "Europe/Paris"), late) == "2026-11-30"
    # Several sends a day: each its own period, unique even when the clocks go back.
    nl = newsletter(tmp_path, "every 30 minutes", "Europe/Paris")
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 +02:00
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 +01:00
    assert period_key(nl, first) != period_key(nl, second)
    assert period_key(nl, first) == "2026-10-25T02:30+02:00"


def test_last_due_send_and_build_ahead(tmp_path: Path) -> None:
    nl = newsletter(tmp_path, "weekly on monday at 08:00", "Europe/Paris",
                    extra='approval = "required"\nbuild_ahead = "18 hours"\n')
    wed = datetime(2026, 12, 2, 12, tzinfo=UTC)
    assert f"{last_send_due(nl, wed):%Y-%m-%d %H:%M %z}" == "2026-11-30 08:00 +0100"
    assert last_send_due(nl, datetime(2026, 11, 30, 7, 0, tzinfo=UTC)) == datetime(2026, 11, 30, 7, tzinfo=UTC)
    builds = next_fire_times(nl, wed, 2, job="build")
    assert [f"{b:%a %H:%M}" for b in builds] == ["Sun 14:00", "Sun 14:00"]
    assert builds[1] - builds[0] == timedelta(days=7)
    auto_after = newsletter(tmp_path, "weekly on monday at 08:00", "UTC", extra='approval = "auto after 12 hours"\n')
    assert f"{next_fire_times(auto_after, wed, 1, job='build')[0]:%a %H:%M}" == "Sun 20:00"
    assert build_trigger(newsletter(tmp_path, "weekly on monday at 08:00")) is None  # auto: the send builds
    assert parse_duration("90 minutes") == timedelta(minutes=90)
    with pytest.raises(CadenceError):
        parse_duration("a while")


def test_triggers_survive_the_persistent_job_store(tmp_path: Path) -> None:
    """Jobs are pickled into the database: a trigger must come back firing at the same times."""
    after = datetime(2026, 10, 20, tzinfo=UTC)
    nl = newsletter(tmp_path, "daily at 02:30", "Europe/Paris", extra='approval = "auto after 6 hours"\n')
    for trigger in (send_trigger(nl), build_trigger(nl), parse_cadence("every 2 hours").trigger(ZoneInfo("UTC"))):
        copy = pickle.loads(pickle.dumps(trigger))
        a = b = after
        for _ in range(10):
            a, b = trigger.get_next_fire_time(None, a), copy.get_next_fire_time(None, b)
            assert a == b
            a = b = a + timedelta(microseconds=1)
