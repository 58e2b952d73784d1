"""Deliver one claimed batch of a send, leaving the ledger right whatever happens at any moment.

The batch is marked `sending` (committed) before the provider is called and `sent`, with one delivery row per
recipient, in one transaction after it. A retry finds what is left: recipients without a delivery row. A batch
found `sending` was interrupted while the provider had it, so its outcome is unknown; it is settled the way
`newsletter send` settles it: ask the provider (Mailer.accepted), or resend where delivery is idempotent (the
outbox), or hold it for the operator rather than guess.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update

from newsletter.config import Newsletter, Settings
from newsletter.deliver.mailer import (
    Mailer,
    Message,
    PermanentDeliveryError,
    PushResult,
    Recipient,
    TemporaryDeliveryError,
)
from newsletter.deliver.send import audience_query, make_message
from newsletter.scale.ledger import Claimed
from newsletter.store.db import secret_key, session_scope
from newsletter.store.models import Delivery, IssueRow, NewsletterRow, Send, SendBatch, utcnow
from newsletter.subscribers.tokens import Signer

Row = tuple[int, int, str, "str | None"]  # subscription id, subscriber id, email, name


class SettleWait(TemporaryDeliveryError):
    """The provider's activity log is not old enough to be believed yet: come back in retry_after seconds."""


@dataclass(frozen=True)
class SendJob:
    """What every batch of one send needs; built once per send in each worker process."""

    send_id: int
    issue_id: int
    newsletter_id: int
    slug: str
    message: Message
    signer: Signer
    base_url: str


def batch_key(send_id: int, number: int) -> str:
    return f"{send_id}-{number}"


def _templates(settings: Settings) -> Path | None:
    return settings.templates_dir if settings.templates_dir.is_dir() else None


def load_send(engine: Engine, settings: Settings, nl: Newsletter, send_id: int) -> SendJob:
    from newsletter.build.build import load_issue
    from newsletter.render.cache import rendered_issue

    with session_scope(engine) as session:
        send = session.get(Send, send_id)
        if send is None:
            raise LookupError(f"no send {send_id}")
        issue_id = send.issue_id
        newsletter_id = session.scalar(select(IssueRow.newsletter_id).where(IssueRow.id == issue_id))
        secret = secret_key(session, settings.secret_key)
    # The issue was rendered once before the send started; this reads that render back.
    rendered = rendered_issue(engine, issue_id, nl, base_url=settings.base_url, templates_dir=_templates(settings))
    with session_scope(engine) as session:
        issue = load_issue(session, issue_id)
    message = make_message(nl, rendered.subject, rendered.html, rendered.text, issue_number=issue.number,
                           issue_id=issue_id, send_id=send_id)
    return SendJob(send_id, issue_id, newsletter_id, nl.slug, message, Signer(secret), settings.base_url)


def newsletter_slug_of_send(engine: Engine, send_id: int) -> str:
    with session_scope(engine) as session:
        slug = session.scalar(
            select(NewsletterRow.slug).join(IssueRow, IssueRow.newsletter_id == NewsletterRow.id)
            .join(Send, Send.issue_id == IssueRow.id).where(Send.id == send_id)
        )
    if slug is None:
        raise LookupError(f"no send {send_id}")
    return slug


def _set(engine: Engine, batch_id: int, **values: Any) -> None:
    with session_scope(engine) as session:
        session.execute(update(SendBatch).where(SendBatch.id == batch_id).values(**values))


def rows_left(engine: Engine, job: SendJob, batch: Claimed) -> list[Row]:
    """The batch's recipients without a delivery row (the audience range minus what the ledger says)."""
    with session_scope(engine) as session:
        done = set(session.scalars(select(Delivery.subscriber_id).where(Delivery.batch_id == batch.id)))
        rows = session.execute(audience_query(job.newsletter_id, batch.first - 1, batch.last)).all()
    return [tuple(r) for r in rows if r[1] not in done]  # type: ignore[misc]


def record(engine: Engine, job: SendJob, batch: Claimed, rows: Sequence[Row], result: PushResult | None,
           *, final: bool) -> None:
    """Delivery rows for `rows` and, when final, the batch as sent: one transaction."""
    now = utcnow()
    ids = result.message_ids if result else {}
    with session_scope(engine) as session:
        if rows:
            session.execute(
                Delivery.__table__.insert(),
                [{"send_id": job.send_id, "batch_id": batch.id, "subscriber_id": r[1], "email": r[2],
                  "message_id": ids.get(r[2]), "sent_at": now} for r in rows],
            )
            session.execute(update(Send).where(Send.id == job.send_id).values(sent=Send.sent + len(rows)))
        values: dict[str, Any] = {"error": None}
        if final:
            values.update(status="sent", sent_at=now)
            if result and result.provider_message_id:
                values["provider_message_id"] = result.provider_message_id[:200]
        session.execute(update(SendBatch).where(SendBatch.id == batch.id).values(**values))


def _epoch(engine: Engine, batch_id: int) -> float:
    with session_scope(engine) as session:
        at = session.scalar(select(SendBatch.claimed_at).where(SendBatch.id == batch_id))
    return at.replace(tzinfo=UTC).timestamp() if at else 0.0


def settle(engine: Engine, job: SendJob, batch: Claimed, mailer: Mailer) -> bool:
    """A batch interrupted while the provider had it. True: what is left of it may be sent now.

    False: it is held as `unknown` for the operator (the send ends `held`, naming it).
    """
    lookup = getattr(mailer, "accepted", None)
    if lookup is not None:
        wait = _epoch(engine, batch.id) + float(getattr(mailer, "activity_settle_seconds", 0) or 0) - time.time()
        if wait > 0:
            raise SettleWait(f"batch {batch.number}: waiting for the provider's activity log", retry_after=wait)
        accepted = lookup({"send": str(job.send_id), "batch": batch_key(job.send_id, batch.number)})
        if accepted is not None:
            got = [r for r in rows_left(engine, job, batch) if r[2].lower() in accepted]
            record(engine, job, batch, got, None, final=False)
            return True
    if mailer.name == "outbox":  # one file per address, overwritten: sending again cannot make a duplicate
        return True
    _set(engine, batch.id, status="unknown", error="interrupted while the provider was called; outcome unknown")
    return False


def recipients(job: SendJob, rows: Sequence[Row]) -> list[Recipient]:
    url = job.signer.unsubscribe_url
    return [Recipient(email=email, name=name, subscriber_id=sid,
                      values={"unsubscribe_url": url(job.base_url, sid, job.slug)})
            for _sub, sid, email, name in rows]


@dataclass
class Timing:
    """Where a batch's time went: the database, or the provider."""

    db: float = 0.0
    provider: float = 0.0
    recipients: int = 0


def deliver(engine: Engine, job: SendJob, batch: Claimed, mailer: Mailer, me: str) -> tuple[str, Timing]:
    """Deliver what is left of a claimed batch. Returns its state (sent, unknown) and the time it took.

    Temporary errors raise after the ledger says `retry` (the job's retry strategy backs off and comes back
    to this batch); permanent ones after it says `failed`.
    """
    timing = Timing()
    t0 = time.perf_counter()
    if batch.status == "sending" and not settle(engine, job, batch, mailer):
        return "unknown", timing
    rows = rows_left(engine, job, batch)
    if not rows:
        record(engine, job, batch, [], None, final=True)
        timing.db = time.perf_counter() - t0
        return "sent", timing
    _set(engine, batch.id, status="sending", attempts=batch.attempts + 1, claimed_by=me[:200], claimed_at=utcnow())
    message = replace(job.message, custom_args={**job.message.custom_args, "send": str(job.send_id),
                                                "batch": batch_key(job.send_id, batch.number)})
    people = recipients(job, rows)
    t1 = time.perf_counter()
    try:
        result = mailer.push(message, people)
    except PermanentDeliveryError as exc:
        _set(engine, batch.id, status="failed", error=str(exc)[:2000])
        raise
    except TemporaryDeliveryError as exc:
        accepted = getattr(exc, "accepted", None)  # a partial delivery (SMTP): keep what got through
        if accepted:
            record(engine, job, batch, [r for r in rows if r[2] in accepted], PushResult(message_ids=dict(accepted)),
                   final=False)
        if type(exc).__name__ == "OutcomeUnknownError" or getattr(exc, "outcome_unknown_for", None):
            pass  # stays `sending`: the retry settles it before sending anything again
        else:
            _set(engine, batch.id, status="retry", error=str(exc)[:2000])
        raise
    t2 = time.perf_counter()
    record(engine, job, batch, rows, result, final=True)
    t3 = time.perf_counter()
    timing.db, timing.provider, timing.recipients = (t1 - t0) + (t3 - t2), t2 - t1, len(rows)
    return "sent", timing
