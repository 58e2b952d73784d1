"""The web edition over real HTTP (uvicorn on loopback): the issue page of story cards, a page per story with
the email card's content, the addresses the email links to, redirects, privacy of unsent issues, Open Graph
tags, and the archive's JSON Feed."""

from __future__ import annotations

import email
import json
import re
from collections.abc import Iterator
from email import policy
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from newsletter.store.db import session_scope
from newsletter.store.models import IssueItem, IssueRow, utcnow
from newsletter.urls import slugify, story_path
from tests.conftest import BOTH_DATABASES
from tests.web_server import serve
from tests.web_support import Site, make_site

BASE = "https://news.example.com"
IMAGE = "https://city.example/img/bridge.jpg"


def send_second_issue(site: Site) -> None:
    """Issue #2 (the draft) goes out with what a rich card carries: a picture, both kinds of quote, related
    reading with one story already in the archive (issue #1's market) and one outside it."""
    from newsletter.config import load_newsletter
    from newsletter.deliver.outbox import OutboxMailer
    from newsletter.deliver.send import send_issue
    from newsletter.render.cache import rendered_issue

    with session_scope(site.engine) as session:
        issue = session.get(IssueRow, site.draft_issue_id)
        bridge = next(i for i in issue.items if i.title == "Bridge plan approved")
        bridge.image_url = IMAGE
        bridge.quotes = [{"text": "We will finish the bridge by spring.", "speaker": "Mayor Ana Lima",
                          "kind": "speech"},
                         {"text": "Nobody asked the people who live by the river.", "kind": "passage"}]
        bridge.related = [
            {"title": "Old market reopens", "url": "https://city.example/market", "source": "City Desk",
             "blurb": "The other big reopening."},
            {"title": "Bridges of the world", "url": "https://elsewhere.example/bridges", "source": "Elsewhere"},
        ]
    nl = load_newsletter(site.settings.schedules_dir / "city.toml")
    rendered_issue(site.engine, site.draft_issue_id, nl, base_url=site.settings.base_url)
    send_issue(site.engine, nl, site.draft_issue_id, OutboxMailer(site.settings.outbox_dir), site.settings)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    from newsletter.web.app import create_app

    site = make_site(tmp_path_factory.mktemp("edition"), base_url=BASE)
    send_second_issue(site)
    with serve(create_app(site.settings, engine=site.engine)) as url:
        yield site, url


def _story_number(site: Site, title: str) -> int:
    with session_scope(site.engine) as session:
        issue = session.get(IssueRow, site.draft_issue_id)
        included = [i for i in sorted(issue.items, key=lambda i: i.position) if i.included]
        return next(n for n, i in enumerate(included, start=1) if i.title == title)


class _Meta(HTMLParser):
    """The page's <meta property|name=... content=...>, headings in order, and landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.headings: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "meta" and (a.get("property") or a.get("name")) and a.get("content") is not None:
            self.meta[str(a.get("property") or a.get("name"))] = str(a["content"])
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(tag)


def _parse(html: str) -> _Meta:
    parser = _Meta()
    parser.feed(html)
    return parser


def test_slugs_are_ascii_readable_and_short() -> None:
    assert slugify("Café “Ünïcode” opens: 5 things!") == "cafe-unicode-opens-5-things"
    assert slugify("Москва") == "story"
    assert slugify("one two three four five six seven eight nine ten") == "one-two-three-four-five-six-seven-eight"
    assert story_path("city", 3, 2, "Ferry fares rise") == "/archive/city/3/2-ferry-fares-rise"


def test_the_email_links_each_story_to_its_page_and_the_issue_page(world) -> None:  # noqa: ANN001
    site, url = world
    message = email.message_from_bytes(
        (site.root / "outbox" / "city" / "issue-2" / "ann@example.com.eml").read_bytes(), policy=policy.default)
    html, text = message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()
    number = _story_number(site, "Bridge plan approved")
    page = f"{BASE}/archive/city/2/{number}-bridge-plan-approved"
    assert re.search(rf'<a href="{re.escape(page)}"[^>]*>Discuss</a> · Be the first', html)
    assert re.search(r'href="https://news\.example\.com/archive/city/2"[^>]*>View in browser<', html)
    assert "Discuss: be the first [" in text and page in text
    assert f"View in browser: {BASE}/archive/city/2" in text
    # The link works: the page it names is the story's page.
    response = httpx.get(url + page.removeprefix(BASE))
    assert response.status_code == 200 and "<h1>Bridge plan approved</h1>" in response.text


def test_the_issue_page_is_a_page_of_story_cards(world) -> None:  # noqa: ANN001
    site, url = world
    response = httpx.get(f"{url}/archive/city/2")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    body = response.text
    assert "<table" not in body  # our own page, not the email's layout
    cards = re.findall(r'<article class="card"', body)
    assert len(cards) == 3
    for title in ("Bridge plan approved", "Ferry fares rise", "Library opens late"):
        path = f"/archive/city/2/{_story_number(site, title)}-{slugify(title)}"
        assert f'<a href="{path}">{title}</a>' in body
    assert body.count("· Be the first</p>") == 3  # comment counts from newsletter.web.conversation
    parsed = _parse(body)
    assert parsed.headings.count("h1") == 1 and parsed.headings[0] == "h1"
    assert {"main", "header", "footer"} <= set(parsed.tags)
    assert parsed.meta["og:url"] == f"{BASE}/archive/city/2" and parsed.meta["og:image"] == IMAGE
    assert "%%" not in body and "ann@example.com" not in body and "/u/" not in body
    assert "script-src" not in response.headers["content-security-policy"]  # no script runs here at all


def test_a_story_page_carries_the_card(world) -> None:  # noqa: ANN001
    site, url = world
    number = _story_number(site, "Bridge plan approved")
    response = httpx.get(f"{url}/archive/city/2/{number}-bridge-plan-approved")
    assert response.status_code == 200
    body = response.text
    assert "<h1>Bridge plan approved</h1>" in body
    assert "The council approved the bridge plan on Tuesday." in body  # the summary
    assert '<a href="https://city.example/bridge">city.example</a> (City Desk)' in body  # the source
    assert "Key quotes · 2 pulled" in body
    assert ('<blockquote class="speech"><p>“We will finish the bridge by spring.”</p>'
            "<footer>— Mayor Ana Lima</footer></blockquote>") in body
    assert ('<blockquote class="passage"><p>Nobody asked the people who live by the river.</p>'
            "<footer>— from City Desk</footer></blockquote>") in body
    assert "You might also wanna read" in body
    # Related reading: a story in the archive links its page there, one outside it links the original.
    assert '<a href="/archive/city/1/1-old-market-reopens">Old market reopens</a>' in body
    assert '<a href="https://elsewhere.example/bridges">Bridges of the world</a>' in body
    assert f'<img src="{IMAGE}" alt="">' in body
    assert re.search(r"city\.example · \d+[hd] ago", body)
    # The conversation slot, under the card.
    assert body.index("</article>") < body.index("<h2 id=\"comments-") < body.index("</main>")
    assert "Sign in to join the conversation." in body and "No comments yet. Be the first." in body
    parsed = _parse(body)
    assert parsed.headings.count("h1") == 1 and parsed.headings[0] == "h1"
    meta = parsed.meta
    canonical = f"{BASE}/archive/city/2/{number}-bridge-plan-approved"
    assert meta["og:title"] == "Bridge plan approved" and meta["og:url"] == canonical
    assert meta["og:description"].startswith("The council approved the bridge plan on Tuesday.")
    assert meta["og:image"] == IMAGE and meta["twitter:card"] == "summary_large_image"
    assert f'<link rel="canonical" href="{canonical}">' in body


def test_a_story_without_a_picture_has_no_og_image(world) -> None:  # noqa: ANN001
    _, url = world
    meta = _parse(httpx.get(f"{url}/archive/city/1/2-harbour-dredging-ends").text).meta
    assert "og:image" not in meta and meta["twitter:card"] == "summary"
    assert meta["og:description"].startswith("Dredging in the harbour ended a week early.")


def test_a_changed_title_slug_redirects_and_unknown_stories_are_404(world) -> None:  # noqa: ANN001
    _, url = world
    for asked in ("1-old-market-closes", "1", "1-"):
        moved = httpx.get(f"{url}/archive/city/1/{asked}")
        assert moved.status_code == 301, asked
        assert moved.headers["location"] == "/archive/city/1/1-old-market-reopens"
    assert httpx.get(f"{url}/archive/city/1/1-old-market-reopens").status_code == 200
    for asked in ("9-old-market-reopens", "0-x", "market", "-1-x"):
        assert httpx.get(f"{url}/archive/city/1/{asked}").status_code == 404, asked
    assert httpx.get(f"{url}/archive/city/7/1-x").status_code == 404
    assert httpx.get(f"{url}/archive/nope/1/1-x").status_code == 404


@BOTH_DATABASES
def test_unsent_issues_stay_private(tmp_path: Path, db_url: str) -> None:
    from newsletter.web.app import create_app

    site = make_site(tmp_path, base_url=BASE, database_url=db_url)  # issue #2 is a draft
    with serve(create_app(site.settings, engine=site.engine)) as url:
        for status in ("draft", "approved", "held"):
            with session_scope(site.engine) as session:
                session.get(IssueRow, site.draft_issue_id).status = status
            assert httpx.get(f"{url}/archive/city/2").status_code == 404, status
            assert httpx.get(f"{url}/archive/city/2/1-bridge-plan-approved").status_code == 404, status
            feed = httpx.get(f"{url}/archive/city/feed.json").json()
            assert [i["url"] for i in feed["items"]] == [f"{BASE}/archive/city/1"]
        # A sent issue that is held again after a view: the kept page is not served.
        assert httpx.get(f"{url}/archive/city/1/1-old-market-reopens").status_code == 200
        with session_scope(site.engine) as session:
            session.get(IssueRow, site.sent_issue_id).status = "held"
        assert httpx.get(f"{url}/archive/city/1/1-old-market-reopens").status_code == 404
        assert httpx.get(f"{url}/archive/city/1").status_code == 404


def test_json_feed_lists_issues_and_links_story_pages(world) -> None:  # noqa: ANN001
    site, url = world
    response = httpx.get(f"{url}/archive/city/feed.json")
    assert response.headers["content-type"].startswith("application/feed+json")
    feed = json.loads(response.content)
    assert feed["version"] == "https://jsonfeed.org/version/1.1" and feed["title"] == "City Weekly"
    assert feed["feed_url"] == f"{BASE}/archive/city/feed.json" and feed["home_page_url"] == f"{BASE}/archive/city"
    assert [i["id"] for i in feed["items"]] == [f"{BASE}/archive/city/2", f"{BASE}/archive/city/1"]
    first = feed["items"][1]
    assert first["title"] == "City Weekly #1: Old market reopens"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["date_published"])
    assert f'href="{BASE}/archive/city/1/1-old-market-reopens"' in first["content_html"]
    # Every story page a feed names answers.
    for item in feed["items"]:
        for link in re.findall(r'href="https://news\.example\.com(/archive/city/\d+/[^"]+)"', item["content_html"]):
            assert httpx.get(url + link).status_code == 200, link
    atom = httpx.get(f"{url}/archive/city/feed.xml").text
    assert f"{BASE}/archive/city/2/{_story_number(site, 'Bridge plan approved')}-bridge-plan-approved" in atom
    assert httpx.get(f"{url}/archive/nope/feed.json").status_code == 404


def test_a_kept_story_page_follows_its_issue(world) -> None:  # noqa: ANN001
    site, url = world
    page = f"{url}/archive/city/1/2-harbour-dredging-ends"
    assert httpx.get(page).text == httpx.get(page).text  # kept after the first view
    with session_scope(site.engine) as session:
        item = session.query(IssueItem).filter_by(issue_id=site.sent_issue_id, title="Harbour dredging ends").one()
        item.summary = "Dredging ended; the editors corrected this summary."
        # What the page is kept under: the issue row's version (a correction touches the issue with its story).
        session.get(IssueRow, site.sent_issue_id).updated_at = utcnow()
    assert "the editors corrected this summary" in httpx.get(page).text


def test_comment_counts_show_in_the_email_and_on_the_issue_page(world, monkeypatch) -> None:  # noqa: ANN001
    from starlette.testclient import TestClient

    from newsletter.compose.build import load_issue
    from newsletter.config import load_newsletter
    from newsletter.render.engine import render_issue
    from newsletter.web import conversation
    from newsletter.web.app import create_app

    site, _ = world
    with session_scope(site.engine) as session:
        issue = load_issue(session, site.sent_issue_id)
    market, dredging = (s.id for s in issue.stories)
    counts = {market: 3, dredging: 1}
    nl = load_newsletter(site.settings.schedules_dir / "city.toml")
    rendered = render_issue(issue, nl, base_url=BASE, comment_counts=counts)
    assert re.search(r">Discuss</a> · 3 comments · ", rendered.html)
    assert re.search(r">Discuss</a> · 1 comment · ", rendered.html)
    assert "Discuss: 3 comments [" in rendered.text and "Discuss: 1 comment [" in rendered.text
    # The issue page asks the conversation module on each view (the page itself is kept).
    monkeypatch.setattr(conversation, "comment_counts", lambda engine, issue_id: counts if issue_id == issue.id else {})
    with TestClient(create_app(site.settings, engine=site.engine), base_url="https://testserver") as client:
        body = client.get("/archive/city/1").text
    assert "Old market reopens</span></a> · 3 comments</p>" in body
    assert "Harbour dredging ends</span></a> · 1 comment</p>" in body
