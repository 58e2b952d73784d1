"""Article pages: fetched once over real loopback HTTP, extracted, cached; failures recorded, never raised."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.collect.article import get_articles
from newsletter.collect.fetch import FetchLimits
from newsletter.store.db import get_engine
from newsletter.store.models import Article
from tests.editorial_server import EditorialServer, Page

FIXTURES = Path(__file__).parent / "fixtures" / "editorial"


@pytest.fixture
def server() -> Iterator[EditorialServer]:
    srv = EditorialServer(
        pages={
            "/harbour": Page((FIXTURES / "harbour-bridge.html").read_bytes()),
            "/velo": Page((FIXTURES / "fr-velo.html").read_bytes()),
            "/home": Page((FIXTURES / "landing.html").read_bytes()),
            "/report.pdf": Page(b"%PDF-1.4 not really", content_type="application/pdf"),
            "/stall": Page((FIXTURES / "harbour-bridge.html").read_bytes(), delay=float("inf")),
        }
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = get_engine(f"sqlite:///{tmp_path / 'news.db'}")
    with Session(engine) as s:
        yield s


def test_article_extracted_with_metadata_and_fetched_once(server: EditorialServer, session: Session) -> None:
    url = server.url("/harbour")
    art = get_articles(session, [url])[url]
    assert art.status == "ok" and art.error is None
    assert art.title == "Town votes to rebuild the old harbour bridge in timber"
    assert art.byline == "Marta Lindqvist"
    assert art.site_name == "Coastline Courier"
    assert art.published_at is not None and art.published_at.date().isoformat() == "2026-11-20"
    assert art.image_url == "https://courier.example.com/img/bridge.jpg"
    assert art.language.startswith("en")
    assert "voted on Tuesday to rebuild" in art.text
    for furniture in ("Advertisement", "Share this", "All rights reserved", "Sport"):
        assert furniture not in art.text
    session.commit()

    again = get_articles(session, [url, url])
    assert again[url].id == art.id
    assert server.pages["/harbour"].hits == 1  # cached, not fetched again
    assert len(session.scalars(select(Article)).all()) == 1


def test_non_english_article(server: EditorialServer, session: Session) -> None:
    url = server.url("/velo")
    art = get_articles(session, [url])[url]
    assert art.status == "ok"
    assert art.language == "fr"
    assert art.site_name == "Le Petit Rhodanien"
    assert "piste cyclable couverte de trois kilomètres" in art.text


def test_page_that_is_not_an_article(server: EditorialServer, session: Session) -> None:
    home, pdf = server.url("/home"), server.url("/report.pdf")
    got = get_articles(session, [home, pdf])
    assert got[home].status == "not-article"
    assert "no article text" in got[home].error
    assert got[home].text == ""
    assert got[pdf].status == "not-article"
    assert "application/pdf" in got[pdf].error


def test_fetch_that_times_out_is_recorded_not_raised(server: EditorialServer, session: Session) -> None:
    stall, good, missing = server.url("/stall"), server.url("/harbour"), server.url("/gone")
    started = time.monotonic()
    got = get_articles(session, [stall, good, missing], FetchLimits(timeout=0.5))
    assert time.monotonic() - started < 5
    assert got[stall].status == "failed"
    assert got[stall].error == "fetch failed: timed out after 0.5s"
    assert got[missing].status == "failed" and got[missing].error == "fetch failed: HTTP 404"
    assert got[good].status == "ok"  # one stalled page does not hold up or spoil the others
