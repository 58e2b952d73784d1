"""Writing events: a click through /r/, an open of the pixel, and the SendGrid webhook's events (one table,
newsletter.store.models.TrackEvent). Readers are stored as their recipient hash only (newsletter.render.tracking).

A provider event is stored once whatever how often it arrives (`dedupe` = its sg_event_id, unique), and only when
its custom_args name an issue of this database (the `install` id every real send carries): test sends and another
database's mail on a shared SendGrid account are left out.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, exists, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.compose.build import load_issue
from newsletter.compose.issue import issue_to_json
from newsletter.render.tracking import Link, TrackSigner, issue_links
from newsletter.report.agents import Agent, classify
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, IssueRow, Send, Subscriber, TrackCount, TrackEvent, utcnow

# SendGrid's event names -> ours (group_unsubscribe is an unsubscribe from one group: still one reader leaving)
PROVIDER_KINDS = {"delivered": "delivered", "open": "open", "click": "click", "bounce": "bounce",
                  "dropped": "dropped", "deferred": "deferred", "spamreport": "spamreport",
                  "unsubscribe": "unsubscribe", "group_unsubscribe": "unsubscribe"}
MAX_LINK = 2000


def record_click(engine: Engine, link: Link, recipient: str | None, agent: Agent,
                 when: datetime | None = None) -> bool:
    """One click through /r/ (False when its issue no longer exists: the redirect still goes)."""
    return _insert(engine, TrackEvent(issue_id=link.issue_id, kind="click", source="redirect", machine=agent.machine,
                                      agent=agent.name, story=link.story or None, link=link.url[:MAX_LINK],
                                      recipient=recipient, occurred_at=when or utcnow()))


def record_open(engine: Engine, issue_id: int, subscriber_id: int | None, signer: TrackSigner,
                user_agent: str | None, ip: str | None, method: str = "GET", when: datetime | None = None) -> Agent:
    """One fetch of the pixel, classified (a Gmail fetch in the first minute after the reader's copy went out is
    a prefetch: the ledger says when that was)."""
    when = when or utcnow()
    after = None
    if subscriber_id is not None and user_agent and "googleimageproxy" in user_agent.lower():
        with session_scope(engine) as session:
            sent = session.scalar(select(Delivery.sent_at).join(Send, Send.id == Delivery.send_id)
                                  .where(Send.issue_id == issue_id, Delivery.subscriber_id == subscriber_id))
        after = (when - sent).total_seconds() if sent is not None else None
    agent = classify(user_agent, ip, method=method, seconds_after_send=after)
    recipient = signer.recipient_hash(subscriber_id) if subscriber_id is not None else None
    _insert(engine, TrackEvent(issue_id=issue_id, kind="open", source="pixel", machine=agent.machine,
                               agent=agent.name, recipient=recipient, occurred_at=when))
    return agent


def mark_firsts(session: Session, row: TrackEvent) -> TrackEvent:
    """Set the row's first_issue / first_day from the events already stored (one indexed query), and add the row
    to the report's counters (track_count) in the same transaction. Two events of the same reader and link
    written at the same instant by two processes may both be marked: a double count that rare is the price of
    not taking a lock per click."""
    if row.machine or row.recipient is None:
        row.first_issue, row.first_day = False, False
        count(session, row)
        return row
    same = and_(TrackEvent.issue_id == row.issue_id, TrackEvent.recipient == row.recipient,
                TrackEvent.kind == row.kind, TrackEvent.source == row.source, TrackEvent.machine.is_(False))
    start = datetime.combine(row.occurred_at.date(), datetime.min.time())
    day = and_(same, TrackEvent.occurred_at >= start, TrackEvent.occurred_at < start + timedelta(days=1))
    if row.kind == "click":
        day = and_(day, TrackEvent.link == row.link)
    seen_issue, seen_day = session.execute(select(exists().where(same), exists().where(day))).one()
    row.first_issue, row.first_day = not seen_issue, not seen_day
    count(session, row)
    return row


def count(session: Session, row: TrackEvent) -> None:
    """Add one event (its first-of flags set) to its counter row: one upsert, so concurrent writers add up."""
    when = row.occurred_at or utcnow()
    row.occurred_at = when
    values = {"issue_id": row.issue_id, "kind": row.kind, "source": row.source, "machine": bool(row.machine),
              "story": row.story or 0, "day": when.date(), "events": 1, "uniques": int(bool(row.first_day)),
              "readers": int(bool(row.first_issue))}
    session.execute(_upsert(session.get_bind().dialect.name), values)


_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    """The counter's upsert, built once per dialect: building it per click cost more than the click's queries.
    A Core statement on the table, not the ORM entity, whose bulk-insert path costs more again."""
    if dialect not in _UPSERTS:
        table = TrackCount.__table__
        stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
        _UPSERTS[dialect] = stmt.on_conflict_do_update(
            index_elements=["issue_id", "kind", "source", "machine", "story", "day"],
            set_={"events": table.c.events + stmt.excluded.events,
                  "uniques": table.c.uniques + stmt.excluded.uniques,
                  "readers": table.c.readers + stmt.excluded.readers})
    return _UPSERTS[dialect]


def count_all(conn: Connection | Session) -> None:
    """(Re)build every counter from the raw events, as migration 0007_report_counts does: for bulk loads that
    write track_event without mark_firsts (benchmarks/analytics.py)."""
    conn.execute(TrackCount.__table__.delete())
    keys = (TrackEvent.issue_id, TrackEvent.kind, TrackEvent.source, TrackEvent.machine,
            func.coalesce(TrackEvent.story, 0), func.date(TrackEvent.occurred_at))
    conn.execute(insert(TrackCount).from_select(
        ["issue_id", "kind", "source", "machine", "story", "day", "events", "uniques", "readers"],
        select(*keys, func.count(), func.sum(case((TrackEvent.first_day, 1), else_=0)),
               func.sum(case((TrackEvent.first_issue, 1), else_=0))).group_by(*keys)))


def _insert(engine: Engine, row: TrackEvent) -> bool:
    try:
        with session_scope(engine) as session:
            session.add(mark_firsts(session, row))
    except IntegrityError:  # the issue was deleted since the email went out
        return False
    return True


def record_provider_event(session: Session, event: dict[str, Any], *, install: str, signer: TrackSigner,
                          dedupe: str, base_url: str) -> bool:
    """Add one SendGrid webhook event to the events, in the webhook's own transaction. False when it is not
    about a real send of this database or not a kind the report counts."""
    kind = PROVIDER_KINDS.get(str(event.get("event", "")))
    if kind is None or event.get("test") or str(event.get("install", "")) != install:
        return False
    issue_text = str(event.get("issue", ""))
    if not (issue_text.isascii() and issue_text.isdigit() and len(issue_text) <= 9):
        return False
    issue_id = int(issue_text)
    if session.get(IssueRow, issue_id) is None:
        return False
    when = utcnow()
    if isinstance(event.get("timestamp"), int | float):
        with contextlib.suppress(OverflowError, OSError, ValueError):  # a year past 9999: the arrival time
            when = datetime.fromtimestamp(event["timestamp"], UTC).replace(tzinfo=None)
    email = str(event.get("email", "")).strip()
    recipient = None
    if email:
        sid = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
        if sid is None:
            sid = session.scalar(select(Subscriber.id).where(Subscriber.email.ilike(email)))
        recipient = signer.recipient_hash(sid) if sid is not None else None
    machine, agent = False, "unknown"
    story: int | None = None
    link: str | None = None
    if kind in ("open", "click"):
        ua = event.get("useragent") if isinstance(event.get("useragent"), str) else None
        found = classify(ua, str(event.get("ip") or "") or None)
        machine, agent = found.machine, found.name
        if kind == "open" and event.get("sg_machine_open") is True:  # SendGrid's own Apple MPP flag
            machine, agent = True, "apple-mpp"
        if kind == "click" and isinstance(event.get("url"), str):
            if event["url"].startswith(base_url.rstrip("/") + "/r/"):
                return False  # SendGrid's click tracking wrapped our own /r/ link: /r/ recorded that click
            link, story = _story_of(session, issue_id, event["url"][:MAX_LINK])
    session.add(mark_firsts(session, TrackEvent(
        issue_id=issue_id, kind=kind, source="sendgrid", machine=machine, agent=agent, story=story, link=link,
        recipient=recipient, occurred_at=when, dedupe=dedupe[:200])))
    return True


def _story_of(session: Session, issue_id: int, url: str) -> tuple[str, int | None]:
    """A provider-tracked click's destination and the story it belongs to, matched to the issue's links."""
    issue = load_issue(session, issue_id)
    links = issue_links(issue_to_json(issue)["items"]) if issue is not None else {}
    return url, links.get(url)
