"""A small newsletter for the web tests: one sent issue and one draft, built by the real build and send code
from items stored as collect stores them, and a signed-in client."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from newsletter.config import Settings, load_newsletter
from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import IssueRow, Item, Source, utcnow

PASSWORD = "correct horse battery"
EDITOR = "ed@example.com"

SCHEDULE = """name = "City Weekly"
slug = "city"
from_address = "City Weekly <news@city.example>"
description = "What happened in town this week."
postal_address = "1 Test Street, Testville"

[[sources]]
name = "City Desk"
url = "https://city.example/feed"

[[sources]]
name = "Harbour News"
url = "https://harbour.example/feed"
"""

SENT_STORIES = [
    ("https://city.example/feed", "Old market reopens", "https://city.example/market",
     "The old market reopened on Saturday after two years of repairs. Stallholders were delighted."),
    ("https://harbour.example/feed", "Harbour dredging ends", "https://harbour.example/dredging",
     "Dredging in the harbour ended a week early. Ferries resume their usual routes."),
]
DRAFT_STORIES = [
    ("https://city.example/feed", "Bridge plan approved", "https://city.example/bridge",
     "The council approved the bridge plan on Tuesday. Work starts next month and ends by spring."),
    ("https://harbour.example/feed", "Ferry fares rise", "https://harbour.example/fares",
     "Fares rise by five percent in January. Commuters grumbled at the news."),
    ("https://city.example/feed", "Library opens late", "https://city.example/library",
     "The library now opens until ten at night. Readers welcomed the change."),
]
QUOTES = [
    {"text": "We will finish the bridge by spring.", "speaker": "Mayor Ana Lima"},
    {"text": "This is the best news for commuters in years.", "speaker": "Tom Reyes"},
    {"text": "Nobody asked the people who live by the river.", "speaker": None},
]


@dataclass
class Site:
    settings: Settings
    engine: Engine
    root: Path
    sent_issue_id: int
    draft_issue_id: int


def _store_items(engine: Engine, stories: list[tuple[str, str, str, str]], hours_ago: float) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        for n, (feed, title, link, text) in enumerate(stories):
            source = session.query(Source).filter_by(url=feed).one_or_none()
            if source is None:
                source = Source(url=feed, name="City Desk" if "city" in feed else "Harbour News")
                session.add(source)
                session.flush()
            session.add(Item(source_id=source.id, guid=link, link=link, title=title,
                             published_at=now - timedelta(hours=hours_ago + n), content_text=text,
                             content_html=f"<p>{text}</p>", content_hash=hashlib.sha256(text.encode()).hexdigest()))


def make_site(root: Path, *, base_url: str = "https://news.example.com", database_url: str | None = None) -> Site:
    """schedules/city.toml, a database with issue #1 sent (to one subscriber) and issue #2 as a draft."""
    from newsletter.compose.build import build_issue
    from newsletter.deliver.outbox import OutboxMailer
    from newsletter.deliver.send import send_issue
    from newsletter.render.cache import rendered_issue
    from newsletter.subscribers.manage import add_subscriber

    (root / "schedules").mkdir(parents=True, exist_ok=True)
    (root / "schedules" / "city.toml").write_text(SCHEDULE)
    settings = Settings(
        database_url=database_url or f"sqlite:///{root / 'newsletter.db'}",
        outbox_dir=root / "outbox",
        schedules_dir=root / "schedules",
        templates_dir=root / "templates",
        base_url=base_url,
        secret_key="web-test-secret",
    )
    engine = get_engine(settings.database_url)
    nl = load_newsletter(root / "schedules" / "city.toml")

    _store_items(engine, SENT_STORIES, hours_ago=60)
    first = build_issue(engine, nl, now=utcnow() - timedelta(hours=48), enrich=False)
    with session_scope(engine) as session:
        add_subscriber(session, ensure_newsletter(session, nl.slug, nl.name), "ann@example.com", name="Ann")
    # `newsletter send` preflights (renders) the issue before sending, which keeps the render with the issue.
    rendered_issue(engine, first.issue_id, nl, base_url=base_url)
    send_issue(engine, nl, first.issue_id, OutboxMailer(settings.outbox_dir), settings)

    _store_items(engine, DRAFT_STORIES, hours_ago=5)
    second = build_issue(engine, nl, enrich=False)
    with session_scope(engine) as session:
        issue = session.get(IssueRow, second.issue_id)
        bridge = next(i for i in issue.items if i.title == "Bridge plan approved")
        bridge.quotes = [dict(q) for q in QUOTES]
    return Site(settings, engine, root, first.issue_id, second.issue_id)


def add_editor(engine: Engine, email: str = EDITOR, password: str = PASSWORD) -> None:
    from newsletter.web.auth import create_editor

    with session_scope(engine) as session:
        create_editor(session, email, password)


CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(client, email: str = EDITOR, password: str = PASSWORD):  # noqa: ANN001, ANN201
    page = client.get("/signin")
    return client.post("/signin", data={"csrf": csrf_of(page.text), "email": email, "password": password,
                                        "next": "/editor/"}, follow_redirects=False)
