"""A PostgreSQL schema with a newsletter, one approved issue and N subscribers, for the scale-mode tests (and the
scale benchmarks); and the stop of the `newsletter worker` processes they start."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from newsletter.store.db import ensure_newsletter, get_engine, session_scope
from newsletter.store.models import IssueItem, IssueRow, Item, Source

SLUG = "ai-weekly"


@dataclass
class World:
    url: str
    engine: Engine
    newsletter_id: int
    issue_id: int


def write_schedule(folder: Path, slug: str = SLUG, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug}.toml"
    path.write_text(
        f'name = "AI Weekly"\nfrom_address = "AI Weekly <news@example.com>"\npostal_address = "1 Test Street"\n'
        f'\n[[sources]]\nname = "Wire"\nurl = "http://127.0.0.1:9/feed.xml"\n{extra}',
        encoding="utf-8",
    )
    return path


def add_subscribers(engine: Engine, newsletter_id: int, count: int, start: int = 0) -> None:
    """`count` active subscribers user{i}@example.com, written by PostgreSQL itself (a million in seconds)."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO subscriber (email, name, fields, created_at) "
            "SELECT 'user' || i || '@example.com', 'User ' || i, '{}', now() "
            "FROM generate_series(CAST(:a AS integer), CAST(:b AS integer)) AS i"),
            {"a": start, "b": start + count - 1})
        conn.execute(text(
            "INSERT INTO subscription (newsletter_id, subscriber_id, status, created_at) "
            "SELECT :nl, s.id, 'active', now() FROM subscriber s "
            "WHERE s.email LIKE 'user%@example.com' AND NOT EXISTS "
            "(SELECT 1 FROM subscription x WHERE x.subscriber_id = s.id AND x.newsletter_id = :nl) ORDER BY s.id"),
            {"nl": newsletter_id})


def make_world(url: str, subscribers: int) -> World:
    engine = get_engine(url)
    with session_scope(engine) as s:
        nl = ensure_newsletter(s, SLUG, "AI Weekly")
        source = Source(url="http://127.0.0.1:9/feed.xml", name="Wire", failures=0)
        s.add(source)
        s.flush()
        item = Item(source_id=source.id, guid="g1", link="https://example.com/a", title="A story worth reading",
                    content_text="Body.", content_html="<p>Body.</p>", content_hash="h1")
        s.add(item)
        s.flush()
        issue = IssueRow(newsletter_id=nl.id, number=1, subject="AI Weekly #1: A story worth reading",
                         status="approved")
        issue.items.append(IssueItem(item_id=item.id, position=0, included=True, title=item.title,
                                     url=item.link, source_name="Wire", summary="Two sentences. About it."))
        s.add(issue)
        s.flush()
        newsletter_id, issue_id = nl.id, issue.id
    if subscribers:
        add_subscribers(engine, newsletter_id, subscribers)
    return World(url, engine, newsletter_id, issue_id)


def stop_workers(workers: Iterable[subprocess.Popen[bytes] | None], grace: float = 15.0) -> None:
    """SIGTERM to the worker processes still running (they finish the jobs in hand), then SIGKILL to any not
    gone within `grace` seconds, reaped before returning."""
    running = [w for w in workers if w is not None and w.poll() is None]
    for w in running:
        w.send_signal(signal.SIGTERM)
    for w in running:
        try:
            w.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait(timeout=10)
