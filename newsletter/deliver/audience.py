"""Who an issue would reach if its send started now: the number a send with nobody to send to is refused on.

A send freezes its audience when it starts (`deliver.ledger.start_send`); once started, its own count is the one
that matters and resuming it is never refused. Before that, an empty audience means a mistake (no subscribers
imported yet, the wrong newsletter): sending would mark the issue sent to nobody, for good.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter.config import Newsletter
from newsletter.deliver.ledger import audience_query
from newsletter.store.db import ensure_newsletter, session_scope
from newsletter.store.models import IssueRow, NewsletterRow, Send, Subscription


def frequency_filter(nl: Newsletter) -> dict[str, Any] | None:
    """Which readers' choice of cadence an issue of `nl` goes to: None when it offers one cadence (everyone);
    {"only": name} for a `[[cadences]]` one; {"others": [...]} for the default (all who chose no other)."""
    names = nl.cadence_names
    if not names:
        return None
    if nl.cadence == names[0]:
        return {"others": names[1:]}
    return {"only": nl.cadence}


def audience_newsletter(session: Session, nl: Newsletter) -> NewsletterRow:
    """The newsletter row whose subscriptions `nl`'s issues go to (a cadence's are its parent's)."""
    if nl.audience_slug == nl.slug:
        return ensure_newsletter(session, nl.slug, nl.name)
    parent = session.scalar(select(NewsletterRow).where(NewsletterRow.slug == nl.audience_slug))
    return parent or ensure_newsletter(session, nl.audience_slug, nl.name)


def fresh_audience(engine: Engine, issue_id: int, nl: Newsletter | None = None) -> bool | None:
    """Whether a send of this issue would start with anyone now (an active, unsuppressed subscriber); None when
    its send has already started (its audience is frozen, and resuming it must not be refused). With `nl`, the
    readers its issues go to (a cadence's: its parent's readers who chose it). The first reader found answers:
    counting a million of them to learn "not none" cost a second before every send."""
    with session_scope(engine) as session:
        if session.scalar(select(Send.id).where(Send.issue_id == issue_id)) is not None:
            return None
        issue = session.get(IssueRow, issue_id)
        if issue is None:
            return None
        newsletter_id = audience_newsletter(session, nl).id if nl is not None else issue.newsletter_id
        frequency = frequency_filter(nl) if nl is not None else None
        max_id = session.scalar(select(func.max(Subscription.id))
                                .where(Subscription.newsletter_id == newsletter_id)) or 0
        return session.scalar(audience_query(newsletter_id, 0, max_id, frequency=frequency)
                              .with_only_columns(Subscription.id).limit(1)) is not None


def empty_audience_hint(slug: str) -> str:
    return (f"add subscribers first (`newsletter subscribers add EMAIL -n {slug}` or "
            f"`newsletter subscribers import FILE.csv -n {slug}`)")
