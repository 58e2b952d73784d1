"""Who an issue would reach if its send started now: the number a send with nobody to send to is refused on.

A send freezes its audience when it starts (`deliver.ledger.start_send`); once started, its own count is the one
that matters and resuming it is never refused. Before that, an empty audience means a mistake (no subscribers
imported yet, the wrong newsletter): sending would mark the issue sent to nobody, for good.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from newsletter.deliver.ledger import audience_query
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow, Send, Subscription


def fresh_audience(engine: Engine, issue_id: int) -> int | None:
    """How many active, unsuppressed subscribers a send of this issue would start with now; None when its send
    has already started (its audience is frozen, and resuming it must not be refused)."""
    with session_scope(engine) as session:
        if session.scalar(select(Send.id).where(Send.issue_id == issue_id)) is not None:
            return None
        issue = session.get(IssueRow, issue_id)
        if issue is None:
            return None
        max_id = session.scalar(select(func.max(Subscription.id))
                                .where(Subscription.newsletter_id == issue.newsletter_id)) or 0
        return session.scalar(select(func.count()).select_from(
            audience_query(issue.newsletter_id, 0, max_id).subquery())) or 0


def empty_audience_hint(slug: str) -> str:
    return (f"add subscribers first (`newsletter subscribers add EMAIL -n {slug}` or "
            f"`newsletter subscribers import FILE.csv -n {slug}`)")
