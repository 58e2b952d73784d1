"""Subscription status changes that must stick: unsubscribe, bounce, complaint, confirmation.

Leaving is recorded twice: on the subscription (what `subscribers list` shows) and as a suppression keyed by
address (what a re-import, a new subscriber row or the audience query checks), so nobody is mailed again by
accident. Bounces and complaints suppress the address for every newsletter; an unsubscribe for one.
"""

from __future__ import annotations

import hmac
import secrets
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
        sub.confirm_nonce = None  # leaving ends every confirmation link sent before
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


def confirmation_nonce(sub: Subscription) -> str:
    """The nonce for this subscription's confirmation links: made when the first one goes out, kept for the
    resends of the same request (any of those emails works), cleared by confirming or leaving."""
    if not sub.confirm_nonce:
        sub.confirm_nonce = secrets.token_urlsafe(16)
    return sub.confirm_nonce


def _awaiting(sub: Subscription | None, nonce: str | None) -> bool:
    # A link without a nonce was sent before links carried one: it still confirms a pending subscription
    # that has no nonce (so once only), never a later request or someone who left.
    if sub is None or sub.status not in ("pending", "unsubscribed"):
        return False
    if nonce is None:
        return sub.status == "pending" and sub.confirm_nonce is None
    return sub.confirm_nonce is not None and hmac.compare_digest(sub.confirm_nonce, nonce)


def _subscription(session: Session, subscriber_id: int, newsletter_id: int) -> Subscription | None:
    return session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id, Subscription.newsletter_id == newsletter_id
        )
    )


def can_confirm(session: Session, subscriber_id: int, newsletter_id: int, nonce: str | None) -> bool:
    """Whether a confirmation link with this nonce would still do something (changes nothing)."""
    return _awaiting(_subscription(session, subscriber_id, newsletter_id), nonce)


def confirm_link(session: Session, subscriber_id: int, newsletter_id: int, nonce: str | None) -> str | None:
    """A confirmation link was used: confirm when it is the link awaited (`can_confirm`), else None and
    nothing changes (a second use, a link from before an unsubscribe, one for an earlier request)."""
    if not can_confirm(session, subscriber_id, newsletter_id, nonce):
        return None
    return confirm(session, subscriber_id, newsletter_id)


def confirm(session: Session, subscriber_id: int, newsletter_id: int) -> str | None:
    """Double opt-in: pending -> active. Returns the resulting status, or None if there is no subscription.

    Confirming is an explicit wish to receive this newsletter, so it lifts an earlier unsubscribe for it; it
    never lifts a bounce or complaint suppression. (Links go through confirm_link; the operator's
    `subscribers confirm` comes here directly.)
    """
    sub = _subscription(session, subscriber_id, newsletter_id)
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
            .values(status="active", confirmed_at=now, status_changed_at=now, confirm_nonce=None)
        )
        session.flush()
        return "active"
    return sub.status
