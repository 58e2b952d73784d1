"""Several cadences in one schedule file: daily and weekly readers each get their own issue once per period,
each cadence built from the same collected items with its own approval policy, across a restart."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from newsletter.config import ConfigError, load_all, load_newsletter
from newsletter.schedule.cadence import next_fire_times
from newsletter.schedule.jobs import Runtime, run_cycle
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, IssueRow, NewsletterRow, Send, Subscriber, Subscription
from newsletter.subscribers import preferences
from tests.conftest import schedule_toml
from tests.schedule_support import Paper, hours, make_paper

CADENCES = """[digest]
fetch_articles_under_words = 0

[schedule]
send = "weekly on monday at 08:00"
timezone = "Europe/Paris"

[[cadences]]
name = "daily"
send = "daily at 07:00"
approval = "{approval}"
build_ahead = "6 hours"
"""


@pytest.fixture
def paper(workdir, feed_server) -> Paper:  # noqa: ANN001
    return make_paper(workdir, feed_server)


def configure(paper: Paper, approval: str = "auto") -> dict:
    path = paper.workdir / "schedules" / "paper.toml"
    path.write_text(schedule_toml("paper", [("Desk", paper.server.url("/feed"))],
                                  CADENCES.format(approval=approval)))
    loaded = load_all(paper.workdir / "schedules")
    assert not loaded.errors and sorted(loaded.newsletters) == ["paper", "paper-daily"]
    paper.rt.newsletters = loaded.newsletters
    return loaded.newsletters


def choose_daily(paper: Paper, *emails: str) -> None:
    nl = paper.rt.newsletters["paper"]
    with session_scope(paper.rt.engine) as session:
        for email in emails:
            sub = session.scalar(select(Subscription).join(Subscriber).where(Subscriber.email == email))
            assert preferences.change(session, sub, nl, origin="test", frequency="daily") == ["frequency"]


def received(paper: Paper) -> dict[str, Counter]:
    """Per address, how many issues of each newsletter (cadence) reached the outbox's mailer."""
    with session_scope(paper.rt.engine) as session:
        rows = session.execute(select(Delivery.email, NewsletterRow.slug).join(Send, Send.id == Delivery.send_id)
                               .join(IssueRow, IssueRow.id == Send.issue_id)
                               .join(NewsletterRow, NewsletterRow.id == IssueRow.newsletter_id)).all()
    out: dict[str, Counter] = {}
    for email, slug in rows:
        out.setdefault(email, Counter())[slug] += 1
    return out


def test_daily_and_weekly_readers_each_get_their_issue_once_per_period_across_a_restart(paper: Paper) -> None:
    newsletters = configure(paper)
    choose_daily(paper, "bo@example.org", "cy@example.net")
    start = datetime(2026, 3, 1, 23, tzinfo=UTC)  # Monday 2 March 2026 begins in Paris
    events = sorted([(t, "paper-daily") for t in next_fire_times(newsletters["paper-daily"], start, 8)]
                    + [(t, "paper") for t in next_fire_times(newsletters["paper"], start, 2)])
    assert [slug for _t, slug in events][:2] == ["paper-daily", "paper"]  # Monday: 07:00 daily, 08:00 weekly
    for n, (due, slug) in enumerate(events):
        paper.publish(due)
        if n == 5:  # the runner restarts: a new process state over the same database
            paper.rt = Runtime(paper.rt.engine, paper.settings, newsletters=load_all(
                paper.workdir / "schedules").newsletters, mailer_factory=lambda _s: paper.mailer)
        result = run_cycle(paper.rt, slug, now=due)
        assert result.outcome == "sent", result
        # A duplicate job, a catch-up after the restart, the scheduler firing again within the period: nothing.
        assert run_cycle(paper.rt, slug, now=due + hours(2)).outcome == "already-sent"
    assert paper.duplicates() == []
    got = received(paper)
    assert got["ann@example.com"] == Counter({"paper": 2})  # weekly, the default: never a daily issue
    assert got["bo@example.org"] == got["cy@example.net"] == Counter({"paper-daily": 8})
    with session_scope(paper.rt.engine) as session:
        weekly = session.scalars(select(IssueRow).join(NewsletterRow).where(NewsletterRow.slug == "paper")
                                 .order_by(IssueRow.number)).all()
        daily = session.scalars(select(IssueRow).join(NewsletterRow).where(NewsletterRow.slug == "paper-daily")
                                .order_by(IssueRow.number)).all()
        assert [i.period for i in weekly] == ["2026-W10", "2026-W11"]
        assert len(daily) == 8 and len({i.period for i in daily}) == 8
        # The week's issue covers the week: the stories the daily runs collected on the other days too.
        assert len(weekly[1].items) > len(daily[-1].items)
    # A daily issue's links name the reader's subscription of the newsletter itself.
    mail = next((paper.workdir / "outbox" / "paper-daily").rglob("bo@example.org.eml")).read_text()
    assert "https://news.example.com/m/" in mail and "https://news.example.com/u/" in mail


def test_each_cadence_has_its_own_approval_policy(paper: Paper) -> None:
    configure(paper, approval="required")
    choose_daily(paper, "bo@example.org")
    monday_daily = datetime(2026, 3, 2, 6, tzinfo=UTC)  # 07:00 in Paris
    paper.publish(monday_daily)
    assert run_cycle(paper.rt, "paper-daily", now=monday_daily).outcome == "waiting-approval"
    weekly = monday_daily + hours(1)
    assert run_cycle(paper.rt, "paper", now=weekly).outcome == "sent"  # auto, as [schedule] says
    assert received(paper) == {"ann@example.com": Counter({"paper": 1}), "cy@example.net": Counter({"paper": 1})}


def test_a_cadence_must_have_a_name_of_its_own(workdir, feed_server) -> None:  # noqa: ANN001
    path = workdir / "schedules" / "x.toml"
    path.write_text(schedule_toml("x", [("Desk", "https://desk.example/feed")],
                                  '[schedule]\nsend = "daily at 07:00"\n\n[[cadences]]\nname = "daily"\n'
                                  'send = "daily at 18:00"\n'))
    with pytest.raises(ConfigError, match="cadence 'daily' is named twice"):
        load_newsletter(path)


def test_the_manage_page_offers_the_cadences(paper: Paper) -> None:
    nl = configure(paper)["paper"]
    assert nl.cadence_names == ["weekly", "daily"]
    with session_scope(paper.rt.engine) as session:
        sub = session.scalar(select(Subscription).join(Subscriber).where(Subscriber.email == "ann@example.com"))
        with pytest.raises(preferences.PreferenceError, match="frequency: 'hourly' is not offered"):
            preferences.change(session, sub, nl, origin="test", frequency="hourly")
        preferences.change(session, sub, nl, origin="test", frequency="daily")
        preferences.change(session, sub, nl, origin="test", frequency="weekly")  # the default: stored as none
        assert sub.frequency is None


@pytest.mark.postgres
def test_scale_mode_sends_a_cadence_to_the_readers_who_chose_it(tmp_path) -> None:  # noqa: ANN001
    """Scale mode plans a cadence's batches over its parent's readers and sends only those who chose it."""
    from newsletter.deliver.ledger import Ledger
    from newsletter.scale.tasks import begin_send
    from newsletter.store.db import ensure_newsletter, get_engine
    from newsletter.subscribers.manage import add_subscriber
    from tests.conftest import postgres_schema

    with postgres_schema() as url:
        engine = get_engine(url)
        (tmp_path / "schedules").mkdir()
        (tmp_path / "schedules" / "paper.toml").write_text(schedule_toml(
            "paper", [("Desk", "https://desk.example/feed")], CADENCES.format(approval="auto")))
        newsletters = load_all(tmp_path / "schedules").newsletters
        daily = newsletters["paper-daily"]
        with session_scope(engine) as session:
            parent = ensure_newsletter(session, "paper", "Paper Weekly")
            for n in range(5):
                add_subscriber(session, parent, f"r{n}@example.com")
            for sub in session.scalars(select(Subscription).order_by(Subscription.id)).all()[:2]:
                preferences.change(session, sub, newsletters["paper"], origin="test", frequency="daily")
            row = ensure_newsletter(session, "paper-daily", daily.name)
            issue = IssueRow(newsletter_id=row.id, number=1, subject="#1", status="approved", intro="Hello")
            session.add(issue)
            session.flush()
            issue_id, parent_id = issue.id, parent.id
        send_id = begin_send(engine, daily, issue_id, "outbox", 100)
        ledger = Ledger(engine, send_id, parent_id)
        assert ledger.total == 2
        rows = [r for b in ledger.unfinished() for r in ledger.rows_left(b)]
        assert sorted(r[2] for r in rows) == ["r0@example.com", "r1@example.com"]


def test_a_choice_waits_while_another_cadences_send_is_open(paper: Paper) -> None:
    """The weekly send starting while a daily send is open does not move readers between the daily send's
    groups (one could get a second copy): their new choices apply from the first send started with none open."""
    from newsletter.deliver.audience import frequency_filter
    from newsletter.deliver.ledger import start_send
    from newsletter.store.db import ensure_newsletter

    newsletters = configure(paper)
    choose_daily(paper, "bo@example.org")
    with session_scope(paper.rt.engine) as session:
        parent = ensure_newsletter(session, "paper", "Paper Weekly")
        daily_row = ensure_newsletter(session, "paper-daily", newsletters["paper-daily"].name)
        made = [IssueRow(newsletter_id=owner.id, number=n, subject="#", status="approved", intro="Hi",
                         period=f"p{n}") for n, owner in ((1, daily_row), (1, parent), (2, parent))]
        session.add_all(made)
        session.flush()
        (daily_issue, weekly_issue, next_issue), parent_id = [i.id for i in made], parent.id
    daily, weekly = frequency_filter(newsletters["paper-daily"]), frequency_filter(newsletters["paper"])
    daily_send = start_send(paper.rt.engine, daily_issue, parent_id, "outbox", 10, daily)
    with session_scope(paper.rt.engine) as session:
        bo = session.scalar(select(Subscription).join(Subscriber).where(Subscriber.email == "bo@example.org"))
        preferences.change(session, bo, newsletters["paper"], origin="test", format="text")
    weekly_send = start_send(paper.rt.engine, weekly_issue, parent_id, "outbox", 10, weekly)
    with session_scope(paper.rt.engine) as session:
        assert session.get_one(Subscription, bo.id).send_variant == ""  # frozen: the daily send is open
        session.get_one(Send, weekly_send).status = "done"
        session.get_one(Send, daily_send).status = "done"
    start_send(paper.rt.engine, next_issue, parent_id, "outbox", 10, weekly)
    with session_scope(paper.rt.engine) as session:
        assert session.get_one(Subscription, bo.id).send_variant == '["text",[]]'
