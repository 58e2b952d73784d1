"""Send one issue to its audience exactly once, in batches recorded in the ledger.

The audience is frozen when the send starts (subscriptions up to the highest id then) and walked in id
order. Each batch is written as `claimed` before the backend is called and as `sent`, with one delivery row
per recipient, after it. Running the send again resumes: sent batches are skipped, and a claimed batch left
by a crash is retried for the recipients that have no delivery row.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.orm import Session

from newsletter.build.build import load_issue
from newsletter.config import Newsletter, Settings
from newsletter.deliver.mailer import Mailer, Message, Recipient
from newsletter.render.cache import rendered_issue
from newsletter.store.db import ensure_newsletter, secret_key, session_scope
from newsletter.store.models import (
    Delivery,
    IssueRow,
    Send,
    SendBatch,
    Subscriber,
    Subscription,
    Suppression,
    utcnow,
)
from newsletter.subscribers.tokens import Signer

DEFAULT_BATCH = 1000
SENDABLE = ("draft", "approved", "sending", "held")


class SendError(Exception):
    pass


@dataclass
class SendReport:
    send_id: int
    issue_id: int
    status: str  # done, already-sent, failed
    total: int
    sent_now: int
    sent_before: int
    batches_now: int
    error: str | None = None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def list_id(nl: Newsletter) -> str:
    domain = nl.from_address.rpartition("@")[2].rstrip(">").strip() or "localhost"
    return f"{nl.name} <{nl.slug}.{domain}>"


def make_message(nl: Newsletter, subject: str, html: str, text: str, *, issue_number: int, issue_id: int,
                 send_id: int | None = None, test: bool = False) -> Message:
    args = {"newsletter": nl.slug, "issue": str(issue_id), "issue_number": str(issue_number)}
    if send_id is not None:
        args["send"] = str(send_id)
    if test:
        args["test"] = "1"
    return Message(
        subject=("[TEST] " if test else "") + subject,
        from_address=nl.from_address,
        reply_to=nl.reply_to,
        html=html,
        text=text,
        list_id=list_id(nl),
        categories=(nl.slug, "digest"),
        custom_args=args,
    )


def audience_query(newsletter_id: int, after_id: int, max_id: int):  # noqa: ANN201 - a Select
    """Active subscriptions in id order, without suppressed addresses (suppression outlives re-imports)."""
    suppressed = select(Suppression.id).where(
        Suppression.email == Subscriber.email,
        (Suppression.newsletter_id.is_(None)) | (Suppression.newsletter_id == newsletter_id),
    )
    return (
        select(Subscription.id, Subscriber.id, Subscriber.email, Subscriber.name)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(
            Subscription.newsletter_id == newsletter_id,
            Subscription.status == "active",
            Subscription.id > after_id,
            Subscription.id <= max_id,
            ~suppressed.exists(),
        )
        .order_by(Subscription.id)
    )


def _recipients(rows, signer: Signer, base_url: str, slug: str) -> list[Recipient]:  # noqa: ANN001
    return [
        Recipient(
            email=email,
            name=name,
            subscriber_id=subscriber_id,
            values={"unsubscribe_url": signer.unsubscribe_url(base_url, subscriber_id, slug)},
        )
        for _sub_id, subscriber_id, email, name in rows
    ]


def _start(session: Session, issue_id: int, newsletter_id: int, mailer: str, batch_size: int) -> Send:
    send = session.scalar(select(Send).where(Send.issue_id == issue_id))
    if send is None:
        max_id = session.scalar(
            select(func.max(Subscription.id)).where(Subscription.newsletter_id == newsletter_id)
        ) or 0
        total = session.scalar(
            select(func.count()).select_from(audience_query(newsletter_id, 0, max_id).subquery())
        ) or 0
        send = Send(issue_id=issue_id, mailer=mailer, status="running", max_subscription_id=max_id,
                    batch_size=batch_size, total=total, sent=0)
        session.add(send)
        session.flush()
    return send


def send_issue(
    engine: Engine,
    nl: Newsletter,
    issue_id: int,
    mailer: Mailer,
    settings: Settings,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> SendReport:
    """Deliver the issue to everyone in its audience who has not had it yet."""
    with session_scope(engine) as session:
        nrow = ensure_newsletter(session, nl.slug, nl.name)
        row = session.get(IssueRow, issue_id)
        if row is None or row.newsletter_id != nrow.id:
            raise SendError(f"no issue {issue_id} in newsletter '{nl.slug}'")
        if row.status == "sent":
            send = session.scalar(select(Send).where(Send.issue_id == issue_id))
            total = send.total if send else 0
            return SendReport(send.id if send else 0, issue_id, "already-sent", total, 0, total, 0)
        if row.status not in SENDABLE:
            raise SendError(f"issue {issue_id} is {row.status}: it cannot be sent")
        if not row.items or not any(i.included for i in row.items):
            raise SendError(f"issue {issue_id} has no stories: nothing to send")
        secret = secret_key(session, settings.secret_key)
        send = _start(session, issue_id, nrow.id, mailer.name, batch_size)
        row.status = "sending"
        send_id, newsletter_id, max_id = send.id, nrow.id, send.max_subscription_id
        batch_size = send.batch_size  # a resumed send keeps the batch size it started with
    rendered = rendered_issue(engine, issue_id, nl, base_url=settings.base_url,
                              templates_dir=_templates(settings))
    with session_scope(engine) as session:
        issue = load_issue(session, issue_id)
    message = make_message(nl, rendered.subject, rendered.html, rendered.text, issue_number=issue.number,
                           issue_id=issue_id, send_id=send_id)
    signer = Signer(secret)
    me = worker_name()
    sent_now = batches_now = 0
    try:
        while True:
            claimed = _claim_next(engine, send_id, newsletter_id, max_id, batch_size, me)
            if claimed is None:
                break
            batch_id, first, last = claimed
            with session_scope(engine) as session:
                done = set(session.scalars(select(Delivery.subscriber_id).where(Delivery.batch_id == batch_id)))
                rows = [r for r in session.execute(audience_query(newsletter_id, first - 1, last)) if r[1] not in done]
            recipients = _recipients(rows, signer, settings.base_url, nl.slug)
            result = mailer.push(message, recipients) if recipients else None
            with session_scope(engine) as session:
                now = utcnow()
                if recipients:
                    session.execute(
                        Delivery.__table__.insert(),
                        [
                            {"send_id": send_id, "batch_id": batch_id, "subscriber_id": r.subscriber_id,
                             "email": r.email, "message_id": result.message_ids.get(r.email) if result else None,
                             "sent_at": now}
                            for r in recipients
                        ],
                    )
                batch = session.get(SendBatch, batch_id)
                batch.status, batch.sent_at = "sent", now
                batch.provider_message_id = result.provider_message_id if result else None
                batch.attempts += 1
                send = session.get(Send, send_id)
                send.sent += len(recipients)
            sent_now += len(recipients)
            batches_now += 1
            if progress:
                progress(send.sent, send.total)
    except Exception as exc:
        with session_scope(engine) as session:
            send = session.get(Send, send_id)
            send.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        mailer.flush()
    with session_scope(engine) as session:
        send = session.get(Send, send_id)
        send.status, send.finished_at, send.error = "done", utcnow(), None
        row = session.get(IssueRow, issue_id)
        row.status, row.sent_at = "sent", utcnow()
        return SendReport(send_id, issue_id, "done", send.total, sent_now, send.sent - sent_now, batches_now)


def _templates(settings: Settings) -> Path | None:
    return settings.templates_dir if settings.templates_dir.is_dir() else None


def _claim_next(engine: Engine, send_id: int, newsletter_id: int, max_id: int, batch_size: int, me: str
                ) -> tuple[int, int, int] | None:
    """The next batch to work on: a claimed one left unfinished, or a new one after the last."""
    with session_scope(engine) as session:
        stale = session.scalar(
            select(SendBatch).where(SendBatch.send_id == send_id, SendBatch.status == "claimed")
            .order_by(SendBatch.number)
        )
        if stale is not None:
            stale.claimed_by, stale.claimed_at = me, utcnow()
            return stale.id, stale.first_subscription_id, stale.last_subscription_id
        last = session.scalar(
            select(SendBatch).where(SendBatch.send_id == send_id).order_by(SendBatch.number.desc())
        )
        after = last.last_subscription_id if last else 0
        ids = list(session.scalars(
            select(Subscription.id).where(
                and_(Subscription.newsletter_id == newsletter_id, Subscription.status == "active",
                     Subscription.id > after, Subscription.id <= max_id)
            ).order_by(Subscription.id).limit(batch_size)
        ))
        if not ids:
            return None
        batch = SendBatch(send_id=send_id, number=(last.number + 1) if last else 1,
                          first_subscription_id=ids[0], last_subscription_id=ids[-1], recipients=len(ids),
                          status="claimed", claimed_by=me, claimed_at=utcnow(), attempts=0)
        session.add(batch)
        session.flush()
        return batch.id, ids[0], ids[-1]


def send_test(nl: Newsletter, issue_id: int, engine: Engine, mailer: Mailer, settings: Settings,
              address: str) -> None:
    """Send the issue to one address (an editor's own) without touching the ledger."""
    rendered = rendered_issue(engine, issue_id, nl, base_url=settings.base_url,
                              templates_dir=_templates(settings))
    with session_scope(engine) as session:
        issue = load_issue(session, issue_id)
    message = make_message(nl, rendered.subject, rendered.html, rendered.text, issue_number=issue.number,
                           issue_id=issue_id, test=True)
    mailer.push(message, [Recipient(email=address, values={"unsubscribe_url": f"{settings.base_url}/u/test"})])
    mailer.flush()
