"""The figures of the editor's report: per sent issue, and the trend across a newsletter's issues. The page, the
CSV files, `newsletter report` and the API all print these (one computation, so they never disagree).

Counted from the per-issue counters kept beside the raw events (track_count: events, and how many were a
reader's first, per issue, kind, source, story and UTC day, added in the same transaction as each event by
newsletter.report.record.mark_firsts), so a view reads a few hundred rows whatever the number of events, plus
the daily aggregates kept past their retention (track_daily).
Definitions (the README's "Tracking and reports" says the same):
- accepted: copies the ledger handed to the mailer; delivered: SendGrid's `delivered` events (distinct readers)
  when the send went through SendGrid, else the ledger's count (SMTP and the outbox say no more than that);
- bounced, complained (spamreport), dropped, deferred: distinct readers with such a provider event;
- unsubscribed: readers of the newsletter who left between this issue's send and the next one's;
- clicks: every reader click (machines apart); unique clicks: once per (reader, link, day); clickers: distinct
  readers who clicked; opens and openers likewise, machine opens (Apple MPP, prefetch, scanners) never included;
- rates are over delivered (accepted when nothing says delivered), as Gmail's 0.1% / 0.3% spam-rate lines are.
Clicks and opens come from one source each: our own /r/ and pixel when there are any, else SendGrid's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from newsletter.compose.build import load_issue
from newsletter.store.models import (
    IssueRow,
    NewsletterRow,
    Send,
    SendGuard,
    Subscription,
    TrackCount,
    TrackDaily,
)

GMAIL_RECOMMENDED = 0.001  # Gmail's bulk-sender guidelines: keep the spam rate under 0.1%...
GMAIL_LIMIT = 0.003  # ...and never reach 0.3%
DAYS = 7  # the line of clicks and opens covers the first week
PROVIDER_KINDS = ("delivered", "bounce", "dropped", "deferred", "spamreport", "unsubscribe")


@dataclass
class StoryFigures:
    position: int
    title: str
    clicks: int = 0
    unique_clicks: int = 0


@dataclass
class DayFigures:
    day: int  # 1 = the day of the send
    date: str
    clicks: int = 0
    opens: int = 0


@dataclass
class IssueReport:
    newsletter: str
    issue_id: int
    number: int
    subject: str
    sent_at: str | None
    mailer: str | None
    audience: int = 0
    accepted: int = 0
    delivered: int = 0
    delivered_from: str = "ledger"  # ledger or sendgrid
    bounced: int = 0
    dropped: int = 0
    deferred: int = 0
    complained: int = 0
    unsubscribed: int = 0
    clicks: int = 0
    unique_clicks: int = 0
    clickers: int = 0
    machine_clicks: int = 0
    opens: int = 0
    openers: int = 0
    machine_opens: int = 0
    complaint_rate: float = 0.0
    bounce_rate: float = 0.0
    click_rate: float = 0.0
    stories: list[StoryFigures] = field(default_factory=list)
    days: list[DayFigures] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrendRow:
    issue_id: int
    number: int
    sent_at: str | None
    audience: int
    delivered: int
    clickers: int
    click_rate: float
    unsubscribed: int


@dataclass
class Trend:
    newsletter: str
    issues: list[TrendRow] = field(default_factory=list)
    hold: str | None = None  # the guard's reason when the newsletter's scheduled sends are held

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sent_issues(session: Session, slug: str) -> list[tuple[IssueRow, Send]]:
    """The newsletter's issues that went out (or are going out), oldest first."""
    rows = session.execute(
        select(IssueRow, Send).join(Send, Send.issue_id == IssueRow.id).join(NewsletterRow)
        .where(NewsletterRow.slug == slug).order_by(IssueRow.number)
    ).all()
    return [(r[0], r[1]) for r in rows]


def _when(row: IssueRow, send: Send) -> datetime:
    return row.sent_at or send.started_at


def _counts(session: Session, issue_id: int) -> dict[tuple[str, str, bool], tuple[int, int]]:
    """(kind, source, machine) -> (events, distinct readers), raw events plus the kept aggregates."""
    out: dict[tuple[str, str, bool], tuple[int, int]] = {}
    for kind, source, machine, events, readers in session.execute(
        select(TrackCount.kind, TrackCount.source, TrackCount.machine, func.sum(TrackCount.events),
               func.sum(TrackCount.readers))
        .where(TrackCount.issue_id == issue_id)
        .group_by(TrackCount.kind, TrackCount.source, TrackCount.machine)
    ):
        out[(kind, source, bool(machine))] = (int(events or 0), int(readers or 0))
    for kind, machine, events, readers in session.execute(
        select(TrackDaily.kind, TrackDaily.machine, func.sum(TrackDaily.events), func.sum(TrackDaily.recipients))
        .where(TrackDaily.issue_id == issue_id, TrackDaily.story == 0)
        .group_by(TrackDaily.kind, TrackDaily.machine)
    ):
        # Aggregates keep no source: they count toward whichever source the issue's events use.
        key = (kind, "kept", bool(machine))
        out[key] = (int(events or 0), int(readers or 0))
    return out


def _source(counts: dict[tuple[str, str, bool], tuple[int, int]], kind: str, own: str) -> set[str]:
    sources = {s for (k, s, _m) in counts if k == kind}
    chosen = {own} if own in sources else {"sendgrid"}
    return chosen | {"kept"}


def _sum(counts: dict[tuple[str, str, bool], tuple[int, int]], kind: str, sources: set[str],
         machine: bool | None = False) -> tuple[int, int]:
    events = readers = 0
    for (k, s, m), (e, r) in counts.items():
        if k == kind and s in sources and (machine is None or m == machine):
            events, readers = events + e, readers + r
    return events, readers


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def issue_report(session: Session, issue_id: int) -> IssueReport:
    row = session.get(IssueRow, issue_id)
    if row is None:
        raise LookupError(f"no issue {issue_id}")
    send = session.scalar(select(Send).where(Send.issue_id == issue_id))
    slug = session.scalar(select(NewsletterRow.slug).where(NewsletterRow.id == row.newsletter_id)) or ""
    report = IssueReport(slug, issue_id, row.number, row.subject,
                         f"{row.sent_at:%Y-%m-%d %H:%M} UTC" if row.sent_at else None, send.mailer if send else None)
    issue = load_issue(session, issue_id)
    report.stories = [StoryFigures(n, s.title) for n, s in enumerate(issue.stories if issue else [], start=1)]
    if send is None:
        return report
    counts = _counts(session, issue_id)
    report.audience, report.accepted = send.total, send.sent
    provider_delivered = _sum(counts, "delivered", {"sendgrid", "kept"})[1]
    if send.mailer == "sendgrid" and provider_delivered:
        report.delivered, report.delivered_from = provider_delivered, "sendgrid"
    else:
        report.delivered = send.sent
    report.bounced = _sum(counts, "bounce", {"sendgrid", "kept"}, None)[1]
    report.dropped = _sum(counts, "dropped", {"sendgrid", "kept"}, None)[1]
    report.deferred = _sum(counts, "deferred", {"sendgrid", "kept"}, None)[1]
    report.complained = _sum(counts, "spamreport", {"sendgrid", "kept"}, None)[1]
    clicks_from = _source(counts, "click", "redirect")
    opens_from = _source(counts, "open", "pixel")
    report.clicks, report.clickers = _sum(counts, "click", clicks_from)
    report.machine_clicks = _sum(counts, "click", clicks_from, True)[0]
    report.opens, report.openers = _sum(counts, "open", opens_from)
    report.machine_opens = _sum(counts, "open", opens_from, True)[0]
    sent = _when(row, send)
    report.unsubscribed = _unsubscribed(session, row, sent)
    _per_story_and_day(session, report, sent, clicks_from, opens_from)
    whole = report.delivered or report.accepted
    report.complaint_rate = _rate(report.complained, whole)
    report.bounce_rate = _rate(report.bounced, whole)
    report.click_rate = _rate(report.clickers, whole)
    return report


def _unsubscribed(session: Session, row: IssueRow, since: datetime) -> int:
    until = session.scalar(
        select(func.min(Send.started_at)).join(IssueRow, IssueRow.id == Send.issue_id)
        .where(IssueRow.newsletter_id == row.newsletter_id, Send.started_at > since))
    cond = [Subscription.newsletter_id == row.newsletter_id, Subscription.status == "unsubscribed",
            Subscription.status_changed_at >= since]
    if until is not None:
        cond.append(Subscription.status_changed_at < until)
    return int(session.scalar(select(func.count()).select_from(Subscription).where(and_(*cond))) or 0)


def _per_story_and_day(session: Session, report: IssueReport, sent: datetime, clicks_from: set[str],
                       opens_from: set[str]) -> None:
    """Clicks per story and per day, and "unique" (once per reader, link and day), from the issue's click
    counters grouped by (story, day); opens per day from its open counters; then the kept daily aggregates."""
    by_story = {s.position: s for s in report.stories}
    first = sent.date()
    days = {first + timedelta(days=n): DayFigures(n + 1, (first + timedelta(days=n)).isoformat())
            for n in range(DAYS)}
    unique_elsewhere = 0
    for story, when, events, uniques in session.execute(
        select(TrackCount.story, TrackCount.day, func.sum(TrackCount.events), func.sum(TrackCount.uniques)).where(
            TrackCount.issue_id == report.issue_id, TrackCount.kind == "click", TrackCount.machine.is_(False),
            TrackCount.source.in_(clicks_from)).group_by(TrackCount.story, TrackCount.day)
    ):
        if story in by_story:
            by_story[story].clicks += int(events or 0)
            by_story[story].unique_clicks += int(uniques or 0)
        else:  # a link of no story (none is tracked today): still in the totals
            unique_elsewhere += int(uniques or 0)
        _add_day(days, when, "click", int(events or 0))
    for when, events in session.execute(
        select(TrackCount.day, func.sum(TrackCount.events)).where(
            TrackCount.issue_id == report.issue_id, TrackCount.kind == "open", TrackCount.machine.is_(False),
            TrackCount.source.in_(opens_from), TrackCount.day < first + timedelta(days=DAYS))
        .group_by(TrackCount.day)
    ):
        _add_day(days, when, "open", int(events or 0))
    for story, when, kind, events, uniques in session.execute(
        select(TrackDaily.story, TrackDaily.day, TrackDaily.kind, TrackDaily.events, TrackDaily.uniques).where(
            TrackDaily.issue_id == report.issue_id, TrackDaily.kind.in_(("click", "open")),
            TrackDaily.machine.is_(False))
    ):
        if story == 0:
            _add_day(days, when, kind, int(events or 0))
        elif kind == "click" and story in by_story:
            by_story[story].clicks += int(events or 0)
            by_story[story].unique_clicks += int(uniques or 0)
    report.unique_clicks = sum(s.unique_clicks for s in report.stories) + unique_elsewhere
    report.days = list(days.values())


def _add_day(days: dict[date, DayFigures], when: object, kind: str, events: int) -> None:
    if isinstance(when, datetime):
        when = when.date()
    elif isinstance(when, str):
        when = date.fromisoformat(when[:10])
    if isinstance(when, date) and when in days:
        figures = days[when]
        if kind == "click":
            figures.clicks += events
        else:
            figures.opens += events


def summary_rows(r: IssueReport) -> list[tuple[str, str]]:
    return [("Audience", str(r.audience)), ("Accepted by the mailer", str(r.accepted)),
            (f"Delivered ({'SendGrid events' if r.delivered_from == 'sendgrid' else 'ledger'})", str(r.delivered)),
            ("Bounced", str(r.bounced)), ("Dropped", str(r.dropped)), ("Deferred", str(r.deferred)),
            ("Complained (spam reports)", str(r.complained)), ("Unsubscribed", str(r.unsubscribed)),
            ("Clicks", str(r.clicks)), ("Unique clicks (reader, link, day)", str(r.unique_clicks)),
            ("Unique clickers", str(r.clickers)), ("Click rate", f"{r.click_rate:.2%}"),
            ("Opens", str(r.opens)), ("Unique openers", str(r.openers)),
            ("Machine opens (not counted as readers)", str(r.machine_opens)),
            ("Machine clicks (not counted as readers)", str(r.machine_clicks)),
            ("Complaint rate", f"{r.complaint_rate:.3%}"), ("Bounce rate", f"{r.bounce_rate:.3%}")]


def trend(session: Session, slug: str) -> Trend:
    out = Trend(slug)
    for row, _send in sent_issues(session, slug):
        r = issue_report(session, row.id)
        out.issues.append(TrendRow(row.id, row.number, r.sent_at, r.audience, r.delivered, r.clickers,
                                   r.click_rate, r.unsubscribed))
    nl_id = session.scalar(select(NewsletterRow.id).where(NewsletterRow.slug == slug))
    hold = session.scalar(select(SendGuard.reason).where(SendGuard.newsletter_id == nl_id,
                                                         SendGuard.released_at.is_(None)).limit(1))
    out.hold = hold
    return out
