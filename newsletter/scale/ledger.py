"""The send ledger as many workers share it: batches planned up front, claimed with row locks.

`newsletter send` on one machine creates batches as it walks the audience. With many workers that walk would
race, so scale mode plans every batch of a send at once (`pending` rows: a range of subscription ids each) and
a worker claims the next one with SELECT ... FOR UPDATE SKIP LOCKED: two workers never take the same batch, and
neither waits for the other.

A claim records the procrastinate job that holds it (`claimed_by` = "job:ID:host:pid"). When that job is
retried (a worker killed mid-batch is found stalled; a temporary error backs off) it resumes the batch it
holds; a batch whose job is gone for good (failed, cancelled) is taken over by the next claimer. The states
after the claim are the ledger's own (sending, sent, retry, unknown, failed) as `newsletter send` uses them,
so a send planned here can also be finished by `newsletter send` on one machine, and the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Integer, bindparam, delete, false, func, select, text, update

from newsletter.deliver.errors import SendError
from newsletter.deliver.lease import holder_gone, lease_name
from newsletter.deliver.ledger import Batch, audience_page, epoch, one_of, subscription_filters, update_batch
from newsletter.store import driver_sql
from newsletter.store.db import session_scope
from newsletter.store.models import IssueRow, Lease, Meta, Send, SendBatch, Subscription, utcnow

# States in which a batch is neither delivered nor given up, i.e. someone still has to finish it.
OPEN = ("claimed", "sending", "retry")


def claimer(job_id: int | None, worker: str) -> str:
    return f"job:{job_id}:{worker}" if job_id is not None else worker


def plan_batches(engine: Engine, send_id: int, newsletter_id: int | None = None, *,
                 first: int | None = None) -> int:
    """Write every batch of the send not written yet as `pending`. Returns how many batches the send has.

    A send begun by `newsletter send` on one machine has batches up to where it got: the rest of the audience is
    planned after the last of them. Planning again finds nothing left to plan. `newsletter_id`: whose readers
    (a cadence's issue goes to its parent newsletter's readers who chose it; default: the send's audience as
    it was frozen, or for a send from before that was kept, the issue's newsletter).

    `first`: write at most that many batches now, so that workers can start on them while the rest is planned
    (a million readers take a second and a half to plan in one pass); until a later call has planned the rest,
    the send is marked unplanned (`planning_left`) and no worker closes it.
    """
    with session_scope(engine) as session:
        # A lock of the planning's own makes a second planner wait, then find the batches already written; not
        # the send row's, which every batch recorded meanwhile updates (its count of readers sent).
        session.execute(text(f"SELECT pg_advisory_xact_lock({PLAN_LOCK}, :s)"), {"s": send_id})
        send = session.scalar(select(Send).where(Send.id == send_id))
        if send is None:
            raise LookupError(f"no send {send_id}")
        last_number, existing = session.execute(
            select(func.max(SendBatch.number), func.count())
            .where(SendBatch.send_id == send_id)
        ).one()
        if newsletter_id is None:
            newsletter_id = send.audience_id or session.execute(
                select(IssueRow.newsletter_id).where(IssueRow.id == send.issue_id)
            ).scalar_one()
        # One variant's readers per batch (sections off, text only: newsletter.render.variant), each variant
        # planned after its own last batch; a send from before variants (None) plans everyone at once.
        # With time-zone groups (a scheduled send: newsletter.deliver.zones), one group's readers per batch too.
        planned = 0
        more = False  # whether a walk may have readers left past what `first` let this call plan
        groups: list[int | None] = list(range(len(send.groups))) if send.groups else [None]
        for group, variant in [(g, v) for g in groups
                               for v in (list(send.variants) if send.variants is not None else [None])]:
            quota = None if first is None else first - planned
            if quota is not None and quota <= 0:
                more = True
                break
            after = session.scalar(
                select(func.max(SendBatch.last_subscription_id)).where(
                    SendBatch.send_id == send_id,
                    # (a batch without a variant held everyone in its range, whatever their variant)
                    SendBatch.variant.is_(None) | (SendBatch.variant == variant),
                    SendBatch.send_group.is_(None) | (SendBatch.send_group == group)))
            # Over the subscriptions alone: the audience's ranges without the join to the readers' addresses
            # for their suppression, which the claim applies (a million readers: 0.33 s on one core instead
            # of 0.9-1.3 s on three, the PostgreSQL workers of a parallel join taken from the sends under way).
            # A batch then holds at most batch_size readers; a suppressed one in its range is not sent.
            walk = (select(Subscription.id)
                    .where(*subscription_filters(
                        newsletter_id, after or 0, send.max_subscription_id, at=send.started_at,
                        frequency=send.frequency, variant=variant,
                        group=send.groups[group] if send.groups and group is not None else None))
                    .order_by(Subscription.id))
            if quota is not None:
                walk = walk.limit(quota * send.batch_size)  # the walk is in id order: its first readers
            audience = walk.subquery()
            position = func.row_number().over(order_by=audience.c[0]) - 1
            numbered = select(audience.c[0].label("sid"), position.label("pos")).subquery()
            number = (numbered.c.pos // send.batch_size).label("number")
            ranges = session.execute(
                select(number, func.min(numbered.c.sid), func.max(numbered.c.sid), func.count())
                .group_by(number).order_by(number)
            ).all()
            if quota is not None and sum(int(r[3]) for r in ranges) == quota * send.batch_size:
                more = True
            if ranges:
                now = utcnow()
                first_number = (last_number or 0) + planned + 1
                session.execute(
                    SendBatch.__table__.insert(),
                    [{"send_id": send_id, "number": first_number + int(n), "first_subscription_id": low,
                      "last_subscription_id": high, "recipients": count, "status": "pending", "claimed_at": now,
                      "attempts": 0, "variant": variant, "send_group": group}
                     for n, low, high, count in ranges],
                )
                planned += len(ranges)
        # In the same transaction as the batches: a worker that finds the mark gone sees every batch as well.
        marked = session.get(Meta, _unplanned(send_id))
        if more and marked is None:
            session.add(Meta(key=_unplanned(send_id), value="planning"))
        elif not more and marked is not None:
            session.delete(marked)
        return existing + planned


def _unplanned(send_id: int) -> str:
    return f"scale:unplanned:{send_id}"


def planning_left(connection: Connection, send_id: int) -> bool:
    """Whether some of the send's audience is still to be planned into batches (see plan_batches' `first`)."""
    return connection.execute(select(Meta.key).where(Meta.key == _unplanned(send_id))).first() is not None


def claim(engine: Engine, send_id: int, me: str, job_id: int | None = None,
          guard: Connection | None = None, *, own_first: bool = True,
          newsletter_id: int | None = None, until: float | None = None) -> Batch | None:
    """The batch this job should work on now, marked as claimed by it; None when nothing is left to take.

    A fresh batch of a time-zone group is taken only once the group is due by `until` (epoch seconds; None:
    now): `next_group_at` says when the next one is.

    The batch comes back in the state it was in when claimed: `pending` (fresh) or an open one (resumed), which
    is what the engine's `resume` needs; its time is when it was planned or last handed to the provider.

    In order: the batch this job already holds (it is being retried), a pending batch, an open batch whose job
    is gone for good. Row locks with SKIP LOCKED make concurrent claimers take different batches.

    With a `guard` connection (PostgreSQL), the claimer also takes the batch's advisory lock on it and keeps it
    while it delivers: a process that is alive holds it, one that died lost it with its connection. An open
    batch whose lock is held is never taken, even when the job queue wrongly believes its worker dead (a missed
    heartbeat), so two processes never deliver the same batch at once.

    `own_first=False`: the job knows it holds no open batch (each it claimed before has ended sent), so the
    first look is skipped. With `newsletter_id`, a fresh batch comes with its recipients (`Batch.rows`), read in
    the claim's own transaction.
    """
    with engine.connect() as connection:
        return claim_on(connection, send_id, me, job_id, guard, own_first=own_first, newsletter_id=newsletter_id,
                        until=until).batch


@dataclass(slots=True)
class Claim:
    """What one claim found: the send's status, read in the claim's own transaction, and the batch it took (None:
    nothing left to take, or the send has ended and nothing was looked for)."""

    status: str | None
    batch: Batch | None


ENDED = ("done", "failed")  # a send in one of these states has nothing left for a worker


def claim_on(connection: Connection, send_id: int, me: str, job_id: int | None = None,
             guard: Connection | None = None, *, own_first: bool = True, newsletter_id: int | None = None,
             until: float | None = None, unless_ended: bool = False) -> Claim:
    """`claim` in one transaction on a connection the caller keeps across its claims (outside any transaction).

    A job that claims batch after batch keeps one connection for it: the pool's checkout (a ping each time)
    and a separate look at the send's status cost a worker more than the claim's own statements did.
    `unless_ended`: the send's status is read first, in the same transaction, and nothing is claimed when the
    send is done or failed (another worker finished it, or an operator stopped it)."""
    with connection.begin():
        status = driver_sql.scalar(connection, _SEND_STATUS, {"send": send_id})
        if unless_ended and status in ENDED:
            return Claim(status, None)
        row = None
        for kind in ("own", "pending", "orphaned"):
            found = _candidates(connection, kind, send_id, job_id, own_first, until)
            row = next((r for r in found if guard is None or _try_lock(guard, r[0])), None)
            if row is not None:
                break
        if row is None:
            return Claim(status, None)
        (batch_id, number, first, last, batch_status, attempts, claimed_at, error, variant, group) = row
        claimed = Batch(batch_id, number, first, last, batch_status, attempts, epoch(claimed_at), error,
                        variant=variant, group=group)
        if batch_status != "pending":
            # A resumed batch keeps its time: it is when the provider last had it, which settling needs.
            update_batch(connection, batch_id, {"claimed_by": claimer(job_id, me)[:200]})
            return Claim(status, claimed)
        update_batch(connection, batch_id, {"claimed_by": claimer(job_id, me)[:200], "status": "claimed",
                                            "claimed_at": utcnow()})
        if newsletter_id is not None:  # planned, never claimed: nobody of it was sent or held yet
            # With the send's own filters: the range holds other variants' and cadences' readers too.
            at, frequency, groups = _filters(connection, send_id)
            claimed.rows = audience_page(connection, newsletter_id, first - 1, last, last - first + 1,
                                         variant=variant, at=at, frequency=frequency,
                                         group=groups[group] if groups and group is not None else None)
        return Claim(status, claimed)


_GIVE_BACK = (update(SendBatch).where(SendBatch.id == bindparam("batch"), SendBatch.status == "claimed")
              .values(status="pending", claimed_by=None))


def give_back(connection: Connection, guard: Connection | None, batch_id: int) -> None:
    """Put a batch this job claimed and never sent back among the pending ones (the row first, then its
    advisory lock), for any worker to take: its recipients were read, nothing was marked `sending` or sent."""
    with connection.begin():
        driver_sql.execute(connection, _GIVE_BACK, {"batch": batch_id})
    if guard is not None:
        release(guard, batch_id)


_CLAIMED = (SendBatch.id, SendBatch.number, SendBatch.first_subscription_id, SendBatch.last_subscription_id,
            SendBatch.status, SendBatch.attempts, SendBatch.claimed_at, SendBatch.error, SendBatch.variant,
            SendBatch.send_group)
_SEND_STATUS = select(Send.status).where(Send.id == bindparam("send"))
_CANDIDATES = 8  # candidates read at once: enough to step past the batches other claimers hold under lock


def _candidate_rows(where: Any) -> Any:
    return (select(*_CLAIMED).where(SendBatch.send_id == bindparam("send"), where)
            .order_by(SendBatch.number).limit(_CANDIDATES).with_for_update(skip_locked=True))


_OWN = _candidate_rows(one_of(SendBatch.status, (*OPEN, "unknown")) & SendBatch.claimed_by.like(bindparam("mine")))
_PENDING = _candidate_rows(SendBatch.status == "pending")


def _candidates(connection: Connection, kind: str, send_id: int, job_id: int | None, own_first: bool,
                until: float | None) -> Sequence[Any]:
    """Up to _CANDIDATES batches of one kind (see `claim`), locked (SKIP LOCKED), as rows in _CLAIMED's order.

    The usual claims' statements are compiled once (driver_sql); a claim among time-zone groups or of orphaned
    batches (rarer, and shaped by the moment) goes through SQLAlchemy's execution."""
    values = {"send": send_id}
    if kind == "own":
        if not (job_id and own_first):
            return ()
        return driver_sql.rows(connection, _OWN, {**values, "mine": f"job:{job_id}:%"})
    if kind == "pending":
        groups = _filters(connection, send_id)[2]
        if not groups:
            return driver_sql.rows(connection, _PENDING, values)
        moment = time.time() if until is None else until
        due = [n for n, g in enumerate(groups) if float(g["at"]) <= moment]
        where = (SendBatch.status == "pending") & (
            SendBatch.send_group.is_(None) | (SendBatch.send_group.in_(due) if due else false()))
        return [tuple(r) for r in connection.execute(_candidate_rows(where), values)]
    if not _has_job_queue(connection.engine):
        return ()
    return [tuple(r) for r in connection.execute(_candidate_rows(one_of(SendBatch.status, OPEN) & _orphaned()),
                                                    values)]


# A send's start, cadence and time-zone groups, fixed when it starts: read once per process.
_FILTERS: dict[tuple[str, int], tuple[Any, Any, Any]] = {}


def _filters(connection: Connection, send_id: int) -> tuple[Any, Any, Any]:
    key = (str(connection.engine.url), send_id)  # send ids are a database's own
    found = _FILTERS.get(key)
    if found is None:
        if len(_FILTERS) > 1024:
            _FILTERS.clear()
        started_at, frequency, groups = connection.execute(
            select(Send.started_at, Send.frequency, Send.groups).where(Send.id == send_id)).one()
        found = _FILTERS[key] = (started_at, frequency, groups)
    return found


def next_group_at(engine: Engine, send_id: int) -> float | None:
    """When the soonest time-zone group with batches still pending is due (epoch seconds); None: none is."""
    with session_scope(engine) as session:
        groups = _filters(session.connection(), send_id)[2]
        if not groups:
            return None
        pending = session.scalars(select(SendBatch.send_group).distinct().where(
            SendBatch.send_id == send_id, SendBatch.status == "pending", SendBatch.send_group.is_not(None))).all()
    times = [float(groups[g]["at"]) for g in pending if g is not None and g < len(groups)]
    return min(times) if times else None


# The two-key advisory lock on a send batch: (this namespace in this schema, the batch's id). Advisory locks
# belong to the whole database, and batch ids restart at 1 in every schema: two installs sharing a database in
# schemas of their own (staging beside production, parallel test runs) would otherwise take each other's
# batches for held and skip them.
BATCH_LOCK = "hashtext('newsletter-batch:' || coalesce(current_schema(), ''))"
PLAN_LOCK = "hashtext('newsletter-plan:' || coalesce(current_schema(), ''))"  # (the same, for planning a send)


_TRY_LOCK = text(f"SELECT pg_try_advisory_lock({BATCH_LOCK}, :b)").bindparams(bindparam("b", type_=Integer))
_UNLOCK = text(f"SELECT pg_advisory_unlock({BATCH_LOCK}, :b)").bindparams(bindparam("b", type_=Integer))
_UNLOCK_MANY = text(f"SELECT count(pg_advisory_unlock({BATCH_LOCK}, b)) FROM unnest(CAST(:ids AS integer[])) AS b")


def _try_lock(guard: Connection, batch_id: int) -> bool:
    return bool(driver_sql.scalar(guard, _TRY_LOCK, {"b": batch_id}))


def release(guard: Connection, batch_id: int) -> None:
    driver_sql.scalar(guard, _UNLOCK, {"b": batch_id})


def release_many(guard: Connection | None, batch_ids: Sequence[int]) -> None:
    """Release the advisory locks of batches that ended sent, in one statement. A job that claims batch after
    batch hands them back every so many instead of keeping one per batch to its end: every lock held takes a
    slot of PostgreSQL's shared lock table (max_locks_per_transaction x max_connections, 6,400 by default),
    which a few busy jobs holding thousands each would fill ("out of shared memory")."""
    if guard is not None and batch_ids:
        guard.execute(_UNLOCK_MANY, {"ids": list(batch_ids)})


@contextmanager
def guard_connection(engine: Engine) -> Iterator[Connection | None]:
    """A connection outside any transaction to hold batch locks on (None on SQLite, which has none)."""
    if engine.dialect.name != "postgresql":
        yield None
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        try:
            yield conn
        finally:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))


def _orphaned():  # noqa: ANN202 - a SQL expression
    """An open batch claimed by a job that will not come back: finished, failed, cancelled or deleted.

    Batches claimed outside the job queue (`newsletter send` on one machine) are that process's to resume.
    """
    return text(
        "send_batch.claimed_by LIKE 'job:%' AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j "
        "WHERE j.id = split_part(send_batch.claimed_by, ':', 2)::bigint AND j.status IN ('todo', 'doing'))"
    )


_job_queues: dict[str, bool] = {}


def _has_job_queue(engine: Engine) -> bool:
    """Whether procrastinate's tables are in this database (they are in scale mode; not in plain tests)."""
    key = engine.url.render_as_string(hide_password=True)
    if key not in _job_queues:
        if engine.dialect.name != "postgresql":
            _job_queues[key] = False
        else:
            with engine.connect() as conn:
                found = conn.execute(text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).scalar()
            if not found:
                return False  # not cached: `newsletter db upgrade` may create them while we run
            _job_queues[key] = True
    return _job_queues[key]


def remaining(engine: Engine, send_id: int, job_id: int | None = None) -> dict[str, int]:
    """Batches of the send that are not sent yet, by state.

    An `unknown` batch whose job will come back to settle it (waiting for the provider's activity log) counts as
    `settling`, i.e. still open; one whose job is done with it is held for the operator. `job_id` is the job
    asking, which is done with its own batch.
    """
    with session_scope(engine) as session:
        rows = session.execute(
            select(SendBatch.status, SendBatch.claimed_by, func.count())
            .where(SendBatch.send_id == send_id, SendBatch.status != "sent")
            .group_by(SendBatch.status, SendBatch.claimed_by)
        ).all()
        waiting = set()
        unknown_jobs = {_job_of(c) for st, c, _ in rows if st == "unknown"} - {None, job_id}
        if unknown_jobs and _has_job_queue(engine):
            waiting = set(session.scalars(text(
                "SELECT id FROM procrastinate_jobs WHERE id = ANY(:ids) AND status IN ('todo', 'doing')"),
                {"ids": list(unknown_jobs)}))
    left: dict[str, int] = {}
    for status, claimed_by, count in rows:
        state = "settling" if status == "unknown" and _job_of(claimed_by) in waiting else status
        left[state] = left.get(state, 0) + count
    return left


def _job_of(claimed_by: str | None) -> int | None:
    if claimed_by and claimed_by.startswith("job:"):
        try:
            return int(claimed_by.split(":", 2)[1])
        except ValueError:
            return None
    return None


def finish_if_done(engine: Engine, send_id: int, job_id: int | None = None) -> str | None:
    """Close the send when no batch is left open. Returns the send's final state, or None while work remains."""
    # The planning mark is read before the batches: the planner drops it in the transaction that writes the
    # last of them, so either the mark is still here, or those batches are seen below.
    with engine.connect() as connection:
        if planning_left(connection, send_id):
            return None
    left = remaining(engine, send_id, job_id)
    if any(left.get(s) for s in ("pending", "settling", *OPEN)):
        return None
    with session_scope(engine) as session:
        send = session.scalar(select(Send).where(Send.id == send_id).with_for_update())
        if send is None:
            raise LookupError(f"no send {send_id}")
        if send.status == "done":
            return send.status
        now = utcnow()
        if left.get("failed"):
            send.status = "failed"
        elif left.get("unknown"):
            send.status = "held"
            send.error = (f"{left['unknown']} batches have an unknown outcome: "
                          "`newsletter send SLUG --unknown resend|skip` settles them")
        else:
            send.status, send.finished_at, send.error = "done", now, None
            session.execute(update(IssueRow).where(IssueRow.id == send.issue_id).values(status="sent", sent_at=now))
            session.execute(delete(Lease).where(Lease.name == lease_name(send_id)))
        return send.status


# -- one send, many workers, one lease --------------------------------------------------------------------------
# `newsletter send` on one machine holds a lease on its send so that two processes never work it at once. The
# workers hold that same lease together (one holder name for all of them, renewed at every claim): a hand-run
# `newsletter send` of a send the workers are on stops with a clear message, and the workers leave alone a send
# that a hand-run process holds.
SCALE_HOLDER = "the scale-mode workers:jobs:-"
LEASE_SECONDS = 120.0


def take_lease(engine: Engine, send_id: int) -> str | None:
    """Take (or renew) the send's lease for the workers, LEASE_SECONDS long; returns the send's status, read in
    the same transaction. Raises SendError while `newsletter send` on one machine holds it."""
    with session_scope(engine) as session:
        status = session.scalar(select(Send.status).where(Send.id == send_id))
        lease = session.get(Lease, lease_name(send_id), with_for_update=True)
        now = utcnow()
        until = now + timedelta(seconds=LEASE_SECONDS)
        if lease is None:
            session.add(Lease(name=lease_name(send_id), holder=SCALE_HOLDER, expires_at=until))
        elif lease.holder == SCALE_HOLDER or lease.expires_at < now or holder_gone(lease.holder):
            lease.holder, lease.expires_at = SCALE_HOLDER, until
        else:
            raise SendError(f"send {send_id} is being run by {lease.holder.rsplit(':', 1)[0]} (`newsletter send`); "
                            "the workers leave it alone")
        return status
