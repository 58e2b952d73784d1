"""The report's counters (track_count) say what the raw events say: backfilled by the migration from the events
already stored, then kept in step by each click (machines too), by a reader's deletion and by retention."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, func, select, text

from newsletter.store.models import TrackCount, TrackEvent
from tests.conftest import BOTH_DATABASES


def _from_events(conn) -> list[tuple]:  # noqa: ANN001
    keys = (TrackEvent.issue_id, TrackEvent.kind, TrackEvent.source, TrackEvent.machine,
            func.coalesce(TrackEvent.story, 0), func.date(TrackEvent.occurred_at))
    rows = conn.execute(select(*keys, func.count(), func.sum(case((TrackEvent.first_day, 1), else_=0)),
                               func.sum(case((TrackEvent.first_issue, 1), else_=0))).group_by(*keys)).all()
    return sorted((i, k, s, bool(m), st, str(d)[:10], int(e), int(u), int(r)) for i, k, s, m, st, d, e, u, r in rows)


def _counters(conn) -> list[tuple]:  # noqa: ANN001
    rows = conn.execute(select(TrackCount.issue_id, TrackCount.kind, TrackCount.source, TrackCount.machine,
                               TrackCount.story, TrackCount.day, TrackCount.events, TrackCount.uniques,
                               TrackCount.readers)).all()
    return sorted((i, k, s, bool(m), st, str(d)[:10], int(e), int(u), int(r)) for i, k, s, m, st, d, e, u, r in rows)


@BOTH_DATABASES
def test_counters_are_backfilled_and_kept_equal_to_the_events(db_url: str) -> None:
    from newsletter.render.tracking import Link, TrackSigner
    from newsletter.report.agents import Agent
    from newsletter.report.record import record_click
    from newsletter.report.retention import forget, prune
    from newsletter.store.db import current_revision, head_revision, make_engine, session_scope, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0006_tz_groups")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO newsletter (id, slug, name, created_at) VALUES (1, 'a', 'A', '2026-01-01')"))
        conn.execute(text("INSERT INTO issue (id, newsletter_id, number, subject, preheader, status, created_at, "
                          "updated_at) VALUES (1, 1, 1, 'S', '', 'sent', '2026-01-01', '2026-01-01')"))
        for story, reader, machine, first_issue, first_day, when in [
                (1, "a", False, True, True, "2026-01-02 10:00:00"), (1, "a", False, False, False,
                                                                     "2026-01-02 11:00:00"),
                (1, "a", False, False, True, "2026-01-03 09:00:00"), (2, "b", False, True, True,
                                                                      "2026-01-02 12:00:00"),
                (None, "b", True, False, False, "2026-01-02 12:00:01")]:
            conn.execute(text(
                "INSERT INTO track_event (issue_id, kind, source, machine, agent, story, link, recipient, "
                "occurred_at, first_issue, first_day) VALUES (1, 'click', 'redirect', :m, 'browser', :s, "
                "'https://x.example/', :r, :w, :fi, :fd)"),
                {"m": machine, "s": story, "r": f"{ord(reader):032x}", "w": when, "fi": first_issue,
                 "fd": first_day})
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        backfilled = _counters(conn)
        assert backfilled == _from_events(conn)
    story_one = [row for row in backfilled if row[4] == 1]
    assert [(row[5], row[6], row[7], row[8]) for row in story_one] == [("2026-01-02", 2, 1, 1),
                                                                       ("2026-01-03", 1, 1, 0)]
    browser, bot = Agent("browser", False), Agent("scanner", True)
    now = datetime(2026, 1, 4, 8)
    signer = TrackSigner(b"k" * 32)
    for n, agent in enumerate([browser, browser, bot, browser, browser]):
        assert record_click(engine, Link(1, 2, "https://x.example/"), signer.recipient_hash(n % 2), agent,
                            when=now + timedelta(minutes=n))
    with engine.connect() as conn:
        assert _counters(conn) == _from_events(conn)
        assert conn.execute(select(func.sum(TrackCount.events))).scalar() == 10
        assert conn.execute(select(func.sum(TrackCount.readers)).where(TrackCount.day == now.date())).scalar() == 2
    with session_scope(engine) as session:  # reader 1: two browser clicks (reader 0 has the scanner's)
        assert forget(session, 1, signer) == 2
    with engine.connect() as conn:
        assert _counters(conn) == _from_events(conn)
        assert conn.execute(select(func.sum(TrackCount.events))).scalar() == 8
    prune(engine, 1, now=datetime(2026, 1, 5, 12))  # folds Jan 2 and 3 away
    with engine.connect() as conn:
        assert _counters(conn) == _from_events(conn)
        assert conn.execute(select(func.sum(TrackCount.events))).scalar() == 3
    engine.dispose()
