"""An operator's first hour (issue 17): mistakes lose nothing, and every message points the right way.

Each test runs the commands a new operator runs (Typer's runner, real SQLite, real feeds on loopback).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete

from newsletter.schedule.cadence import next_fire_times
from newsletter.schedule.jobs import pending_sends, run_cycle
from newsletter.store.db import session_scope
from newsletter.store.models import Subscription
from tests.conftest import rss, schedule_toml
from tests.feedserver import FeedServer, Route
from tests.schedule_support import Paper, make_paper


def fresh_feed(server: FeedServer, path: str = "/feed", count: int = 3, hours_ago: int = 2) -> str:
    items = [{"guid": f"g{n}", "title": f"Story {n} of the day", "link": f"https://desk.example/{n}",
              "body": f"<p>Story {n} happened. It mattered to many readers.</p>", "hours_ago": hours_ago}
             for n in range(count)]
    server.routes[path] = Route(body=rss("Desk", items))
    return server.url(path)


def write_schedule(workdir: Path, slug: str, url: str, extra: str = "[digest]\nfetch_articles_under_words = 0\n",
                   ) -> Path:
    path = workdir / "schedules" / f"{slug}.toml"
    path.write_text(schedule_toml(slug, [("Desk", url)], extra), encoding="utf-8")
    return path


def issue_json(cli, issue_id: int = 1) -> dict:  # noqa: ANN001
    return json.loads(cli("issue", "show", str(issue_id), "--format", "json").output)


# -- 1. an empty audience never consumes an issue -----------------------------------------------------------


def test_send_to_nobody_is_refused_and_the_issue_stays_a_draft(workdir: Path, feed_server: FeedServer,
                                                                cli) -> None:  # noqa: ANN001
    write_schedule(workdir, "city", fresh_feed(feed_server))
    cli("collect", "city")
    assert "Built issue #1" in cli("build", "city", "--no-enrich").output
    refused = cli("send", "city", ok=False)
    assert refused.exit_code == 1
    assert "nobody would get issue #1" in refused.output and "no active subscribers" in refused.output
    assert "newsletter subscribers add EMAIL -n city" in refused.output and "--force" in refused.output
    assert issue_json(cli)["status"] == "draft" and not (workdir / "outbox").exists()

    cli("subscribers", "add", "ann@example.com", "-n", "city")
    sent = cli("send", "city").output
    assert "Sent issue #1 of city: 1 now" in sent and "1 in the audience" in sent
    assert issue_json(cli)["status"] == "sent"
    assert len(list((workdir / "outbox").rglob("*.eml"))) == 1


def test_send_to_nobody_with_force_is_the_operators_call(workdir: Path, feed_server: FeedServer,
                                                         cli) -> None:  # noqa: ANN001
    write_schedule(workdir, "city", fresh_feed(feed_server))
    cli("collect", "city")
    cli("build", "city", "--no-enrich")
    assert "0 in the audience" in cli("send", "city", "--force").output
    assert issue_json(cli)["status"] == "sent"


def test_a_scheduled_send_to_nobody_waits_says_so_and_goes_out_once_someone_subscribes(
        workdir: Path, feed_server: FeedServer) -> None:
    paper: Paper = make_paper(workdir, feed_server)
    with session_scope(paper.rt.engine) as session:
        session.execute(delete(Subscription))
    paper.configure(send="daily at 08:00", timezone="UTC")
    due = next_fire_times(paper.nl, datetime(2026, 12, 1, tzinfo=UTC), 1)[0]
    paper.publish(due)
    result = run_cycle(paper.rt, "paper", now=due)
    assert result.outcome == "waiting-audience", result
    assert "no active subscribers" in result.detail and "newsletter subscribers add" in result.detail
    (issue,) = paper.issues()
    assert issue.status == "draft" and paper.deliveries() == 0

    from newsletter.store.db import ensure_newsletter
    from newsletter.subscribers.manage import add_subscriber

    with session_scope(paper.rt.engine) as session:
        add_subscriber(session, ensure_newsletter(session, "paper", "Paper Weekly"), "ann@example.com")
    assert pending_sends(paper.rt, due + timedelta(seconds=30)) == []  # not every tick: it backs off
    assert pending_sends(paper.rt, due + timedelta(minutes=6)) == ["paper"]
    again = run_cycle(paper.rt, "paper", now=due + timedelta(minutes=6), reason="retry")
    assert again.outcome == "sent" and again.sent == 1
    assert [i.status for i in paper.issues()] == ["sent"]



# -- 2. old feeds: say what happened, offer the way out --------------------------------------------------------


def test_build_from_feeds_older_than_the_window_says_so_and_offers_since(workdir: Path, feed_server: FeedServer,
                                                                         cli) -> None:  # noqa: ANN001
    write_schedule(workdir, "archive", fresh_feed(feed_server, count=3, hours_ago=24 * 500))
    none_yet = cli("build", "archive", "--no-enrich", ok=False)
    assert none_yet.exit_code == 1 and "no items collected yet" in none_yet.output
    assert "newsletter collect archive" in none_yet.output
    cli("collect", "archive")
    old = cli("build", "archive", "--no-enrich", ok=False)
    assert old.exit_code == 1
    newest = (datetime.now(UTC) - timedelta(hours=24 * 500)).date()
    assert "3 item(s) collected, all older than the 7-day window" in old.output
    assert f"the newest is from {newest:%Y-%m-%d}" in old.output
    assert "Run `newsletter collect" not in old.output  # collecting again would not help
    suggested = (newest - timedelta(days=7)).isoformat()
    assert f"`newsletter build archive --since {suggested}` or `--window-days N`" in old.output
    assert "with 3 stories" in cli("build", "archive", "--no-enrich", "--since", suggested).output
    assert "Rebuilt issue #1" in cli("build", "archive", "--no-enrich", "--window-days", "600").output
    both = cli("build", "archive", "--since", suggested, "--window-days", "9", ok=False)
    assert both.exit_code == 1 and "give one of them" in both.output
