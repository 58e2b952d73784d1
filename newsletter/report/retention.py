"""Keeping events no longer than needed: raw events older than NEWSLETTER_EVENT_RETENTION_DAYS are folded into
daily aggregates (track_daily: counts per issue, day, kind and story, no reader in them) and deleted, whole UTC
days at a time so a day's "once per reader and link" counts stay exact. The webhook's stored copies of
provider events (the `event` table, with addresses) go after the same time. A reader's deletion request
(`subscribers forget`) removes every raw event of theirs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, case, delete, func, select, update
from sqlalchemy.orm import Session

from newsletter.render.tracking import TrackSigner
from newsletter.store.db import session_scope
from newsletter.store.models import Event, TrackCount, TrackDaily, TrackEvent, utcnow


def prune(engine: Engine, days: int, now: datetime | None = None) -> int:
    """Fold and delete the raw events older than `days` (from the start of that UTC day); how many went."""
    cutoff = datetime.combine(((now or utcnow()) - timedelta(days=days)).date(), datetime.min.time())
    with session_scope(engine) as session:
        # The webhook's own copies of the provider's events (with addresses, kept to refuse replays: SendGrid
        # retries for 72 hours at most) go after the same time.
        session.execute(delete(Event).where(Event.received_at < cutoff))
        if session.scalar(select(TrackEvent.id).where(TrackEvent.occurred_at < cutoff).limit(1)) is None:
            return 0
        old = TrackEvent.occurred_at < cutoff
        day = func.date(TrackEvent.occurred_at)
        # The first-of flags (newsletter.report.record.mark_firsts) make the folded counts add up exactly: a
        # reader's first event of the issue falls on one day only, and "unique" is per day already.
        firsts = (func.count(), func.sum(case((TrackEvent.first_day, 1), else_=0)),
                  func.sum(case((TrackEvent.first_issue, 1), else_=0)))
        keys = (TrackEvent.issue_id, day, TrackEvent.kind, TrackEvent.machine)
        for issue_id, d, kind, machine, events, uniques, readers in session.execute(
                select(*keys, *firsts).where(old).group_by(*keys)):
            _add(session, issue_id, d, kind, machine, 0, events, uniques or 0, readers or 0)
        for issue_id, d, kind, machine, story, events, uniques, readers in session.execute(
                select(*keys, TrackEvent.story, *firsts).where(old, TrackEvent.story.is_not(None))
                .group_by(*keys, TrackEvent.story)):
            _add(session, issue_id, d, kind, machine, story, events, uniques or 0, readers or 0)
        gone = session.execute(delete(TrackEvent).where(old))
        # The counters are per UTC day and the cutoff a day's start: the days before it are exactly the events
        # just folded.
        session.execute(delete(TrackCount).where(TrackCount.day < cutoff.date()))
        return int(getattr(gone, "rowcount", 0) or 0)


def _day(value: object) -> object:
    from datetime import date

    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        return value.date()
    return value


def _row(session: Session, issue_id: int, d: object, kind: str, machine: bool, story: int) -> TrackDaily:
    d = _day(d)
    row = session.scalar(select(TrackDaily).where(
        TrackDaily.issue_id == issue_id, TrackDaily.day == d, TrackDaily.kind == kind,
        TrackDaily.story == story, TrackDaily.machine == bool(machine)))
    if row is None:
        row = TrackDaily(issue_id=issue_id, day=d, kind=kind, story=story, machine=bool(machine), events=0,
                         uniques=0, recipients=0)
        session.add(row)
        session.flush()
    return row


def _add(session: Session, issue_id: int, d: object, kind: str, machine: bool, story: int, events: int,
         uniques: int, readers: int) -> None:
    row = _row(session, issue_id, d, kind, machine, story)
    row.events += int(events)
    row.uniques += int(uniques)
    row.recipients += int(readers)


def forget(session: Session, subscriber_id: int, signer: TrackSigner) -> int:
    """Remove every raw event of one reader (their recipient hash); the aggregates name nobody."""
    theirs = TrackEvent.recipient == signer.recipient_hash(subscriber_id)
    # Their events leave the report's counters too, so the figures stay those of the events still stored.
    keys = (TrackEvent.issue_id, TrackEvent.kind, TrackEvent.source, TrackEvent.machine,
            func.coalesce(TrackEvent.story, 0), func.date(TrackEvent.occurred_at))
    for issue_id, kind, source, machine, story, d, events, uniques, readers in session.execute(
            select(*keys, func.count(), func.sum(case((TrackEvent.first_day, 1), else_=0)),
                   func.sum(case((TrackEvent.first_issue, 1), else_=0))).where(theirs).group_by(*keys)).all():
        session.execute(update(TrackCount).where(
            TrackCount.issue_id == issue_id, TrackCount.kind == kind, TrackCount.source == source,
            TrackCount.machine == bool(machine), TrackCount.story == story, TrackCount.day == _day(d)).values(
            events=TrackCount.events - int(events), uniques=TrackCount.uniques - int(uniques or 0),
            readers=TrackCount.readers - int(readers or 0)))
    session.execute(delete(TrackCount).where(TrackCount.events <= 0))
    result = session.execute(delete(TrackEvent).where(theirs))
    return int(getattr(result, "rowcount", 0) or 0)
