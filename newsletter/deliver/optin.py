"""Double opt-in: a pending subscription and the email with its signed, expiring confirmation link.

The subscription itself is `newsletter.subscribers`' business; this module owns the message that asks for it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.config import Newsletter
from newsletter.deliver.issue_mail import list_id
from newsletter.deliver.mailer import Mailer, Message, Recipient
from newsletter.store.models import NewsletterRow, Subscription, Suppression, utcnow
from newsletter.subscribers.manage import add_subscriber
from newsletter.subscribers.status import confirmation_nonce
from newsletter.subscribers.tokens import CONFIRM_TTL_SECONDS, confirm_url


@dataclass
class OptInResult:
    email: str
    status: str  # confirmation-sent, recently-sent, already-active, suppressed
    subscriber_id: int


def request_opt_in(
    session: Session,
    newsletter: NewsletterRow,
    nl: Newsletter,
    email: str,
    mailer: Mailer,
    *,
    base_url: str,
    secret: str,
    name: str | None = None,
    origin: str = "web",
    ttl: int = CONFIRM_TTL_SECONDS,
    resend_after: float | None = None,
    timezone: str | None = None,
) -> OptInResult:
    """Subscribe as pending and email a signed, expiring confirmation link; active once it is clicked.

    Nothing is sent to an address that is already active or that bounced or complained before.
    """
    result = add_subscriber(session, newsletter, email, name=name, status="pending", origin=origin)
    sub = session.scalars(  # add_subscriber made sure the subscription exists
        select(Subscription).where(
            Subscription.newsletter_id == newsletter.id, Subscription.subscriber_id == result.subscriber_id
        )
    ).one()
    sub_status = sub.status
    if timezone and sub_status != "active" and sub.timezone is None:
        # Only a subscription not yet confirmed takes the form's zone: a stranger typing someone's address
        # changes nothing about a reader's subscription.
        from newsletter.subscribers.preferences import change

        change(session, sub, nl, origin=origin, timezone=timezone)
    if sub_status == "active":
        return OptInResult(result.email, "already-active", result.subscriber_id)
    blocked = session.scalar(
        select(Suppression.reason).where(Suppression.email == result.email, Suppression.newsletter_id.is_(None))
    )
    if blocked:
        return OptInResult(result.email, "suppressed", result.subscriber_id)
    # A form submitted over and over must not turn us into a mail cannon aimed at someone's inbox.
    last = sub.status_changed_at
    if resend_after and sub_status == "pending" and last and (utcnow() - last).total_seconds() < resend_after:
        return OptInResult(result.email, "recently-sent", result.subscriber_id)
    # Someone who unsubscribed and asks again gets the email too: the click, not this request, resubscribes.
    # The link carries the subscription's nonce: it works once, and not after the reader leaves.
    assert sub is not None  # add_subscriber has just made or found it
    link = confirm_url(base_url, secret, result.subscriber_id, newsletter.slug, ttl, confirmation_nonce(sub))
    days = max(1, ttl // 86400)
    text = (f"Please confirm that you want to receive {nl.name}:\n\n{link}\n\n"
            f"The link works for {days} day{'s' if days != 1 else ''}. If you did not ask for this, ignore this "
            "email: you will not be subscribed.\n")
    body = (f"<p>Please confirm that you want to receive <strong>{html.escape(nl.name)}</strong>:</p>"
            f'<p><a href="{html.escape(link, quote=True)}">Confirm my subscription</a></p>'
            f"<p>The link works for {days} day{'s' if days != 1 else ''}. If you did not ask for this, ignore "
            "this email: you will not be subscribed.</p>")
    message = Message(
        subject=f"Confirm your subscription to {nl.name}",
        from_address=nl.from_address,
        reply_to=nl.reply_to,
        html=body,
        text=text,
        list_id=list_id(nl),
        categories=(nl.slug, "confirmation"),
        custom_args={"newsletter": nl.slug, "kind": "confirmation"},
    )
    mailer.push(message, [Recipient(email=result.email, name=name, subscriber_id=result.subscriber_id)])
    mailer.flush()
    sub.status_changed_at = utcnow()  # when the last confirmation went out
    return OptInResult(result.email, "confirmation-sent", result.subscriber_id)
