"""The send cycle driven by a controlled clock: real feeds, SQLite, renders and outbox; no waiting.

Fire times come from the newsletter's own trigger (what APScheduler consults); the cycle is then run with that
moment as `now`, as the scheduler would run it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from newsletter.compose.approval import ApprovalError, approve, hold, is_approved_as_is, reopen
from newsletter.config import load_newsletter
from newsletter.schedule.cadence import next_fire_times
from newsletter.schedule.jobs import (
    missed_build,
    missed_send,
    naive,
    pending_sends,
    run_build,
    run_collect,
    run_cycle,
)
from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem, IssueRow, ScheduleRun, Send
from tests.conftest import BOTH_DATABASES
from tests.schedule_support import PEOPLE, Paper, hours, make_paper


@pytest.fixture
def paper(workdir, feed_server) -> Paper:  # noqa: ANN001
    return make_paper(workdir, feed_server)


def send_times(paper: Paper, after: datetime, count: int) -> list[datetime]:
    return next_fire_times(paper.nl, after, count)


@pytest.mark.parametrize(("tz", "change"), [
    ("Europe/Paris", datetime(2026, 3, 29, 12, tzinfo=UTC)),
    ("Europe/Paris", datetime(2026, 10, 25, 12, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 3, 8, 12, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 11, 1, 12, tzinfo=UTC)),
])
def test_weekly_send_across_dst_goes_out_once_a_week_at_local_time(paper: Paper, tz: str, change: datetime) -> None:
    paper.configure(send="weekly on monday at 08:00", timezone=tz)
    fires = send_times(paper, change - timedelta(days=9), 3)  # the Mondays before, just after and after that
    assert [f.astimezone(ZoneInfo(tz)).strftime("%a %H:%M") for f in fires] == ["Mon 08:00"] * 3
    assert len({f.utcoffset() for f in fires}) == 2  # the clocks changed in between
    for fire in fires:
        paper.publish(fire)
        result = run_cycle(paper.rt, "paper", now=fire)
        assert result.outcome == "sent", result
        assert result.sent == len(PEOPLE)
        # The scheduler firing again in the same week (a restart, a duplicate job) sends nothing.
        again = run_cycle(paper.rt, "paper", now=fire + hours(30))
        assert again.outcome == "already-sent" and again.issue_id == result.issue_id
    issues = paper.issues()
    assert [i.status for i in issues] == ["sent"] * 3
    assert len({i.period for i in issues}) == 3 and all("-W" in i.period for i in issues)
    assert paper.deliveries() == 3 * len(PEOPLE)
    assert paper.duplicates() == [] and sum(paper.mailer.pushed.values()) == 3 * len(PEOPLE)
    with session_scope(paper.rt.engine) as session:
        steps = [(r.job, r.outcome) for r in session.query(ScheduleRun).order_by(ScheduleRun.id).limit(6)]
    assert steps[:5] == [("collect", "ok"), ("build", "built"), ("preflight", steps[2][1]), ("approval", "go"),
                         ("send", "sent")]
    assert steps[5] == ("cycle", "sent")


@BOTH_DATABASES
def test_a_send_missed_while_stopped_goes_out_once_after_restart(paper: Paper) -> None:
    paper.configure(send="weekly on monday at 08:00", timezone="Europe/Paris")
    first, second, third = send_times(paper, datetime(2026, 11, 20, tzinfo=UTC), 3)
    paper.publish(first)
    assert run_cycle(paper.rt, "paper", now=first).outcome == "sent"
    assert missed_send(paper.rt, paper.nl, first + hours(1)) is None  # it ran
    # The process is down from Sunday to Monday 11:00: the 08:00 send did not happen.
    paper.publish(second)
    restart = second + hours(3)
    assert missed_send(paper.rt, paper.nl, restart) == second
    result = run_cycle(paper.rt, "paper", now=restart, reason="catch-up")
    assert result.outcome == "sent" and result.sent == len(PEOPLE)
    assert missed_send(paper.rt, paper.nl, restart + hours(1)) is None
    assert run_cycle(paper.rt, "paper", now=restart + hours(2)).outcome == "already-sent"
    # Down for more than the grace (a day for a weekly send): that week is left to the next issue.
    paper.publish(third)
    assert missed_send(paper.rt, paper.nl, third + timedelta(days=2)) is None
    assert paper.deliveries() == 2 * len(PEOPLE) and paper.duplicates() == []


@BOTH_DATABASES
def test_waiting_for_approval_is_not_sent_then_goes_out_once_approved(paper: Paper, caplog) -> None:  # noqa: ANN001
    paper.configure(send="weekly on monday at 08:00", approval="required", build_ahead="20 hours")
    (due,) = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 1)
    build_at = next_fire_times(paper.nl, datetime(2026, 11, 25, tzinfo=UTC), 1, job="build")[0]
    assert due - build_at == hours(20)
    assert missed_build(paper.rt, paper.nl, build_at - hours(1)) is None  # not yet
    assert missed_build(paper.rt, paper.nl, build_at + hours(2)) == build_at  # a runner starting now builds it
    paper.publish(build_at)
    built = run_build(paper.rt, "paper", now=build_at)
    assert built.outcome == "built" and "newsletter issue approve" in built.detail
    (issue,) = paper.issues()
    assert issue.status == "draft" and issue.period == "2026-W49"

    result = run_cycle(paper.rt, "paper", now=due)
    assert result.outcome == "waiting-approval" and "newsletter issue approve" in result.detail
    assert paper.deliveries() == 0 and paper.mailer.pushed == {}
    assert missed_build(paper.rt, paper.nl, build_at + hours(2)) is None  # built
    # Nothing to send until an editor approves; the log reminds them every hour.
    logger = logging.getLogger("newsletter.schedule")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="newsletter.schedule")
    try:
        assert pending_sends(paper.rt, due + hours(0.5)) == []
        assert "approval-reminder" not in caplog.text
        assert pending_sends(paper.rt, due + hours(1)) == []
        assert '"event": "approval-reminder"' in caplog.text and f"issue approve {issue.id}" in caplog.text
    finally:
        logger.removeHandler(caplog.handler)

    with session_scope(paper.rt.engine) as session:
        approve(session, issue.id, "editor@example.com")
    assert pending_sends(paper.rt, due + hours(1) + timedelta(seconds=5)) == ["paper"]  # at once, no retry delay
    result = run_cycle(paper.rt, "paper", now=due + hours(1), reason="resume")
    assert result.outcome == "sent" and result.issue_id == issue.id and result.sent == len(PEOPLE)
    assert pending_sends(paper.rt, due + hours(2)) == []
    assert run_cycle(paper.rt, "paper", now=due + hours(3)).outcome == "already-sent"
    assert paper.deliveries() == len(PEOPLE) and paper.duplicates() == []
    assert [i.status for i in paper.issues()] == ["sent"]


def test_a_change_after_approval_blocks_the_send_until_approved_again(paper: Paper) -> None:
    paper.configure(send="weekly on monday at 08:00", approval="required")
    (due,) = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 1)
    paper.publish(due - hours(24))
    run_build(paper.rt, "paper", now=due - hours(24))
    (issue,) = paper.issues()
    with session_scope(paper.rt.engine) as session:
        approve(session, issue.id, "editor@example.com")
        assert is_approved_as_is(session, issue.id)
    with session_scope(paper.rt.engine) as session:  # an editor rewrites a summary after approving
        story = session.query(IssueItem).filter_by(issue_id=issue.id).order_by(IssueItem.position).first()
        story.summary = "A different summary nobody approved."
    with session_scope(paper.rt.engine) as session:
        assert not is_approved_as_is(session, issue.id)

    result = run_cycle(paper.rt, "paper", now=due)
    assert result.outcome == "changed-since-approval" and "approve it again" in result.detail
    assert paper.deliveries() == 0 and pending_sends(paper.rt, due + hours(1)) == []

    with session_scope(paper.rt.engine) as session:
        approve(session, issue.id, "chief@example.com")
    result = run_cycle(paper.rt, "paper", now=due + hours(1), reason="resume")
    assert result.outcome == "sent"
    message = next((paper.workdir / "outbox" / "paper").rglob("ann@example.com.eml")).read_text()
    assert "A different summary nobody approved." in message  # exactly what was approved the second time
    with session_scope(paper.rt.engine) as session:
        with pytest.raises(ApprovalError, match="already sent"):
            approve(session, issue.id, "late@example.com")
        with pytest.raises(ApprovalError, match="too late"):
            hold(session, issue.id)


def test_auto_after_n_hours_sends_unless_held(paper: Paper) -> None:
    paper.configure(send="daily at 09:00", approval="auto after 6 hours", timezone="Europe/Paris")
    day1, day2 = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 2)
    # Day 1: the draft appears at 03:00 and goes out at 09:00 untouched.
    paper.publish(day1 - hours(6))
    assert run_build(paper.rt, "paper", now=day1 - hours(6)).outcome == "built"
    assert run_cycle(paper.rt, "paper", now=day1).outcome == "sent"
    # Day 2: an editor holds it; the send does not happen, even when retried.
    paper.publish(day2 - hours(6))
    run_build(paper.rt, "paper", now=day2 - hours(6))
    held = paper.issues()[-1]
    with session_scope(paper.rt.engine) as session:
        hold(session, held.id)
    assert run_cycle(paper.rt, "paper", now=day2).outcome == "held"
    assert pending_sends(paper.rt, day2 + hours(1)) == []
    assert paper.deliveries() == len(PEOPLE)
    # Reopened: the next run sends it.
    with session_scope(paper.rt.engine) as session:
        reopen(session, held.id)
        assert session.get(IssueRow, held.id).status == "draft"
    assert run_cycle(paper.rt, "paper", now=day2 + hours(2)).outcome == "sent"
    assert paper.deliveries() == 2 * len(PEOPLE) and paper.duplicates() == []


def test_nothing_new_is_skipped_and_recorded(paper: Paper) -> None:
    paper.configure(send="daily at 07:00")
    day1, day2 = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 2)
    paper.publish(day1)
    assert run_cycle(paper.rt, "paper", now=day1).outcome == "sent"
    result = run_cycle(paper.rt, "paper", now=day2)  # the feed has nothing newer
    assert result.outcome == "skipped-empty" and "nothing new" in result.detail
    assert len(paper.issues()) == 1
    with session_scope(paper.rt.engine) as session:
        last = session.query(ScheduleRun).filter_by(job="cycle").order_by(ScheduleRun.id.desc()).first()
        assert last.outcome == "skipped-empty" and last.detail.startswith("2026-11-26:")


@BOTH_DATABASES
def test_a_provider_outage_is_resumed_without_duplicates(paper: Paper) -> None:
    paper.configure(send="weekly on monday at 08:00")
    (due,) = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 1)
    paper.publish(due)
    # The send retries a failing batch itself (quickly here); an outage outlasting that ends the run.
    paper.rt.send_options = {"max_attempts": 2, "backoff_base": 0.01}
    paper.mailer.fail_next = 2
    result = run_cycle(paper.rt, "paper", now=due)
    assert result.outcome == "failed" and "503" in result.detail
    assert paper.issues()[0].status == "sending"
    assert pending_sends(paper.rt, due + timedelta(minutes=1)) == []  # not hammering the provider
    assert pending_sends(paper.rt, due + timedelta(minutes=6)) == ["paper"]
    paper.mailer.fail_next = 2  # still down: the next try waits longer
    assert run_cycle(paper.rt, "paper", now=due + timedelta(minutes=6), reason="resume").outcome == "failed"
    assert pending_sends(paper.rt, due + timedelta(minutes=12)) == []
    assert pending_sends(paper.rt, due + timedelta(minutes=17)) == ["paper"]  # 10 minutes after the last try
    result = run_cycle(paper.rt, "paper", now=due + timedelta(minutes=17), reason="resume")
    assert result.outcome == "sent" and result.step("collect") is None  # resumed as it was, not rebuilt
    assert paper.deliveries() == len(PEOPLE) and paper.duplicates() == []


def test_stopping_mid_send_finishes_the_batch_and_the_rest_resumes(paper: Paper) -> None:
    """SIGTERM during a send: the batch in flight is recorded, the others go out on the next run."""
    paper.configure(send="weekly on monday at 08:00")
    (due,) = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 1)
    paper.publish(due)
    paper.rt.batch_size = 1
    paper.mailer.after_push = paper.rt.stop.set  # the signal arrives while the first batch is with the provider
    result = run_cycle(paper.rt, "paper", now=due)
    assert result.outcome == "stopped" and paper.deliveries() == 1
    assert paper.issues()[0].status == "sending"
    paper.rt.stop.clear()
    paper.mailer.after_push = None
    assert pending_sends(paper.rt, due + timedelta(minutes=6)) == ["paper"]  # the restarted runner resumes it
    result = run_cycle(paper.rt, "paper", now=due + timedelta(minutes=6), reason="resume")
    assert result.outcome == "sent" and result.sent == len(PEOPLE) - 1
    assert paper.deliveries() == len(PEOPLE) and paper.duplicates() == []


def test_a_cycle_that_failed_before_sending_is_retried_within_its_grace(paper: Paper) -> None:
    path = paper.workdir / "schedules" / "paper.toml"
    paper.configure(send="weekly on monday at 08:00")
    path.write_text(path.read_text().replace("[digest]\n", '[digest]\nsubject = "{name} {oops}"\n'))
    paper.rt.newsletters = {"paper": load_newsletter(path)}
    (due,) = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 1)
    paper.publish(due)
    result = run_cycle(paper.rt, "paper", now=due)
    assert result.outcome == "failed" and "digest.subject" in result.detail
    assert pending_sends(paper.rt, due + timedelta(minutes=2)) == []
    assert pending_sends(paper.rt, due + timedelta(minutes=6)) == ["paper"]
    assert pending_sends(paper.rt, due + timedelta(days=2)) == []  # past the grace: next week's issue it is
    paper.configure(send="weekly on monday at 08:00")  # fixed
    assert run_cycle(paper.rt, "paper", now=due + timedelta(minutes=6), reason="resume").outcome == "sent"


def test_a_failing_preflight_holds_the_send_and_says_why(paper: Paper) -> None:
    paper.configure(send="weekly on monday at 08:00")
    (due,) = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 1)
    paper.publish(due)
    footer = paper.workdir / "templates" / "partials" / "footer.mjml.j2"
    footer.parent.mkdir(parents=True)
    # A user's footer that forgot the unsubscribe link.
    footer.write_text("<mj-section><mj-column><mj-text>Thanks for reading.</mj-text></mj-column></mj-section>\n")
    result = run_cycle(paper.rt, "paper", now=due)
    assert result.outcome == "held-preflight" and "no unsubscribe link" in result.detail
    assert result.step("preflight").outcome == "failed" and result.step("approval") is None
    assert paper.deliveries() == 0 and paper.mailer.pushed == {}
    with session_scope(paper.rt.engine) as session:
        row = session.query(ScheduleRun).filter_by(job="preflight").first()
        assert row.outcome == "failed" and "unsubscribe" in row.detail
    assert pending_sends(paper.rt, due + timedelta(minutes=6)) == ["paper"]  # tried again while broken
    assert run_cycle(paper.rt, "paper", now=due + timedelta(minutes=6)).outcome == "held-preflight"
    footer.unlink()  # fixed: the next try sends it
    assert pending_sends(paper.rt, due + timedelta(minutes=12)) == []  # waiting longer after two failures
    assert pending_sends(paper.rt, due + timedelta(minutes=17)) == ["paper"]
    result = run_cycle(paper.rt, "paper", now=due + timedelta(minutes=17), reason="resume")
    assert result.outcome == "sent" and result.step("preflight").outcome == "passed"
    assert paper.deliveries() == len(PEOPLE)


def test_when_empty_send_sends_a_note_once(paper: Paper) -> None:
    paper.configure(send="daily at 07:00", when_empty="send")
    day1, day2 = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 2)
    paper.publish(day1)
    assert run_cycle(paper.rt, "paper", now=day1).outcome == "sent"
    result = run_cycle(paper.rt, "paper", now=day2)
    assert result.step("build").outcome == "empty"
    with session_scope(paper.rt.engine) as session:
        note = session.get(IssueRow, result.issue_id).intro
    assert note and "Nothing new this time" in note
    # The note goes out as the period's issue, once: subscribers hear that nothing new came in.
    assert result.outcome == "sent", result
    assert paper.deliveries() == 2 * len(PEOPLE)
    assert pending_sends(paper.rt, day2 + hours(1)) == []


@BOTH_DATABASES
def test_a_scheduled_send_right_after_a_hand_sent_issue_is_not_a_second_digest(paper: Paper) -> None:
    """One digest per reader per period, from the scheduler's side: an operator sent an issue by hand at 07:00,
    so the 08:00 daily send leaves its issue unsent, says why, is not retried, and `--force` is the way out."""
    from newsletter.compose.build import build_issue
    from newsletter.deliver.send import send_issue

    paper.configure(send="daily at 08:00", timezone="Europe/Paris")
    (due,) = send_times(paper, datetime(2026, 11, 25, tzinfo=UTC), 1)
    paper.publish(due - hours(2))
    run_collect(paper.rt, "paper", now=due - hours(1))
    hand = build_issue(paper.rt.engine, paper.nl, now=naive(due - hours(1)), enrich=False)
    assert hand.issue_id is not None
    report = send_issue(paper.rt.engine, paper.nl, hand.issue_id, paper.mailer, paper.rt.settings)
    assert report.sent_now == len(PEOPLE)
    with session_scope(paper.rt.engine) as session:  # it went out at 07:00 on the test's clock
        session.execute(update(Send).where(Send.issue_id == hand.issue_id)
                        .values(started_at=naive(due - hours(1))))
    paper.publish(due + hours(2) + timedelta(minutes=10))  # new stories since: the scheduled issue has some
    result = run_cycle(paper.rt, "paper", now=due + timedelta(minutes=20))
    assert result.outcome == "skipped-second-digest", result
    assert "sent by hand" in result.detail and "--force" in result.detail
    assert paper.deliveries() == len(PEOPLE) and paper.duplicates() == []
    assert pending_sends(paper.rt, due + hours(2)) == []  # a decision, not a failure to retry
    # The next day's send is not a second digest of that day: it goes out as usual.
    (tomorrow,) = send_times(paper, due + hours(1), 1)
    paper.publish(tomorrow)
    nxt = run_cycle(paper.rt, "paper", now=tomorrow)
    assert nxt.outcome == "sent", nxt.detail
    assert paper.deliveries() == 2 * len(PEOPLE) and paper.duplicates() == []
