"""The welcome email: sent once when a reader confirms, with the latest sent issue linked and its stories listed.

Its ledger is the `welcome` table, one row per subscription: the row is claimed (committed) before the mailer
is called, so a confirmation link used twice, a confirmation from the CLI after one from the web, or two
processes at once welcome a reader once. After the call the row says `sent`; a call whose answer was lost is
`unknown` and never sent again (a missing welcome is better than two); a refused one is `failed`, with why.

The templates are `welcome.html.j2` and `welcome.txt.j2`, looked up in the operator's templates folder first
(copy one there to change it), like the digest's. Feed text (the latest issue's titles) is defused so it can
never form a per-recipient token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.config import Newsletter, Settings
from newsletter.deliver.errors import OutcomeUnknownError
from newsletter.deliver.issue_mail import list_id, templates_dir
from newsletter.deliver.mailer import DeliveryError, Mailer, Message, Recipient
from newsletter.render import tokens
from newsletter.render.engine import make_environment, render_template
from newsletter.store.db import secret_key, session_scope
from newsletter.store.models import IssueItem, IssueRow, NewsletterRow, Subscriber, Subscription, Welcome, utcnow
from newsletter.subscribers.tokens import MANAGE, UNSUBSCRIBE, Signer
from newsletter.urls import issue_path

log = logging.getLogger(__name__)

HTML_TEMPLATE = "welcome.html.j2"
TEXT_TEMPLATE = "welcome.txt.j2"
MAX_TITLES = 12


@dataclass
class WelcomeResult:
    status: str  # sent, already, not-active, unknown, failed
    issue_number: int | None = None
    error: str | None = None


def send_welcome(engine: Engine, nl: Newsletter, subscriber_id: int, mailer: Mailer,
                 settings: Settings) -> WelcomeResult:
    """Welcome an active subscriber of `nl`, once (see the module's docstring)."""
    with session_scope(engine) as session:
        found = session.execute(
            select(Subscription.id, Subscription.status, Subscription.sections_off, Subscriber.email,
                   Subscriber.name, NewsletterRow.id)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .join(NewsletterRow, NewsletterRow.id == Subscription.newsletter_id)
            .where(Subscription.subscriber_id == subscriber_id, NewsletterRow.slug == nl.slug)).first()
        if found is None or found[1] != "active":
            return WelcomeResult("not-active")
        sub_id, _status, sections_off, email, name, newsletter_id = found
        secret = secret_key(session, settings.secret_key)
        latest = _latest(session, newsletter_id, list(sections_off or []))
    try:
        with session_scope(engine) as session:
            session.add(Welcome(subscription_id=sub_id, status="claimed", claimed_at=utcnow(),
                                issue_id=latest["id"] if latest else None))
    except IntegrityError:
        return WelcomeResult("already")
    signer = Signer(secret)
    values = {"unsubscribe_url": signer.unsubscribe_urls(settings.base_url, [subscriber_id], nl.slug, UNSUBSCRIBE)[0],
              "manage_url": signer.unsubscribe_urls(settings.base_url, [subscriber_id], nl.slug, MANAGE)[0]}
    number = latest["number"] if latest else None
    try:
        message = welcome_message(nl, settings, latest, values, email)
        result = mailer.push(message, [Recipient(email=email, name=name, subscriber_id=subscriber_id,
                                                 values=values)])
        mailer.flush()
    except OutcomeUnknownError as exc:
        _finish(engine, sub_id, "unknown", error=str(exc))
        log.warning("welcome to subscriber %s of %s: outcome unknown (%s); not sent again", subscriber_id,
                    nl.slug, exc)
        return WelcomeResult("unknown", number, str(exc))
    except (DeliveryError, OSError) as exc:
        _finish(engine, sub_id, "failed", error=str(exc))
        log.error("welcome to subscriber %s of %s failed: %s", subscriber_id, nl.slug, exc)
        return WelcomeResult("failed", number, str(exc))
    if email in result.failed:
        _finish(engine, sub_id, "failed", error=result.failed[email])
        return WelcomeResult("failed", number, result.failed[email])
    _finish(engine, sub_id, "sent", message_id=result.message_ids.get(email))
    return WelcomeResult("sent", number)


def _finish(engine: Engine, sub_id: int, status: str, *, error: str | None = None,
            message_id: str | None = None) -> None:
    with session_scope(engine) as session:
        session.execute(update(Welcome).where(Welcome.subscription_id == sub_id).values(
            status=status, error=error[:2000] if error else None, message_id=message_id,
            sent_at=utcnow() if status == "sent" else None))


def _latest(session: Any, newsletter_id: int, sections_off: list[str]) -> dict[str, Any] | None:
    """The latest sent issue: its number, subject and the titles of its stories in the reader's sections."""
    row = session.scalar(select(IssueRow).where(IssueRow.newsletter_id == newsletter_id, IssueRow.status == "sent")
                         .order_by(IssueRow.number.desc()).limit(1))
    if row is None:
        return None
    items = session.scalars(select(IssueItem).where(IssueItem.issue_id == row.id, IssueItem.included.is_(True))
                            .order_by(IssueItem.position)).all()
    titles = [i.title for i in items if (i.notes or {}).get("section") not in sections_off][:MAX_TITLES]
    return {"id": row.id, "number": row.number, "subject": row.subject, "titles": titles}


def welcome_message(nl: Newsletter, settings: Settings, latest: dict[str, Any] | None, values: dict[str, str],
                    email: str) -> Message:
    base = settings.base_url.rstrip("/")
    issue = None
    if latest:
        issue = {**latest, "url": base + issue_path(nl.slug, latest["number"])}
    env = make_environment(templates_dir(settings))
    context = {"newsletter": nl.model_dump(), "theme": nl.theme.model_dump(), "lang": nl.language,
               "dir": nl.direction, "issue": issue, "archive_url": f"{base}/archive/{nl.slug}",
               "manage_url": values["manage_url"], "unsubscribe_url": values["unsubscribe_url"],
               "recipient_email": email}
    # The real links are in it already (one reader); defusing then leaves nothing a feed wrote fillable.
    html = tokens.defuse(render_template(env, HTML_TEMPLATE, context))
    text = tokens.defuse(render_template(env, TEXT_TEMPLATE, context))
    return Message(subject=f"Welcome to {nl.name}", from_address=nl.from_address, reply_to=nl.reply_to,
                   html=html, text=text, list_id=list_id(nl), categories=(nl.slug, "welcome"),
                   custom_args={"newsletter": nl.slug, "kind": "welcome"})
