"""An operator's first hour (issue 17): mistakes lose nothing, and every message points the right way.

Each test runs the commands a new operator runs (Typer's runner, real SQLite, real feeds on loopback).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
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


# -- 4, 5. collect: exit codes, what failed and where ----------------------------------------------------------


def test_collect_exits_1_when_no_source_answered_and_counts_sources_backing_off(
        workdir: Path, feed_server: FeedServer, cli) -> None:  # noqa: ANN001
    feed_server.routes["/down"] = Route(body=b"", status=503)
    feed_server.routes["/gone"] = Route(body=b"", status=404)
    src = [("Down", feed_server.url("/down")), ("Gone", feed_server.url("/gone"))]
    (workdir / "schedules" / "city.toml").write_text(schedule_toml("city", src), encoding="utf-8")
    first = cli("collect", "city", ok=False)
    assert first.exit_code == 1, first.output
    assert "0 new items from 2 sources; 2 failed." in first.output
    assert feed_server.url("/down") in first.output and feed_server.url("/gone") in first.output  # the rows
    again = cli("collect", "city", ok=False)  # both back off now: not fetched, and not "0 failed"
    assert again.exit_code == 1
    assert "2 not fetched (backing off after earlier failures; `--force` tries them now)." in again.output
    assert "0 failed, 2 not fetched" in again.output

    fresh = fresh_feed(feed_server, "/ok")
    (workdir / "schedules" / "city.toml").write_text(schedule_toml("city", [*src, ("Ok", fresh)]),
                                                     encoding="utf-8")
    partial = cli("collect", "city")  # one source answered: exit 0, the others still reported
    assert "3 new items from 3 sources" in partial.output and "2 not fetched" in partial.output


@pytest.mark.parametrize("body, said", [
    (b"<!doctype html><html><head><title>Blog</title></head><body>hi</body></html>", "this is an HTML page"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "items": []}', "this is JSON"),
    (b"just some words on one line", "this is plain text"),
])
def test_a_local_file_that_is_not_a_feed_says_what_it_is(workdir: Path, cli, body: bytes,  # noqa: ANN001
                                                         said: str) -> None:
    page = workdir / "page.txt"
    page.write_bytes(body)
    (workdir / "schedules" / "city.toml").write_text(schedule_toml("city", [("Mine", str(page))]),
                                                     encoding="utf-8")
    out = cli("collect", "city", ok=False).output
    assert f"not a feed: {said}" in out
    assert "not a feed: not a feed" not in out and "line 2" not in out
    assert str(page) in out  # the failing row names the file


# -- 6. schedule errors: the line of the key, and no second, false error -----------------------------------


def test_schedule_errors_give_the_line_of_the_key_and_collect_does_not_call_the_file_unknown(
        workdir: Path, cli) -> None:  # noqa: ANN001
    (workdir / "schedules" / "typo.toml").write_text(
        'name = "Typo"\nfrom_address = "T <t@example.com>"\n\n[[sources]]\nurl = "https://ok.example/feed"\n\n'
        '[[sources]]\nurl = "ftp://nope"\n\n[digest]\nmax_items = 3\nwindw_days = 7\n', encoding="utf-8")
    result = cli("collect", "typo", ok=False)
    assert result.exit_code == 1
    assert "schedules/typo.toml: sources[1].url: not a URL (line 8)" in result.output
    assert "schedules/typo.toml: digest.windw_days: unknown setting (check the spelling) (line 12)" in result.output
    assert "unknown newsletter" not in result.output
    assert "schedules/typo.toml did not load (see the warning above)" in result.output


# -- 11. read-only commands never create a database ------------------------------------------------------------


@pytest.mark.parametrize("args", [["issue", "list"], ["issue", "show", "1"], ["subscribers", "list", "-n", "city"],
                                  ["editors", "list"], ["issue", "approve", "1"], ["check", "city"]])
def test_read_only_commands_in_a_fresh_folder_say_there_is_no_database(workdir: Path, feed_server: FeedServer,
                                                                       cli, args: list[str]) -> None:  # noqa: ANN001
    write_schedule(workdir, "city", fresh_feed(feed_server))
    result = cli(*args, ok=False)
    assert result.exit_code == 1 and "no database here yet" in result.output, result.output
    assert not (workdir / "newsletter.db").exists()


def test_schedule_list_before_the_first_run_creates_no_database(workdir: Path, feed_server: FeedServer,
                                                                cli) -> None:  # noqa: ANN001
    write_schedule(workdir, "city", fresh_feed(feed_server))
    out = cli("schedule", "list").output
    assert "city" in out and "never" in out and "No `newsletter run` is running" in out
    assert not (workdir / "newsletter.db").exists()


# -- 7. the sign-in URL follows the port; the demo follows NEWSLETTER_BASE_URL ----------------------------


def test_serve_on_another_port_prints_and_links_that_port(workdir: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_BASE_URL"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port)], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"editors sign in at http://localhost:{port}/signin" in line, line
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/signin", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not answer"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_editors_add_and_the_demo_say_only_what_is_true_about_the_address(workdir: Path, cli,  # noqa: ANN001
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from newsletter.cli import common

    monkeypatch.delenv("NEWSLETTER_BASE_URL")
    monkeypatch.setenv("NEWSLETTER_PORT", "40143")
    common.settings.cache_clear()
    from typer.testing import CliRunner

    from newsletter.cli.main import app

    said = CliRunner().invoke(app, ["editors", "add", "ed@example.com", "--password-stdin"],
                              input="a long enough password\n")
    assert said.exit_code == 0, said.output
    assert "http://localhost:40143/signin with the default port" in said.output
    assert "NEWSLETTER_BASE_URL" in said.output

    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://news.example.org")
    common.settings.cache_clear()
    cli("demo", "--dir", str(workdir / "demo"))
    eml = next((workdir / "demo" / "outbox").rglob("*.eml")).read_text(encoding="utf-8")
    assert "https://news.example.org/u/" in eml and "localhost:8000" not in eml


# -- 9. issue show prints what the JSON has: speakers, related reading, other outlets ------------------------


def test_issue_show_prints_speakers_and_related_links(workdir: Path, feed_server: FeedServer, cli) -> None:  # noqa: ANN001
    from newsletter.store.models import IssueItem

    write_schedule(workdir, "city", fresh_feed(feed_server, count=1))
    cli("collect", "city")
    cli("build", "city", "--no-enrich")
    from newsletter.cli.common import engine

    with session_scope(engine()) as session:
        row = session.query(IssueItem).one()
        row.quotes = [{"text": "We will build it [soon].", "speaker": "Mayor Ann Example"}]
        row.related = [{"title": "Earlier: the plan", "url": "https://desk.example/plan", "source": "Desk",
                        "blurb": ""}]
        row.also_covered_by = [{"title": "Same story", "url": "https://wire.example/same", "source": "Wire"}]
    out = cli("issue", "show", "1").output
    assert "“We will build it [soon].” — Mayor Ann Example" in out
    assert "related: Earlier: the plan (Desk) https://desk.example/plan" in out
    assert "also covered by: Same story (Wire) https://wire.example/same" in out


# -- 10. paths never wrap ----------------------------------------------------------------------------------


def test_the_demo_never_wraps_a_path_at_80_columns(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(COLUMNS="80", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "demo"
    out = subprocess.run([sys.executable, "-m", "newsletter", "demo", "--dir", str(deep)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    emls = sorted(str(p) for p in deep.rglob("*.eml"))
    assert emls and all(path in out.stdout.splitlines() or f"  {path}" in out.stdout.splitlines() for path in emls)


# -- 14. no deprecation warning from the test client --------------------------------------------------------


def test_starlettes_test_client_imports_without_a_deprecation_warning() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-W", "error", "-c", "import starlette.testclient"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr  # the `test` extra brings httpx2, which it asks for
