"""Subscription status changes that must stick: unsubscribe, bounce, complaint, confirmation.

Leaving is recorded twice: on the subscription (what `subscribers list` shows) and as a suppression keyed by
address (what a re-import, a new subscriber row or the audience query checks), so nobody is mailed again by
accident. Bounces and complaints suppress the address for every newsletter; an unsubscribe for one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from newsletter.store.models import NewsletterRow, Subscriber, Subscription, Suppression, utcnow

# Event or action -> (subscription status, suppression scope: "newsletter" or "all")
OUTCOMES = {
    "unsubscribed": ("unsubscribed", "newsletter"),
    "bounced": ("bounced", "all"),
    "complained": ("complained", "all"),
}
LEFT = ("unsubscribed", "bounced", "complained")


@dataclass
class Change:
    email: str
    newsletter_slug: str | None
    status: str
    changed: bool  # False when it was already so (a second click, a replayed event)


def suppress(session: Session, email: str, newsletter_id: int | None, reason: str) -> None:
    """Add a suppression unless one exists (insert ... on conflict do nothing, so concurrent calls are safe)."""
    if newsletter_id is None:
        # UNIQUE(email, NULL) never conflicts in SQL, so the global row needs its own existence check.
        exists = session.scalar(
            select(Suppression.id).where(Suppression.email == email, Suppression.newsletter_id.is_(None))
        )
        if exists is None:
            session.add(Suppression(email=email, newsletter_id=None, reason=reason))
            session.flush()
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(Suppression)
        .values(email=email, newsletter_id=newsletter_id, reason=reason, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["email", "newsletter_id"])
    )


def set_status(session: Session, subscriber_id: int, newsletter_id: int | None, outcome: str) -> list[Change]:
    """Mark the subscriber unsubscribed/bounced/complained for one newsletter (or all when None) and suppress.

    Idempotent: doing it twice changes nothing the second time. A worse outcome overrides a milder one
    (an unsubscribed address that then complains becomes complained), never the reverse.
    """
    status, scope = OUTCOMES[outcome]
    person = session.get(Subscriber, subscriber_id)
    if person is None:
        return []
    query = (
        select(Subscription, NewsletterRow.slug)
        .join(NewsletterRow, NewsletterRow.id == Subscription.newsletter_id)
        .where(Subscription.subscriber_id == subscriber_id)
    )
    if newsletter_id is not None:
        query = query.where(Subscription.newsletter_id == newsletter_id)
    changes = []
    rank = {s: i for i, s in enumerate(("pending", "active", *LEFT))}
    now = utcnow()
    for sub, slug in session.execute(query).all():
        changed = sub.status != status and rank.get(sub.status, 0) < rank[status]
        if changed:
            sub.status, sub.status_changed_at = status, now
        changes.append(Change(person.email, slug, sub.status, changed))
    if scope == "all":
        suppress(session, person.email, None, status)
    elif newsletter_id is not None:
        suppress(session, person.email, newsletter_id, status)
    else:
        for sub_newsletter_id in session.scalars(
            select(Subscription.newsletter_id).where(Subscription.subscriber_id == subscriber_id)
        ):
            suppress(session, person.email, sub_newsletter_id, status)
    session.flush()
    return changes


def confirm(session: Session, subscriber_id: int, newsletter_id: int) -> str | None:
    """Double opt-in: pending -> active. Returns the resulting status, or None if there is no subscription.

    Clicking the confirmation link is an explicit wish to receive this newsletter, so it lifts an earlier
    unsubscribe for it; it never lifts a bounce or complaint suppression.
    """
    sub = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id, Subscription.newsletter_id == newsletter_id
        )
    )
    if sub is None:
        return None
    if sub.status in ("pending", "unsubscribed"):
        email = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id))
        global_block = session.scalar(
            select(Suppression.reason).where(Suppression.email == email, Suppression.newsletter_id.is_(None))
        )
        if global_block:
            return sub.status
        session.execute(
            delete(Suppression).where(
                Suppression.email == email,
                Suppression.newsletter_id == newsletter_id,
                Suppression.reason == "unsubscribed",
            )
        )
        now = utcnow()
        session.execute(
            update(Subscription)
            .where(Subscription.id == sub.id)
            .values(status="active", confirmed_at=now, status_changed_at=now)
        )
        session.flush()
        return "active"
    return sub.status
