"""Readers' choices through the real build, render and send (outbox and the local SendGrid server): sections
turned off, text only, a pause; one render per variant the audience holds, never one per reader."""

from __future__ import annotations

import email
import hashlib
from datetime import datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.config import Settings, load_newsletter
from newsletter.deliver.outbox import OutboxMailer
from newsletter.deliver.send import send_issue
from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import Delivery, IssueRender, Item, Send, SendBatch, Source, Subscription, utcnow
from newsletter.subscribers import preferences
from newsletter.subscribers.manage import add_subscriber
from tests.send_fixtures import World, make_world

SCHEDULE = """name = "Tech Digest"
slug = "tech"
from_address = "Tech Digest <news@tech.example>"

[[sources]]
name = "AI Wire"
url = "https://ai.example/feed"
section = "AI"

[[sources]]
name = "Sec Daily"
url = "https://sec.example/feed"
section = "Security"

[[sources]]
name = "OSS Times"
url = "https://oss.example/feed"
section = "Open source"
"""

STORIES = [
    ("https://sec.example/feed", "Bank breach exposes records", "https://sec.example/breach"),
    ("https://ai.example/feed", "Model beats chess champion", "https://ai.example/chess"),
    ("https://oss.example/feed", "Kernel release lands", "https://oss.example/kernel"),
    ("https://sec.example/feed", "Router flaw patched", "https://sec.example/router"),
    ("https://ai.example/feed", "Robots learn to fold laundry", "https://ai.example/laundry"),
]
SECURITY = ("Bank breach exposes records", "Router flaw patched")


def store(engine, stories, when: datetime) -> None:  # noqa: ANN001
    with session_scope(engine) as session:
        for n, (feed, title, link) in enumerate(stories):
            source = session.scalar(select(Source).where(Source.url == feed))
            if source is None:
                source = Source(url=feed, name=feed.split("//")[1].split(".")[0].upper())
                session.add(source)
                session.flush()
            words = title.lower().split()
            text = (f"{title}. Reporters covering {words[0]} said the {words[-1]} matters to {len(title)} groups. "
                    f"Experts on {' and '.join(words)} expect more news about {words[1]} soon.")
            session.add(Item(source_id=source.id, guid=link, link=link, title=title,
                             published_at=when - timedelta(minutes=n), content_text=text,
                             content_html=f"<p>{text}</p>", content_hash=hashlib.sha256(text.encode()).hexdigest()))


@pytest.fixture
def site(tmp_path: Path):  # noqa: ANN201
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "tech.toml").write_text(SCHEDULE)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'n.db'}", outbox_dir=tmp_path / "outbox",
                        schedules_dir=tmp_path / "schedules", templates_dir=tmp_path / "templates",
                        base_url="https://news.example.com", secret_key="choices-secret")
    engine = get_engine(settings.database_url)
    nl = load_newsletter(tmp_path / "schedules" / "tech.toml")
    store(engine, STORIES, utcnow() - timedelta(hours=2))
    with session_scope(engine) as session:
        row = ensure_newsletter(session, nl.slug, nl.name)
        for address in ("ann", "bob", "cat", "dan"):
            add_subscriber(session, row, f"{address}@example.com")
        subs = {s.subscriber.email.split("@")[0]: s for s in session.scalars(select(Subscription))}
        preferences.change(session, subs["bob"], nl, origin="test", sections_off=["Security"])
        preferences.change(session, subs["cat"], nl, origin="test", format="text")
        preferences.change(session, subs["dan"], nl, origin="test", sections_off=["Security"], format="text")
    return settings, engine, nl


def read(settings: Settings, number: int, who: str) -> email.message.EmailMessage:
    path = settings.outbox_dir / "tech" / f"issue-{number}" / f"{who}@example.com.eml"
    return email.message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[return-value]


def parts(message: email.message.EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.walk()
            if not part.is_multipart()}


def test_sections_text_only_and_one_render_per_variant(site, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from newsletter.compose.build import build_issue
    from newsletter.render import cache

    settings, engine, nl = site
    built = build_issue(engine, nl, enrich=False)
    renders: list[str] = []
    real = cache.render_issue

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        renders.append(kwargs.get("variant", cache.DEFAULT).key)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "render_issue", counted)
    report = send_issue(engine, nl, built.issue_id, OutboxMailer(settings.outbox_dir), settings)
    assert report.status == "done" and report.sent_now == 4
    # Ann (everything, HTML), Bob (no Security), Cat (text only), Dan (no Security, text only): 4 variants.
    assert len(renders) == 4 and len(set(renders)) == 4
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(IssueRender)) == 3  # the default is kept on the issue
        assert s.scalar(select(func.count(func.distinct(SendBatch.variant)))) == 4

    ann = parts(read(settings, built.number, "ann"))
    assert set(ann) == {"text/plain", "text/html"}
    html = ann["text/html"]
    # Headed groups in the schedule file's order, every story under its source's section.
    # (rindex: the cards, after the "In this issue" list of titles)
    assert html.index(">AI</h2>") < html.rindex("Model beats chess") < html.index(">Security</h2>") \
        < html.rindex("Bank breach") < html.index(">Open source</h2>") < html.rindex("Kernel release")
    text = ann["text/plain"].replace("\r\n", "\n")
    assert "\nAI\n--\n" in text and "\nSECURITY\n--------\n" in text

    bob = parts(read(settings, built.number, "bob"))
    for body in bob.values():
        assert not any(title in body for title in SECURITY)
        assert "Model beats chess" in body and "Kernel release" in body
    assert ">Security</h2>" not in bob["text/html"]

    for who in ("cat", "dan"):
        message = read(settings, built.number, who)
        assert message.get_content_type() == "text/plain" and not message.is_multipart()
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Bank breach" in read(settings, built.number, "cat").get_content()
    assert "Bank breach" not in read(settings, built.number, "dan").get_content()

    # Every copy carries the reader's own manage link in each part, beside the one-click unsubscribe.
    for who in ("ann", "bob", "cat", "dan"):
        message = read(settings, built.number, who)
        assert message["List-Unsubscribe"].strip().startswith("<https://news.example.com/u/")
        for body in parts(message).values():
            assert "https://news.example.com/m/" in body and "Manage your subscription" in body
            assert "%%" not in body


def test_a_change_during_a_send_applies_from_the_next_issue(site) -> None:  # noqa: ANN001
    """The send walks the variants frozen at its start: Ann turning Security off after it started still gets
    this issue once (whole), and the next issue without Security."""
    from newsletter.compose.build import build_issue
    from newsletter.deliver.ledger import start_send

    settings, engine, nl = site
    first = build_issue(engine, nl, enrich=False)
    start_send(engine, first.issue_id, ensure_id(engine), "outbox", 2)
    with session_scope(engine) as session:
        ann = session.scalar(select(Subscription).join(Subscription.subscriber).where(
            Subscription.subscriber.has(email="ann@example.com")))
        preferences.change(session, ann, nl, origin="test", sections_off=["Security"])
    send_issue(engine, nl, first.issue_id, OutboxMailer(settings.outbox_dir), settings)
    assert "Bank breach" in parts(read(settings, first.number, "ann"))["text/html"]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 4

    store(engine, [("https://sec.example/feed", "Password leak found", "https://sec.example/leak"),
                   ("https://ai.example/feed", "Chatbot passes exam", "https://ai.example/exam")],
          utcnow() + timedelta(minutes=30))
    second = build_issue(engine, nl, enrich=False, now=utcnow() + timedelta(hours=1))
    send_issue(engine, nl, second.issue_id, OutboxMailer(settings.outbox_dir), settings)
    body = parts(read(settings, second.number, "ann"))["text/html"]
    assert "Chatbot passes exam" in body and "Password leak" not in body


def ensure_id(engine) -> int:  # noqa: ANN001
    with session_scope(engine) as session:
        return ensure_newsletter(session, "tech", "Tech Digest").id


def test_a_pause_skips_exactly_the_paused_issues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eve pauses for 10 days: of three weekly issues she misses the first two and gets the third; everyone
    else gets all three, each once."""
    from newsletter.deliver import ledger

    world: World = make_world(f"sqlite:///{tmp_path / 'p.db'}", 5)
    start = datetime(2026, 3, 2, 8, 0)
    clock = [start]
    monkeypatch.setattr(ledger, "utcnow", lambda: clock[0])
    with session_scope(world.engine) as session:
        eve = session.scalars(select(Subscription).order_by(Subscription.id)).all()[2]
        eve_id = eve.subscriber_id
        preferences.change(session, eve, None, origin="test", pause_weeks=0, now=start)
        eve.paused_until = start + timedelta(days=10)
    got: dict[int, list[int]] = {}
    mailer = OutboxMailer(tmp_path / "outbox")
    for week in range(3):
        clock[0] = start + timedelta(weeks=week)
        issue = world.new_issue(week + 1)
        report = world.send(issue, mailer, 2)
        assert report.status == "done"
        with session_scope(world.engine) as s:
            send_id = s.scalar(select(Send.id).where(Send.issue_id == issue))
            got[week + 1] = sorted(s.scalars(select(Delivery.subscriber_id).where(Delivery.send_id == send_id)))
    everyone = sorted({sid for ids in got.values() for sid in ids})
    assert len(everyone) == 5
    assert got[1] == got[2] == [s for s in everyone if s != eve_id]
    assert got[3] == everyone
