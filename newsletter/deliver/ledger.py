"""The send ledger: one issue sent to its audience exactly once, in batches whose every state is a commit.

The ledger
----------
The audience is frozen when the send starts (active subscriptions up to the highest id then, minus suppressed
addresses) and walked in id order, in keyset pages. Each batch moves through these states, each a commit:

    claimed  -- rows chosen, provider not called yet              (resume: send it; nobody has it)
    sending  -- attempt N is about to call the provider           (resume: outcome unknown, see below)
    sent     -- provider accepted; one delivery row per recipient, written in the same transaction
    retry    -- the provider refused it for now (429, 5xx, cannot connect): nothing was accepted
    unknown  -- the request went out and no answer came back (connection cut, timeout, crash, kill -9)
    failed   -- the provider refused it for good (400, 401, 403): the send stops with the reason
    skipped  -- the operator decided `--unknown skip` for it: its unsettled recipients were not sent again, are
                named in send_hold as `skipped` and have no delivery row; the rest of it has deliveries

(Scale mode adds `pending` before `claimed`: every batch planned up front, see newsletter.scale.ledger.)

Nothing is re-sent blindly. `claimed`, `retry` and `failed` batches were certainly not accepted, so they are
sent (again). A `sending` batch found on resume, and an `unknown` one, may or may not have been accepted.

The policy for unknown outcomes (SendGrid has no idempotency key)
------------------------------------------------------------------
1. Ask the provider. Every request carries custom_args {"send": id, "batch": "SEND-NUMBER"}; the SendGrid
   backend looks those up in the Email Activity API (`Mailer.accepted`). Addresses it reports are recorded as
   delivered and only the rest of the batch is sent again. Because the Activity feed lags, an answer is only
   trusted once the last attempt is older than the mailer's `activity_settle_seconds` (the sender waits).
2. A backend whose delivery is idempotent (the outbox overwrites one file per address) simply sends again.
3. Otherwise (SMTP, or SendGrid without the Activity add-on) the batch is HELD: the rest of the send goes on,
   the send ends as `held` and says which batches and how many people, and the operator decides with
   `newsletter send SLUG --unknown resend` (risk: a second copy for those few) or `--unknown skip` (risk: they
   miss this issue). We never pick a side silently: "a duplicate or a gap" is the operator's call.

Who exactly is held: over SMTP, only the recipient whose message was in flight when the connection died (named
in send_hold, status `unknown`); the rest of the batch is sent. When the whole request's answer was lost (SendGrid)
or the process died mid-call, everyone of the batch without a delivery row.

The operator's decision applies to the batches they were shown, by id, and to nothing else: a batch is `listed`
(send_batch.listed_at) when the next run starts after a run that ended `held` (`start_send`); `--unknown
resend|skip` is recorded on each listed batch (send_batch.decision, `Ledger.decide`) before the run delivers
anything, and a batch that goes unknown during that run is held again and reported, never decided by it. A skip
writes no delivery row: the skipped people are named in send_hold as `skipped`.

Only one process runs a given send at a time (a lease in the database, see newsletter.deliver.lease): a second
one would otherwise take the first one's in-flight batches for interrupted ones.

Temporary errors are retried with exponential backoff and full jitter, never sooner than the provider's
Retry-After / X-RateLimit-Reset; after `max_attempts` the send stops with its state kept (run it again to go on).
Permanent errors stop the send at once with the provider's message. Ctrl-C stops after the batch in flight.

Who does what
-------------
This module owns the rows: the frozen audience (`start_send`, `audience_query`), and for one send (`Ledger`) the
batches and every transition between the states above, with the deliveries they record. It never calls a
provider. Around it, the public batch API that `newsletter send`, `newsletter run` and the scale-mode workers
all drive: plan (`start_send`; scale mode also plans every batch, `newsletter.scale.ledger.plan_batches`),
claim (`Ledger.claim_next` walks the audience on one machine; `newsletter.scale.ledger.claim` takes a planned
batch under a row lock), deliver one batch and settle an unknown outcome (`newsletter.deliver.engine`), finish
(`Ledger.finish`; `newsletter.scale.ledger.finish_if_done`). The driver of `newsletter send` is
newsletter.deliver.send.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    bindparam,
    exists,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.deliver.errors import BatchTaken
from newsletter.store import driver_sql
from newsletter.store.db import session_scope
from newsletter.store.models import (
    Delivery,
    Send,
    SendBatch,
    SendHold,
    Subscriber,
    Subscription,
    Suppression,
    utcnow,
)
from newsletter.subscribers.status import suppress
from newsletter.text import single_line

# One recipient as the audience query gives it: (subscription id, subscriber id, email, name).
Row = tuple[int, int, str, str | None]

FINISHED = ("sent", "skipped")  # batch states nothing more is done with


@dataclass
class Batch:
    """A batch as the process working on it knows it; the row in send_batch is the truth, this follows it."""

    id: int
    number: int
    first: int  # subscription ids, inclusive
    last: int
    status: str
    attempts: int
    claimed_at: float  # epoch of the last claim or attempt: settling an unknown outcome waits from it
    error: str | None
    rows: list[Row] | None = None  # its recipients when just claimed (saves reading them again)
    variant: str | None = None  # whose rows it holds: that send_variant only; None: everyone in its id range
    group: int | None = None  # and of that time-zone group of the send only (send.groups); None: every zone


def audience_query(newsletter_id: int, after_id: int, max_id: int, *, variant: str | None = None,
                   at: datetime | None = None,
                   frequency: Mapping[str, Any] | None = None,
                   group: Mapping[str, Any] | None = None):  # noqa: ANN201 - a Select of Row
    """Active subscriptions in id order, without suppressed addresses (suppression outlives re-imports) and
    without readers paused at `at` (the send's start; default now). `variant`: only that send_variant's rows.
    `frequency`: only the readers of one cadence, {"only": name}, or of the default one, {"others": [names]}
    (everyone who chose none of the others, or a cadence no longer offered). `group`: only the readers of one
    time-zone group of a send (newsletter.deliver.zones; its `home` group also holds those without a zone)."""
    suppressed = select(Suppression.id).where(
        Suppression.email == Subscriber.email,
        (Suppression.newsletter_id.is_(None)) | (Suppression.newsletter_id == newsletter_id),
    )
    return (
        select(Subscription.id, Subscriber.id, Subscriber.email, Subscriber.name)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(*subscription_filters(newsletter_id, after_id, max_id, variant=variant, at=at, frequency=frequency,
                                     group=group), ~suppressed.exists())
        .order_by(Subscription.id)
    )


def subscription_filters(newsletter_id: int, after_id: int, max_id: int, *, variant: str | None = None,
                         at: datetime | None = None, frequency: Mapping[str, Any] | None = None,
                         group: Mapping[str, Any] | None = None) -> list[Any]:
    """The conditions of `audience_query` that the subscription row alone decides (all but suppression, which is
    by address): a walk over them needs no join, and holds the audience and at most the suppressed besides."""
    filters: list[Any] = [
        Subscription.newsletter_id == newsletter_id,
        Subscription.status == "active",
        Subscription.id > after_id,
        Subscription.id <= max_id,
        Subscription.paused_until.is_(None) | (Subscription.paused_until <= (utcnow() if at is None else at)),
    ]
    if frequency and frequency.get("only"):
        filters.append(Subscription.frequency == str(frequency["only"]))
    elif frequency and frequency.get("others"):
        others = [str(n) for n in frequency["others"]]
        filters.append(Subscription.frequency.is_(None) | ~one_of(Subscription.frequency, others))
    if group is not None:
        in_zone = one_of(Subscription.send_timezone, [str(z) for z in group.get("zones") or []])
        filters.append(in_zone | Subscription.send_timezone.is_(None) if group.get("home") else in_zone)
    if variant is not None:
        filters.append(Subscription.send_variant == variant)
    return filters


def one_of(column: Any, values: Sequence[str]) -> Any:
    """`column IN (values)` as plain comparisons: an expanding IN cannot be compiled once and run on the
    driver's cursor (audience_page, the scale claims: newsletter.store.driver_sql)."""
    return or_(*(column == v for v in values)) if values else false()


# The audience page statement, one per shape (see audience_page), compiled once per dialect by driver_sql.
_PAGES: dict[tuple[Any, ...], Any] = {}


def audience_page(connection: Connection, newsletter_id: int, after_id: int, max_id: int, limit: int, *,
                  variant: str | None = None, at: datetime | None = None,
                  frequency: Mapping[str, Any] | None = None, group: Mapping[str, Any] | None = None) -> list[Row]:
    """`audience_query(...)` with the same filters, limited to `limit` rows, read from the DBAPI cursor.

    The same SQL, compiled once per dialect and shape (a variant or none, the cadence and time-zone filters,
    which are few per process) and run on the driver's cursor: a send reads a million rows, and SQLAlchemy's
    result rows cost twice the query itself. Names come out on one line as the SingleLine column type would
    give them."""
    key = (variant is not None, _frozen(frequency), _frozen(group))
    statement = _PAGES.get(key)
    if statement is None:
        if len(_PAGES) > 256:  # a long-lived scheduler meets new zone groups: keep the cache bounded
            _PAGES.clear()
        # The cadence and zone lists are part of the key: their values stay bound in the statement.
        statement = _PAGES[key] = audience_query(
            bindparam("nl", type_=Integer), bindparam("after", type_=BigInteger),  # type: ignore[arg-type]
            bindparam("max", type_=BigInteger),  # type: ignore[arg-type]
            variant=bindparam("variant", type_=String) if variant is not None else None,  # type: ignore[arg-type]
            at=bindparam("at", type_=DateTime),  # type: ignore[arg-type]
            frequency=frequency, group=group,
        ).limit(bindparam("limit", type_=Integer))
    values: dict[str, Any] = {"nl": newsletter_id, "after": after_id, "max": max_id, "limit": limit,
                              "at": utcnow() if at is None else at}
    if variant is not None:
        values["variant"] = variant
    fetched = driver_sql.rows(connection, statement, values)  # plain tuples, without SQLAlchemy's row objects
    return [(sub, sid, email, None if name is None else single_line(name)) for sub, sid, email, name in fetched]


def _frozen(value: Mapping[str, Any] | None) -> Any:
    if value is None:
        return None
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in value.items()))


def batch_key(send_id: int, number: int) -> str:
    """The batch's name in the provider's custom_args, by which its activity log is asked what it accepted."""
    return f"{send_id}-{number}"


def epoch(value: datetime | None) -> float:
    """A naive UTC timestamp from the database as seconds since the epoch (0 when there is none)."""
    return value.replace(tzinfo=UTC).timestamp() if value else 0.0


def start_send(engine: Engine, issue_id: int, newsletter_id: int, mailer_name: str, batch_size: int,
               frequency: Mapping[str, Any] | None = None, due: datetime | None = None,
               before: datetime | None = None) -> int:
    """The send of this issue: created (audience frozen) on first call, the same one on every resume.

    Two `newsletter send` started together both find no send and both insert one; the issue's unique key lets
    one win, and the other takes the winner's send (whose lease then tells it "already running").
    `due` (aware, in the newsletter's zone): the scheduled instant; its readers are then grouped by their own time
    zones, each group going out at that wall-clock time where they are, before `before` (the next send; see
    newsletter.deliver.zones).
    """
    try:
        return _start_send(engine, issue_id, newsletter_id, mailer_name, batch_size, frequency, due, before)
    except IntegrityError:
        with session_scope(engine) as session:
            won = session.scalar(select(Send.id).where(Send.issue_id == issue_id))
        if won is None:
            raise
        return won


def freeze_variants(session: Session, newsletter_id: int) -> None:
    """Take each reader's current choices (`choice_key`) as the variant sends walk (`send_variant`), unless a
    send to these readers is still open (any cadence's, held or stopped ones too): its readers must stay in the
    group it walks them in, or one could get a second copy. Their changes then wait for the next send that
    starts with none open."""
    from newsletter.store.models import IssueRow

    open_send = session.scalar(
        select(Send.id).join(IssueRow, IssueRow.id == Send.issue_id)
        .where(Send.status != "done",
               (Send.audience_id == newsletter_id)
               | (Send.audience_id.is_(None) & (IssueRow.newsletter_id == newsletter_id))).limit(1))
    if open_send is None:
        moved = (Subscription.newsletter_id == newsletter_id) & (
            (Subscription.send_variant != Subscription.choice_key)
            | Subscription.send_timezone.is_distinct_from(Subscription.timezone))
        # Looked for first: an UPDATE that changes nothing still takes SQLite's write lock.
        if session.scalar(select(Subscription.id).where(moved).limit(1)) is not None:
            session.execute(update(Subscription).where(moved).values(send_variant=Subscription.choice_key,
                                                                     send_timezone=Subscription.timezone))


def audience_variants(session: Session, newsletter_id: int, max_id: int, at: datetime,
                      frequency: Mapping[str, Any] | None = None) -> tuple[int, list[str]]:
    """How many readers the audience holds, and its variants, the default ('') first: one render and one walk
    of the audience each. One pass over the audience for both (a million readers: its count and a DISTINCT over
    the same rows were 1.3 s of a send's start on PostgreSQL, one grouped pass is a quarter of that)."""
    audience = (audience_query(newsletter_id, 0, max_id, at=at, frequency=frequency)
                .add_columns(Subscription.send_variant.label("variant")).order_by(None).subquery())
    counts = session.execute(select(audience.c.variant, func.count()).group_by(audience.c.variant)).all()
    return sum(n for _, n in counts), sorted({key for key, _ in counts} | {""})


def send_zones(session: Session, newsletter_id: int, max_id: int, at: datetime,
               frequency: Mapping[str, Any] | None = None) -> list[str | None]:
    """The time zones (as frozen for sends) the audience holds."""
    audience = audience_query(newsletter_id, 0, max_id, at=at, frequency=frequency).subquery()
    return list(session.scalars(select(Subscription.send_timezone).distinct().where(
        Subscription.id.in_(select(audience.c[0])))).all())


def _start_send(engine: Engine, issue_id: int, newsletter_id: int, mailer_name: str, batch_size: int,
                frequency: Mapping[str, Any] | None = None, due: datetime | None = None,
                before: datetime | None = None) -> int:
    from newsletter.deliver.zones import plan_groups

    with session_scope(engine) as session:
        send = session.scalar(select(Send).where(Send.issue_id == issue_id))
        if send is None:
            now = utcnow()
            freeze_variants(session, newsletter_id)
            max_id = session.scalar(
                select(func.max(Subscription.id)).where(Subscription.newsletter_id == newsletter_id)
            ) or 0
            total, variants = audience_variants(session, newsletter_id, max_id, now, frequency)
            send = Send(issue_id=issue_id, mailer=mailer_name, status="running", max_subscription_id=max_id,
                        batch_size=batch_size, total=total, sent=0, started_at=now, variants=variants,
                        frequency=dict(frequency) if frequency else None, audience_id=newsletter_id,
                        groups=(plan_groups(send_zones(session, newsletter_id, max_id, now, frequency), due, before)
                                if due is not None else None))
            session.add(send)
            session.flush()
        elif send.status != "done":
            if send.status == "held":
                # The run that ended held reported these batches to the operator: they are the ones an
                # `--unknown resend|skip` may decide, and no other (see "The operator's decision" above).
                session.execute(update(SendBatch).where(
                    SendBatch.send_id == send.id, SendBatch.status == "unknown", SendBatch.listed_at.is_(None),
                ).values(listed_at=utcnow()))
            send.status = "running"
        return send.id


DELIVERY_COLUMNS = "(send_id, batch_id, subscriber_id, email, message_id, sent_at)"


def insert_deliveries(session: Session, send_id: int, batch_id: int, delivered: Sequence[Row], sent_at: Any,
                      message_ids: Mapping[str, str] | None = None) -> None:
    """A delivery row for each of `delivered` (audience rows), in the session's transaction, as fast as the
    database takes them; `message_ids` by address, where the provider gave one.

    PostgreSQL: COPY (measured 6.9 ms per 1000 rows against 23.7 ms for executemany, the largest database cost
    of a send). SQLite: one INSERT of many rows (VALUES (...), (...), ...), as many as the connection's limit
    on bound values allows: half the time of the driver's executemany (1.3 against 2.6 microseconds a row), which
    binds, steps and hands the GIL back and forth once per row. Without message ids the NULL is written in the
    statement: the driver looks for an adapter for every None it binds (0.5 microseconds each).
    """
    connection = session.connection()
    raw = connection.connection.driver_connection
    if raw is None:
        raise RuntimeError("the database connection was closed while deliveries were being recorded")
    ids = message_ids or {}
    get = ids.get
    if connection.dialect.name == "postgresql":
        with raw.cursor() as cursor, cursor.copy(f"COPY delivery {DELIVERY_COLUMNS} FROM STDIN") as copy:
            for r in delivered:
                copy.write_row((send_id, batch_id, r[1], r[2], get(r[2]), sent_at))
        return
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    if connection.dialect.name != "sqlite":
        connection.exec_driver_sql(f"INSERT INTO delivery {DELIVERY_COLUMNS} VALUES ({', '.join([mark] * 6)})",
                                   [(send_id, batch_id, r[1], r[2], get(r[2]), sent_at) for r in delivered])
        return
    getlimit = getattr(raw, "getlimit", None)  # sqlite3's Connection (Python 3.11+); 999: SQLite's oldest limit
    per = max(1, (getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else 999) // 6)
    for start in range(0, len(delivered), per):
        chunk = delivered[start:start + per]
        if ids:
            values = [v for r in chunk for v in (send_id, batch_id, r[1], r[2], get(r[2]), sent_at)]
        else:
            values = [v for r in chunk for v in (send_id, batch_id, r[1], r[2], sent_at)]
        connection.exec_driver_sql(_many_rows(len(chunk), mark, bool(ids)), tuple(values))


@functools.lru_cache(maxsize=16)
def _many_rows(count: int, mark: str, with_ids: bool) -> str:
    """INSERT INTO delivery of `count` rows in one statement (the driver keeps it prepared: same text)."""
    row = f"({mark}, {mark}, {mark}, {mark}, {mark if with_ids else 'NULL'}, {mark})"
    return f"INSERT INTO delivery {DELIVERY_COLUMNS} VALUES {', '.join([row] * count)}"


# The statements run once or twice per batch, built once and run on the driver (newsletter.store.driver_sql).
_LAST_NUMBER = select(func.max(SendBatch.number)).where(SendBatch.send_id == bindparam("send"))
_LAST_AFTER = {
    (by_variant, by_group): select(SendBatch.last_subscription_id).where(
        SendBatch.send_id == bindparam("send"),
        SendBatch.variant == bindparam("variant") if by_variant else SendBatch.variant.is_(None),
        SendBatch.send_group == bindparam("group") if by_group else SendBatch.send_group.is_(None),
    ).order_by(SendBatch.number.desc()).limit(1)
    for by_variant in (False, True) for by_group in (False, True)}
_NEW_BATCH = SendBatch.__table__.insert().values(
    send_id=bindparam("new_send"), number=bindparam("new_number"), first_subscription_id=bindparam("new_first"),
    last_subscription_id=bindparam("new_last"), recipients=bindparam("new_recipients"), status="claimed",
    claimed_by=bindparam("new_by"), claimed_at=bindparam("new_at", type_=DateTime), attempts=0,
    variant=bindparam("new_variant"), send_group=bindparam("new_group")).returning(SendBatch.id)
_COUNT_SENT = update(Send).where(Send.id == bindparam("send")).values(sent=Send.sent + bindparam("delivered"))
_HELD_BY_NAME = select(func.count()).select_from(SendHold).where(
    SendHold.batch_id == bindparam("batch"), SendHold.status == "unknown")
_MARK_SENDING = (update(SendBatch).where(SendBatch.id == bindparam("batch"), SendBatch.attempts == bindparam("was"))
                 .values(status="sending", attempts=bindparam("now"), claimed_by=bindparam("me"),
                         claimed_at=bindparam("at", type_=DateTime)))
_BATCH_UPDATES: dict[tuple[str, ...], Any] = {}  # by the columns set (a handful of shapes)
_IN_CHUNK = 900  # ids per IN list: under SQLite's oldest limit of 999 bound values per statement


def update_batch(conn: Connection, batch_id: int, values: Mapping[str, Any]) -> None:
    """UPDATE send_batch SET `values` WHERE id = `batch_id`, through the statement kept for these columns."""
    columns = tuple(sorted(values))
    statement = _BATCH_UPDATES.get(columns)
    if statement is None:
        statement = _BATCH_UPDATES[columns] = update(SendBatch).where(SendBatch.id == bindparam("batch")).values(
            {c: bindparam(f"set_{c}", type_=SendBatch.__table__.c[c].type) for c in columns})
    driver_sql.execute(conn, statement, {"batch": batch_id, **{f"set_{c}": v for c, v in values.items()}})


_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()


def writer_lock(engine: Engine) -> contextlib.AbstractContextManager[Any]:
    """What the threads of one process take turns on before a write transaction on this database.

    SQLite lets one connection write at a time, and one that finds the database locked sleeps in growing steps
    (1, 2, 5, 10, 15, 20 ms ...) before it tries again: with batches in flight on two threads and the claims
    on a third, the sender spent more time asleep in those steps than writing. A lock of ours hands the turn
    over the moment it is free. Other processes still meet SQLite's own lock (busy_timeout). PostgreSQL's
    writers do not exclude each other: no lock there."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    with _WRITERS_LOCK:
        lock = _WRITERS.get(engine)
        if lock is None:
            lock = _WRITERS[engine] = threading.Lock()
    return lock


class Ledger:
    """The batches of one send and their transitions; each method is one commit."""

    def __init__(self, engine: Engine, send_id: int, newsletter_id: int) -> None:
        self.engine, self.send_id, self.newsletter_id = engine, send_id, newsletter_id
        self._writing = writer_lock(engine)
        with session_scope(engine) as session:
            send = session.get(Send, send_id)
            if send is None:
                raise LookupError(f"no send {send_id}")
            self.max_id, self.batch_size, self.total = send.max_subscription_id, send.batch_size, send.total
            self.sent_before = send.sent
            # The variants walked one after another (None: a send from before variants, everyone at once), and
            # the moment pauses are judged at (the send's start: a resume judges them the same way).
            self.variants: list[str] | None = list(send.variants) if send.variants is not None else None
            self.at = send.started_at
            self.frequency: dict[str, Any] | None = send.frequency
            self.groups: list[dict[str, Any]] | None = send.groups
        # What is walked, one after another: (time-zone group, variant), soonest group first.
        self.walks: list[tuple[int | None, str | None]] = [
            (g, v) for g in (range(len(self.groups)) if self.groups else [None])
            for v in (self.variants if self.variants is not None else [None])]
        self._walk = 0  # index into walks of the one being walked

    def group_at(self, group: int | None) -> float | None:
        """When a time-zone group of this send is due (epoch seconds); None: now (no groups)."""
        return float(self.groups[group]["at"]) if self.groups and group is not None else None

    def next_at(self) -> float | None:
        """When the next group not walked yet is due, after claim_next returned None: None when none is left."""
        return self.group_at(self.walks[self._walk][0]) if self._walk < len(self.walks) else None

    # -- claim ----------------------------------------------------------------------------------------------
    def claim_next(self, me: str, until: float | None = None) -> Batch | None:
        """The next page of the audience after the last batch, written as a `claimed` batch; None at the end, or
        when the next time-zone group is due after `until` (epoch seconds; None: every group now): `next_at`.

        With variants, each variant's readers are walked in turn (a batch holds one variant only), and with
        groups each group's, soonest first (a batch holds one group only)."""
        while self._walk < len(self.walks):
            group, variant = self.walks[self._walk]
            at = self.group_at(group)
            if until is not None and at is not None and at > until:
                return None
            batch = self._claim(me, variant, group)
            if batch is not None:
                return batch
            self._walk += 1
        return None

    def _claim(self, me: str, variant: str | None, group: int | None = None) -> Batch | None:
        with self._writing, self.engine.begin() as conn:
            number = (driver_sql.scalar(conn, _LAST_NUMBER, {"send": self.send_id}) or 0) + 1
            after = driver_sql.scalar(conn, _LAST_AFTER[variant is not None, group is not None],
                                      {"send": self.send_id, "variant": variant, "group": group}) or 0
            # Keyset page: an index range scan however far into a million-row audience we are.
            rows = audience_page(conn, self.newsletter_id, after, self.max_id, self.batch_size, variant=variant,
                                 at=self.at, frequency=self.frequency, group=self._group(group))
            if not rows:
                return None
            batch_id = int(driver_sql.scalar(conn, _NEW_BATCH, {
                "new_send": self.send_id, "new_number": number, "new_first": rows[0][0], "new_last": rows[-1][0],
                "new_recipients": len(rows), "new_by": me, "new_at": utcnow(), "new_variant": variant,
                "new_group": group}))
            return Batch(batch_id, number, rows[0][0], rows[-1][0], "claimed", 0, time.time(), None, rows, variant,
                         group)

    def _group(self, group: int | None) -> dict[str, Any] | None:
        return self.groups[group] if self.groups and group is not None else None

    def unfinished(self) -> list[Batch]:
        """Batches an earlier run left behind (any state but sent or skipped), in order."""
        return self._batches(SendBatch.status.not_in(FINISHED))

    def listed(self) -> list[Batch]:
        """Held batches reported to the operator (`listed_at`): the only ones `--unknown resend|skip` decides."""
        return self._batches((SendBatch.status == "unknown") & SendBatch.listed_at.is_not(None))

    def _batches(self, where: Any) -> list[Batch]:
        with session_scope(self.engine) as session:
            rows = session.scalars(
                select(SendBatch).where(SendBatch.send_id == self.send_id, where).order_by(SendBatch.number)
            ).all()
            return [Batch(b.id, b.number, b.first_subscription_id, b.last_subscription_id, b.status, b.attempts,
                          epoch(b.claimed_at), b.error, variant=b.variant, group=b.send_group) for b in rows]

    def rows_left(self, batch: Batch) -> list[Row]:
        """The batch's recipients that may still be sent: no delivery yet, and not held or skipped by name."""
        if batch.status == "pending":  # planned, never claimed (scale mode): nobody of it was sent or held yet
            with self.engine.connect() as conn:
                return audience_page(conn, self.newsletter_id, batch.first - 1, batch.last,
                                     batch.last - batch.first + 1, variant=batch.variant, at=self.at,
                                     frequency=self.frequency, group=self._group(batch.group))
        with session_scope(self.engine) as session:
            rows = audience_page(session.connection(), self.newsletter_id, batch.first - 1, batch.last,
                                 batch.last - batch.first + 1, variant=batch.variant, at=self.at,
                                 frequency=self.frequency, group=self._group(batch.group))
            # Sent: a delivery row of this send (uq_delivery; a reader is in one batch of a send, and one who
            # got their copy from another batch must not get a second).
            done: set[int] = set()
            ids = [r[1] for r in rows]
            for start in range(0, len(ids), _IN_CHUNK):
                done.update(session.scalars(select(Delivery.subscriber_id).where(
                    Delivery.send_id == self.send_id, Delivery.subscriber_id.in_(ids[start:start + _IN_CHUNK]))))
            done.update(session.scalars(select(SendHold.subscriber_id).where(
                SendHold.batch_id == batch.id, SendHold.status.in_(("unknown", "skipped")))))
        return [r for r in rows if r[1] not in done] if done else rows

    def held_recipients(self, batch: Batch) -> int:
        """How many of a held batch's recipients have an unknown outcome: those held by name (their SMTP message
        was in flight when the connection died) and, when no answer came for the batch itself (a lost response,
        a crash mid-call), everyone in it without a delivery. Never the ones certainly not sent yet."""
        with session_scope(self.engine) as session:
            named = session.scalar(select(func.count()).select_from(SendHold).where(
                SendHold.batch_id == batch.id, SendHold.status == "unknown")) or 0
        return named + len(self.rows_left(batch))

    # -- holds and the operator's decisions ---------------------------------------------------------------
    def hold(self, batch: Batch, rows: Sequence[Row], why: str) -> None:
        """These recipients' outcome is unknown (their message was in flight): kept out of the batch's sending
        and named for the operator; the batch ends `unknown` once the rest of it is sent (`record`)."""
        if rows:
            self._name(batch, rows, "unknown", why)

    def _name(self, batch: Batch, rows: Sequence[Row], status: str, why: str, decided: bool = False) -> None:
        now = utcnow()
        with session_scope(self.engine) as session:
            known = {h.subscriber_id: h for h in session.scalars(select(SendHold).where(
                SendHold.send_id == self.send_id, SendHold.subscriber_id.in_([r[1] for r in rows])))}
            for r in rows:
                hold = known.get(r[1])
                if hold is None:
                    hold = SendHold(send_id=self.send_id, batch_id=batch.id, subscriber_id=r[1], email=r[2])
                    session.add(hold)
                hold.status, hold.reason, hold.held_at = status, why[:2000], now
                hold.decided_at = now if decided else None

    def decide(self, batch: Batch, policy: str) -> int:
        """Record and apply the operator's decision for one listed held batch; returns how many people it concerns.

        resend: its unsettled recipients are sent again (the batch becomes `retry`; holds become `resent`).
        skip: they are not sent again, named as `skipped` in send_hold, with no delivery row; the batch is
        `skipped` (finished).
        """
        if policy not in ("resend", "skip"):
            raise ValueError(f"not a decision: {policy}")
        unsettled = self.rows_left(batch)
        now = utcnow()
        with session_scope(self.engine) as session:
            held = (SendHold.batch_id == batch.id) & (SendHold.status == "unknown")
            named = session.scalar(select(func.count()).select_from(SendHold).where(held)) or 0
            session.execute(update(SendHold).where(held)
                            .values(status="resent" if policy == "resend" else "skipped", decided_at=now))
        count = named + len(unsettled)
        if policy == "skip":
            self._name(batch, unsettled, "skipped", "outcome unknown; the operator decided --unknown skip",
                       decided=True)
            self._set(batch, status="skipped", decision="skip", decided_at=now,
                      error=f"skipped by the operator (--unknown skip): {count} recipient(s) whose outcome was "
                            "unknown were not sent again")
        else:
            self._set(batch, status="retry", decision="resend", decided_at=now,
                      error=f"resent by the operator's decision (--unknown resend): {count} recipient(s) whose "
                            "outcome was unknown")
        return count

    def skipped(self) -> int:
        """People of this send the operator decided to skip (no delivery row)."""
        with session_scope(self.engine) as session:
            return session.scalar(select(func.count()).select_from(SendHold).where(
                SendHold.send_id == self.send_id, SendHold.status == "skipped")) or 0

    def left_during_send(self) -> int:
        """Readers of the frozen audience who unsubscribed (or complained) after the send started, before their
        copy went: the gap between "sent" and "in the audience" that is nobody's mistake."""
        with session_scope(self.engine) as session:
            started = session.get_one(Send, self.send_id).started_at
            return session.scalar(select(func.count()).select_from(Subscription).where(
                Subscription.newsletter_id == self.newsletter_id,
                Subscription.id <= self.max_id,
                Subscription.status.in_(("unsubscribed", "complained")),
                Subscription.status_changed_at >= started,
                ~exists().where(Delivery.send_id == self.send_id,
                                Delivery.subscriber_id == Subscription.subscriber_id),
                ~exists().where(SendHold.send_id == self.send_id,
                                SendHold.subscriber_id == Subscription.subscriber_id),
            )) or 0

    # -- transitions ----------------------------------------------------------------------------------------
    def sending(self, batch: Batch, me: str) -> None:
        """Attempt N is about to call the provider (committed before the call: a crash leaves it `sending`).

        Only the process that counts attempt N first gets to make it: the mark is written only where the batch
        still has the attempts this process read (BatchTaken otherwise). A worker cut off from the database
        while it held a batch may have lost it to another, which took it over and sent it; when the link comes
        back, its own mark must not go through and send the batch a second time."""
        with self._writing, self.engine.begin() as conn:
            marked = driver_sql.execute(conn, _MARK_SENDING, {
                "batch": batch.id, "was": batch.attempts, "now": batch.attempts + 1, "me": me, "at": utcnow()})
            if marked.rowcount != 1:
                raise BatchTaken(f"batch {batch.number} was taken over by another process before its attempt "
                                 f"{batch.attempts + 1}: this one sends nothing of it")
        batch.status, batch.attempts, batch.claimed_at = "sending", batch.attempts + 1, time.time()

    def retry(self, batch: Batch, error: str | None) -> None:
        """Nothing (more) of it was accepted: send what is left again."""
        self._set(batch, status="retry", error=error if error is None else error[:2000])

    def unknown(self, batch: Batch, why: str | None = None) -> None:
        """It may or may not have been accepted (`why` replaces the recorded reason when given)."""
        values: dict[str, Any] = {"status": "unknown"}
        if why is not None:
            values["error"] = why[:2000]
        self._set(batch, **values)

    def failed(self, batch: Batch, error: str) -> None:
        """The provider refused it for good."""
        self._set(batch, status="failed", error=error[:2000])

    def record(self, batch: Batch, delivered: Sequence[Row], *, message_ids: Mapping[str, str] | None = None,
               bounced: Mapping[str, str] | None = None, not_built: Mapping[str, str] | None = None,
               final: bool = False, provider_message_id: str | None = None) -> int:
        """Deliveries for `delivered` and (when final) the batch as sent, in one transaction; returns how many.

        `bounced`: addresses the receiving server refused for good in this batch (no delivery row; suppressed).
        `not_built`: addresses whose message could not be built (newsletter.deliver.message), with why: no
        delivery row, not a bounce; the batch's error says who and why.
        """
        now = utcnow()
        ids = message_ids or {}
        # Core statements on the session's connection: the ORM's statement handling cost more than the SQL.
        with self._writing, session_scope(self.engine) as session:
            conn = session.connection()
            if delivered:
                send_id, batch_id = self.send_id, batch.id
                # SQLite's driver would turn the datetime into this text for each row (its default adapter).
                sent_at: Any = now if conn.dialect.name != "sqlite" else now.isoformat(" ")
                insert_deliveries(session, send_id, batch_id, delivered, sent_at, ids)
                driver_sql.execute(conn, _COUNT_SENT, {"send": send_id, "delivered": len(delivered)})
            for email in bounced or {}:
                suppress(session, email, None, "bounced")
            why = "; ".join(f"not sent to {email}: {reason}" for email, reason in (not_built or {}).items())
            values: dict[str, Any] = {"error": why[:2000] or None}
            status = "sent"
            if final:
                # Everyone sent but those held by name: the batch is held (`unknown`) for the operator.
                held = driver_sql.scalar(conn, _HELD_BY_NAME, {"batch": batch.id}) or 0
                if held:
                    status = "unknown"
                    values["error"] = "; ".join(filter(None, (
                        f"{held} recipient(s) held: their message was in flight when the connection was lost",
                        why)))[:2000]
                values.update(status=status, sent_at=now if status == "sent" else None)
                if provider_message_id:
                    values["provider_message_id"] = provider_message_id[:200]
            update_batch(conn, batch.id, values)
        if final:
            batch.status = status
        return len(delivered)

    def _set(self, batch: Batch, **values: Any) -> None:
        with self._writing, self.engine.begin() as conn:
            update_batch(conn, batch.id, values)
        for key in ("status", "attempts", "error"):
            if key in values:
                setattr(batch, key, values[key])
        if "claimed_at" in values:
            batch.claimed_at = time.time()

    # -- finish ---------------------------------------------------------------------------------------------
    def finish(self, status: str, error: str | None = None) -> int:
        """Write how this run of the send ended (done, held, stopped, failed); returns the issue's id.

        `error` says why (which batches are held, the provider's refusal); a done send clears it.
        """
        with session_scope(self.engine) as session:
            send = session.get_one(Send, self.send_id)
            send.status = status
            if status == "done":
                send.finished_at, send.error = utcnow(), None
            elif error is not None:
                send.error = error
            return send.issue_id


def fail_send(engine: Engine, send_id: int, error: str) -> None:
    """The send stops for everyone: the provider refused it for good (or it cannot go on); `error` says why."""
    with session_scope(engine) as session:
        session.execute(update(Send).where(Send.id == send_id).values(status="failed", error=error[:4000]))
