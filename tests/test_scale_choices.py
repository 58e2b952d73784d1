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


@ON_POSTGRES
def test_scale_scheduled_send_goes_at_each_readers_seven(workdir: Path, db_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """'daily at 07:00' in Paris: the worker sends the Paris group at once, and each later group (New York, then
    Tokyo) is a job queued for its own 07:00, released then, each reader getting one copy."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from newsletter.compose.build import build_issue
    from newsletter.config import load_newsletter
    from newsletter.scale import due, tasks
    from newsletter.scale.app import connected, ensure_schema
    from newsletter.store.db import ensure_newsletter, get_engine, session_scope
    from newsletter.store.models import IssueRow, Subscription, utcnow
    from newsletter.subscribers.manage import add_subscriber

    (workdir / "schedules" / "tech.toml").write_text(
        SCHEDULE + '\n[schedule]\nsend = "daily at 07:00"\ntimezone = "Europe/Paris"\n')
    tasks.settings.cache_clear()
    ensure_schema(db_url)
    engine = get_engine(db_url)
    nl = load_newsletter(workdir / "schedules" / "tech.toml")
    store(engine, STORIES, utcnow() - timedelta(hours=2))
    zones = {"ann": "Asia/Tokyo", "bob": None, "cat": "America/New_York"}
    with session_scope(engine) as session:
        row = ensure_newsletter(session, nl.slug, nl.name)
        for who in zones:
            add_subscriber(session, row, f"{who}@example.com")
        for sub in session.scalars(sa.select(Subscription)):
            sub.timezone = zones[sub.subscriber.email.split("@")[0]]
    # A send time ahead of the real clock, so that the job queue holds the later groups' jobs until told.
    send_at = datetime(2030, 1, 7, 7, 0, tzinfo=ZoneInfo("Europe/Paris"))
    built = build_issue(engine, nl, enrich=False)
    with session_scope(engine) as session:
        session.get_one(IssueRow, built.issue_id).period = due.period_key(nl, send_at)
    clock = [send_at.timestamp()]
    monkeypatch.setattr(tasks, "wall_clock", lambda: clock[0])

    def delivered() -> list[str]:
        with engine.connect() as conn:
            return sorted(conn.execute(sa.text("SELECT email FROM delivery")).scalars())

    def waiting() -> list[datetime]:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(
                "SELECT scheduled_at FROM procrastinate_jobs WHERE task_name LIKE '%release_group' "
                "AND status = 'todo'")).scalars())

    with connected(db_url):
        tasks.send_if_allowed(nl, built.issue_id)
    _run_worker(db_url)
    assert delivered() == ["bob@example.com"]  # the newsletter's own 07:00 (no zone: the newsletter's)
    new_york = datetime(2030, 1, 7, 7, 0, tzinfo=ZoneInfo("America/New_York"))
    assert [w.astimezone(UTC) for w in waiting()] == [new_york.astimezone(UTC)]

    for who, zone in (("cat", "America/New_York"), ("ann", "Asia/Tokyo")):
        local = datetime.combine(datetime.fromtimestamp(clock[0], ZoneInfo(zone)).date(),
                                 datetime.min.time().replace(hour=7), tzinfo=ZoneInfo(zone))
        if local.timestamp() < clock[0]:
            local += timedelta(days=1)
        [scheduled] = waiting()
        assert scheduled.timestamp() == local.timestamp(), (who, scheduled, local)
        clock[0] = local.timestamp()  # that 07:00 comes: the queue hands the job out now
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'"))
        _run_worker(db_url)
        assert who + "@example.com" in delivered()
    assert delivered() == ["ann@example.com", "bob@example.com", "cat@example.com"]  # each once
    assert waiting() == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM issue")).scalar() == "sent"
        assert conn.execute(sa.text("SELECT status FROM send")).scalar() == "done"


@ON_POSTGRES
def test_scale_sendgrid_requests_carry_each_groups_send_at(workdir: Path, db_url: str, sendgrid_env,  # noqa: ANN001
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """On SendGrid the worker sends every group at once, each request with its group's send_at (the local server
    checks it against SendGrid's schema and 72-hour rule): nothing waits in the job queue."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from newsletter.compose.build import build_issue
    from newsletter.config import load_newsletter
    from newsletter.scale import due, tasks
    from newsletter.scale.app import connected, ensure_schema
    from newsletter.store.db import ensure_newsletter, get_engine, session_scope
    from newsletter.store.models import IssueRow, Subscription, utcnow
    from newsletter.subscribers.manage import add_subscriber

    server = sendgrid_env
    monkeypatch.setenv("SENDGRID_ACTIVITY_SETTLE_SECONDS", "0")
    (workdir / "schedules" / "tech.toml").write_text(
        SCHEDULE + '\n[schedule]\nsend = "daily at 07:00"\ntimezone = "Europe/Paris"\n')
    tasks.settings.cache_clear()
    tasks._local.mailer = None
    ensure_schema(db_url)
    engine = get_engine(db_url)
    nl = load_newsletter(workdir / "schedules" / "tech.toml")
    store(engine, STORIES, utcnow() - timedelta(hours=2))
    zones = {"ann": "Asia/Tokyo", "bob": None, "cat": "America/New_York"}
    with session_scope(engine) as session:
        row = ensure_newsletter(session, nl.slug, nl.name)
        for who in zones:
            add_subscriber(session, row, f"{who}@example.com")
        for sub in session.scalars(sa.select(Subscription)):
            sub.timezone = zones[sub.subscriber.email.split("@")[0]]
    paris = ZoneInfo("Europe/Paris")
    now = datetime.fromtimestamp(server.now(), UTC).astimezone(paris)
    send_at = datetime.combine(now.date(), datetime.min.time().replace(hour=7), tzinfo=paris)
    if send_at < now + timedelta(minutes=5):
        send_at += timedelta(days=1)  # the next 07:00 in Paris, with the scheduler's clock there: every group ahead
    monkeypatch.setattr(tasks, "wall_clock", lambda: send_at.timestamp())
    built = build_issue(engine, nl, enrich=False)
    with session_scope(engine) as session:
        session.get_one(IssueRow, built.issue_id).period = due.period_key(nl, send_at)
    try:
        with connected(db_url):
            tasks.send_if_allowed(nl, built.issue_id)
        _run_worker(db_url)
    finally:
        tasks._local.mailer = None
    with engine.connect() as conn:
        groups = conn.execute(sa.text("SELECT groups FROM send")).scalar()
        assert conn.execute(sa.text("SELECT status FROM send")).scalar() == "done"
    at = {z: g["at"] for g in groups for z in g["zones"]}
    by_address = {address: acc.send_at for acc in server.accepted for address in acc.recipients}
    assert set(by_address) == {f"{who}@example.com" for who in zones}
    for who, zone in zones.items():
        when = send_at.timestamp() if zone is None else at[zone]
        assert datetime.fromtimestamp(when, ZoneInfo(zone or "Europe/Paris")).hour == 7
        # 07:00 where they are (the newsletter's for Bob, who has no zone): SendGrid holds it until then.
        assert by_address[f"{who}@example.com"] == when, (who, by_address, at)
