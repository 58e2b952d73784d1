"""The scheduled cycle in scale mode, run by a real procrastinate worker in this process (until the queue is empty):
collect in chunks, then at the newsletter's local send time build, enrich, render and send its issue, once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import rss, schedule_toml
from tests.feedserver import Route
from tests.scale_world import add_subscribers

pytestmark = pytest.mark.postgres
ON_POSTGRES = pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                      indirect=True)

# Monday 30 November 2026, 08:00 in Paris (CET, UTC+1) is 07:00 UTC.
SEND_UTC = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def _run_worker(url: str) -> None:
    from newsletter.scale.app import app, connector_for

    with app.replace_connector(connector_for(url)) as bound:
        bound.run_worker(wait=False, install_signal_handlers=False, concurrency=1,
                         queues=["collect", "build", "send"])


def _jobs(url: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT task_name, status::text FROM procrastinate_jobs ORDER BY id")).all()
    engine.dispose()
    return [(name.rsplit(".", 1)[-1], status) for name, status in rows]


@ON_POSTGRES
def test_collect_then_one_issue_per_period_at_local_send_time(workdir: Path, feed_server, db_url: str, cli,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from newsletter.scale import tasks
    from newsletter.scale.app import connected, ensure_schema
    from newsletter.store.db import get_engine
    from newsletter.store.models import NewsletterRow

    monkeypatch.setenv("NEWSLETTER_COLLECT_CHUNK", "1")
    for n in range(3):
        feed_server.routes[f"/f{n}"] = Route(body=rss(f"Desk {n}", [
            {"guid": f"g{n}", "title": f"Story number {n} from the desk", "link": f"https://news{n}.example/a",
             "body": f"<p>Story {n} happened today. People noticed it.</p>", "hours_ago": n + 1}]))
    (workdir / "schedules" / "city.toml").write_text(schedule_toml(
        "city", [(f"Desk {n}", feed_server.url(f"/f{n}")) for n in range(3)],
        '[digest]\nfetch_articles_under_words = 0\n[schedule]\nsend = "weekly on monday at 08:00"\n'
        'timezone = "Europe/Paris"\ncollect = "every 6 hours"\n'))
    tasks.settings.cache_clear()
    assert ensure_schema(db_url) is True and ensure_schema(db_url) is False  # idempotent
    engine = get_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.insert(NewsletterRow).values(slug="city", name="City Weekly"))
        newsletter_id = conn.execute(sa.select(NewsletterRow.id)).scalar_one()
    add_subscribers(engine, newsletter_id, 25)

    with connected(db_url):
        # The minute ticks: 06:00 Paris is a collect time, not a send time; 08:00 is not a collect time.
        assert tasks.schedule_until(SEND_UTC - timedelta(hours=2)) == ["collect city"]
        assert tasks.schedule_until(SEND_UTC - timedelta(minutes=59)) == []
    _run_worker(db_url)
    assert _jobs(db_url).count(("collect_sources", "succeeded")) == 3  # one job per chunk of one source
    # By hand: the same chunks, queued for the workers, and the queue as the operator sees it.
    assert "Queued 2 collect jobs." in cli("scale", "collect", "--chunk", "2").output
    status = cli("scale", "status").output
    assert "collect" in status and "todo" in status
    _run_worker(db_url)

    with connected(db_url):
        assert tasks.schedule_until(SEND_UTC) == ["send city 2026-W49"]
        assert tasks.schedule_until(SEND_UTC) == []  # a replayed tick: that minute is already handled
        # Even without the mark, a second build of the period while the first waits is refused (queueing lock).
        assert tasks.defer_due(SEND_UTC - timedelta(minutes=1), SEND_UTC) == []
    _run_worker(db_url)
    with engine.connect() as conn:
        issues = conn.execute(sa.text("SELECT number, period, status FROM issue")).all()
        delivered = conn.execute(sa.text("SELECT count(DISTINCT email) FROM delivery")).scalar()
    assert [tuple(i) for i in issues] == [(1, "2026-W49", "sent")]
    with engine.connect() as conn:  # the enrich job ran: it notes what each story's summary was made from
        notes = conn.execute(sa.text("SELECT notes FROM issue_item")).scalars().all()
    assert notes and all(n.get("text") for n in notes), notes
    assert delivered == 25 and len(list((workdir / "outbox" / "city").rglob("*.eml"))) == 25
    names = [name for name, _ in _jobs(db_url)]
    for task in ("send_period", "build_issue", "enrich_issue", "render_issue", "start_send", "send_batch"):
        assert task in names, names

    # The same period again (a tick replayed, a clock off): the unique (newsletter, period) key says no.
    with connected(db_url):
        assert tasks.defer_due(SEND_UTC - timedelta(minutes=1), SEND_UTC) == ["send city 2026-W49"]
    _run_worker(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM issue")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM delivery")).scalar() == 25
    assert all(status == "succeeded" for name, status in _jobs(db_url) if name not in ("tick", "retry_stalled"))
    # After an outage the next tick catches up on what fell due in the last day, sends within their grace
    # (next Monday's send, and the collects since: one job, the others wait behind its queueing lock).
    with connected(db_url):
        assert tasks.schedule_until(SEND_UTC + timedelta(days=7, hours=20)) == ["collect city", "send city 2026-W50"]


def test_local_send_times_follow_daylight_saving() -> None:
    from newsletter.config import Newsletter
    from newsletter.scale.due import due_between, period_key

    nl = Newsletter.model_validate({
        "name": "P", "slug": "p", "from_address": "p@example.com", "sources": [{"url": "https://e.example/f"}],
        "schedule": {"send": "weekly on monday at 08:00", "timezone": "Europe/Paris"}})
    winter = due_between(nl, "send", datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, 23, tzinfo=UTC))
    summer = due_between(nl, "send", datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC))
    assert [t.astimezone(UTC).hour for t in winter] == [7, 7] and [t.astimezone(UTC).hour for t in summer] == [6]
    assert period_key(nl, winter[-1]) == "2026-W49"


@ON_POSTGRES
def test_approval_required_a_draft_ahead_nothing_sent_until_an_editor_approves(
        workdir: Path, feed_server, db_url: str) -> None:  # noqa: ANN001
    from newsletter.compose.approval import approve
    from newsletter.scale import tasks
    from newsletter.scale.app import connected, ensure_schema
    from newsletter.store.db import ensure_newsletter, get_engine, session_scope

    feed_server.routes["/f"] = Route(body=rss("Desk", [
        {"guid": "g", "title": "The council met", "link": "https://news.example/a",
         "body": "<p>The council met today. People noticed it.</p>", "hours_ago": 1}]))
    (workdir / "schedules" / "city.toml").write_text(schedule_toml(
        "city", [("Desk", feed_server.url("/f"))],
        '[digest]\nfetch_articles_under_words = 0\n[schedule]\nsend = "weekly on monday at 08:00"\n'
        'timezone = "Europe/Paris"\napproval = "required"\nbuild_ahead = "24 hours"\n'))
    tasks.settings.cache_clear()
    ensure_schema(db_url)
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        newsletter_id = ensure_newsletter(s, "city", "City Weekly").id
    add_subscribers(engine, newsletter_id, 5)
    from newsletter.collect.run import collect
    from newsletter.config import load_newsletter

    collect(engine, [load_newsletter(workdir / "schedules" / "city.toml")])

    def issue() -> tuple:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text("SELECT id, period, status FROM issue")).one())

    with connected(db_url):  # Sunday 08:00 in Paris: the draft for Monday's send
        assert tasks.schedule_until(SEND_UTC - timedelta(days=1)) == ["collect city", "build city 2026-W49"]
    _run_worker(db_url)
    issue_id, period, status = issue()
    assert (period, status) == ("2026-W49", "draft")
    with connected(db_url):  # Monday 08:00: not approved, so not sent
        assert tasks.schedule_until(SEND_UTC) == ["collect city", "send city 2026-W49"]
    _run_worker(db_url)
    assert issue()[2] == "draft"
    with session_scope(engine) as s:
        approve(s, issue_id, "ann@example.com")
    with connected(db_url):  # approved twenty minutes late: the next tick sends it
        assert tasks.schedule_until(SEND_UTC + timedelta(minutes=20)) == [f"late approval city {issue_id}"]
    _run_worker(db_url)
    assert issue()[2] == "sent"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM delivery")).scalar() == 5
