"""enrich_issue over a real SQLite database, article pages and a model endpoint on loopback HTTP."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pysbd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import text as text_module
from newsletter.collect.fetch import FetchLimits
from newsletter.config import Newsletter
from newsletter.editorial import enrich as enrich_module
from newsletter.editorial.enrich import enrich_issue
from newsletter.store.db import ensure_newsletter, get_engine
from newsletter.store.models import Article, IssueItem, IssueRow, Item, Source
from newsletter.text import appears_in
from tests.editorial_server import EditorialServer, Page, free_port

FIXTURES = Path(__file__).parent / "fixtures" / "editorial"
NOW = datetime(2026, 11, 23, 8, 0)
LIMITS = FetchLimits(timeout=0.5)

LONG_FEED = (
    "The county approved a new tram line on Wednesday that will link the university to the central station "
    "by 2029. The line will run for nine kilometres and stop at fourteen stations along the river. "
    "Construction is expected to cost 300 million euros, most of it paid by the national government. "
    "“This tram will change how a whole generation gets to class and to work,” "
    "said transport chief Mara Ilic. "
    "Shop owners along the route asked for compensation during the two years of building work. "
    "The first trams are due to be delivered in the spring of 2028, with test runs planned for that summer. "
    "Opponents argued that electric buses would have been cheaper and faster to introduce across the city."
)


@pytest.fixture
def server() -> Iterator[EditorialServer]:
    srv = EditorialServer(
        pages={
            "/harbour": Page((FIXTURES / "harbour-bridge.html").read_bytes()),
            "/stall": Page(b"<html></html>", delay=float("inf")),
        }
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = get_engine(f"sqlite:///{tmp_path / 'news.db'}")
    with Session(engine) as s:
        yield s


def _newsletter(**extra) -> Newsletter:
    data = {
        "name": "Town Weekly",
        "slug": "town",
        "from_address": "news@example.com",
        "sources": [{"url": "https://courier.example/feed"}],
        "digest": {
            "summary_sentences": 3,
            "summary_words": 80,
            "quotes": 3,
            "related": 3,
            "fetch_articles_under_words": 60,
        },
    }
    data.update(extra)
    return Newsletter.model_validate(data)


def _source(session: Session, name: str) -> Source:
    src = Source(url=f"https://{name.lower().replace(' ', '')}.example/feed", name=name)
    session.add(src)
    session.flush()
    return src


def _item(session: Session, src: Source, title: str, link: str, text: str, days_ago: float = 1) -> Item:
    item = Item(
        source_id=src.id,
        guid=link,
        link=link,
        title=title,
        content_text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        published_at=NOW - timedelta(days=days_ago),
    )
    session.add(item)
    session.flush()
    return item


def _issue(session: Session, items: list[Item]) -> IssueRow:
    nl = ensure_newsletter(session, "town", "Town Weekly")
    issue = IssueRow(
        newsletter_id=nl.id,
        number=1,
        subject="Town Weekly #1",
        window_start=NOW - timedelta(7),
        window_end=NOW,
    )
    session.add(issue)
    session.flush()
    for pos, item in enumerate(items, 1):
        session.add(
            IssueItem(
                issue_id=issue.id,
                item_id=item.id,
                position=pos,
                title=item.title,
                url=item.link,
                source_name=item.source.name if item.source else "",
                summary=item.content_text[:200],
                summary_method="feed",
            )
        )
    session.flush()
    session.refresh(issue)
    return issue


def _archive(session: Session) -> None:
    """Older stories a reader might also want: two about bridges and timber, one about football."""
    old = _source(session, "Archive News")
    _item(
        session,
        old,
        "Timber bridges are making a comeback in coastal towns",
        "https://old.example/timber",
        "Engineers say timber bridges built from larch last more than a century when kept dry, and coastal "
        "towns are choosing them again over steel.",
        days_ago=40,
    )
    _item(
        session,
        old,
        "Saltby harbour front shops fear summer closure",
        "https://old.example/shops",
        "Shopkeepers on the Saltby harbour front say a summer closure of the bridge would drive visitors "
        "away.",
        days_ago=30,
    )
    _item(
        session,
        old,
        "Saltby win the county football cup",
        "https://old.example/cup",
        "Saltby beat Northam two goals to one in the county cup final on Saturday.",
        days_ago=20,
    )


def test_enrich_issue_fills_every_story_and_survives_a_stalled_page(
    server: EditorialServer, session: Session
) -> None:
    courier, county, hn = (
        _source(session, "Coastline Courier"),
        _source(session, "County News"),
        _source(session, "Hacker News"),
    )
    _archive(session)
    bridge = _item(
        session,
        hn,
        "Town votes to rebuild the old harbour bridge in timber",
        server.url("/harbour"),
        "Comments",
    )
    tram = _item(
        session,
        county,
        "County approves tram line to the university",
        "https://county.example/tram",
        LONG_FEED,
    )
    stalled = _item(
        session,
        courier,
        "Weather warning for the weekend",
        server.url("/stall"),
        "Storms are expected on Saturday.",
    )
    issue = _issue(session, [bridge, tram, stalled])

    report = enrich_issue(session, issue, _newsletter(), limits=LIMITS)
    rows = {r.item_id: r for r in issue.items}

    # The HN item had only "Comments": its summary and quotes come from the fetched article.
    b = rows[bridge.id]
    assert b.summary_method == "extractive"
    assert b.summary.startswith("The council of Saltby voted on Tuesday")
    assert "Image caption" not in b.summary and "Advertisement" not in b.summary
    article_text = session.scalar(select(Article.text).where(Article.url == server.url("/harbour")))
    assert len(b.quotes) == 3 and all(appears_in(q["text"], article_text) for q in b.quotes)
    assert {"Council Leader Ingrid Holm", "Anna Sjöberg"} & {q["speaker"] for q in b.quotes}
    related_urls = [r["url"] for r in b.related]
    assert "https://old.example/timber" in related_urls and "https://old.example/cup" not in related_urls
    assert server.url("/harbour") not in related_urls
    assert all(set(r) == {"title", "url", "source", "blurb"} for r in b.related)
    assert b.author == "Marta Lindqvist" and b.image_url == "https://courier.example.com/img/bridge.jpg"

    # Long feed text: summarized without fetching.
    t = rows[tram.id]
    assert t.summary_method == "extractive" and t.summary.startswith("The county approved a new tram line")
    assert [q["speaker"] for q in t.quotes if q["speaker"]] == ["Mara Ilic"]

    # The stalled page: the story keeps its feed text and says why.
    s = rows[stalled.id]
    assert s.summary_method == "feed" and s.summary == "Storms are expected on Saturday."
    assert s.notes["article"] == "fetch failed: timed out after 0.5s"
    assert s.notes["text"] == "feed, 5 words" and b.notes["text"].startswith("article page, ")

    assert report.items == 3 and report.articles_fetched == 1 and report.articles_failed == 1  # a timeout: not fetched
    assert "articles 1 fetched, 0 cached, 1 failed to fetch, 0 unusable" in report.summary_line()
    assert report.summaries == {"extractive": 2, "feed": 1}
    assert any("timed out" in p for p in report.problems)

    # A second build reads the article cache instead of the network.
    again = enrich_issue(session, issue, _newsletter(), limits=LIMITS)
    assert server.pages["/harbour"].hits == 1 and again.articles_cached == 1 and again.articles_failed == 1


def test_copies_in_one_issue_become_also_covered_by(server: EditorialServer, session: Session) -> None:
    courier, hn = _source(session, "Coastline Courier"), _source(session, "Hacker News")
    own = _item(
        session,
        courier,
        "Town votes to rebuild the old harbour bridge in timber",
        server.url("/harbour"),
        LONG_FEED.replace("tram", "bridge"),
    )
    link = _item(
        session,
        hn,
        "Harbour bridge to be rebuilt in timber",
        server.url("/harbour") + "?utm_source=hn",
        "Comments",
    )
    issue = _issue(session, [own, link])
    report = enrich_issue(session, issue, _newsletter(), limits=LIMITS)
    first, second = issue.items
    assert report.merged == 1 and report.items == 1
    assert second.included is False and second.notes["duplicate_of"] == 1
    assert first.also_covered_by == [{"title": link.title, "url": link.link, "source": "Hacker News"}]


def test_one_failing_story_does_not_stop_the_others(
    server: EditorialServer, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    county = _source(session, "County News")
    tram = _item(session, county, "County approves tram line", "https://county.example/tram", LONG_FEED)
    other = _item(
        session,
        county,
        "County approves bus lanes",
        "https://county.example/bus",
        LONG_FEED.replace("tram", "bus"),
    )
    issue = _issue(session, [tram, other])
    real = enrich_module.extract_quotes

    def broken_for_trams(text: str, **kw):  # noqa: ANN202 - fault injection for one story only
        if " tram " in text:
            raise ValueError("bad bytes")
        return real(text, **kw)

    monkeypatch.setattr(enrich_module, "extract_quotes", broken_for_trams)
    report = enrich_issue(session, issue, _newsletter(), limits=LIMITS)
    first, second = issue.items
    assert report.problems == ["#1 County approves tram line: quotes: ValueError: bad bytes"]
    assert first.notes["quotes"] == "failed: ValueError" and first.summary_method == "extractive"
    assert second.quotes and second.summary_method == "extractive"


def _model_issue(session: Session) -> IssueRow:
    county = _source(session, "County News")
    tram = _item(session, county, "County approves tram line", "https://county.example/tram", LONG_FEED)
    return _issue(session, [tram])


def test_model_summary_is_used_when_the_endpoint_answers(
    server: EditorialServer, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWN_LLM_KEY", "sk-test-123")
    server.chat.reply = "<think>plan</think>Summary: The county will build a tram line. It opens in 2029."
    issue = _model_issue(session)
    nl = _newsletter(
        summarizer={"endpoint": server.url("/v1"), "model": "tiny-local", "api_key_env": "TOWN_LLM_KEY"}
    )
    report = enrich_issue(session, issue, nl, limits=LIMITS)
    row = issue.items[0]
    assert row.summary_method == "model:tiny-local"
    assert row.summary == "The county will build a tram line. It opens in 2029."
    assert "summary" not in row.notes
    assert report.summaries == {"model:tiny-local": 1}
    [request] = server.chat.requests
    assert request["model"] == "tiny-local"
    assert "Title: County approves tram line" in request["messages"][0]["content"]
    assert server.chat.headers[0]["Authorization"] == "Bearer sk-test-123"


def test_model_endpoint_down_falls_back_and_says_so(session: Session) -> None:
    issue = _model_issue(session)
    nl = _newsletter(summarizer={"endpoint": f"http://127.0.0.1:{free_port()}/v1", "model": "tiny-local"})
    enrich_issue(session, issue, nl, limits=LIMITS)
    row = issue.items[0]
    assert row.summary_method == "extractive" and row.summary.startswith("The county approved")
    assert row.notes["summary"].startswith("model tiny-local gave no summary (cannot reach http://127.0.0.1:")
    assert row.notes["summary"].endswith("used extractive")


@pytest.mark.parametrize("mode", ["slow", "error", "garbage"])
def test_model_endpoint_slow_or_broken_falls_back(
    server: EditorialServer, session: Session, mode: str
) -> None:
    server.chat.mode = mode
    issue = _model_issue(session)
    nl = _newsletter(summarizer={"endpoint": server.url("/v1"), "model": "tiny-local", "timeout": 0.4})
    started = time.monotonic()
    enrich_issue(session, issue, nl, limits=LIMITS)
    assert time.monotonic() - started < 4
    row = issue.items[0]
    assert row.summary_method == "extractive"
    expected = {"slow": "no answer within 0.4s", "error": "HTTP 500", "garbage": "unexpected reply"}[mode]
    assert expected in row.notes["summary"]


def _as_a_new_process() -> None:
    """Forget every sentence split this process made or was given, as a new process starts."""
    text_module._split_sentences.cache_clear()
    text_module._sentences.cache_clear()
    text_module._KNOWN_SPLITS.clear()


def test_a_build_in_a_new_process_takes_the_sentence_splits_kept_with_the_article(
    server: EditorialServer, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    hn = _source(session, "Hacker News")
    bridge = _item(session, hn, "Town votes to rebuild the old harbour bridge in timber", server.url("/harbour"),
                   "Comments")
    issue = _issue(session, [bridge])
    enrich_issue(session, issue, _newsletter(), limits=LIMITS)
    session.commit()
    built = [(r.summary, r.quotes) for r in issue.items]
    article = session.scalars(select(Article).where(Article.url == server.url("/harbour"))).one()
    assert article.sentences is not None and len(article.sentences["splits"]) > 3
    prose = {text_module.normalize_ws(p) for p in text_module.paragraphs(article.text) if text_module.is_prose(p)}

    asked: list[str] = []
    segment = pysbd.Segmenter.segment
    monkeypatch.setattr(pysbd.Segmenter, "segment", lambda self, text: asked.append(text) or segment(self, text))
    _as_a_new_process()
    enrich_issue(session, issue, _newsletter(), limits=LIMITS)
    assert [(r.summary, r.quotes) for r in issue.items] == built  # the same story, without splitting the article
    assert not prose & set(asked)

    # Splits another pysbd version made are not taken: the article is split again, and its splits kept anew.
    article.sentences = {**article.sentences, "version": "pysbd 0.0.1, rules 1"}
    session.commit()
    _as_a_new_process()
    enrich_issue(session, issue, _newsletter(), limits=LIMITS)
    assert [(r.summary, r.quotes) for r in issue.items] == built
    assert prose <= set(asked) and article.sentences["version"] != "pysbd 0.0.1, rules 1"
