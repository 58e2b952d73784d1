"""Readers' choices in scale mode: a real procrastinate worker sends each batch with its variant's render (sections
off, text only), rendered once per variant before the batches go out, never once per batch or reader."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_choices_send import SCHEDULE, SECURITY, STORIES, parts, store

pytestmark = pytest.mark.postgres
ON_POSTGRES = pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                      indirect=True)


def _run_worker(url: str) -> None:
    from newsletter.scale.app import app, connector_for

    with app.replace_connector(connector_for(url)) as bound:
        bound.run_worker(wait=False, install_signal_handlers=False, concurrency=1, queues=["build", "send"])


@ON_POSTGRES
def test_scale_batches_get_their_variant(workdir: Path, db_url: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import email
    from email import policy

    from newsletter.compose.build import build_issue
    from newsletter.config import load_newsletter
    from newsletter.render import cache
    from newsletter.scale import tasks
    from newsletter.scale.app import connected, ensure_schema
    from newsletter.store.db import ensure_newsletter, get_engine, session_scope
    from newsletter.store.models import Subscription, utcnow
    from newsletter.subscribers import preferences
    from newsletter.subscribers.manage import add_subscriber

    (workdir / "schedules" / "tech.toml").write_text(SCHEDULE)
    tasks.settings.cache_clear()
    ensure_schema(db_url)
    engine = get_engine(db_url)
    nl = load_newsletter(workdir / "schedules" / "tech.toml")
    store(engine, STORIES, utcnow() - timedelta(hours=2))
    people = ("ann", "bob", "cat", "dan", "eve", "fay")
    with session_scope(engine) as session:
        row = ensure_newsletter(session, nl.slug, nl.name)
        for who in people:
            add_subscriber(session, row, f"{who}@example.com")
        subs = {s.subscriber.email.split("@")[0]: s for s in session.scalars(sa.select(Subscription))}
        for who in ("bob", "eve"):  # interleaved ids: a variant's batch range holds other readers too
            preferences.change(session, subs[who], nl, origin="test", sections_off=["Security"])
        preferences.change(session, subs["cat"], nl, origin="test", format="text")
        preferences.change(session, subs["dan"], nl, origin="test", sections_off=["Security"], format="text")
    built = build_issue(engine, nl, enrich=False)
    renders: list[str] = []
    real = cache.render_issue

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        renders.append(kwargs.get("variant", cache.DEFAULT).key)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "render_issue", counted)
    with connected(db_url):
        tasks.start_send.defer(issue_id=built.issue_id, batch_size=1, force=True)
    _run_worker(db_url)

    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM issue")).scalar() == "sent"
        batches = conn.execute(sa.text("SELECT variant, recipients FROM send_batch")).all()
        delivered = conn.execute(sa.text("SELECT email FROM delivery ORDER BY email")).scalars().all()
    assert delivered == [f"{who}@example.com" for who in people]  # each once
    assert len(batches) == 6 and len({v for v, _ in batches}) == 4
    # One render per variant (Ann/Fay, Bob/Eve, Cat, Dan), six batches of one reader each.
    assert sorted(renders) == sorted(set(renders)) and len(renders) == 4

    def read(who: str) -> email.message.EmailMessage:
        [path] = (workdir / "outbox" / "tech").rglob(f"{who}@example.com.eml")
        return email.message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[return-value]

    for who in ("ann", "fay"):
        got = parts(read(who))
        assert set(got) == {"text/plain", "text/html"} and all(t in got["text/html"] for t in SECURITY)
    for who in ("bob", "eve"):
        got = parts(read(who))
        assert set(got) == {"text/plain", "text/html"}
        for body in got.values():
            assert not any(t in body for t in SECURITY) and "Model beats chess" in body
    for who in ("cat", "dan"):
        message = read(who)
        assert message.get_content_type() == "text/plain" and not message.is_multipart()
    assert "Bank breach" in read("cat").get_content() and "Bank breach" not in read("dan").get_content()
