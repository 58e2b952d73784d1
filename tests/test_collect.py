"""Collecting feeds: failures are reported per source and never stop the others."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from newsletter.collect.fetch import FetchLimits
from newsletter.collect.run import collect
from newsletter.config import Newsletter
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Item, Source
from tests.conftest import BOTH_DATABASES, rss

GOOD = [{"guid": f"g{i}", "title": f"Story {i}", "link": f"https://news.example/{i}",
         "body": f"<p>Body of story {i}. It has words.</p>"} for i in range(3)]


def newsletter(*urls: str) -> Newsletter:
    return Newsletter(name="T", slug="t", from_address="t@example.com",
                      sources=[{"url": u, "name": f"s{i}"} for i, u in enumerate(urls)])


def items(engine) -> list[Item]:  # noqa: ANN001
    with session_scope(engine) as session:
        return list(session.scalars(select(Item).order_by(Item.id)))


@BOTH_DATABASES
def test_broken_sources_are_reported_and_the_rest_collected(workdir, feed_server, db_url) -> None:
    from tests.feedserver import Route

    s = feed_server.routes
    s["/good"] = Route(body=rss("Good", GOOD))
    s["/malformed"] = Route(body=b"<rss><channel><item><title>unclosed</channel>")
    s["/html"] = Route(body=b"<html><body>This is a web page, not a feed</body></html>", content_type="text/html")
    s["/error"] = Route(body=b"oops", status=500)
    s["/slow"] = Route(body=rss("Slow", GOOD), delay=3)
    s["/huge"] = Route(body=rss("Huge", [{"guid": "h", "title": "H", "body": "x" * 300_000}]))
    engine = get_engine(db_url)
    urls = [feed_server.url(p) for p in ("/good", "/malformed", "/html", "/error", "/slow", "/huge")]
    report = collect(engine, [newsletter(*urls)], limits=FetchLimits(timeout=1.0, max_bytes=200_000))
    by_url = {o.url: o for o in report.outcomes}
    assert by_url[urls[0]].status == "ok" and by_url[urls[0]].new_items == 3
    assert by_url[urls[1]].status == "error" and "line" in by_url[urls[1]].error
    assert by_url[urls[2]].status == "error" and "not a feed" in by_url[urls[2]].error
    assert by_url[urls[3]].error == "HTTP 500"
    assert "timed out" in by_url[urls[4]].error
    assert "too large" in by_url[urls[5]].error
    assert [i.title for i in items(engine)] == ["Story 0", "Story 1", "Story 2"]
    with session_scope(engine) as session:
        failed = session.scalar(select(Source).where(Source.url == urls[3]))
        assert failed.last_status == "error" and failed.failures == 1 and failed.next_attempt_at is not None


@BOTH_DATABASES
def test_failing_source_backs_off_until_forced(workdir, feed_server, db_url) -> None:
    from tests.feedserver import Route

    feed_server.routes["/error"] = Route(status=503)
    engine = get_engine(db_url)
    nl = newsletter(feed_server.url("/error"))
    collect(engine, [nl])
    second = collect(engine, [nl])
    assert second.outcomes[0].status == "skipped" and "backing off" in second.outcomes[0].error
    assert feed_server.routes["/error"].hits == 1
    collect(engine, [nl], force=True)
    assert feed_server.routes["/error"].hits == 2


@BOTH_DATABASES
def test_conditional_get_turns_an_unchanged_feed_into_a_304(workdir, feed_server, db_url) -> None:
    from tests.feedserver import Route

    feed_server.routes["/etag"] = Route(body=rss("E", GOOD), etag='"v1"')
    feed_server.routes["/lm"] = Route(body=rss("L", GOOD[:1]), last_modified="Mon, 23 Nov 2026 10:00:00 GMT")
    engine = get_engine(db_url)
    nl = newsletter(feed_server.url("/etag"), feed_server.url("/lm"))
    first = collect(engine, [nl])
    assert [o.status for o in first.outcomes] == ["ok", "ok"]
    second = collect(engine, [nl])
    assert [o.status for o in second.outcomes] == ["not-modified", "not-modified"]
    assert feed_server.routes["/etag"].conditional_hits == 1 and feed_server.routes["/lm"].conditional_hits == 1
    # The feed changes: a new ETag brings the new item in.
    feed_server.routes["/etag"].body = rss("E", GOOD + [{"guid": "g9", "title": "Fresh", "body": "<p>New.</p>"}])
    feed_server.routes["/etag"].etag = '"v2"'
    third = collect(engine, [nl])
    assert third.outcomes[0].status == "ok" and third.outcomes[0].new_items == 1


@BOTH_DATABASES
def test_items_are_deduplicated_across_runs_by_guid_link_and_content(workdir, feed_server, db_url) -> None:
    from tests.feedserver import Route

    now = datetime.now(UTC)  # one clock for both documents: the republished items keep their dates
    feed_server.routes["/f"] = Route(body=rss("F", GOOD, now=now))
    engine = get_engine(db_url)
    nl = newsletter(feed_server.url("/f"))
    collect(engine, [nl])
    republished = [
        {**GOOD[0], "guid": "new-guid-same-link"},  # same link, new guid
        {**GOOD[1], "guid": "another", "link": "https://news.example/moved"},  # same content, new guid and link
        {"guid": "g-new", "title": "Really new", "link": "https://news.example/new", "body": "<p>Hi.</p>"},
    ]
    feed_server.routes["/f"].body = rss("F", GOOD + republished, now=now)
    report = collect(engine, [nl])
    assert report.outcomes[0].new_items == 1
    with session_scope(engine) as session:
        assert session.scalar(select(func.count(Item.id))) == 4


@BOTH_DATABASES
def test_feed_html_is_sanitized(workdir, feed_server, db_url) -> None:
    from tests.feedserver import Route

    body = ('<p onclick="steal()">Hello <b>world</b><script>alert(1)</script></p>'
            '<img src="https://img.example/a.png" onerror="alert(2)" alt="A">'
            '<a href="javascript:alert(3)">click</a> <a href="https://ok.example/">ok</a>'
            '<iframe src="https://evil.example/"></iframe><style>body{}</style>')
    feed_server.routes["/x"] = Route(body=rss("X", [{"guid": "1", "title": "T &lt;b&gt;bold&lt;/b&gt;", "body": body}]))
    engine = get_engine(db_url)
    collect(engine, [newsletter(feed_server.url("/x"))])
    item = items(engine)[0]
    html = item.content_html.lower()
    for bad in ("<script", "alert(1)", "onerror", "onclick", "javascript:", "<iframe", "<style"):
        assert bad not in html, bad
    assert '<a href="https://ok.example/"' in item.content_html and "<b>world</b>" in item.content_html
    assert item.content_text.startswith("Hello world")
    assert item.title == "T bold"


@BOTH_DATABASES
def test_local_files_and_file_urls_are_sources(workdir, db_url) -> None:
    path = workdir / "local.xml"
    path.write_bytes(rss("Local", GOOD[:2]))
    engine = get_engine(db_url)
    report = collect(engine, [newsletter(str(path), (workdir / "missing.xml").as_uri())])
    assert report.outcomes[0].new_items == 2
    assert report.outcomes[1].status == "error" and "cannot read" in report.outcomes[1].error
