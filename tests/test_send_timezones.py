"""Each reader's own morning: a scheduled "daily at 07:00" goes to readers in Tokyo, Paris and New York at 07:00
where each of them is. The outbox (SMTP the same way) is released group by group by the scheduler on the
controlled clock, across a restart and a daylight-saving change; SendGrid gets every group at once, each request
with its group's `send_at` (the local test server checks them against SendGrid's schema and 72-hour rule)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from newsletter.deliver.engine import SendOptions
from newsletter.deliver.ledger import start_send
from newsletter.deliver.mailer import Message, PushResult, Recipient
from newsletter.deliver.send import run_send
from newsletter.deliver.sendgrid import SendGridMailer
from newsletter.deliver.zones import plan_groups
from newsletter.schedule.jobs import Runtime, pending_sends, run_cycle
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import IssueRow, Send, Subscriber, Subscription
from newsletter.subscribers.tokens import Signer
from tests.conftest_sendgrid import SENDGRID_TEST_KEY
from tests.schedule_support import PEOPLE, Clock, Paper, make_paper
from tests.send_fixtures import BASE_URL, MESSAGE, SECRET, SLUG, make_world
from tests.sendgrid_server import SendGridServer

PARIS = ZoneInfo("Europe/Paris")
READERS = {"ann@example.com": "Asia/Tokyo", "bo@example.org": "Europe/Paris", "cy@example.net": "America/New_York"}
assert set(READERS) == set(PEOPLE)


class Stamped:
    """The paper's mailer, noting when (on the scheduler's clock) each address was handed its copy."""

    def __init__(self, paper: Paper, clock: Clock) -> None:
        self.inner, self.clock, self.name = paper.mailer, clock, "outbox"
        self.at: dict[str, list[datetime]] = {}

    def push(self, message: Message, recipients: list[Recipient]) -> PushResult:
        for r in recipients:
            self.at.setdefault(r.email, []).append(self.clock())
        return self.inner.push(message, recipients)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        pass


@pytest.fixture
def paper(workdir, feed_server) -> Paper:  # noqa: ANN001
    paper = make_paper(workdir, feed_server)
    paper.configure(send="daily at 07:00", timezone="Europe/Paris")
    with session_scope(paper.rt.engine) as session:
        for email, zone in READERS.items():
            sub_id = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
            session.execute(update(Subscription).where(Subscription.subscriber_id == sub_id).values(timezone=zone))
    return paper


def at_seven(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(7), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def tick(rt: Runtime, clock: Clock, until: datetime, step: timedelta = timedelta(minutes=30)) -> None:
    """The runner's tick up to `until`: whatever pending_sends says is due then is run (as a resume would)."""
    while clock.at < until:
        clock.at = min(clock.at + step, until)
        for slug in pending_sends(rt, clock.at):
            run_cycle(rt, slug, now=clock.at, reason="resume")


def restart(paper: Paper, clock: Clock, mailer: Stamped) -> Runtime:
    """A new process: a fresh engine and runtime on the same database and schedule files."""
    paper.rt.engine.dispose()
    rt = Runtime(get_engine(paper.settings.database_url), paper.settings, mailer_factory=lambda _s: mailer,
                 clock=clock)
    rt.newsletters = dict(paper.rt.newsletters)
    return rt


def test_readers_get_the_seven_o_clock_issue_at_their_seven_o_clock_across_a_restart_and_dst(paper: Paper) -> None:
    # 24 to 26 October 2026: Paris changes to winter time in the night of the 25th; New York only on 1 November.
    first = datetime(2026, 10, 24, 7, tzinfo=PARIS)
    clock = Clock(first.astimezone(UTC))
    mailer = Stamped(paper, clock)
    rt = paper.rt
    rt.mailer_factory, rt.clock = (lambda _s: mailer), clock
    for n in range(3):
        due = (first + timedelta(days=n)).replace(tzinfo=None).replace(tzinfo=PARIS)  # 07:00 Paris, that day
        clock.at = due.astimezone(UTC)
        paper.publish(clock.at)
        result = run_cycle(rt, "paper", now=clock.at)
        # Paris now; New York and Tokyo still to come: the send stays open, nothing lost or doubled.
        assert result.outcome == "send-waiting", result
        assert result.sent == 1 and "next group at" in result.detail
        if n == 1:
            # A restart between the groups (New York's and Tokyo's still to come): a new process resumes.
            tick(rt, clock, due.astimezone(UTC) + timedelta(hours=2))
            rt = restart(paper, clock, mailer)
        tick(rt, clock, at_seven(due.date() + timedelta(days=1), "Asia/Tokyo") + timedelta(minutes=30))
        issue = paper.issues()[-1]
        assert issue.status == "sent", issue.status
    for email, zone in READERS.items():
        times = mailer.at[email]
        assert len(times) == 3, (email, times)  # one copy a day, each once
        local = [t.astimezone(ZoneInfo(zone)) for t in times]
        # Each at 07:00 where the reader is (the tick is every 30 minutes: released on the tick at the group's
        # instant), the Paris ones across the change too (05:00 UTC, then 06:00 UTC).
        assert [t.strftime("%H:%M") for t in local] == ["07:00"] * 3, (email, local)
        assert len({t.date() for t in local}) == 3
    assert [t.astimezone(UTC).hour for t in mailer.at["bo@example.org"]] == [5, 6, 6]
    assert [t.astimezone(UTC).hour for t in mailer.at["cy@example.net"]] == [11, 11, 11]
    assert [t.astimezone(UTC).hour for t in mailer.at["ann@example.com"]] == [22, 22, 22]
    assert paper.duplicates() == [] and paper.deliveries() == 9


def test_a_reader_without_a_zone_and_one_in_the_newsletters_offset_are_one_group() -> None:
    due = datetime(2026, 3, 29, 7, tzinfo=PARIS)  # the day Paris springs forward
    groups = plan_groups([None, "Europe/Berlin", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Nowhere/X"],
                         due)
    assert [datetime.fromtimestamp(g["at"], UTC).strftime("%d %H:%M") for g in groups] == [
        "29 05:00", "29 11:00", "29 22:00"]  # New York has been on summer time since 8 March
    assert groups[0] == {"at": int(due.timestamp()), "zones": ["Europe/Berlin", "Europe/Paris", "Nowhere/X"],
                         "home": True}
    assert [g["home"] for g in groups] == [True, False, False]


@pytest.mark.parametrize("settle_by", ["activity", "hold"])
def test_sendgrid_requests_carry_each_groups_send_at(tmp_path, sendgrid_server: SendGridServer,  # noqa: ANN001
                                                     settle_by: str) -> None:
    server = sendgrid_server
    world = make_world(f"sqlite:///{tmp_path / 'n.db'}", 9)
    zones = ["Asia/Tokyo"] * 3 + ["Europe/Paris", None, None] + ["America/New_York"] * 3
    with session_scope(world.engine) as session:
        for sub, zone in zip(session.scalars(select(Subscription).order_by(Subscription.id)), zones, strict=True):
            sub.timezone = zone
    # The send is due at 07:00 Paris: the server's clock moved to half a minute after it.
    now = datetime.fromtimestamp(server.now(), UTC).astimezone(PARIS)
    due = datetime.combine(now.date() + timedelta(days=1), time(7), tzinfo=PARIS)
    server.advance(due.timestamp() + 30 - server.now())
    mailer = SendGridMailer(SENDGRID_TEST_KEY, server.url, timeout=5, activity_settle_seconds=0, now=server.now,
                            settle_by=settle_by)  # type: ignore[arg-type]
    issue = world.new_issue(1)
    send_id = start_send(world.engine, issue, world.newsletter_id, mailer.name, 2, due=due)
    report = run_send(world.engine, send_id, world.newsletter_id, SLUG, MESSAGE, mailer, Signer(SECRET), BASE_URL,
                      SendOptions(sleep=server.advance, wall=lambda: 0.0))
    # SendGrid holds each group itself: every request went now, the send is done.
    assert report.status == "done" and report.sent_now == 9
    expect = {"Asia/Tokyo": at_seven(due.date() + timedelta(days=1), "Asia/Tokyo").timestamp(),
              "America/New_York": at_seven(due.date(), "America/New_York").timestamp()}
    by_address: dict[str, float | None] = {}
    for acc in server.accepted:
        for address in acc.recipients:
            by_address[address] = acc.send_at
    for i, zone in enumerate(zones):
        got = by_address[f"user{i}@example.com"]
        if zone in expect:
            assert got == expect[zone], (zone, got)
        elif settle_by == "hold":  # due now: held for the cancel window only
            assert got == int(due.timestamp() + 30 + mailer.hold_seconds), got
        else:
            assert got is None  # due now: sent now
    server.advance(48 * 3600)
    assert sorted(server.deliveries().values()) == [1] * 9
    with session_scope(world.engine) as session:
        assert session.scalar(select(Send.status).where(Send.id == send_id)) == "done"
        assert session.scalar(select(IssueRow.status).where(IssueRow.id == issue)) is not None


def test_a_lost_answer_for_a_later_group_is_cancelled_from_its_own_send_at(tmp_path, sendgrid_server: SendGridServer  # noqa: ANN001
                                                                          ) -> None:
    """Hold-and-cancel with send_at hours ahead: the Tokyo group's request whose answer is lost is cancelled
    (its cancel line is 10 minutes before its own send_at, not the 11-minute hold's) and sent again: once each."""
    from newsletter.deliver.errors import OutcomeUnknownError

    server = sendgrid_server
    world = make_world(f"sqlite:///{tmp_path / 'n.db'}", 4)
    with session_scope(world.engine) as session:
        for sub, zone in zip(session.scalars(select(Subscription).order_by(Subscription.id)),
                             [None, None, "Asia/Tokyo", "Asia/Tokyo"], strict=True):
            sub.timezone = zone
    now = datetime.fromtimestamp(server.now(), UTC).astimezone(PARIS)
    due = datetime.combine(now.date() + timedelta(days=1), time(7), tzinfo=PARIS)
    server.advance(due.timestamp() + 30 - server.now())
    mailer = SendGridMailer(SENDGRID_TEST_KEY, server.url, timeout=5, activity_settle_seconds=0, now=server.now,
                            settle_by="hold")  # type: ignore[arg-type]
    real_push, lost = mailer.push_prepared, []

    def lose_tokyo(prepared):  # noqa: ANN001, ANN202
        result = real_push(prepared)  # SendGrid took it ...
        if not lost and "user2@example.com" in str(prepared[0]["personalizations"]):
            lost.append(prepared[0]["send_at"])
            server.advance(3 * 3600)  # ... and the answer is lost; hours pass (still far before its send_at)
            raise OutcomeUnknownError("connection reset before the answer")
        return result

    mailer.push_prepared = lose_tokyo  # type: ignore[method-assign]
    send_id = start_send(world.engine, world.new_issue(1), world.newsletter_id, mailer.name, 2, due=due)
    report = run_send(world.engine, send_id, world.newsletter_id, SLUG, MESSAGE, mailer, Signer(SECRET), BASE_URL,
                      SendOptions(sleep=server.advance))
    tokyo = at_seven(due.date() + timedelta(days=1), "Asia/Tokyo").timestamp()
    assert lost == [tokyo]  # the lost request was for the Tokyo group's 07:00
    assert report.status == "done", report
    assert [a.send_at for a in server.accepted if "user2@example.com" in a.recipients] == [tokyo, tokyo]
    server.advance(48 * 3600)
    assert sorted(server.deliveries().values()) == [1] * 4  # the first Tokyo request was discarded


def test_the_real_runner_releases_each_group_at_its_time_across_a_restart(paper: Paper, monkeypatch) -> None:  # noqa: ANN001
    """`newsletter run`'s own scheduler and tick on the controlled clock: the 07:00 send, then each later group
    on the tick at its instant; the runner is stopped and started again between New York's and Tokyo's."""
    from newsletter.schedule.runner import Runner
    from tests.schedule_support import SteppedScheduler, clock_apscheduler, next_job_time

    paper.configure(send="daily at 07:00", timezone="Europe/Paris", collect="monthly on day 15 at 12:00")
    start = datetime(2026, 11, 25, 5, 58, tzinfo=UTC)  # 06:58 in Paris
    clock = Clock(start)
    clock_apscheduler(monkeypatch, clock)
    # The tick's resume job is "now" (a DateTrigger): on the controlled clock too, as libfaketime would have it.
    import apscheduler.triggers.date as aps_date

    monkeypatch.setattr(aps_date, "datetime", type("ClockNow", (datetime,), {
        "now": classmethod(lambda _cls, tz=None: clock().astimezone(tz) if tz else clock().replace(tzinfo=None))}))
    mailer = Stamped(paper, clock)
    paper.publish(start)

    def run(until: datetime) -> None:
        runner = Runner(paper.rt.engine, paper.settings, clock=clock, scheduler_factory=SteppedScheduler,
                        mailer_factory=lambda _s: mailer)
        runner.start()
        try:
            runner.scheduler.step()
            while clock.at < until:
                due = next_job_time(runner.scheduler)
                step = clock.at + timedelta(minutes=1)  # the runner ticks every few seconds; a minute here
                clock.at = min(until, step if due is None else max(clock.at, min(step, due.astimezone(UTC))))
                runner.scheduler.step()
                runner.tick()
                runner.scheduler.step()  # the resume the tick scheduled
        finally:
            runner.shutdown()

    run(datetime(2026, 11, 25, 15, tzinfo=UTC))  # Paris at 06:00 UTC, New York at 12:00 UTC
    assert sorted(mailer.at) == ["bo@example.org", "cy@example.net"]
    clock.at = datetime(2026, 11, 25, 20, tzinfo=UTC)  # down from 15:00 to 20:00 UTC: nothing was due then
    run(datetime(2026, 11, 25, 23, tzinfo=UTC))
    for email, zone in READERS.items():
        (got,) = mailer.at[email]
        assert got.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M") == (
            "11-26 07:00" if zone == "Asia/Tokyo" else "11-25 07:00"), (email, got)
    assert [i.status for i in paper.issues()] == ["sent"]
    assert paper.duplicates() == [] and paper.deliveries() == 3


def test_a_zone_whose_seven_o_clock_would_meet_the_next_send_goes_with_the_newsletters_readers() -> None:
    """Paris springs forward on 29 March: the day before lasts 23 hours. Johannesburg's next 07:00 after Paris's
    on the 28th (05:00 UTC on the 29th) is the moment the 29th's issue goes: that reader gets the 28th's issue
    with Paris instead (08:00 there), never two issues the same morning, never one left behind."""

    due = datetime(2026, 3, 28, 7, tzinfo=PARIS)
    before = datetime(2026, 3, 29, 7, tzinfo=PARIS)
    groups = plan_groups(["Africa/Johannesburg", "Asia/Tokyo"], due, before)
    assert [(datetime.fromtimestamp(g["at"], UTC).strftime("%d %H:%M"), g["zones"]) for g in groups] == [
        ("28 06:00", ["Africa/Johannesburg"]), ("28 22:00", ["Asia/Tokyo"])]
    # Without the bound it would have waited for the 29th at 05:00 UTC, the next send's own moment.
    assert [datetime.fromtimestamp(g["at"], UTC).strftime("%d %H:%M") for g in plan_groups(
        ["Africa/Johannesburg"], due)] == ["28 06:00", "29 05:00"]
