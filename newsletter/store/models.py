"""Tables. One module so that Alembic sees the whole schema; each stage owns the tables it writes.

collect writes source/item/article, build writes issue/issue_item, deliver writes send/send_batch/delivery,
the web and webhook write subscription status and event. Timestamps are naive UTC throughout.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from newsletter.text import single_line


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}
    if TYPE_CHECKING:
        # SQLAlchemy types `__table__` as any FromClause; every model here maps one plain Table.
        __table__: ClassVar[Table]


# BigInteger ids on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class SingleLine(TypeDecorator[str]):
    """Text that must stay on one line (titles, authors, names, subjects: they end up in mail headers), kept so
    on the way in, whoever writes it (collect's bulk inserts, edits, imports), and on the way out for rows
    stored before. The column in the database is the plain type it decorates."""

    impl = Text
    cache_ok = True

    def __init__(self, length: int | None = None) -> None:
        super().__init__()
        self.impl = String(length) if length else Text()  # type: ignore[assignment]

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else single_line(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else single_line(value)


class Meta(Base):
    """Key/value facts about this installation (e.g. the generated signing key when none is configured)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class NewsletterRow(Base):
    """A newsletter as the database knows it; its settings live in schedules/SLUG.toml."""

    __tablename__ = "newsletter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Source(Base):
    """A feed, fetched once however many newsletters list it."""

    __tablename__ = "source"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    name: Mapped[str | None] = mapped_column(String(300))
    title: Mapped[str | None] = mapped_column(String(500))  # the feed's own title
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_status: Mapped[str | None] = mapped_column(String(40))  # ok, not-modified, error
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_fetched_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_ok_at: Mapped[datetime | None] = mapped_column(DateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Where a 301/308 said the feed now lives: polled instead of `url` (which stays the schedule file's key).
    moved_to: Mapped[str | None] = mapped_column(String(2000))
    # When the feed answered 410 Gone: no longer polled until an operator runs `newsletter sources enable URL`.
    gone_at: Mapped[datetime | None] = mapped_column(DateTime)


class Item(Base):
    """One entry of one feed. `content_hash` catches the same text under a new guid."""

    __tablename__ = "item"
    __table_args__ = (
        UniqueConstraint("source_id", "guid", name="uq_item_source_guid"),
        Index("ix_item_source_link", "source_id", "link"),
        Index("ix_item_source_hash", "source_id", "content_hash"),
        Index("ix_item_published", "published_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id", ondelete="CASCADE"))
    guid: Mapped[str] = mapped_column(String(2000))
    link: Mapped[str | None] = mapped_column(String(2000))
    title: Mapped[str] = mapped_column(SingleLine(), default="")
    author: Mapped[str | None] = mapped_column(SingleLine(500))
    published_at: Mapped[datetime | None] = mapped_column(DateTime)
    collected_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    content_html: Mapped[str] = mapped_column(Text, default="")  # sanitized with nh3
    content_text: Mapped[str] = mapped_column(Text, default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    image_url: Mapped[str | None] = mapped_column(String(2000))
    language: Mapped[str | None] = mapped_column(String(20))

    source: Mapped[Source] = relationship()


class Article(Base):
    """An article page fetched and extracted once, keyed by its URL (editorial core)."""

    __tablename__ = "article"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    status: Mapped[str] = mapped_column(String(20))  # ok, failed, not-article
    error: Mapped[str | None] = mapped_column(Text)
    final_url: Mapped[str | None] = mapped_column(String(2000))
    title: Mapped[str | None] = mapped_column(SingleLine())
    byline: Mapped[str | None] = mapped_column(SingleLine(500))
    site_name: Mapped[str | None] = mapped_column(String(300))
    published_at: Mapped[datetime | None] = mapped_column(DateTime)
    image_url: Mapped[str | None] = mapped_column(String(2000))
    language: Mapped[str | None] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text, default="")
    fetched_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # How the editorial core split `text` into sentences (newsletter.text.sentence_splits), kept so that a build
    # in a new process does not split it again; NULL until a build has read the article.
    sentences: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class IssueRow(Base):
    """One issue of one newsletter. (newsletter, period) is unique so a schedule can never build two."""

    __tablename__ = "issue"
    __table_args__ = (
        UniqueConstraint("newsletter_id", "number", name="uq_issue_number"),
        UniqueConstraint("newsletter_id", "period", name="uq_issue_period"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    period: Mapped[str | None] = mapped_column(String(40))  # e.g. 2026-W48; NULL for hand-built issues
    subject: Mapped[str] = mapped_column(SingleLine())
    preheader: Mapped[str] = mapped_column(Text, default="")
    intro: Mapped[str | None] = mapped_column(Text)  # editor's note, Markdown
    # draft -> approved -> sending -> sent; held stops an automatic send; failed keeps the state for resume
    status: Mapped[str] = mapped_column(String(20), default="draft")
    window_start: Mapped[datetime | None] = mapped_column(DateTime)
    window_end: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime)
    approved_by: Mapped[str | None] = mapped_column(String(320))
    approved_hash: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    html: Mapped[str | None] = mapped_column(Text)  # rendered once per issue, with per-recipient tokens
    text: Mapped[str | None] = mapped_column(Text)
    rendered_hash: Mapped[str | None] = mapped_column(String(64))  # content hash the render was made from

    newsletter: Mapped[NewsletterRow] = relationship()
    items: Mapped[list[IssueItem]] = relationship(
        back_populates="issue", order_by="IssueItem.position", cascade="all, delete-orphan"
    )


class IssueRender(Base):
    """The render of an issue for one variant of its readers (sections off, text only): the issue row keeps the
    default one; this keeps the others, each redone only when the issue's content or templates change."""

    __tablename__ = "issue_render"
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"), primary_key=True)
    variant: Mapped[str] = mapped_column(Text, primary_key=True)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    rendered_hash: Mapped[str] = mapped_column(String(64))


class IssueItem(Base):
    """A story in an issue, with what build made of it (editors may change all of it)."""

    __tablename__ = "issue_item"
    __table_args__ = (UniqueConstraint("issue_id", "item_id", name="uq_issue_item"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    included: Mapped[bool] = mapped_column(Boolean, default=True)
    title: Mapped[str] = mapped_column(SingleLine())
    url: Mapped[str] = mapped_column(Text)
    source_name: Mapped[str] = mapped_column(String(300))
    author: Mapped[str | None] = mapped_column(SingleLine(500))
    published_at: Mapped[datetime | None] = mapped_column(DateTime)
    image_url: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    summary_method: Mapped[str] = mapped_column(String(40), default="feed")
    quotes: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{"text", "speaker"}]
    related: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{"title", "url", "source", "blurb"}]
    also_covered_by: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{"title", "url", "source"}]
    notes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # e.g. why enrichment fell back
    # A sent story's summary corrected in the archive by an editor (migration 0006_feedback): when, by whom,
    # and the summary that went out in the email, kept.
    corrected_at: Mapped[datetime | None] = mapped_column(DateTime)
    corrected_by: Mapped[str | None] = mapped_column(String(320))
    original_summary: Mapped[str | None] = mapped_column(Text)

    issue: Mapped[IssueRow] = relationship(back_populates="items")
    item: Mapped[Item] = relationship()


class Subscriber(Base):
    """A person, by address; their per-newsletter state is in Subscription."""

    __tablename__ = "subscriber"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalized: domain lowercased
    name: Mapped[str | None] = mapped_column(SingleLine(300))
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Subscription(Base):
    __tablename__ = "subscription"
    __table_args__ = (
        UniqueConstraint("newsletter_id", "subscriber_id", name="uq_subscription"),
        Index("ix_subscription_audience", "newsletter_id", "status", "subscriber_id"),
        # Keyset pages of a send's audience (migration 0002_delivery).
        Index("ix_subscription_send_order", "newsletter_id", "status", "id"),
        # Keyset pages of one variant of a send's audience (migration 0006_preferences).
        Index("ix_subscription_variant_order", "newsletter_id", "status", "send_variant", "id"),
        # ... and of one time-zone group of it (migration 0006_tz_groups): the page reads that group's rows only.
        Index("ix_subscription_zone_order", "newsletter_id", "status", "send_variant", "send_timezone", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id", ondelete="CASCADE"))
    # pending, active, unsubscribed, bounced, complained
    status: Mapped[str] = mapped_column(String(20), default="active")
    origin: Mapped[str | None] = mapped_column(String(40))  # cli, import, web, api
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime)
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # In the confirmation link; set when one is sent, cleared on confirming or leaving (migration 0003_webhard).
    confirm_nonce: Mapped[str | None] = mapped_column(String(32))
    # The reader's choices (migration 0006_preferences; newsletter.subscribers.preferences owns them). NULL is
    # the newsletter's default: every section, its first cadence, its own time zone, HTML, not paused.
    sections_off: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    frequency: Mapped[str | None] = mapped_column(String(40))
    timezone: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[str | None] = mapped_column(String(10))  # html (an HTML and a text part) or text
    paused_until: Mapped[datetime | None] = mapped_column(DateTime)
    preferences_changed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The render variant the choices make ('' = the default: HTML, every section), kept by every change, and
    # the copy of it a send walks, taken when a send starts (newsletter.deliver.ledger.start_send).
    choice_key: Mapped[str] = mapped_column(Text, default="", server_default="")
    send_variant: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The copy of `timezone` a send groups readers by, taken with send_variant (migration 0006_tz_groups).
    send_timezone: Mapped[str | None] = mapped_column(String(64))

    subscriber: Mapped[Subscriber] = relationship()


class Welcome(Base):
    """The welcome email of one subscription: claimed (the row, committed) before the mailer is called, then
    sent, unknown (no answer: never sent again) or failed (refused: the reason kept). Once per subscription."""

    __tablename__ = "welcome"
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # claimed, sent, unknown, failed
    issue_id: Mapped[int | None] = mapped_column(Integer)  # the latest sent issue it linked
    claimed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    message_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)


class PreferenceChange(Base):
    """One change of one reader's choices, with its time and where it came from (web, cli, api, import)."""

    __tablename__ = "preference_change"
    __table_args__ = (Index("ix_preference_change_subscription", "subscription_id", "changed_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id", ondelete="CASCADE"))
    field: Mapped[str] = mapped_column(String(40))
    old: Mapped[Any] = mapped_column(JSON, nullable=True)
    new: Mapped[Any] = mapped_column(JSON, nullable=True)
    origin: Mapped[str | None] = mapped_column(String(40))
    changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Suppression(Base):
    """Addresses that must never be mailed again (bounce, complaint, unsubscribe), surviving re-imports.

    newsletter_id NULL means every newsletter (hard bounces, spam complaints).
    """

    __tablename__ = "suppression"
    __table_args__ = (UniqueConstraint("email", "newsletter_id", name="uq_suppression"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    newsletter_id: Mapped[int | None] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Send(Base):
    """The delivery of one issue to its audience: at most one per issue."""

    __tablename__ = "send"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"), unique=True)
    mailer: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="running")  # running, done, failed
    # The audience is frozen at the start: subscriptions with id <= max_subscription_id, walked in id order.
    max_subscription_id: Mapped[int] = mapped_column(BigInteger, default=0)
    batch_size: Mapped[int] = mapped_column(Integer, default=1000)
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The render variants the audience held when the send started, walked in this order (NULL: one, everyone).
    variants: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    # Whose choice of cadence it goes to (newsletter.deliver.audience.frequency_filter; NULL: everyone).
    frequency: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Its groups by the readers' time zones, in time order: [{"at", "zones", "home"}] (NULL: one group, now).
    groups: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    # Whose subscriptions it walks (a cadence's: its parent newsletter's); NULL: the issue's newsletter.
    audience_id: Mapped[int | None] = mapped_column(Integer)


class SendBatch(Base):
    """One batch of recipients: claimed before the provider call, marked sent after it."""

    __tablename__ = "send_batch"
    __table_args__ = (UniqueConstraint("send_id", "number", name="uq_send_batch"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("send.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    first_subscription_id: Mapped[int] = mapped_column(BigInteger)
    last_subscription_id: Mapped[int] = mapped_column(BigInteger)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    # claimed, sending, sent, retry, unknown, failed, skipped (newsletter.deliver.ledger)
    status: Mapped[str] = mapped_column(String(20), default="claimed")
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    # When a run reported it held to the operator: `--unknown resend|skip` applies to listed batches only.
    listed_at: Mapped[datetime | None] = mapped_column(DateTime)
    decision: Mapped[str | None] = mapped_column(String(20))  # the operator's: resend, skip
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Whose rows it holds: subscriptions of this send_variant only (NULL: everyone in its id range).
    variant: Mapped[str | None] = mapped_column(Text)
    # Which of the send's time-zone groups (send.groups) it holds (NULL: everyone).
    send_group: Mapped[int | None] = mapped_column(Integer)


class SendHold(Base):
    """A recipient a send could not settle: held (outcome unknown), skipped by the operator, or resent.

    A skipped person has no Delivery row: the ledger never says they got an issue they were not sent.
    """

    __tablename__ = "send_hold"
    __table_args__ = (UniqueConstraint("send_id", "subscriber_id", name="uq_send_hold"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("send.id", ondelete="CASCADE"))
    # No index of its own (migration 0009): read by (send_id, subscriber_id), written a million times a send.
    batch_id: Mapped[int] = mapped_column(ForeignKey("send_batch.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20))  # unknown, skipped, resent
    reason: Mapped[str | None] = mapped_column(Text)
    held_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)


class SendGridHold(Base):
    """One SendGrid request sent under its own batch_id with a send_at ahead (hold-and-cancel,
    newsletter.deliver.cancels): scheduled, then cancelled if its outcome went unknown, then released."""

    __tablename__ = "sendgrid_hold"
    __table_args__ = (Index("ix_sendgrid_hold_batch", "batch_id", "attempt"),
                      Index("ix_sendgrid_hold_status", "status", "send_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("send.id", ondelete="CASCADE"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("send_batch.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    provider_batch_id: Mapped[str] = mapped_column(String(100), unique=True)
    send_at: Mapped[datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(20))  # scheduled, cancelled, released
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime)


class Delivery(Base):
    """Who got which issue: one row per recipient of a sent batch."""

    __tablename__ = "delivery"
    __table_args__ = (UniqueConstraint("send_id", "subscriber_id", name="uq_delivery"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign keys (migration 0010: their checks were most of a row's insert) and no index on batch_id
    # (0009): read by (send_id, subscriber_id), written a million times a send, only by the send's ledger.
    send_id: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[int] = mapped_column(BigId)
    subscriber_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Event(Base):
    """Provider events (bounce, spamreport, unsubscribe...), deduplicated by the provider's event id."""

    __tablename__ = "event"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    provider_event_id: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    send_id: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Indexed for retention (migration 0006_events): rows past NEWSLETTER_EVENT_RETENTION_DAYS are deleted.
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TrackEvent(Base):
    """One thing that happened to a sent issue (migration 0006_events): a click through /r/, an open of the
    pixel, or a provider event (delivered, bounce, spamreport...). Kept `NEWSLETTER_EVENT_RETENTION_DAYS`, then
    folded into TrackDaily (newsletter.report.retention). Readers appear only as `recipient`, a keyed hash of
    their subscriber id (newsletter.render.tracking): never an address. `machine`: a proxy, prefetch or scanner,
    never counted as a reader. `dedupe`: the provider's event id, so an event delivered twice counts once."""

    __tablename__ = "track_event"
    __table_args__ = (Index("ix_track_event_issue", "issue_id", "kind", "occurred_at"),
                      Index("ix_track_event_reader", "issue_id", "recipient", "kind"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # click, open, delivered, bounce, dropped, deferred, ...
    source: Mapped[str] = mapped_column(String(20))  # redirect, pixel, sendgrid
    machine: Mapped[bool] = mapped_column(Boolean, default=False)
    agent: Mapped[str] = mapped_column(String(20), default="unknown")  # newsletter.report.agents
    story: Mapped[int | None] = mapped_column(Integer)  # the story's position in the issue, from 1
    link: Mapped[str | None] = mapped_column(Text)
    recipient: Mapped[str | None] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    dedupe: Mapped[str | None] = mapped_column(String(200), unique=True)
    # Set when the event is written (newsletter.report.record.mark_firsts), so the report counts uniques with a
    # SUM instead of a COUNT(DISTINCT) over every event: the reader's first of this kind and source in the issue,
    # and their first that UTC day (for clicks: of that link). Never set for machines or unknown readers.
    first_issue: Mapped[bool] = mapped_column(Boolean, default=False)
    first_day: Mapped[bool] = mapped_column(Boolean, default=False)


class TrackDaily(Base):
    """Raw events folded per (issue, day, kind, story, machine) once past their retention; story 0 is the whole
    issue. `uniques`: distinct (reader, link) that day for clicks, distinct readers for the rest."""

    __tablename__ = "track_daily"
    __table_args__ = (UniqueConstraint("issue_id", "day", "kind", "story", "machine", name="uq_track_daily"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(20))
    story: Mapped[int] = mapped_column(Integer, default=0)
    machine: Mapped[bool] = mapped_column(Boolean, default=False)
    events: Mapped[int] = mapped_column(Integer, default=0)
    uniques: Mapped[int] = mapped_column(Integer, default=0)
    recipients: Mapped[int] = mapped_column(Integer, default=0)


class TrackCount(Base):
    """The report's counters (migration 0007_report_counts): per (issue, kind, source, machine, story, UTC day)
    the raw events' count and how many were a reader's first of the issue (`readers`) or of that day (`uniques`,
    for clicks: of that link), from TrackEvent's first-of flags. Kept in step with track_event in the same
    transaction (newsletter.report.record.mark_firsts adds to it, retention.prune and retention.forget take
    away), so the report reads a few rows per issue instead of every event. story 0: no story."""

    __tablename__ = "track_count"
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    source: Mapped[str] = mapped_column(String(20), primary_key=True)
    machine: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    story: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger, default=0)
    uniques: Mapped[int] = mapped_column(BigInteger, default=0)
    readers: Mapped[int] = mapped_column(BigInteger, default=0)


class SendGuard(Base):
    """A newsletter's scheduled sends held because an issue's complaint or bounce rate passed its limit
    (newsletter.report.guard), until an editor releases it."""

    __tablename__ = "send_guard"
    __table_args__ = (Index("ix_send_guard_newsletter", "newsletter_id", "released_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"))
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    held_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(DateTime)
    released_by: Mapped[str | None] = mapped_column(String(320))


class Editor(Base):
    __tablename__ = "editor"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    api_token_hash: Mapped[str | None] = mapped_column(String(128))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # In every sign-in cookie; sign-out and a new password bump it, ending older cookies (0003_webhard).
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Lease(Base):
    """A named lease held by one process (e.g. the one `newsletter run`), renewed while it lives."""

    __tablename__ = "lease"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class ScheduleRun(Base):
    """One scheduled step (collect, build, send) of one newsletter, for `schedule list` and the logs."""

    __tablename__ = "schedule_run"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    newsletter_slug: Mapped[str] = mapped_column(String(64), index=True)
    job: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)


class Reader(Base):
    """Someone who signed in by email link to comment on story pages (migration 0005_conversation).

    Separate from Subscriber: unsubscribing leaves a reader and their comments alone; `newsletter readers
    forget` removes both. `session_generation` is in the reader cookie; signing out bumps it. Blocks are per
    newsletter (ReaderBlock); the table keeps an unused `blocked_at` column from before them (migration
    0006_feedback says why it was not dropped)."""

    __tablename__ = "reader"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalized, lowercased
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ReaderTokenUse(Base):
    """A sign-in link that has been used: the SHA-256 of its nonce, so a link works once."""

    __tablename__ = "reader_token_use"
    nonce_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)  # after this the row may go: the link is dead anyway


class Comment(Base):
    """A reader's comment on a story of a sent issue; threads are one level deep (parent is a top comment).

    status: visible, pending (premoderation), hidden (by an editor), deleted (by its reader or an editor)."""

    __tablename__ = "comment"
    __table_args__ = (Index("ix_comment_story", "issue_item_id", "status", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    issue_item_id: Mapped[int] = mapped_column(ForeignKey("issue_item.id", ondelete="CASCADE"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("reader.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("comment.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="visible")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    edited_at: Mapped[datetime | None] = mapped_column(DateTime)
    hidden_at: Mapped[datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Moved on by every change (post, edit, moderation, deletion): the version the kept public render is keyed by.
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    reader: Mapped[Reader] = relationship()


class ReaderBlock(Base):
    """A reader an editor blocked on one newsletter: they may not post or send feedback there (elsewhere they
    may). Migration 0006_feedback."""

    __tablename__ = "reader_block"
    reader_id: Mapped[int] = mapped_column(ForeignKey("reader.id", ondelete="CASCADE"), primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"), primary_key=True)
    blocked_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    blocked_by: Mapped[str | None] = mapped_column(String(320))


class StoryFeedback(Base):
    """A reader's "this summary is wrong / misleading" on a story of a sent issue (migration 0006_feedback).

    From a signed-in reader (reader_id) or from the signed link in the email (subscriber_id); one per person
    per story (filing again replaces the reason). status: open, resolved (the editor corrected the summary),
    dismissed."""

    __tablename__ = "story_feedback"
    __table_args__ = (Index("ix_story_feedback_story", "issue_item_id", "status"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    issue_item_id: Mapped[int] = mapped_column(ForeignKey("issue_item.id", ondelete="CASCADE"))
    reader_id: Mapped[int | None] = mapped_column(ForeignKey("reader.id", ondelete="SET NULL"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscriber.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))  # wrong | misleading
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[str] = mapped_column(String(20), default="open", server_default="open")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime)
