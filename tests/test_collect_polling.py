"""Polling that learns: permanent redirects remembered, 410 Gone no longer polled, the footer counting failures,
the HTTP charset honoured, and dedupe that keeps distinct posts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from newsletter.collect.run import collect
from newsletter.config import Newsletter
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Item, Source
from tests.conftest import BOTH_DATABASES, rss, schedule_toml
from tests.feedserver import Route

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
STORY = [{"guid": "s1", "title": "Story", "link": "https://news.example/1", "body": "<p>Body.</p>"}]


def newsletter(*urls: str) -> Newsletter:
    return Newsletter(name="T", slug="t", from_address="t@example.com",
                      sources=[{"url": u, "name": f"s{i}"} for i, u in enumerate(urls)])


def source(engine, url: str) -> Source:  # noqa: ANN001
    with session_scope(engine) as session:
        row = session.scalar(select(Source).where(Source.url == url))
        session.expunge(row)
        return row


@BOTH_DATABASES
def test_a_permanent_redirect_is_remembered_and_a_temporary_one_is_not(workdir, feed_server, db_url) -> None:
    r = feed_server.routes
    r["/old"] = Route(status=301, location=feed_server.url("/new"))
    r["/new"] = Route(body=rss("New", STORY))
    r["/tmp"] = Route(status=302, location=feed_server.url("/new"))
    engine = get_engine(db_url)
    nl = newsletter(feed_server.url("/old"), feed_server.url("/tmp"))
    first = collect(engine, [nl])
    moved, temporary = first.outcomes
    assert moved.status == "ok" and moved.new_items == 1
    assert moved.warning and f"moved permanently (301) to {feed_server.url('/new')}" in moved.warning
    assert temporary.status == "ok" and not temporary.warning
    assert source(engine, feed_server.url("/old")).moved_to == feed_server.url("/new")
    assert source(engine, feed_server.url("/tmp")).moved_to is None
    second = collect(engine, [nl])
    assert [o.status for o in second.outcomes] == ["ok", "ok"] and second.outcomes[0].new_items == 0
    assert r["/old"].hits == 1  # the second poll went straight to the new address
    assert r["/tmp"].hits == 2
    assert not second.outcomes[0].warning  # said once, when it was learnt
    # The operator updates the schedule file as told: the same source, so nothing is delivered again.
    third = collect(engine, [newsletter(feed_server.url("/new"))])
    assert (third.outcomes[0].new_items, third.outcomes[0].seen_items) == (0, 1)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count(Source.id)).where(Source.url.like("%/old"))) == 0


@BOTH_DATABASES
def test_relative_links_are_relative_to_the_address_after_redirects(workdir, feed_server, db_url) -> None:
    feed_server.routes["/a/feed"] = Route(status=308, location=feed_server.url("/b/feed.xml"))
    feed_server.routes["/b/feed.xml"] = Route(body=(FIXTURES / "rss_relative.xml").read_bytes())
    engine = get_engine(db_url)
    collect(engine, [newsletter(feed_server.url("/a/feed"))])
    with session_scope(engine) as session:
        item = session.scalars(select(Item)).one()
        assert item.link == feed_server.url("/story/1")
        assert f'src="{feed_server.url("/b/img/a.png")}"' in item.content_html


@BOTH_DATABASES
def test_a_410_source_is_no_longer_polled_until_enabled(workdir, feed_server, db_url, cli) -> None:
    feed_server.routes["/gone"] = Route(status=410)
    feed_server.routes["/ok"] = Route(body=rss("Ok", STORY))
    gone_url = feed_server.url("/gone")
    (workdir / "schedules" / "t.toml").write_text(schedule_toml("t", [("Gone", gone_url),
                                                                      ("Ok", feed_server.url("/ok"))]))
    first = cli("collect", ok=False)
    assert "gone" in first.output and "sources enable" in first.output
    again = cli("collect", "--force", ok=False)
    assert feed_server.routes["/gone"].hits == 1  # not even --force polls it: an operator decides
    assert "1 gone (410: not polled until `newsletter sources enable URL`)" in again.output
    assert source(get_engine(db_url), gone_url).gone_at is not None
    said = collect(get_engine(db_url), [newsletter(gone_url)]).outcomes[0]
    assert said.status == "gone" and "HTTP 410 Gone since" in (said.error or "")
    assert f"newsletter sources enable {gone_url}" in (said.error or "")
    listed = cli("sources", "list").output
    assert "gone" in listed
    enabled = cli("sources", "enable", gone_url)
    assert "was gone (410)" in enabled.output
    feed_server.routes["/gone"].status, feed_server.routes["/gone"].body = 200, rss("Back", STORY)
    cli("collect")
    assert feed_server.routes["/gone"].hits == 2
    assert source(get_engine(db_url), gone_url).gone_at is None
    unknown = cli("sources", "enable", "https://never.example/feed", ok=False)
    assert unknown.exit_code == 1 and "no source" in unknown.output


@BOTH_DATABASES
def test_the_footer_counts_sources_backing_off_as_failing(workdir, feed_server, db_url, cli) -> None:
    feed_server.routes["/err"] = Route(status=503)
    feed_server.routes["/ok"] = Route(body=rss("Ok", STORY))
    (workdir / "schedules" / "t.toml").write_text(schedule_toml("t", [("Err", feed_server.url("/err")),
                                                                      ("Ok", feed_server.url("/ok"))]))
    first = cli("collect", ok=False)
    assert "1 failed." in " ".join(first.output.split())
    second = cli("collect", ok=False)
    assert "0 failed, 1 not fetched (backing off" in " ".join(second.output.split())


@BOTH_DATABASES
def test_the_http_charset_is_honoured_end_to_end(workdir, feed_server, db_url) -> None:
    feed_server.routes["/cp"] = Route(body=(FIXTURES / "rss_http_charset.xml").read_bytes(),
                                      content_type="application/rss+xml; charset=windows-1251")
    engine = get_engine(db_url)
    collect(engine, [newsletter(feed_server.url("/cp"))])
    with session_scope(engine) as session:
        assert session.scalars(select(Item.title)).one() == "Заголовок"


@BOTH_DATABASES
def test_same_words_on_another_day_under_another_guid_is_a_new_item(workdir, feed_server, db_url) -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    post = {"title": "Service restored", "body": "<p>All systems are working normally.</p>"}
    feed_server.routes["/status"] = Route(body=rss("Status", [
        {**post, "guid": "incident-1", "hours_ago": 1},
        {**post, "guid": "incident-2", "hours_ago": 50},
    ], now=now))
    engine = get_engine(db_url)
    nl = newsletter(feed_server.url("/status"))
    assert collect(engine, [nl]).outcomes[0].new_items == 2
    # The same post again under a new guid and the same date: the feed changed its ids, not its news.
    feed_server.routes["/status"].body = rss("Status", [{**post, "guid": "renamed-1", "hours_ago": 1}], now=now)
    again = collect(engine, [nl]).outcomes[0]
    assert (again.new_items, again.seen_items) == (0, 1)


@BOTH_DATABASES
def test_items_stored_before_the_upgrade_are_not_delivered_again(workdir, feed_server, db_url) -> None:
    """Items collected by the old parser (guid = a hash of title and HTML when the entry had no id and no link)
    are migrated to the new identity: the first collect after the upgrade finds them seen."""
    import hashlib

    import sqlalchemy as sa

    from newsletter.store.db import make_engine, upgrade

    body = "<p>A post with neither id nor link.</p>"
    feed_server.routes["/f"] = Route(body=rss("F", [{"title": "Idless", "body": body, "hours_ago": 3}]))
    old = make_engine(db_url)
    upgrade(old, "0003_webhard")
    old_hash = hashlib.sha256(" ".join(f"Idless {body}".lower().split()).encode()).hexdigest()
    with old.begin() as conn:
        conn.execute(sa.text("insert into source (url, name, failures, created_at) values (:u, 's0', 0, :now)"),
                     {"u": feed_server.url("/f"), "now": datetime(2026, 11, 1)})
        source_id = conn.execute(sa.text("select id from source")).scalar_one()
        conn.execute(sa.text(
            "insert into item (source_id, guid, link, title, content_html, content_text, content_hash, "
            "published_at, collected_at) values (:s, :h, null, 'Idless', :html, :text, :h, :when, :now)"),
            {"s": source_id, "h": old_hash, "html": body, "text": "A post with neither id nor link.",
             "when": datetime(2026, 11, 1, 9), "now": datetime(2026, 11, 1, 12)})
    old.dispose()
    engine = get_engine(db_url)  # upgrades to head, as `newsletter` does on first use
    outcome = collect(engine, [newsletter(feed_server.url("/f"))]).outcomes[0]
    assert (outcome.new_items, outcome.seen_items) == (0, 1)
    with session_scope(engine) as session:
        assert session.scalars(select(Item.guid)).one() != old_hash
