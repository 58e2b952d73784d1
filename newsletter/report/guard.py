"""The guard: when a sent issue's complaint rate passes `tracking.hold_complaint_rate` (default 0.3%, the line
Gmail's bulk-sender rules draw) or its bounce rate passes `tracking.hold_bounce_rate`, the newsletter's scheduled
sends are held (a `send_guard` row) until an editor has looked and releases them (`newsletter report SLUG
--release`, or the button on the report page). The scheduler asks before each send (newsletter.schedule.jobs);
the editor home page and `newsletter schedule list` show the reason.

Rates are judged once the issue has reached `tracking.min_delivered` readers: one complaint among 20 is 5%,
and no mailbox provider judges a sender on that.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.config import Newsletter
from newsletter.report.figures import issue_report, sent_issues
from newsletter.store.models import NewsletterRow, SendGuard, utcnow


def active_hold(session: Session, slug: str) -> SendGuard | None:
    return session.scalar(
        select(SendGuard).join(NewsletterRow, NewsletterRow.id == SendGuard.newsletter_id)
        .where(NewsletterRow.slug == slug, SendGuard.released_at.is_(None)).order_by(SendGuard.held_at).limit(1))


def check(session: Session, nl: Newsletter) -> str | None:
    """Why the newsletter's next scheduled send must wait for an editor, or None. Looks at the last sent issue
    and holds (writes a send_guard row) when it passes a line; a hold an editor released stays released."""
    held = active_hold(session, nl.slug)
    if held is not None:
        return held.reason
    issues = [(row, send) for row, send in sent_issues(session, nl.slug) if row.status == "sent"]
    if not issues:
        return None
    row, _send = issues[-1]
    if session.scalar(select(SendGuard.id).where(SendGuard.issue_id == row.id)) is not None:
        return None  # judged and released already
    figures = issue_report(session, row.id)
    whole = figures.delivered or figures.accepted
    if whole < nl.tracking.min_delivered:
        return None
    reasons = []
    if figures.complaint_rate > nl.tracking.hold_complaint_rate:
        reasons.append(f"complaint rate {figures.complaint_rate:.2%} ({figures.complained} of {whole}) is over "
                       f"{nl.tracking.hold_complaint_rate:.2%}")
    if figures.bounce_rate > nl.tracking.hold_bounce_rate:
        reasons.append(f"bounce rate {figures.bounce_rate:.2%} ({figures.bounced} of {whole}) is over "
                       f"{nl.tracking.hold_bounce_rate:.2%}")
    if not reasons:
        return None
    reason = (f"issue #{row.number}: {' and '.join(reasons)}; scheduled sends of {nl.slug} are held until an editor "
              f"releases them (`newsletter report {nl.slug} --release` or the report page)")
    session.add(SendGuard(newsletter_id=row.newsletter_id, issue_id=row.id, reason=reason))
    session.flush()
    return reason


def release(session: Session, slug: str, by: str) -> int:
    """Release the newsletter's holds; how many there were."""
    nl_id = session.scalar(select(NewsletterRow.id).where(NewsletterRow.slug == slug))
    if nl_id is None:
        return 0
    result = session.execute(update(SendGuard).where(SendGuard.newsletter_id == nl_id,
                                                     SendGuard.released_at.is_(None))
                             .values(released_at=utcnow(), released_by=by[:320]))
    return int(getattr(result, "rowcount", 0) or 0)
