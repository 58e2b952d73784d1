"""Every command end to end, as a user runs them, in a temporary project folder."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

from tests.conftest import BOTH_DATABASES, rss, schedule_toml
from tests.feedserver import Route

QUOTE_BODY = ("<p>The council approved the plan on Tuesday. “We will finish the bridge by spring,” said "
              "Mayor Ana Lima. Work starts next month.</p><p>Critics called the budget too small.</p>")


def setup_newsletter(workdir: Path, feed_server, slug: str = "city") -> None:  # noqa: ANN001
    feed_server.routes["/a"] = Route(body=rss("City Desk", [
        {"guid": "a1", "title": "Bridge plan approved", "link": "https://city.example/bridge", "body": QUOTE_BODY},
        {"guid": "a2", "title": "Library opens late", "link": "https://city.example/library",
         "body": "<p>The library now opens until ten. Readers welcomed it.</p>", "hours_ago": 5},
    ]))
    feed_server.routes["/b"] = Route(body=rss("Harbour News", [
        {"guid": "b1", "title": "Ferries & fares: what changes", "link": "https://harbour.example/fares",
         "body": "<p>Fares rise by 5% in January. Commuters <b>grumbled</b>.</p>", "hours_ago": 2},
    ]))
    (workdir / "schedules" / f"{slug}.toml").write_text(schedule_toml(
        slug, [("City Desk", feed_server.url("/a")), ("Harbour News", feed_server.url("/b"))],
        "[digest]\nfetch_articles_under_words = 0\n"))


def test_version_and_help_show_examples(workdir, cli) -> None:
    assert "newsletter 0.1.0" in cli("--version").output
    for command in (["collect"], ["build"], ["send"], ["init"], ["demo"], ["issue", "show"],
                    ["subscribers", "import"]):
        assert "Example" in cli(*command, "--help").output, command


def test_init_writes_a_valid_schedule_and_refuses_to_overwrite(workdir, cli) -> None:
    out = cli("init", "ai-weekly").output
    path = workdir / "schedules" / "ai-weekly.toml"
    assert path.exists() and "ai-weekly.toml" in out
    before = path.read_text()
    again = cli("init", "ai-weekly", ok=False)
    assert again.exit_code == 1 and "already exists" in again.output
    assert path.read_text() == before
    assert cli("init", "Bad Slug", ok=False).exit_code == 1


def test_schedule_errors_name_the_file_and_field(workdir, cli) -> None:
    (workdir / "schedules" / "ai.toml").write_text(
        'name = "AI"\nfrom_address = "not-an-address"\n'
        '[[sources]]\nurl = "https://ok.example/feed"\n[[sources]]\nurl = "https://ok.example/2"\n'
        '[[sources]]\nurl = "ftp://nope"\n[digest]\nmax_itmes = 3\n')
    (workdir / "schedules" / "broken.toml").write_text('name = "x"\nfrom_address = = "y"\n')
    result = cli("build", "ai", ok=False)
    assert result.exit_code == 1
    assert "schedules/ai.toml: sources[2].url: not a URL" in result.output
    assert "schedules/ai.toml: from_address: not an email address" in result.output
    assert "schedules/ai.toml: digest.max_itmes: unknown setting" in result.output
    result = cli("build", "broken", ok=False)
    assert "schedules/broken.toml: invalid TOML" in result.output and "line 2" in result.output


@BOTH_DATABASES
def test_collect_build_show_send_once(workdir, feed_server, cli) -> None:
    setup_newsletter(workdir, feed_server)
    out = cli("collect").output
    assert "3 new items from 2 sources; 0 failed" in out
    out = cli("build", "city", "--no-enrich").output
    assert "Built issue #1" in out and "3 stories" in out
    data = json.loads(cli("issue", "show", "1", "--format", "json").output)
    assert data["newsletter"] == "city" and data["status"] == "draft" and data["number"] == 1
    assert [i["title"] for i in data["items"]] == [  # the most recent first
        "Bridge plan approved", "Ferries & fares: what changes", "Library opens late"]
    story = next(i for i in data["items"] if i["title"] == "Bridge plan approved")
    assert set(story) >= {"title", "url", "source", "author", "published", "summary", "quotes", "related"}
    assert story["source"] == "City Desk" and story["summary"].startswith("The council approved the plan")
    assert story["quotes"] == [] and story["related"] == []

    csv = workdir / "people.csv"
    csv.write_text("email,name,city\nann@example.com,Ann,Oslo\nnot-an-email,Bob,\nann@example.com,Ann,\n"
                   "cy@example.org,,Rome\n")
    out = cli("subscribers", "import", str(csv), "-n", "city").output
    assert "line 3" in out and "not-an-email" in out and "line 4" in out and "duplicate" in out
    assert "2 added" in out and "2 rejected" in out
    assert "subscribed" in cli("subscribers", "add", "dee@example.net", "-n", "city").output
    bad = cli("subscribers", "add", "dee@@example", "-n", "city", ok=False)
    assert bad.exit_code == 1 and "dee@@example" in bad.output
    listing = cli("subscribers", "list", "-n", "city").output
    assert "ann@example.com" in listing and "3 subscribers" in listing

    out = cli("send", "city").output
    assert "3 now" in out
    files = sorted((workdir / "outbox" / "city").rglob("*.eml"))
    assert [f.name for f in files] == ["ann@example.com.eml", "cy@example.org.eml", "dee@example.net.eml"]
    msg = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert msg["To"] == "Ann <ann@example.com>" and msg["Subject"].startswith("City Weekly #1")
    assert msg["List-Unsubscribe"].strip().startswith("<https://news.example.com/u/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] and msg["Message-ID"] and msg["Date"]
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.get_payload()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert "Bridge plan approved" in html.get_content() and "Ferries &amp; fares" in html.get_content()
    unsubscribe = msg["List-Unsubscribe"].strip().strip("<>")
    assert unsubscribe in html.get_content() and unsubscribe in text.get_content()
    assert "%%" not in html.get_content() + text.get_content()
    other = email.message_from_bytes(files[1].read_bytes(), policy=policy.default)
    assert other["List-Unsubscribe"] != msg["List-Unsubscribe"]  # each link is the recipient's own

    again = cli("send", "city").output
    assert "already sent" in again
    assert sorted((workdir / "outbox" / "city").rglob("*.eml")) == files
    assert json.loads(cli("issue", "show", "1", "--format", "json").output)["status"] == "sent"
    # Nothing new since the sent issue: build says so instead of making an empty issue.
    assert "nothing new" in cli("build", "city", "--no-enrich").output


def test_send_test_goes_to_one_address_and_leaves_the_ledger_alone(workdir, feed_server, cli) -> None:
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    cli("subscribers", "add", "ann@example.com", "-n", "city")
    assert "Sent a test" in cli("send", "city", "--test-to", "editor@example.com").output
    tests = list((workdir / "outbox" / "city" / "test").glob("*.eml"))
    assert [t.name for t in tests] == ["editor@example.com.eml"]
    assert email.message_from_bytes(tests[0].read_bytes())["Subject"].startswith("[TEST]")
    assert "1 now" in cli("send", "city").output


def test_a_broken_template_names_its_file_and_line(workdir, feed_server, cli) -> None:
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    cli("subscribers", "add", "ann@example.com", "-n", "city")
    (workdir / "templates" / "partials").mkdir(parents=True)
    (workdir / "templates" / "partials" / "footer.mjml.j2").write_text(
        "<mj-section>\n<mj-column>\n{% if newsletter.name %}\n<mj-text>x</mj-text>\n</mj-column>\n</mj-section>\n")
    result = cli("send", "city", ok=False)
    assert result.exit_code == 1
    assert "footer.mjml.j2:" in result.output and "endif" in result.output
    assert not (workdir / "outbox").exists() or not list((workdir / "outbox").rglob("*.eml"))


def test_unknown_newsletter_and_missing_issue_are_clear(workdir, cli) -> None:
    assert "no newsletter 'nope'" in cli("build", "nope", ok=False).output
    assert "no database here yet" in cli("issue", "show", "42", ok=False).output  # and none is created
    cli("db", "upgrade")
    assert "no issue 42" in cli("issue", "show", "42", ok=False).output


def test_a_failing_preflight_holds_the_send(workdir, feed_server, cli) -> None:
    setup_newsletter(workdir, feed_server)
    cli("collect")
    cli("build", "city", "--no-enrich")
    cli("subscribers", "add", "ann@example.com", "-n", "city")
    (workdir / "templates" / "partials").mkdir(parents=True)
    # A user's footer that forgot the unsubscribe link.
    (workdir / "templates" / "partials" / "footer.mjml.j2").write_text(
        "<mj-section><mj-column><mj-text>Thanks for reading.</mj-text></mj-column></mj-section>\n")
    held = cli("send", "city", ok=False)
    assert held.exit_code == 1 and "preflight failed" in held.output and "unsubscribe" in held.output.lower()
    assert not list(workdir.rglob("*.eml"))
    assert "1 now" in cli("send", "city", "--force").output
